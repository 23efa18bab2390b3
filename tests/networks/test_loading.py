"""Networks from files: a user's own .keras model, and .weights.h5 into a builder."""

from __future__ import annotations

import keras
import numpy as np
import pytest

from keras_l2t.exact_batch_norm import is_batch_norm_exact
from keras_l2t.networks import (
    build_network,
    default_taps,
    feature_extractor,
    load_network,
)


def _user_model() -> keras.Model:
    inputs = keras.Input((16, 16, 3))
    x = keras.layers.Conv2D(8, 3, padding="same", name="my_conv")(inputs)
    x = keras.layers.BatchNormalization(name="my_bn")(x)
    x = keras.layers.ReLU(name="my_block")(x)
    x = keras.layers.GlobalAveragePooling2D()(x)
    return keras.Model(inputs, keras.layers.Dense(4, name="my_logits")(x), name="mine")


@keras.saving.register_keras_serializable(package="keras_l2t_tests")
class _Subclassed(keras.Model):
    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.conv = keras.layers.Conv2D(4, 3)
        self.pool = keras.layers.GlobalAveragePooling2D()

    def call(self, x):
        return self.pool(self.conv(x))


def test_users_keras_file_loads_exact_and_tappable(tmp_path):
    path = tmp_path / "mine.keras"
    original = _user_model()
    original.save(path)
    model = load_network(path)
    assert is_batch_norm_exact(model)
    # Keras' stock BN is inexact in second order on TensorFlow only.
    stock_is_exact = keras.backend.backend() != "tensorflow"
    assert is_batch_norm_exact(load_network(path, exact_batch_norm=False)) == stock_is_exact
    extractor = feature_extractor(model, ["my_block"], include_output=True)
    x = np.random.default_rng(0).normal(size=(2, 16, 16, 3)).astype("float32")
    logits, block = extractor(x)
    assert tuple(block.shape) == (2, 16, 16, 8)
    np.testing.assert_allclose(logits, original(x), rtol=1e-5, atol=1e-5)
    with pytest.raises(ValueError, match="no layer named 'nope'.*my_block"):
        feature_extractor(model, ["nope"])


def test_builder_keras_file_round_trip(tmp_path):
    path = tmp_path / "vgg9.keras"
    build_network("vgg9", 10, exact_batch_norm=False).save(path)
    model = load_network(path)
    assert is_batch_norm_exact(model)
    assert feature_extractor(model, default_taps("vgg9")).outputs[-1].shape[1:] == (2, 2, 512)


def test_subclassed_model_file_is_rejected_clearly(tmp_path):
    model = _Subclassed()
    model(np.zeros((1, 8, 8, 3), "float32"))
    path = tmp_path / "sub.keras"
    model.save(path)
    with pytest.raises(ValueError, match="cannot be tapped.*functional API"):
        load_network(path)


def test_weights_file_into_builder(tmp_path):
    path = str(tmp_path / "resnet32.weights.h5")
    original = build_network("resnet32", 5, input_shape=(8, 8, 3))
    original.save_weights(path)
    loaded = build_network("resnet32", 5, input_shape=(8, 8, 3), weights=path)
    assert is_batch_norm_exact(loaded)
    for a, b in zip(original.weights, loaded.weights, strict=True):
        np.testing.assert_array_equal(a, b)
    with pytest.raises(ValueError, match="cannot be loaded into model 'resnet32'"):
        build_network("resnet32", 7, input_shape=(8, 8, 3), weights=path)


def test_file_errors(tmp_path):
    with pytest.raises(FileNotFoundError):
        load_network(tmp_path / "missing.keras")
    with pytest.raises(FileNotFoundError):
        build_network("vgg9", 10, weights=tmp_path / "missing.weights.h5")
    path = tmp_path / "x.weights.h5"
    build_network("resnet32", 2, input_shape=(8, 8, 3)).save_weights(path)
    with pytest.raises(ValueError, match="not a .keras file.*build_network"):
        load_network(path)
