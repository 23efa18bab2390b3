"""The 1x1 adapter r^{m,n} that maps a target feature map onto source channels."""

from __future__ import annotations

import itertools
from collections.abc import Sequence

import keras
from keras import ops

from keras_l2t.layers.fan_in_uniform import fan_in_uniform


@keras.saving.register_keras_serializable(package="keras_l2t")
class FeatureAdapter(keras.layers.Layer):
    """1x1 convolution with bias from the target's channels to the source's channels.

    It is part of the target's parameters theta (trained with it, with weight decay).
    Kernel and bias start like PyTorch's default for a 1x1 `Conv2d`,
    U(-1/sqrt(C_target), 1/sqrt(C_target)), as in the reference implementation.

    Args:
        channels: Number of output channels (the source layer's channels).
        **kwargs: Standard `keras.layers.Layer` arguments.

    Call args:
        target_map: (batch, height, width, C_target) target feature map T^n(x).

    Returns:
        (batch, height, width, channels).

    Example:
        >>> import keras
        >>> from keras_l2t.layers import FeatureAdapter
        >>> tuple(FeatureAdapter(16)(keras.ops.ones((2, 4, 4, 8))).shape)
        (2, 4, 4, 16)
    """

    def __init__(self, channels: int, **kwargs):
        super().__init__(**kwargs)
        self.channels = channels

    def build(self, input_shape):
        in_channels = input_shape[-1]
        self.kernel = self.add_weight(
            name="kernel",
            shape=(in_channels, self.channels),
            initializer=fan_in_uniform(in_channels),
        )
        self.bias = self.add_weight(
            name="bias", shape=(self.channels,), initializer=fan_in_uniform(in_channels)
        )

    def call(self, target_map):
        return ops.matmul(target_map, self.kernel) + self.bias

    def compute_output_shape(self, input_shape):
        return (*input_shape[:-1], self.channels)

    @staticmethod
    def call_stacked(target_map, kernels: Sequence, biases: Sequence) -> list:
        """`[target_map @ kernel + bias for each adapter]`, as one matrix product.

        The adapters of the pairs that share a target layer read the same target map;
        stacking their kernels gives the same numbers from fewer, larger kernels.

        Args:
            target_map: (batch, height, width, C_target) target feature map.
            kernels: Each adapter's (C_target, channels) kernel (variable or value).
            biases: Each adapter's (channels,) bias.

        Returns:
            One (batch, height, width, channels) map per adapter.
        """
        if len(kernels) == 1:
            return [ops.matmul(target_map, kernels[0]) + biases[0]]
        adapted = (ops.matmul(target_map, ops.concatenate(kernels, axis=1))
                   + ops.concatenate(biases, axis=0))
        ends = list(itertools.accumulate(kernel.shape[-1] for kernel in kernels))
        return ops.split(adapted, ends[:-1], axis=-1)

    def get_config(self):
        return {**super().get_config(), "channels": self.channels}
