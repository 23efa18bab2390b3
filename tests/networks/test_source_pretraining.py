"""Source pretraining: the optimizer, the schedule, and a tiny run that loads as a source."""

from __future__ import annotations

import csv

import keras
import numpy as np
import pytest
import tensorflow as tf

from keras_l2t.networks import build_network
from keras_l2t.source_pretraining import CoupledWeightDecaySGD, pretrain_source, step_decay
from keras_l2t.sources import load_source, source_taps


def test_step_decay_milestones():
    rates = [step_decay(epoch, 200) for epoch in range(200)]
    assert rates[0] == rates[99] == pytest.approx(0.1)
    assert rates[100] == rates[149] == pytest.approx(0.01)
    assert rates[150] == rates[199] == pytest.approx(0.001)
    assert [step_decay(e, 2) for e in range(2)] == pytest.approx([0.1, 0.01])
    assert step_decay(0, 1) == pytest.approx(0.1)


def test_coupled_weight_decay_sgd_is_torch_sgd():
    # torch.optim.SGD(lr, momentum=0.9, weight_decay=wd):
    #   g = grad + wd * p; buf = 0.9 * buf + g (buf = g at step 1); p -= lr * buf
    wd, lrs = 0.01, [0.125, 0.125, 0.015625]  # exact in the float32 learning-rate variable
    grads = [np.array([1.0, -2.0]), np.array([0.5, 0.5]), np.array([-1.0, 3.0])]
    variable = keras.Variable(np.array([1.0, 2.0]), dtype="float64")
    optimizer = CoupledWeightDecaySGD(learning_rate=lrs[0], momentum=0.9, coupled_weight_decay=wd)
    p, buf = np.array([1.0, 2.0]), np.zeros(2)
    for lr, grad in zip(lrs, grads, strict=True):
        optimizer.learning_rate = lr
        optimizer.apply_gradients([(tf.constant(grad), variable)])
        buf = 0.9 * buf + grad + wd * p
        p = p - lr * buf
    np.testing.assert_allclose(variable.numpy(), p, rtol=1e-6)  # float32 momentum buffers
    restored = CoupledWeightDecaySGD.from_config(optimizer.get_config())
    assert restored.coupled_weight_decay == wd


def test_pretrain_tiny_resnet32_then_load_as_source(tmp_path):
    rng = np.random.default_rng(0)
    images = rng.normal(size=(16, 8, 8, 3)).astype("float32")
    labels = rng.integers(0, 3, size=16)
    train = tf.data.Dataset.from_tensor_slices((images, labels)).batch(8)
    val = tf.data.Dataset.from_tensor_slices((images[:8], labels[:8])).batch(8)
    model = build_network("resnet32", num_classes=3, input_shape=(8, 8, 3))
    before = model.get_layer("stem_conv").kernel.numpy().copy()

    path = pretrain_source(model, train, val, epochs=2, work_dir=tmp_path / "run", verbose=0)

    assert path == str(tmp_path / "run" / "source.keras")
    assert not np.allclose(before, model.get_layer("stem_conv").kernel.numpy())
    with open(tmp_path / "run" / "history.csv") as f:
        rows = list(csv.DictReader(f))
    assert [float(r["learning_rate"]) for r in rows] == pytest.approx([0.1, 0.01])
    assert "val_accuracy" in rows[0]

    # The full file (with its optimizer) also loads, the optimizer being registered.
    assert isinstance(keras.saving.load_model(path).optimizer, CoupledWeightDecaySGD)
    source = load_source(path)
    assert not source.trainable and not source.trainable_weights
    assert source_taps(source) == ["stage1_out", "stage2_out", "stage3_out"]
    np.testing.assert_allclose(
        source(images, training=False), model(images, training=False), rtol=1e-5, atol=1e-5
    )
