"""The interface every data source implements (TFDS, image folder, Fashion-MNIST)."""

from __future__ import annotations

import abc

import numpy as np
import tensorflow as tf


class Source(abc.ABC):
    """A labelled dataset with an official "train" and (optionally) "test" split.

    A source lists, per split, one stable key and one label per example (`index`), and
    builds a ``tf.data.Dataset`` of ``(x, new_label)`` for any chosen subset of them
    (`dataset`); `load_dataset` does the splitting in between.

    Attributes:
        class_names: the names of the classes, indexed by label.
        kind: what x holds: ``pipeline.PATH``, ``pipeline.ENCODED`` or ``pipeline.ARRAY``.
        has_test: whether the source has a labelled test split.
    """

    class_names: tuple[str, ...]
    kind: str
    has_test: bool = True

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    @abc.abstractmethod
    def index(self, split: str) -> tuple[np.ndarray, np.ndarray]:
        """Returns (keys: str array, labels: int64 array) of every example of ``split``."""

    @abc.abstractmethod
    def dataset(self, split: str, indices: np.ndarray, labels: np.ndarray) -> tf.data.Dataset:
        """Returns (x, label) for examples ``indices`` of `index` (split), with new ``labels``."""
