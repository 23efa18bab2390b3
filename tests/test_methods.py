"""Every method of the paper's table: golden loss values, and a short fit per method in
which the method's own loss terms go down."""

import keras
import numpy as np
import pytest
from toy_networks import conv_net, toy_transfer_model

import keras_l2t
from keras_l2t import losses
from keras_l2t.methods import METHODS


def test_attention_transfer_golden_value():
    rng = np.random.default_rng(0)
    source = rng.normal(size=(2, 3, 3, 4)).astype("float32")
    target = rng.normal(size=(2, 3, 3, 6)).astype("float32")
    got = keras.ops.convert_to_numpy(losses.attention_transfer(source, target, beta=1000.0))
    expected = []
    for s, t in zip(source, target):
        qs = (s**2).mean(-1).ravel()
        qt = (t**2).mean(-1).ravel()
        qs, qt = qs / np.linalg.norm(qs), qt / np.linalg.norm(qt)
        expected.append(1000.0 / 2 * np.mean((qs - qt) ** 2))
    np.testing.assert_allclose(got, expected, rtol=1e-5)


def test_distillation_golden_value():
    source = np.array([[2.0, 0.0, -2.0], [0.5, 0.5, 1.0]], "float32")
    target = np.array([[0.0, 1.0, 0.0], [1.0, -1.0, 0.0]], "float32")

    def softmax(z):
        e = np.exp(z - z.max(-1, keepdims=True))
        return e / e.sum(-1, keepdims=True)

    expected = -(softmax(source / 2) * np.log(softmax(target / 2))).sum(-1)
    got = keras.ops.convert_to_numpy(losses.distillation(source, target, temperature=2.0))
    np.testing.assert_allclose(got, expected, rtol=1e-5)


def test_every_method_is_documented_with_its_paper():
    assert set(METHODS) == {"scratch", "lwf", "at", "lwf_at", "fm", "l2t_w", "l2t_ww"}
    cited = {"lwf": "Li & Hoiem, ECCV 2016", "at": "Zagoruyko & Komodakis, ICLR 2017",
             "fm": "Romero et al., ICLR 2015", "l2t_w": "Jang et al., ICML 2019",
             "l2t_ww": "Jang et al., ICML 2019"}
    for name, citation in cited.items():
        assert citation in METHODS[name].description, name


@pytest.mark.parametrize(
    "method, default_pairs",
    [("fm", [("src_block1", "tgt_block1")]),
     ("at", [("src_block0", "tgt_block0"), ("src_block1", "tgt_block1")]),
     ("l2t_w", [("src_block0", "tgt_block0"), ("src_block1", "tgt_block1")])],
)
def test_methods_default_pair_presets(method, default_pairs):
    model = toy_transfer_model(method, pairs=None)
    assert model.pairs == default_pairs


EXPECTED_TERMS = {
    "scratch": [],
    "lwf": ["distillation_loss"],
    "at": ["attention_loss"],
    "lwf_at": ["attention_loss", "distillation_loss"],
    "fm": ["matching_loss"],
    "l2t_w": ["matching_loss"],
    "l2t_ww": ["matching_loss"],
}


def _toy_task(n=32, seed=0):
    """Three classes told apart by which colour channel is brighter."""
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 3, size=n).astype("int32")
    x = rng.normal(scale=0.3, size=(n, 8, 8, 3)).astype("float32")
    x[np.arange(n), :, :, y] += 1.0
    return x, y


@pytest.mark.parametrize("method", sorted(METHODS))
def test_each_method_fits_and_its_own_loss_terms_decrease(method):
    model = toy_transfer_model(method, pairs=None, seed=1)
    head = model.source.get_layer("src_head")
    head.kernel.assign(head.kernel * 30.0)  # a confident source, so distillation has work
    model.compile(optimizer=keras_l2t.CoupledSGD(0.05), metrics=["accuracy"])
    x, y = _toy_task()
    history = model.fit(x, y, batch_size=16, epochs=6, shuffle=False, verbose=0).history
    terms = EXPECTED_TERMS[method]
    assert sorted(k for k in history if k.endswith("_loss")) == terms
    for name in ["ce", *terms]:
        assert history[name][-1] < history[name][0], (name, history[name])
    assert ("meta_ce" in history) == METHODS[method].meta_learned


def test_lwf_reads_a_softmax_source_as_probabilities():
    keras.utils.set_random_seed(0)
    source = conv_net("src", [3, 4], 5)
    probabilities = keras.Model(source.input, keras.layers.Softmax()(source.output))
    target = conv_net("tgt", [2, 3], 3)
    model = keras_l2t.TransferModel(probabilities, target, method="lwf")
    x, _ = _toy_task(n=4)
    source_logits = model._source_outputs(x).logits
    expected = keras.ops.log_softmax(source(x), axis=-1)
    np.testing.assert_allclose(keras.ops.convert_to_numpy(source_logits),
                               keras.ops.convert_to_numpy(expected), rtol=1e-4, atol=1e-5)
    assert model.distillation_head.kernel.shape == (3, 5)


def test_lwf_needs_a_source_classifier():
    inputs = keras.Input((8, 8, 3))
    maps = keras.layers.Conv2D(2, 3, name="s_conv")(inputs)
    with pytest.raises(ValueError, match="source model .* classification head"):
        keras_l2t.TransferModel(keras.Model(inputs, maps), conv_net("tgt", [2, 3], 3),
                                method="lwf")
