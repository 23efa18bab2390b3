"""Several sources at once: TransferModel(source={"name": model, ...})."""

import keras
import numpy as np
import pytest
from backends import to_numpy
from finite_differences import finite_difference, relative_error
from toy_networks import conv_net, count_calls, toy_batch

import keras_l2t
from keras_l2t.features import LayerNameError
from keras_l2t.pairs import resolve_pairs
from keras_l2t.pictures import pair_weight_grid

TARGET_LAYERS = ["tgt_block0", "tgt_block1"]


def _sources(seed=0):
    """Two sources of different widths and classes; both name their layers "src_*"."""
    keras.utils.set_random_seed(seed)
    return {"a": conv_net("src", [3, 4], 5), "b": conv_net("src", [4, 2], 7)}


def _target(seed=1):
    keras.utils.set_random_seed(seed)
    return conv_net("tgt", [2, 3], 3)


def _two_source_model(seed=2, **kwargs):
    sources, target = _sources(), _target()
    keras.utils.set_random_seed(seed)  # the adapters and meta-networks
    kwargs.setdefault("pairs", "all")
    kwargs.setdefault("source_layers", ["a/src_block0", "a/src_block1", "b/src_block1"])
    return keras_l2t.TransferModel(sources, target, target_layers=TARGET_LAYERS, **kwargs)


def _compile(model):
    model.compile(optimizer=keras_l2t.CoupledSGD(0.1, momentum=0.9, weight_decay=1e-3),
                  meta_optimizer=keras_l2t.TorchAdam(1e-2))
    return model


def test_pairs_name_their_source_and_the_presets_span_every_source():
    layers = ["a/s1", "a/s2", "b/s1"]
    assert resolve_pairs("all", layers, ["t1", "t2"]) == [
        ("a/s1", "t1"), ("a/s1", "t2"), ("a/s2", "t1"), ("a/s2", "t2"),
        ("b/s1", "t1"), ("b/s1", "t2")]
    assert resolve_pairs("single", layers, ["t1", "t2"]) == [("a/s2", "t2"), ("b/s1", "t2")]
    assert resolve_pairs("single", ["s1", "s2"], ["t1"]) == [("s2", "t1")]  # one source
    assert resolve_pairs([("b", "s1", "t1"), ("a/s2", "t2")]) == [("b/s1", "t1"),
                                                                 ("a/s2", "t2")]
    model = _two_source_model(pairs="single")
    assert model.pairs == [("a/src_block1", "tgt_block1"), ("b/src_block1", "tgt_block1")]
    # Each pair reads its own source: the channel weights have that source's width.
    assert [n.kernel.shape[0] for n in model.channel_weight_networks] == [4, 2]
    # The pictures' rows are the qualified source layers.
    rows, columns, grid = pair_weight_grid(model.pairs, [0.5, 2.0])
    assert rows == ["a/src_block1", "b/src_block1"] and columns == ["tgt_block1"]
    np.testing.assert_array_equal(grid, [[0.5], [2.0]])


@pytest.mark.parametrize("source, kwargs, message", [
    ("two", dict(pairs=[("src_block0", "tgt_block0")]), "does not name its source"),
    ("two", dict(pairs=[("c", "src_block0", "tgt_block0")]), "names the source 'c'"),
    ("two", dict(pairs=[("b/src_nope", "tgt_block0")]),
     "Source 'b': The source model 'src' has no layer named 'src_nope'"),
    ("two", dict(method="lwf"), "distils one source's class outputs"),
    ({}, {}, "empty dict"),
    ({"a/b": None}, {}, "without '/'"),
    ({"": None}, {}, "non-empty"),
    ({"a": "model.keras"}, {}, "a keras.Model or a dict of them"),
])
def test_bad_sources_and_pairs_are_refused_with_the_fix(source, kwargs, message):
    source = _sources() if source == "two" else source
    kwargs.setdefault("pairs", [("a/src_block0", "tgt_block0")])
    with pytest.raises(ValueError, match=message):
        keras_l2t.TransferModel(source, _target(), **kwargs)


@pytest.mark.parametrize("layer", ["src_block0", "c/src_block0", "b/src_nope"])
def test_a_source_layer_error_is_a_layer_name_error_of_the_source(layer):
    """train.py maps it to --source_layers (or --pairs)."""
    with pytest.raises(LayerNameError) as raised:
        keras_l2t.TransferModel(_sources(), _target(), pairs=[(layer, "tgt_block0")])
    assert raised.value.role == "source"


def test_two_source_meta_gradient_matches_finite_differences(float64):
    model = _two_source_model(lookahead_steps=2)
    model.compile(optimizer=keras_l2t.CoupledSGD(0.2, momentum=0.9, weight_decay=1e-2),
                  meta_optimizer=keras.optimizers.Adam(1e-3),
                  run_eagerly=keras.backend.backend() == "tensorflow")
    x, y = toy_batch(n=6, seed=3, dtype="float64")
    model.train_on_batch(x, y)  # non-zero momentums, moved BN statistics
    _, analytic = model.meta_gradient(x, y)
    analytic = [to_numpy(g) for g in analytic]
    numeric = finite_difference(model, x, y)
    assert np.linalg.norm(np.concatenate([g.ravel() for g in numeric])) > 1e-6
    assert relative_error(analytic, numeric) < 1e-6
    # Both sources' meta-networks get a gradient.
    for network in model.pair_weight_networks[::2]:
        index = [v.path for v in model._phi_variables].index(network.kernel.path)
        assert np.linalg.norm(numeric[index]) > 1e-8, network.name


def test_a_second_source_without_pairs_changes_nothing_and_never_runs():
    """Step for step the same as the single-source model: losses, theta and phi."""
    layers = ["src_block0", "src_block1"]
    sources = _sources()
    single_target, double_target = _target(), _target()
    keras.utils.set_random_seed(2)
    single = _compile(keras_l2t.TransferModel(
        sources["a"], single_target, pairs="all", source_layers=layers,
        target_layers=TARGET_LAYERS))
    keras.utils.set_random_seed(2)
    double = _compile(keras_l2t.TransferModel(
        sources, double_target, pairs="all", source_layers=[f"a/{n}" for n in layers],
        target_layers=TARGET_LAYERS))
    assert double.pairs == [(f"a/{s}", t) for s, t in single.pairs]
    calls = {name: count_calls(model.get_layer("src_conv0"))
             for name, model in sources.items()}
    x, y = toy_batch(n=8, seed=5)
    logs = [model.fit(x, y, batch_size=4, epochs=2, shuffle=False, verbose=0).history
            for model in (single, double)]
    assert logs[0].keys() == logs[1].keys()
    for key in logs[0]:
        np.testing.assert_allclose(logs[1][key], logs[0][key], rtol=1e-6, err_msg=key)
    pieces = lambda m: m._theta_variables + m._phi_variables  # noqa: E731
    for a, b in zip(pieces(single), pieces(double), strict=True):
        np.testing.assert_allclose(to_numpy(b), to_numpy(a), rtol=1e-6, atol=1e-7,
                                   err_msg=a.path)
    assert not calls["b"]  # a source with no pairs is never run
    assert calls["a"]


def test_each_source_runs_once_per_batch_and_two_sources_save_load_and_export(tmp_path):
    model = _compile(_two_source_model())
    calls = {name: count_calls(source.get_layer("src_conv0"))
             for name, source in model.source.items()}
    step = model.train_step

    def counted_step(*args):  # one iteration, not fit's building of the model
        for counted in calls.values():
            counted.clear()
        return step(*args)

    model.train_step = counted_step
    x, y = toy_batch(n=8)
    model.fit(x[:4], y[:4], batch_size=4, epochs=1, verbose=0)  # one iteration
    assert {name: len(counted) for name, counted in calls.items()} == {"a": 1, "b": 1}
    model.fit(x, y, batch_size=4, epochs=1, verbose=0)
    model.save(tmp_path / "model.keras")
    loaded = keras.saving.load_model(tmp_path / "model.keras")
    assert list(loaded.source) == ["a", "b"] and loaded.pairs == model.pairs
    for a, b in zip(model.weights, loaded.weights, strict=True):
        np.testing.assert_array_equal(to_numpy(b), to_numpy(a), err_msg=a.path)
    np.testing.assert_array_equal(to_numpy(loaded.meta_optimizer.iterations), 3)
    loaded.fit(x, y, batch_size=4, epochs=1, verbose=0)  # still trains
    model.export(tmp_path / "served", verbose=False)
    import tensorflow as tf

    served = tf.saved_model.load(str(tmp_path / "served"))
    np.testing.assert_allclose(served.serve(x).numpy(), model.predict(x, verbose=0),
                               rtol=1e-5, atol=1e-6)
