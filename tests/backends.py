"""What tests need to run on both Keras backends (TensorFlow and JAX)."""

from __future__ import annotations

import keras
import pytest

BACKEND = keras.backend.backend()


def tensorflow_only(reason: str):
    """Skips a test on other backends, saying why it is about TensorFlow alone."""
    return pytest.mark.skipif(BACKEND != "tensorflow", reason=f"TensorFlow only: {reason}")


def to_numpy(value):
    """A tensor or variable of any backend as a NumPy array."""
    return keras.ops.convert_to_numpy(value)


def variable_gradients(loss_fn, variables: list, reads: list) -> list:
    """d loss_fn() / d variables, where `loss_fn` reads (and may assign) variables.

    Args:
        loss_fn: A function of no arguments that reads variables.
        variables: The variables to differentiate with respect to.
        reads: Every other variable `loss_fn` reads; its assignments to them (batch-norm
            statistics) are applied, as a stateful call would apply them.
    """
    if BACKEND == "tensorflow":
        import tensorflow as tf

        with tf.GradientTape() as tape:
            loss = loss_fn()
        return tape.gradient(loss, variables)
    import jax

    others = [v for v in reads if all(v is not w for w in variables)]

    def pure(values):
        mapping = list(zip(variables, values)) + [(v, v.value) for v in others]
        with keras.StatelessScope(state_mapping=mapping) as scope:
            loss = loss_fn()
        return loss, [scope.get_current_value(v) for v in others]

    grads, updates = jax.grad(pure, has_aux=True)([v.value for v in variables])
    for variable, value in zip(others, updates):
        variable.assign(value)
    return grads
