"""--strategy=multi_worker: two processes on loopback train in step; only the chief writes."""

from __future__ import annotations

import json
import os
import re
import socket
import subprocess
import sys
import time

import keras
import pytest
from experiment_helpers import ROOT, TRAIN, load_json, run_train, tiny_flags


def _free_ports(count: int) -> list[int]:
    sockets = [socket.socket() for _ in range(count)]
    for s in sockets:
        s.bind(("127.0.0.1", 0))
    ports = [s.getsockname()[1] for s in sockets]
    for s in sockets:
        s.close()
    return ports


# What a worker prints when another process took its port between `_free_ports` and
# its gRPC server's bind (TensorFlow's server refuses to share a port, so the probing
# socket cannot stay open): the launch is then retried on new ports.
PORT_TAKEN = "this worker could not listen on"


def _run_two_workers(tmp_path, flags_for, attempts: int = 3,
                     timeout: float = 300) -> tuple[str, list[str]]:
    """Runs two workers of train.py on free loopback ports until neither lost its port.

    Args:
        tmp_path: Where each attempt writes its work dir and the workers' output.
        flags_for: work dir -> train.py flags.
        attempts: launches at most.
        timeout: seconds one launch may take.

    Returns:
        (work dir, the two workers' stdout); fails the test when a worker fails.
    """
    for attempt in range(attempts):
        work_dir = str(tmp_path / f"run_{attempt}")
        cluster = {"worker": [f"127.0.0.1:{port}" for port in _free_ports(2)]}
        logs = [(tmp_path / f"worker_{attempt}_{i}.out", tmp_path / f"worker_{attempt}_{i}.err")
                for i in range(2)]
        processes = []
        try:
            for index, (out, err) in enumerate(logs):
                env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3", TF_CONFIG=json.dumps(
                    {"cluster": cluster, "task": {"type": "worker", "index": index}}))
                with open(out, "w") as stdout, open(err, "w") as stderr:
                    processes.append(subprocess.Popen(
                        [sys.executable, TRAIN, *flags_for(work_dir)], cwd=ROOT, env=env,
                        text=True, stdout=stdout, stderr=stderr))
            # Until both finish, or one fails (its peer would wait for it until killed).
            deadline = time.monotonic() + timeout
            while (any(p.poll() is None for p in processes)
                   and not any(p.poll() for p in processes)):
                assert time.monotonic() < deadline, "the workers did not finish in time"
                time.sleep(0.5)
        finally:  # never orphan a worker
            for process in processes:
                process.kill()
                process.wait()
        stdouts = [out.read_text() for out, _ in logs]
        stderrs = [err.read_text() for _, err in logs]
        if any(p.returncode and PORT_TAKEN in e for p, e in zip(processes, stderrs)):
            continue
        # A worker that failed first, then one killed because its peer failed.
        for process, stderr in sorted(zip(processes, stderrs),
                                      key=lambda pair: pair[0].returncode < 0):
            assert process.returncode == 0, stderr[-3000:]
        return work_dir, stdouts
    pytest.fail(f"{attempts} launches lost a port to another process")


@pytest.mark.skipif(keras.backend.backend() != "tensorflow",
                    reason="--strategy=multi_worker is TensorFlow's MultiWorkerMirroredStrategy")
@pytest.mark.slow
def test_two_workers_finish_with_identical_weights(tmp_path, fashion_dir, source_file):
    def flags_for(work_dir):
        return tiny_flags(work_dir, fashion_dir, source_file, strategy="multi_worker",
                          epochs=1, max_steps_per_epoch=2)

    work_dir, outputs = _run_two_workers(tmp_path, flags_for)

    hashes = [re.search(r"Target weights sha1 ([0-9a-f]{40})", out)[1] for out in outputs]
    assert hashes[0] == hashes[1]
    assert all("2 replica(s) on tensorflow, 2 steps/epoch" in out for out in outputs)
    results = load_json(os.path.join(work_dir, "results.json"))
    assert results["target_weights_sha1"] == hashes[0]
    # Only the chief (worker 0) wrote: one row per epoch, one checkpoint set.
    with open(os.path.join(work_dir, "log.csv")) as f:
        assert len(f.read().splitlines()) == 2
    assert sorted(os.listdir(os.path.join(work_dir, "checkpoints"))) == [
        "epoch_1.weights.h5", "state.json"]


@pytest.mark.skipif(keras.backend.backend() != "tensorflow",
                    reason="--strategy=multi_worker is TensorFlow's MultiWorkerMirroredStrategy")
@pytest.mark.slow
def test_a_worker_port_in_use_is_one_clear_error(tmp_path, fashion_dir, source_file):
    work_dir = str(tmp_path / "run")
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        address = f"127.0.0.1:{taken.getsockname()[1]}"
        tf_config = {"cluster": {"worker": [address, f"127.0.0.1:{_free_ports(1)[0]}"]},
                     "task": {"type": "worker", "index": 0}}
        process = run_train(tiny_flags(work_dir, fashion_dir, source_file,
                                       strategy="multi_worker"),
                            env={"TF_CONFIG": json.dumps(tf_config)}, timeout=120)
    assert process.returncode == 2, process.stderr[-3000:]
    assert process.stderr.strip().splitlines()[-1] == (
        f"error: --strategy=multi_worker: this worker could not listen on {address} "
        "(TF_CONFIG task worker 0); another process may hold the port. Choose a free port "
        "for it in TF_CONFIG, on every worker.")
    assert not os.path.exists(work_dir)
