"""`load_dataset`: one named dataset -> batched train / val / test pipelines."""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Sequence

import numpy as np
import tensorflow as tf

from keras_l2t.data import augment, catalog, splits
from keras_l2t.data.fashion_mnist import FashionMnistSource
from keras_l2t.data.image_folder import ImageFolderSource
from keras_l2t.data.pipeline import build_pipeline
from keras_l2t.data.source import Source
from keras_l2t.data.tfds_source import TfdsSource


@dataclasses.dataclass(frozen=True)
class DataSplits:
    """What `load_dataset` returns.

    Attributes:
        train: shuffled, augmented batches of (float32 [B, S, S, 3] normalised, int32 [B]):
            one pass, the same batches every time it is iterated, or endless passes with
            ``repeat=True``.
        val: validation batches (class-balanced carve of the official train split).
        test: batches of the official test split; None when the dataset has none.
        num_classes: number of classes (after any class subset).
        class_names: names indexed by label.
        image_size: S.
        num_train, num_val, num_test: examples in each split.
        meta: endless shuffled, augmented batches for a held-out meta objective, as
            ``train`` (same augmentation and batch size): of the meta split carved with
            ``meta_fraction``, or of the training images with ``meta_from_train``, with
            its own seed; None without either. `zip_meta(train, meta)` pairs them.
        num_meta: images ``meta`` draws from: the meta split's size, ``num_train`` with
            ``meta_from_train``, 0 without a meta stream.
        steps_per_epoch: batches in one pass of ``train`` (the last one partial unless
            ``drop_remainder``).
    """

    train: tf.data.Dataset
    val: tf.data.Dataset
    test: tf.data.Dataset | None
    num_classes: int
    class_names: tuple[str, ...]
    image_size: int
    num_train: int
    num_val: int
    num_test: int
    meta: tf.data.Dataset | None = None
    num_meta: int = 0
    steps_per_epoch: int = 0


# Salt of the meta stream's seed (derived from the shuffle seed): "meta" in ASCII.
_META_SEED_SALT = 0x6D657461


def meta_seed(shuffle_seed: int) -> int:
    """The shuffle and augmentation seed of the meta stream, derived from ``shuffle_seed``.

    Example:
        >>> meta_seed(0) == meta_seed(0) != meta_seed(1)
        True
    """
    state = np.random.SeedSequence([int(shuffle_seed) % 2**63, _META_SEED_SALT])
    return int(state.generate_state(1, np.uint32)[0])


def make_source(
    name: str,
    data_dir: str | None = None,
    *,
    download: bool = False,
    check_files: bool = True,
) -> Source:
    """Builds the `Source` of a named dataset (see `catalog.DATASETS`).

    Args:
        name: dataset name or alias.
        data_dir: TFDS data dir, image-folder root, or Fashion-MNIST idx folder.
        download: allow TFDS / Keras downloads when the data is missing.
        check_files: check the first bytes of every image of an image folder.

    Returns:
        A `Source`.
    """
    spec = catalog.get_spec(name)
    if data_dir:
        data_dir = os.path.expanduser(data_dir)
    if spec.source == catalog.TFDS:
        return TfdsSource(spec.tfds_name, data_dir=data_dir, download=download)
    if spec.source == catalog.FASHION_MNIST:
        return FashionMnistSource(data_dir, download=download)
    if not data_dir:
        raise ValueError(
            f"{spec.description}: pass data_dir, the folder laid out as "
            "data_dir/train/<class>/*.jpg and data_dir/test/<class>/*.jpg (docs/data.md)."
        )
    if not os.path.isdir(data_dir) and spec.name != "image_folder":
        raise FileNotFoundError(
            f"{spec.description}: {data_dir} does not exist (or is not a folder). Download "
            f"{spec.name} and lay it out as docs/data.md shows, then pass its folder as "
            "data_dir (train.py: --data_dir)."
        )
    test_dir = "val" if spec.tiny_imagenet_val else "test"
    return ImageFolderSource(
        data_dir,
        test_dir=test_dir,
        tiny_imagenet_val=spec.tiny_imagenet_val,
        check_files=check_files,
    )


def _resolve_classes(
    classes: Sequence[int | str] | None, class_names: Sequence[str]
) -> list[int] | None:
    if classes is None:
        return None
    if isinstance(classes, str):
        raise ValueError(f"`classes` must be a list of class names or indices, got the "
                         f"string {classes!r}; e.g. classes=[{classes!r}].")
    resolved = []
    for c in classes:
        if isinstance(c, str):
            if c not in class_names:
                raise ValueError(
                    f"Unknown class {c!r} in `classes`; the classes are {list(class_names)}."
                )
            resolved.append(list(class_names).index(c))
        else:
            resolved.append(int(c))
    return resolved


def load_dataset(
    name: str,
    *,
    data_dir: str | None = None,
    split_seed: int = 0,
    val_fraction: float = 0.1,
    samples_per_class: int | None = None,
    classes: Sequence[int | str] | None = None,
    train_indices: Sequence[int] | None = None,
    image_size: int | None = None,
    augmentation: str | None = None,
    batch_size: int | None = None,
    eval_batch_size: int | None = None,
    shuffle_seed: int | None = None,
    shuffle_buffer: int | None = None,
    drop_remainder: bool = False,
    antialias: bool = True,
    num_parallel_calls: int = tf.data.AUTOTUNE,
    download: bool = False,
    check_files: bool = True,
    source: Source | None = None,
    meta_fraction: float = 0.0,
    meta_from_train: bool = False,
    repeat: bool = False,
) -> DataSplits:
    """Loads a dataset of the paper as train / val / test tf.data pipelines.

    Validation is a class-balanced ``val_fraction`` of the official train split, chosen
    by ``split_seed`` (same seed, same split, on every machine); test is the official test
    split. Train batches are shuffled and augmented, val/test batches are not
    (authors' code: 224 px random resized crop + flip, eval resize 256 / centre crop 224;
    32 px pad 4 + random crop + flip). Images are float32, normalised with the ImageNet
    mean and std, RGB; labels are int32.

    For a held-out meta objective (`TransferModel(..., meta_objective="held_out")`),
    ``meta_fraction`` carves a class-balanced meta split from the training images and
    ``DataSplits.meta`` streams it; ``meta_from_train`` streams the training images
    themselves instead (another shuffle, no carve).

    Args:
        name: ``stanford_dogs``, ``cub200``, ``cifar100``, ``stl10``, ``mit_indoor67``,
            ``stanford40``, ``tiny_imagenet``, ``fashion_mnist`` or ``image_folder``.
        data_dir: TFDS data dir (TFDS datasets), the dataset folder (image folders), or
            the idx folder (Fashion-MNIST; default /usr/share/datasets/fashion-mnist).
        split_seed: seed of the validation carve and of ``samples_per_class``.
        val_fraction: fraction of each class of the train split held out (0: no val).
        samples_per_class: keep this many training images per class (limited data).
        classes: keep only these classes (indices or names), relabelled 0..k-1 in this
            order, in every split (class-split experiments).
        train_indices: use only these positions of the official train split, in the
            source's order (e.g. ``range(50_000)`` of Fashion-MNIST's 60,000), before
            the validation carve.
        image_size: output side; default 224 or 32 as in the paper.
        augmentation: ``"resized_crop"`` or ``"pad_crop"``; default by ``image_size``.
        batch_size: train batch; default 64 (224 px) or 128 (32 px).
        eval_batch_size: val/test batch; default ``batch_size``.
        shuffle_seed: seed of the train shuffle and augmentation; default ``split_seed``.
            The train (and meta) batches are a function of it alone, not of TensorFlow's
            global seed, and are the same every time a pipeline is iterated.
        shuffle_buffer: train shuffle block (`pipeline.stateless_shuffle`); default: the
            whole train split, or 10,000 for TFDS datasets (stored shuffled; their block
            holds encoded images).
        drop_remainder: drop the last partial train batch.
        antialias: antialiased resizing, as PIL (the reference) does; False is about
            1.6x faster at 224 px on CPU.
        num_parallel_calls: parallelism of the decode/augment map (default AUTOTUNE).
        download: allow downloading a missing TFDS dataset or Fashion-MNIST.
        check_files: check every image file of an image folder when listing it.
        source: a ready `Source` to use instead of building one from ``name``
            (``name`` then only picks the defaults).
        meta_fraction: fraction of each class's training images (after the validation
            carve and ``samples_per_class``, so they are part of the N per class) held
            out as the meta split, seeded by ``split_seed``; half rounded up, at least
            one per class. 0: no meta split.
        meta_from_train: make ``meta`` a second stream of the training images, with its
            own shuffle and augmentation (needs ``meta_fraction=0``).
        repeat: make ``train`` endless, every pass with its own shuffle and augmentation
            (still a function of ``shuffle_seed`` alone), batched across passes: for
            ``fit(data.train, epochs=N, steps_per_epoch=data.steps_per_epoch)``. Without
            it ``train`` is one pass, the same every time it is iterated.

    Returns:
        A `DataSplits`.

    Raises:
        ValueError: for bad arguments, a class with fewer than ``samples_per_class``
            training images, or a meta carve that would leave a class without a
            training image.

    Example (TFDS' mock: 20 random images stand in for a prepared CIFAR-100):
        >>> import tensorflow_datasets as tfds
        >>> with tfds.testing.mock_data(num_examples=20):
        ...     data = load_dataset("cifar100", val_fraction=0.5, batch_size=8)
        ...     images, labels = next(iter(data.train))
        >>> data.image_size, data.num_classes, data.num_train + data.num_val
        (32, 100, 20)
        >>> tuple(images.shape), labels.dtype.name
        ((8, 32, 32, 3), 'int32')
    """
    spec = catalog.get_spec(name)
    if meta_from_train and meta_fraction:
        raise ValueError(
            f"Pass meta_fraction={meta_fraction} (a held-out meta split) or "
            "meta_from_train=True (a second stream of the training images), not both."
        )
    if source is None:
        source = make_source(name, data_dir, download=download, check_files=check_files)
    image_size = image_size or spec.image_size
    augmentation = augmentation or augment.default_augmentation(image_size)
    batch_size = batch_size or spec.batch_size
    eval_batch_size = eval_batch_size or batch_size
    shuffle_seed = split_seed if shuffle_seed is None else shuffle_seed

    keys, labels = source.index("train")
    positions = np.arange(len(keys))
    if train_indices is not None:
        given = np.asarray(list(train_indices))
        if given.size == 0 or not np.issubdtype(given.dtype, np.integer):
            raise ValueError(
                "train_indices must be a non-empty sequence of integer positions, got "
                f"{given.size} values of type {given.dtype}."
            )
        positions = given.astype(np.int64)
        if len(np.unique(positions)) != len(positions):
            raise ValueError("train_indices has repeated positions; give each at most once.")
        if positions.min() < 0 or positions.max() >= len(keys):
            raise ValueError(
                f"train_indices must lie in [0, {len(keys)}): the train split has "
                f"{len(keys)} examples."
            )
    chosen = splits.split_train_val(
        keys[positions],
        labels[positions],
        num_classes=source.num_classes,
        val_fraction=val_fraction,
        seed=split_seed,
        samples_per_class=samples_per_class,
        classes=_resolve_classes(classes, source.class_names),
        class_names=source.class_names,
        meta_fraction=meta_fraction,
    )
    label_map = chosen.label_map
    train_idx, val_idx = positions[chosen.train], positions[chosen.val]
    meta_idx = train_idx if meta_from_train else positions[chosen.meta]
    kept = np.flatnonzero(label_map >= 0)
    class_names = tuple(source.class_names[c] for c in kept[np.argsort(label_map[kept])])

    def batched(split, idx, split_labels, training, batch, seed=shuffle_seed, repeat=False):
        ds = source.dataset(split, idx, label_map[split_labels[idx]])
        return build_pipeline(
            ds,
            kind=source.kind,
            training=training,
            image_size=image_size,
            augmentation=augmentation,
            batch_size=batch,
            seed=seed,
            shuffle_buffer=shuffle_buffer,
            drop_remainder=drop_remainder and training,
            num_parallel_calls=num_parallel_calls,
            antialias=antialias,
            repeat=repeat,
        )

    test, num_test = None, 0
    if source.has_test:
        _, test_labels = source.index("test")
        test_idx = splits.select_classes(test_labels, label_map)
        test = batched("test", test_idx, test_labels, False, eval_batch_size)
        num_test = len(test_idx)
    meta = None
    if len(meta_idx) and (meta_fraction or meta_from_train):
        meta = batched("train", meta_idx, labels, True, batch_size,
                       seed=meta_seed(shuffle_seed), repeat=True)
    return DataSplits(
        train=batched("train", train_idx, labels, True, batch_size, repeat=repeat),
        val=batched("train", val_idx, labels, False, eval_batch_size),
        test=test,
        num_classes=len(class_names),
        class_names=class_names,
        image_size=image_size,
        num_train=len(train_idx),
        num_val=len(val_idx),
        num_test=num_test,
        meta=meta,
        num_meta=len(meta_idx) if meta is not None else 0,
        steps_per_epoch=(len(train_idx) // batch_size if drop_remainder
                         else -(-len(train_idx) // batch_size)),
    )
