"""One train_step: what persists (real step, phi update) and what must not (the lookahead)."""

import keras
import numpy as np
import pytest
from backends import variable_gradients
from toy_networks import conv_net, count_calls, toy_batch, toy_transfer_model

import keras_l2t


def _compile(model, **kwargs):
    kwargs.setdefault("optimizer", keras_l2t.CoupledSGD(0.1, momentum=0.9, weight_decay=1e-4))
    kwargs.setdefault("meta_optimizer", keras.optimizers.Adam(1e-2))
    model.compile(metrics=["accuracy"], **kwargs)
    return model


def _real_step_only(model, x, y):
    """The real step written out with a plain tape: theta moves, phi does not."""
    source = model._source_outputs(x)
    channel_weights, pair_weights = model._transfer_weights(source)

    def loss():
        target = model._target_outputs(x)
        terms = model._loss_terms(y, target, source, channel_weights, pair_weights)
        return keras.ops.mean(terms["ce"] + terms["matching"])

    grads = variable_gradients(loss, model._theta_variables, model.variables)
    model.optimizer.apply(grads, model._theta_variables)


def test_after_a_step_only_the_real_step_and_the_meta_update_persist():
    x, y = toy_batch(n=8, seed=2)
    full, reference = _compile(toy_transfer_model(seed=3)), _compile(toy_transfer_model(seed=3))
    full.set_weights(reference.get_weights())
    phi_before = [v.numpy() for v in full._phi_variables]
    for _ in range(2):  # the second step's lookahead starts from real momentums
        for a, b in zip(reference._phi_variables, full._phi_variables):
            a.assign(b.numpy())  # the real step uses phi as the previous meta step left it
        full.train_on_batch(x, y)
        _real_step_only(reference, x, y)

    def state(model):
        return (
            [v.numpy() for v in model._theta_variables]
            + [v.numpy() for v in model._target_non_trainable_variables]  # BN statistics
            + [v.numpy() for v in model.optimizer.momentums]
            + [model.optimizer.iterations.numpy()]
        )

    for a, b in zip(state(full), state(reference)):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)
    moved = [not np.allclose(v.numpy(), b) for v, b in zip(full._phi_variables, phi_before)]
    assert all(moved)
    assert full.meta_optimizer.iterations.numpy() == 2


def test_the_meta_step_applies_the_meta_gradient_at_the_real_steps_result_with_its_l2():
    """phi_1 = phi_0 - lr * (d L_org(theta_{T+1}) / d phi + decay * phi_0), the lookahead
    starting where the real step left theta and the momentums."""
    x, y = toy_batch(n=8, seed=8)
    decay, meta_lr = 1e-2, 10.0
    full, probe = (
        _compile(toy_transfer_model(seed=9, meta_weight_decay=decay),
                 meta_optimizer=keras.optimizers.SGD(meta_lr))
        for _ in range(2)
    )
    probe.set_weights(full.get_weights())
    phi_before = [v.numpy() for v in full._phi_variables]
    full.train_on_batch(x, y)
    _real_step_only(probe, x, y)
    _, meta_grads = probe.meta_gradient(x, y)
    assert len(meta_grads) == len(phi_before)
    for v, before, grad in zip(full._phi_variables, phi_before, meta_grads):
        expected = before - meta_lr * (keras.ops.convert_to_numpy(grad) + decay * before)
        np.testing.assert_allclose(v.numpy(), expected, rtol=1e-4, atol=1e-6, err_msg=v.path)


def test_the_lookahead_replays_this_iterations_scheduled_learning_rate():
    """Under a schedule, the lookahead takes the rate the real step took, not the next one."""
    x, y = toy_batch(n=8, seed=10)
    drops_after_step_0 = keras.optimizers.schedules.PiecewiseConstantDecay([0], [0.1, 0.001])
    scheduled, constant = (
        _compile(toy_transfer_model(seed=11), meta_optimizer=keras.optimizers.SGD(10.0),
                 optimizer=keras_l2t.CoupledSGD(rate, momentum=0.9, weight_decay=1e-4))
        for rate in (drops_after_step_0, 0.1)
    )
    constant.set_weights(scheduled.get_weights())
    scheduled.train_on_batch(x, y)
    constant.train_on_batch(x, y)
    assert keras.ops.convert_to_numpy(scheduled.optimizer.learning_rate) == np.float32(0.001)
    for a, b in zip(scheduled._phi_variables, constant._phi_variables):
        np.testing.assert_allclose(a.numpy(), b.numpy(), rtol=1e-5, atol=1e-7, err_msg=a.path)


class _RecordPhi(keras.callbacks.Callback):
    """phi after every step (on JAX, the trainer's state is written back first)."""

    def __init__(self):
        super().__init__()
        self.iterates = []

    def on_train_batch_end(self, batch, logs=None):
        self.model.jax_state_sync()  # a no-op on TensorFlow
        self.iterates.append([v.numpy() for v in self.model._phi_variables])


def test_a_meta_optimizer_with_ema_leaves_its_moving_average_in_phi():
    """Keras' EMA: average_1 = phi_1, average_2 = m * average_1 + (1 - m) * phi_2; fit
    ends by writing it into phi."""
    x, y = toy_batch(n=8, seed=12)
    model = _compile(toy_transfer_model(seed=13), meta_optimizer=keras.optimizers.SGD(
        10.0, use_ema=True, ema_momentum=0.25))
    record = _RecordPhi()
    model.fit(x, y, batch_size=4, epochs=1, verbose=0, callbacks=[record])
    assert len(record.iterates) == 2
    for v, phi_1, phi_2 in zip(model._phi_variables, *record.iterates, strict=True):
        assert not np.allclose(phi_1, phi_2)
        np.testing.assert_allclose(v.numpy(), 0.25 * phi_1 + 0.75 * phi_2, rtol=1e-5,
                                   atol=1e-6, err_msg=v.path)


@pytest.mark.parametrize("method, target_forwards", [("l2t_ww", 2 + 3), ("fm", 1), ("scratch", 1)])
def test_source_runs_once_per_batch_and_only_meta_methods_look_ahead(method, target_forwards):
    model = _compile(toy_transfer_model(method, lookahead_steps=2))
    source_calls = count_calls(model.source.get_layer("src_conv0"))
    target_calls = count_calls(model.target.get_layer("tgt_conv0"))
    step = model.train_step

    def counted_step(*args):  # counts one iteration, not fit's building of the model
        source_calls.clear()
        target_calls.clear()
        return step(*args)

    model.train_step = counted_step
    x, y = toy_batch(n=4)
    model.fit(x, y, batch_size=4, epochs=1, verbose=0)  # one batch
    assert len(source_calls) == (1 if method != "scratch" else 0)
    # Real step, then T matching steps, one cross-entropy step and the meta objective.
    assert len(target_calls) == target_forwards


def test_fit_reports_every_metric_and_validation():
    model = _compile(toy_transfer_model())
    x, y = toy_batch(n=8)
    history = model.fit(x, y, batch_size=4, epochs=2, validation_data=(x, y), verbose=0).history
    expected = {"loss", "ce", "matching_loss", "meta_ce", "accuracy", "val_loss", "val_accuracy"}
    expected |= {f"lambda_{i}" for i in range(4)} | {f"entropy_{i}" for i in range(4)}
    assert set(history) == expected
    channels = [3, 3, 4, 4]
    for i, c in enumerate(channels):
        assert 0 < history[f"entropy_{i}"][-1] <= np.log(c) + 1e-6
        assert 0 <= history[f"lambda_{i}"][-1] <= 6
    np.testing.assert_allclose(history["loss"][0], history["ce"][0] + history["matching_loss"][0],
                               rtol=1e-5)


def test_held_out_fit_takes_two_zipped_pipelines_and_trains_theta_on_the_first_only():
    """fit on tf.data.Dataset.zip((train, meta)) builds the compiled metrics and
    validates on the usual (x, y); the real step is the paper's (same theta), the meta
    step sees the meta batch (another phi)."""
    import tensorflow as tf

    x, y = toy_batch(n=8, seed=2)
    x_meta, y_meta = toy_batch(n=8, seed=9)
    train = tf.data.Dataset.from_tensor_slices((x, y)).batch(4)
    meta = tf.data.Dataset.from_tensor_slices((x_meta, y_meta)).batch(4).repeat()
    held_out = _compile(toy_transfer_model(seed=3, meta_objective="held_out"))
    history = held_out.fit(tf.data.Dataset.zip((train, meta)), epochs=1,
                           validation_data=(x, y), verbose=0).history
    assert {"accuracy", "meta_ce", "val_accuracy", "lambda_0"} <= set(history)
    assert held_out.optimizer.iterations.numpy() == 2
    # One step from the same start: theta moves as the paper's real step, phi does not.
    start = _compile(toy_transfer_model(seed=3, meta_objective="held_out"))
    paper = _compile(toy_transfer_model(seed=3))
    paper.set_weights(start.get_weights())
    start.train_on_batch((x[:4], y[:4]), (x_meta[:4], y_meta[:4]))
    paper.train_on_batch(x[:4], y[:4])
    for a, b in zip(start._theta_variables, paper._theta_variables):
        np.testing.assert_allclose(a.numpy(), b.numpy(), rtol=1e-6, atol=1e-7)
    assert any(not np.allclose(a.numpy(), b.numpy())
               for a, b in zip(start._phi_variables, paper._phi_variables))
    with pytest.raises(ValueError, match=r"elements \(\(x, y\), \(x_meta, y_meta\)\)"):
        held_out.fit(train, epochs=1, verbose=0)


def test_fm_equals_l2t_ww_with_frozen_meta_networks_and_unit_pair_weights():
    """With a zero meta learning rate, no L2 on phi and lambda forced to 1, the real step of
    l2t_ww is the fm step (uniform channel weights at initialisation)."""
    x, y = toy_batch(n=8, seed=6)
    fm = _compile(toy_transfer_model("fm", seed=7))
    ww = toy_transfer_model("l2t_ww", seed=7, meta_weight_decay=0.0)
    ww.compile(optimizer=keras_l2t.CoupledSGD(0.1), meta_optimizer=keras.optimizers.SGD(0.0))
    for network in ww.pair_weight_networks:  # lambda = relu6(0 * x + 1) = 1
        network.kernel.assign(np.zeros(network.kernel.shape))
    fm_weights = {v.path: v for v in fm.weights}
    for v in ww._theta_variables + ww._target_non_trainable_variables:
        v.assign(fm_weights[v.path].numpy())
    fm.train_on_batch(x, y)
    ww.train_on_batch(x, y)
    for a, b in zip(fm._theta_variables, ww._theta_variables):
        np.testing.assert_allclose(a.numpy(), b.numpy(), rtol=1e-5, atol=1e-7)


def _regularized_target(seed: int, kernel_l2: float, activity_l2: float) -> keras.Model:
    keras.utils.set_random_seed(seed)
    return conv_net("tgt", [2, 3], 3, kernel_l2=kernel_l2, activity_l2=activity_l2)


def test_the_targets_own_losses_join_the_step_as_in_keras_fit():
    x, y = toy_batch(n=8, seed=4)
    plain = _regularized_target(5, kernel_l2=0.5, activity_l2=0.05)
    plain.compile(optimizer=keras_l2t.CoupledSGD(0.1, momentum=0.9, weight_decay=1e-4),
                  loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    model = _compile(toy_transfer_model("scratch", target=_regularized_target(5, 0.5, 0.05)))
    model.target.set_weights(plain.get_weights())
    assert len(model.target.losses) == 2  # the kernels' L2 (the activity L2 needs a call)
    keras_logs = plain.train_on_batch(x, y, return_dict=True)
    logs = model.train_on_batch(x, y, return_dict=True)
    np.testing.assert_allclose(logs["loss"], keras_logs["loss"], rtol=1e-5)
    assert logs["loss"] > logs["ce"] + 0.1  # the regularization is in the loss
    for ours, keras_weight in zip(model.target.get_weights(), plain.get_weights()):
        np.testing.assert_allclose(ours, keras_weight, rtol=1e-4, atol=1e-6)


def test_the_targets_own_losses_join_every_lookahead_objective_at_its_point():
    x, y = toy_batch(n=8, seed=4)
    free = toy_transfer_model(seed=3, target=_regularized_target(5, 0.0, 0.0))
    regularized = toy_transfer_model(seed=3, target=_regularized_target(5, 0.3, 0.0))
    regularized.set_weights(free.get_weights())
    params = [0.5 * v.value for v in free._theta_variables]  # not the variables' values
    kernels = [0.5 * v.numpy() for v in regularized.target.trainable_variables
               if v.regularizer is not None]
    expected = 0.3 * sum(float(np.sum(k**2)) for k in kernels)
    objectives = []
    for model in (free, regularized):
        source = model._source_outputs(x)
        state = [v.value for v in model._target_non_trainable_variables]
        objectives.append([
            float(objective(params))
            for objective in model._lookahead_objectives(
                x, y, source, model._transfer_weights(source), model._betas(), state, 8.0)
        ])
    assert len(kernels) == 2 and len(objectives[0]) == 3  # T = 2 matching steps, then L_org
    np.testing.assert_allclose(np.subtract(objectives[1], objectives[0]), expected, rtol=1e-4)


def test_fit_and_evaluate_without_metrics_and_with_column_labels():
    x, y = toy_batch(n=8, seed=4)
    column = y[:, None]  # (N, 1), as keras.datasets.cifar100.load_data() gives them
    model = toy_transfer_model(seed=3)
    model.compile()
    history = model.fit(x, column, batch_size=4, epochs=1, validation_data=(x, column),
                        verbose=0)
    assert np.isfinite(history.history["val_loss"][0])
    evaluated = model.evaluate(x, column, verbose=0, return_dict=True)
    assert set(evaluated) == {"loss"}
    # The loss is the target's mean cross-entropy, in inference mode, as predict sees it.
    logits = model.predict(x, verbose=0).astype("float64")
    log_probabilities = logits - np.log(np.exp(logits).sum(axis=1, keepdims=True))
    np.testing.assert_allclose(evaluated["loss"], -log_probabilities[np.arange(8), y].mean(),
                               rtol=1e-5)
    weights = model.get_weights()
    with pytest.raises(ValueError, match="class_weight"):
        model.fit(x, y, class_weight={0: 1.0, 1: 2.0, 2: 1.0}, verbose=0)
    for run in (model.fit, model.evaluate):
        with pytest.raises(ValueError, match="needs labels to train and evaluate"):
            run(x, batch_size=4, verbose=0)
    with pytest.raises(ValueError, match="sample weights"):
        model.evaluate(x, y, sample_weight=np.ones(8), verbose=0)
    with pytest.raises(ValueError):  # a rank-3 input: Keras' own error, worded by backend
        model.predict(np.zeros((2, 8, 8), "float32"), verbose=0)
    # A call that fails leaves the model as it was (Keras' JAX trainer emptied it).
    for a, b in zip(model.get_weights(), weights, strict=True):
        np.testing.assert_array_equal(a, b)


class _InterruptAfter(keras.callbacks.Callback):
    def __init__(self, steps: int):
        super().__init__()
        self.steps = steps

    def on_train_batch_end(self, batch, logs=None):
        if batch + 1 == self.steps:
            raise KeyboardInterrupt


def test_an_interrupted_fit_keeps_the_steps_it_finished():
    x, y = toy_batch(n=12, seed=5)
    model = _compile(toy_transfer_model(seed=6))
    initial = model.get_weights()
    with pytest.raises(KeyboardInterrupt):
        model.fit(x, y, batch_size=4, epochs=1, verbose=0, callbacks=[_InterruptAfter(2)])
    assert model.optimizer.iterations.numpy() == 2
    assert model.meta_optimizer.iterations.numpy() == 2
    assert any(not np.array_equal(a, b) for a, b in zip(model.get_weights(), initial))
    model.fit(x, y, batch_size=4, epochs=1, verbose=0)  # and training goes on from there
    assert model.optimizer.iterations.numpy() == 5


@pytest.mark.parametrize("meta_every", [1, 2])
def test_several_steps_per_execution_train_exactly_as_one(meta_every):
    x, y = toy_batch(n=8)
    runs = []
    for steps in (1, 2):
        model = _compile(toy_transfer_model(pairs="single", meta_every=meta_every),
                         steps_per_execution=steps)
        history = model.fit(x, y, batch_size=4, epochs=1, shuffle=False, verbose=0).history
        runs.append(([keras.ops.convert_to_numpy(v) for v in model.variables],
                     {key: values[-1] for key, values in history.items()}))
    (one, one_logs), (two, two_logs) = runs
    assert len(one) == len(two)
    for a, b in zip(one, two):
        np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-7)
    assert one_logs == pytest.approx(two_logs, rel=1e-6)


def _state(model) -> list:
    """theta, BN statistics, momentums, iteration count, phi, the meta-optimizer's state."""
    return [keras.ops.convert_to_numpy(v) for v in (
        model._theta_variables + model._target_non_trainable_variables
        + model.optimizer.variables + model._phi_variables + model.meta_optimizer.variables)]


def _assert_same(a: list, b: list) -> None:
    assert len(a) == len(b)
    for first, second in zip(a, b):
        np.testing.assert_allclose(first, second, rtol=1e-5, atol=1e-6)


def test_meta_every_two_is_an_exact_iteration_then_a_real_step_alone():
    batches = [toy_batch(n=8, seed=s) for s in (2, 4, 6)]
    every_two = _compile(toy_transfer_model(seed=3, meta_every=2))
    exact = _compile(toy_transfer_model(seed=3))
    exact.set_weights(every_two.get_weights())
    records = []
    record = every_two._record_step
    every_two._record_step = lambda *args: records.append(1) or record(*args)

    every_two.train_on_batch(*batches[0])  # iteration 0: lookahead and meta step
    traced = len(records)  # _record_step runs when the step is traced, not when it runs
    exact.train_on_batch(*batches[0])
    _assert_same(_state(every_two), _state(exact))
    meta_state = [keras.ops.convert_to_numpy(v)
                  for v in every_two._phi_variables + every_two.meta_optimizer.variables]

    every_two.train_on_batch(*batches[1])  # iteration 1: the real step alone, phi fixed
    _real_step_only(exact, *batches[1])
    _assert_same(_state(every_two), _state(exact))
    _assert_same([keras.ops.convert_to_numpy(v) for v in every_two._phi_variables
                  + every_two.meta_optimizer.variables], meta_state)

    every_two.train_on_batch(*batches[2])  # iteration 2: a meta step again
    exact.train_on_batch(*batches[2])
    _assert_same(_state(every_two), _state(exact))
    assert int(every_two.meta_optimizer.iterations.numpy()) == 2
    assert len(records) == traced  # one compiled step holds both branches: no retrace


def test_meta_ce_averages_the_meta_iterations_only():
    x, y = toy_batch(n=12, seed=7)
    model = _compile(toy_transfer_model(seed=8, meta_every=2))
    logs = model.fit(x, y, batch_size=4, epochs=1, shuffle=False, verbose=0).history
    assert float(model._meta_tracker.count.numpy()) == 2  # iterations 0 and 2 of 3
    assert logs["meta_ce"][-1] > 0.5  # a cross-entropy, not diluted by the skipped one


def test_a_resume_in_the_middle_of_a_meta_every_cycle_equals_the_uninterrupted_run(tmp_path):
    batches = [toy_batch(n=8, seed=s) for s in (1, 3, 5, 7)]
    whole = _compile(toy_transfer_model(seed=9, meta_every=3))
    first = _compile(toy_transfer_model(seed=9, meta_every=3))
    for x, y in batches:
        whole.train_on_batch(x, y)
    first.train_on_batch(*batches[0])
    path = str(tmp_path / "state.weights.h5")
    first.save_weights(path)  # after iteration 0 of the cycle 0, 1, 2
    resumed = _compile(toy_transfer_model(seed=10, meta_every=3))
    resumed.train_on_batch(*batches[0])  # builds both optimizers (then overwritten)
    resumed.load_weights(path)
    for x, y in batches[1:]:
        resumed.train_on_batch(x, y)
    _assert_same(_state(resumed), _state(whole))
    assert int(whole.meta_optimizer.iterations.numpy()) == 2  # iterations 0 and 3
