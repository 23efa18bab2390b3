"""One fit step under MirroredStrategy on 2 logical CPUs equals the single-device step."""

import keras
import numpy as np
import tensorflow as tf
from toy_networks import toy_batch, toy_transfer_model

import keras_l2t


def _build(strategy, weights=None):
    with strategy.scope():
        model = toy_transfer_model(seed=4)
        if weights is not None:
            model.set_weights(weights)
        model.compile(
            optimizer=keras_l2t.CoupledSGD(0.1, momentum=0.9, weight_decay=1e-4),
            meta_optimizer=keras.optimizers.Adam(1e-2),
            metrics=["accuracy"],
        )
    return model


def _state(model):
    optimizer_state = [v.numpy() for v in model.optimizer.momentums]
    meta_state = [v.numpy() for v in model.meta_optimizer.variables]
    return [v.numpy() for v in model.weights] + optimizer_state + meta_state


def test_mirrored_step_equals_single_device_step():
    devices = tf.config.list_logical_devices("CPU")
    assert len(devices) == 2, "conftest.py must create two logical CPU devices"
    x, y = toy_batch(n=8, seed=5)

    single = _build(tf.distribute.get_strategy())
    initial = single.get_weights()
    initial_phi = [v.numpy() for v in single.phi_variables]
    mirrored = _build(tf.distribute.MirroredStrategy([d.name for d in devices]), initial)
    assert mirrored.distribute_strategy.num_replicas_in_sync == 2

    for model in (single, mirrored):
        # Two steps, so the second lookahead starts from non-zero momentum buffers.
        model.fit(x, y, batch_size=8, epochs=2, shuffle=False, verbose=0)

    assert all(
        not np.allclose(v.numpy(), w) for v, w in zip(single.phi_variables, initial_phi)
    ), "every meta-network variable should move"
    for a, b in zip(_state(single), _state(mirrored)):
        np.testing.assert_allclose(b, a, atol=1e-5, rtol=1e-5)
