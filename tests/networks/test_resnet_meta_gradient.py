"""The L2T-ww meta-gradient through a keras-hub ResNet-18 target is exact.

Central finite differences of the meta objective along random directions of the
meta-networks' variables, against the analytic second-order meta-gradient, in float64,
with the ResNet-18 of `build_network` (keras-hub's `ResNetBackbone`) at 32 px. On
TensorFlow its BatchNormalization is switched to exact moments; undoing the switch
makes the same comparison fail, so the check can tell.
"""

from __future__ import annotations

import keras
import numpy as np
import pytest
from backends import BACKEND, to_numpy
from finite_differences import meta_objective
from toy_networks import conv_net, toy_batch

import keras_l2t
from keras_l2t.exact_batch_norm import is_batch_norm_exact
from keras_l2t.networks import build_network

SIZE = 32
PAIRS = [("src_block0", "stage1_out"), ("src_block1", "stage2_out")]


@pytest.fixture
def resnet_transfer(float64):
    keras.utils.set_random_seed(5)
    target = build_network("resnet18", 3, (SIZE, SIZE, 3))
    model = keras_l2t.TransferModel(
        conv_net("src", [3, 4], 5, size=SIZE),
        target,
        method="l2t_ww",
        pairs=PAIRS,
        lookahead_steps=1,
    )
    model.compile(
        optimizer=keras_l2t.CoupledSGD(0.01, momentum=0.9, weight_decay=1e-4),
        meta_optimizer=keras.optimizers.Adam(1e-3),
    )
    x, y = toy_batch(n=4, size=SIZE, classes=3, seed=3, dtype="float64")
    return model, x, y


def _directional_errors(model, x, y, directions=2, eps=1e-6):
    """Relative errors of the analytic directional derivatives against central differences.

    Along unit directions and with a small step: ReLU6 "where" weights and the target's
    ReLUs make the objective piecewise smooth, with kinks about 1e-4 away here.
    """
    _, analytic = model.meta_gradient(x, y)
    analytic = [to_numpy(g) for g in analytic]
    objective = meta_objective(model, x, y)
    phi = model._phi_variables
    base = [v.numpy() if hasattr(v, "numpy") else to_numpy(v) for v in phi]
    rng = np.random.default_rng(0)
    errors = []
    for _ in range(directions):
        direction = [rng.normal(size=b.shape) for b in base]
        norm = np.sqrt(sum(float(np.sum(d * d)) for d in direction))
        direction = [d / norm for d in direction]
        values = []
        for sign in (1.0, -1.0):
            for variable, b, d in zip(phi, base, direction, strict=True):
                variable.assign(b + sign * eps * d)
            values.append(objective())
        for variable, b in zip(phi, base, strict=True):
            variable.assign(b)
        numeric = (values[0] - values[1]) / (2 * eps)
        exact = sum(float(np.sum(g * d)) for g, d in zip(analytic, direction, strict=True))
        assert abs(numeric) > 1e-3
        errors.append(abs(exact - numeric) / abs(numeric))
    return errors


def test_meta_gradient_through_a_keras_hub_resnet18_is_exact(resnet_transfer):
    model, x, y = resnet_transfer
    assert is_batch_norm_exact(model.target)
    errors = _directional_errors(model, x, y)
    assert max(errors) < 1e-5, errors
    if BACKEND == "tensorflow":  # Keras' JAX BatchNormalization is exact as it is.
        for layer in model.target.layers:
            if isinstance(layer, keras.layers.BatchNormalization):
                layer.synchronized = False  # undo the switch: TF's moments lose a term
        assert max(_directional_errors(model, x, y)) > 1e-2
