"""Every flagfile in configs/ parses, validates, and is headed by its command."""

from __future__ import annotations

import glob
import importlib.util
import os

import pytest
from absl import flags
from experiment_helpers import ROOT, TRAIN

from keras_l2t.experiment import ExperimentConfig

CONFIGS = sorted(glob.glob(os.path.join(ROOT, "configs", "*.flags")))
PUBLISHED = {"dogs": "78.1", "cub200": "65.1", "mit67": "64.9", "stanford40": "63.1"}


def _train_module():
    spec = importlib.util.spec_from_file_location("train_cli", TRAIN)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _parse(argv: list[str]) -> ExperimentConfig:
    train = _train_module()
    values = flags.FlagValues()
    train.define_flags(values)
    values(["train.py", *argv])
    return train.config_from_flags(values)


def test_the_paper_experiments_and_the_demo_have_configs():
    names = {os.path.basename(path)[:-6] for path in CONFIGS}
    assert {"dogs", "cub200", "mit67", "stanford40", "cifar100", "stl10", "tiny_imagenet",
            "demo"} <= names


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: os.path.basename(p))
def test_config_parses_validates_and_names_its_command(path):
    name = os.path.basename(path)[:-6]
    with open(path) as f:
        text = f.read()
    assert f"python train.py --flagfile=configs/{name}.flags" in text
    if name in PUBLISHED:
        assert PUBLISHED[name] in text
    config = _parse([f"--flagfile={path}"])
    config.validate()
    assert config.work_dir == f"runs/{name}" or name == "tiny_imagenet"


@pytest.mark.parametrize("name", sorted(PUBLISHED))
def test_the_224_px_configs_use_the_papers_pair(name):
    """torchvision's ImageNet ResNet-34 -> ResNet-18, with Keras' ResNet-50 one flag away."""
    path = os.path.join(ROOT, "configs", f"{name}.flags")
    config = _parse([f"--flagfile={path}"])
    assert (config.source, config.target, config.image_size) == (
        "hub:hf://timm/resnet34.tv_in1k", "resnet18", 224)
    with open(path) as f:
        text = f.read()
    assert "add --source=resnet50_imagenet" in text
    assert "--source=hub:/path/to/that/folder" in text  # the offline form
    other = _parse([f"--flagfile={path}", "--source=resnet50_imagenet"])
    other.validate()
    assert other.source == "resnet50_imagenet"


def test_command_line_overrides_the_flagfile():
    path = os.path.join(ROOT, "configs", "dogs.flags")
    config = _parse([f"--flagfile={path}", "--epochs=3", "--method=scratch"])
    assert (config.epochs, config.method, config.dataset) == (3, "scratch", "stanford_dogs")


def test_every_config_field_is_a_flag_with_help():
    train = _train_module()
    values = flags.FlagValues()
    train.define_flags(values)
    for field in ExperimentConfig.__dataclass_fields__.values():
        assert values[field.name].help == field.metadata["help"]


def _main_raising(error: BaseException, monkeypatch) -> int:
    """train.main on the dogs flagfile, with run_experiment raising `error`."""
    train = _train_module()
    values = flags.FlagValues()
    train.define_flags(values)
    values(["train.py", f"--flagfile={os.path.join(ROOT, 'configs', 'dogs.flags')}"])

    def run_experiment(config):
        raise error

    monkeypatch.setattr(train, "run_experiment", run_experiment)
    return train.main(["train.py"], values)


def test_unavailable_source_weights_print_only_their_message(monkeypatch, capsys):
    from keras_l2t.sources import SourceWeightsUnavailable

    offline = SourceWeightsUnavailable("Could not download ...; pass --source_weights=PATH.")
    assert _main_raising(offline, monkeypatch) == 1
    err = capsys.readouterr().err
    assert err == "error: Could not download ...; pass --source_weights=PATH.\n"


def test_ctrl_c_prints_one_line_on_how_to_resume(monkeypatch, capsys):
    assert _main_raising(KeyboardInterrupt(), monkeypatch) == 130
    assert capsys.readouterr().err == (
        "\nInterrupted. Every finished epoch is kept: rerun the same command to resume.\n")
