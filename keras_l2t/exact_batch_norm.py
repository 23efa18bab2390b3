"""Exact second-order gradients through the target's normalisation layers.

On TensorFlow, `keras.layers.BatchNormalization` computes its batch moments with
`tf.nn.moments`, which stops the gradient of the mean inside the variance. First-order
gradients stay exact, but Hessian-vector products lose a term, so the L2T-ww
meta-gradient (which differentiates through the lookahead's gradients) comes out wrong
with no error. The synchronized path of the same layer computes the variance as
E[x^2] - E[x]^2 with every gradient intact, and also all-reduces the moments across
replicas, so one device and N devices normalise with the same statistics.

`LayerNormalization` and `GroupNormalization` use the same moments but cannot be
switched: they are rejected with a clear error instead of being silently inexact.

The switch is a training-time setting, not part of the architecture: a switched layer
still reports `synchronized=False` in its config, so a network saved on TensorFlow loads
on JAX (whose BatchNormalization refuses `synchronized=True`), and keras-l2t switches
it again wherever it trains one.
"""

from __future__ import annotations

import functools

import keras

# Normalisation layers whose second-order gradients are inexact on TensorFlow and that
# have no exact mode to switch to.
_INEXACT_LAYERS = (keras.layers.LayerNormalization, keras.layers.GroupNormalization)


def make_batch_norm_exact(model: keras.layers.Layer) -> list[str]:
    """Switches every BatchNormalization inside `model` to exact moments, in place.

    Args:
        model: A Keras layer or model; nested models and layers are searched too.

    Returns:
        The names of the BatchNormalization layers that were switched (already exact
        ones are not listed).

    Raises:
        ValueError: if `model` holds a normalisation layer whose second-order
            gradients are inexact on TensorFlow and cannot be made exact.

    Example:
        >>> import keras
        >>> from keras_l2t.exact_batch_norm import make_batch_norm_exact
        >>> inputs = keras.Input((4, 4, 3))
        >>> norm = keras.layers.BatchNormalization(name="bn")
        >>> switched = make_batch_norm_exact(keras.Model(inputs, norm(inputs)))
        >>> switched == (["bn"] if keras.backend.backend() == "tensorflow" else [])
        True
    """
    if keras.backend.backend() != "tensorflow":
        return []  # JAX's BatchNormalization keeps the mean's gradient already.
    switched = []
    for layer in _all_layers(model):
        if isinstance(layer, _INEXACT_LAYERS):
            raise ValueError(
                f"Layer '{layer.name}' ({type(layer).__name__}) computes its moments "
                "with tf.nn.moments, whose second-order gradients are inexact on "
                "TensorFlow, so the L2T-ww meta-gradient through it would be silently "
                "wrong. Use BatchNormalization in the target network (keras-l2t makes "
                "it exact), or run on the JAX backend."
            )
        if isinstance(layer, keras.layers.BatchNormalization) and not layer.synchronized:
            layer.synchronized = True
            layer.get_config = functools.partial(_portable_config, layer)
            switched.append(layer.name)
    return switched


def _portable_config(layer: keras.layers.BatchNormalization) -> dict:
    """The layer's config as saved: without the switch (see the module docstring)."""
    return {**type(layer).get_config(layer), "synchronized": False}


def is_batch_norm_exact(model: keras.layers.Layer) -> bool:
    """Whether every BatchNormalization inside `model` uses exact moments.

    Args:
        model: A Keras layer or model; nested models and layers are searched too.

    Returns:
        True when all are exact (always on JAX, whose BatchNormalization keeps every
        gradient).

    Example:
        >>> import keras
        >>> from keras_l2t.exact_batch_norm import is_batch_norm_exact, make_batch_norm_exact
        >>> inputs = keras.Input((4, 4, 3))
        >>> model = keras.Model(inputs, keras.layers.BatchNormalization()(inputs))
        >>> _ = make_batch_norm_exact(model)
        >>> is_batch_norm_exact(model)
        True
    """
    if keras.backend.backend() != "tensorflow":
        return True
    return all(
        layer.synchronized
        for layer in _all_layers(model)
        if isinstance(layer, keras.layers.BatchNormalization)
    )


def _all_layers(model: keras.layers.Layer) -> list[keras.layers.Layer]:
    return list(model._flatten_layers(include_self=True, recursive=True))
