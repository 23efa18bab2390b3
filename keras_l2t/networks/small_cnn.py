"""Small VGG-style CNNs named by their widths ("cnn_16_32_64"), for the demo and tests.

The paper's networks take minutes per epoch on a laptop CPU; these take seconds. Each
stage is Conv3x3 + BN + ReLU (layer `stage{i}_out`, the tap) and a 2x2 max-pool; then
global average pooling and a Dense logits layer.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

import keras

from keras_l2t.networks.common import (
    batch_norm,
    classification_head,
    conv_initializer,
    finish_target,
)

PATTERN = re.compile(r"cnn(_\d+)+")


def is_small_cnn(name: str) -> bool:
    """Whether `name` names a small CNN, e.g. "cnn_16_32_64"."""
    return PATTERN.fullmatch(name) is not None


def small_cnn_widths(name: str) -> tuple[int, ...]:
    """The stage widths of a small CNN name ("cnn_16_32" -> (16, 32))."""
    return tuple(int(w) for w in name.split("_")[1:])


def small_cnn(
    name: str,
    num_classes: int,
    input_shape: Sequence[int | None] = (32, 32, 3),
    exact_batch_norm: bool = True,
) -> keras.Model:
    """Builds the small CNN `name` ("cnn_<width>_<width>...").

    Args:
        name: "cnn_" followed by one width per stage, e.g. "cnn_16_32_64".
        num_classes: Number of logits.
        input_shape: (height, width, 3).
        exact_batch_norm: Switch BatchNorm to exact second-order moments.

    Returns:
        A functional model with taps `stage1_out` ... `stage{n}_out`.

    Raises:
        ValueError: when `name` is not a small CNN name.

    Example:
        >>> from keras_l2t.networks.small_cnn import small_cnn
        >>> small_cnn("cnn_8_16", num_classes=10, input_shape=(8, 8, 3)).output.shape
        (None, 10)
    """
    if not is_small_cnn(name):
        raise ValueError(f"'{name}' is not a small CNN name such as cnn_16_32_64.")
    inputs = keras.Input(shape=tuple(input_shape), name="image")
    x = inputs
    for stage, width in enumerate(small_cnn_widths(name), start=1):
        x = keras.layers.Conv2D(
            width, 3, padding="same", kernel_initializer=conv_initializer(), name=f"conv{stage}"
        )(x)
        x = batch_norm(f"bn{stage}")(x)
        x = keras.layers.ReLU(name=f"stage{stage}_out")(x)
        x = keras.layers.MaxPooling2D(2, name=f"pool{stage}")(x)
    logits = classification_head(x, num_classes)
    return finish_target(keras.Model(inputs, logits, name=name), exact_batch_norm)


def small_cnn_taps(name: str) -> list[str]:
    """The tap names of a small CNN: one `stage{i}_out` per width.

    Example:
        >>> from keras_l2t.networks.small_cnn import small_cnn_taps
        >>> small_cnn_taps("cnn_8_16")
        ['stage1_out', 'stage2_out']
    """
    return [f"stage{i}_out" for i in range(1, len(small_cnn_widths(name)) + 1)]
