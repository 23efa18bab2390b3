"""transfer_gate="aligned": the real step takes the transfer's gradient only where it is
aligned with L_org's gradient on the meta batch, or (transfer_gate_momentum > 0) where
that alignment's moving average is positive (checked against a hand-written step)."""

import keras
import numpy as np
import pytest
from backends import to_numpy, variable_gradients
from toy_networks import toy_batch, toy_transfer_model

import keras_l2t


def _gated_model(method="fm", seed=3, **kwargs):
    model = toy_transfer_model(method, seed=seed, transfer_gate="aligned",
                               meta_weight_decay=0.0, **kwargs)
    # Plain SGD: theta_1 = theta_0 - lr * gradient, written out below.
    model.compile(optimizer=keras.optimizers.SGD(0.1), meta_optimizer=keras.optimizers.SGD(0.0))
    return model


def _hand_gradients(model, x, y, x_meta, y_meta):
    """(dL_org/dtheta, d(transfer terms)/dtheta on (x, y), dL_org/dtheta on the meta batch)."""
    source = model._source_outputs(x)
    weights = model._transfer_weights(source)
    theta = model._theta_variables

    def part(names):
        def loss():
            terms = model._loss_terms(y, model._target_outputs(x), source, *weights)
            return keras.ops.mean(sum(v for k, v in terms.items() if k in names))
        return loss

    transfer_names = ("matching", "attention")
    task = variable_gradients(part(("ce",)), theta, model.variables)
    transfer = variable_gradients(part(transfer_names), theta, model.variables)

    def meta_loss():
        logits = model._target_outputs(x_meta, adapters=False).logits
        return keras.ops.mean(model._cross_entropy(y_meta, logits))

    reference = variable_gradients(meta_loss, theta, model.variables)
    zero = [np.zeros(v.shape, "float32") for v in theta]
    return [[z if g is None else to_numpy(g) for g, z in zip(grads, zero)]
            for grads in (task, transfer, reference)]


def _flat(grads):
    return np.concatenate([g.ravel() for g in grads]).astype("float64")


@pytest.mark.parametrize("method, meta_objective, momentum", [("fm", "train_batch", 0.0),
                                                              ("at", "train_batch", 0.0),
                                                              ("l2t_ww", "held_out", 0.0),
                                                              ("fm", "train_batch", 0.5),
                                                              ("l2t_ww", "held_out", 0.5)])
def test_the_transfer_gradient_is_applied_exactly_where_it_is_aligned(method, meta_objective,
                                                                      momentum):
    """Over several batches the gate opens and closes; each step is the hand-written one.
    With a momentum, the gate follows a_t = m a_{t-1} + (1 - m) cos_t, and some steps
    differ from what the batch's own sign would decide."""
    kwargs = {"meta_objective": meta_objective} if meta_objective != "train_batch" else {}
    if momentum:
        kwargs["transfer_gate_momentum"] = momentum
    model = _gated_model(method, **kwargs)
    seen, overruled, alignment = set(), 0, 0.0
    for seed in range(24):
        if seed >= 4 and len(seen) == 2 and (overruled or not momentum):
            break
        x, y = toy_batch(n=8, seed=seed)
        held_out = meta_objective == "held_out"
        x_meta, y_meta = toy_batch(n=6, seed=100 + seed) if held_out else (x, y)
        before = [to_numpy(v) for v in model._theta_variables]
        # The hand-written gradients are taken on a copy: they must not move the BN statistics.
        probe = _gated_model(method, **kwargs)
        probe.set_weights(model.get_weights())
        task, transfer, reference = _hand_gradients(probe, x, y, x_meta, y_meta)
        dot = float(_flat(reference) @ _flat(transfer))
        cosine = dot / np.linalg.norm(_flat(reference)) / np.linalg.norm(_flat(transfer))
        data = ((x, y), (x_meta, y_meta)) if held_out else (x, y)
        logs = model.train_on_batch(*data, return_dict=True)
        alignment = momentum * alignment + (1 - momentum) * cosine
        taken = alignment > 0
        seen.add(taken)
        overruled += taken != (dot > 0)
        if momentum:
            np.testing.assert_allclose(to_numpy(model._transfer_alignment), alignment,
                                       rtol=1e-3, atol=1e-5)
        for b, a, t, m in zip(before, model._theta_variables, task, transfer):
            np.testing.assert_allclose(to_numpy(a), b - 0.1 * (t + taken * m),
                                       rtol=1e-4, atol=1e-6)
        model.reset_metrics()
        np.testing.assert_allclose(logs["transfer_cosine"], cosine, rtol=1e-3, atol=1e-5)
        assert logs["transfer_on"] == float(taken)
    assert seen == {True, False}, "the batches should open and close the gate"
    assert overruled if momentum else not overruled


def test_the_gate_is_a_flag_that_saves_and_refuses_what_it_cannot_gate():
    model = _gated_model("l2t_ww")
    restored = keras_l2t.TransferModel.from_config(model.get_config())
    assert restored.transfer_gate == "aligned"
    assert toy_transfer_model().transfer_gate == "none"  # the paper's step
    with pytest.raises(ValueError, match="transfer_gate must be one of none, aligned"):
        toy_transfer_model(transfer_gate="always")
    with pytest.raises(ValueError, match="'scratch' has none"):
        toy_transfer_model("scratch", transfer_gate="aligned")


def test_the_averaged_alignment_is_saved_and_the_momentum_refused_where_it_cannot_apply(
        tmp_path):
    model = _gated_model("fm", transfer_gate_momentum=0.9)
    assert keras_l2t.TransferModel.from_config(
        model.get_config()).transfer_gate_momentum == 0.9
    for seed in range(3):
        model.train_on_batch(*toy_batch(n=8, seed=seed))
    path = str(tmp_path / "gated.weights.h5")
    model.save_weights(path)  # what train.py's checkpoints hold
    resumed = _gated_model("fm", transfer_gate_momentum=0.9)
    assert float(to_numpy(resumed._transfer_alignment)) == 0.0
    resumed.load_weights(path)
    assert float(to_numpy(resumed._transfer_alignment)) == float(
        to_numpy(model._transfer_alignment)) != 0.0
    # The paper's step and the per-iteration gate keep their weights' layout.
    assert len(_gated_model("fm").weights) == len(model.weights) - 1
    with pytest.raises(ValueError, match=r"transfer_gate_momentum must be a number in \[0, 1\)"):
        toy_transfer_model(transfer_gate="aligned", transfer_gate_momentum=1.0)
    with pytest.raises(ValueError, match="set transfer_gate='aligned' too"):
        toy_transfer_model(transfer_gate_momentum=0.5)
