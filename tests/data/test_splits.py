"""Class-balanced, seeded splitting (plain numpy)."""

import numpy as np
import pytest

from keras_l2t.data.splits import class_label_map, select_classes, split_train_val


def _data(per_class=(20, 20, 20), shuffle_seed=None):
    keys, labels = [], []
    for c, n in enumerate(per_class):
        keys += [f"class{c}/img_{k:03d}.jpg" for k in range(n)]
        labels += [c] * n
    keys, labels = np.asarray(keys), np.asarray(labels)
    if shuffle_seed is not None:
        perm = np.random.default_rng(shuffle_seed).permutation(len(keys))
        keys, labels = keys[perm], labels[perm]
    return keys, labels


def test_validation_is_class_balanced_and_disjoint():
    keys, labels = _data((20, 30, 10))
    s = split_train_val(keys, labels, num_classes=3, val_fraction=0.1, seed=0)
    assert np.bincount(labels[s.val], minlength=3).tolist() == [2, 3, 1]
    assert np.bincount(labels[s.train], minlength=3).tolist() == [18, 27, 9]
    assert not set(s.train) & set(s.val)
    assert len(s.train) + len(s.val) == len(keys)


def test_golden_split_is_the_same_on_every_machine():
    # numpy's PCG64 with a SeedSequence is platform independent: pin exact indices.
    keys = [f"img_{i:03d}" for i in range(40)]
    labels = [i % 4 for i in range(40)]
    s = split_train_val(keys, labels, num_classes=4, val_fraction=0.2, seed=7, samples_per_class=3)
    assert s.train.tolist() == [4, 12, 14, 18, 19, 25, 26, 28, 29, 31, 33, 35]
    assert s.val.tolist() == [0, 1, 6, 15, 22, 23, 32, 37]


def test_split_depends_on_keys_not_on_input_order():
    keys, labels = _data()
    a = split_train_val(keys, labels, num_classes=3, seed=3)
    pk, pl = _data(shuffle_seed=1)
    b = split_train_val(pk, pl, num_classes=3, seed=3)
    assert sorted(keys[a.val]) == sorted(pk[b.val])
    assert sorted(keys[a.train]) == sorted(pk[b.train])


def test_seed_changes_the_split():
    keys, labels = _data()
    a = split_train_val(keys, labels, num_classes=3, seed=0)
    b = split_train_val(keys, labels, num_classes=3, seed=1)
    assert set(a.val) != set(b.val)


def test_samples_per_class_is_balanced_nested_and_keeps_validation():
    keys, labels = _data((20, 25, 30))
    full = split_train_val(keys, labels, num_classes=3, seed=5)
    s5 = split_train_val(keys, labels, num_classes=3, seed=5, samples_per_class=5)
    s8 = split_train_val(keys, labels, num_classes=3, seed=5, samples_per_class=8)
    assert np.bincount(labels[s5.train]).tolist() == [5, 5, 5]
    assert np.bincount(labels[s8.train]).tolist() == [8, 8, 8]
    assert set(s5.train) < set(s8.train) < set(full.train)
    assert s5.val.tolist() == full.val.tolist()


def test_samples_per_class_too_large_names_the_class():
    keys, labels = _data((20, 6, 20))
    with pytest.raises(ValueError, match=r"class 1 \('b'\) has only 5 training images .*; "
                       r"lower samples_per_class or val_fraction, or use more of the train "
                       r"split \(train_indices\)\.$"):
        split_train_val(
            keys, labels, num_classes=3, seed=0, samples_per_class=6, class_names=["a", "b", "c"]
        )


def test_class_subset_relabels_and_keeps_per_class_split():
    keys, labels = _data((10, 10, 10, 10))
    full = split_train_val(keys, labels, num_classes=4, seed=2)
    sub = split_train_val(keys, labels, num_classes=4, seed=2, classes=[3, 1])
    assert sub.label_map.tolist() == [-1, 1, -1, 0]
    assert set(labels[sub.train]) == {1, 3}
    # A class's split does not depend on which other classes are kept.
    assert set(sub.val) == {i for i in full.val if labels[i] in (1, 3)}
    assert select_classes(labels, sub.label_map).tolist() == list(range(10, 20)) + list(
        range(30, 40)
    )


@pytest.mark.parametrize(
    "classes, message",
    [([], "empty"), ([0, 0], "twice"), ([5], "out of range")],
)
def test_bad_class_lists(classes, message):
    with pytest.raises(ValueError, match=message):
        class_label_map(4, classes)


def test_duplicate_keys_are_rejected():
    with pytest.raises(ValueError, match="not unique"):
        split_train_val(["a", "a"], [0, 1], num_classes=2)


def test_no_validation_and_tiny_classes():
    keys, labels = _data((1, 3))
    s = split_train_val(keys, labels, num_classes=2, val_fraction=0.0)
    assert len(s.val) == 0 and len(s.train) == 4
    s = split_train_val(keys, labels, num_classes=2, val_fraction=0.1)
    # A single-image class keeps it for training; a 3-image class gives one to validation.
    assert np.bincount(labels[s.val], minlength=2).tolist() == [0, 1]


def test_meta_split_is_carved_from_the_kept_images_and_keeps_validation():
    keys, labels = _data((20, 25, 30))
    plain = split_train_val(keys, labels, num_classes=3, seed=5, samples_per_class=10)
    s = split_train_val(keys, labels, num_classes=3, seed=5, samples_per_class=10,
                        meta_fraction=0.25)
    # round(2.5) half up = 3 of the 10 kept per class; the rest trains.
    assert np.bincount(labels[s.meta]).tolist() == [3, 3, 3]
    assert np.bincount(labels[s.train]).tolist() == [7, 7, 7]
    assert set(s.meta) | set(s.train) == set(plain.train)  # part of the N per class
    assert not set(s.meta) & set(s.train) and not set(s.meta) & set(s.val)
    assert s.val.tolist() == plain.val.tolist()
    assert split_train_val(keys, labels, num_classes=3, seed=5).meta.tolist() == []


def test_meta_split_sizes_seed_and_subset():
    keys, labels = _data((3, 10, 41))
    s = split_train_val(keys, labels, num_classes=3, seed=1, val_fraction=0.0,
                        meta_fraction=0.05)
    assert np.bincount(labels[s.meta]).tolist() == [1, 1, 2]  # at least 1; 2.05 -> 2
    again = split_train_val(keys, labels, num_classes=3, seed=1, val_fraction=0.0,
                            meta_fraction=0.05)
    assert s.meta.tolist() == again.meta.tolist() and s.train.tolist() == again.train.tolist()
    other = split_train_val(keys, labels, num_classes=3, seed=2, val_fraction=0.0,
                            meta_fraction=0.05)
    assert set(other.meta) != set(s.meta)
    sub = split_train_val(keys, labels, num_classes=3, seed=1, val_fraction=0.0,
                          meta_fraction=0.05, classes=[2])
    assert set(sub.meta) == {i for i in s.meta if labels[i] == 2}


def test_meta_split_that_empties_a_class_names_it():
    keys, labels = _data((20, 20))
    with pytest.raises(ValueError, match=r"meta_fraction=0.5 would leave class 0 \('a'\) with "
                       r"no training image: it keeps 1 training image\(s\) \(20 in the train "
                       r"split, 2 held out for validation\) and the meta split takes 1"):
        split_train_val(keys, labels, num_classes=2, samples_per_class=1, meta_fraction=0.5,
                        class_names=["a", "b"])
    with pytest.raises(ValueError, match=r"meta_fraction must be in \[0, 1\), got 1.0"):
        split_train_val(keys, labels, num_classes=2, meta_fraction=1.0)
