"""--source=hub:<preset>: a local timm preset trains; offline, one line, exit 1, nothing written."""

from __future__ import annotations

import os
import sys

import pytest
from experiment_helpers import ROOT, error_line, run_train, tiny_config, tiny_flags

from keras_l2t.experiment import ExperimentError, run_experiment
from keras_l2t.experiment.run import build_source, default_layers
from keras_l2t.sources import SourceWeightsUnavailable

sys.path.insert(0, os.path.join(ROOT, "tests", "networks"))
import torchvision_resnets as tv  # noqa: E402

REMOTE = "hub:hf://timm/resnet34.tv_in1k"


@pytest.fixture(scope="module")
def preset(tmp_path_factory) -> str:
    """A local timm-format ResNet-18 preset (10 classes), as resnet18.tv_in1k lays it out."""
    state = tv.random_state_dict("resnet18", 10, seed=0)
    return tv.write_timm_preset(str(tmp_path_factory.mktemp("preset") / "r18"), "resnet18", state)


def test_a_local_preset_is_a_source_tapped_at_its_stages(tmp_path, fashion_dir, preset, capsys):
    config = tiny_config(
        str(tmp_path / "run"), fashion_dir, f"hub:{preset}", epochs=1, max_steps_per_epoch=2
    )
    source = build_source(config, num_classes=10, image_size=8)
    assert not source.trainable and tuple(source.input_shape) == (None, 8, 8, 3)
    assert default_layers(config.source, source) == [f"stage{i}_out" for i in range(1, 5)]
    results = run_experiment(config)
    assert results["source"] == f"hub:{preset}" and results["test_accuracy"] is not None
    out = capsys.readouterr().out
    assert f"l2t_ww: hub:{preset} -> cnn_3_4 on" in out
    assert "10 classes, 8 pairs)" in out  # all 4 source stages x the 2 target stages


def test_a_preset_folder_without_the_prefix_is_pointed_at_it(tmp_path, fashion_dir, preset):
    with pytest.raises(ExperimentError) as error:
        run_experiment(tiny_config(str(tmp_path / "run"), fashion_dir, preset))
    assert str(error.value) == (
        f"--source={preset} is a keras-hub preset folder; pass --source=hub:{preset}"
    )
    with pytest.raises(ExperimentError, match="No keras-hub preset directory"):
        run_experiment(tiny_config(str(tmp_path / "run"), fashion_dir, "hub:no/such/folder"))
    assert not (tmp_path / "run").exists()


def test_offline_in_process_raises_before_writing(tmp_path, fashion_dir, monkeypatch):
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "cache"))
    with pytest.raises(SourceWeightsUnavailable, match="--source=hub:/path/to/folder"):
        run_experiment(tiny_config(str(tmp_path / "run"), fashion_dir, REMOTE))
    assert not (tmp_path / "run").exists()


@pytest.mark.slow
def test_offline_train_py_prints_one_line_and_exits_1(tmp_path, fashion_dir):
    work_dir = tmp_path / "run"
    # Hugging Face's offline mode answers at once; an empty cache, as on a new machine.
    process = run_train(
        tiny_flags(str(work_dir), fashion_dir, REMOTE),
        env={"HF_HUB_OFFLINE": "1", "HF_HOME": str(tmp_path / "hf")},
    )
    assert process.returncode == 1, process.stderr[-3000:]
    line = error_line(process)
    assert line.startswith(
        "error: Could not fetch the keras-hub preset 'hf://timm/resnet34.tv_in1k'"
    )
    assert "https://huggingface.co/timm/resnet34.tv_in1k" in line
    assert line.endswith(
        "pass --source=hub:/path/to/folder (in Python: load_source('hub:/path/to/folder'))."
    )
    assert "Traceback" not in process.stderr and "Retrying" not in process.stderr
    assert not work_dir.exists()
