"""Finite differences of the meta objective, shared by the meta-gradient tests."""

from __future__ import annotations

import numpy as np
from backends import BACKEND, to_numpy


def meta_objective(model, x, y, meta_batch=None):
    """L_org(theta_{T+1}) at the variables' current values, as a function returning a
    Python float.

    On TensorFlow it runs as one graph, traced once (the unused gradient is pruned);
    on JAX `meta_gradient` is compiled already.
    """
    if BACKEND != "tensorflow":
        return lambda: float(model.meta_gradient(x, y, meta_batch=meta_batch)[0])
    import tensorflow as tf

    graph = tf.function(lambda: model.meta_gradient(x, y, meta_batch=meta_batch)[0])
    return lambda: float(graph())


def finite_difference(model, x, y, eps=1e-5, meta_batch=None) -> list:
    """Central differences of the meta objective, one phi entry at a time."""
    objective = meta_objective(model, x, y, meta_batch)
    grads = []
    for variable in model._phi_variables:
        base = variable.numpy()
        grad = np.zeros_like(base)
        for index in np.ndindex(base.shape):
            values = []
            for sign in (1.0, -1.0):
                shifted = base.copy()
                shifted[index] += sign * eps
                variable.assign(shifted)
                values.append(objective())
            grad[index] = (values[0] - values[1]) / (2 * eps)
        variable.assign(base)
        grads.append(grad)
    return grads


def relative_error(a, b) -> float:
    """|a - b| / |b| over all the tensors of `a` and `b`, flattened."""
    a = np.concatenate([np.ravel(t) for t in a])
    b = np.concatenate([np.ravel(t) for t in b])
    return float(np.linalg.norm(a - b) / np.linalg.norm(b))


def assert_meta_gradient_matches_finite_differences(model, x, y) -> list:
    """Asserts `model.meta_gradient(x, y)` equals central differences of the meta
    objective (relative error below 1e-6, on a gradient that is not zero); returns it,
    as NumPy arrays aligned with `model._phi_variables`."""
    _, analytic = model.meta_gradient(x, y)
    analytic = [to_numpy(g) for g in analytic]
    numeric = finite_difference(model, x, y)
    assert np.linalg.norm(np.concatenate([g.ravel() for g in numeric])) > 1e-6
    error = relative_error(analytic, numeric)
    assert error < 1e-6, error
    return analytic
