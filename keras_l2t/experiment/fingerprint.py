"""What a run trains on, stored at its start and compared when it resumes.

A resumed run must see the data its checkpoints were trained on: with other data the
restored learning-rate schedule, the classifier's classes and the epochs already logged
would silently belong to another experiment. `--data_dir` itself may change (a dataset
moved to another disk), so the fingerprint holds what the data is, not where:

- the dataset, its class names, the sizes of the train / val / meta / test splits, the
  image size and the steps per epoch;
- for a dataset read from a folder (image folders, Fashion-MNIST idx files, a TFDS data
  directory), the number of files, their total size and a SHA-1 of the sorted list of
  relative paths with sizes: cheap (no file is read) and it changes when a file is
  added, removed, renamed or rewritten at another size.
"""

from __future__ import annotations

import hashlib
import os

from keras_l2t.experiment.config import ExperimentConfig
from keras_l2t.experiment.data import ExperimentData


def data_fingerprint(config: ExperimentConfig, data: ExperimentData) -> dict:
    """The fingerprint of the data `config` loaded (see the module docstring).

    Args:
        config: The experiment config (its `dataset`, `data_dir` and `work_dir`).
        data: What `load_data` returned for it.

    Returns:
        A JSON-serialisable dict.
    """
    splits = data.splits
    fingerprint = {
        "dataset": config.dataset,
        "class_names": list(splits.class_names),
        "num_train": splits.num_train,
        "num_val": splits.num_val,
        "num_meta": splits.num_meta,
        "num_test": splits.num_test,
        "image_size": splits.image_size,
        "steps_per_epoch": data.steps_per_epoch,
    }
    if config.data_dir and os.path.isdir(os.path.expanduser(config.data_dir)):
        fingerprint["files"] = folder_fingerprint(os.path.expanduser(config.data_dir),
                                                  exclude=config.work_dir)
    return fingerprint


def folder_fingerprint(folder: str, exclude: str | None = None) -> dict:
    """Number, total size and SHA-1 of the sorted (relative path, size) list of the files
    under `folder`, leaving out the folder `exclude` (a work directory inside it).

    Example:
        >>> import os, tempfile
        >>> from keras_l2t.experiment.fingerprint import folder_fingerprint
        >>> folder = tempfile.mkdtemp()
        >>> with open(os.path.join(folder, "a.png"), "wb") as f:
        ...     _ = f.write(b"12345")
        >>> {k: v for k, v in folder_fingerprint(folder).items() if k != "sha1"}
        {'count': 1, 'bytes': 5}
    """
    skip = os.path.realpath(exclude) if exclude else None
    entries = []
    for root, folders, files in os.walk(folder, followlinks=True):
        folders[:] = sorted(d for d in folders
                            if os.path.realpath(os.path.join(root, d)) != skip)
        for name in files:
            full = os.path.join(root, name)
            try:
                size = os.path.getsize(full)
            except OSError:  # a dangling link
                size = -1
            entries.append((os.path.relpath(full, folder).replace(os.sep, "/"), size))
    entries.sort()
    digest = hashlib.sha1("".join(f"{p}\t{s}\n" for p, s in entries).encode())
    return {"count": len(entries), "bytes": sum(max(s, 0) for _, s in entries),
            "sha1": digest.hexdigest()}


def differences(saved: dict, current: dict) -> list[str]:
    """What differs between a stored and a current fingerprint, for the refusal line.

    Example:
        >>> from keras_l2t.experiment.fingerprint import differences
        >>> differences({"num_train": 60, "class_names": ["a", "b"]},
        ...             {"num_train": 48, "class_names": ["a", "b"]})
        ['num_train 60 -> 48']
    """
    found = []
    for key in sorted(saved.keys() | current.keys()):
        before, now = saved.get(key), current.get(key)
        if before == now or (key == "files" and (before is None or now is None)):
            continue  # "files": only one of the runs read a folder given by --data_dir
        if key == "class_names" and before and now:
            found.append(f"class_names ({len(before)} classes -> {len(now)})"
                         if len(before) != len(now) else "class_names (other names)")
        elif key == "files" and isinstance(before, dict) and isinstance(now, dict):
            found.append(f"files ({before['count']} files, {before['bytes']} bytes -> "
                         f"{now['count']} files, {now['bytes']} bytes)"
                         if (before["count"], before["bytes"]) != (now["count"], now["bytes"])
                         else "files (same count and size, other names or sizes)")
        else:
            found.append(f"{key} {before} -> {now}")
    return found
