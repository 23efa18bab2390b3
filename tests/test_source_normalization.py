"""source_normalization="rms": the step does not depend on the scale of the source's maps."""

import keras
import numpy as np
import pytest
from toy_networks import conv_net, toy_batch

import keras_l2t
from keras_l2t.losses import rms_normalized


def _linear_source(scale: float) -> keras.Model:
    """Two ReLU conv blocks without batch norm, seed-fixed: `scale` multiplies both taps
    (the first conv's kernel and bias, the second's bias; ReLU is positively homogeneous)."""
    keras.utils.set_random_seed(4)
    inputs = keras.Input((8, 8, 3))
    x = keras.layers.Conv2D(3, 3, padding="same", activation="relu", name="src_block0")(inputs)
    x = keras.layers.Conv2D(4, 3, strides=2, padding="same", activation="relu",
                            name="src_block1")(x)
    outputs = keras.layers.Dense(5)(keras.layers.GlobalAveragePooling2D()(x))
    source = keras.Model(inputs, outputs)
    first, second = source.get_layer("src_block0"), source.get_layer("src_block1")
    first.set_weights([w * scale for w in first.get_weights()])
    second.set_weights([second.get_weights()[0], second.get_weights()[1] * scale])
    return source


def _trained(source_scale: float, normalization: str, method: str = "l2t_ww") -> list:
    source = _linear_source(source_scale)
    keras.utils.set_random_seed(7)
    model = keras_l2t.TransferModel(
        source, conv_net("tgt", [2, 3], 3), method=method, pairs="all",
        source_layers=["src_block0", "src_block1"], target_layers=["tgt_block0", "tgt_block1"],
        source_normalization=normalization)
    model.compile(optimizer=keras_l2t.CoupledSGD(0.1, momentum=0.9),
                  meta_optimizer=keras.optimizers.SGD(0.5))
    for seed in (1, 2):
        model.train_on_batch(*toy_batch(n=8, seed=seed))
    return [keras.ops.convert_to_numpy(v) for v in model.trainable_variables]


def test_rms_makes_the_iteration_independent_of_the_source_scale():
    small, large = _trained(1.0, "rms"), _trained(30.0, "rms")
    for a, b in zip(small, large):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-6)
    # Without it the same 30x source trains another target (the control).
    plain_small, plain_large = _trained(1.0, "none"), _trained(30.0, "none")
    assert max(float(np.max(np.abs(a - b))) for a, b in zip(plain_small, plain_large)) > 1e-2


def test_rms_normalized_maps_have_unit_mean_square_per_example():
    maps = np.random.default_rng(0).normal(size=(3, 4, 4, 5)).astype("float32")
    maps *= np.array([0.01, 1.0, 300.0], "float32")[:, None, None, None]
    normalized = keras.ops.convert_to_numpy(rms_normalized(maps))
    np.testing.assert_allclose(np.mean(normalized**2, axis=(1, 2, 3)), 1.0, rtol=1e-5)
    np.testing.assert_allclose(normalized[1], maps[1] / np.sqrt(np.mean(maps[1] ** 2)),
                               rtol=1e-5)
    assert np.all(keras.ops.convert_to_numpy(rms_normalized(np.zeros((1, 2, 2, 1)))) == 0)


def test_an_unknown_normalization_is_refused_and_the_config_keeps_it():
    with pytest.raises(ValueError, match="source_normalization must be one of none, rms"):
        keras_l2t.TransferModel(_linear_source(1.0), conv_net("tgt", [2], 3), pairs="single",
                                source_layers=["src_block1"], target_layers=["tgt_block0"],
                                source_normalization="batch")
    model = keras_l2t.TransferModel(_linear_source(1.0), conv_net("tgt", [2], 3),
                                    pairs="single", source_layers=["src_block1"],
                                    target_layers=["tgt_block0"], source_normalization="rms")
    assert keras_l2t.TransferModel.from_config(model.get_config()).source_normalization == "rms"
