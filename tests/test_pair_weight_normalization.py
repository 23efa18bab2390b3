"""pair_weight_normalization="mean": "where" spreads a fixed budget over the pairs."""

import keras
import numpy as np
import pytest
from backends import BACKEND, to_numpy
from finite_differences import assert_meta_gradient_matches_finite_differences
from toy_networks import toy_batch, toy_transfer_model

import keras_l2t


def _model(normalization, seed=1, **kwargs):
    model = toy_transfer_model(seed=seed, pair_weight_normalization=normalization, **kwargs)
    model.compile(optimizer=keras_l2t.CoupledSGD(0.2, momentum=0.9, weight_decay=1e-2),
                  meta_optimizer=keras.optimizers.Adam(1e-3),
                  run_eagerly=BACKEND == "tensorflow")
    return model


def test_each_examples_pair_weights_are_divided_by_their_mean():
    plain, normalized = _model("none"), _model("mean")
    normalized.set_weights(plain.get_weights())
    rng = np.random.default_rng(0)
    for network in plain.pair_weight_networks:  # lambdas far from 1 and from each other
        network.kernel.assign(rng.normal(scale=2.0, size=network.kernel.shape))
    for a, b in zip(normalized.pair_weight_networks, plain.pair_weight_networks):
        a.kernel.assign(b.kernel.numpy())
    x, _ = toy_batch(n=5, seed=2)
    lambdas = np.stack([to_numpy(p) for p in plain._transfer_weights(
        plain._source_outputs(x))[1]])  # (pairs, batch)
    assert np.ptp(lambdas) > 0.5
    scaled = np.stack([to_numpy(p) for p in normalized._transfer_weights(
        normalized._source_outputs(x))[1]])
    np.testing.assert_allclose(scaled, lambdas / lambdas.mean(axis=0), rtol=1e-5)
    np.testing.assert_allclose(scaled.mean(axis=0), 1.0, rtol=1e-5)


def test_normalized_meta_gradient_matches_finite_differences(float64):
    model = _model("mean", lookahead_steps=2)
    x, y = toy_batch(n=6, seed=3, dtype="float64")
    model.train_on_batch(x, y)  # non-zero momentums, moved BN statistics
    analytic = assert_meta_gradient_matches_finite_differences(model, x, y)
    # The budget is fixed: scaling every "where" network's kernel and bias by c > 0
    # scales every lambda by c (relu6 is linear on (0, 6)) and changes nothing, so the
    # meta-gradient is orthogonal to those variables (Euler: sum of p * dL/dp = 0).
    where = [(to_numpy(v), g) for v, g in zip(model._phi_variables, analytic)
             if any(v is w for n in model.pair_weight_networks for w in n.trainable_variables)]
    assert len(where) == 2 * len(model.pairs)
    radial = sum(float(np.sum(p * g)) for p, g in where)
    assert abs(radial) < 1e-8 * max(1.0, max(float(np.abs(g).max()) for _, g in where))
    assert max(float(np.abs(g).max()) for _, g in where) > 1e-6


def test_the_normalization_is_a_flag_that_saves_and_refuses_fixed_weights():
    model = _model("mean")
    assert keras_l2t.TransferModel.from_config(
        model.get_config()).pair_weight_normalization == "mean"
    assert toy_transfer_model().pair_weight_normalization == "none"  # the paper's
    with pytest.raises(ValueError, match="pair_weight_normalization must be one of none, mean"):
        toy_transfer_model(pair_weight_normalization="sum")
    with pytest.raises(ValueError, match="needs learned pair weights \\(l2t_ww\\), not 'fm'"):
        toy_transfer_model("fm", pair_weight_normalization="mean")
