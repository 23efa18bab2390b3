"""The lookahead's pure update replays the real optimizer exactly."""

import keras
import numpy as np
import pytest

import keras_l2t
from keras_l2t._update_rules import update_rule_for


def _torch_sgd(p, grads, lr, momentum, wd, nesterov):
    """torch.optim.SGD written out by hand: d = g + wd p; m = momentum m + d; p -= lr m."""
    m = np.zeros_like(p)
    for g in grads:
        d = g + wd * p
        m = momentum * m + d
        p = p - lr * (d + momentum * m if nesterov else m)
    return p, m


@pytest.mark.parametrize("nesterov", [False, True])
def test_coupled_sgd_is_torch_sgd(float64, nesterov):
    rng = np.random.default_rng(0)
    p0 = rng.normal(size=(3, 2)).astype("float64")
    grads = [rng.normal(size=(3, 2)) for _ in range(3)]
    variable = keras.Variable(p0, dtype="float64")
    # 0.125 is exact in float32, where Keras keeps the learning rate.
    optimizer = keras_l2t.CoupledSGD(0.125, momentum=0.9, weight_decay=0.01, nesterov=nesterov)
    for g in grads:
        optimizer.apply([keras.ops.convert_to_tensor(g)], [variable])
    expected, m = _torch_sgd(p0, grads, 0.125, 0.9, 0.01, nesterov)
    np.testing.assert_allclose(variable.numpy(), expected, rtol=1e-12)
    np.testing.assert_allclose(optimizer.momentums[0].numpy(), m, rtol=1e-12)


@pytest.mark.parametrize(
    "make_optimizer",
    [
        lambda lr: keras_l2t.CoupledSGD(lr, momentum=0.9, weight_decay=1e-2),
        lambda lr: keras_l2t.CoupledSGD(lr, momentum=0.5, weight_decay=0.0, nesterov=True),
        lambda lr: keras.optimizers.SGD(lr, momentum=0.9, weight_decay=1e-2),
        lambda lr: keras.optimizers.SGD(lr, momentum=0.9, nesterov=True),
        lambda lr: keras.optimizers.SGD(lr),
    ],
)
def test_update_rule_replays_the_optimizer_with_its_momentums_and_schedule(float64,
                                                                           make_optimizer):
    rng = np.random.default_rng(1)
    schedule = keras.optimizers.schedules.CosineDecay(0.3, decay_steps=5)
    variables = [keras.Variable(rng.normal(size=s), dtype="float64") for s in [(4,), (2, 3)]]
    variables[1].constraint = keras.constraints.NonNeg()  # projected after every update
    optimizer = make_optimizer(schedule)
    optimizer.build(variables)
    rule = update_rule_for(optimizer, variables)
    for _ in range(3):
        grads = [keras.ops.convert_to_tensor(rng.normal(size=v.shape)) for v in variables]
        values = [keras.ops.convert_to_tensor(v) for v in variables]
        learning_rate = optimizer.learning_rate
        expected, momentums = rule.step(values, rule.momentums(), grads, learning_rate)
        optimizer.apply(grads, variables)
        for variable, value in zip(variables, expected):
            np.testing.assert_allclose(variable.numpy(), keras.ops.convert_to_numpy(value),
                                       rtol=1e-12)
        for actual, replayed in zip(rule.momentums(), momentums):
            np.testing.assert_allclose(keras.ops.convert_to_numpy(actual),
                                       keras.ops.convert_to_numpy(replayed), rtol=1e-12)


def test_unknown_optimizers_and_unreplicable_options_are_refused():
    with pytest.raises(ValueError, match="CoupledSGD.*keras.optimizers.SGD, not Adam"):
        update_rule_for(keras.optimizers.Adam(), [])
    with pytest.raises(ValueError, match="clipnorm"):
        update_rule_for(keras.optimizers.SGD(clipnorm=1.0), [])


def test_an_optimizer_built_on_other_variables_is_refused():
    """The momentums are read by position: they must be those of the given variables."""
    optimizer = keras_l2t.CoupledSGD()
    optimizer.build([keras.Variable(np.zeros(3))])
    rule = update_rule_for(optimizer, [keras.Variable(np.zeros((2, 2)))])
    with pytest.raises(ValueError, match="built on 1 other variables.*new optimizer"):
        rule.momentums()


def _torch_adam(p, grads, lr, beta_1, beta_2, eps):
    """torch.optim.Adam written out by hand: eps added after the bias correction."""
    m, v = np.zeros_like(p), np.zeros_like(p)
    for t, g in enumerate(grads, start=1):
        m = beta_1 * m + (1 - beta_1) * g
        v = beta_2 * v + (1 - beta_2) * g**2
        p = p - lr * (m / (1 - beta_1**t)) / (np.sqrt(v / (1 - beta_2**t)) + eps)
    return p, m, v


def test_torch_adam_is_torch_adam_where_keras_adam_is_not(float64):
    rng = np.random.default_rng(2)
    p0 = rng.normal(size=(4, 3))
    # Meta-gradient-sized gradients of one sign: here Keras' epsilon placement matters.
    grads = [1e-6 * (1 + rng.random(size=(4, 3))) for _ in range(5)]
    ours, keras_adam = keras.Variable(p0, dtype="float64"), keras.Variable(p0, dtype="float64")
    optimizer = keras_l2t.TorchAdam(0.125, beta_1=0.8, beta_2=0.99, epsilon=1e-8)
    reference = keras.optimizers.Adam(0.125, beta_1=0.8, beta_2=0.99)  # epsilon 1e-7
    for g in grads:
        optimizer.apply([keras.ops.convert_to_tensor(g)], [ours])
        reference.apply([keras.ops.convert_to_tensor(g)], [keras_adam])
    expected, m, v = _torch_adam(p0, grads, 0.125, 0.8, 0.99, 1e-8)
    np.testing.assert_allclose(ours.numpy(), expected, rtol=1e-12)
    np.testing.assert_allclose(optimizer.momentums[0].numpy(), m, rtol=1e-12)
    np.testing.assert_allclose(optimizer.velocities[0].numpy(), v, rtol=1e-12)
    # Keras' Adam adds its epsilon before the correction: much shorter steps here.
    step_torch, step_keras = np.abs(expected - p0), np.abs(keras_adam.numpy() - p0)
    assert np.all(step_keras < 0.8 * step_torch)


def test_torch_adam_config_round_trip_and_refused_options():
    optimizer = keras_l2t.TorchAdam(3e-4, beta_1=0.5, beta_2=0.9, epsilon=1e-6)
    clone = keras_l2t.TorchAdam.from_config(optimizer.get_config())
    assert (clone.beta_1, clone.beta_2, clone.epsilon) == (0.5, 0.9, 1e-6)
    assert clone.weight_decay is None
    with pytest.raises(ValueError, match="meta_weight_decay"):
        keras_l2t.TorchAdam(weight_decay=1e-4)
    with pytest.raises(ValueError, match="beta_2 must be in"):
        keras_l2t.TorchAdam(beta_2=1.0)


def test_coupled_sgd_config_round_trip():
    optimizer = keras_l2t.CoupledSGD(0.05, momentum=0.8, weight_decay=5e-4, nesterov=True)
    clone = keras_l2t.CoupledSGD.from_config(optimizer.get_config())
    assert (clone.momentum, clone.coupled_weight_decay, clone.nesterov) == (0.8, 5e-4, True)
    assert clone.weight_decay is None  # Keras' own decoupled decay stays off
