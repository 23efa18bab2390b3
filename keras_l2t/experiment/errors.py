"""The one error type the experiment raises for problems a user can fix."""

from __future__ import annotations


class ExperimentError(ValueError):
    """A user-fixable problem (bad flag, missing file, unwritable directory, ...).

    Its message is one line that names the fix; `train.py` prints it alone and exits
    non-zero, without a traceback.
    """
