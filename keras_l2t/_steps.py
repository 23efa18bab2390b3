"""What the TransferModel and its backend step modules share; imports no step module."""

from __future__ import annotations

import keras


def step_module():
    """The module that runs the iteration on the current Keras backend."""
    backend = keras.backend.backend()
    if backend == "tensorflow":
        from keras_l2t import _tensorflow_step

        return _tensorflow_step
    if backend == "jax":
        from keras_l2t import _jax_step

        return _jax_step
    raise ValueError(
        f"keras-l2t runs on the TensorFlow and JAX backends, not '{backend}': set "
        "KERAS_BACKEND=tensorflow or KERAS_BACKEND=jax before importing Keras."
    )


def unpack(data):
    """(x, y) of a training batch; sample weights and missing labels are refused."""
    x, y, sample_weight = keras.utils.unpack_x_y_sample_weight(data)
    if sample_weight is not None:
        raise ValueError(
            "TransferModel does not support sample weights or class_weight: its losses "
            "are plain batch means, as in the reference. Resample the data instead."
        )
    if y is None:
        raise ValueError(
            "TransferModel needs labels to train and evaluate: give (images, labels) "
            "batches (predict takes images alone)."
        )
    return x, y


def unpack_training(data, held_out: bool):
    """(x, y, x_meta, y_meta) of a training element.

    With the paper's objective the meta batch is the training batch itself; with
    `meta_objective="held_out"` an element is `((x, y), (x_meta, y_meta))`.
    """
    if not held_out:
        x, y = unpack(data)
        return x, y, x, y
    batch, meta, sample_weight = keras.utils.unpack_x_y_sample_weight(data)
    if sample_weight is not None or not all(
        isinstance(part, list | tuple) and len(part) == 2 for part in (batch, meta)
    ):
        raise ValueError(
            "meta_objective='held_out' trains on elements ((x, y), (x_meta, y_meta)): a "
            "training batch and a batch of the held-out meta split, e.g. "
            "tf.data.Dataset.zip((train, meta)). Got an element of another structure."
        )
    (x, y), (x_meta, y_meta) = unpack(batch), unpack(meta)
    return x, y, x_meta, y_meta


def as_list(outputs) -> list:
    """A functional model with one output returns a tensor, not a one-element list."""
    return list(outputs) if isinstance(outputs, list | tuple) else [outputs]
