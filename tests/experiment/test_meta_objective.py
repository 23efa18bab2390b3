"""--meta_objective=held_out and --meta_fraction: the flags, their checks, the training
pipeline of `((x, y), (x_meta, y_meta))` elements, and a killed held-out run resumed.

A held-out step on two devices equals the single-device step: tests/test_distribution.py.
"""

from __future__ import annotations

import importlib.util
import os
import signal

import numpy as np
import pytest
from absl import flags
from backends import tensorflow_only
from experiment_helpers import (
    KILLED_TRAIN,
    TRAIN,
    checkpoint_state,
    checkpoint_values,
    load_json,
    run_train,
    tiny_config,
    tiny_flags,
)

from keras_l2t.experiment import ExperimentError, run_experiment
from keras_l2t.experiment.data import load_data

HELD_OUT = dict(meta_objective="held_out", meta_fraction=0.2)


@pytest.mark.parametrize("method", ["scratch", "fm", "at", "lwf", "lwf_at"])
def test_held_out_without_meta_networks_is_refused_before_writing(tmp_path, fashion_dir,
                                                                  source_file, method):
    work_dir = tmp_path / "run"
    config = tiny_config(str(work_dir), fashion_dir, source_file, method=method,
                         meta_objective="held_out")
    with pytest.raises(ExperimentError) as error:
        run_experiment(config)
    assert str(error.value) == (
        f"--meta_objective=held_out needs a method with meta-networks (--method=l2t_ww or "
        f"l2t_w); --method={method} has none, so drop --meta_objective (or set it to "
        "train_batch).")
    assert not work_dir.exists()


def test_train_py_flags_and_the_error_line(tmp_path, fashion_dir, source_file, capsys):
    spec = importlib.util.spec_from_file_location("train_cli", TRAIN)
    train = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(train)
    values = flags.FlagValues()
    train.define_flags(values)
    work_dir = tmp_path / "run"
    values(["train.py", *tiny_flags(str(work_dir), fashion_dir, source_file, method="at"),
            "--meta_objective=held_out"])
    config = train.config_from_flags(values)
    assert (config.meta_objective, config.meta_fraction) == ("held_out", 0.0)
    assert train.main(["train.py"], values) == 2
    assert capsys.readouterr().err.startswith(
        "error: --meta_objective=held_out needs a method with meta-networks")
    assert not work_dir.exists()


def _batches(dataset) -> list:
    return [np.concatenate([a.reshape(-1) for a in (x, y, x_meta, y_meta)])
            for (x, y), (x_meta, y_meta) in dataset.as_numpy_iterator()]


@pytest.mark.parametrize("meta_fraction", [0.2, 0.0])
def test_an_epochs_training_elements_are_the_same_after_a_restart(fashion_dir, source_file,
                                                                  meta_fraction):
    config = tiny_config("unused", fashion_dir, source_file, meta_objective="held_out",
                         meta_fraction=meta_fraction, batch_size=16)
    data = load_data(config)
    splits = data.splits
    if meta_fraction:  # 6 per class: 1 to validation (0.2), 1 of the other 5 to meta
        assert (splits.num_train, splits.num_val, splits.num_meta) == (40, 10, 10)
    else:  # the meta batches are another stream of the 50 training images
        assert (splits.num_train, splits.num_val, splits.num_meta) == (50, 10, 50)
    assert data.steps_per_epoch == (3 if meta_fraction else 4)
    ((x, y), (x_meta, y_meta)), *rest = data.train(0).as_numpy_iterator()
    assert x.shape == x_meta.shape == (16, 8, 8, 3) and y.shape == y_meta.shape == (16,)
    last = rest[-1]  # a partial last training batch gets a meta batch of its size
    assert len(last[0][1]) == len(last[1][1]) == (8 if meta_fraction else 2)
    assert not np.array_equal(x, x_meta)

    epoch_1 = _batches(data.train(1))  # after epoch 0 was drawn, in this process
    restarted = _batches(load_data(config).train(1))  # a new run resuming at epoch 1
    assert len(epoch_1) == len(restarted) == data.steps_per_epoch
    for a, b in zip(epoch_1, restarted):
        np.testing.assert_array_equal(a, b)
    assert not np.array_equal(epoch_1[0], _batches(data.train(0))[0])


@pytest.mark.slow
@tensorflow_only("the meta stream is tf.data on every backend; resume on JAX: test_resume")
def test_killed_held_out_run_resumes_to_the_uninterrupted_result(tmp_path, fashion_dir,
                                                                 source_file):
    def flags_for(name):
        return tiny_flags(str(tmp_path / name), fashion_dir, source_file, epochs=2,
                          deterministic=True, **HELD_OUT)

    full = run_train(flags_for("full"))
    assert full.returncode == 0, full.stderr[-3000:]
    assert "(40 train / 10 val / 10 meta / 20 test," in full.stdout
    steps = int(full.stdout.split(" steps/epoch")[0].rsplit(" ", 1)[-1])
    full_dir, work_dir = str(tmp_path / "full"), str(tmp_path / "killed")

    killed = run_train([*flags_for("killed"), f"--kill_at_step={steps + 2}"],
                       script=KILLED_TRAIN)
    assert killed.returncode == -signal.SIGKILL, killed.stderr[-2000:]
    assert checkpoint_state(work_dir)["epoch"] == 1
    resumed = run_train(flags_for("killed"))
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert "Resuming after epoch 1 of 2" in resumed.stdout

    expected, actual = checkpoint_values(full_dir), checkpoint_values(work_dir)
    assert sorted(actual) == sorted(expected)
    for name, value in expected.items():
        np.testing.assert_allclose(actual[name], value, rtol=1e-5, atol=1e-6, err_msg=name)
    assert int(expected["meta_optimizer/vars/0"]) == 2 * steps

    for directory in (full_dir, work_dir):
        config = load_json(os.path.join(directory, "config.json"))
        assert (config["meta_objective"], config["meta_fraction"]) == ("held_out", 0.2)
        results = load_json(os.path.join(directory, "results.json"))
        assert {k: results[k] for k in ("meta_objective", "meta_fraction", "num_meta",
                                        "num_train")} == {
            "meta_objective": "held_out", "meta_fraction": 0.2, "num_meta": 10,
            "num_train": 40}
