"""The theta optimizer's update rule as a pure function, for the L2T-ww lookahead.

The lookahead must take exactly the step the real optimizer would take (same rule,
same momentum buffers, same learning rate), but on tensors, so that the meta-gradient
can flow through it. `update_rule_for(optimizer)` returns that function for the
optimizers whose rule is known, and refuses the others with a clear error.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import keras
from keras import ops

from keras_l2t.optimizers import CoupledSGD, coupled_sgd_update

SUPPORTED = "keras_l2t.optimizers.CoupledSGD (PyTorch semantics) or keras.optimizers.SGD"


@dataclass(frozen=True)
class UpdateRule:
    """A pure version of one optimizer's step.

    Attributes:
        slots: `slots(variables)` returns the optimizer's current momentum buffers for
            `variables` as tensors (zeros where the optimizer keeps none).
        step: `step(values, buffers, gradients, learning_rate)` returns the new values
            (projected by the variables' constraints, as `Optimizer.apply` does) and
            buffers, lists aligned with `variables`.
    """

    slots: Callable[[Sequence[keras.Variable]], list]
    step: Callable[[list, list, list, object], tuple[list, list]]


def update_rule_for(optimizer: keras.optimizers.Optimizer,
                    variables: Sequence[keras.Variable]) -> UpdateRule:
    """Returns the pure update rule of `optimizer` for `variables`.

    Args:
        optimizer: The optimizer of the target network (theta).
        variables: The variables it updates, in a fixed order.

    Returns:
        An `UpdateRule`.

    Raises:
        ValueError: for an optimizer whose update the lookahead cannot replicate.
    """
    _reject_unreplicable_options(optimizer)
    if isinstance(optimizer, CoupledSGD):
        rule = _coupled_sgd_rule(optimizer)
    elif type(optimizer) is keras.optimizers.SGD:
        rule = _keras_sgd_rule(optimizer, variables)
    else:
        raise ValueError(
            f"The L2T-ww lookahead replays the target optimizer's update exactly and knows "
            f"the rule of {SUPPORTED}, not {type(optimizer).__name__}. Pass one of those "
            "as `optimizer=` to compile()."
        )
    return _with_constraints(rule, variables)


def _with_constraints(rule: UpdateRule, variables: Sequence[keras.Variable]) -> UpdateRule:
    """`rule`, then each variable's constraint (a layer's `kernel_constraint`, ...), as
    `Optimizer.apply` projects the variables after its update."""
    constraints = [v.constraint for v in variables]
    if not any(constraints):
        return rule

    def step(values, buffers, gradients, learning_rate):
        values, buffers = rule.step(values, buffers, gradients, learning_rate)
        return [c(v) if c is not None else v for c, v in zip(constraints, values)], buffers

    return UpdateRule(slots=rule.slots, step=step)


def _coupled_sgd_rule(optimizer: CoupledSGD) -> UpdateRule:
    def step(values, buffers, gradients, learning_rate):
        new = [
            coupled_sgd_update(v, g, b, ops.cast(learning_rate, v.dtype), optimizer.momentum,
                               optimizer.coupled_weight_decay, optimizer.nesterov)
            for v, g, b in zip(values, gradients, buffers)
        ]
        return [v for v, _ in new], [b for _, b in new]

    return UpdateRule(slots=lambda variables: _momentum_slots(optimizer, variables), step=step)


def _keras_sgd_rule(optimizer: keras.optimizers.SGD,
                    variables: Sequence[keras.Variable]) -> UpdateRule:
    # Keras applies decoupled weight decay first (p -= p * wd * lr), then
    # m = momentum * m - lr * g; p += m (Nesterov: p += momentum * m - lr * g).
    decays = [
        optimizer.weight_decay is not None and optimizer._use_weight_decay(v) for v in variables
    ]

    def step(values, buffers, gradients, learning_rate):
        new_values, new_buffers = [], []
        for value, gradient, buffer, decay in zip(values, gradients, buffers, decays):
            # Keras casts its hyper-parameters to the variable's dtype (through float32).
            lr = ops.cast(learning_rate, value.dtype)
            if decay:
                value = value - value * ops.cast(optimizer.weight_decay, value.dtype) * lr
            if optimizer.momentum == 0:
                new_values.append(value - lr * gradient)
                new_buffers.append(buffer)
                continue
            momentum = ops.cast(optimizer.momentum, value.dtype)
            buffer = momentum * buffer - lr * gradient
            update = momentum * buffer - lr * gradient if optimizer.nesterov else buffer
            new_values.append(value + update)
            new_buffers.append(buffer)
        return new_values, new_buffers

    return UpdateRule(slots=lambda v: _momentum_slots(optimizer, v), step=step)


def _momentum_slots(optimizer, variables):
    if not getattr(optimizer, "momentums", None):
        return [ops.zeros(v.shape, v.dtype) for v in variables]
    return [
        ops.convert_to_tensor(optimizer.momentums[optimizer._get_variable_index(v)])
        for v in variables
    ]


def _reject_unreplicable_options(optimizer):
    options = {
        "clipnorm": optimizer.clipnorm,
        "clipvalue": optimizer.clipvalue,
        "global_clipnorm": optimizer.global_clipnorm,
        "gradient_accumulation_steps": optimizer.gradient_accumulation_steps,
        "use_ema": optimizer.use_ema or None,
    }
    used = {name: value for name, value in options.items() if value}
    if used:
        raise ValueError(
            f"The L2T-ww lookahead replays the target optimizer's plain update and cannot "
            f"replicate {sorted(used)}; create the optimizer without them."
        )
