"""Tiny functional networks for fast tests: conv blocks with BN, a GAP and a Dense head."""

from __future__ import annotations

import keras
import numpy as np

import keras_l2t


def conv_net(name: str, widths, classes: int, size: int = 8, batch_norm: bool = True,
             kernel_l2: float = 0.0, activity_l2: float = 0.0) -> keras.Model:
    """Conv(3x3) [+ BN] + ReLU blocks named f"{name}_block{i}", stride 2 after the first
    (with L2 kernel and activity regularizers on the convolutions when given)."""
    inputs = keras.Input((size, size, 3))
    x = inputs
    for i, width in enumerate(widths):
        x = keras.layers.Conv2D(
            width, 3, padding="same", strides=2 if i else 1, name=f"{name}_conv{i}",
            kernel_regularizer=keras.regularizers.L2(kernel_l2) if kernel_l2 else None,
            activity_regularizer=keras.regularizers.L2(activity_l2) if activity_l2 else None,
        )(x)
        if batch_norm:
            x = keras.layers.BatchNormalization(name=f"{name}_bn{i}")(x)
        x = keras.layers.ReLU(name=f"{name}_block{i}")(x)
    x = keras.layers.GlobalAveragePooling2D()(x)
    outputs = keras.layers.Dense(classes, name=f"{name}_head")(x)
    return keras.Model(inputs, outputs, name=name)


def toy_transfer_model(
    method: str = "l2t_ww", seed: int = 0, size: int = 8, target: keras.Model | None = None,
    **kwargs,
) -> keras_l2t.TransferModel:
    """A source with 2 blocks (3, 4 channels), a target with 2 blocks (2, 3 channels)."""
    keras.utils.set_random_seed(seed)
    source = conv_net("src", [3, 4], 5, size=size)
    target = target or conv_net("tgt", [2, 3], 3, size=size)
    kwargs.setdefault("pairs", "all")
    return keras_l2t.TransferModel(
        source, target, method=method, source_layers=["src_block0", "src_block1"],
        target_layers=["tgt_block0", "tgt_block1"], **kwargs,
    )


def toy_batch(n: int = 8, size: int = 8, classes: int = 3, seed: int = 0, dtype="float32"):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, size, size, 3)).astype(dtype)
    y = rng.integers(0, classes, size=n).astype("int32")
    return x, y


def count_calls(layer) -> list:
    """Wraps `layer.call` to record its calls; returns the list it appends one item to
    per call."""
    calls = []
    original = layer.call

    def counting_call(*args, **kwargs):
        calls.append(1)
        return original(*args, **kwargs)

    layer.call = counting_call
    return calls
