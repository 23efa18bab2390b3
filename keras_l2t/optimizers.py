"""SGD with PyTorch's semantics: momentum and weight decay coupled to the gradient."""

from __future__ import annotations

import keras
from keras import ops


def coupled_sgd_update(value, gradient, momentum_buffer, learning_rate, momentum,
                       weight_decay, nesterov=False):
    """One PyTorch-style SGD step, as a pure function (used by the optimizer and the lookahead).

    d = g + wd * p;  buf = momentum * buf + d;  p = p - lr * buf
    (Nesterov: p = p - lr * (d + momentum * buf)).

    Args:
        value: Current parameter p.
        gradient: Gradient g of the loss at p.
        momentum_buffer: Momentum buffer buf (zeros before the first step).
        learning_rate: Step size lr.
        momentum: Momentum coefficient.
        weight_decay: Coupled L2 weight decay wd.
        nesterov: Whether to use Nesterov momentum.

    Returns:
        (new value, new momentum buffer).
    """
    direction = gradient + weight_decay * value
    buffer = momentum * momentum_buffer + direction
    step = direction + momentum * buffer if nesterov else buffer
    return value - learning_rate * step, buffer


@keras.saving.register_keras_serializable(package="keras_l2t")
class CoupledSGD(keras.optimizers.Optimizer):
    """SGD with momentum and coupled L2 weight decay, as `torch.optim.SGD`.

    The L2T-ww reference trains the target with `torch.optim.SGD(lr=0.1, momentum=0.9,
    weight_decay=1e-4)`: the decay is added to the gradient before the momentum, on
    every variable (batch-norm scales and biases included). Keras' own `SGD` decays
    weights separately from the momentum; this optimizer reproduces the reference, and
    the L2T-ww lookahead replays exactly its update (`coupled_sgd_update`).

    Args:
        learning_rate: Float or `keras.optimizers.schedules.LearningRateSchedule`.
        momentum: Momentum coefficient.
        weight_decay: Coupled L2 weight decay added to every gradient.
        nesterov: Whether to use Nesterov momentum.
        name: Optimizer name.
        **kwargs: Other `keras.optimizers.Optimizer` arguments.

    Example:
        >>> schedule = keras.optimizers.schedules.CosineDecay(0.1, decay_steps=10000)
        >>> optimizer = CoupledSGD(schedule, momentum=0.9, weight_decay=1e-4)
    """

    def __init__(self, learning_rate=0.1, momentum: float = 0.9, weight_decay: float = 1e-4,
                 nesterov: bool = False, name: str = "coupled_sgd", **kwargs):
        # The base class' weight_decay is decoupled; keep it unset and decay here.
        kwargs.pop("weight_decay", None)
        super().__init__(learning_rate=learning_rate, name=name, **kwargs)
        if not 0.0 <= momentum <= 1.0:
            raise ValueError(f"momentum must be in [0, 1], got {momentum}.")
        if weight_decay < 0:
            raise ValueError(f"weight_decay must be >= 0, got {weight_decay}.")
        self.momentum = momentum
        self.coupled_weight_decay = weight_decay
        self.nesterov = nesterov

    def build(self, variables):
        if self.built:
            return
        super().build(variables)
        self.momentums = [
            self.add_variable_from_reference(variable, name="momentum") for variable in variables
        ]

    def update_step(self, gradient, variable, learning_rate):
        buffer = self.momentums[self._get_variable_index(variable)]
        new_value, new_buffer = coupled_sgd_update(
            ops.convert_to_tensor(variable),
            ops.cast(gradient, variable.dtype),
            ops.convert_to_tensor(buffer),
            ops.cast(learning_rate, variable.dtype),
            self.momentum,
            self.coupled_weight_decay,
            self.nesterov,
        )
        self.assign(buffer, new_buffer)
        self.assign(variable, new_value)

    def get_config(self):
        config = super().get_config()
        config.update(
            momentum=self.momentum,
            weight_decay=self.coupled_weight_decay,
            nesterov=self.nesterov,
        )
        return config
