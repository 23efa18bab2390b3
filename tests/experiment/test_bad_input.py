"""Bad input fails at once, with one clear line naming the fix, and writes nothing."""

from __future__ import annotations

import os

import keras
import pytest
from experiment_helpers import run_train, tiny_flags

from keras_l2t.experiment import ExperimentConfig, ExperimentError, run_experiment


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
        (dict(method="l2t_www"), "--method='l2t_www' is not one of"),
        (dict(target="resnet19"), "Unknown network 'resnet19'"),
        (dict(target_layers=["stage1_out", "stage9_out"]), "no layer named 'stage9_out'"),
        (dict(source_layers=["nope"]), "no layer named 'nope'"),
        (dict(pairs="stage1_out-stage1_out"), "--pairs: cannot read"),
        (dict(batch_size=0), "--batch_size must be >= 1"),
        (dict(source=None), "--method=l2t_ww needs --source"),
        (dict(strategy="multi_worker"),
         "needs the TF_CONFIG environment variable" if keras.backend.backend() == "tensorflow"
         else "run it with KERAS_BACKEND=tensorflow"),
        (dict(source="missing.keras"), "Source file 'missing.keras' does not exist"),
        (dict(train_indices="10:5"), "--train_indices must be START:STOP"),
    ],
)
def test_bad_input_is_one_clear_error_and_writes_nothing(tmp_path, fashion_dir, source_file,
                                                         overrides, message, monkeypatch):
    monkeypatch.delenv("TF_CONFIG", raising=False)
    work_dir = tmp_path / "run"
    with pytest.raises(ExperimentError) as error:
        run_experiment(_config(work_dir, fashion_dir, source_file, **overrides))
    assert message in str(error.value)
    assert "\n" not in str(error.value)
    assert not work_dir.exists()


def test_unwritable_work_dir(tmp_path, fashion_dir, source_file):
    blocker = tmp_path / "a_file"
    blocker.write_text("")
    with pytest.raises(ExperimentError, match="is a file, not a directory"):
        run_experiment(_config(blocker / "run", fashion_dir, source_file))
    if os.geteuid() != 0:  # root writes anywhere, so only a non-root run can check this
        locked = tmp_path / "locked"
        locked.mkdir(mode=0o500)
        with pytest.raises(ExperimentError, match="cannot be written"):
            run_experiment(_config(locked / "run", fashion_dir, source_file))


def test_missing_data_names_the_package(tmp_path, source_file):
    with pytest.raises(ExperimentError, match="dataset-fashion-mnist"):
        run_experiment(_config(tmp_path / "run", str(tmp_path / "nothing"), source_file))
    assert not (tmp_path / "run").exists()


def test_command_line_errors_exit_non_zero_with_one_line(tmp_path, fashion_dir, source_file):
    missing = run_train(["--flagfile=configs/no_such.flags"])
    assert missing.returncode == 2
    assert "flagfile 'configs/no_such.flags' not found" in missing.stderr
    assert "configs/demo.flags" in missing.stderr

    work_dir = str(tmp_path / "run")
    unknown = run_train([*tiny_flags(work_dir, fashion_dir, source_file), "--epoch=3"])
    assert unknown.returncode != 0
    assert "Unknown command line flag 'epoch'" in unknown.stderr

    bad = run_train(tiny_flags(work_dir, fashion_dir, source_file, method="nonsense"))
    assert bad.returncode == 2
    assert bad.stderr.strip().splitlines()[-1].startswith("error: --method='nonsense'")
    assert "Traceback" not in bad.stderr
    assert not os.path.exists(work_dir)


def test_flags_after_the_flagfile_override_it(tmp_path, fashion_dir, source_file):
    flagfile = tmp_path / "run.flags"
    flagfile.write_text("\n".join(tiny_flags(str(tmp_path / "run"), fashion_dir, source_file,
                                             method="l2t_w")) + "\n")
    # An inconsistent override, so the run stops at once and shows which value won.
    process = run_train([f"--flagfile={flagfile}", "--method=nonsense"])
    assert process.returncode == 2
    assert "--method='nonsense'" in process.stderr
