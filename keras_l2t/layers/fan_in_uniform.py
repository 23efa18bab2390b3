"""PyTorch's default initialisation for linear and 1x1 convolution layers."""

from __future__ import annotations

import math

import keras


def fan_in_uniform(fan_in: int) -> keras.initializers.Initializer:
    """Returns U(-1/sqrt(fan_in), 1/sqrt(fan_in)), PyTorch's default for weights and biases.

    Used where keras-l2t follows the reference implementation's initial values.
    """
    limit = 1.0 / math.sqrt(fan_in)
    return keras.initializers.RandomUniform(-limit, limit)
