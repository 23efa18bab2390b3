"""train.py, unchanged, on JAX from the TensorFlow pass: its SavedModel (converted with
jax2tf) loads here and serves the network whose test accuracy results.json reports, and
its target.keras loads on TensorFlow. (Kill and resume on each backend: test_resume, in
that backend's pass.)"""

from __future__ import annotations

import os

import keras
import numpy as np
import pytest
import tensorflow as tf
from backends import tensorflow_only
from experiment_helpers import checkpoint_state, load_json, run_train, tiny_flags

from keras_l2t.data import augment, load_fashion_mnist_arrays

# Every test here starts train.py. The JAX pass would run it on TensorFlow, which the
# TensorFlow pass's experiment tests do already.
pytestmark = [pytest.mark.slow,
              tensorflow_only("it runs train.py on JAX from the TensorFlow pass")]

OTHER = "jax"


def test_train_py_trains_and_exports_on_the_other_backend(tmp_path, fashion_dir,
                                                           source_file):
    env = {"KERAS_BACKEND": OTHER}
    work_dir = str(tmp_path / "run")
    flags = tiny_flags(work_dir, fashion_dir, source_file, epochs=2, max_steps_per_epoch=3)

    run = run_train(flags, env=env)
    assert run.returncode == 0, run.stderr[-3000:]
    assert f"replica(s) on {OTHER}," in run.stdout and "epoch 2/2" in run.stdout
    assert checkpoint_state(work_dir)["epoch"] == 2

    results = load_json(os.path.join(work_dir, "results.json"))
    assert results["best_epoch"] in (1, 2) and 0.0 <= results["test_accuracy"] <= 1.0
    images, labels = load_fashion_mnist_arrays(fashion_dir)["test"]
    raw = np.repeat(images[..., None], 3, axis=-1)  # uint8, 28 x 28
    loaded = tf.saved_model.load(results["export_dir"])  # kept: it owns the variables
    served = loaded.serve(tf.constant(raw))
    # The export is the network results.json reports (test_outputs compares it with
    # target.keras on the backend that trained it), and `logits` serves the same.
    assert np.mean(served["classes"].numpy() == labels) == results["test_accuracy"]
    transform = augment.eval_transform("pad_crop", 8)
    pixels = tf.stack([transform(tf.constant(image)) for image in raw])
    np.testing.assert_allclose(loaded.logits(pixels).numpy(), served["logits"].numpy(),
                               rtol=1e-5, atol=1e-5)
    # The saved target, trained on the other backend, loads on this one and agrees.
    target = keras.models.load_model(os.path.join(work_dir, "target.keras"), compile=False)
    np.testing.assert_allclose(keras.ops.convert_to_numpy(target(pixels, training=False)),
                               served["logits"].numpy(), rtol=1e-4, atol=1e-4)
