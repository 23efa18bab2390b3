"""Bad input fails at once, with one clear line naming the fix, and writes nothing."""

from __future__ import annotations

import errno
import os
import types

import keras
import pytest
from backends import tensorflow_only
from experiment_helpers import run_train, tiny_flags

from keras_l2t.experiment import ExperimentConfig, ExperimentError, run_experiment, work_dir


def _config(work_dir, fashion_dir, source_file, **overrides) -> ExperimentConfig:
    values = dict(
        dataset="fashion_mnist", data_dir=fashion_dir, image_size=8, val_fraction=0.2,
        source=source_file, target="cnn_3_4", epochs=1, batch_size=8, work_dir=str(work_dir),
        progress="line",
    )
    values.update(overrides)
    return ExperimentConfig(**values)


@pytest.mark.parametrize(
    "overrides, message",
    [
        (dict(dataset="imagenet21k"), "Unknown dataset 'imagenet21k'"),
        (dict(method="l2t_www"), "--method: Unknown method 'l2t_www'. Choose one of"),
        (dict(target="resnet19"), "Unknown network 'resnet19'"),
        (dict(target_layers=["stage1_out", "stage9_out"]),
         "--target_layers: The target model 'cnn_3_4' has no layer named 'stage9_out'"),
        (dict(source_layers=["nope"]), "--source_layers: The source model"),
        (dict(pairs="stage1_out:stage9_out"),
         "--pairs: The target model 'cnn_3_4' has no layer named 'stage9_out'"),
        (dict(pairs="stage1_out-stage1_out"), "--pairs: cannot read"),
        (dict(batch_size=0), "--batch_size must be >= 1"),
        (dict(source=None), "--method=l2t_ww needs --source"),
        (dict(strategy="multi_worker"),
         "needs the TF_CONFIG environment variable" if keras.backend.backend() == "tensorflow"
         else "run it with KERAS_BACKEND=tensorflow"),
        (dict(source="missing.keras"), "Source file 'missing.keras' does not exist"),
        (dict(train_indices="10:5"), "--train_indices must be START:STOP"),
        (dict(dataset="mit_indoor67", data_dir="/no/such/folder"),
         "/no/such/folder does not exist (or is not a folder). Download mit_indoor67 and lay "
         "it out as docs/data.md shows"),
        (dict(seed=-1), "--seed must be in [0, 2**32), got -1"),
        (dict(cpu_devices=-1), "--cpu_devices must be >= 0, got -1"),
        (dict(learning_rate=-1.0), "--learning_rate must be > 0, got -1.0"),
        (dict(dataset="", target=""), "--dataset and --target are required (or a "
         "--flagfile that sets them"),
        (dict(split_seed=-1), "--split_seed must be in [0, 2**32), got -1"),
        (dict(momentum=1.5), "--momentum must be in [0, 1], got 1.5"),
        (dict(method="lwf", distillation_temperature=0.0),
         "--distillation_temperature must be > 0"),
        (dict(pair_weight_activation="bogus"),
         "--pair_weight_activation: Unknown pair weight activation 'bogus'. Choose one of "
         "('relu6', 'relu', 'relu_avg', 'constant')"),
        (dict(lookahead_steps=0), "--lookahead_steps: lookahead_steps must be an integer >= 1"),
        (dict(meta_every=0), "--meta_every: meta_every must be an integer >= 1, got 0"),
        (dict(beta_schedule="linear"),
         "--beta_schedule='linear' is not one of constant, cosine"),
        (dict(source_normalization="batch"),
         "--source_normalization='batch' is not one of none, rms"),
        (dict(transfer_gate="always"), "--transfer_gate='always' is not one of none, aligned"),
        (dict(pair_weight_normalization="sum"),
         "--pair_weight_normalization='sum' is not one of none, mean"),
        (dict(method="fm", pair_weight_normalization="mean"),
         "--pair_weight_normalization: pair_weight_normalization='mean' needs learned pair "
         "weights (l2t_ww), not 'fm'"),
        (dict(method="scratch", transfer_gate="aligned"),
         "--transfer_gate: transfer_gate='aligned' gates a method's transfer terms; 'scratch' "
         "has none"),
        (dict(transfer_gate_momentum=0.5), "--transfer_gate_momentum: "
         "transfer_gate_momentum=0.5 averages the gate's alignment; set "
         "transfer_gate='aligned' too"),
        (dict(transfer_gate="aligned", transfer_gate_momentum=1.0),
         "--transfer_gate_momentum: transfer_gate_momentum must be a number in [0, 1), got "
         "1.0"),
        (dict(method="fm", meta_every=2), "--meta_every: meta_every=2 needs a method with "
         "meta-networks (l2t_ww, l2t_w), not 'fm'"),
        (dict(image_size=2, method="scratch"), "Network 'cnn_3_4' cannot take 2-px images"),
        (dict(image_size=16), "takes 8x8 images, not --image_size=16; pass --image_size=8"),
        (dict(source="cnn_4_6", source_pretrain_epochs=1, source_pretrain_indices="0:999"),
         "--source_pretrain_indices must lie in [0, 60)"),
        (dict(meta_objective="heldout"),
         "--meta_objective='heldout' is not one of train_batch, held_out"),
        (dict(meta_fraction=0.1), "--meta_fraction=0.1 carves a meta split for "
         "--meta_objective=held_out; add --meta_objective=held_out, or drop --meta_fraction"),
        (dict(meta_objective="held_out", meta_fraction=1.0),
         "--meta_fraction must be in [0, 1), got 1.0"),
        (dict(meta_objective="held_out", meta_fraction=0.5, samples_per_class=1),
         "--dataset=fashion_mnist: --meta_fraction=0.5 would leave class 0 ('T-shirt/top') "
         "with no training image"),
        (dict(mode="pretrain_source", meta_objective="held_out"),
         "--meta_objective=held_out is for --mode=transfer"),
        (dict(batch_size=64), "--batch_size=64 is larger than the 50 training examples; use "
         "at most 50."),
    ],
)
def test_bad_input_is_one_clear_error_and_writes_nothing(tmp_path, fashion_dir, source_file,
                                                         overrides, message, monkeypatch):
    monkeypatch.delenv("TF_CONFIG", raising=False)
    work_dir = tmp_path / "run"
    with pytest.raises(ExperimentError) as error:
        run_experiment(_config(work_dir, fashion_dir, source_file, **overrides))
    assert message in str(error.value)
    assert "\n" not in str(error.value) and "\x1b" not in str(error.value)
    assert not work_dir.exists()


def test_a_folder_as_source_points_at_the_source_file_inside(tmp_path, fashion_dir,
                                                             source_file):
    pretrained = os.path.dirname(source_file)  # as --mode=pretrain_source leaves it
    with pytest.raises(ExperimentError) as error:
        run_experiment(_config(tmp_path / "run", fashion_dir, source_file, source=pretrained))
    assert str(error.value) == f"--source={pretrained} is a folder; pass --source={source_file}"
    with pytest.raises(ExperimentError, match="is a folder, not a network: pass a .keras"):
        run_experiment(_config(tmp_path / "run", fashion_dir, source_file,
                               source=str(tmp_path)))
    assert not (tmp_path / "run").exists()


@tensorflow_only("JAX's DataParallel runs meta_every > 1")
def test_meta_every_over_several_replicas_is_refused_on_tensorflow(tmp_path, fashion_dir,
                                                                   source_file):
    two_replicas = types.SimpleNamespace(num_replicas_in_sync=2)
    with pytest.raises(ExperimentError) as error:
        run_experiment(_config(tmp_path / "run", fashion_dir, source_file, meta_every=2),
                       strategy=two_replicas)
    assert str(error.value) == ("--meta_every=2 does not run over several replicas on "
                                "TensorFlow; use KERAS_BACKEND=jax, one device, or "
                                "--meta_every=1.")
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize("mode", ["transfer", "pretrain_source"])
def test_a_batch_the_replicas_cannot_split_is_refused_before_writing(
    tmp_path, fashion_dir, source_file, mode
):
    # Only the replica count is read before this check (test_mirrored runs two for real).
    two_replicas = types.SimpleNamespace(num_replicas_in_sync=2)
    run = tmp_path / "run"
    with pytest.raises(ExperimentError) as error:
        run_experiment(_config(run, fashion_dir, source_file, mode=mode, batch_size=7),
                       strategy=two_replicas)
    assert str(error.value) == (
        "--batch_size=7 does not divide by the 2 replicas; use a multiple of 2, e.g. 6.")
    assert not run.exists()


@pytest.mark.parametrize("role", ["target", "source", "source_weights"])
def test_a_file_that_is_not_a_model_is_one_clear_error(tmp_path, fashion_dir, source_file, role):
    garbage = tmp_path / "garbage.keras"
    garbage.write_text("not a model")
    overrides = {
        "target": dict(target=str(garbage)),
        "source": dict(source=str(garbage)),
        "source_weights": dict(source="cnn_4_6", source_weights=str(garbage)),
    }[role]
    expected = {
        "target": "is not a Keras model file",
        "source": "is not a Keras model file",
        "source_weights": "--source_weights: Weights file",
    }[role]
    with pytest.raises(ExperimentError, match=expected) as error:
        run_experiment(_config(tmp_path / "run", fashion_dir, source_file, **overrides))
    assert "File not found" not in str(error.value)
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize("mode", ["transfer", "pretrain_source"])
def test_overwrite_deletes_only_an_experiment_and_only_after_the_checks(
    tmp_path, fashion_dir, source_file, mode
):
    foreign = tmp_path / "project"
    foreign.mkdir()
    (foreign / "config.json").write_text('{"name": "my-web-app"}')
    (foreign / "main.py").write_text("print('keep me')")
    for overwrite, message in ((False, "did not write"), (True, "refusing to delete")):
        with pytest.raises(ExperimentError, match=message):
            run_experiment(_config(foreign, fashion_dir, source_file, mode=mode,
                                   overwrite=overwrite))
    assert (foreign / "main.py").exists()

    earlier = tmp_path / "earlier"
    work_dir.write_json_atomic(str(earlier / "config.json"),
                               _config(earlier, fashion_dir, source_file).to_dict())
    (earlier / "source.keras").write_text("an earlier run's work")
    with pytest.raises(ExperimentError, match="dataset-fashion-mnist"):  # no data there
        run_experiment(_config(earlier, str(tmp_path / "no_data"), source_file, mode=mode,
                               overwrite=True))
    assert (earlier / "source.keras").exists()


def test_overwrite_deletes_what_train_py_wrote_and_keeps_the_users_files(
    tmp_path, fashion_dir, source_file
):
    run = tmp_path / "run"
    work_dir.write_json_atomic(str(run / "config.json"),
                               _config(run, fashion_dir, source_file).to_dict())
    for name in ("log.csv", "target.keras", "results.json", "source.keras", ".tmp_x"):
        (run / name).write_text("train.py's")
    for name in ("checkpoints", "export", "pictures", "source", "tensorboard", "backup"):
        (run / name).mkdir()
        (run / name / "file").write_text("train.py's")
    (run / "notes.txt").write_text("the user's")
    (run / "my_data").mkdir()
    (run / "my_data" / "labels.csv").write_text("the user's")
    work_dir.clear(str(run))
    assert sorted(p.name for p in run.iterdir()) == ["my_data", "notes.txt"]
    assert (run / "my_data" / "labels.csv").read_text() == "the user's"


def test_work_dir_json_files_follow_the_umask(tmp_path):
    previous = os.umask(0o022)
    try:
        work_dir.write_json_atomic(str(tmp_path / "results.json"), {"a": 1})
    finally:
        os.umask(previous)
    assert (tmp_path / "results.json").stat().st_mode & 0o777 == 0o644


def test_unwritable_work_dir(tmp_path, monkeypatch, fashion_dir, source_file):
    blocker = tmp_path / "a_file"
    blocker.write_text("")
    with pytest.raises(ExperimentError, match="is a file, not a directory"):
        run_experiment(_config(blocker / "run", fashion_dir, source_file))
    locked = tmp_path / "locked"
    locked.mkdir(mode=0o500)
    if os.geteuid() == 0:  # root writes anywhere: its probe meets what a user's would

        def refused(*args, **kwargs):
            raise PermissionError(errno.EACCES, os.strerror(errno.EACCES))

        monkeypatch.setattr(work_dir.tempfile, "NamedTemporaryFile", refused)
    with pytest.raises(ExperimentError, match=r"cannot be written \(Permission denied in"):
        run_experiment(_config(locked / "run", fashion_dir, source_file))
    assert not (locked / "run").exists()


def test_missing_data_names_the_package(tmp_path, source_file):
    with pytest.raises(ExperimentError, match="dataset-fashion-mnist"):
        run_experiment(_config(tmp_path / "run", str(tmp_path / "nothing"), source_file))
    assert not (tmp_path / "run").exists()


@pytest.mark.slow
def test_command_line_errors_exit_non_zero_with_one_line(tmp_path, fashion_dir, source_file):
    missing = run_train(["--flagfile=configs/no_such.flags"])
    assert missing.returncode == 2
    assert "flagfile 'configs/no_such.flags' not found" in missing.stderr
    assert "configs/demo.flags" in missing.stderr

    work_dir = str(tmp_path / "run")
    unknown = run_train([*tiny_flags(work_dir, fashion_dir, source_file), "--epoch=3"])
    assert unknown.returncode != 0
    assert "Unknown command line flag 'epoch'" in unknown.stderr

    # A bad value given after a flagfile: the later flag wins, and the run stops at once.
    flagfile = tmp_path / "run.flags"
    flagfile.write_text("\n".join(tiny_flags(work_dir, fashion_dir, source_file,
                                             method="l2t_w")) + "\n")
    bad = run_train([f"--flagfile={flagfile}", "--method=nonsense"])
    assert bad.returncode == 2
    assert bad.stderr.strip().splitlines()[-1].startswith(
        "error: --method: Unknown method 'nonsense'")
    assert "Traceback" not in bad.stderr
    assert not os.path.exists(work_dir)


def test_an_image_damaged_past_its_header_is_named_with_the_way_to_find_it(tmp_path):
    import numpy as np
    import tensorflow as tf

    from keras_l2t.data import find_unreadable_images

    root = tmp_path / "images"
    rng = np.random.default_rng(0)
    for name in ("a", "b"):
        (root / "train" / name).mkdir(parents=True)
        for k in range(4):
            image = rng.integers(0, 256, (16, 16, 3), dtype=np.uint8)
            (root / "train" / name / f"{k}.jpg").write_bytes(tf.io.encode_jpeg(image).numpy())
    damaged = root / "train" / "b" / "3.jpg"
    damaged.write_bytes(damaged.read_bytes()[:200])  # a valid header, then nothing
    assert find_unreadable_images(str(root)) == [str(damaged)]
    config = ExperimentConfig(
        dataset="image_folder", data_dir=str(root), image_size=8, val_fraction=0.0,
        target="cnn_3_4", method="scratch", epochs=1, batch_size=8, progress="line",
        work_dir=str(tmp_path / "run"),
    )
    with pytest.raises(ExperimentError, match="could not be decoded.*find_unreadable_images"):
        run_experiment(config)
