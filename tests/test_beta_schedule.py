"""A scheduled beta: each iteration uses the schedule's value at the optimizer's count."""

import json

import keras
import numpy as np
import pytest
from toy_networks import toy_batch, toy_transfer_model

import keras_l2t

# 2.0 at iteration 0, 0.25 from iteration 1 on.
STEP_DOWN = {"boundaries": [0], "values": [2.0, 0.25]}


def _compile(model):
    model.compile(optimizer=keras_l2t.CoupledSGD(0.1, momentum=0.9, weight_decay=1e-4),
                  meta_optimizer=keras.optimizers.Adam(1e-2), metrics=["accuracy"])
    return model


def _state(model) -> list:
    variables = model.variables + model.optimizer.variables + model.meta_optimizer.variables
    return [keras.ops.convert_to_numpy(v) for v in variables]


def _assert_same(a: list, b: list) -> None:
    assert len(a) == len(b)
    for first, second in zip(a, b):
        np.testing.assert_allclose(first, second, rtol=1e-6, atol=1e-7)


def test_each_iteration_equals_a_constant_beta_of_the_schedules_value(tmp_path):
    schedule = keras.optimizers.schedules.PiecewiseConstantDecay(**STEP_DOWN)
    scheduled = _compile(toy_transfer_model(seed=5, beta=schedule))
    first = _compile(toy_transfer_model(seed=5, beta=2.0))
    batches = [toy_batch(n=8, seed=s) for s in (1, 2)]

    scheduled.train_on_batch(*batches[0])  # iteration 0: beta 2.0
    first.train_on_batch(*batches[0])
    _assert_same(_state(scheduled), _state(first))

    path = str(tmp_path / "after_one.weights.h5")
    scheduled.save_weights(path)
    second = _compile(toy_transfer_model(seed=6, beta=0.25))
    second.train_on_batch(*batches[0])  # builds both optimizers (then overwritten)
    second.load_weights(path)  # iteration 1 from here on: beta 0.25

    x, y = batches[1]
    for a, b in zip(scheduled.meta_gradient(x, y)[1], second.meta_gradient(x, y)[1]):
        np.testing.assert_allclose(keras.ops.convert_to_numpy(a),
                                   keras.ops.convert_to_numpy(b), rtol=1e-5, atol=1e-8)
    logs = scheduled.train_on_batch(x, y, return_dict=True)
    second_logs = second.train_on_batch(x, y, return_dict=True)
    _assert_same(_state(scheduled), _state(second))
    np.testing.assert_allclose(logs["matching_loss"], second_logs["matching_loss"], rtol=1e-6)


def test_a_schedule_that_reaches_zero_leaves_cross_entropy_alone():
    schedule = keras.optimizers.schedules.PiecewiseConstantDecay([0], [1.0, 0.0])
    model = _compile(toy_transfer_model(seed=2, beta=schedule))
    x, y = toy_batch(n=8, seed=3)
    assert model.train_on_batch(x, y, return_dict=True)["matching_loss"] > 0
    logs = model.train_on_batch(x, y, return_dict=True)
    assert logs["matching_loss"] == 0.0
    np.testing.assert_allclose(logs["loss"], logs["ce"], rtol=1e-6)
    # The meta-gradient is then the meta weight decay's alone: no transfer, nothing to learn.
    assert all(float(np.max(np.abs(keras.ops.convert_to_numpy(g)))) == 0.0
               for g in model.meta_gradient(x, y)[1])


def test_attention_beta_takes_a_schedule_too():
    schedule = keras.optimizers.schedules.PiecewiseConstantDecay([0], [1000.0, 0.0])
    model = _compile(toy_transfer_model("at", seed=2, attention_beta=schedule))
    x, y = toy_batch(n=8, seed=3)
    assert model.train_on_batch(x, y, return_dict=True)["attention_loss"] > 0
    assert model.train_on_batch(x, y, return_dict=True)["attention_loss"] == 0.0


def test_the_schedule_survives_the_config_round_trip():
    schedule = keras.optimizers.schedules.CosineDecay(0.5, 1000, alpha=0.0)
    model = toy_transfer_model(seed=1, beta=schedule)
    config = json.loads(json.dumps(model.get_config()))  # JSON-serializable, as .keras needs
    restored = keras_l2t.TransferModel.from_config(config)
    assert isinstance(restored.beta, keras.optimizers.schedules.CosineDecay)
    assert restored.beta.get_config() == schedule.get_config()
    assert restored.attention_beta == model.attention_beta == 1000.0


@pytest.mark.parametrize("name, value", [("beta", "cosine"), ("beta", True),
                                         ("attention_beta", None)])
def test_a_beta_that_is_neither_number_nor_schedule_is_refused(name, value):
    with pytest.raises(ValueError, match=f"{name} must be a number or a keras.optimizers."
                                         "schedules.LearningRateSchedule"):
        toy_transfer_model(**{name: value})
