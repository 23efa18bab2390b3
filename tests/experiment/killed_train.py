"""train.py that SIGKILLs itself when the `--kill_at_step`-th training step of this
process ends: a crash mid-epoch, for the resume tests.

    python tests/experiment/killed_train.py TRAIN_PY_FLAGS... --kill_at_step=N
"""

from __future__ import annotations

import os
import signal
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, ROOT)

import keras  # noqa: E402
from absl import app, flags  # noqa: E402

import train  # noqa: E402
from keras_l2t.experiment import run_experiment, set_cpu_devices  # noqa: E402

KILL_AT_STEP = flags.DEFINE_integer("kill_at_step", None, "SIGKILL at this step.",
                                    required=True)


class KillAtStep(keras.callbacks.Callback):
    """SIGKILLs this process when its `step`-th training step ends."""

    def __init__(self, step: int):
        super().__init__()
        self.step, self.finished = step, 0

    def on_train_batch_end(self, batch, logs=None):
        self.finished += 1
        if self.finished == self.step:
            os.kill(os.getpid(), signal.SIGKILL)


def main(argv):
    config = train.config_from_flags()
    set_cpu_devices(config.cpu_devices)
    run_experiment(config, callbacks=[KillAtStep(KILL_AT_STEP.value)])


if __name__ == "__main__":
    train.define_flags()
    app.run(main)
