"""One L2T-ww training iteration on JAX: Keras' stateless train step, compiled whole.

Keras' JAX trainer calls `train_step(state, data)` with the values of every variable
and expects the new values back (`_jax_state.MetaOptimizerInJaxState` adds the
meta-optimizer's variables to the optimizer's). The model's own methods read and write
variables as usual; a `keras.StatelessScope` maps each variable to its value in the
state, so they run unchanged on traced values.

`train_step` runs the authors' iteration in four numbered blocks, the same as
`_tensorflow_step.train_step`: 1. real step, 2. lookahead, 3. meta-gradient, 4. meta
step. The lookahead only produces values, so nothing is rolled back afterwards. The
meta-gradient is exact: `jax.grad` through the lookahead, and Keras' JAX
BatchNormalization keeps every second-order term.

Under `keras.distribution.DataParallel` the compiled step sees the global batch, and
XLA inserts the cross-device reductions, so one step equals the single-device step.
"""

from __future__ import annotations

import weakref

import jax
import keras
from keras import ops

from keras_l2t._steps import unpack_training


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
    trainable, non_trainable, optimizer_values, metrics_values = state
    x, y, x_meta, y_meta = unpack_training(data, model.meta_objective == "held_out")
    optimizer_variables = list(model.optimizer.variables)
    meta_optimizer_variables = list(model.meta_optimizer.variables)
    values = _Values()
    values.set(model.trainable_variables, trainable)
    values.set(model.non_trainable_variables, non_trainable)
    values.set(optimizer_variables + meta_optimizer_variables, optimizer_values)
    values.set(model.metrics_variables, metrics_values)

    batch = ops.cast(ops.shape(x)[0], model._loss_dtype)  # global under DataParallel
    with values.scope():
        source = model._source_outputs(x)  # the only source forward of this batch
        learning_rate = ops.convert_to_tensor(model.optimizer.learning_rate)  # alpha
        channel_weights, pair_weights = model._transfer_weights(source)
    iteration = values.get([model.optimizer.iterations])[0]  # before 1.
    betas = model._betas(iteration)  # the loss weights (scheduled or not) of this iteration
    fixed = (
        [ops.stop_gradient(w) for w in channel_weights],
        [ops.stop_gradient(p) for p in pair_weights],
    )

    # 1. Real step, phi fixed: L_total = L_org + beta * L_wfm (+ the method's other terms),
    #    theta_{t+1} = theta_t - alpha * dL_total/dtheta; the BN statistics come back
    #    from the scope.
    theta_variables = model._theta_variables
    state_variables = model._target_non_trainable_variables

    def real_loss(theta):
        with values.scope(theta_variables, theta) as scope:
            loss, terms, logits = model._real_step_loss(x, y, source, *fixed, betas, batch)
        new_state = [scope.get_current_value(v) for v in state_variables]
        return loss, (terms, logits, new_state)

    gate = None
    if model.transfer_gate == "none":
        (_, (terms, logits, new_state)), grads = jax.value_and_grad(real_loss, has_aux=True)(
            values.get(theta_variables))
    else:  # the transfer's part of the step only where it lowers L_org (first order)
        grads, gate, (terms, logits, new_state) = _gated_real_step_gradients(
            model, values, real_loss, batch, x, x_meta, y_meta)
    theta, new_optimizer_values = model.optimizer.stateless_apply(
        values.get(optimizer_variables), grads, values.get(theta_variables)
    )
    values.set(theta_variables, theta)
    values.set(state_variables, new_state)
    values.set(optimizer_variables, new_optimizer_values)

    phi_variables = model._phi_variables

    def meta_step(phi, meta_optimizer_values):
        # 2. Lookahead and 3. meta-gradient, from theta_{t+1}.
        meta = _meta_batch(model, x, x_meta, y_meta, batch)
        meta_loss, meta_grads = _meta_gradient(model, values, x, y, source, learning_rate,
                                               betas, batch, meta)
        # 4. Meta step: phi <- phi - eta * (dL_org(theta_{T+1})/dphi + wd * phi), through
        #    the meta-optimizer.
        meta_grads = [g + model.meta_weight_decay * p for g, p in zip(meta_grads, phi)]
        phi, meta_optimizer_values = model.meta_optimizer.stateless_apply(
            meta_optimizer_values, meta_grads, phi)
        return phi, meta_optimizer_values, ops.cast(meta_loss, model._loss_dtype)

    def no_meta_step(phi, meta_optimizer_values):
        return phi, meta_optimizer_values, ops.zeros((), model._loss_dtype)

    meta_loss, meta_taken = None, None
    if model.method.meta_learned:
        state = (values.get(phi_variables), values.get(meta_optimizer_variables))
        if model.meta_every == 1:
            phi, new_meta_values, meta_loss = meta_step(*state)
        else:  # only every meta_every-th iteration: one compiled step, a cond
            taken = iteration % model.meta_every == 0
            phi, new_meta_values, meta_loss = jax.lax.cond(taken, meta_step, no_meta_step,
                                                           *state)
            meta_taken = ops.cast(taken, model._loss_dtype)
        values.set(phi_variables, phi)
        values.set(meta_optimizer_variables, new_meta_values)

    with values.scope() as scope:
        logs = model._record_step(x, y, terms, logits, channel_weights, pair_weights,
                                 meta_loss, meta_taken, gate)
    values.set(model.metrics_variables,
               [scope.get_current_value(v) for v in model.metrics_variables])
    new_state = (
        values.get(model.trainable_variables),
        values.get(model.non_trainable_variables),
        values.get(optimizer_variables + meta_optimizer_variables),
        values.get(model.metrics_variables),
    )
    return logs, new_state


def _gated_real_step_gradients(model, values, real_loss, batch, x, x_meta, y_meta):
    """The real step's gradients under `transfer_gate="aligned"`, (cosine, open), and
    `real_loss`'s auxiliary outputs: one forward, a backward per loss part. Sets the
    averaged alignment a_t in `values`, if any."""

    def task_and_transfer(theta):
        _, (terms, logits, new_state) = real_loss(theta)
        return model._task_and_transfer(terms, batch), (terms, logits, new_state)

    theta = values.get(model._theta_variables)
    losses, pullback, aux = jax.vjp(task_and_transfer, theta, has_aux=True)
    task, transfer = (
        pullback(tuple(ops.ones_like(v) if i == part else ops.zeros_like(v)
                       for i, v in enumerate(losses)))[0]
        for part in (0, 1))
    if x_meta is x:  # the paper's meta batch: the real step's own
        reference = task
    else:  # L_org's gradient on the held-out batch, at theta_t
        non_trainable = values.get(model._target_non_trainable_variables)
        size = ops.cast(ops.shape(x_meta)[0], model._loss_dtype)
        reference = jax.grad(model._classification_objective)(
            theta, x_meta, y_meta, non_trainable, size)
    averaged = model._transfer_alignment  # a_{t-1}, with transfer_gate_momentum > 0
    previous = 0.0 if averaged is None else values.get([averaged])[0]
    grads, cosine, taken, alignment = model._gated_gradients(task, transfer, reference,
                                                             previous=previous)
    if averaged is not None:
        values.set([averaged], [alignment])
    return grads, (cosine, taken), aux


def build_metrics(model, x, y) -> None:
    """Builds the compiled metrics on one batch."""
    model.compute_metrics(x, y, model(x), sample_weight=None)
    model.reset_metrics()


def test_step(model, state, data):
    """`TransferModel.test_step` on JAX: `(state, data) -> (logs, new state)`."""
    trainable, non_trainable, metrics_values = state
    values = _Values()
    values.set(model.trainable_variables, trainable)
    values.set(model.non_trainable_variables, non_trainable)
    values.set(model.metrics_variables, metrics_values)
    with values.scope() as scope:
        logs = model._record_test(data)
    metrics_values = [scope.get_current_value(v) for v in model.metrics_variables]
    return logs, (trainable, non_trainable, metrics_values)


# Compiled `meta_gradient` per model, its optimizers and `second_order`, traced on first use.
_COMPILED: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def meta_gradient(model, x, y, x_meta, y_meta, second_order=True):
    """`TransferModel.meta_gradient` on JAX: blocks 2-3 from the variables' values,
    compiled once per model, optimizers and `second_order`."""
    variables = model.variables + model._all_optimizer_variables()
    compiled = _COMPILED.setdefault(model, {})
    key = (id(model.optimizer), id(model.meta_optimizer), second_order)
    if key not in compiled:

        def pure(variable_values, x, y, x_meta, y_meta):
            values = _Values()
            values.set(variables, variable_values)
            batch = ops.cast(ops.shape(x)[0], model._loss_dtype)
            with values.scope():
                source = model._source_outputs(x)
                learning_rate = ops.convert_to_tensor(model.optimizer.learning_rate)
            betas = model._betas(values.get([model.optimizer.iterations])[0])
            meta = _meta_batch(model, x, x_meta, y_meta, batch)
            return _meta_gradient(model, values, x, y, source, learning_rate, betas, batch,
                                  meta, second_order)

        compiled[key] = jax.jit(pure)
    return compiled[key]([v.value for v in variables], x, y, x_meta, y_meta)


def _meta_batch(model, x, x_meta, y_meta, batch) -> tuple:
    """(x_meta, y_meta, its size): the batch L_org(theta_{T+1}) is computed on."""
    size = batch if x_meta is x else ops.cast(ops.shape(x_meta)[0], model._loss_dtype)
    return x_meta, y_meta, size


def _meta_gradient(model, values, x, y, source, learning_rate, betas, batch, meta,
                   second_order=True):
    """Blocks 2-3: d L_org(theta_{T+1}) / d phi from the theta, momentums and statistics in
    `values`. The lookahead trains on (x, y); L_org(theta_{T+1}) is computed on `meta`,
    the training batch itself (the paper) or a held-out one.

    `second_order=False` treats the lookahead's gradients as constants (exactly zero).

    Returns:
        (meta objective L_org(theta_{T+1}), gradients aligned with `model._phi_variables`).
    """
    theta_variables = model._theta_variables
    phi_variables = model._phi_variables
    non_trainable = values.get(model._target_non_trainable_variables)
    with values.scope():
        start_momentums = model._update_rule.momentums()

    def lookahead_loss(phi):
        with values.scope(phi_variables, phi):
            weights = model._transfer_weights(source)  # phi enters here, once
        objectives = model._lookahead_objectives(x, y, source, weights, betas, non_trainable,
                                                 batch)
        # 2. Lookahead, on values, from theta_0 = theta_{t+1}: for k = 0..T,
        #    theta_{k+1} = theta_k - alpha * dL_k(theta_k)/dtheta with L_k = L_wfm for
        #    k < T and L_org for k = T, each step the optimizer's own update.
        params, momentums = values.get(theta_variables), start_momentums
        for objective in objectives:
            grads = jax.grad(objective)(params)
            if not second_order:
                grads = [jax.lax.stop_gradient(g) for g in grads]
            params, momentums = model._update_rule.step(params, momentums, grads,
                                                        learning_rate)
        # L_org(theta_{T+1})
        return model._classification_objective(params, *meta[:2], non_trainable, meta[2])

    # 3. Meta-gradient d L_org(theta_{T+1}) / d phi, through every lookahead step.
    meta_loss, meta_grads = jax.value_and_grad(lookahead_loss)(values.get(phi_variables))
    return meta_loss, meta_grads
