"""A file that cannot be written (full disk, file size limit) is one line and exit 4; the
last complete checkpoint stays usable and the rerun resumes."""

from __future__ import annotations

import errno
import os
import resource

import pytest
from backends import tensorflow_only
from experiment_helpers import (
    checkpoint_state,
    epochs_in_log,
    error_line,
    run_train,
    tiny_config,
    tiny_flags,
)

from keras_l2t.experiment import OutputError, run_experiment, work_dir
from keras_l2t.transfer_model import TransferModel

SAME_ON_EVERY_BACKEND = tensorflow_only("the files are written by backend-independent code")


@SAME_ON_EVERY_BACKEND
@pytest.mark.slow
def test_a_full_disk_at_a_checkpoint_keeps_the_last_one_and_the_rerun_resumes(
    tmp_path, fashion_dir, source_file, monkeypatch
):
    work = str(tmp_path / "run")
    save_weights = TransferModel.save_weights
    calls = []

    def disk_fills_at_the_second_checkpoint(self, filepath, *args, **kwargs):
        calls.append(filepath)
        if len(calls) == 2:
            with open(filepath, "wb") as f:
                f.write(b"half a weights file")
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), filepath)
        return save_weights(self, filepath, *args, **kwargs)

    monkeypatch.setattr(TransferModel, "save_weights", disk_fills_at_the_second_checkpoint)
    config = tiny_config(work, fashion_dir, source_file)
    with pytest.raises(OutputError) as error:
        run_experiment(config)
    checkpoint = os.path.join(work, "checkpoints", "epoch_2.weights.h5")
    assert str(error.value) == (
        f"cannot write '{checkpoint}': No space left on device. Every finished epoch is "
        "kept: free space or fix the permissions, then rerun the same command to resume.")
    assert checkpoint_state(work)["epoch"] == 1
    assert sorted(os.listdir(os.path.join(work, "checkpoints"))) == [
        "epoch_1.weights.h5", "state.json"]  # no half-written file left behind

    monkeypatch.setattr(TransferModel, "save_weights", save_weights)  # space freed
    results = run_experiment(config)
    assert results["epochs"] == 3 and checkpoint_state(work)["epoch"] == 3
    assert epochs_in_log(work) == [0, 1, 2]


@SAME_ON_EVERY_BACKEND
def test_train_py_exits_4_naming_the_file_when_the_file_size_limit_is_reached(
    tmp_path, fashion_dir, source_file
):
    # A real write error from the kernel, without root: RLIMIT_FSIZE makes a write past
    # the limit fail with EFBIG. data.json fits in 1 KiB, config.json does not. (HDF5
    # crashes, rather than raise, when the limit cuts a weights file: a checkpoint that
    # cannot be written is tested with an injected ENOSPC above.)
    work = str(tmp_path / "run")
    flags = tiny_flags(work, fashion_dir, source_file, method="scratch", epochs=1)

    def limit_file_size():
        resource.setrlimit(resource.RLIMIT_FSIZE, (1024, 1024))

    limited = run_train(flags, preexec_fn=limit_file_size)
    assert limited.returncode == 4, limited.stderr[-3000:]
    config = os.path.join(work, work_dir.CONFIG)
    assert error_line(limited) == (
        f"error: cannot write '{config}': File too large. Every finished epoch is kept: "
        "free space or fix the permissions, then rerun the same command to resume.")
    assert sorted(os.listdir(work)) == [".lock", work_dir.DATA]  # no half-written file

    rerun = run_train(flags)
    assert rerun.returncode == 0, rerun.stderr[-3000:]
    assert epochs_in_log(work) == [0]
