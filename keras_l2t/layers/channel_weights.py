"""The "what" meta-network: which source channels matter, per sample."""

from __future__ import annotations

from collections.abc import Sequence

import keras
from keras import ops


@keras.saving.register_keras_serializable(package="keras_l2t")
class ChannelWeights(keras.layers.Layer):
    """Per-sample channel weights w(x) = softmax(Dense(C -> C)(pooled source feature)).

    The kernel and bias start at zero, so at initialisation every channel gets exactly
    1/C: L2T-ww starts from plain feature matching with uniform channel weights.

    Args:
        **kwargs: Standard `keras.layers.Layer` arguments (name, dtype, ...).

    Call args:
        pooled: (batch, C) global average pool of the source feature map S^m(x).

    Returns:
        (batch, C) non-negative weights that sum to one over channels.

    Example:
        >>> import keras
        >>> from keras_l2t.layers import ChannelWeights
        >>> w = ChannelWeights()(keras.ops.ones((2, 64)))
        >>> keras.ops.convert_to_numpy(w)[0, :2].tolist()  # zero-initialised: uniform
        [0.015625, 0.015625]

    Reference:
        Jang et al., "Learning What and Where to Transfer", ICML 2019, Eq. (2).
    """

    def build(self, input_shape):
        channels = input_shape[-1]
        self.kernel = self.add_weight(
            name="kernel", shape=(channels, channels), initializer="zeros"
        )
        self.bias = self.add_weight(name="bias", shape=(channels,), initializer="zeros")

    def call(self, pooled):
        return ops.softmax(ops.matmul(pooled, self.kernel) + self.bias, axis=-1)

    def compute_output_shape(self, input_shape):
        return input_shape

    @staticmethod
    def call_stacked(networks: Sequence[ChannelWeights], pooled) -> list:
        """`[network(pooled) for network in networks]`, as one matrix product.

        The "what" networks of the pairs that share a source layer read the same pooled
        map; stacking their kernels gives the same numbers from fewer, larger kernels.

        Args:
            networks: Built `ChannelWeights` of one input size C.
            pooled: (batch, C) pooled source feature.

        Returns:
            One (batch, C) weight tensor per network.
        """
        if len(networks) == 1:
            return [networks[0](pooled)]
        kernel = ops.concatenate([network.kernel for network in networks], axis=1)
        bias = ops.concatenate([network.bias for network in networks], axis=0)
        logits = ops.reshape(ops.matmul(pooled, kernel) + bias,
                             (-1, len(networks), pooled.shape[-1]))
        weights = ops.softmax(logits, axis=-1)
        return [weights[:, i] for i in range(len(networks))]
