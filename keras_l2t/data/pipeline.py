"""Batched tf.data pipelines from (image, label) datasets: shuffle, augment, batch, prefetch."""

from __future__ import annotations

import tensorflow as tf

from keras_l2t.data import augment

AUTOTUNE = tf.data.AUTOTUNE
# What a source's (x, label) elements hold in x.
PATH = "path"  # a file path: read inside the parallel map
ENCODED = "encoded"  # encoded image bytes
ARRAY = "array"  # a uint8 [H, W] or [H, W, C] array
# Encoded images are held in the shuffle buffer as bytes; TFDS stores them shuffled.
ENCODED_SHUFFLE_BUFFER = 10_000


def _load(x: tf.Tensor, kind: str) -> tf.Tensor:
    return tf.io.read_file(x) if kind == PATH else x


def _default_shuffle_buffer(ds: tf.data.Dataset, kind: str) -> int:
    size = int(ds.cardinality())
    if size < 0:  # unknown or infinite
        return ENCODED_SHUFFLE_BUFFER
    return max(1, size if kind != ENCODED else min(size, ENCODED_SHUFFLE_BUFFER))


# Salts that split a pipeline's seed into a shuffle key and an augmentation key.
_SHUFFLE_SALT = 0x73687566  # "shuf"
_AUGMENT_SALT = 0x61756766  # "augf"
_ALG = "philox"


def _key(seed: int, salt: int) -> tf.Tensor:
    """A stateless seed [2] (int64) from a pipeline seed and a salt."""
    return tf.constant([int(seed) % 2**63, salt], tf.int64)


def _fold_in(key: tf.Tensor, index: tf.Tensor) -> tf.Tensor:
    """The stateless seed of item ``index`` of the stream keyed by ``key``."""
    return tf.random.experimental.stateless_fold_in(key, tf.cast(index, tf.int64), alg=_ALG)


def stateless_shuffle(
    ds: tf.data.Dataset, buffer: int, seed: int, repeat: bool = False
) -> tf.data.Dataset:
    """Shuffles ``ds`` in blocks of ``buffer`` elements, as a function of ``seed`` alone.

    Each block of consecutive elements is permuted by a stateless permutation seeded by
    (``seed``, block number): a buffer at least the dataset's size is a uniform shuffle.
    TensorFlow's global seed plays no part, and every iteration yields the same order.

    Args:
        ds: a finite dataset whose elements all have one shape.
        buffer: elements per block.
        seed: the shuffle seed.
        repeat: repeat forever; every pass is shuffled anew (its blocks have new numbers).

    Returns:
        The shuffled ``tf.data.Dataset``.
    """
    key = _key(seed, _SHUFFLE_SALT)
    blocks = ds.batch(buffer)
    if repeat:
        blocks = blocks.repeat()

    def permute(index, block):
        size = tf.shape(tf.nest.flatten(block)[0])[0]
        order = tf.random.experimental.stateless_shuffle(
            tf.range(size), _fold_in(key, index), alg=_ALG)
        return tf.data.Dataset.from_tensor_slices(
            tf.nest.map_structure(lambda t: tf.gather(t, order), block))

    shuffled = blocks.enumerate().flat_map(permute)
    cardinality = tf.data.INFINITE_CARDINALITY if repeat else int(ds.cardinality())
    if cardinality == tf.data.UNKNOWN_CARDINALITY:
        return shuffled
    return shuffled.apply(tf.data.experimental.assert_cardinality(cardinality))


def build_pipeline(
    ds: tf.data.Dataset,
    *,
    kind: str,
    training: bool,
    image_size: int,
    augmentation: str,
    batch_size: int,
    seed: int = 0,
    shuffle_buffer: int | None = None,
    drop_remainder: bool = False,
    num_parallel_calls: int = AUTOTUNE,
    antialias: bool = True,
    repeat: bool = False,
) -> tf.data.Dataset:
    """Turns a dataset of (x, label) into batches of (float32 image, int32 label).

    Training pipelines shuffle (`stateless_shuffle`) and augment with stateless
    per-example seeds derived from (``seed``, position in the stream): the batches are a
    function of ``seed`` alone, whatever TensorFlow's global seed
    (`keras.utils.set_random_seed`), and iterating the same pipeline again yields the
    same batches (build one pipeline per epoch, with its own seed, for new ones).
    Evaluation pipelines keep the order and do not augment.

    Args:
        ds: elements (x, label); ``kind`` says what x is (PATH, ENCODED or ARRAY).
        kind: PATH, ENCODED or ARRAY.
        training: shuffle and augment when True.
        image_size: output side.
        augmentation: ``augment.RESIZED_CROP`` or ``augment.PAD_CROP``.
        batch_size: examples per batch.
        seed: shuffle and augmentation seed.
        shuffle_buffer: shuffle block size (elements held before decoding). None: the
            whole dataset for PATH and ARRAY elements (a uniform shuffle, as the
            reference's `DataLoader(shuffle=True)`; image folders are listed class by
            class), ``ENCODED_SHUFFLE_BUFFER`` for ENCODED ones.
        drop_remainder: drop the last partial batch.
        num_parallel_calls: parallelism of the decode/augment map.
        antialias: antialiased resizing (as PIL); False is about 1.6x faster at 224 px.
        repeat: (training only) repeat forever, every pass reshuffled and re-augmented,
            and batch across passes, so every batch is full (a meta split;
            ``drop_remainder`` is moot).

    Returns:
        A prefetched, batched ``tf.data.Dataset``.
    """
    if kind not in (PATH, ENCODED, ARRAY):
        raise ValueError(f"Unknown element kind {kind!r}.")
    if training:
        train_fn = augment.train_transform(augmentation, image_size, antialias)
        buffer = shuffle_buffer or _default_shuffle_buffer(ds, kind)
        ds = stateless_shuffle(ds, buffer, seed, repeat=repeat)
        augment_key = _key(seed, _AUGMENT_SALT)

        def train_map(index, example):
            x, label = example
            example_seed = _fold_in(augment_key, index)
            return train_fn(_load(x, kind), example_seed), tf.cast(label, tf.int32)

        ds = ds.enumerate().map(
            train_map, num_parallel_calls=num_parallel_calls, deterministic=True)
    elif repeat:
        raise ValueError("repeat=True is for training pipelines.")
    else:
        eval_fn = augment.eval_transform(augmentation, image_size, antialias)

        def eval_map(x, label):
            return eval_fn(_load(x, kind)), tf.cast(label, tf.int32)

        ds = ds.map(eval_map, num_parallel_calls=num_parallel_calls, deterministic=True)
    ds = ds.batch(batch_size, drop_remainder=drop_remainder or repeat)
    return ds.prefetch(AUTOTUNE)


def zip_meta(train: tf.data.Dataset, meta: tf.data.Dataset) -> tf.data.Dataset:
    """Pairs each training batch with a meta batch: elements ``((x, y), (x_meta, y_meta))``.

    What `TransferModel(..., meta_objective="held_out")` trains on. ``meta`` repeats
    forever (`DataSplits.meta`), so the result has ``train``'s length; a meta batch is
    cut to its training batch's size (the last, partial training batch of an epoch).

    Args:
        train: batches of (images, labels), e.g. `DataSplits.train`.
        meta: endless batches of (images, labels) of the same batch size, e.g.
            `DataSplits.meta`.

    Returns:
        The zipped ``tf.data.Dataset``.

    Example:
        >>> import numpy as np
        >>> train = tf.data.Dataset.from_tensor_slices(
        ...     (np.zeros((10, 2), "float32"), np.zeros(10, "int32"))).batch(4)
        >>> meta = tf.data.Dataset.from_tensor_slices(
        ...     (np.ones((3, 2), "float32"), np.ones(3, "int32"))).repeat().batch(4)
        >>> [(len(y), len(y_meta)) for (_, y), (_, y_meta) in zip_meta(train, meta)]
        [(4, 4), (4, 4), (2, 2)]
    """
    ds = tf.data.Dataset.zip((train, meta))
    train_batch = tf.nest.flatten(train.element_spec)[0].shape[0]
    if train_batch is not None and train_batch == tf.nest.flatten(meta.element_spec)[0].shape[0]:
        return ds  # every batch full (drop_remainder): nothing to cut

    def cut(batch, meta_batch):
        size = tf.shape(tf.nest.flatten(batch)[0])[0]
        return batch, tf.nest.map_structure(lambda t: t[:size], meta_batch)

    return ds.map(cut, num_parallel_calls=AUTOTUNE, deterministic=True)
