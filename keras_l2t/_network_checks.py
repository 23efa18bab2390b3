"""Checks on the networks handed to TransferModel, with errors that say what to do."""

from __future__ import annotations

import keras

from keras_l2t.features import check_functional


def check_source(source) -> None:
    if not isinstance(source, keras.Model):
        raise ValueError(f"source must be a keras.Model or a dict of them by name, got "
                         f"{type(source).__name__}.")
    if not source.built:
        raise ValueError(
            f"The source model '{source.name}' is not built: it has no weights yet. Load "
            "the pretrained model (or build it on an input shape) before passing it."
        )


def check_precision(target) -> None:
    """Refuses float16 targets: their gradients need loss scaling, and the second-order
    meta-gradient would underflow silently. bfloat16 (mixed_bfloat16) is accepted."""
    for layer in target._flatten_layers(include_self=False, recursive=True):
        if isinstance(layer, keras.layers.InputLayer):
            continue
        if layer.dtype_policy.compute_dtype == "float16":
            raise ValueError(
                f"Target layer '{layer.name}' computes in float16 (policy "
                f"'{layer.dtype_policy.name}'). float16 gradients need loss scaling, which the "
                "second-order L2T-ww meta-gradient cannot get exactly; build the target under "
                "'mixed_bfloat16' or 'float32' instead (a float16 source is fine)."
            )


def check_target(model, role: str = "target") -> bool:
    """Checks `model` has one (batch, classes) output; returns whether it is logits.

    Args:
        model: The target (or, for LwF, the source) network.
        role: "target" or "source", for the error message.
    """
    check_functional(model)
    outputs = model.outputs
    if len(outputs) != 1 or len(outputs[0].shape) != 2:
        shapes = [tuple(o.shape) for o in outputs]
        raise ValueError(
            f"The {role} model '{model.name}' must end in a classification head with one "
            f"(batch, classes) output; its outputs have shapes {shapes}. Add e.g. "
            "GlobalAveragePooling2D and Dense(num_classes)."
        )
    return outputs_logits(model)


def outputs_logits(model: keras.Model) -> bool:
    """Returns True when `model`'s single output is logits, False after a softmax."""
    last = model.outputs[0]._keras_history.operation
    activation = getattr(last, "activation", None)
    softmax = (keras.activations.softmax, "softmax")
    return not (isinstance(last, keras.layers.Softmax) or activation in softmax)


def penultimate_features(target: keras.Model) -> keras.KerasTensor:
    """The (batch, features) tensor that the target's classification head reads.

    Raises:
        ValueError: when the head's input is not a 2-D feature vector.
    """
    operation = target.outputs[0]._keras_history.operation
    if isinstance(operation, keras.layers.Softmax | keras.layers.Activation):
        operation = operation.input._keras_history.operation
    features = operation.input
    if not isinstance(features, keras.KerasTensor) or len(features.shape) != 2:
        raise ValueError(
            f"LwF adds a second head beside the target's classifier '{operation.name}', "
            "which must read a (batch, features) vector (e.g. Dense after "
            "GlobalAveragePooling2D)."
        )
    return features
