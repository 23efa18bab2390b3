"""--strategy=mirrored over two CPU devices (--cpu_devices=2), in a subprocess:
`MirroredStrategy` on TensorFlow, `keras.distribution.DataParallel` on JAX.

A subprocess, because the devices are split before the backend starts, and two
MirroredStrategy objects in one process share collective instance keys: a second
strategy's all-reduces would collide with this run's.
"""

from __future__ import annotations

import os

import keras
import pytest
from experiment_helpers import load_json, run_train, tiny_flags

pytestmark = pytest.mark.slow  # every test here starts train.py


def test_mirrored_run_over_two_replicas(tmp_path, fashion_dir, source_file):
    work_dir = str(tmp_path / "run")
    flags = tiny_flags(work_dir, fashion_dir, source_file, strategy="mirrored", cpu_devices=2,
                       epochs=1, max_steps_per_epoch=2)
    process = run_train(flags)
    assert process.returncode == 0, process.stderr[-3000:]
    backend = keras.backend.backend()
    assert f"2 replica(s) on {backend}, 2 steps/epoch" in process.stdout
    assert "epoch 1/1" in process.stdout
    results = load_json(os.path.join(work_dir, "results.json"))
    assert 0.0 <= results["test_accuracy"] <= 1.0
    assert os.path.isdir(os.path.join(work_dir, "export"))


def test_source_pretraining_over_two_replicas_with_an_uneven_validation_batch(
    tmp_path, fashion_dir
):
    work_dir = str(tmp_path / "source")
    process = run_train([
        "--mode=pretrain_source", "--dataset=fashion_mnist", f"--data_dir={fashion_dir}",
        "--image_size=8", "--target=cnn_3_4", "--epochs=1", "--batch_size=8",
        "--eval_batch_size=5", "--val_fraction=0.2", "--strategy=mirrored",
        "--cpu_devices=2", "--progress=line", f"--work_dir={work_dir}",
    ])
    assert process.returncode == 0, process.stderr[-3000:]
    results = load_json(os.path.join(work_dir, "results.json"))
    assert 0.0 <= results["val_accuracy"] <= 1.0
    assert os.path.exists(os.path.join(work_dir, "source.keras"))
