"""The adapter and the meta-networks: initial values, shapes, serialisation, and a shared
layer test (build, symbolic and eager calls, serialisation, fit) run for each layer."""

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


def _randomised(layer, input_shape, seed):
    """`layer` built for `input_shape`, with random weights (the initial ones are zero or
    equal for every layer, which would hide a mix-up)."""
    layer.build(input_shape)
    rng = np.random.default_rng(seed)
    layer.set_weights([rng.normal(size=w.shape).astype("float32") for w in layer.get_weights()])
    return layer


@pytest.mark.parametrize("layer_class, kwargs", [
    (ChannelWeights, {}),
    (PairWeight, {"activation": "relu6"}),
    (PairWeight, {"activation": "relu"}),
    (PairWeight, {"activation": "relu_avg"}),
    (PairWeight, {"activation": "constant"}),
])
def test_stacked_meta_networks_equal_their_separate_calls(layer_class, kwargs):
    networks = [_randomised(layer_class(**kwargs), (None, 5), seed) for seed in range(3)]
    pooled = np.random.default_rng(9).normal(size=(4, 5)).astype("float32") * 3
    stacked = layer_class.call_stacked(networks, pooled)
    assert len(stacked) == 3
    for network, output in zip(networks, stacked):
        np.testing.assert_allclose(keras.ops.convert_to_numpy(output),
                                   keras.ops.convert_to_numpy(network(pooled)), rtol=1e-5,
                                   atol=1e-6)


def test_stacked_adapters_equal_their_separate_calls():
    adapters = [_randomised(FeatureAdapter(channels), (None, 3, 3, 4), seed)
                for seed, channels in enumerate((2, 5, 1))]
    target_map = np.random.default_rng(9).normal(size=(2, 3, 3, 4)).astype("float32")
    stacked = FeatureAdapter.call_stacked(target_map, [a.kernel for a in adapters],
                                          [a.bias for a in adapters])
    assert [tuple(o.shape) for o in stacked] == [(2, 3, 3, 2), (2, 3, 3, 5), (2, 3, 3, 1)]
    for adapter, output in zip(adapters, stacked):
        np.testing.assert_allclose(keras.ops.convert_to_numpy(output),
                                   keras.ops.convert_to_numpy(adapter(target_map)), rtol=1e-5,
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
    assert len(model._phi_variables) == 16


def test_methods_own_only_the_meta_networks_they_learn():
    assert len(toy_transfer_model("l2t_w").pair_weight_networks) == 0
    assert len(toy_transfer_model("l2t_w").channel_weight_networks) == 4
    fm = toy_transfer_model("fm")
    assert fm._phi_variables == [] and len(fm.adapters) == 4
    assert toy_transfer_model("scratch").pairs == []


def run_layer_test(layer_class, init_kwargs, input_shape, output_shape, weight_shapes,
                   tmp_path):
    """Checks one layer class the way keras-hub's `run_layer_test` does.

    Build (weight shapes), symbolic call against `compute_output_shape`, eager call,
    config and `serialize_keras_object` round trips, and a short `fit` of a model made of
    the layer alone, saved and reloaded as a `.keras` file.

    Args:
        layer_class: The layer's class.
        init_kwargs: Its constructor arguments.
        input_shape: Input shape without the batch dimension.
        output_shape: Expected output shape without the batch dimension.
        weight_shapes: Expected shapes of its trainable weights, in order.
        tmp_path: A temporary folder for the `.keras` file.
    """
    batch = 8
    rng = np.random.default_rng(0)
    inputs = rng.normal(size=(batch, *input_shape)).astype("float32")
    targets = rng.normal(size=(batch, *output_shape)).astype("float32")

    layer = layer_class(**init_kwargs)
    layer.build((None, *input_shape))
    assert layer.built
    assert [tuple(w.shape) for w in layer.trainable_weights] == weight_shapes
    assert layer.non_trainable_weights == []

    symbolic = layer(keras.Input(shape=input_shape))
    assert tuple(symbolic.shape) == (None, *output_shape)
    assert tuple(layer.compute_output_shape((None, *input_shape))) == (None, *output_shape)
    assert tuple(layer.compute_output_shape((batch, *input_shape))) == (batch, *output_shape)

    eager = keras.ops.convert_to_numpy(layer(inputs))
    assert eager.shape == (batch, *output_shape)
    assert np.isfinite(eager).all()

    config = layer.get_config()
    assert all(config[key] == value for key, value in init_kwargs.items())
    assert layer_class.from_config(config).get_config() == config
    serialized = keras.saving.serialize_keras_object(layer)
    clone = keras.saving.deserialize_keras_object(serialized)
    assert type(clone) is layer_class
    assert clone.get_config() == config

    keras.utils.set_random_seed(0)
    model_inputs = keras.Input(shape=input_shape)
    model = keras.Model(model_inputs, layer_class(**init_kwargs)(model_inputs))
    model.compile(optimizer=keras.optimizers.SGD(0.1), loss="mse")
    before = [w.numpy().copy() for w in model.trainable_weights]
    history = model.fit(inputs, targets, batch_size=4, epochs=2, verbose=0)
    assert np.isfinite(history.history["loss"]).all()
    for start, weight in zip(before, model.trainable_weights):
        assert not np.array_equal(start, weight.numpy()), f"{weight.path} did not change"

    path = tmp_path / "layer.keras"
    model.save(path)
    loaded = keras.saving.load_model(path)
    np.testing.assert_allclose(
        keras.ops.convert_to_numpy(loaded(inputs)), keras.ops.convert_to_numpy(model(inputs)),
        rtol=1e-6,
    )


@pytest.mark.parametrize(
    "layer_class, init_kwargs, input_shape, output_shape, weight_shapes",
    [
        (ChannelWeights, {}, (6,), (6,), [(6, 6), (6,)]),
        (PairWeight, {}, (6,), (), [(6, 1), (1,)]),
        (PairWeight, {"activation": "relu_avg", "bias_init": 0.5}, (6,), (), [(6, 1), (1,)]),
        (PairWeight, {"activation": "constant"}, (6,), (), [()]),
        (FeatureAdapter, {"channels": 5}, (3, 4, 2), (3, 4, 5), [(2, 5), (5,)]),
    ],
    ids=["channel_weights", "pair_weight", "pair_weight_relu_avg", "pair_weight_constant",
         "feature_adapter"],
)
def test_layer(layer_class, init_kwargs, input_shape, output_shape, weight_shapes, tmp_path):
    run_layer_test(layer_class, init_kwargs, input_shape, output_shape, weight_shapes,
                   tmp_path)
