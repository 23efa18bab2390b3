"""Fashion-MNIST from idx files written by the tests."""

import os

import numpy as np
import pytest
from data_helpers import collect, write_idx

from keras_l2t.data import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    load_dataset,
    load_fashion_mnist_arrays,
    read_idx,
)
from keras_l2t.data import fashion_mnist as fm


@pytest.mark.parametrize("gz", [True, False])
def test_reads_idx_files(fashion_dir, gz):
    arrays = load_fashion_mnist_arrays(fashion_dir(n_train=30, n_test=10, gz=gz))
    images, labels = arrays["train"]
    assert images.shape == (30, 28, 28) and images.dtype == np.uint8
    assert labels.tolist() == [i % 10 for i in range(30)]
    assert images[3, 0, 0] == 8 * 3 + 4
    assert arrays["test"][0].shape == (10, 28, 28)


def test_missing_files_say_how_to_get_them(tmp_path, monkeypatch):
    monkeypatch.setattr(fm, "DEFAULT_DIRS", (str(tmp_path / "a"), str(tmp_path / "b")))
    with pytest.raises(FileNotFoundError, match="apt-get install dataset-fashion-mnist") as e:
        load_dataset("fashion_mnist")
    assert str(tmp_path / "a") in str(e.value) and "data_dir" in str(e.value)
    with pytest.raises(FileNotFoundError, match=str(tmp_path)):
        load_fashion_mnist_arrays(str(tmp_path))


def test_default_dirs_are_searched(fashion_dir, monkeypatch, tmp_path):
    directory = fashion_dir(n_train=20, n_test=10)
    monkeypatch.setattr(fm, "DEFAULT_DIRS", (str(tmp_path / "missing"), directory))
    assert load_fashion_mnist_arrays()["train"][0].shape == (20, 28, 28)
    assert fm.DEBIAN_DIR == "/usr/share/datasets/fashion-mnist"


def test_corrupt_idx_file_names_it(tmp_path):
    path = str(tmp_path / "x-idx1-ubyte")
    with open(path, "wb") as f:
        f.write(b"\x00\x00\x0d\x01" + b"\x00" * 8)
    with pytest.raises(ValueError, match=f"{path} is not an idx file"):
        read_idx(path)
    write_idx(path, np.zeros([5], np.uint8))
    with open(path, "ab") as f:
        f.write(b"\x01")
    with pytest.raises(ValueError, match=f"{path}: header says shape"):
        read_idx(path)


def test_pipeline_shapes_rgb_and_train_ranges(fashion_dir):
    directory = fashion_dir(n_train=60, n_test=20)
    source = load_dataset(
        "fashion_mnist", data_dir=directory, train_indices=range(50), batch_size=16
    )
    target = load_dataset(
        "fashion_mnist",
        data_dir=directory,
        train_indices=range(50, 60),
        val_fraction=0.0,
        batch_size=16,
    )
    # 5 images per class in 0-49: one each (10%, rounded half up) goes to validation.
    assert (source.num_train, source.num_val, source.num_test) == (40, 10, 20)
    assert (target.num_train, target.num_val) == (10, 0)
    x, y = collect(source.train)
    assert x.shape == (40, 32, 32, 3) and x.dtype == np.float32 and y.dtype == np.int32
    assert np.bincount(y, minlength=10).tolist() == [4] * 10
    # Grey values repeated to RGB: with ImageNet normalisation, channels differ only
    # through mean/std, so undo it and compare.
    raw = x * np.asarray(IMAGENET_STD) + np.asarray(IMAGENET_MEAN)
    np.testing.assert_allclose(raw[..., 0], raw[..., 1], atol=1e-5)
    # The target range only holds images 50-59: grey ids (i % 32) 18..27.
    xt, _ = collect(target.train)
    grey = np.round((xt[:, 16, 16, 0] * IMAGENET_STD[0] + IMAGENET_MEAN[0]) * 255.0)
    assert sorted(((grey - 4) / 8).astype(int).tolist()) == list(range(18, 28))


@pytest.mark.parametrize(
    "arguments, message",
    [
        (dict(train_indices=[30]), r"train_indices must lie in \[0, 30\)"),
        (dict(train_indices=[0, 0, 1]), "train_indices has repeated positions"),
        (dict(train_indices=[]), "non-empty sequence of integer positions, got 0 values"),
        (dict(train_indices=[0.5, 1.7]), "integer positions, got 2 values of type float64"),
        (dict(classes="Trouser"), r"list of class names or indices, got the string 'Trouser'"),
        (dict(classes=["Jacket"]), r"Unknown class 'Jacket' in `classes`; the classes are "
                                   r"\['T-shirt/top', 'Trouser'"),
    ],
)
def test_bad_limited_data_arguments_say_what_is_wrong(fashion_dir, arguments, message):
    with pytest.raises(ValueError, match=message):
        load_dataset("fashion_mnist", data_dir=fashion_dir(n_train=30), **arguments)


def test_keras_cache_dir_is_a_default():
    assert fm.KERAS_CACHE_DIR in fm.DEFAULT_DIRS
    assert fm.KERAS_CACHE_DIR.endswith(os.path.join(".keras", "datasets", "fashion-mnist"))
