"""VGG-9 with BatchNorm, the 32-px target network.

Follows the reference implementation (alinlab/L2T-ww `models/vgg_cifar.py`,
`vgg9_bn`, after arXiv 1803.00443): eight 3x3 convolutions (with bias), each followed
by BN and ReLU, widths 64, M, 128, M, 256, 256, M, 512, 512, M, 512, 512, M (M = 2x2
max-pool, stride 2); global average pooling and one linear layer. Initialisation as the
reference: convolutions Kaiming-normal (fan-out) with zero bias, the linear layer
normal(0, 0.01) with zero bias.
"""

from __future__ import annotations

from collections.abc import Sequence

import keras

from keras_l2t.networks.common import (
    batch_norm,
    classification_head,
    conv_initializer,
    finish_target,
)

# Convolution widths per stage; each stage ends with a 2x2 max-pool.
STAGE_WIDTHS = ((64,), (128,), (256, 256), (512, 512), (512, 512))

# Tap names: the tensor entering each of the five max-pools (as in the paper).
VGG9_TAPS = ("stage1_out", "stage2_out", "stage3_out", "stage4_out", "stage5_out")


def vgg9(
    num_classes: int = 100,
    input_shape: Sequence[int | None] = (32, 32, 3),
    exact_batch_norm: bool = True,
    name: str = "vgg9",
) -> keras.Model:
    """VGG-9 with BatchNorm, with a logits head.

    Args:
        num_classes: Number of output logits (100 for CIFAR-100, 10 for STL-10).
        input_shape: (height, width, 3), at least 32 x 32 (five 2x2 max-pools).
        exact_batch_norm: Switch BatchNorm to exact second-order moments (see
            `keras_l2t.exact_batch_norm`). Keep True for a target network.
        name: Model name.

    Returns:
        A functional model whose taps `stage1_out` ... `stage5_out` (the ReLU output
        entering each max-pool) give 32x32x64, 16x16x128, 8x8x256, 4x4x512 and
        2x2x512 at 32 px.

    Example:
        >>> from keras_l2t.networks import vgg9
        >>> vgg9(num_classes=100).get_layer("stage5_out").output.shape
        (None, 2, 2, 512)
    """
    inputs = keras.Input(shape=tuple(input_shape), name="image")
    x = inputs
    index = 0
    for stage, widths in enumerate(STAGE_WIDTHS, start=1):
        for position, width in enumerate(widths):
            index += 1
            last = position == len(widths) - 1
            x = keras.layers.Conv2D(
                width,
                3,
                padding="same",
                kernel_initializer=conv_initializer(),
                name=f"conv{index}",
            )(x)
            x = batch_norm(f"bn{index}")(x)
            x = keras.layers.Activation(
                "relu", name=VGG9_TAPS[stage - 1] if last else f"relu{index}"
            )(x)
        x = keras.layers.MaxPooling2D(2, strides=2, name=f"pool{stage}")(x)
    logits = classification_head(
        x,
        num_classes,
        kernel_initializer=keras.initializers.RandomNormal(stddev=0.01),
        bias_initializer="zeros",
    )
    model = keras.Model(inputs, logits, name=name)
    return finish_target(model, exact_batch_norm)
