"""load_dataset end to end on generated image folders."""

import numpy as np
import pytest
from data_helpers import collect, decode_ids

from keras_l2t.data import IMAGENET_MEAN, IMAGENET_STD, load_dataset


@pytest.fixture
def folder(image_folder):
    return image_folder(ext="mixed")  # train 3 x 10, test 3 x 2, jpg and png


def test_224_pipeline_shapes_dtypes_ranges(folder):
    root, _ = folder
    data = load_dataset("mit_indoor67", data_dir=root, batch_size=8)
    assert data.image_size == 224 and data.class_names == ("cat", "dog", "emu")
    low = (0.0 - np.asarray(IMAGENET_MEAN)) / np.asarray(IMAGENET_STD)
    high = (1.0 - np.asarray(IMAGENET_MEAN)) / np.asarray(IMAGENET_STD)
    for ds in (data.train, data.val, data.test):
        x, y = next(iter(ds))
        assert x.shape[1:] == (224, 224, 3) and x.dtype == "float32" and y.dtype == "int32"
        x = x.numpy()
        assert (x >= low - 1e-4).all() and (x <= high + 1e-4).all()
        assert y.numpy().min() >= 0 and y.numpy().max() <= 2
    assert [len(x) for x, _ in data.train] == [8, 8, 8, 3]


def test_split_sizes_balance_and_no_shared_image(folder):
    root, ids = folder
    data = load_dataset("stanford40", data_dir=root, image_size=32, batch_size=7)
    assert (data.num_train, data.num_val, data.num_test) == (27, 3, 6)
    tx, ty = collect(data.train)
    vx, vy = collect(data.val)
    ex, ey = collect(data.test)
    assert np.bincount(ty).tolist() == [9, 9, 9] and np.bincount(vy).tolist() == [1, 1, 1]
    train_ids, val_ids, test_ids = decode_ids(tx), decode_ids(vx), decode_ids(ex)
    assert not set(train_ids) & set(val_ids)
    assert sorted(np.concatenate([train_ids, val_ids])) == sorted(
        i for (split, _, _), i in ids.items() if split == "train"
    )
    assert sorted(test_ids) == sorted(i for (split, _, _), i in ids.items() if split == "test")
    # Each image keeps its class label: ids were assigned class by class, 10 per class.
    assert (ty == train_ids // 10).all() and (vy == val_ids // 10).all()


def test_same_seed_same_batches_new_seed_new_split(folder):
    root, _ = folder
    kwargs = dict(data_dir=root, image_size=32, batch_size=8, val_fraction=0.2)
    a = load_dataset("image_folder", split_seed=1, **kwargs)
    b = load_dataset("image_folder", split_seed=1, **kwargs)
    c = load_dataset("image_folder", split_seed=2, **kwargs)
    a1, b1 = collect(a.train), collect(b.train)
    np.testing.assert_array_equal(a1[0], b1[0])
    np.testing.assert_array_equal(a1[1], b1[1])
    a2 = collect(a.train)  # iterated again: the same batches (a new epoch, a new seed)
    np.testing.assert_array_equal(a1[0], a2[0])
    np.testing.assert_array_equal(a1[1], a2[1])
    d = load_dataset("image_folder", split_seed=1, shuffle_seed=5, **kwargs)
    assert not np.array_equal(decode_ids(a1[0]), decode_ids(collect(d.train)[0]))
    assert set(decode_ids(collect(a.val)[0])) != set(decode_ids(collect(c.val)[0]))


def test_shuffle_seed_changes_order_not_split(folder):
    root, _ = folder
    kwargs = dict(data_dir=root, image_size=32, batch_size=32, split_seed=4)
    a = load_dataset("image_folder", shuffle_seed=0, **kwargs)
    b = load_dataset("image_folder", shuffle_seed=1, **kwargs)
    ia, ib = decode_ids(collect(a.train)[0]), decode_ids(collect(b.train)[0])
    assert sorted(ia) == sorted(ib) and ia.tolist() != ib.tolist()


def test_samples_per_class_and_class_subset(folder):
    root, ids = folder
    data = load_dataset(
        "image_folder",
        data_dir=root,
        image_size=32,
        samples_per_class=4,
        classes=["emu", "cat"],
    )
    assert data.class_names == ("emu", "cat") and data.num_classes == 2
    tx, ty = collect(data.train)
    assert np.bincount(ty).tolist() == [4, 4]
    train_ids = decode_ids(tx)
    assert (ty == np.where(train_ids // 10 == 2, 0, 1)).all()
    ex, ey = collect(data.test)
    assert data.num_test == 4 and sorted(ey.tolist()) == [0, 0, 1, 1]
    assert set(decode_ids(ex)) == {ids[("test", c, k)] for c in ("emu", "cat") for k in (0, 1)}


def test_samples_per_class_too_large_names_the_class(image_folder):
    root, _ = image_folder({"train": {"cat": 10, "dog": 4}})
    with pytest.raises(ValueError, match=r"class 1 \('dog'\) has only 3 training images"):
        load_dataset("image_folder", data_dir=root, samples_per_class=5)


def test_drop_remainder_and_eval_batch(folder):
    root, _ = folder
    data = load_dataset(
        "image_folder",
        data_dir=root,
        image_size=32,
        batch_size=8,
        eval_batch_size=4,
        drop_remainder=True,
    )
    assert [len(y) for _, y in data.train] == [8, 8, 8]
    assert [len(y) for _, y in data.test] == [4, 2]
