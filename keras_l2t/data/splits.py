"""Class-balanced, seeded splits: validation carve, samples per class, meta carve, class
subsets.

Everything here is plain numpy on (key, label) arrays, so a split depends only on the
keys, the labels and the seed: never on file-system or TFDS read order. Each class is
split by its own generator seeded with ``(seed, class index)``, so choosing a subset of
classes or a different ``samples_per_class`` never changes which images of a class went
to validation, and the N kept images are a prefix of a fixed per-class order (the 10 kept
with ``samples_per_class=10`` are among the 20 kept with ``samples_per_class=20``).
The held-out meta split (``meta_fraction``) is carved last, from those kept images, so it
never changes which images went to validation.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

import numpy as np


@dataclasses.dataclass(frozen=True)
class SplitIndices:
    """Indices into the official train split, and the label remapping.

    Attributes:
        train: sorted indices of the training examples kept.
        val: sorted indices of the validation examples (disjoint from ``train``).
        label_map: int64 array, original label -> new label, -1 for a dropped class.
        meta: sorted indices of the held-out meta examples (disjoint from ``train`` and
            ``val``; empty without ``meta_fraction``).
    """

    train: np.ndarray
    val: np.ndarray
    label_map: np.ndarray
    meta: np.ndarray = dataclasses.field(default_factory=lambda: np.zeros(0, np.int64))


def class_label_map(num_classes: int, classes: Sequence[int] | None) -> np.ndarray:
    """Maps original labels to new ones; the k-th kept class becomes label k.

    Args:
        num_classes: number of classes of the dataset.
        classes: original class indices to keep, in the order of the new labels;
            ``None`` keeps every class unchanged.

    Returns:
        int64 array of length ``num_classes``, -1 for dropped classes.

    Example:
        >>> class_label_map(4, [3, 1]).tolist()
        [-1, 1, -1, 0]
    """
    if classes is None:
        return np.arange(num_classes, dtype=np.int64)
    classes = [int(c) for c in classes]
    if not classes:
        raise ValueError("`classes` is empty: keep at least one class.")
    if len(set(classes)) != len(classes):
        raise ValueError(f"`classes` lists a class twice: {classes}.")
    bad = [c for c in classes if not 0 <= c < num_classes]
    if bad:
        raise ValueError(f"`classes` {bad} out of range: the dataset has {num_classes} classes.")
    label_map = np.full(num_classes, -1, dtype=np.int64)
    label_map[classes] = np.arange(len(classes))
    return label_map


def _num_val(n: int, fraction: float) -> int:
    """Validation size of a class of n images: round half up, and at least one."""
    if fraction <= 0.0 or n < 2:
        return 0
    return int(min(n - 1, max(1, np.floor(fraction * n + 0.5))))


def _num_meta(n: int, fraction: float) -> int:
    """Meta-split size of a class keeping n training images: round half up, at least one
    (0 for a class without images or without a meta split)."""
    if fraction <= 0.0 or n == 0:
        return 0
    return int(max(1, np.floor(fraction * n + 0.5)))


def split_train_val(
    keys: Sequence[str] | np.ndarray,
    labels: Sequence[int] | np.ndarray,
    *,
    num_classes: int,
    val_fraction: float = 0.1,
    seed: int = 0,
    samples_per_class: int | None = None,
    classes: Sequence[int] | None = None,
    class_names: Sequence[str] | None = None,
    meta_fraction: float = 0.0,
) -> SplitIndices:
    """Carves a class-balanced validation set from a train split, then limits it.

    Per class (examples ordered by key; a class with no example is skipped unless
    ``samples_per_class`` asks for some): a permutation from
    ``np.random.default_rng([seed, class])``; its first ``round(val_fraction * n)``
    examples form the validation set, and the next ``samples_per_class`` (or all the
    rest) the training images kept. With ``meta_fraction``, the first
    ``round(meta_fraction * kept)`` (at least one) of those kept form the meta split and
    the others the training set, so the meta images are part of the
    ``samples_per_class`` and validation does not change with ``meta_fraction``.

    Args:
        keys: one unique, stable string per example (file path, TFDS id, index).
        labels: the original integer label of each example.
        num_classes: number of classes of the dataset.
        val_fraction: fraction of each class held out for validation (0 for none).
        seed: split seed; the same seed gives the same split on every machine.
        samples_per_class: keep this many training images per class (None: all).
        classes: original class indices to keep (None: all); see `class_label_map`.
        class_names: names used in error messages.
        meta_fraction: fraction of each class's kept training images held out as the
            meta split (0 for none; half rounded up, at least one image per class).

    Returns:
        A `SplitIndices`.

    Raises:
        ValueError: for bad fractions or sizes, and when the meta carve would leave a
            class without a training image; the message names the class.

    Example:
        >>> s = split_train_val(["a", "b", "c", "d"], [0, 0, 1, 1], num_classes=2,
        ...                     val_fraction=0.5)
        >>> len(s.train), len(s.val)
        (2, 2)
        >>> s = split_train_val(["a", "b", "c", "d"], [0, 0, 1, 1], num_classes=2,
        ...                     val_fraction=0.0, meta_fraction=0.5)
        >>> len(s.train), len(s.meta)
        (2, 2)
    """
    keys = np.asarray(keys).astype(str)
    labels = np.asarray(labels, dtype=np.int64)
    if keys.shape != labels.shape or keys.ndim != 1:
        raise ValueError(f"keys {keys.shape} and labels {labels.shape} must be 1-D, same length.")
    if len(np.unique(keys)) != len(keys):
        raise ValueError("Example keys are not unique; the split would not be reproducible.")
    if not 0.0 <= val_fraction < 1.0:
        raise ValueError(f"val_fraction must be in [0, 1), got {val_fraction}.")
    if not 0.0 <= meta_fraction < 1.0:
        raise ValueError(f"meta_fraction must be in [0, 1), got {meta_fraction}.")
    if samples_per_class is not None and samples_per_class < 1:
        raise ValueError(f"samples_per_class must be >= 1, got {samples_per_class}.")
    label_map = class_label_map(num_classes, classes)
    order = np.argsort(keys, kind="stable")
    train, val, meta = [], [], []
    for c in np.flatnonzero(label_map >= 0):
        members = order[labels[order] == c]
        n = len(members)
        name = f"{c} ({class_names[c]!r})" if class_names is not None else str(c)
        perm = members[np.random.default_rng([int(seed), int(c)]).permutation(n)]
        n_val = _num_val(n, val_fraction)
        rest = perm[n_val:]
        if samples_per_class is not None:
            if samples_per_class > len(rest):
                raise ValueError(
                    f"samples_per_class={samples_per_class}, but class {name} has only "
                    f"{len(rest)} training images ({n} in the train split, {n_val} of them "
                    "held out for validation); lower samples_per_class or val_fraction, or "
                    "use more of the train split (train_indices)."
                )
            rest = rest[:samples_per_class]
        n_meta = _num_meta(len(rest), meta_fraction)
        if n_meta and n_meta >= len(rest):
            raise ValueError(
                f"meta_fraction={meta_fraction} would leave class {name} with no training "
                f"image: it keeps {len(rest)} training image(s) ({n} in the train split, "
                f"{n_val} held out for validation) and the meta split takes {n_meta} "
                "(half rounded up, at least one per class); lower meta_fraction, or keep "
                "more images per class (samples_per_class, val_fraction)."
            )
        val.append(perm[:n_val])
        meta.append(rest[:n_meta])
        train.append(rest[n_meta:])
    return SplitIndices(
        train=np.sort(np.concatenate(train)).astype(np.int64),
        val=np.sort(np.concatenate(val)).astype(np.int64),
        label_map=label_map,
        meta=np.sort(np.concatenate(meta)).astype(np.int64),
    )


def select_classes(labels: Sequence[int] | np.ndarray, label_map: np.ndarray) -> np.ndarray:
    """Indices of the examples whose class is kept by ``label_map`` (for the test split)."""
    labels = np.asarray(labels, dtype=np.int64)
    return np.flatnonzero(label_map[labels] >= 0).astype(np.int64)
