"""The work directory: its layout, a write probe, atomic files, and its saved config.

    <work_dir>/config.json          the resolved config
    <work_dir>/log.csv              one row per epoch
    <work_dir>/tensorboard/         TensorBoard event files
    <work_dir>/checkpoints/         the last and the best epoch's training state
                                    (`checkpoints.TrainingState`)
    <work_dir>/source/              a source pretrained by the experiment (cache)
    <work_dir>/results.json         final results (written last)
    <work_dir>/target.keras         the trained target (best epoch)
    <work_dir>/export/              SavedModel of the target, uint8-image signature
    <work_dir>/pictures/            L2T-ww's learned weights as PNG files

`--mode=pretrain_source` writes config.json, results.json and, from
`keras_l2t.source_pretraining`, source.keras, history.csv and backup/ (while it runs).
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile

from keras_l2t import source_pretraining
from keras_l2t.experiment.errors import ExperimentError

CONFIG = "config.json"
RESULTS = "results.json"
LOG = "log.csv"
TENSORBOARD = "tensorboard"
CHECKPOINTS = "checkpoints"
SOURCE = "source"
TARGET = "target.keras"
EXPORT = "export"
PICTURES = "pictures"

# Everything train.py writes at the top of a work directory; `clear` deletes only these.
OUTPUTS = frozenset({
    CONFIG, RESULTS, LOG, TENSORBOARD, CHECKPOINTS, SOURCE, TARGET, EXPORT, PICTURES,
    source_pretraining.SOURCE_FILE_NAME, source_pretraining.HISTORY_FILE_NAME,
    source_pretraining.BACKUP_DIR_NAME,
})
_TEMPORARY_PREFIXES = (".tmp_", ".write_probe")  # write_json_atomic, check_writable
# Keys every experiment's config.json has: how `clear` recognises one.
EXPERIMENT_KEYS = frozenset({"mode", "dataset", "target", "method", "work_dir", "seed"})


def path(work_dir: str, name: str) -> str:
    """`name` inside `work_dir`."""
    return os.path.join(work_dir, name)


def check_writable(work_dir: str) -> None:
    """Checks that `work_dir` can be created and written, leaving nothing behind.

    Raises:
        ExperimentError: naming the directory and the fix.
    """
    existing = os.path.abspath(work_dir)
    while not os.path.exists(existing):
        existing = os.path.dirname(existing)
    if not os.path.isdir(existing):
        raise ExperimentError(
            f"--work_dir={work_dir}: '{existing}' is a file, not a directory; choose "
            "another --work_dir."
        )
    try:
        with tempfile.NamedTemporaryFile(dir=existing, prefix=".write_probe"):
            pass
    except OSError as error:
        raise ExperimentError(
            f"--work_dir={work_dir} cannot be written ({error.strerror} in '{existing}'); "
            "choose a writable --work_dir."
        ) from None


def write_json_atomic(filename: str, value) -> None:
    """Writes JSON to a temporary file and renames it, so readers never see half a file."""
    directory = os.path.dirname(os.path.abspath(filename))
    os.makedirs(directory, exist_ok=True)
    handle, temporary = tempfile.mkstemp(dir=directory, prefix=".tmp_")
    with os.fdopen(handle, "w") as f:
        json.dump(value, f, indent=2, sort_keys=True)
        f.write("\n")
    os.chmod(temporary, 0o666 & ~_umask())  # mkstemp's 0600 would hide it from others
    os.replace(temporary, filename)


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def read_json(filename: str):
    """The JSON content of `filename`, or None if it does not exist."""
    if not os.path.exists(filename):
        return None
    with open(filename) as f:
        return json.load(f)


def holds_experiment(work_dir: str) -> bool:
    """Whether `work_dir` has a config.json written by an experiment of this project."""
    try:
        saved = read_json(path(work_dir, CONFIG))
    except (OSError, ValueError):
        return False
    return isinstance(saved, dict) and saved.keys() >= EXPERIMENT_KEYS


def check_clearable(work_dir: str) -> None:
    """Checks that `clear` may delete `work_dir`: absent, empty, or an experiment's.

    Raises:
        ExperimentError: when `work_dir` holds files but no experiment of this project.
    """
    if os.path.isdir(work_dir) and os.listdir(work_dir) and not holds_experiment(work_dir):
        raise ExperimentError(
            f"--overwrite: '{work_dir}' does not hold an experiment of train.py (no "
            f"{CONFIG} written by it); refusing to delete it. Choose another --work_dir."
        )


def clear(work_dir: str) -> None:
    """Deletes an earlier experiment's files (`OUTPUTS`), leaving any other file in the
    folder alone; `check_clearable` runs first. config.json goes last, so an interrupted
    clear leaves a folder that is still an experiment, which `--overwrite` clears again.
    """
    check_clearable(work_dir)
    if not holds_experiment(work_dir):
        return
    names = [n for n in os.listdir(work_dir)
             if n in OUTPUTS - {CONFIG} or n.startswith(_TEMPORARY_PREFIXES)]
    for name in [*names, CONFIG]:
        full = path(work_dir, name)
        if os.path.isdir(full) and not os.path.islink(full):
            shutil.rmtree(full)
        else:
            os.remove(full)
