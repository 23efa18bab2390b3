"""Helpers for the data tests: id-coloured images, idx files and fake TFDS data.

Every generated image is one flat colour that encodes an integer id (see `encode_id`),
which survives cropping, flipping, resizing, JPEG and normalisation, so a test can tell
which source image ended up in which split after the whole pipeline.
"""

from __future__ import annotations

import contextlib
import gzip
import os

import numpy as np
import tensorflow as tf
import tensorflow_datasets as tfds

from keras_l2t.data import IMAGENET_MEAN, IMAGENET_STD


def encode_id(i: int) -> tuple[int, int, int]:
    """An RGB colour for id i (< 1024), robust to +-3 of JPEG / resampling error."""
    return (8 * (i % 32) + 4, 8 * (i // 32) + 4, 128)


def flat_image(i: int, height: int = 40, width: int = 48) -> np.ndarray:
    return np.broadcast_to(np.uint8(encode_id(i)), (height, width, 3)).copy()


def decode_ids(images) -> np.ndarray:
    """Recovers the ids from a batch of normalised images (centre pixel)."""
    images = np.asarray(images)
    h, w = images.shape[1] // 2, images.shape[2] // 2
    rgb = (images[:, h, w, :] * np.asarray(IMAGENET_STD) + np.asarray(IMAGENET_MEAN)) * 255.0
    r = np.round((rgb[:, 0] - 4) / 8).astype(int)
    g = np.round((rgb[:, 1] - 4) / 8).astype(int)
    return g * 32 + r


def collect(ds: tf.data.Dataset) -> tuple[np.ndarray, np.ndarray]:
    """All (images, labels) of a batched dataset, concatenated."""
    xs, ys = [], []
    for x, y in ds:
        xs.append(x.numpy())
        ys.append(y.numpy())
    return np.concatenate(xs), np.concatenate(ys)


def write_image(path: str, image: np.ndarray) -> None:
    encoded = tf.io.encode_png(image) if path.endswith(".png") else tf.io.encode_jpeg(image)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    tf.io.write_file(path, encoded)


def write_idx(path: str, array: np.ndarray) -> None:
    """Writes a uint8 idx file (gzipped when path ends in .gz)."""
    array = np.ascontiguousarray(array, dtype=np.uint8)
    header = bytes([0, 0, 8, array.ndim]) + b"".join(int(d).to_bytes(4, "big") for d in array.shape)
    opener = gzip.open if path.endswith(".gz") else open
    with opener(path, "wb") as f:
        f.write(header + array.tobytes())


@contextlib.contextmanager
def fake_tfds(per_class: dict[str, int], used_classes: int = 3, image_hw=(40, 48)):
    """Mocks TFDS (offline, via tfds.testing.mock_data) with controlled examples.

    Split s has ``per_class[s]`` examples of each of the first ``used_classes`` classes,
    flat id-coloured PNGs, keyed the way the real dataset is (``image/filename``, ``id``
    or nothing). Ids: train examples from 0, test examples from 500.
    """

    def as_dataset(self, split, decoders=None, read_config=None, shuffle_files=False, **kw):
        features = self.info.features
        n = per_class[str(split)]
        offset = 0 if str(split) == "train" else 500
        count = n * used_classes
        # Interleave classes and reverse, so read order is neither sorted nor grouped.
        order = list(range(count))[::-1]
        images = [tf.io.encode_png(flat_image(offset + i, *image_hw)).numpy() for i in order]
        ex = {
            "image": tf.constant(images),
            "label": tf.constant([i % used_classes for i in order], tf.int64),
        }
        if "image/filename" in features:
            ex["image/filename"] = tf.constant(
                [f"{split}_é_{i:05d}.jpg" for i in order]
            )  # non-ASCII
        if "id" in features:
            ex["id"] = tf.constant([f"{split}_{i:05d}" for i in order])
        return tf.data.Dataset.from_tensor_slices(ex)

    with tfds.testing.mock_data(as_dataset_fn=as_dataset):
        yield
