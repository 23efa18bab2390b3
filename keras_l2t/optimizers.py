"""The reference's optimizers with PyTorch's semantics: coupled SGD and PyTorch's Adam."""

from __future__ import annotations

import keras
from keras import ops


def coupled_sgd_update(value, gradient, m, learning_rate, momentum,
                       weight_decay, nesterov=False):
    """One PyTorch-style SGD step, as a pure function (used by the optimizer and the lookahead).

    d = g + wd * p;  m = momentum * m + d;  p = p - lr * m
    (Nesterov: p = p - lr * (d + momentum * m)).

    Args:
        value: Current parameter p.
        gradient: Gradient g of the loss at p.
        m: The parameter's entry of `momentums` (zeros before the first step).
        learning_rate: Step size lr.
        momentum: Momentum coefficient.
        weight_decay: Coupled L2 weight decay wd.
        nesterov: Whether to use Nesterov momentum.

    Returns:
        (new value, new m).
    """
    direction = gradient + weight_decay * value
    m = momentum * m + direction
    step = direction + momentum * m if nesterov else m
    return value - learning_rate * step, m


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
        >>> import keras
        >>> from keras_l2t import CoupledSGD
        >>> schedule = keras.optimizers.schedules.CosineDecay(0.1, decay_steps=10000)
        >>> optimizer = CoupledSGD(schedule, momentum=0.9, weight_decay=1e-4)
    """

    def __init__(self, learning_rate=0.1, momentum: float = 0.9, weight_decay: float = 1e-4,
                 nesterov: bool = False, name: str = "coupled_sgd", **kwargs):
        # The base class' weight_decay (decoupled) stays unset: the update decays here.
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
        m = self.momentums[self._get_variable_index(variable)]
        new_value, new_m = coupled_sgd_update(
            ops.convert_to_tensor(variable),
            ops.cast(gradient, variable.dtype),
            ops.convert_to_tensor(m),
            ops.cast(learning_rate, variable.dtype),
            self.momentum,
            self.coupled_weight_decay,
            self.nesterov,
        )
        self.assign(m, new_m)
        self.assign(variable, new_value)

    def get_config(self):
        config = super().get_config()
        config.update(
            momentum=self.momentum,
            weight_decay=self.coupled_weight_decay,
            nesterov=self.nesterov,
        )
        return config


@keras.saving.register_keras_serializable(package="keras_l2t")
class TorchAdam(keras.optimizers.Optimizer):
    """Adam as `torch.optim.Adam`: epsilon is added after the bias correction.

    m = b1 m + (1 - b1) g;  v = b2 v + (1 - b2) g^2;
    p = p - lr (m / (1 - b1^t)) / (sqrt(v / (1 - b2^t)) + eps)

    The reference trains the meta-networks with `torch.optim.Adam(lr=1e-4)`. Keras'
    `Adam` adds its epsilon (default 1e-7) to the uncorrected sqrt(v), which is
    eps / sqrt(1 - b2^t) in PyTorch's terms: 3e-6 at the first step, 3e-7 at the 100th.
    Meta-gradients are often 1e-6 per element or smaller, so Keras' Adam would take the
    meta-networks' first hundreds of steps several times shorter than the reference.

    Args:
        learning_rate: Float or `keras.optimizers.schedules.LearningRateSchedule`.
        beta_1: Decay of the first moment.
        beta_2: Decay of the second moment.
        epsilon: Added to the bias-corrected sqrt(v), as in PyTorch (default 1e-8).
        name: Optimizer name.
        **kwargs: Other `keras.optimizers.Optimizer` arguments. `weight_decay` is
            refused: Keras would decouple it (AdamW); `TransferModel` adds its
            ``meta_weight_decay`` to the meta-gradient, as `torch.optim.Adam` does.

    Example:
        >>> from keras_l2t import TorchAdam
        >>> meta_optimizer = TorchAdam(1e-4)  # TransferModel.compile(meta_optimizer=...)
    """

    def __init__(self, learning_rate=1e-4, beta_1: float = 0.9, beta_2: float = 0.999,
                 epsilon: float = 1e-8, name: str = "torch_adam", **kwargs):
        if kwargs.get("weight_decay") is not None:
            raise ValueError(
                "TorchAdam takes no weight_decay (Keras would apply it decoupled, as "
                "AdamW). TransferModel's meta_weight_decay adds the L2 term to the "
                "meta-gradient, as torch.optim.Adam(weight_decay=...) does."
            )
        kwargs.pop("weight_decay", None)
        super().__init__(learning_rate=learning_rate, name=name, **kwargs)
        for label, beta in (("beta_1", beta_1), ("beta_2", beta_2)):
            if not 0.0 <= beta < 1.0:
                raise ValueError(f"{label} must be in [0, 1), got {beta}.")
        if epsilon <= 0:
            raise ValueError(f"epsilon must be > 0, got {epsilon}.")
        self.beta_1, self.beta_2, self.epsilon = beta_1, beta_2, epsilon

    def build(self, variables):
        if self.built:
            return
        super().build(variables)
        self.momentums, self.velocities = self.add_optimizer_variables(
            variables, ["momentum", "velocity"]
        )

    def update_step(self, gradient, variable, learning_rate):
        index = self._get_variable_index(variable)
        momentum, velocity = self.momentums[index], self.velocities[index]
        dtype = variable.dtype
        gradient = ops.cast(gradient, dtype)
        step = ops.cast(self.iterations + 1, dtype)
        beta_1 = ops.convert_to_tensor(self.beta_1, dtype)
        beta_2 = ops.convert_to_tensor(self.beta_2, dtype)
        new_momentum = beta_1 * momentum + (1.0 - beta_1) * gradient
        new_velocity = beta_2 * velocity + (1.0 - beta_2) * ops.square(gradient)
        momentum_hat = new_momentum / (1.0 - ops.power(beta_1, step))
        velocity_hat = new_velocity / (1.0 - ops.power(beta_2, step))
        update = momentum_hat / (ops.sqrt(velocity_hat) + self.epsilon)
        self.assign(momentum, new_momentum)
        self.assign(velocity, new_velocity)
        self.assign_sub(variable, ops.cast(learning_rate, dtype) * update)

    def get_config(self):
        config = super().get_config()
        config.update(beta_1=self.beta_1, beta_2=self.beta_2, epsilon=self.epsilon)
        return config
