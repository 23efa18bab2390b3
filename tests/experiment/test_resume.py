"""Resume: a run SIGKILLed mid-epoch and rerun ends exactly where an uninterrupted run does."""

from __future__ import annotations

import os
import signal

import numpy as np
import pytest
from experiment_helpers import (
    KILLED_TRAIN,
    checkpoint_state,
    checkpoint_values,
    epochs_in_log,
    load_json,
    run_train,
    tiny_config,
    tiny_flags,
)

from keras_l2t.experiment import ExperimentError, run_experiment


@pytest.mark.slow
def test_killed_run_resumes_to_the_uninterrupted_result(tmp_path, finished_run, fashion_dir,
                                                        source_file):
    full_dir, _, full = finished_run
    steps = int(full.stdout.split(" steps/epoch")[0].rsplit(" ", 1)[-1])
    work_dir = str(tmp_path / "killed")
    flags = tiny_flags(work_dir, fashion_dir, source_file, deterministic=True)

    # Killed in the middle of the second epoch (step 2 of it).
    killed = run_train([*flags, f"--kill_at_step={steps + 2}"], script=KILLED_TRAIN)
    assert killed.returncode == -signal.SIGKILL, killed.stderr[-2000:]
    assert "epoch 1/3" in killed.stdout and "epoch 2/3" not in killed.stdout
    assert not os.path.exists(os.path.join(work_dir, "results.json"))
    assert checkpoint_state(work_dir)["epoch"] == 1

    resumed = run_train(flags)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert "Resuming after epoch 1 of 3" in resumed.stdout
    assert "epoch 1/3" not in resumed.stdout and "epoch 3/3" in resumed.stdout
    assert epochs_in_log(work_dir) == [0, 1, 2]

    assert checkpoint_state(work_dir) == checkpoint_state(full_dir)
    expected = checkpoint_values(full_dir)
    actual = checkpoint_values(work_dir)
    assert sorted(actual) == sorted(expected)
    # The meta-networks and both optimizers (momentum, Adam moments, iteration counters:
    # the learning-rate schedule's position) are all in there.
    names = " ".join(expected)
    for part in ("channel_weight_networks/", "pair_weight", "optimizer/vars/",
                 "meta_optimizer/vars/"):
        assert part in names, part
    for name, value in expected.items():
        np.testing.assert_allclose(actual[name], value, rtol=1e-5, atol=1e-6, err_msg=name)
    # The first optimizer variable is its iteration counter.
    assert int(expected["optimizer/vars/0"]) == 3 * steps
    assert int(expected["meta_optimizer/vars/0"]) == 3 * steps


# In-process: a rerun of a finished or different experiment stops before training.
@pytest.mark.slow
def test_finished_run_is_not_retrained(finished_run, fashion_dir, source_file, capsys):
    work_dir, _, _ = finished_run
    stamps = {
        name: os.path.getmtime(os.path.join(work_dir, name))
        for name in ("results.json", "log.csv", "target.keras")
    }
    results = run_experiment(tiny_config(work_dir, fashion_dir, source_file, deterministic=True))
    output = capsys.readouterr().out
    assert "already finished" in output and "epoch 1/3" not in output
    assert results == load_json(os.path.join(work_dir, "results.json"))
    for name, stamp in stamps.items():
        assert os.path.getmtime(os.path.join(work_dir, name)) == stamp, name


@pytest.mark.slow
def test_a_different_experiment_in_the_work_dir_is_refused(finished_run, fashion_dir,
                                                           source_file):
    work_dir, _, _ = finished_run
    changed = tiny_config(work_dir, fashion_dir, source_file, deterministic=True,
                          learning_rate=0.05)
    with pytest.raises(ExperimentError, match="holds a different experiment.*learning_rate"):
        run_experiment(changed)
