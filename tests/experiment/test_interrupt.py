"""Ctrl-C stops train.py within one step, at any moment, with exit 130; rerun resumes."""

from __future__ import annotations

import pytest
from experiment_helpers import (
    HOOKED_TRAIN,
    checkpoint_state,
    epochs_in_log,
    run_train,
    tiny_flags,
)

STEPS = 6  # steps per epoch of the tiny run (48 training images, batch 8)
MESSAGE = "Interrupted. Every finished epoch is kept: rerun the same command to resume."


@pytest.mark.slow
@pytest.mark.parametrize("moment, steps_after, checkpointed", [
    ("step:8", ["step 8"], 1),  # mid-epoch 2: that step ends, no other starts
    ("evaluation:2", [], 1),  # epoch 2's validation: epoch 2 is not checkpointed
    ("checkpoint:2", [], 2),  # halfway through epoch 2's checkpoint: it completes
])
def test_ctrl_c_stops_within_one_step_with_exit_130(tmp_path, fashion_dir, source_file,
                                                    moment, steps_after, checkpointed):
    work = str(tmp_path / "run")
    steps_log = tmp_path / "steps.log"
    flags = tiny_flags(work, fashion_dir, source_file)
    stopped = run_train([*flags, f"--sigint_at={moment}", f"--steps_log={steps_log}"],
                        script=HOOKED_TRAIN)
    assert stopped.returncode == 130, stopped.stderr[-3000:]
    assert stopped.stderr.strip().splitlines()[-1] == MESSAGE
    assert "Exception ignored" not in stopped.stderr
    events = steps_log.read_text().splitlines()
    assert events.count("sigint") == 1
    assert events[events.index("sigint") + 1:] == steps_after
    assert checkpoint_state(work)["epoch"] == checkpointed
    assert epochs_in_log(work) == list(range(checkpointed))  # rows of saved epochs only
    if moment.startswith("step"):
        resumed = run_train(flags)
        assert resumed.returncode == 0, resumed.stderr[-3000:]
        assert "Resuming after epoch 1 of 3" in resumed.stdout
        assert epochs_in_log(work) == [0, 1, 2]
