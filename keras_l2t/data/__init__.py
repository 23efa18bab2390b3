"""Data: the paper's datasets as tf.data pipelines, splits, and limited-data sampling.

Example (a folder of images, one sub-folder per class, as MIT Indoor 67 or Stanford 40):
    >>> import os, tempfile
    >>> import numpy as np, tensorflow as tf
    >>> from keras_l2t.data import load_dataset
    >>> root = tempfile.mkdtemp()
    >>> for split, count in (("train", 6), ("test", 2)):
    ...     for name in ("bird", "dog"):
    ...         os.makedirs(os.path.join(root, split, name))
    ...         for i in range(count):
    ...             png = tf.io.encode_png(np.full((40, 48, 3), 40 * i, np.uint8))
    ...             tf.io.write_file(os.path.join(root, split, name, f"{i}.png"), png)
    >>> data = load_dataset("image_folder", data_dir=root, samples_per_class=4,
    ...                     val_fraction=0.2, image_size=32, batch_size=4)
    >>> data.class_names, data.num_train, data.num_val, data.num_test
    (('bird', 'dog'), 8, 2, 4)
    >>> images, labels = next(iter(data.train))
    >>> tuple(images.shape), labels.dtype.name
    ((4, 32, 32, 3), 'int32')

A held-out meta split for `TransferModel(..., meta_objective="held_out")`: one image per
class here, carved from the 4 kept, and `zip_meta` pairs every training batch with a
meta batch:
    >>> data = load_dataset("image_folder", data_dir=root, samples_per_class=4,
    ...                     val_fraction=0.2, image_size=32, batch_size=4,
    ...                     meta_fraction=0.25)
    >>> data.num_train, data.num_meta
    (6, 2)
    >>> (x, y), (x_meta, y_meta) = next(iter(zip_meta(data.train, data.meta)))
    >>> tuple(x_meta.shape)
    (4, 32, 32, 3)
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
from keras_l2t.data.pipeline import build_pipeline, zip_meta
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
    "zip_meta",
]
