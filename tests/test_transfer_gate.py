"""transfer_gate="aligned": the real step takes the transfer's gradient only where it is
aligned with L_org's gradient on the meta batch (checked against a hand-written step)."""

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


@pytest.mark.parametrize("method, meta_objective", [("fm", "train_batch"),
                                                    ("at", "train_batch"),
                                                    ("l2t_ww", "held_out")])
def test_the_transfer_gradient_is_applied_exactly_where_it_is_aligned(method, meta_objective):
    """Over several batches the gate opens and closes; each step is the hand-written one."""
    kwargs = {"meta_objective": meta_objective} if meta_objective != "train_batch" else {}
    model = _gated_model(method, **kwargs)
    seen = set()
    for seed in range(16):
        if seed >= 4 and len(seen) == 2:
            break
        x, y = toy_batch(n=8, seed=seed)
        x_meta, y_meta = toy_batch(n=6, seed=100 + seed) if kwargs else (x, y)
        before = [to_numpy(v) for v in model._theta_variables]
        # The hand-written gradients are taken on a copy: they must not move the BN statistics.
        probe = _gated_model(method, **kwargs)
        probe.set_weights(model.get_weights())
        task, transfer, reference = _hand_gradients(probe, x, y, x_meta, y_meta)
        dot = float(_flat(reference) @ _flat(transfer))
        cosine = dot / np.linalg.norm(_flat(reference)) / np.linalg.norm(_flat(transfer))
        data = ((x, y), (x_meta, y_meta)) if kwargs else (x, y)
        logs = model.train_on_batch(*data, return_dict=True)
        taken = dot > 0
        seen.add(taken)
        for b, a, t, m in zip(before, model._theta_variables, task, transfer):
            np.testing.assert_allclose(to_numpy(a), b - 0.1 * (t + taken * m),
                                       rtol=1e-4, atol=1e-6)
        model.reset_metrics()
        np.testing.assert_allclose(logs["transfer_cosine"], cosine, rtol=1e-3, atol=1e-5)
        assert logs["transfer_on"] == float(taken)
    assert seen == {True, False}, "the batches should open and close the gate"


def test_the_gate_is_a_flag_that_saves_and_refuses_what_it_cannot_gate():
    model = _gated_model("l2t_ww")
    restored = keras_l2t.TransferModel.from_config(model.get_config())
    assert restored.transfer_gate == "aligned"
    assert toy_transfer_model().transfer_gate == "none"  # the paper's step
    with pytest.raises(ValueError, match="transfer_gate must be one of none, aligned"):
        toy_transfer_model(transfer_gate="always")
    with pytest.raises(ValueError, match="'scratch' has none"):
        toy_transfer_model("scratch", transfer_gate="aligned")
