"""The train pipeline's default shuffle is uniform over the whole dataset."""

import numpy as np
import tensorflow as tf

from keras_l2t.data import augment, pipeline


def test_default_shuffle_reaches_past_ten_thousand_sorted_examples():
    # Sorted like an image folder (class by class): a 10,000-element buffer could only
    # emit the first 10,000 + 256 examples in the first batch.
    n = 12_000
    images = np.zeros((n, 4, 4), np.uint8)
    ds = tf.data.Dataset.from_tensor_slices((images, np.arange(n, dtype=np.int64)))
    batches = pipeline.build_pipeline(
        ds, kind=pipeline.ARRAY, training=True, image_size=4,
        augmentation=augment.PAD_CROP, batch_size=256, seed=3,
    )
    _, first = next(iter(batches))
    first = first.numpy()
    assert len(np.unique(first)) == 256
    late = np.mean(first >= 10_256)  # about 1,744 / 12,000 = 0.145 for a uniform shuffle
    assert 0.07 < late < 0.25, late
    epoch = np.concatenate([labels.numpy() for _, labels in batches])
    np.testing.assert_array_equal(np.sort(epoch), np.arange(n))  # each example once
