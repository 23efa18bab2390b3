"""Building blocks shared by the builders: torch-style initialisers, BN, the head.

The reference implementation (alinlab/L2T-ww, PyTorch) initialises convolutions with
Kaiming-normal (fan-out), BatchNorm with gamma=1 and beta=0, and uses PyTorch's
BatchNorm defaults (momentum 0.1, epsilon 1e-5). The builders copy that, so a Keras
network starts from the same distribution as the reference's. In Keras terms the
PyTorch momentum 0.1 is `momentum=0.9`.
"""

from __future__ import annotations

import math

import keras

from keras_l2t.exact_batch_norm import make_batch_norm_exact

# PyTorch BatchNorm2d defaults, in Keras terms (Keras momentum = 1 - torch momentum).
BN_MOMENTUM = 0.9
BN_EPSILON = 1e-5

# Names of the classification head's layers in every builder.
POOL_NAME = "avg_pool"
LOGITS_NAME = "logits"


def conv_initializer() -> keras.initializers.Initializer:
    """Kaiming-normal, fan-out, untruncated: `torch.nn.init.kaiming_normal_(mode="fan_out")`."""
    return keras.initializers.VarianceScaling(
        scale=2.0, mode="fan_out", distribution="untruncated_normal"
    )


def torch_linear_initializers(
    fan_in: int,
) -> tuple[keras.initializers.Initializer, keras.initializers.Initializer]:
    """Kernel and bias initialisers of a default `torch.nn.Linear(fan_in, ...)`.

    Both are uniform on [-1/sqrt(fan_in), 1/sqrt(fan_in)].
    """
    bound = 1.0 / math.sqrt(fan_in)
    kernel = keras.initializers.VarianceScaling(
        scale=1.0 / 3.0, mode="fan_in", distribution="uniform"
    )
    return kernel, keras.initializers.RandomUniform(-bound, bound)


def batch_norm(name: str) -> keras.layers.BatchNormalization:
    """A BatchNormalization layer with PyTorch's defaults (gamma 1, beta 0)."""
    return keras.layers.BatchNormalization(momentum=BN_MOMENTUM, epsilon=BN_EPSILON, name=name)


def classification_head(
    features: keras.KerasTensor,
    num_classes: int,
    kernel_initializer: keras.initializers.Initializer | None = None,
    bias_initializer: keras.initializers.Initializer | None = None,
) -> keras.KerasTensor:
    """Global average pooling then a Dense layer that outputs logits (no softmax).

    Args:
        features: A 4-D feature map (batch, height, width, channels).
        num_classes: Number of classes.
        kernel_initializer: Dense kernel initialiser; PyTorch's `nn.Linear` default
            when None.
        bias_initializer: Dense bias initialiser; PyTorch's `nn.Linear` default
            when None.

    Returns:
        The logits tensor, shape (batch, num_classes), from layers named
        `avg_pool` and `logits`.
    """
    channels = int(features.shape[-1])
    default_kernel, default_bias = torch_linear_initializers(channels)
    x = keras.layers.GlobalAveragePooling2D(name=POOL_NAME)(features)
    return keras.layers.Dense(
        num_classes,
        kernel_initializer=kernel_initializer or default_kernel,
        bias_initializer=bias_initializer or default_bias,
        name=LOGITS_NAME,
    )(x)


def finish_target(model: keras.Model, exact_batch_norm: bool) -> keras.Model:
    """Switches the model's BatchNorm to exact moments (`keras_l2t.exact_batch_norm`) when asked."""
    if exact_batch_norm:
        make_batch_norm_exact(model)
    return model
