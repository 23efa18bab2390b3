"""The errors the experiment raises: problems a user can fix, and a diverged loss."""

from __future__ import annotations

import re

_TERMINAL_STYLES = re.compile(r"\x1b\[[0-9;]*m")  # Keras bolds parts of its messages


class ExperimentError(ValueError):
    """A user-fixable problem (bad flag, missing file, unwritable directory, ...).

    Its message is one line that names the fix; `train.py` prints it alone and exits
    non-zero, without a traceback. Terminal style codes carried over from a wrapped
    Keras message are removed, so logs and files show plain text.
    """

    def __init__(self, message: str):
        super().__init__(_TERMINAL_STYLES.sub("", message))


class NonFiniteLoss(ExperimentError):
    """The training loss became NaN or infinite; training stopped before saving."""
