"""Source pretraining: the optimizer, the schedule, and a tiny run that loads as a source."""

from __future__ import annotations

import csv

import keras
import numpy as np
import pytest
import tensorflow as tf

from keras_l2t.networks import build_network
from keras_l2t.optimizers import CoupledSGD
from keras_l2t.source_pretraining import pretrain_source, step_decay
from keras_l2t.sources import load_source, source_taps


def test_step_decay_milestones():
    rates = [step_decay(epoch, 200) for epoch in range(200)]
    assert rates[0] == rates[99] == pytest.approx(0.1)
    assert rates[100] == rates[149] == pytest.approx(0.01)
    assert rates[150] == rates[199] == pytest.approx(0.001)
    assert [step_decay(e, 2) for e in range(2)] == pytest.approx([0.1, 0.01])
    assert step_decay(0, 1) == pytest.approx(0.1)


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

    # PyTorch-semantics SGD with the recipe's hyper-parameters; the full file (with
    # its optimizer) also loads, the optimizer being registered.
    optimizer = keras.saving.load_model(path).optimizer
    assert isinstance(optimizer, CoupledSGD)
    assert (optimizer.momentum, optimizer.coupled_weight_decay) == (0.9, 1e-4)
    source = load_source(path)
    assert not source.trainable and not source.trainable_weights
    assert source_taps(source) == ["stage1_out", "stage2_out", "stage3_out"]
    np.testing.assert_allclose(
        source(images, training=False), model(images, training=False), rtol=1e-5, atol=1e-5
    )
