"""One L2T-ww training iteration on TensorFlow: the only module with tapes and tf.distribute.

`train_step` runs the authors' iteration (alinlab/L2T-ww) in four numbered blocks, the
same as `_jax_step.train_step`: 1. real step, 2. lookahead, 3. meta-gradient, 4. meta
step. The lookahead replays the optimizer's update rule on tensors, never on the
variables, so nothing is rolled back afterwards: its batch-norm statistics are dropped
and the momentums were only read. The meta-gradient is exact (nested tapes, second
order).

Under `tf.distribute`, every loss is a sum over the replica's examples divided by the
global batch size, the optimizers sum the replicas' gradients, and the lookahead's
gradients are all-reduced so each replica takes the step one device would take. The
all-reduce's gradient is an all-reduce too, so the meta-gradient summed over replicas
is the single-device one.
"""

from __future__ import annotations

import tensorflow as tf

from keras_l2t._steps import unpack_training


def sum_across_replicas(values):
    """Sums `values` (a tensor or a list of tensors) over the replicas, differentiably."""
    context = tf.distribute.get_replica_context()
    if context is None or context.num_replicas_in_sync == 1:
        return values
    return context.all_reduce(tf.distribute.ReduceOp.SUM, values)


def global_batch_size(x, dtype) -> tf.Tensor:
    """The number of examples in this step over all replicas, as a `dtype` scalar."""
    return sum_across_replicas(tf.cast(tf.shape(x)[0], dtype))


def train_step(model, data) -> dict:
    """Runs one iteration of `model` (a `TransferModel`) on one batch; returns the logs."""
    x, y, x_meta, y_meta = unpack_training(data, model.meta_objective == "held_out")
    batch = global_batch_size(x, model._loss_dtype)
    source = model._source_outputs(x)  # the only source forward of this batch
    learning_rate = tf.convert_to_tensor(model.optimizer.learning_rate)  # alpha, before 1.
    iteration = tf.convert_to_tensor(model.optimizer.iterations)  # before 1.
    betas = model._betas(iteration)  # the loss weights (scheduled or not) of this iteration
    channel_weights, pair_weights = model._transfer_weights(source)
    fixed = (
        [tf.stop_gradient(w) for w in channel_weights],
        [tf.stop_gradient(p) for p in pair_weights],
    )

    # 1. Real step, phi fixed: L_total = L_org + beta * L_wfm (+ the method's other terms),
    #    theta_{t+1} = theta_t - alpha * dL_total/dtheta; the BN statistics update here.
    theta = model._theta_variables
    gated = model.transfer_gate != "none"
    with tf.GradientTape(persistent=gated) as tape:
        loss, terms, logits = model._real_step_loss(x, y, source, *fixed, betas, batch)
        parts = model._task_and_transfer(terms, batch) if gated else None
    gate = None
    if not gated:
        grads = tape.gradient(loss, theta)
    else:  # the transfer's part of the step only where it lowers L_org (first order)
        grads, gate = _gated_real_step_gradients(model, tape, parts, batch, x, x_meta, y_meta)
    del tape
    model.optimizer.apply(grads, theta)

    def meta_step():
        # 2. Lookahead and 3. meta-gradient, from theta_{t+1}.
        meta = _meta_batch(model, x, x_meta, y_meta, batch)
        meta_loss, meta_grads = _meta_gradient(model, x, y, source, learning_rate, betas,
                                               batch, meta)
        # 4. Meta step: phi <- phi - eta * (dL_org(theta_{T+1})/dphi + wd * phi), through
        #    the meta-optimizer (which sums the replicas' gradients: each adds its share).
        decay = model.meta_weight_decay / tf.distribute.get_strategy().num_replicas_in_sync
        phi = model._phi_variables
        meta_grads = [g + decay * tf.convert_to_tensor(v) for g, v in zip(meta_grads, phi)]
        model.meta_optimizer.apply(meta_grads, phi)
        return sum_across_replicas(meta_loss)  # the global batch's value, to report

    meta_loss, meta_taken = None, None
    if model.method.meta_learned and model.meta_every == 1:
        meta_loss = meta_step()
    elif model.method.meta_learned:  # only every meta_every-th iteration: one graph, a cond
        if tf.distribute.get_strategy().num_replicas_in_sync > 1:
            # The lookahead's cross-replica sums cannot sit inside tf.cond in a replica
            # context (TensorFlow: "merge_call called while defining a new graph").
            raise ValueError(
                f"meta_every={model.meta_every} does not run under a multi-replica "
                "tf.distribute strategy (its cross-replica sums cannot sit in a tf.cond); "
                "use meta_every=1, one device, or JAX's keras.distribution.DataParallel.")
        taken = tf.equal(tf.math.floormod(iteration, model.meta_every), 0)
        meta_loss = tf.cond(taken, meta_step, lambda: tf.zeros([], model._loss_dtype))
        meta_taken = tf.cast(taken, model._loss_dtype)
    return model._record_step(x, y, terms, logits, channel_weights, pair_weights, meta_loss,
                              meta_taken, gate)


def _gated_real_step_gradients(model, tape, parts, batch, x, x_meta, y_meta) -> tuple:
    """The real step's gradients under `transfer_gate="aligned"`, and (cosine, open);
    updates the averaged alignment a_t, if any.

    `parts` are the real step's (task, transfer) losses, recorded on `tape`. The gate
    compares global gradients: the replicas' shares are summed for it, and every
    replica then applies its own share, gated alike."""
    theta = model._theta_variables
    task, transfer = (_zero_filled(tape.gradient(loss, theta), theta) for loss in parts)
    if x_meta is x:  # the paper's meta batch: the real step's own
        reference = task
    else:  # L_org's gradient on the held-out batch, at theta_t
        params = [tf.convert_to_tensor(v) for v in theta]
        non_trainable = [tf.convert_to_tensor(v) for v in model._target_non_trainable_variables]
        with tf.GradientTape() as meta_tape:
            meta_tape.watch(params)
            meta_loss = model._classification_objective(
                params, x_meta, y_meta, non_trainable, global_batch_size(x_meta, batch.dtype))
        reference = meta_tape.gradient(meta_loss, params,
                                       unconnected_gradients=tf.UnconnectedGradients.ZERO)
    reference = sum_across_replicas(list(reference))
    averaged = model._transfer_alignment  # a_{t-1}, with transfer_gate_momentum > 0
    previous = 0.0 if averaged is None else tf.convert_to_tensor(averaged)
    grads, cosine, taken, alignment = model._gated_gradients(
        task, transfer, reference, sum_across_replicas(transfer), previous)
    if averaged is not None:
        averaged.assign(alignment)  # the same global value on every replica
    return grads, (cosine, taken)


def _zero_filled(gradients, variables) -> list:
    """`gradients` with zeros for the variables a loss does not reach (TF's
    UnconnectedGradients.ZERO fails on Keras variables)."""
    return [tf.zeros(v.shape, v.dtype) if g is None else g for g, v in zip(gradients, variables)]


def build_metrics(model, x, y) -> None:
    """Builds the compiled metrics on one batch, under the model's strategy."""
    with model.distribute_strategy.scope():
        model.compute_metrics(x, y, model(x), sample_weight=None)
    model.reset_metrics()


def test_step(model, data) -> dict:
    """`TransferModel.test_step` on TensorFlow."""
    return model._record_test(data)


def meta_gradient(model, x, y, x_meta, y_meta, second_order=True):
    """`TransferModel.meta_gradient` on TensorFlow: blocks 2-3 from the current state."""
    batch = global_batch_size(x, model._loss_dtype)
    learning_rate = tf.convert_to_tensor(model.optimizer.learning_rate)
    meta = _meta_batch(model, x, x_meta, y_meta, batch)
    return _meta_gradient(model, x, y, model._source_outputs(x), learning_rate,
                          model._betas(), batch, meta, second_order)


def _meta_batch(model, x, x_meta, y_meta, batch) -> tuple:
    """(x_meta, y_meta, its global size): the batch L_org(theta_{T+1}) is computed on."""
    size = batch if x_meta is x else global_batch_size(x_meta, model._loss_dtype)
    return x_meta, y_meta, size


def _meta_gradient(model, x, y, source, learning_rate, betas, batch, meta,
                   second_order=True):
    """Blocks 2-3: d L_org(theta_{T+1}) / d phi from the current theta and momentums.

    The lookahead trains on (x, y); L_org(theta_{T+1}) is computed on `meta`, the
    training batch itself (the paper) or a held-out one.

    `second_order=False` drops the inner gradients' dependence on phi, which makes the
    result exactly zero (kept to show why the exact second-order gradient is needed).

    Returns:
        (meta objective L_org(theta_{T+1}), gradients aligned with `model._phi_variables`).
    """
    phi = model._phi_variables
    params = [tf.convert_to_tensor(v) for v in model._theta_variables]
    momentums = model._update_rule.momentums()
    non_trainable = [tf.convert_to_tensor(v) for v in model._target_non_trainable_variables]
    with tf.GradientTape() as meta_tape:
        weights = model._transfer_weights(source)  # phi enters here, once
        objectives = model._lookahead_objectives(x, y, source, weights, betas, non_trainable,
                                                 batch)
        # 2. Lookahead, on tensors, from theta_0 = theta_{t+1}: for k = 0..T,
        #    theta_{k+1} = theta_k - alpha * dL_k(theta_k)/dtheta with L_k = L_wfm for
        #    k < T and L_org for k = T, each step the optimizer's own update.
        for objective in objectives:
            with tf.GradientTape() as tape:
                tape.watch(params)
                loss = objective(params)
            grads = tape.gradient(loss, params,
                                  unconnected_gradients=tf.UnconnectedGradients.ZERO)
            grads = sum_across_replicas(list(grads))
            if not second_order:
                grads = [tf.stop_gradient(g) for g in grads]
            params, momentums = model._update_rule.step(params, momentums, grads,
                                                        learning_rate)
        meta_loss = model._classification_objective(params, *meta[:2], non_trainable,
                                                    meta[2])  # L_org(theta_{T+1})
    # 3. Meta-gradient d L_org(theta_{T+1}) / d phi, through every lookahead step.
    return meta_loss, _zero_filled(meta_tape.gradient(meta_loss, phi), phi)
