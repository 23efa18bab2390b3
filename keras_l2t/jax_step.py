"""One L2T-ww training iteration on JAX: Keras' stateless train step, compiled whole.

Keras' JAX trainer calls `train_step(state, data)` with the values of every variable
and expects the new values back (`jax_state.MetaOptimizerInJaxState` adds the
meta-optimizer's variables to the optimizer's). The model's own methods read and write
variables as usual; a `keras.StatelessScope` maps each variable to its value in the
state, so they run unchanged on traced values. The blocks of the authors' iteration:

1. real step: `jax.value_and_grad` of L_org + L_wfm in theta (phi held fixed), then
   `optimizer.stateless_apply`; the batch-norm statistics come back from the scope;
2. lookahead: T steps on L_wfm, then one on L_org, each `jax.grad` in theta followed by
   the optimizer's pure update rule;
3. meta step: `jax.value_and_grad` of L_org(theta_{T+1}) in phi (second order, exact:
   Keras' JAX BatchNormalization keeps every gradient), then
   `meta_optimizer.stateless_apply`;
4. roll back: nothing to undo, the lookahead only produced values.

Under `keras.distribution.DataParallel` the compiled step sees the global batch, and
XLA inserts the cross-device reductions, so one step equals the single-device step.
"""

from __future__ import annotations

import weakref

import jax
import keras
from keras import ops


class _Values:
    """The value of every variable of the step; `scope()` maps them for Keras code."""

    def __init__(self):
        self._pairs: dict[int, tuple] = {}

    def set(self, variables, values) -> None:
        for variable, value in zip(variables, values, strict=True):
            self._pairs[id(variable)] = (variable, value)

    def get(self, variables) -> list:
        return [self._pairs[id(v)][1] for v in variables]

    def scope(self, variables=(), values=()) -> keras.StatelessScope:
        """A scope where every variable reads its value, `variables` read `values`."""
        pairs = dict(self._pairs)
        pairs.update((id(k), (k, v)) for k, v in zip(variables, values, strict=True))
        return keras.StatelessScope(state_mapping=list(pairs.values()))


def train_step(model, state, data):
    """`TransferModel.train_step` on JAX: `(state, data) -> (logs, new state)`."""
    from keras_l2t.transfer_model import unpack

    trainable, non_trainable, optimizer_values, metrics_values = state
    x, y = unpack(data)
    optimizer_variables = list(model.optimizer.variables)
    meta_optimizer_variables = list(model.meta_optimizer.variables)
    values = _Values()
    values.set(model.trainable_variables, trainable)
    values.set(model.non_trainable_variables, non_trainable)
    values.set(optimizer_variables + meta_optimizer_variables, optimizer_values)
    values.set(model.metrics_variables, metrics_values)

    batch = ops.cast(ops.shape(x)[0], model.loss_dtype)  # global under DataParallel
    with values.scope():
        source = model.source_forward(x)  # the only source forward of this batch
        learning_rate = ops.convert_to_tensor(model.optimizer.learning_rate)  # before
        channel_weights, pair_weights = model.pair_weights(source)
    fixed = (
        [ops.stop_gradient(w) for w in channel_weights],
        [ops.stop_gradient(p) for p in pair_weights],
    )

    # 1. Real step with phi fixed; BN statistics update inside the scope.
    theta_variables = model.theta_variables
    state_variables = model.target_non_trainable_variables

    def real_loss(theta):
        with values.scope(theta_variables, theta) as scope:
            loss, terms, logits = model.real_step_loss(x, y, source, *fixed, batch)
        new_state = [scope.get_current_value(v) for v in state_variables]
        return loss, (terms, logits, new_state)

    (_, (terms, logits, new_state)), grads = jax.value_and_grad(real_loss, has_aux=True)(
        values.get(theta_variables)
    )
    theta, new_optimizer_values = model.optimizer.stateless_apply(
        values.get(optimizer_variables), grads, values.get(theta_variables)
    )
    values.set(theta_variables, theta)
    values.set(state_variables, new_state)
    values.set(optimizer_variables, new_optimizer_values)

    meta_loss = None
    if model.method.meta_learned:
        meta_loss, meta_grads = _meta_gradient(model, values, x, y, source, learning_rate,
                                               batch)
        phi_variables = model.phi_variables
        phi = values.get(phi_variables)
        meta_grads = [g + model.meta_weight_decay * p for g, p in zip(meta_grads, phi)]
        phi, new_meta_values = model.meta_optimizer.stateless_apply(
            values.get(meta_optimizer_variables), meta_grads, phi
        )
        values.set(phi_variables, phi)
        values.set(meta_optimizer_variables, new_meta_values)

    with values.scope() as scope:
        logs = model.record_step(x, y, terms, logits, channel_weights, pair_weights,
                                 meta_loss)
    values.set(model.metrics_variables,
               [scope.get_current_value(v) for v in model.metrics_variables])
    new_state = (
        values.get(model.trainable_variables),
        values.get(model.non_trainable_variables),
        values.get(optimizer_variables + meta_optimizer_variables),
        values.get(model.metrics_variables),
    )
    return logs, new_state


def test_step(model, state, data):
    """`TransferModel.test_step` on JAX: `(state, data) -> (logs, new state)`."""
    trainable, non_trainable, metrics_values = state
    values = _Values()
    values.set(model.trainable_variables, trainable)
    values.set(model.non_trainable_variables, non_trainable)
    values.set(model.metrics_variables, metrics_values)
    with values.scope() as scope:
        logs = model.record_test(data)
    metrics_values = [scope.get_current_value(v) for v in model.metrics_variables]
    return logs, (trainable, non_trainable, metrics_values)


# Compiled `meta_gradient` per model, its optimizers and `second_order`, traced on first use.
_COMPILED: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def meta_gradient(model, x, y, second_order=True):
    """`TransferModel.meta_gradient` on JAX: steps 2-3 from the variables' values,
    compiled once per model, optimizers and `second_order`."""
    variables = model.variables + model._all_optimizer_variables()
    compiled = _COMPILED.setdefault(model, {})
    key = (id(model.optimizer), id(model.meta_optimizer), second_order)
    if key not in compiled:

        def pure(variable_values, x, y):
            values = _Values()
            values.set(variables, variable_values)
            batch = ops.cast(ops.shape(x)[0], model.loss_dtype)
            with values.scope():
                source = model.source_forward(x)
                learning_rate = ops.convert_to_tensor(model.optimizer.learning_rate)
            return _meta_gradient(model, values, x, y, source, learning_rate, batch,
                                  second_order)

        compiled[key] = jax.jit(pure)
    return compiled[key]([v.value for v in variables], x, y)


def _meta_gradient(model, values, x, y, source, learning_rate, batch, second_order=True):
    """d L_org(theta_{T+1}) / d phi from the theta, buffers and statistics in `values`.

    `second_order=False` treats the lookahead's gradients as constants (exactly zero).

    Returns:
        (meta objective L_org(theta_{T+1}), gradients aligned with `model.phi_variables`).
    """
    theta_variables = model.theta_variables
    phi_variables = model.phi_variables
    non_trainable = values.get(model.target_non_trainable_variables)
    with values.scope():
        buffers = model.update_rule.slots(theta_variables)

    def lookahead_loss(phi):
        with values.scope(phi_variables, phi):
            weights = model.pair_weights(source)  # phi enters here
        objectives = model.lookahead_objectives(x, y, source, weights, non_trainable, batch)
        params, slots = values.get(theta_variables), buffers
        for objective in objectives:
            grads = jax.grad(objective)(params)
            if not second_order:
                grads = [jax.lax.stop_gradient(g) for g in grads]
            params, slots = model.update_rule.step(params, slots, grads, learning_rate)
        return objectives[-1](params)

    meta_loss, meta_grads = jax.value_and_grad(lookahead_loss)(values.get(phi_variables))
    return meta_loss, meta_grads
