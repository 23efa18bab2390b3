"""--strategy=multi_worker: two processes on loopback train in step; only the chief writes."""

from __future__ import annotations

import json
import os
import re
import socket
import subprocess
import sys

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


@pytest.mark.skipif(keras.backend.backend() != "tensorflow",
                    reason="--strategy=multi_worker is TensorFlow's MultiWorkerMirroredStrategy")
@pytest.mark.slow
def test_two_workers_finish_with_identical_weights(tmp_path, fashion_dir, source_file):
    work_dir = str(tmp_path / "run")
    cluster = {"worker": [f"127.0.0.1:{port}" for port in _free_ports(2)]}
    flags = tiny_flags(work_dir, fashion_dir, source_file, strategy="multi_worker", epochs=1,
                       max_steps_per_epoch=2)
    processes = []
    for index in range(2):
        env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3", TF_CONFIG=json.dumps(
            {"cluster": cluster, "task": {"type": "worker", "index": index}}))
        processes.append(subprocess.Popen(
            [sys.executable, TRAIN, *flags], cwd=ROOT, env=env, text=True,
            stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        ))
    finished = []
    try:  # wait for both before any assert, so a failing worker never orphans the other
        for process in processes:
            finished.append(process.communicate(timeout=240))
    finally:
        for process in processes:
            process.kill()
    for process, (_, stderr) in zip(processes, finished):
        assert process.returncode == 0, stderr[-3000:]
    outputs = [stdout for stdout, _ in finished]

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
