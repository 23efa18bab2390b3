"""One fit step on 2 CPU devices equals the single-device step: MirroredStrategy on
TensorFlow, keras.distribution.DataParallel on JAX (with a regularized target)."""

import contextlib

import keras
import numpy as np
import pytest
from backends import BACKEND, tensorflow_only
from toy_networks import conv_net, toy_batch, toy_transfer_model

import keras_l2t

# (meta objective, meta_every, transfer gate, its momentum)
VARIANTS = [("train_batch", 1, "none", 0.0), ("held_out", 1, "none", 0.0),
            ("held_out", 1, "aligned", 0.0), ("train_batch", 1, "aligned", 0.5),
            ("train_batch", 2, "none", 0.0)]
# MirroredStrategy refuses meta_every > 1.
MIRRORED_VARIANTS = [variant for variant in VARIANTS if variant[1] == 1]


def _build(scope, weights=None, meta_objective="train_batch", meta_every=1,
           transfer_gate="none", gate_momentum=0.0):
    with scope():
        keras.utils.set_random_seed(4)
        # Regularizers too: the losses each replica's layers add must stay its own.
        target = conv_net("tgt", [2, 3], 3, kernel_l2=1e-2, activity_l2=1e-2)
        # The meta-optimizer is linear in its gradient (Adam's first steps see only its
        # sign) and the L2 on phi is large, so a wrong per-replica share of either shows.
        model = toy_transfer_model(seed=4, target=target, meta_weight_decay=1e-3,
                                   meta_objective=meta_objective, meta_every=meta_every,
                                   transfer_gate=transfer_gate,
                                   transfer_gate_momentum=gate_momentum)
        if weights is not None:
            model.set_weights(weights)
        model.compile(
            optimizer=keras_l2t.CoupledSGD(0.1, momentum=0.9, weight_decay=1e-4),
            meta_optimizer=keras.optimizers.SGD(10.0, momentum=0.9),
            metrics=["accuracy"],
        )
    return model


def _state(model):
    optimizer_state = [v.numpy() for v in model.optimizer.momentums]
    meta_state = [v.numpy() for v in model.meta_optimizer.variables]
    return [v.numpy() for v in model.weights] + optimizer_state + meta_state


def _check_two_devices_equal_one(scope, meta_objective="train_batch", meta_every=1,
                                 transfer_gate="none", gate_momentum=0.0):
    """`scope()` enters the distribution; returns the distributed model. With
    `meta_every=2` the second step is the real step alone (the meta step is in a cond);
    with the gate, each step's gate compares the global gradients (and its average, a
    model weight, is compared with the others)."""
    x, y = toy_batch(n=8, seed=5)
    single = _build(contextlib.nullcontext, meta_objective=meta_objective,
                    meta_every=meta_every, transfer_gate=transfer_gate,
                    gate_momentum=gate_momentum)
    initial = single.get_weights()
    initial_phi = [v.numpy() for v in single._phi_variables]
    distributed = _build(scope, initial, meta_objective, meta_every, transfer_gate,
                         gate_momentum)
    histories = []
    for model, model_scope in ((single, contextlib.nullcontext), (distributed, scope)):
        with model_scope():
            # Two steps, so the second lookahead starts from non-zero momentums.
            if meta_objective == "held_out":
                history = model.fit(_held_out_dataset(x, y), epochs=2, verbose=0)
            else:
                history = model.fit(x, y, batch_size=8, epochs=2, shuffle=False, verbose=0)
        histories.append(history.history)
    if transfer_gate != "none":  # the gate's cosine is of the global gradients
        np.testing.assert_allclose(histories[1]["transfer_cosine"],
                                   histories[0]["transfer_cosine"], rtol=1e-4, atol=1e-6)

    assert all(
        not np.allclose(v.numpy(), w) for v, w in zip(single._phi_variables, initial_phi)
    ), "every meta-network variable should move"
    assert len(_state(single)) == len(_state(distributed))
    for a, b in zip(_state(single), _state(distributed)):
        np.testing.assert_allclose(b, a, atol=1e-5, rtol=1e-5)
    assert int(distributed.meta_optimizer.iterations.numpy()) == 2 // meta_every
    return distributed


def _held_out_dataset(x, y):
    """One batch of 8 (x, y) zipped with a held-out meta batch of 8."""
    import tensorflow as tf

    meta = tf.data.Dataset.from_tensor_slices(toy_batch(n=8, seed=6)).batch(8)
    return tf.data.Dataset.zip((tf.data.Dataset.from_tensor_slices((x, y)).batch(8), meta))


@pytest.fixture(scope="module")
def mirrored_strategy():
    """One strategy for the module: TensorFlow's runtime keeps a collective's shape by
    instance key, and a second MirroredStrategy on the same devices numbers its
    collectives from the same keys, so a graph of another shape fails ("Shape mismatch
    in the collective instance")."""
    import tensorflow as tf

    devices = tf.config.list_logical_devices("CPU")
    assert len(devices) == 2, "conftest.py must create two logical CPU devices"
    return tf.distribute.MirroredStrategy([d.name for d in devices])


@tensorflow_only("tf.distribute")
@pytest.mark.parametrize("meta_objective, meta_every, transfer_gate, gate_momentum",
                         MIRRORED_VARIANTS)
def test_mirrored_step_equals_single_device_step(mirrored_strategy, meta_objective,
                                                 meta_every, transfer_gate, gate_momentum):
    model = _check_two_devices_equal_one(mirrored_strategy.scope, meta_objective, meta_every,
                                         transfer_gate, gate_momentum)
    assert model.distribute_strategy.num_replicas_in_sync == 2


@tensorflow_only("tf.distribute")
def test_meta_every_under_mirrored_strategy_is_refused(mirrored_strategy):
    model = _build(mirrored_strategy.scope, meta_every=2)
    x, y = toy_batch(n=8, seed=5)
    with mirrored_strategy.scope(), pytest.raises(
            ValueError, match="meta_every=2 does not run under a multi-replica"):
        model.fit(x, y, batch_size=8, epochs=1, verbose=0)


@pytest.mark.skipif(BACKEND != "jax", reason="JAX only: keras.distribution")
@pytest.mark.parametrize("meta_objective, meta_every, transfer_gate, gate_momentum",
                         VARIANTS)
def test_data_parallel_step_equals_single_device_step(meta_objective, meta_every,
                                                      transfer_gate, gate_momentum):
    devices = keras.distribution.list_devices("cpu")
    assert len(devices) == 2, "conftest.py must create two host devices (XLA_FLAGS)"
    distribution = keras.distribution.DataParallel(devices=devices)
    model = _check_two_devices_equal_one(distribution.scope, meta_objective, meta_every,
                                         transfer_gate, gate_momentum)
    kernel = model.target.get_layer("tgt_conv0").kernel.value
    assert len(kernel.sharding.device_set) == 2  # replicated on both devices


@pytest.mark.skipif(BACKEND != "jax", reason="JAX only: keras.distribution")
def test_a_meta_optimizer_created_outside_the_distribution_is_reported():
    """Keras' check of the state's shardings covers the meta-optimizer's variables."""
    distribution = keras.distribution.DataParallel(
        devices=keras.distribution.list_devices("cpu"))
    with distribution.scope():
        model = toy_transfer_model()
    meta_optimizer = keras.optimizers.SGD(1.0, momentum=0.9)
    meta_optimizer.build(model._phi_variables)  # outside the scope: local variables
    with distribution.scope():
        model.compile(meta_optimizer=meta_optimizer)
        with pytest.warns(UserWarning, match="meta-optimizer's variable .* is local"):
            model._get_state_sharding_spec()
