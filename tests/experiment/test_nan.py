"""A NaN loss stops the run naming the step; the last good checkpoint stays intact."""

from __future__ import annotations

import os
import threading

import keras
import numpy as np
import pytest
import tensorflow as tf
from experiment_helpers import checkpoint_state, checkpoint_values, load_json

from keras_l2t.experiment import ExperimentConfig, NonFiniteLoss, run, run_experiment
from keras_l2t.experiment.data import ExperimentData


def test_nan_loss_stops_at_its_step_and_keeps_the_last_checkpoint(tmp_path, fashion_dir,
                                                                  source_file, monkeypatch):
    original = ExperimentData.train

    def poisoned(self, epoch):
        dataset = original(self, epoch)
        if epoch < 1:
            return dataset
        # From the second batch of the second epoch on, the images are NaN.
        def poison(index, batch):
            x, y = batch
            return tf.where(index >= 1, tf.fill(tf.shape(x), np.nan), x), y
        return dataset.enumerate().map(poison)

    monkeypatch.setattr(ExperimentData, "train", poisoned)
    in_main_thread = set()
    check_step = run.check_step

    def recorded_check_step(*args, **kwargs):
        in_main_thread.add(threading.current_thread() is threading.main_thread())
        return check_step(*args, **kwargs)

    monkeypatch.setattr(run, "check_step", recorded_check_step)
    work_dir = str(tmp_path / "run")
    config = ExperimentConfig(
        dataset="fashion_mnist", data_dir=fashion_dir, image_size=8, val_fraction=0.2,
        source=source_file, target="cnn_3_4", epochs=3, batch_size=8, work_dir=work_dir,
        progress="line",
    )
    with pytest.raises(NonFiniteLoss, match=r"nan at epoch 2, step 2 \(global step \d+\)"):
        run_experiment(config)
    assert checkpoint_state(work_dir)["epoch"] == 1
    values = checkpoint_values(work_dir)
    assert all(np.all(np.isfinite(v)) for v in values.values() if v.dtype.kind == "f")
    assert not os.path.exists(os.path.join(work_dir, "results.json"))
    assert load_json(os.path.join(work_dir, "config.json"))["epochs"] == 3
    # JAX's fit checks in its callback thread, so it never waits for a step's logs
    # before starting the next step; TensorFlow's fit runs its callbacks in line.
    assert in_main_thread == {keras.backend.backend() != "jax"}


def test_the_nan_message_says_which_checkpoint_is_kept():
    with pytest.raises(NonFiniteLoss) as first:
        run.check_step(float("nan"), epoch=0, step=1, steps=6)
    assert str(first.value) == (
        "The training loss became nan at epoch 1, step 2 (global step 2); training stopped "
        "and no checkpoint was written (the first epoch had not finished). Lower "
        "--learning_rate or check the data, in a new --work_dir.")
    with pytest.raises(NonFiniteLoss, match=r"at epoch 3, step 1 \(global step 13\); "
                       r"training stopped and the checkpoint of epoch 2 \(the last finished\)"
                       " is kept"):
        run.check_step(float("inf"), epoch=2, step=0, steps=6)
    run.check_step(1.5, epoch=0, step=0, steps=6)  # a finite loss passes
