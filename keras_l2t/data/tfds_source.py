"""TensorFlow-datasets sources (Stanford Dogs, CUB-200-2011, CIFAR-100, STL-10), offline first.

Nothing is downloaded unless ``download=True``. A dataset that is not prepared fails at
once with the ways to prepare it; with ``download=True`` a 5-second reachability probe of
the dataset's host runs first, so an offline machine fails in seconds rather than after
TFDS's multi-minute download timeout.

Split keys: each example is keyed by its ``image/filename`` or ``id`` feature when the
dataset has one, else by its position in TFDS's file order (``shuffle_files=False``),
which TFDS fixes when it prepares a dataset version.
"""

from __future__ import annotations

import socket
from collections.abc import Sequence

import numpy as np
import tensorflow as tf
import tensorflow_datasets as tfds

from keras_l2t.data import pipeline
from keras_l2t.data.source import Source

KEY_FEATURES = ("image/filename", "id")
# Host probed before a download, per dataset (where TFDS's builder downloads from).
DOWNLOAD_HOSTS = {
    "stanford_dogs": "vision.stanford.edu",
    "caltech_birds2011": "data.caltech.edu",
    "cifar100": "www.cs.toronto.edu",
    "stl10": "ai.stanford.edu",
}


class DatasetNotPreparedError(FileNotFoundError):
    """A TFDS dataset is not in ``data_dir`` and may not (or cannot) be downloaded."""


def prepare_instructions(name: str, data_dir: str | None, looked_in: str | None = None) -> str:
    """How to get TFDS dataset ``name`` into ``data_dir``, as a user-facing message."""
    where = data_dir or "~/tensorflow_datasets (TFDS' default data_dir)"
    if looked_in:
        where += f", looked in {looked_in}"
    return (
        f"TFDS dataset {name!r} is not prepared in {where}. Ways to prepare it:\n"
        f"  1. On a machine with internet: `tfds build {name} --data_dir=DIR` (needs the "
        "importlib_resources package), then copy DIR to this machine and pass "
        "data_dir=DIR here (train.py: --data_dir=DIR).\n"
        f"  2. Manual download: put the archives {name}'s TFDS builder downloads, under "
        "their original file names, in a folder M and run "
        f"`tfds build {name} --data_dir=DIR --manual_dir=M`.\n"
        "  3. Pass download=True (train.py: --download) to download and prepare it from "
        "here (needs internet)."
    )


def _probe(host: str, timeout: float = 5.0) -> None:
    for port in (443, 80):
        try:
            socket.create_connection((host, port), timeout=timeout).close()
            return
        except OSError:
            continue
    raise OSError(f"cannot reach {host} (ports 443 and 80)")


class TfdsSource(Source):
    """A TFDS image-classification dataset with "train" and "test" splits.

    Args:
        name: the TFDS name, e.g. ``"stanford_dogs"``, or a ready
            ``tfds.core.DatasetBuilder`` (``data_dir`` is then ignored).
        data_dir: TFDS data folder (None: TFDS' default, ~/tensorflow_datasets).
        download: download and prepare the dataset when it is missing (needs internet).
        splits: the TFDS split names used as this source's train and test.

    Example (TFDS' mock stands in for prepared files; without them, an error says how to
    prepare the dataset):
        >>> import tempfile
        >>> with tfds.testing.mock_data(num_examples=20):
        ...     source = TfdsSource("cifar100")
        ...     keys, labels = source.index("train")
        >>> len(source.class_names), len(keys)
        (100, 20)
        >>> TfdsSource("cifar100", data_dir=tempfile.mkdtemp())
        Traceback (most recent call last):
        ...
        keras_l2t.data.tfds_source.DatasetNotPreparedError: TFDS dataset 'cifar100' is ...
    """

    kind = pipeline.ENCODED

    def __init__(
        self,
        name: str | tfds.core.DatasetBuilder,
        *,
        data_dir: str | None = None,
        download: bool = False,
        splits: Sequence[str] = ("train", "test"),
    ):
        if isinstance(name, tfds.core.DatasetBuilder):
            self._builder = name
            self.name = name.name
        else:
            self._builder = tfds.builder(name, data_dir=data_dir)
            self.name = name
        self.data_dir = data_dir
        self._split_names = dict(zip(("train", "test"), splits, strict=True))
        features = self._builder.info.features
        self.class_names = tuple(features["label"].names)
        self._key = next((k for k in KEY_FEATURES if k in features), None)
        self._ensure_prepared(download)
        self._index_cache: dict[str, tuple[np.ndarray, np.ndarray]] = {}

    def _as_dataset(self, split: str) -> tf.data.Dataset:
        """Examples with label, key feature and the image still encoded.

        The index pass reads the same features as the image pass (the image bytes cost
        a copy, not a decode), so both see identical examples even under TFDS mocks.
        """
        wanted = {"label": True, "image": True}
        if self._key:
            wanted[self._key] = True
        decoders = tfds.decode.PartialDecoding(
            wanted, decoders={"image": tfds.decode.SkipDecoding()}
        )
        return self._builder.as_dataset(
            split=self._split_names[split], shuffle_files=False, decoders=decoders
        )

    def _ensure_prepared(self, download: bool) -> None:
        try:
            self._as_dataset("train")
            return
        except AssertionError as e:  # TFDS: "could not find data in <data_dir>"
            if not download:
                raise DatasetNotPreparedError(
                    prepare_instructions(self.name, self.data_dir, str(self._builder.data_dir))
                ) from e
        host = DOWNLOAD_HOSTS.get(self.name)
        if host:
            try:
                _probe(host)
            except OSError as e:
                raise DatasetNotPreparedError(
                    f"Downloading needs internet, but {e}.\n"
                    + prepare_instructions(self.name, self.data_dir, str(self._builder.data_dir))
                ) from e
        self._builder.download_and_prepare()

    def _keyed(self, ds: tf.data.Dataset) -> tf.data.Dataset:
        """Adds a string "key" to each example."""
        if self._key:
            return ds.map(lambda ex: {**ex, "key": ex[self._key]})
        return ds.enumerate().map(
            lambda i, ex: {**ex, "key": tf.strings.as_string(i, width=9, fill="0")}
        )

    def index(self, split: str) -> tuple[np.ndarray, np.ndarray]:
        if split not in self._index_cache:
            ds = self._keyed(self._as_dataset(split))
            ds = ds.map(lambda ex: (ex["key"], ex["label"])).batch(8192)
            keys, labels = [np.zeros([0], object)], [np.zeros([0], np.int64)]
            for k, y in ds.as_numpy_iterator():
                keys.append(k)
                labels.append(y)
            keys = np.asarray([k.decode("utf-8") for k in np.concatenate(keys)], dtype=str)
            self._index_cache[split] = (keys, np.concatenate(labels).astype(np.int64))
        return self._index_cache[split]

    def dataset(self, split: str, indices: np.ndarray, labels: np.ndarray) -> tf.data.Dataset:
        keys = self.index(split)[0][indices]
        ds = self._keyed(self._as_dataset(split))
        if len(keys) == 0:
            return ds.map(lambda ex: (ex["image"], tf.cast(ex["label"], tf.int64))).take(0)
        table = tf.lookup.StaticHashTable(
            tf.lookup.KeyValueTensorInitializer(
                tf.constant(keys, tf.string), tf.constant(labels, tf.int64)
            ),
            default_value=tf.constant(-1, tf.int64),
        )
        ds = ds.map(lambda ex: (ex["image"], table.lookup(ex["key"])))
        ds = ds.filter(lambda image, label: label >= 0)
        return ds.apply(tf.data.experimental.assert_cardinality(len(keys)))
