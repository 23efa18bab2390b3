"""TensorFlow and JAX take the same iteration from the same weights and batch."""

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from backends import tensorflow_only

TESTS = Path(__file__).parent


def _two_steps(backend: str, weights: Path, out: Path) -> dict:
    env = {**os.environ, "KERAS_BACKEND": backend, "PYTHONPATH": str(TESTS)}
    child = subprocess.run(
        [sys.executable, str(TESTS / "one_step_child.py"), str(weights), str(out)],
        env=env, capture_output=True, text=True, timeout=600,
    )
    assert child.returncode == 0, child.stderr[-3000:]
    return dict(np.load(out))


@pytest.mark.slow
@tensorflow_only("it starts one process per backend itself, so it runs once, in the "
                 "TensorFlow pass")
def test_tensorflow_and_jax_iterations_agree(tmp_path):
    weights = tmp_path / "initial.npz"
    tensorflow = _two_steps("tensorflow", weights, tmp_path / "tensorflow.npz")
    jax = _two_steps("jax", weights, tmp_path / "jax.npz")
    initial = dict(np.load(weights))
    assert set(jax) == set(tensorflow)
    groups = {"target": "tgt", "adapters": "adapter_", "channel weights": "channel_weights_",
              "pair weights": "pair_weight_", "momentum": "optimizer/", "meta-optimizer": "meta/"}
    for group, part in groups.items():
        keys = [k for k in tensorflow if part in k]
        assert keys, group
        for key in keys:
            np.testing.assert_allclose(jax[key], tensorflow[key], rtol=2e-4, atol=2e-6,
                                       err_msg=f"{group}: {key}")
    # The iteration moved every meta-network and the target's statistics, not the source.
    for key in [k for k in initial if "channel_weights_" in k or "tgt_bn" in k]:
        assert not np.allclose(tensorflow[f"model/{key}"], initial[key]), key
    source_keys = [k for k in initial if k.startswith("src")]
    assert any("moving_variance" in k for k in source_keys)  # its BN statistics too
    for key in source_keys:
        for backend, state in (("tensorflow", tensorflow), ("jax", jax)):
            np.testing.assert_array_equal(state[f"model/{key}"], initial[key],
                                          err_msg=f"{backend}: {key}")
