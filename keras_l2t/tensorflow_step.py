"""One L2T-ww training iteration on TensorFlow: the only module with tapes and tf.distribute.

Each block maps to a step of the authors' training iteration (alinlab/L2T-ww):

1. real step: theta <- optimizer step on L_org + L_wfm, phi held fixed;
2. lookahead: from the new theta, T steps on L_wfm, then one on L_org, each replaying
   the optimizer's update rule on tensors (never on the variables);
3. meta step: phi <- meta-optimizer step on d L_org(theta_{T+1}) / d phi, computed
   exactly by differentiating through the lookahead (nested tapes, second order);
4. roll back: nothing to undo, because the lookahead never wrote to a variable; its
   batch-norm statistics are dropped and the momentum buffers were only read.

Under `tf.distribute`, every loss is a sum over the replica's examples divided by the
global batch size, the optimizers sum the replicas' gradients, and the lookahead's
gradients are all-reduced so each replica takes the step one device would take. The
all-reduce's gradient is an all-reduce too, so the meta-gradient summed over replicas
is the single-device one.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import tensorflow as tf


def sum_across_replicas(values):
    """Sums `values` (a tensor or a list of tensors) over the replicas, differentiably."""
    context = tf.distribute.get_replica_context()
    if context is None or context.num_replicas_in_sync == 1:
        return values
    return context.all_reduce(tf.distribute.ReduceOp.SUM, values)


def global_batch_size(x, dtype) -> tf.Tensor:
    """The number of examples in this step over all replicas, as a `dtype` scalar."""
    return sum_across_replicas(tf.cast(tf.shape(x)[0], dtype))


def gradients(loss_fn: Callable[[], tf.Tensor], sources: Sequence):
    """Returns (loss, d loss / d sources), zeros where `sources` do not reach the loss."""
    with tf.GradientTape() as tape:
        tape.watch(sources)
        loss = loss_fn()
    return loss, tape.gradient(loss, sources, unconnected_gradients=tf.UnconnectedGradients.ZERO)


def unrolled_meta_gradient(
    params: list,
    buffers: list,
    make_objectives: Callable[[], tuple[Sequence[Callable], Callable]],
    update: Callable[[list, list, list], tuple[list, list]],
    meta_variables: Sequence,
    second_order: bool = True,
):
    """Differentiates a meta objective through unrolled optimizer steps.

    params_{k+1}, buffers_{k+1} = update(params_k, buffers_k, grad objectives[k](params_k)),
    then returns d meta_objective(params_K) / d meta_variables. The meta variables enter
    through the objectives only, so the derivative is second order: with
    `second_order=False` (inner gradients treated as constants) it is exactly zero.
    `make_objectives` is called under the meta tape, so what it computes from the meta
    variables is recorded.

    Args:
        params: Starting parameter values (tensors, not variables).
        buffers: Starting optimizer buffers (tensors).
        make_objectives: Returns (one loss function of the parameters per lookahead
            step, the meta objective: a loss function of the final parameters).
        update: Pure optimizer step `(params, buffers, grads) -> (params, buffers)`.
        meta_variables: Variables to differentiate with respect to.
        second_order: Keep the inner gradients' dependence on the meta variables.

    Returns:
        (meta objective value, list of gradients aligned with `meta_variables`).
    """
    with tf.GradientTape() as meta_tape:
        objectives, meta_objective = make_objectives()
        for objective in objectives:
            _, grads = gradients(lambda p=params, f=objective: f(p), params)
            grads = sum_across_replicas(list(grads))
            if not second_order:
                grads = [tf.stop_gradient(g) for g in grads]
            params, buffers = update(params, buffers, grads)
        meta_loss = meta_objective(params)
    # Zeros are filled in by hand: TF's UnconnectedGradients.ZERO fails on Keras variables.
    meta_grads = meta_tape.gradient(meta_loss, list(meta_variables))
    meta_grads = [
        tf.zeros(v.shape, v.dtype) if g is None else g for g, v in zip(meta_grads, meta_variables)
    ]
    return meta_loss, meta_grads


def train_step(model, data) -> dict:
    """Runs one iteration of `model` (a `TransferModel`) on one batch; returns the logs."""
    from keras_l2t.transfer_model import unpack

    x, y = unpack(data)
    batch = global_batch_size(x, model.loss_dtype)
    source = model.source_forward(x)  # the only source forward of this batch
    learning_rate = tf.convert_to_tensor(model.optimizer.learning_rate)  # before the step
    channel_weights, pair_weights = model.pair_weights(source)
    fixed = (
        [tf.stop_gradient(w) for w in channel_weights],
        [tf.stop_gradient(p) for p in pair_weights],
    )

    # 1. Real step on all of the method's terms with phi fixed; BN statistics update here.
    theta = model.theta_variables
    with tf.GradientTape() as tape:
        loss, terms, logits = model.real_step_loss(x, y, source, *fixed, batch)
    model.optimizer.apply(tape.gradient(loss, theta), theta)

    meta_loss = None
    if model.method.meta_learned:
        meta_loss, meta_grads = _meta_gradient(model, x, y, source, learning_rate, batch)
        # The optimizer sums the replicas' gradients: add each replica's share of the L2.
        decay = model.meta_weight_decay / tf.distribute.get_strategy().num_replicas_in_sync
        phi = model.phi_variables
        meta_grads = [g + decay * tf.convert_to_tensor(v) for g, v in zip(meta_grads, phi)]
        model.meta_optimizer.apply(meta_grads, phi)
        meta_loss = sum_across_replicas(meta_loss)  # the global batch's value, to report
    return model.record_step(x, y, terms, logits, channel_weights, pair_weights, meta_loss)


def test_step(model, data) -> dict:
    """`TransferModel.test_step` on TensorFlow."""
    return model.record_test(data)


def meta_gradient(model, x, y, second_order=True):
    """`TransferModel.meta_gradient` on TensorFlow: steps 2-3 from the current state."""
    batch = global_batch_size(x, model.loss_dtype)
    learning_rate = tf.convert_to_tensor(model.optimizer.learning_rate)
    return _meta_gradient(
        model, x, y, model.source_forward(x), learning_rate, batch, second_order
    )


def _meta_gradient(model, x, y, source, learning_rate, batch, second_order=True):
    """Steps 2-3: d L_org(theta_{T+1}) / d phi from the current theta and buffers.

    `second_order=False` drops the inner gradients' dependence on phi, which makes the
    result exactly zero (kept to show why the exact second-order gradient is needed).

    Returns:
        (meta objective L_org(theta_{T+1}), gradients aligned with `model.phi_variables`).
    """
    theta = model.theta_variables
    start = [tf.convert_to_tensor(v) for v in theta]
    buffers = model.update_rule.slots(theta)
    non_trainable = [tf.convert_to_tensor(v) for v in model.target_non_trainable_variables]

    def make_objectives():
        weights = model.pair_weights(source)  # phi enters here, once per meta step
        objectives = model.lookahead_objectives(x, y, source, weights, non_trainable, batch)
        return objectives, objectives[-1]  # the meta objective is L_org, as the last step

    def update(params, buffers, grads):
        return model.update_rule.step(params, buffers, grads, learning_rate)

    return unrolled_meta_gradient(
        start, buffers, make_objectives, update, model.phi_variables, second_order
    )
