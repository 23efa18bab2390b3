"""TFDS datasets under tfds.testing.mock_data (offline), and the not-prepared errors."""

import socket
import time

import numpy as np
import pytest
import tensorflow_datasets as tfds
from data_helpers import collect, decode_ids, fake_tfds, flat_image

from keras_l2t.data import DatasetNotPreparedError, TfdsSource, load_dataset, tfds_source

PAPER_TFDS = [("stanford_dogs", 224), ("cub200", 224), ("cifar100", 32), ("stl10", 32)]


@pytest.fixture
def no_download(monkeypatch):
    """Fails the test if anything tries to download and prepare a TFDS dataset."""
    calls = []

    def refuse(self, *args, **kwargs):
        calls.append(self.name)
        raise AssertionError(f"download_and_prepare({self.name}) must not be called")

    monkeypatch.setattr(tfds.core.DatasetBuilder, "download_and_prepare", refuse)
    return calls


@pytest.mark.parametrize("name, size", PAPER_TFDS)
def test_paper_datasets_split_and_preprocess(name, size):
    with fake_tfds({"train": 10, "test": 2}):
        data = load_dataset(name, classes=[0, 1, 2], batch_size=16)
        train_x, train_y = collect(data.train)
        val_x, val_y = collect(data.val)
        test_x, test_y = collect(data.test)
    assert data.image_size == size and data.num_classes == 3
    assert (data.num_train, data.num_val, data.num_test) == (27, 3, 6)
    assert train_x.shape == (27, size, size, 3) and train_x.dtype == np.float32
    assert test_x.shape == (6, size, size, 3) and train_y.dtype == np.int32
    assert set(train_y) == {0, 1, 2}
    assert np.bincount(val_y).tolist() == [1, 1, 1]
    train_ids, val_ids = decode_ids(train_x), decode_ids(val_x)
    assert not set(train_ids) & set(val_ids)
    assert sorted(np.concatenate([train_ids, val_ids])) == list(range(30))
    assert sorted(decode_ids(test_x)) == list(range(500, 506))
    # Labels travel with their images (the fake labels image i with i % 3).
    assert (train_y == train_ids % 3).all() and (test_y == (decode_ids(test_x) - 500) % 3).all()


def test_split_is_deterministic_and_seeded():
    def val_ids(seed):
        with fake_tfds({"train": 10, "test": 1}):
            data = load_dataset("cifar100", classes=[0, 1, 2], split_seed=seed, val_fraction=0.3)
            return sorted(decode_ids(collect(data.val)[0]))

    assert val_ids(0) == val_ids(0)
    assert val_ids(0) != val_ids(1)


@pytest.mark.parametrize("name", ["cifar100", "stl10"])
def test_default_random_mock_data(name):
    # The stock mock (random examples, random labels over all classes) also works, and
    # the builder's info is not trusted for split names or sizes.
    runs = []
    for _ in range(2):
        with tfds.testing.mock_data(num_examples=20):
            data = load_dataset(name, batch_size=8, val_fraction=0.5)
            runs.append((collect(data.train), collect(data.val), data.num_val))
    (x, y), (vx, vy), num_val = runs[0]
    assert x.shape[1:] == (32, 32, 3) and len(x) + len(vx) == 20 and len(vx) == num_val
    assert y.min() >= 0 and y.max() < data.num_classes
    np.testing.assert_array_equal(x, runs[1][0][0])
    np.testing.assert_array_equal(vx, runs[1][1][0])


def test_samples_per_class_too_large_names_the_class():
    with (
        fake_tfds({"train": 10, "test": 1}),
        pytest.raises(ValueError, match=r"samples_per_class=10, but class 0 .*only 9"),
    ):
        load_dataset("stanford_dogs", classes=[0, 1, 2], samples_per_class=10)


def test_not_prepared_fails_fast_with_instructions(tmp_path, no_download):
    start = time.monotonic()
    with pytest.raises(DatasetNotPreparedError) as e:
        load_dataset("cub200", data_dir=str(tmp_path))
    assert time.monotonic() - start < 30
    message = str(e.value)
    for part in (
        "'caltech_birds2011' is not prepared",
        str(tmp_path),
        "tfds build caltech_birds2011 --data_dir=DIR",
        "--manual_dir",
        "--data_dir=DIR",
        "download=True",
        "--download",
    ):
        assert part in message
    assert no_download == []


def test_download_offline_fails_fast_without_downloading(tmp_path, monkeypatch, no_download):
    tried = []

    def unreachable(address, timeout=None):
        tried.append((address, timeout))
        raise OSError("network is unreachable")

    monkeypatch.setattr(socket, "create_connection", unreachable)
    with pytest.raises(DatasetNotPreparedError, match="cannot reach vision.stanford.edu"):
        TfdsSource("stanford_dogs", data_dir=str(tmp_path), download=True)
    assert [a for a, _ in tried] == [("vision.stanford.edu", 443), ("vision.stanford.edu", 80)]
    assert all(t is not None and t <= 10 for _, t in tried)
    assert no_download == []


def test_download_when_reachable_calls_download_and_prepare(tmp_path, monkeypatch, no_download):
    monkeypatch.setattr(tfds_source, "_probe", lambda host: None)
    with pytest.raises(AssertionError, match="must not be called"):
        TfdsSource("stl10", data_dir=str(tmp_path), download=True)
    assert no_download == ["stl10"]


def test_unknown_dataset_lists_known_names():
    with pytest.raises(ValueError, match="known: .*cifar100.*stanford40"):
        load_dataset("imagenet21k")


class _TinyDogs(tfds.core.GeneratorBasedBuilder):
    """A real, prepared-on-disk TFDS dataset shaped like stanford_dogs (no mock)."""

    VERSION = tfds.core.Version("1.0.0")

    def _info(self):
        return tfds.core.DatasetInfo(
            builder=self,
            features=tfds.features.FeaturesDict(
                {
                    "image": tfds.features.Image(encoding_format="jpeg"),
                    "image/filename": tfds.features.Text(),
                    "label": tfds.features.ClassLabel(names=["pug", "beagle", "collie"]),
                    "objects": tfds.features.Sequence({"bbox": tfds.features.BBoxFeature()}),
                }
            ),
        )

    def _split_generators(self, dl_manager):
        return {"train": self._generate_examples(30, 0), "test": self._generate_examples(6, 500)}

    def _generate_examples(self, n, offset):
        for i in range(n):
            yield (
                f"{offset + i}",
                {
                    "image": flat_image(offset + i),
                    "image/filename": f"img_{offset + i:04d}.jpg",
                    "label": i % 3,
                    "objects": {"bbox": [tfds.features.BBox(0.1, 0.1, 0.5, 0.5)]},
                },
            )


def test_real_prepared_tfds_files(tmp_path):
    builder = _TinyDogs(data_dir=str(tmp_path))
    with pytest.raises(
        DatasetNotPreparedError, match=f"tiny_dogs' is not prepared.*looked in {tmp_path}"
    ):
        TfdsSource(builder)
    builder.download_and_prepare()  # local generator, no network
    data = load_dataset("stanford_dogs", source=TfdsSource(builder), batch_size=8)
    assert data.class_names == ("pug", "beagle", "collie")
    assert (data.num_train, data.num_val, data.num_test) == (27, 3, 6)
    train_x, train_y = collect(data.train)
    val_x, val_y = collect(data.val)
    test_x, _ = collect(data.test)
    assert train_x.shape == (27, 224, 224, 3) and np.bincount(val_y).tolist() == [1, 1, 1]
    train_ids, val_ids = decode_ids(train_x), decode_ids(val_x)
    assert sorted(np.concatenate([train_ids, val_ids])) == list(range(30))
    assert (train_y == train_ids % 3).all()
    assert sorted(decode_ids(test_x)) == list(range(500, 506))
