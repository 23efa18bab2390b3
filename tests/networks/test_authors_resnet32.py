"""The authors' resnet32 state dict -> keras-l2t's resnet32: names, layouts, and the
forward pass against an independent NumPy implementation of their PyTorch model."""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys

import keras
import numpy as np
import pytest
from numpy_forward import batch_norm, conv

from keras_l2t.networks import authors_resnet32
from keras_l2t.sources import load_source

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
CLASSES = 7


def _their_state_dict(seed: int = 0) -> dict[str, np.ndarray]:
    """Random weights under their names and PyTorch shapes (alinlab/L2T-ww
    models/resnet_cifar.py, CResNet with n = 4), BN statistics included."""
    rng = np.random.default_rng(seed)
    state = {}

    def conv(name, out, inp, k, bias=False):
        state[f"{name}.weight"] = rng.normal(0, (2 / (k * k * out)) ** 0.5, (out, inp, k, k))
        if bias:
            state[f"{name}.bias"] = rng.normal(0, 0.1, out)

    def bn(name, c):
        state[f"{name}.weight"] = rng.uniform(0.5, 1.5, c)
        state[f"{name}.bias"] = rng.normal(0, 0.1, c)
        state[f"{name}.running_mean"] = rng.normal(0, 0.1, c)
        state[f"{name}.running_var"] = rng.uniform(0.5, 1.5, c)
        state[f"{name}.num_batches_tracked"] = np.array(1000)

    def block(name, inp, out):
        conv(f"{name}.conv1", out, inp, 3)
        bn(f"{name}.bn1", out)
        conv(f"{name}.conv2", out, out, 3)
        bn(f"{name}.bn2", out)
        if inp != out:
            conv(f"{name}.downsample.0", out, inp, 1)
            bn(f"{name}.downsample.1", out)

    conv("conv1", 16, 3, 3, bias=True)
    bn("bn1", 16)
    for first, others, inp, out in (("block1", "blocks2", 16, 16),
                                    ("block3", "blocks4", 16, 32),
                                    ("block5", "blocks6", 32, 64)):
        block(first, inp, out)
        for i in range(4):
            block(f"{others}.{i}", out, out)
    state["fc.weight"] = rng.normal(0, 0.1, (CLASSES, 64))
    state["fc.bias"] = rng.normal(0, 0.1, CLASSES)
    return {k: np.asarray(v, np.float32) for k, v in state.items()}


# --- Their forward pass in NumPy, NCHW as PyTorch computes it. ---

def _block(x, s, name, stride):
    y = np.maximum(batch_norm(conv(x, s[f"{name}.conv1.weight"], stride, 1), s, f"{name}.bn1"), 0)
    y = batch_norm(conv(y, s[f"{name}.conv2.weight"], 1, 1), s, f"{name}.bn2")
    shortcut = x
    if f"{name}.downsample.0.weight" in s:
        shortcut = batch_norm(conv(x, s[f"{name}.downsample.0.weight"], stride), s,
                       f"{name}.downsample.1")
    return np.maximum(y + shortcut, 0)


def _their_forward(x_nhwc, s):
    x = np.transpose(x_nhwc, (0, 3, 1, 2)).astype(np.float64)
    x = np.maximum(batch_norm(conv(x, s["conv1.weight"], 1, 1, s["conv1.bias"]), s, "bn1"), 0)
    stages = []
    for first, others, stride in (("block1", "blocks2", 1), ("block3", "blocks4", 2),
                                  ("block5", "blocks6", 2)):
        x = _block(x, s, first, stride)
        for i in range(4):
            x = _block(x, s, f"{others}.{i}", 1)
        stages.append(np.transpose(x, (0, 2, 3, 1)))
    logits = x.mean(axis=(2, 3)) @ s["fc.weight"].T + s["fc.bias"]
    return logits, stages


def test_a_state_dict_like_theirs_has_their_201_entries():
    assert len(_their_state_dict()) == 201  # as their published checkpoint


def test_names_and_layouts():
    state = _their_state_dict()
    model = authors_resnet32.convert(state)
    np.testing.assert_array_equal(model.get_layer("stem_conv").get_weights()[0],
                                  state["conv1.weight"].transpose(2, 3, 1, 0))
    np.testing.assert_array_equal(model.get_layer("stem_conv").get_weights()[1],
                                  state["conv1.bias"])
    np.testing.assert_array_equal(model.get_layer("stage2_block3_conv2").get_weights()[0],
                                  state["blocks4.1.conv2.weight"].transpose(2, 3, 1, 0))
    shortcut = model.get_layer("stage3_block1_shortcut_bn").get_weights()
    for value, key in zip(shortcut, ("weight", "bias", "running_mean", "running_var")):
        np.testing.assert_array_equal(value, state[f"block5.downsample.1.{key}"])
    np.testing.assert_array_equal(model.get_layer("logits").get_weights()[0],
                                  state["fc.weight"].T)
    assert model.output.shape[-1] == CLASSES


def test_the_converted_network_computes_their_forward_pass(tmp_path):
    state = _their_state_dict(seed=1)
    x = np.random.default_rng(2).normal(size=(2, 32, 32, 3)).astype(np.float32)
    logits, stages = _their_forward(x, state)
    path = str(tmp_path / "source.keras")
    authors_resnet32.convert(state).save(path)
    source = load_source(path)  # as --source reads it: frozen, tapped at the stages
    taps = ["stage1_out", "stage2_out", "stage3_out"]
    extractor = keras.Model(source.inputs,
                            [source.get_layer(t).output for t in taps] + [source.output])
    *maps, ours = extractor(x, training=False)
    for mine, theirs in zip([*maps, ours], [*stages, logits], strict=True):
        # float32 against float64: agreement to float32's precision at the maps' scale
        scale = np.abs(theirs).max()
        np.testing.assert_allclose(keras.ops.convert_to_numpy(mine), theirs, rtol=1e-4,
                                   atol=1e-5 * scale)


def test_another_networks_state_dict_is_refused_naming_the_keys():
    state = _their_state_dict()
    state.pop("blocks6.3.bn2.running_var")
    state["layer1.0.conv1.weight"] = np.zeros((64, 64, 3, 3), np.float32)
    state["alphas.0"] = np.zeros((3, 1, 1, 1), np.float32)  # theirs, unused: ignored
    with pytest.raises(ValueError) as error:
        authors_resnet32.convert(state)
    assert str(error.value) == (
        "Not a state dict of the authors' resnet32 (alinlab/L2T-ww models/resnet_cifar.py): "
        "missing ['blocks6.3.bn2.running_var'], unexpected ['layer1.0.conv1.weight'].")
    state = _their_state_dict()
    state["block3.conv1.weight"] = state["block3.conv1.weight"][:16]
    with pytest.raises(ValueError, match="stage2_block1_conv1: their arrays have shapes"):
        authors_resnet32.convert(state)


def test_the_command_names_what_is_missing(tmp_path):
    def convert(*flags):
        return subprocess.run([sys.executable, os.path.join(ROOT, "convert_source.py"),
                               *flags], capture_output=True, text=True, timeout=120,
                              env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3"))

    nope = tmp_path / "nope.pth.tar"
    missing = convert(f"--checkpoint={nope}")
    assert missing.returncode == 2
    assert missing.stderr.strip() == f"error: --checkpoint={nope} does not exist."
    garbage = tmp_path / "garbage.pth.tar"
    garbage.write_bytes(b"not a checkpoint")
    result = convert(f"--checkpoint={garbage}", f"--output={tmp_path / 'out.keras'}")
    if importlib.util.find_spec("torch") is None:  # CI: PyTorch is not a test dependency
        assert result.returncode == 1
        assert result.stderr.strip().startswith(
            "error: reading a PyTorch checkpoint needs PyTorch: pip install torch")
    else:
        assert result.returncode == 2
        assert result.stderr.strip().startswith(f"error: cannot read '{garbage}'")
    assert not (tmp_path / "out.keras").exists()
