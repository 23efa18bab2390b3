"""Pictures of the learned weights: the grid layout, and PNGs for each meta method."""

import keras
import numpy as np
import pytest
from toy_networks import toy_batch, toy_transfer_model

from keras_l2t import pictures


def test_pair_weight_grid_puts_each_pair_at_its_source_row_and_target_column():
    pairs = [("s1", "t1"), ("s1", "t2"), ("s2", "t2")]
    sources, targets, grid = pictures.pair_weight_grid(pairs, [1.0, 2.0, 3.0])
    assert sources == ["s1", "s2"] and targets == ["t1", "t2"]
    np.testing.assert_array_equal(grid, [[1.0, 2.0], [np.nan, 3.0]])
    with pytest.raises(ValueError):
        pictures.pair_weight_grid(pairs, [1.0, 2.0])


@pytest.mark.parametrize(
    "method, expected",
    [
        ("l2t_ww", ["channel_weights.png", "pair_weights.png", "pair_weights_over_epochs.png"]),
        ("l2t_w", ["channel_weights.png"]),
        ("fm", []),
    ],
)
def test_write_pictures_draws_what_the_method_learns(tmp_path, method, expected):
    model = toy_transfer_model(method)
    model.compile(meta_optimizer=keras.optimizers.Adam(1e-2))
    x, y = toy_batch(n=8)
    history = model.fit(x, y, batch_size=8, epochs=2, verbose=0).history
    paths = pictures.write_pictures(model, x, history, str(tmp_path))
    assert sorted(p.split("/")[-1] for p in paths) == expected
    for path in paths:
        with open(path, "rb") as f:
            assert f.read(8) == b"\x89PNG\r\n\x1a\n"


def test_current_weights_reads_the_meta_networks():
    """With zero kernels the weights are set by the biases alone: lambda = relu6(b) for
    every image, w = softmax(b) = b' / sum(b') for biases log(b')."""
    model = toy_transfer_model("l2t_ww")
    x, _ = toy_batch(n=4)
    pair_biases = [-1.0, 0.5, 2.5, 7.0]  # relu6 clips the first and the last
    for network, bias in zip(model.pair_weight_networks, pair_biases, strict=True):
        network.kernel.assign(np.zeros(network.kernel.shape, "float32"))
        network.bias.assign(np.full(network.bias.shape, bias, "float32"))
    for network in model.channel_weight_networks:
        channels = network.bias.shape[0]
        network.kernel.assign(np.zeros(network.kernel.shape, "float32"))
        network.bias.assign(np.log(np.arange(1, channels + 1, dtype="float32")))
    lambdas, weights = pictures.current_weights(model, x)
    np.testing.assert_allclose(lambdas, [0.0, 0.5, 2.5, 6.0], rtol=1e-6)
    assert [w.shape for w in weights] == [(4, 3), (4, 3), (4, 4), (4, 4)]
    for w in weights:
        ramp = np.arange(1, w.shape[1] + 1)
        np.testing.assert_allclose(w, np.tile(ramp / ramp.sum(), (4, 1)), rtol=1e-5)
