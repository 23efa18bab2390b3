"""Data: the paper's datasets as tf.data pipelines, splits, and limited-data sampling.

Example:
    >>> from keras_l2t.data import load_dataset
    >>> data = load_dataset("stanford40", data_dir="~/data/stanford40", samples_per_class=20)
"""

from keras_l2t.data.augment import IMAGENET_MEAN, IMAGENET_STD
from keras_l2t.data.catalog import DATASETS, DatasetSpec, get_spec
from keras_l2t.data.fashion_mnist import load_fashion_mnist_arrays, read_idx
from keras_l2t.data.image_folder import (
    ImageFolderSource,
    find_unreadable_images,
    list_image_folder,
)
from keras_l2t.data.layouts import arrange_mit_indoor67, arrange_stanford40
from keras_l2t.data.load import DataSplits, load_dataset, make_source
from keras_l2t.data.pipeline import build_pipeline
from keras_l2t.data.source import Source
from keras_l2t.data.splits import SplitIndices, split_train_val
from keras_l2t.data.tfds_source import DatasetNotPreparedError, TfdsSource

__all__ = [
    "DATASETS",
    "IMAGENET_MEAN",
    "IMAGENET_STD",
    "DataSplits",
    "DatasetNotPreparedError",
    "DatasetSpec",
    "ImageFolderSource",
    "Source",
    "SplitIndices",
    "TfdsSource",
    "arrange_mit_indoor67",
    "arrange_stanford40",
    "build_pipeline",
    "find_unreadable_images",
    "get_spec",
    "list_image_folder",
    "load_dataset",
    "load_fashion_mnist_arrays",
    "make_source",
    "read_idx",
    "split_train_val",
]
