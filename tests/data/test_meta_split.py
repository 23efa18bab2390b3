"""The held-out meta split (`meta_fraction`) and the meta stream of the training images
(`meta_from_train`), through the whole pipeline, on generated image folders."""

import numpy as np
import pytest
import tensorflow as tf
from data_helpers import collect, decode_ids

from keras_l2t.data import IMAGENET_MEAN, IMAGENET_STD, load_dataset, zip_meta

# Train 3 classes x 10 (ids class by class), test 3 x 2. Per class: 1 validation image,
# 9 kept, of which round(0.2 * 9) = 2 are the meta split and 7 train.
KWARGS = dict(image_size=32, batch_size=8, val_fraction=0.1, split_seed=3)


@pytest.fixture
def root(image_folder):
    return image_folder()[0]


def _meta(data, batches):
    """`batches` meta batches, concatenated: (ids, labels)."""
    x, y = collect(data.meta.take(batches))
    return decode_ids(x), y


def test_meta_split_is_balanced_and_disjoint_from_train_val_and_test(root):
    data = load_dataset("image_folder", data_dir=root, meta_fraction=0.2, **KWARGS)
    assert (data.num_train, data.num_val, data.num_meta, data.num_test) == (21, 3, 6, 6)
    train_ids = decode_ids(collect(data.train)[0])
    val_ids = decode_ids(collect(data.val)[0])
    test_ids = decode_ids(collect(data.test)[0])
    # 8 batches of 8 = 64 images: 10 whole passes over the 6, reshuffled, and 4 more.
    meta_ids, meta_labels = _meta(data, 8)
    assert len(meta_ids) == 64 and sorted(set(meta_ids)) == sorted(set(meta_ids[:6]))
    assert np.bincount(meta_ids[:60], minlength=30)[sorted(set(meta_ids))].tolist() == [10] * 6
    assert np.bincount(meta_labels[:6]).tolist() == [2, 2, 2]  # one pass: class-balanced
    assert (meta_labels == meta_ids // 10).all()  # each image keeps its label
    for other in (train_ids, val_ids, test_ids):
        assert not set(meta_ids) & set(other)
    assert sorted([*train_ids, *val_ids, *set(meta_ids)]) == list(range(30))
    assert len({tuple(meta_ids[k:k + 6]) for k in range(0, 60, 6)}) > 1  # reshuffled


def test_validation_and_test_do_not_change_with_meta_fraction(root):
    ids = {}
    for fraction in (0.0, 0.2, 0.5):
        data = load_dataset("image_folder", data_dir=root, meta_fraction=fraction, **KWARGS)
        ids[fraction] = (sorted(decode_ids(collect(data.val)[0])),
                         sorted(decode_ids(collect(data.test)[0])),
                         set(decode_ids(collect(data.train)[0])))
    assert ids[0.0][:2] == ids[0.2][:2] == ids[0.5][:2]
    assert ids[0.5][2] < ids[0.2][2] < ids[0.0][2]


def test_meta_batches_are_seeded_by_the_split_and_shuffle_seeds(root):
    def meta(**overrides):
        data = load_dataset("image_folder", data_dir=root, meta_fraction=0.2,
                            **{**KWARGS, **overrides})
        x, y = collect(data.meta.take(3))
        return x, y

    a, b = meta(), meta()
    np.testing.assert_array_equal(a[0], b[0])
    np.testing.assert_array_equal(a[1], b[1])
    shuffled = decode_ids(meta(shuffle_seed=11)[0])
    assert set(shuffled) == set(decode_ids(a[0])) and shuffled.tolist() != decode_ids(
        a[0]).tolist()
    assert set(decode_ids(meta(split_seed=4)[0])) != set(decode_ids(a[0]))


def test_meta_batches_are_augmented_like_train_and_never_end(root):
    data = load_dataset("image_folder", data_dir=root, meta_fraction=0.2, **KWARGS)
    assert data.meta.cardinality() == tf.data.INFINITE_CARDINALITY
    train_spec, meta_spec = data.train.element_spec, data.meta.element_spec
    assert [s.dtype for s in meta_spec] == [s.dtype for s in train_spec]
    assert meta_spec[0].shape[1:] == train_spec[0].shape[1:] == (32, 32, 3)
    assert meta_spec[0].shape[0] == 8  # always a full batch: the train batch size

    black = (0.0 - np.asarray(IMAGENET_MEAN)) / np.asarray(IMAGENET_STD)

    def padded(images):  # pad 4 + random crop shows the zero padding in most images
        return np.isclose(images, black, atol=1e-4).all(axis=-1).any(axis=(1, 2)).mean()

    meta_images, _ = collect(data.meta.take(6))
    assert padded(meta_images) > 0.7
    assert padded(collect(data.train)[0]) > 0.7
    assert padded(collect(data.val)[0]) == 0.0  # evaluation: no augmentation


def test_meta_from_train_streams_the_training_images_with_its_own_seed(root):
    data = load_dataset("image_folder", data_dir=root, meta_from_train=True, **KWARGS)
    plain = load_dataset("image_folder", data_dir=root, **KWARGS)
    assert (data.num_train, data.num_meta) == (27, 27)
    train_ids = decode_ids(collect(data.train)[0])
    assert train_ids.tolist() == decode_ids(collect(plain.train)[0]).tolist()  # unchanged
    meta_ids, _ = _meta(data, 4)  # 32 = one pass of 27, then 5 of the next
    assert sorted(meta_ids[:27]) == sorted(train_ids)
    assert meta_ids[:27].tolist() != train_ids.tolist()  # another shuffle
    assert plain.meta is None and plain.num_meta == 0


def test_zip_meta_pairs_every_training_batch_with_a_meta_batch_of_its_size(root):
    data = load_dataset("image_folder", data_dir=root, meta_fraction=0.2, **KWARGS)
    sizes = [(len(y), len(x_meta), len(y_meta))
             for (x, y), (x_meta, y_meta) in zip_meta(data.train, data.meta)]
    assert sizes == [(8, 8, 8), (8, 8, 8), (5, 5, 5)]  # 21 training images
    full = load_dataset("image_folder", data_dir=root, meta_fraction=0.2,
                        drop_remainder=True, **KWARGS)
    zipped = zip_meta(full.train, full.meta)
    assert zipped.element_spec[1][0].shape[0] == 8 and len(list(zipped)) == 2


def test_bad_meta_arguments_are_clear_errors(root):
    with pytest.raises(ValueError, match="meta_fraction=0.1 would leave class 0 \\('cat'\\) "
                       "with no training image"):
        load_dataset("image_folder", data_dir=root, samples_per_class=1, meta_fraction=0.1,
                     **KWARGS)
    with pytest.raises(ValueError, match="not both"):
        load_dataset("image_folder", data_dir=root, meta_fraction=0.1, meta_from_train=True,
                     **KWARGS)
    with pytest.raises(ValueError, match=r"meta_fraction must be in \[0, 1\)"):
        load_dataset("image_folder", data_dir=root, meta_fraction=-0.1, **KWARGS)
