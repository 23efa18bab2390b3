"""One writer per work directory, and a resume only on the data the run started on."""

from __future__ import annotations

import os
import pathlib
import signal
import time

import pytest
from backends import tensorflow_only
from experiment_helpers import (
    HOOKED_TRAIN,
    checkpoint_state,
    epochs_in_log,
    error_line,
    make_fashion_dir,
    run_train,
    start_train,
    tiny_config,
    tiny_flags,
)

from keras_l2t.experiment import ExperimentError, run_experiment, work_dir

SAME_ON_EVERY_BACKEND = tensorflow_only(
    "the work directory's guards run before and around training, with no backend code")


def _wait_for(path, process, timeout: float = 150.0) -> None:
    deadline = time.monotonic() + timeout
    while not os.path.exists(path):
        if process.poll() is not None:
            raise AssertionError(f"exited {process.returncode}: {process.stderr.read()[-3000:]}")
        assert time.monotonic() < deadline, f"{path} never appeared"
        time.sleep(0.1)


@SAME_ON_EVERY_BACKEND
@pytest.mark.slow
def test_a_second_run_on_a_held_work_dir_exits_2_and_a_killed_holder_leaves_no_lock(
    tmp_path, fashion_dir, source_file
):
    work = str(tmp_path / "run")
    gate = tmp_path / "gate"
    gate.mkdir()
    flags = tiny_flags(work, fashion_dir, source_file, epochs=2)
    first = start_train([*flags, "--pause_at_step=8", f"--gate={gate}"], script=HOOKED_TRAIN)
    try:
        _wait_for(gate / "reached", first)  # in epoch 2: epoch 1 is checkpointed
        second = run_train(flags)
        assert second.returncode == 2, second.stderr[-3000:]
        assert error_line(second) == (
            f"error: --work_dir={work} is being written by another run (process id "
            f"{first.pid}); wait for it to finish, or use another --work_dir.")
        assert "epoch 1/2" not in second.stdout
    finally:
        first.send_signal(signal.SIGKILL)
        first.wait()
    assert epochs_in_log(work) == [0]  # the refused run wrote nothing
    # The kernel released the killed holder's lock: the same command resumes and ends.
    resumed = run_train(flags)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert "Resuming after epoch 1 of 2" in resumed.stdout
    assert epochs_in_log(work) == [0, 1]


@SAME_ON_EVERY_BACKEND
@pytest.mark.slow
def test_a_resume_on_other_data_is_refused_before_anything_is_rewritten(tmp_path,
                                                                        fashion_dir):
    work = str(tmp_path / "run")

    def scratch(data_dir: str, epochs: int):
        return tiny_config(work, data_dir, None, epochs=epochs, method="scratch")

    run_experiment(scratch(fashion_dir, epochs=1))
    # An unfinished run: as if stopped after its first of two epochs.
    os.remove(os.path.join(work, work_dir.RESULTS))
    work_dir.write_json_atomic(os.path.join(work, work_dir.CONFIG),
                               scratch(fashion_dir, epochs=2).to_dict())
    names = (work_dir.CONFIG, work_dir.DATA, work_dir.LOG)
    saved = {name: pathlib.Path(work, name).read_text() for name in names}

    fewer = make_fashion_dir(str(tmp_path / "fewer"), num_train=40)
    with pytest.raises(ExperimentError) as error:
        run_experiment(scratch(fewer, epochs=2))
    message = str(error.value)
    assert message.startswith(f"--work_dir={work} was started on other data (it differs "
                              "in: files (4 files, "), message
    assert message.endswith(
        "; num_train 50 -> 30; steps_per_epoch 7 -> 4); resume it with "
        "the data it started on, or start anew with --overwrite or a new --work_dir."), message
    for name, text in saved.items():
        assert pathlib.Path(work, name).read_text() == text, name
    assert checkpoint_state(work)["epoch"] == 1

    # The same data under another path resumes (--data_dir may move).
    moved = make_fashion_dir(str(tmp_path / "moved"))
    results = run_experiment(scratch(moved, epochs=2))
    assert results["epochs"] == 2 and epochs_in_log(work) == [0, 1]


def test_the_lock_refuses_a_second_holder_and_clears_interrupted_writes(tmp_path):
    work = tmp_path / "run"
    (work / "checkpoints").mkdir(parents=True)
    leftovers = [work / ".tmp_abc123", work / "log.csv.tmp", work / "checkpoints" / ".tmp_x",
                 work / "checkpoints" / ".tmp_epoch_2.weights.h5"]
    kept = [work / "log.csv", work / "checkpoints" / "epoch_1.weights.h5", work / "notes.txt"]
    for path in leftovers + kept:
        path.write_text("x")
    with work_dir.locked(str(work)):
        assert (work / ".lock").read_text() == f"{os.getpid()}\n"
        assert not any(path.exists() for path in leftovers)
        assert all(path.exists() for path in kept)
        # flock conflicts between two opens of the file, even in one process.
        held = rf"is being written by another run \(process id {os.getpid()}\)"
        with pytest.raises(ExperimentError, match=held), work_dir.locked(str(work)):
            pass
    with work_dir.locked(str(work)):  # released on exit
        pass


def test_without_locks_the_run_warns_and_goes_on(tmp_path, monkeypatch):
    monkeypatch.setattr(work_dir, "fcntl", None)  # as on Windows
    unlocked = "Cannot lock .*make sure no other run writes"
    with pytest.warns(UserWarning, match=unlocked), work_dir.locked(str(tmp_path / "run")):
        assert (tmp_path / "run" / ".lock").exists()
