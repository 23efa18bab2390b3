"""Source pretraining: the optimizer, the schedule, and a tiny run that loads as a source."""

from __future__ import annotations

import csv

import keras
import numpy as np
import pytest
import tensorflow as tf

from keras_l2t.networks import build_network, small_cnn
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


def _tiny_data():
    rng = np.random.default_rng(1)
    images = rng.normal(size=(16, 8, 8, 3)).astype("float32")
    labels = rng.integers(0, 3, size=16)
    return images, labels


def _history_rates(work_dir):
    with open(work_dir / "history.csv") as f:
        return [(int(r["epoch"]), float(r["learning_rate"])) for r in csv.DictReader(f)]


def test_history_has_one_row_per_epoch_after_a_crash_and_a_rerun(tmp_path):
    images, labels = _tiny_data()
    work_dir = tmp_path / "run"

    def failing_in_epoch_two():  # called at each epoch's start (JAX reads once more)
        if (work_dir / "history.csv").exists() and _history_rates(work_dir):
            raise RuntimeError("simulated crash")  # epoch 0 is logged and backed up
        for start in (0, 8):
            yield images[start:start + 8], labels[start:start + 8]

    spec = (tf.TensorSpec((None, 8, 8, 3), tf.float32), tf.TensorSpec((None,), tf.int64))
    crashing = tf.data.Dataset.from_generator(failing_in_epoch_two, output_signature=spec)
    with pytest.raises(Exception, match="simulated crash"):
        pretrain_source(small_cnn("cnn_4", 3, (8, 8, 3)), crashing, None, epochs=3,
                        work_dir=work_dir, verbose=0)
    assert _history_rates(work_dir) == [(0, pytest.approx(0.1))]

    # The rerun resumes at epoch 1 from the backup and continues the history.
    train = tf.data.Dataset.from_tensor_slices((images, labels)).batch(8)
    pretrain_source(small_cnn("cnn_4", 3, (8, 8, 3)), train, None, epochs=3,
                    work_dir=work_dir, verbose=0)
    assert _history_rates(work_dir) == [
        (0, pytest.approx(0.1)), (1, pytest.approx(0.1)), (2, pytest.approx(0.01))]

    # Without a backup (fit had finished), a rerun starts over and rewrites the history.
    (work_dir / "source.keras").unlink()
    pretrain_source(small_cnn("cnn_4", 3, (8, 8, 3)), train, None, epochs=2,
                    work_dir=work_dir, verbose=0)
    assert _history_rates(work_dir) == [(0, pytest.approx(0.1)), (1, pytest.approx(0.01))]
