"""Mixed precision: bfloat16 networks train with full-precision losses; float16 targets
are refused because the second-order meta-gradient cannot be loss-scaled exactly."""

import keras
import numpy as np
import pytest
from toy_networks import conv_net, toy_batch, toy_transfer_model

import keras_l2t


@pytest.fixture
def policy():
    def set_policy(name):
        keras.config.set_dtype_policy(name)

    yield set_policy
    keras.config.set_dtype_policy("float32")


def _meta_gradient(model, x, y):
    model.compile(optimizer=keras_l2t.CoupledSGD(0.1))
    return np.concatenate([np.ravel(g) for g in model.meta_gradient(x, y)[1]])


def test_mixed_bfloat16_trains_and_its_meta_gradient_tracks_float32(policy):
    x, y = toy_batch(n=8, seed=1)
    exact = _meta_gradient(toy_transfer_model(seed=2), x, y)
    policy("mixed_bfloat16")
    model = toy_transfer_model(seed=2)
    assert model.target.get_layer("tgt_conv0").compute_dtype == "bfloat16"
    assert all(v.dtype == "float32" for v in model._theta_variables + model._phi_variables)
    approximate = _meta_gradient(model, x, y)
    cosine = approximate @ exact / np.linalg.norm(approximate) / np.linalg.norm(exact)
    assert cosine > 0.99, cosine
    logs = model.fit(x, y, batch_size=4, epochs=1, verbose=0).history
    assert np.isfinite(logs["loss"][0]) and np.isfinite(logs["meta_ce"][0])


def test_float16_target_is_refused_but_a_float16_source_is_fine(policy):
    source = conv_net("src", [3, 4], 5)
    policy("mixed_float16")
    target = conv_net("tgt", [2, 3], 3)
    with pytest.raises(ValueError, match="'tgt_conv0' computes in float16.*mixed_bfloat16"):
        keras_l2t.TransferModel(source, target, pairs=[("src_block1", "tgt_block1")])
    half_source = conv_net("src", [3, 4], 5)
    policy("float32")
    model = keras_l2t.TransferModel(
        half_source, conv_net("tgt", [2, 3], 3), pairs=[("src_block1", "tgt_block1")]
    )
    model.compile()
    x, y = toy_batch(n=4)
    assert np.isfinite(model.train_on_batch(x, y, return_dict=True)["loss"])
