"""The theta optimizer's update rule as a pure function, for the L2T-ww lookahead.

The lookahead must take exactly the step the real optimizer would take (same rule,
same momentums, same learning rate), but on tensors, so that the meta-gradient can
flow through it. `update_rule_for(optimizer, variables)` returns that function for the
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
    """A pure version of one optimizer's step on a fixed list of variables.

    Attributes:
        momentums: `momentums()` returns the optimizer's current momentums for the
            variables as tensors (zeros where the optimizer keeps none).
        step: `step(values, momentums, gradients, learning_rate)` returns the new values
            (projected by the variables' constraints, as `Optimizer.apply` does) and
            momentums, lists aligned with the variables.
    """

    momentums: Callable[[], list]
    step: Callable[[list, list, list, object], tuple[list, list]]


def update_rule_for(optimizer: keras.optimizers.Optimizer,
                    variables: Sequence[keras.Variable]) -> UpdateRule:
    """Returns the pure update rule of `optimizer` for `variables`.

    Args:
        optimizer: The optimizer of the target network (theta).
        variables: The variables it updates, in the order the optimizer is built on
            them (its `momentums` are read by position).

    Returns:
        An `UpdateRule`.

    Raises:
        ValueError: for an optimizer whose update the lookahead cannot replicate.
    """
    _reject_unreplicable_options(optimizer)
    if isinstance(optimizer, CoupledSGD):
        rule = _coupled_sgd_rule(optimizer, variables)
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

    def step(values, momentums, gradients, learning_rate):
        values, momentums = rule.step(values, momentums, gradients, learning_rate)
        return [c(v) if c is not None else v for c, v in zip(constraints, values)], momentums

    return UpdateRule(momentums=rule.momentums, step=step)


def _coupled_sgd_rule(optimizer: CoupledSGD, variables: Sequence[keras.Variable]) -> UpdateRule:
    def step(values, momentums, gradients, learning_rate):
        new = [
            coupled_sgd_update(v, g, m, ops.cast(learning_rate, v.dtype), optimizer.momentum,
                               optimizer.coupled_weight_decay, optimizer.nesterov)
            for v, g, m in zip(values, gradients, momentums)
        ]
        return [v for v, _ in new], [m for _, m in new]

    return UpdateRule(momentums=lambda: _momentums(optimizer, variables), step=step)


def _keras_sgd_rule(optimizer: keras.optimizers.SGD,
                    variables: Sequence[keras.Variable]) -> UpdateRule:
    # Keras applies decoupled weight decay first (p -= p * wd * lr), then
    # m = momentum * m - lr * g; p += m (Nesterov: p += momentum * m - lr * g).
    decays = [
        optimizer.weight_decay is not None and optimizer._use_weight_decay(v) for v in variables
    ]

    def step(values, momentums, gradients, learning_rate):
        new_values, new_momentums = [], []
        for value, gradient, m, decay in zip(values, gradients, momentums, decays):
            # Keras casts its hyper-parameters to the variable's dtype (through float32).
            lr = ops.cast(learning_rate, value.dtype)
            if decay:
                value = value - value * ops.cast(optimizer.weight_decay, value.dtype) * lr
            if optimizer.momentum == 0:
                new_values.append(value - lr * gradient)
                new_momentums.append(m)
                continue
            momentum = ops.cast(optimizer.momentum, value.dtype)
            m = momentum * m - lr * gradient
            update = momentum * m - lr * gradient if optimizer.nesterov else m
            new_values.append(value + update)
            new_momentums.append(m)
        return new_values, new_momentums

    return UpdateRule(momentums=lambda: _momentums(optimizer, variables), step=step)


def _momentums(optimizer, variables: Sequence[keras.Variable]) -> list:
    """The optimizer's momentums for `variables`, the list it was built on (`compile`
    builds it on exactly these), so its i-th momentum belongs to the i-th variable."""
    momentums = getattr(optimizer, "momentums", None)
    if not momentums:
        return [ops.zeros(v.shape, v.dtype) for v in variables]
    shapes = [tuple(v.shape) for v in variables]
    if [tuple(m.shape) for m in momentums] != shapes:
        raise ValueError(
            f"The optimizer '{optimizer.name}' was built on {len(momentums)} other "
            f"variables, not on the model's {len(shapes)} trained ones: give compile() "
            "a new optimizer, not one already used on another model."
        )
    return [ops.convert_to_tensor(m) for m in momentums]


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
