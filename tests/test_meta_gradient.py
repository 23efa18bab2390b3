"""The meta-gradient is exact: finite differences, a first-order contrast, a reference value."""

import keras
import numpy as np
import pytest
from backends import BACKEND, tensorflow_only, to_numpy, variable_gradients
from finite_differences import finite_difference, relative_error
from toy_networks import toy_batch, toy_transfer_model

import keras_l2t
from keras_l2t._update_rules import update_rule_for
from keras_l2t.exact_batch_norm import is_batch_norm_exact


def _compiled_model(lookahead_steps, meta_objective="train_batch"):
    model = toy_transfer_model(lookahead_steps=lookahead_steps, seed=1,
                               meta_objective=meta_objective)
    model.compile(
        optimizer=keras_l2t.CoupledSGD(0.2, momentum=0.9, weight_decay=1e-2),
        meta_optimizer=keras.optimizers.Adam(1e-3),
        # Fastest for one step: TensorFlow's trace would not pay off, JAX's eager ops
        # compile one by one.
        run_eagerly=BACKEND == "tensorflow",
    )
    return model


@pytest.mark.parametrize("lookahead_steps", [1, 2])
def test_meta_gradient_matches_finite_differences_through_batch_norm(float64, lookahead_steps):
    """On JAX the target's BatchNormalization is Keras' own, unswitched: exact as it is."""
    model = _compiled_model(lookahead_steps)
    x, y = toy_batch(n=6, seed=3, dtype="float64")
    model.train_on_batch(x, y)  # non-zero momentums, moved BN statistics
    assert {v.dtype for v in model._theta_variables + model._phi_variables} == {"float64"}
    _, analytic = model.meta_gradient(x, y)
    analytic = [to_numpy(g) for g in analytic]
    numeric = finite_difference(model, x, y)
    error = relative_error(analytic, numeric)
    assert np.linalg.norm(np.concatenate([g.ravel() for g in numeric])) > 1e-6
    assert error < 1e-6, error


def test_held_out_meta_gradient_matches_finite_differences(float64):
    """The held-out objective: the lookahead trains on (x, y), L_org(theta_{T+1}) is the
    cross-entropy of another batch (of another size)."""
    model = _compiled_model(2, meta_objective="held_out")
    x, y = toy_batch(n=6, seed=3, dtype="float64")
    meta_batch = toy_batch(n=5, seed=4, dtype="float64")
    model.train_on_batch((x, y), meta_batch)  # non-zero momentums, moved BN statistics
    meta_loss, analytic = model.meta_gradient(x, y, meta_batch=meta_batch)
    analytic = [to_numpy(g) for g in analytic]
    numeric = finite_difference(model, x, y, meta_batch=meta_batch)
    assert np.linalg.norm(np.concatenate([g.ravel() for g in numeric])) > 1e-6
    assert relative_error(analytic, numeric) < 1e-6
    # Not the training batch's objective: another value and another gradient.
    train_loss, train_grads = model.meta_gradient(x, y, meta_batch=(x, y))
    assert abs(float(train_loss) - float(meta_loss)) > 1e-3
    assert relative_error([to_numpy(g) for g in train_grads], numeric) > 1e-2


@pytest.mark.parametrize("meta_objective", ["train_batch", "held_out"])
def test_meta_objective_is_the_loss_after_the_optimizers_own_lookahead_steps(meta_objective):
    """L_org(theta_{T+1}) equals the cross-entropy (of the meta batch) after T
    `optimizer.apply` steps on the matching loss and one on the cross-entropy of the
    training batch, taken for real on a copy: the lookahead's step order, objectives,
    starting momentums and rate are the optimizer's own."""
    x, y = toy_batch(n=8, seed=12)
    meta_batch = (x, y) if meta_objective == "train_batch" else toy_batch(n=4, seed=14)
    model = _compiled_model(2, meta_objective)
    copy = _compiled_model(2, meta_objective)
    rng = np.random.default_rng(13)
    for m in (model, copy):
        m.optimizer.build(m._theta_variables)
    for a, b in zip(copy.optimizer.momentums, model.optimizer.momentums, strict=True):
        momentum = rng.normal(scale=0.1, size=b.shape)  # the lookahead starts from these
        a.assign(momentum)
        b.assign(momentum)
    for a, b in zip(copy.weights, model.weights, strict=True):
        a.assign(b.numpy())
    meta_loss, _ = model.meta_gradient(x, y, meta_batch=meta_batch)

    source = copy._source_outputs(x)
    channel_weights, pair_weights = copy._transfer_weights(source)
    theta = copy._theta_variables

    def term(name):
        target = copy._target_outputs(x)
        terms = copy._loss_terms(y, target, source, channel_weights, pair_weights)
        return keras.ops.mean(terms[name])

    for name in ["matching"] * 2 + ["ce"]:
        grads = variable_gradients(lambda n=name: term(n), theta, copy.variables)
        # Variables the objective does not reach still move by momentum and weight decay.
        grads = [keras.ops.zeros(v.shape) if g is None else g for g, v in zip(grads, theta)]
        copy.optimizer.apply(grads, theta)
    x_meta, y_meta = meta_batch
    logits = copy._target_outputs(x_meta, adapters=False).logits
    meta_ce = keras.ops.mean(copy._cross_entropy(y_meta, logits))
    np.testing.assert_allclose(to_numpy(meta_loss), to_numpy(meta_ce), rtol=1e-5)


def test_first_order_meta_gradient_is_zero(float64):
    model = _compiled_model(2)
    x, y = toy_batch(n=6, seed=3, dtype="float64")
    _, grads = model.meta_gradient(x, y, second_order=False)
    for grad in grads:
        np.testing.assert_array_equal(to_numpy(grad), 0.0)
    _, grads = model.meta_gradient(x, y)
    assert max(float(np.abs(to_numpy(g)).max()) for g in grads) > 1e-8


@tensorflow_only("Keras' JAX BatchNormalization is exact as it is (the finite-difference "
                 "test above runs it unswitched)")
def test_stock_batch_norm_gives_a_wrong_meta_gradient(float64):
    """Why the target's BN is switched: TF's tf.nn.moments loses a second-order term."""
    model = _compiled_model(1)
    x, y = toy_batch(n=6, seed=3, dtype="float64")
    numeric = finite_difference(model, x, y)
    for layer in model.target.layers:
        if isinstance(layer, keras.layers.BatchNormalization):
            layer.synchronized = False  # undo the fix
    _, analytic = model.meta_gradient(x, y)
    assert relative_error([to_numpy(g) for g in analytic], numeric) > 1e-3


def test_user_batch_norm_is_made_exact():
    model = toy_transfer_model()
    batch_norms = [
        layer for layer in model.target.layers if isinstance(layer, keras.layers.BatchNormalization)
    ]
    assert batch_norms and is_batch_norm_exact(model.target)
    if BACKEND == "tensorflow":  # switched to the synchronized (exact) moments
        assert all(layer.synchronized for layer in batch_norms)
        assert sorted(model.exact_batch_norm_layers) == ["tgt_bn0", "tgt_bn1"]
        # Saved without the switch, so the network also loads on JAX.
        assert not any(layer.get_config()["synchronized"] for layer in batch_norms)
    else:  # exact already, left as they are
        assert not any(layer.synchronized for layer in batch_norms)
        assert model.exact_batch_norm_layers == []


@tensorflow_only("JAX's LayerNormalization keeps every second-order term")
def test_layer_normalization_in_the_target_is_refused():
    inputs = keras.Input((8, 8, 3))
    x = keras.layers.Conv2D(2, 3, name="t_conv")(inputs)
    x = keras.layers.LayerNormalization(name="t_ln")(x)
    x = keras.layers.GlobalAveragePooling2D()(x)
    target = keras.Model(inputs, keras.layers.Dense(3)(x))
    source = keras.Model(inputs, keras.layers.Conv2D(2, 3, name="s_conv")(inputs))
    with pytest.raises(ValueError, match="t_ln.*LayerNormalization.*second-order"):
        keras_l2t.TransferModel(source, target, pairs=[("s_conv", "t_conv")])


def test_update_rule_differentiated_through_its_steps_gives_the_reference_value():
    """The toy problem of the reference's MetaSGD self-test (SGD lr 0.1, momentum 0.9,
    weight decay 0.01, 10 steps), whose printed meta-gradient is the expected value: the
    lookahead's update rule, differentiated through its steps as both backends do."""
    params = [np.array([1.0, 3.0], "float32"), np.array([[-1.0, -2.0], [1.0, 0.0]], "float32")]
    rule = update_rule_for(keras_l2t.CoupledSGD(0.1, momentum=0.9, weight_decay=0.01), [])
    ops = keras.ops

    def meta_objective(lam, params, gradients):
        momentums = [ops.zeros_like(p) for p in params]
        for _ in range(10):
            grads = gradients(lambda p: ops.mean(p[0] ** 2) + ops.sum(lam * p[1] ** 2), params)
            params, momentums = rule.step(params, momentums, grads, 0.1)
        return ops.mean(params[0] * params[1])

    if BACKEND == "tensorflow":
        import tensorflow as tf

        def gradients(loss_fn, params):
            with tf.GradientTape() as tape:
                tape.watch(params)
                loss = loss_fn(params)
            return tape.gradient(loss, params)

        lam = tf.zeros((2, 2))
        with tf.GradientTape() as meta_tape:
            meta_tape.watch(lam)
            meta_loss = meta_objective(lam, [tf.constant(p) for p in params], gradients)
        grad = meta_tape.gradient(meta_loss, lam)
    else:
        import jax

        def gradients(loss_fn, params):
            return jax.grad(loss_fn)(params)

        grad = jax.grad(meta_objective)(jax.numpy.zeros((2, 2)), params, gradients)
    np.testing.assert_allclose(
        to_numpy(grad), [[-1.1952, -7.1712], [1.1952, 0.0]], atol=1e-4
    )
