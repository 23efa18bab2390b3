"""train.py (its `main`: exit codes, Ctrl-C handling) with test hooks at given moments.

    python tests/experiment/hooked_train.py TRAIN_PY_FLAGS... [--pause_at_step=N
        --gate=DIR] [--sigint_at=step:N|evaluation:N|checkpoint:N] [--steps_log=FILE]

--pause_at_step=N: when the N-th training step of this process ends, creates DIR/reached
    and waits until DIR/go exists (another process can then be started against the
    same work directory while this one holds it).
--sigint_at: sends this process SIGINT as the N-th training step begins, as the N-th
    validation begins (its first batch), or halfway through the N-th checkpoint (between
    the weights file and state.json).
--steps_log: appends "step <k>" for every training step that ended and "sigint" when the
    signal is sent, so a test can count the steps trained after Ctrl-C.
"""

from __future__ import annotations

import functools
import os
import signal
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, ROOT)

import keras  # noqa: E402
from absl import app, flags  # noqa: E402

import train  # noqa: E402
from keras_l2t.experiment import checkpoints, run, work_dir  # noqa: E402

PAUSE_AT_STEP = flags.DEFINE_integer("pause_at_step", None, "Wait at this step for DIR/go.")
GATE = flags.DEFINE_string("gate", None, "The folder of --pause_at_step's files.")
SIGINT_AT = flags.DEFINE_string("sigint_at", None, "step:N, evaluation:N or checkpoint:N.")
STEPS_LOG = flags.DEFINE_string("steps_log", None, "Where steps and the signal are logged.")


def _note(line: str) -> None:
    if STEPS_LOG.value:
        with open(STEPS_LOG.value, "a") as f:
            f.write(line + "\n")


def _sigint() -> None:
    _note("sigint")
    os.kill(os.getpid(), signal.SIGINT)


class Hooks(keras.callbacks.Callback):
    """--pause_at_step, --sigint_at=step:N and --steps_log around the training steps."""

    def __init__(self, sigint_step: int | None):
        super().__init__()
        self.sigint_step, self.began, self.ended = sigint_step, 0, 0

    def on_train_batch_begin(self, batch, logs=None):
        self.began += 1
        if self.began == self.sigint_step:
            _sigint()

    def on_train_batch_end(self, batch, logs=None):
        self.ended += 1
        _note(f"step {self.ended}")
        if self.ended == PAUSE_AT_STEP.value:
            open(os.path.join(GATE.value, "reached"), "w").close()
            while not os.path.exists(os.path.join(GATE.value, "go")):
                time.sleep(0.05)


def _count_calls(function, at: int, before=None):
    """`function`, calling `before(*args)` first on its `at`-th call."""
    calls = 0

    @functools.wraps(function)
    def wrapper(*args, **kwargs):
        nonlocal calls
        calls += 1
        if calls == at:
            before(*args)
        return function(*args, **kwargs)

    return wrapper


def main(argv):
    kind, _, number = (SIGINT_AT.value or "none:0").partition(":")
    number = int(number)
    if kind == "evaluation":  # validation runs once per epoch, on the target
        original = run.evaluate
        run.evaluate = _count_calls(original, number, lambda network, dataset: _sigint())
    if kind == "checkpoint":  # between the weights file and state.json
        original_write = work_dir.write_json_atomic

        def write_after_signal(filename, value):
            if os.path.basename(filename) == checkpoints.STATE:
                write_after_signal.saves += 1
                if write_after_signal.saves == number:
                    _sigint()
            return original_write(filename, value)

        write_after_signal.saves = 0
        work_dir.write_json_atomic = write_after_signal
    hooks = Hooks(number if kind == "step" else None)
    train.run_experiment = functools.partial(train.run_experiment, callbacks=[hooks])
    return train.main(argv)


if __name__ == "__main__":
    train.define_flags()
    app.run(main)
