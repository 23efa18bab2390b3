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
    <work_dir>/data.json            what the run trains on (`fingerprint`), checked on resume
    <work_dir>/.lock                held by the process that writes the directory

`--mode=pretrain_source` writes config.json, results.json and, from
`keras_l2t.source_pretraining`, source.keras, history.csv and backup/ (while it runs).
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import tempfile
import warnings

import tensorflow as tf

try:
    import fcntl
except ImportError:  # Windows: no flock
    fcntl = None

from keras_l2t import source_pretraining
from keras_l2t.experiment.errors import ExperimentError, OutputError

CONFIG = "config.json"
RESULTS = "results.json"
LOG = "log.csv"
TENSORBOARD = "tensorboard"
CHECKPOINTS = "checkpoints"
SOURCE = "source"
TARGET = "target.keras"
EXPORT = "export"
PICTURES = "pictures"
DATA = "data.json"
LOCK = ".lock"

# Everything train.py writes at the top of a work directory; `clear` deletes only these.
OUTPUTS = frozenset({
    CONFIG, RESULTS, LOG, TENSORBOARD, CHECKPOINTS, SOURCE, TARGET, EXPORT, PICTURES, DATA,
    source_pretraining.SOURCE_FILE_NAME, source_pretraining.HISTORY_FILE_NAME,
    source_pretraining.BACKUP_DIR_NAME,
})
# write_json_atomic and TrainingState.save, EpochLog's rewrite, check_writable
_TEMPORARY_PREFIXES = (".tmp_", f"{LOG}.tmp", ".write_probe")
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
    """Writes JSON to a temporary file and renames it, so readers never see half a file.

    Raises:
        OutputError: when the file cannot be written (nothing is left behind then).
    """
    directory = os.path.dirname(os.path.abspath(filename))
    with writing(filename):
        os.makedirs(directory, exist_ok=True)
        handle, temporary = tempfile.mkstemp(dir=directory, prefix=".tmp_")
        try:
            with os.fdopen(handle, "w") as f:
                json.dump(value, f, indent=2, sort_keys=True)
                f.write("\n")
            os.chmod(temporary, 0o666 & ~_umask())  # mkstemp's 0600 would hide it
            os.replace(temporary, filename)
        except BaseException:
            _remove(temporary)
            raise


@contextlib.contextmanager
def writing(filename: str):
    """Turns a failed write of `filename` (full disk, read-only file system, permission)
    into an `OutputError` that names the file and the cause."""
    try:
        yield
    except OutputError:
        raise
    except (OSError, tf.errors.OpError) as error:
        raise OutputError(filename, _cause(error)) from None


def _cause(error: Exception) -> str:
    if isinstance(error, OSError) and error.strerror:
        return error.strerror
    message = getattr(error, "message", None) or str(error)
    return message.strip().splitlines()[0][:200] if message.strip() else type(error).__name__


def _remove(name: str) -> None:
    with contextlib.suppress(OSError):
        if os.path.isdir(name) and not os.path.islink(name):
            shutil.rmtree(name)
        else:
            os.remove(name)


@contextlib.contextmanager
def locked(work_dir: str):
    """Holds `work_dir` for this process alone (the first thing a run writes there).

    An OS lock (`flock`) on `<work_dir>/.lock`: the kernel releases it when the process
    ends, however it ends, so a killed run never leaves a stale lock. The file keeps the
    holder's process id for the refusal message. Inside, the temporary files of an
    interrupted earlier write are deleted first.

    Raises:
        ExperimentError: when another process holds the directory, naming its id.
        OutputError: when the lock file cannot be written.
    """
    lock_path = path(work_dir, LOCK)
    with writing(lock_path):
        os.makedirs(work_dir, exist_ok=True)
        handle = os.open(lock_path, os.O_RDWR | os.O_CREAT, 0o666)
    try:
        try:
            if fcntl is None:
                raise OSError(0, "no flock on this platform")
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(handle, 32, 0).decode(errors="replace").strip() or "unknown"
            raise ExperimentError(
                f"--work_dir={work_dir} is being written by another run (process id "
                f"{holder}); wait for it to finish, or use another --work_dir."
            ) from None
        except OSError as error:  # a file system without locks (some network mounts)
            warnings.warn(f"Cannot lock {lock_path} ({error.strerror}): make sure no "
                          "other run writes this --work_dir.", stacklevel=3)
        else:
            with writing(lock_path):
                os.ftruncate(handle, 0)
                os.pwrite(handle, f"{os.getpid()}\n".encode(), 0)
        for folder in (work_dir, path(work_dir, CHECKPOINTS)):
            if os.path.isdir(folder):
                for name in os.listdir(folder):
                    if name.startswith(_TEMPORARY_PREFIXES):
                        _remove(os.path.join(folder, name))
        yield
    finally:
        os.close(handle)  # releases the lock


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
    names = set(os.listdir(work_dir)) - {LOCK} if os.path.isdir(work_dir) else set()
    if names and not holds_experiment(work_dir):
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
        with writing(full):
            if os.path.isdir(full) and not os.path.islink(full):
                shutil.rmtree(full)
            else:
                os.remove(full)
