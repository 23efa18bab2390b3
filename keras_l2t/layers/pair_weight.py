"""The "where" meta-network: how much one (source layer, target layer) pair matters."""

from __future__ import annotations

from collections.abc import Sequence

import keras
from keras import ops

from keras_l2t.layers.fan_in_uniform import fan_in_uniform

PAIR_WEIGHT_ACTIVATIONS = ("relu6", "relu", "relu_avg", "constant")


@keras.saving.register_keras_serializable(package="keras_l2t")
class PairWeight(keras.layers.Layer):
    """Per-sample pair weight lambda(x) >= 0 from the pooled source feature.

    `activation` selects the reference implementation's output types:

    - "relu6" (default): relu6(Dense(C -> 1)(pooled)), in [0, 6];
    - "relu": relu(Dense(C -> 1)(pooled));
    - "relu_avg": relu(Dense(C -> 1)(pooled / C));
    - "constant": softplus(10 z) with one scalar z per pair (zero at start, so
      log 2), the same for every sample.

    The bias starts at `bias_init` (1.0 in the reference, so lambda starts near 1); the
    kernel starts like PyTorch's default, U(-1/sqrt(C), 1/sqrt(C)), as in the reference.

    Args:
        activation: One of `PAIR_WEIGHT_ACTIVATIONS`.
        bias_init: Initial bias of the Dense layer (ignored for "constant").
        **kwargs: Standard `keras.layers.Layer` arguments.

    Call args:
        pooled: (batch, C) global average pool of the source feature map S^m(x).

    Returns:
        (batch,) pair weights.

    Example:
        >>> import keras
        >>> from keras_l2t.layers import PairWeight
        >>> keras.ops.convert_to_numpy(PairWeight()(keras.ops.zeros((2, 64)))).tolist()
        [1.0, 1.0]

    Reference:
        Jang et al., "Learning What and Where to Transfer", ICML 2019, Eq. (3).
    """

    def __init__(self, activation: str = "relu6", bias_init: float = 1.0, **kwargs):
        super().__init__(**kwargs)
        if activation not in PAIR_WEIGHT_ACTIVATIONS:
            raise ValueError(
                f"Unknown pair weight activation '{activation}'. "
                f"Choose one of {PAIR_WEIGHT_ACTIVATIONS}."
            )
        self.activation = activation
        self.bias_init = bias_init

    def build(self, input_shape):
        channels = input_shape[-1]
        if self.activation == "constant":
            self.logit = self.add_weight(name="logit", shape=(), initializer="zeros")
            return
        self.kernel = self.add_weight(
            name="kernel", shape=(channels, 1), initializer=fan_in_uniform(channels)
        )
        self.bias = self.add_weight(
            name="bias", shape=(1,), initializer=keras.initializers.Constant(self.bias_init)
        )

    def call(self, pooled):
        if self.activation == "constant":
            return ops.softplus(10.0 * self.logit) * ops.ones_like(pooled[:, 0])
        if self.activation == "relu_avg":
            pooled = pooled / ops.cast(ops.shape(pooled)[-1], pooled.dtype)
        z = (ops.matmul(pooled, self.kernel) + self.bias)[:, 0]
        return ops.relu6(z) if self.activation == "relu6" else ops.relu(z)

    def compute_output_shape(self, input_shape):
        return input_shape[:-1]

    @staticmethod
    def call_stacked(networks: Sequence[PairWeight], pooled) -> list:
        """`[network(pooled) for network in networks]`, as one matrix product.

        The "where" networks of the pairs that share a source layer read the same pooled
        map; stacking their kernels gives the same numbers from fewer kernels.

        Args:
            networks: Built `PairWeight`s of one activation and input size.
            pooled: (batch, C) pooled source feature.

        Returns:
            One (batch,) pair weight per network.
        """
        activation = networks[0].activation
        if len(networks) == 1 or activation == "constant":
            return [network(pooled) for network in networks]
        if activation == "relu_avg":
            pooled = pooled / ops.cast(ops.shape(pooled)[-1], pooled.dtype)
        kernel = ops.concatenate([network.kernel for network in networks], axis=1)
        bias = ops.concatenate([network.bias for network in networks], axis=0)
        z = ops.matmul(pooled, kernel) + bias
        z = ops.relu6(z) if activation == "relu6" else ops.relu(z)
        return [z[:, i] for i in range(len(networks))]

    def get_config(self):
        return {**super().get_config(), "activation": self.activation, "bias_init": self.bias_init}
