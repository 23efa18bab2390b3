"""The work directory of a finished run, and its export served without keras-l2t."""

from __future__ import annotations

import csv
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest
from backends import tensorflow_only
from experiment_helpers import checkpoint_state, load_json, tiny_config

from keras_l2t.data import augment, load_fashion_mnist_arrays
from keras_l2t.experiment import run, run_experiment

# The files are written by backend-independent code; the JAX export is served in
# test_other_backend (TensorFlow pass), which runs train.py on JAX.
pytestmark = tensorflow_only("the work directory's files do not depend on the backend")


@pytest.mark.slow
def test_work_dir_holds_config_logs_checkpoints_and_results(finished_run):
    work_dir, flags, process = finished_run
    config = load_json(os.path.join(work_dir, "config.json"))
    assert config["method"] == "l2t_ww" and config["epochs"] == 3 and config["seed"] == 3
    results = load_json(os.path.join(work_dir, "results.json"))
    assert 1 <= results["best_epoch"] <= 3
    assert 0.0 <= results["test_accuracy"] <= 1.0 and results["num_test"] == 20
    taps = ("stage1_out", "stage2_out")
    assert results["pairs"] == [[s, t] for s in taps for t in taps]
    assert "sources" not in results  # one source
    assert "pairs: 0 stage1_out -> stage1_out, 1 stage1_out -> stage2_out," in process.stdout
    with open(os.path.join(work_dir, "log.csv")) as f:
        header, *rows = f.read().splitlines()
    assert len(rows) == 3 and "val_accuracy" in header and "matching_loss" in header
    # Per-step cosine decay to 0 over all 3 epochs: 0.1 * (1 + cos(pi * epoch / 3)) / 2.
    rates = [float(dict(zip(header.split(","), row.split(",")))["learning_rate"])
             for row in rows]
    np.testing.assert_allclose(rates, [0.1, 0.075, 0.025], rtol=1e-5)
    best_row = dict(zip(header.split(","), rows[results["best_epoch"] - 1].split(",")))
    assert abs(float(best_row["val_accuracy"]) - results["best_val_accuracy"]) < 1e-5
    assert results["best_val_accuracy"] == max(
        float(dict(zip(header.split(","), row.split(",")))["val_accuracy"]) for row in rows
    ) or abs(results["best_val_accuracy"] - max(
        float(dict(zip(header.split(","), row.split(",")))["val_accuracy"]) for row in rows
    )) < 1e-5
    assert any(n.startswith("events.out") for n in os.listdir(os.path.join(work_dir,
                                                                            "tensorboard")))
    state = checkpoint_state(work_dir)
    assert state["epoch"] == 3 and state["best_epoch"] == results["best_epoch"]
    assert abs(state["best_val_accuracy"] - results["best_val_accuracy"]) < 1e-9
    assert sorted(os.listdir(os.path.join(work_dir, "checkpoints"))) == sorted(
        {"state.json", state["last"], state["best"]})
    assert os.path.exists(os.path.join(work_dir, "target.keras"))
    assert "epoch 3/3" in process.stdout  # one line per epoch when not interactive
    assert (f"Test accuracy at the best validation epoch ({results['best_epoch']}): "
            f"{100 * results['test_accuracy']:.2f}%") in process.stdout
    assert process.stdout.strip().splitlines()[-1] == (
        f"Results in {work_dir}/results.json; the target as target.keras and, for serving, "
        "the SavedModel export/ there.")


@pytest.mark.slow
def test_export_serves_uint8_images_in_a_process_without_keras_l2t(finished_run, fashion_dir,
                                                                   tmp_path):
    import keras
    import tensorflow as tf

    work_dir, _, _ = finished_run
    results = load_json(os.path.join(work_dir, "results.json"))
    images, labels = load_fashion_mnist_arrays(fashion_dir)["test"]
    raw = np.repeat(images[..., None], 3, axis=-1)  # uint8, 28 x 28, not the 8 px trained on
    np.save(tmp_path / "raw.npy", raw)
    script = textwrap.dedent(
        f"""
        import sys
        sys.modules["keras_l2t"] = None  # importing it would fail: prove it is not needed
        import numpy as np, tensorflow as tf
        served = tf.saved_model.load({results["export_dir"]!r})
        images = tf.constant(np.load({str(tmp_path / "raw.npy")!r}))
        out = served.serve(images)
        default = served.signatures["serving_default"](images=images)  # TF-Serving's
        assert (default["classes"].numpy() == out["classes"].numpy()).all()
        np.save({str(tmp_path / "classes.npy")!r}, out["classes"].numpy())
        np.save({str(tmp_path / "logits.npy")!r}, out["logits"].numpy())
        """
    )
    subprocess.run([sys.executable, "-c", script], check=True, timeout=120,
                   env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3"))
    served_classes = np.load(tmp_path / "classes.npy")

    target = keras.models.load_model(os.path.join(work_dir, "target.keras"), compile=False)
    transform = augment.eval_transform("pad_crop", 8)
    pixels = np.stack([transform(tf.constant(image)).numpy() for image in raw])
    logits = target.predict(pixels, verbose=0)
    np.testing.assert_array_equal(served_classes, logits.argmax(axis=1))
    np.testing.assert_allclose(np.load(tmp_path / "logits.npy"), logits, rtol=1e-4, atol=1e-4)
    # The exported model is the one whose test accuracy results.json reports.
    assert np.mean(served_classes == labels) == results["test_accuracy"]


@pytest.mark.slow
def test_an_l2t_ww_run_draws_its_learned_weights(finished_run):
    import tensorflow as tf

    work_dir, _, _ = finished_run
    names = sorted(os.listdir(os.path.join(work_dir, "pictures")))
    assert names == ["channel_weights.png", "pair_weights.png", "pair_weights_over_epochs.png"]
    for name in names:
        with open(os.path.join(work_dir, "pictures", name), "rb") as f:
            assert f.read(8) == b"\x89PNG\r\n\x1a\n"
    tags = {}
    events = os.path.join(work_dir, "tensorboard")
    for name in os.listdir(events):
        for event in tf.compat.v1.train.summary_iterator(os.path.join(events, name)):
            for value in event.summary.value:
                if value.metadata.plugin_data.plugin_name == "images":
                    tags.setdefault(value.tag, set()).add(event.step)
    assert tags["pair_weights"] == {0, 1, 2}  # one heatmap per epoch
    assert tags["channel_weights"] == {0, 1, 2}
    assert "final/pair_weights_over_epochs" in tags


def test_results_target_and_export_come_from_the_best_epoch_not_the_last(
        tmp_path, monkeypatch, fashion_dir, source_file):
    import keras
    import tensorflow as tf

    forced_val_accuracy = {1: 0.9, 2: 0.5}  # epoch 1 is the best, epoch 2 the last
    target_at_epoch = {}

    class ForcedBest(run.TrainingState):
        def save(self, finished_epochs, val_accuracy):
            target_at_epoch[finished_epochs] = self.model.target.get_weights()
            return super().save(finished_epochs, forced_val_accuracy[finished_epochs])

    monkeypatch.setattr(run, "TrainingState", ForcedBest)
    work_dir = str(tmp_path / "run")
    results = run_experiment(tiny_config(work_dir, fashion_dir, source_file, epochs=2,
                                         max_steps_per_epoch=2))
    assert results["best_epoch"] == 1 and results["best_val_accuracy"] == 0.9
    with open(os.path.join(work_dir, "log.csv")) as f:
        rates = [float(row["learning_rate"]) for row in csv.DictReader(f)]
    # The cosine spans the steps taken (2 per epoch here), not the uncapped epoch length.
    np.testing.assert_allclose(rates, [0.1, 0.05], rtol=1e-5)
    best, last = target_at_epoch[1], target_at_epoch[2]
    assert any(not np.array_equal(a, b) for a, b in zip(best, last))
    saved = keras.models.load_model(os.path.join(work_dir, "target.keras"), compile=False)
    for a, b in zip(saved.get_weights(), best, strict=True):
        np.testing.assert_array_equal(a, b)
    assert results["target_weights_sha1"] == run._fingerprint(saved)
    # The export serves the best epoch's network too.
    pixels = np.random.default_rng(0).normal(size=(4, 8, 8, 3)).astype("float32")
    served = tf.saved_model.load(load_json(os.path.join(work_dir, "results.json"))["export_dir"])
    np.testing.assert_allclose(served.logits(tf.constant(pixels)).numpy(),
                               saved.predict(pixels, verbose=0), rtol=1e-4, atol=1e-5)
