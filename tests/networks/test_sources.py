"""Pretrained sources: offline errors, local Keras ImageNet files, builder and .keras files.

Nothing here downloads: the download is either replaced by one that fails as offline
Keras does, or (one test) really attempted only where the network is unreachable.
"""

from __future__ import annotations

import socket

import keras
import numpy as np
import pytest

from keras_l2t import sources
from keras_l2t.networks import build_network

MEAN = np.array(sources.IMAGENET_MEAN, "float32")
STD = np.array(sources.IMAGENET_STD, "float32")


def _normalise(raw: np.ndarray) -> np.ndarray:
    return ((raw / 255.0 - MEAN) / STD).astype("float32")


def _offline_get_file(fname=None, origin=None, **kwargs):
    # What keras.utils.get_file raises offline.
    raise Exception(f"URL fetch failure on {origin}: None -- [Errno -2] Name or service not known")


@pytest.mark.parametrize("include_top", [True, False])
def test_offline_download_is_one_clear_error(monkeypatch, tmp_path, include_top):
    monkeypatch.setattr(keras.utils, "get_file", _offline_get_file)
    with pytest.raises(sources.SourceWeightsUnavailable) as info:
        sources.load_source("resnet50_imagenet", include_top=include_top, cache_dir=str(tmp_path))
    message = str(info.value)
    name = sources.weights_file_name("resnet50_imagenet", include_top)
    assert name.endswith("_notop.h5") != include_top
    assert sources.weights_url("resnet50_imagenet", include_top) in message
    assert "--source_weights=PATH" in message
    assert "URL fetch failure" in message
    assert str(tmp_path / "models" / name) in message
    assert info.value.__cause__ is None and info.value.__suppress_context__


def _network_unreachable() -> bool:
    try:
        socket.getaddrinfo("storage.googleapis.com", 443)
    except OSError:
        return True
    return False


@pytest.mark.skipif(not _network_unreachable(), reason="online: would download 94 MB")
def test_real_offline_download_fails_clearly(tmp_path):
    with pytest.raises(sources.SourceWeightsUnavailable, match="--source_weights=PATH"):
        sources.load_source("resnet50_imagenet", include_top=False, cache_dir=str(tmp_path))


def test_weight_file_names_match_keras_applications():
    from keras.src.applications import resnet  # private, only to pin our copy

    for name, spec in sources.IMAGENET_SOURCES.items():
        assert spec.hashes == resnet.WEIGHTS_HASHES[spec.weights_name], name
    assert sources.KERAS_APPLICATIONS_URL == resnet.BASE_WEIGHTS_PATH


def test_imagenet_to_caffe_matches_keras_preprocessing():
    raw = np.random.default_rng(0).uniform(0, 255, (2, 4, 4, 3)).astype("float32")
    expected = keras.applications.resnet.preprocess_input(raw.copy())
    got = sources.imagenet_to_caffe_layer()(_normalise(raw))
    np.testing.assert_allclose(got, expected, atol=1e-3)


@pytest.mark.parametrize("include_top, input_shape", [(False, (64, 64, 3)), (True, None)])
def test_local_keras_imagenet_file(tmp_path, include_top, input_shape):
    # A file in the Keras ImageNet format (legacy HDF5), from random weights.
    stock = keras.applications.ResNet50(
        weights=None,
        include_top=include_top,
        input_shape=input_shape,
        classifier_activation=None,
    )
    path = str(tmp_path / sources.weights_file_name("resnet50_imagenet", include_top))
    stock.save(path)
    source = sources.load_source(
        "resnet50_imagenet", weights=path, include_top=include_top, input_shape=input_shape
    )
    assert not source.trainable and not source.trainable_weights
    assert sources.source_taps(source) == sources.source_taps("resnet50_imagenet")
    size = (input_shape or (224, 224, 3))[0] // 4
    shapes = [tuple(source.get_layer(t).output.shape)[1:] for t in sources.source_taps(source)]
    assert shapes == [
        (size, size, 256),
        (size // 2,) * 2 + (512,),
        (size // 4,) * 2 + (1024,),
        (size // 8,) * 2 + (2048,),
    ]
    if include_top:
        assert tuple(source.output.shape) == (None, 1000)
        np.testing.assert_array_equal(
            source.get_layer("logits").kernel, stock.get_layer("predictions").kernel
        )
        return
    raw = np.random.default_rng(1).uniform(0, 255, (1, 64, 64, 3)).astype("float32")
    expected = stock(keras.applications.resnet.preprocess_input(raw.copy()), training=False)
    got = source(_normalise(raw), training=False)
    np.testing.assert_allclose(got, expected, rtol=1e-3, atol=1e-3)
    # A .weights.h5 saved from a loaded source loads back.
    saved = str(tmp_path / "source.weights.h5")
    source.save_weights(saved)
    again = sources.load_source(
        "resnet50_imagenet", weights=saved, include_top=False, input_shape=input_shape
    )
    np.testing.assert_allclose(again(_normalise(raw)), got, rtol=1e-5, atol=1e-5)


def test_a_damaged_keras_imagenet_file_is_one_clear_error(tmp_path):
    path = tmp_path / sources.weights_file_name("resnet50_imagenet", False)
    path.write_bytes(np.random.default_rng(0).bytes(4096))  # not HDF5: h5py's OSError
    with pytest.raises(ValueError, match=r"cannot be loaded into ResNet50 \(include_top=False\)"
                                         r"; expected the Keras file 'resnet50_weights_tf_dim"):
        sources.load_source("resnet50_imagenet", weights=str(path), include_top=False,
                            input_shape=(32, 32, 3))


def test_builder_source_from_weights_file(tmp_path):
    path = str(tmp_path / "resnet32.weights.h5")
    trained = build_network("resnet32", 10, input_shape=(16, 16, 3))
    trained.save_weights(path)
    source = sources.load_source("resnet32", weights=path, num_classes=10, input_shape=(16, 16, 3))
    assert not source.trainable and not source.trainable_weights
    x = np.random.default_rng(0).normal(size=(2, 16, 16, 3)).astype("float32")
    np.testing.assert_allclose(source(x), trained(x), rtol=1e-5, atol=1e-5)
    assert sources.source_taps("resnet32") == ["stage1_out", "stage2_out", "stage3_out"]
    with pytest.raises(ValueError, match="--source_weights=PATH"):
        sources.load_source("resnet34")
    with pytest.raises(ValueError, match="num_classes"):
        sources.load_source("resnet32", weights=path)
    with pytest.raises(FileNotFoundError):
        sources.load_source("resnet32", weights=tmp_path / "nope.weights.h5", num_classes=10)


def test_keras_file_source(tmp_path):
    inputs = keras.Input((8, 8, 3))
    x = keras.layers.Conv2D(4, 3, padding="same", activation="relu", name="block_a")(inputs)
    outputs = keras.layers.Dense(3)(keras.layers.GlobalAveragePooling2D()(x))
    path = tmp_path / "user.keras"
    keras.Model(inputs, outputs).save(path)
    source = sources.load_source(path)
    assert not source.trainable
    with pytest.raises(ValueError, match="no 'stage<i>_out' layers.*block_a"):
        sources.source_taps(source)
    with pytest.raises(ValueError, match="do not pass weights"):
        sources.load_source(path, weights=path)
    with pytest.raises(FileNotFoundError):
        sources.load_source(tmp_path / "missing.keras")
    with pytest.raises(ValueError, match="Unknown source 'resnet50'.*resnet50_imagenet"):
        sources.load_source("resnet50")
