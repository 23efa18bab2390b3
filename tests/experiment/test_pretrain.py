"""Source pretraining: --mode=pretrain_source, and the demo's cached source."""

from __future__ import annotations

import os

import keras
import numpy as np
from backends import tensorflow_only
from experiment_helpers import load_json

from keras_l2t.experiment import ExperimentConfig, run_experiment
from keras_l2t.sources import load_source

# Source pretraining is Keras' own fit; on JAX it runs in tests/networks.
pytestmark = tensorflow_only("train.py's source pretraining has no backend code")


def test_pretrain_source_mode_writes_a_loadable_source(tmp_path, fashion_dir, capsys):
    work_dir = str(tmp_path / "source_run")
    results = run_experiment(ExperimentConfig(
        mode="pretrain_source", dataset="fashion_mnist", data_dir=fashion_dir, image_size=8,
        target="cnn_3_4", epochs=1, batch_size=8, val_fraction=0.2, work_dir=work_dir,
        progress="line",
    ))
    assert load_json(os.path.join(work_dir, "results.json")) == results
    assert results["source_file"] == os.path.join(work_dir, "source.keras")
    out = capsys.readouterr().out
    assert "Pretraining cnn_3_4 on fashion_mnist (50 train / 10 val / 20 test, 10 classes, " \
        "8 px) for 1 epochs." in out
    assert f"Use it with --source={results['source_file']}." in out
    source = load_source(results["source_file"])
    assert source.output.shape[-1] == 10 and not source.trainable


def test_transfer_pretrains_its_source_once_and_caches_it(tmp_path, fashion_dir, capsys):
    config = ExperimentConfig(
        dataset="fashion_mnist", data_dir=fashion_dir, image_size=8, val_fraction=0.0,
        train_indices="30:60", source="cnn_4_4", source_pretrain_epochs=1,
        source_pretrain_indices="0:30", target="cnn_3_4", epochs=1, batch_size=8,
        max_steps_per_epoch=1, work_dir=str(tmp_path / "run"), progress="line",
    )
    run_experiment(config)
    out = capsys.readouterr().out
    cached = tmp_path / "run" / "source" / "source.keras"
    assert "Pretraining the source cnn_4_4 on 30 images" in out and cached.exists()
    # Without a validation set the run reports the last epoch, and says so.
    assert "No validation set (--val_fraction=0): test accuracy at the last epoch (1): " in out
    # A second run finding the cached file uses it instead of pretraining again.
    second = tmp_path / "second"
    (second / "source").mkdir(parents=True)
    (second / "source" / "source.keras").write_bytes(cached.read_bytes())
    run_experiment(ExperimentConfig(**{**config.to_dict(), "work_dir": str(second)}))
    out = capsys.readouterr().out
    assert "Pretraining the source" not in out and "Source cnn_4_4: test accuracy" in out
    # --overwrite deletes the cached source with the rest, so it pretrains again; another
    # method (other modules built before the source) gets the same source.
    run_experiment(ExperimentConfig(**{**config.to_dict(), "work_dir": str(second),
                                       "overwrite": True, "method": "fm"}))
    assert "Pretraining the source cnn_4_4 on 30 images" in capsys.readouterr().out
    again = keras.saving.load_model(second / "source" / "source.keras", compile=False)
    first = keras.saving.load_model(cached, compile=False)
    for a, b in zip(again.get_weights(), first.get_weights(), strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)
