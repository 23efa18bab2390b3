"""The adapter and the meta-networks: initial values, shapes, serialisation."""

import keras
import numpy as np
import pytest
from toy_networks import toy_transfer_model

from keras_l2t.layers import ChannelWeights, FeatureAdapter, PairWeight


def test_channel_weights_start_exactly_uniform():
    layer = ChannelWeights()
    pooled = np.random.default_rng(0).normal(size=(4, 7)).astype("float32") * 10
    weights = keras.ops.convert_to_numpy(layer(pooled))
    np.testing.assert_array_equal(weights, np.full((4, 7), 1 / 7, dtype="float32"))


def test_channel_weights_are_a_softmax_of_a_dense_layer():
    layer = ChannelWeights()
    layer.build((None, 3))
    kernel = np.arange(9, dtype="float32").reshape(3, 3) / 10
    bias = np.array([0.1, -0.2, 0.3], dtype="float32")
    layer.set_weights([kernel, bias])
    pooled = np.array([[1.0, -1.0, 0.5]], dtype="float32")
    logits = pooled @ kernel + bias
    expected = np.exp(logits) / np.exp(logits).sum()
    np.testing.assert_allclose(keras.ops.convert_to_numpy(layer(pooled)), expected, rtol=1e-6)


@pytest.mark.parametrize(
    "activation, expected",
    [
        ("relu6", lambda z: np.clip(z, 0, 6)),
        ("relu", lambda z: np.maximum(z, 0)),
    ],
)
def test_pair_weight_activations(activation, expected):
    layer = PairWeight(activation)
    layer.build((None, 2))
    layer.set_weights([np.array([[4.0], [-1.0]], "float32"), np.array([1.0], "float32")])
    pooled = np.array([[2.0, 0.0], [0.0, 3.0], [-1.0, 0.0]], "float32")
    z = pooled @ np.array([4.0, -1.0]) + 1.0  # [9, -2, -3]
    np.testing.assert_allclose(keras.ops.convert_to_numpy(layer(pooled)), expected(z))


def test_pair_weight_relu_avg_divides_the_input_by_the_channel_count():
    layer = PairWeight("relu_avg")
    layer.build((None, 2))
    layer.set_weights([np.array([[4.0], [2.0]], "float32"), np.array([1.0], "float32")])
    out = layer(np.array([[1.0, 1.0]], "float32"))
    np.testing.assert_allclose(keras.ops.convert_to_numpy(out), [1.0 + (4 + 2) / 2])


def test_pair_weight_constant_is_softplus_of_ten_z_for_every_sample():
    layer = PairWeight("constant")
    out = keras.ops.convert_to_numpy(layer(np.ones((3, 5), "float32")))
    np.testing.assert_allclose(out, [np.log(2.0)] * 3, rtol=1e-6)
    layer.set_weights([np.array(0.2, "float32")])
    out = keras.ops.convert_to_numpy(layer(np.ones((2, 5), "float32")))
    np.testing.assert_allclose(out, [np.log1p(np.exp(2.0))] * 2, rtol=1e-6)


def test_pair_weight_bias_starts_at_one_and_rejects_unknown_activations():
    layer = PairWeight()
    out = keras.ops.convert_to_numpy(layer(np.zeros((2, 8), "float32")))
    np.testing.assert_array_equal(out, [1.0, 1.0])
    with pytest.raises(ValueError, match="Unknown pair weight activation 'sigmoid'.*relu6"):
        PairWeight("sigmoid")


def test_feature_adapter_is_a_1x1_convolution_with_bias():
    adapter = FeatureAdapter(5)
    x = np.random.default_rng(1).normal(size=(2, 3, 4, 6)).astype("float32")
    y = keras.ops.convert_to_numpy(adapter(x))
    kernel, bias = adapter.get_weights()
    assert y.shape == (2, 3, 4, 5)
    assert np.abs(kernel).max() <= 1 / np.sqrt(6)
    np.testing.assert_allclose(y, np.einsum("bhwc,cd->bhwd", x, kernel) + bias, rtol=1e-5,
                               atol=1e-6)


@pytest.mark.parametrize(
    "layer", [ChannelWeights(), PairWeight("relu_avg", bias_init=0.5), FeatureAdapter(4)]
)
def test_layers_serialise(layer):
    config = keras.saving.serialize_keras_object(layer)
    clone = keras.saving.deserialize_keras_object(config)
    assert type(clone) is type(layer)
    assert clone.get_config() == layer.get_config()


def test_one_pair_of_meta_networks_per_pair_even_when_pairs_share_a_source_layer():
    model = toy_transfer_model()  # 2 source x 2 target layers = 4 pairs
    assert len(model.pairs) == 4
    assert len(model.adapters) == len(model.channel_weight_networks) == 4
    assert len(model.pair_weight_networks) == 4
    networks = model.channel_weight_networks + model.pair_weight_networks + model.adapters
    variables = [v for n in networks for v in n.weights]
    assert len({id(v) for v in variables}) == len(variables)
    channels = {"src_block0": 3, "src_block1": 4}
    for (source, _), network in zip(model.pairs, model.channel_weight_networks):
        assert network.kernel.shape == (channels[source], channels[source])
    assert len(model.phi_variables) == 16


def test_methods_own_only_the_meta_networks_they_learn():
    assert len(toy_transfer_model("l2t_w").pair_weight_networks) == 0
    assert len(toy_transfer_model("l2t_w").channel_weight_networks) == 4
    fm = toy_transfer_model("fm")
    assert fm.phi_variables == [] and len(fm.adapters) == 4
    assert toy_transfer_model("scratch").pairs == []
