"""Several sources (--source=name=SOURCE,...): a run, its resume, its records, its refusals."""

from __future__ import annotations

import importlib.util
import os
import shutil
import signal

import pytest
from absl import flags
from backends import tensorflow_only
from experiment_helpers import (
    KILLED_TRAIN,
    TRAIN,
    checkpoint_state,
    load_json,
    run_train,
    tiny_config,
    tiny_flags,
)

from keras_l2t.experiment import ExperimentError, run_experiment
from keras_l2t.experiment.run import build_network, build_transfer_model

LAYERS = ("stage1_out", "stage2_out")  # the taps of cnn_4_6 (sources) and cnn_3_4 (target)


def _two_sources(source_file: str) -> dict:
    """The .keras source as 'a', the same network by name with its weights as 'b'."""
    return dict(source=f"a={source_file},b=cnn_4_6", source_weights=f"b={source_file}")


@pytest.mark.slow
@tensorflow_only("train.py's sources, records and resume are backend-independent code; "
                 "the two-source model on JAX: tests/test_transfer_from_several_sources.py, "
                 "a resume on JAX: test_resume")
def test_a_killed_two_source_run_resumes_and_names_every_pair(tmp_path, fashion_dir,
                                                              source_file):
    work_dir = str(tmp_path / "run")
    # "single": each source's last tap with the target's last (a small step to compile).
    argv = tiny_flags(work_dir, fashion_dir, epochs=2, pairs="single",
                      **_two_sources(source_file))
    killed = run_train([*argv, "--kill_at_step=9"], script=KILLED_TRAIN)  # in epoch 2 of 2
    assert killed.returncode == -signal.SIGKILL, killed.stderr[-2000:]
    assert checkpoint_state(work_dir)["epoch"] == 1

    # The sources are part of the experiment: renamed, they do not resume it.
    changed = tiny_config(work_dir, fashion_dir, epochs=2, pairs="single",
                          **{**_two_sources(source_file), "source": f"c={source_file},b=cnn_4_6"})
    with pytest.raises(ExperimentError, match=r"holds a different experiment \(it differs "
                                              r"in: source\)"):
        run_experiment(changed)

    resumed = run_train(argv)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert "Resuming after epoch 1 of 2" in resumed.stdout
    assert "epoch 1/2" not in resumed.stdout and "epoch 2/2" in resumed.stdout
    assert ("pairs: 0 a/stage2_out -> stage2_out, 1 b/stage2_out -> stage2_out\n"
            in resumed.stdout)
    results = load_json(os.path.join(work_dir, "results.json"))
    assert results["pairs"] == [["a/stage2_out", "stage2_out"], ["b/stage2_out", "stage2_out"]]
    assert results["sources"] == {"a": source_file, "b": "cnn_4_6"}
    with open(os.path.join(work_dir, "log.csv")) as f:
        header = f.readline().strip().split(",")
    assert {"lambda_0", "lambda_1", "entropy_0", "entropy_1"} <= set(header)
    assert sorted(os.listdir(os.path.join(work_dir, "pictures"))) == [
        "channel_weights.png", "pair_weights.png", "pair_weights_over_epochs.png"]
    assert os.path.isfile(results["target_file"]) and os.path.isdir(results["export_dir"])


def _train_main(argv: list[str]) -> int:
    """train.py's main in this process, on `argv` (flags)."""
    spec = importlib.util.spec_from_file_location("train_cli", TRAIN)
    train = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(train)
    values = flags.FlagValues()
    train.define_flags(values)
    values(["train.py", *argv])
    return train.main(["train.py"], values)


@pytest.mark.parametrize(
    "overrides, message",
    [
        (dict(source="a={file},=cnn_4_6"), "--source: cannot read '=cnn_4_6'; several sources "
         "are written name=SOURCE,name=SOURCE,... with names that hold no '/', ':', '=' or "
         "','."),
        (dict(source="a/b={file}"), "--source: cannot read 'a/b={file}'"),
        (dict(source="a:b={file}"), "--source: cannot read 'a:b={file}'"),
        (dict(source="a={file},b"), "--source: cannot read 'b'"),
        (dict(source="a={file},a={file}"),
         "--source names 'a' twice; give each source its own name."),
        (dict(source="a={file},b=missing.keras"),
         "--source entry 'b': Source file 'missing.keras' does not exist"),
        (dict(source_weights=None), "--source entry 'b': Source 'cnn_4_6' has no "
         "pretrained weights: pass --source_weights=b=PATH."),
        (dict(source_weights="{file}"), "--source_weights: cannot read '{file}'"),
        (dict(source_weights="c={file}"),
         "--source_weights names c, not a source of --source (a, b); write name=PATH"),
        (dict(source_pretrain_epochs=1), "--source_pretrain_epochs pretrains a single "
         "network-name --source; with several sources pretrain each with "
         "--mode=pretrain_source"),
        (dict(method="lwf"), "--method=lwf distils one source's class outputs; give --source "
         "a single source, not 2 (a, b)."),
        (dict(source_layers="stage1_out"), "--source_layers: Source layer 'stage1_out' does "
         "not name its source"),
        (dict(source_layers="c/stage1_out"),
         "--source_layers: Source layer 'c/stage1_out' names the source 'c'"),
        (dict(source_layers="a/stage9_out"),
         "--source_layers: Source 'a': The source model 'cnn_4_6' has no layer named "
         "'stage9_out'"),
        (dict(pairs="stage1_out:stage1_out"),
         "--pairs: Source layer 'stage1_out' does not name its source"),
    ],
)
def test_a_bad_several_sources_flag_is_one_line_exit_2_and_writes_nothing(
        tmp_path, fashion_dir, source_file, capsys, overrides, message):
    work_dir = tmp_path / "run"
    values = {**_two_sources(source_file), "epochs": 1}
    values.update({k: v.format(file=source_file) if isinstance(v, str) else v
                   for k, v in overrides.items()})
    assert _train_main(tiny_flags(str(work_dir), fashion_dir, **values)) == 2
    errors = [line for line in capsys.readouterr().err.splitlines()
              if line.startswith("error:")]
    assert len(errors) == 1 and message.format(file=source_file) in errors[0], errors
    assert not work_dir.exists()


def test_a_single_source_path_with_an_equals_sign_is_one_source(tmp_path, source_file):
    path = tmp_path / "lr=0.1" / "source.keras"
    path.parent.mkdir()
    shutil.copy(source_file, path)
    config = tiny_config("run", "data", str(path))
    assert config.source_specs() is None
    assert tiny_config("run", "data", f"x={path}").source_specs() == {"x": str(path)}


@pytest.mark.parametrize("pairs, expected", [
    ("all", [(f"{name}/{s}", t) for name in "ab" for s in LAYERS for t in LAYERS]),
    ("b/stage1_out:stage2_out, a/stage2_out:stage1_out",
     [("b/stage1_out", "stage2_out"), ("a/stage2_out", "stage1_out")]),
])
def test_default_taps_and_explicit_pairs_name_their_source(pairs, expected):
    config = tiny_config("run", "data", "a=cnn_4_6,b=cnn_4_6", pairs=pairs)
    sources = {name: build_network("cnn_4_6", 10, 8) for name in "ab"}
    model = build_transfer_model(config, sources, build_network("cnn_3_4", 10, 8), 10)
    assert model.pairs == expected
