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


class OutputError(Exception):
    """A file of the work directory could not be written (full disk, read-only file
    system, permission). The last complete checkpoint stays usable: once the cause is
    fixed, rerunning the command resumes.

    Args:
        path: The file or folder that could not be written.
        cause: Why, in the operating system's words ("No space left on device").
    """

    def __init__(self, path: str, cause: str):
        super().__init__(
            f"cannot write '{path}': {cause}. Every finished epoch is kept: free space or "
            "fix the permissions, then rerun the same command to resume."
        )
        self.path, self.cause = path, cause
