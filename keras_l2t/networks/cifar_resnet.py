"""CIFAR-style ResNet-32 (He et al., CVPR 2016, Sec. 4.2), the 32-px source network.

Follows the reference implementation (alinlab/L2T-ww `models/resnet_cifar.py`,
`resnet32`): a 3x3 stem convolution with bias to 16 channels, BN, ReLU; three stages
of five basic blocks with 16, 32 and 64 channels (stride 2 at the first block of
stages 2 and 3, with a 1x1 convolution + BN projection shortcut there); global average
pooling and a linear classifier. 6 x 5 + 2 = 32 weighted layers.
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

STAGE_FILTERS = (16, 32, 64)
BLOCKS_PER_STAGE = 5

# Tap names: the output of the last block of each stage (the paper's 32-px setting).
CIFAR_RESNET_TAPS = ("stage1_out", "stage2_out", "stage3_out")


def resnet32(
    num_classes: int = 200,
    input_shape: Sequence[int | None] = (32, 32, 3),
    exact_batch_norm: bool = True,
    name: str = "resnet32",
) -> keras.Model:
    """ResNet-32, CIFAR style, with a logits head.

    Args:
        num_classes: Number of output logits (200 for the Tiny ImageNet source).
        input_shape: (height, width, 3); 32 x 32 in the paper.
        exact_batch_norm: Switch BatchNorm to exact second-order moments (see
            `keras_l2t.exact_batch_norm`). Keep True for a target network.
        name: Model name.

    Returns:
        A functional model whose taps `stage1_out`, `stage2_out`, `stage3_out` give
        32x32x16, 16x16x32 and 8x8x64 at 32 px. Layers of block b of stage s are
        named `stage{s}_block{b}_...`.

    Example:
        >>> from keras_l2t.networks import resnet32
        >>> resnet32(num_classes=200).get_layer("stage3_out").output.shape
        (None, 8, 8, 64)
    """
    inputs = keras.Input(shape=tuple(input_shape), name="image")
    x = keras.layers.Conv2D(
        STAGE_FILTERS[0],
        3,
        padding="same",
        kernel_initializer=conv_initializer(),
        name="stem_conv",
    )(inputs)
    x = batch_norm("stem_bn")(x)
    x = keras.layers.Activation("relu", name="stem_relu")(x)
    for stage, filters in enumerate(STAGE_FILTERS, start=1):
        for block in range(1, BLOCKS_PER_STAGE + 1):
            stride = 2 if (stage > 1 and block == 1) else 1
            out_name = (
                CIFAR_RESNET_TAPS[stage - 1]
                if block == BLOCKS_PER_STAGE
                else f"stage{stage}_block{block}_out"
            )
            x = basic_block(x, filters, stride, f"stage{stage}_block{block}", out_name)
    logits = classification_head(x, num_classes)
    model = keras.Model(inputs, logits, name=name)
    return finish_target(model, exact_batch_norm)


def basic_block(
    x: keras.KerasTensor, filters: int, stride: int, prefix: str, out_name: str
) -> keras.KerasTensor:
    """torchvision's `BasicBlock`: conv3x3-BN-ReLU-conv3x3-BN, add shortcut, ReLU.

    The shortcut is the identity, or a 1x1 convolution (no bias) + BN when the
    stride or the channel count changes. Strided 3x3 convolutions pad one pixel on
    every side as PyTorch does, so weights converted from the reference match exactly.
    """
    shortcut = x
    if stride != 1 or int(x.shape[-1]) != filters:
        shortcut = keras.layers.Conv2D(
            filters,
            1,
            strides=stride,
            use_bias=False,
            kernel_initializer=conv_initializer(),
            name=f"{prefix}_shortcut_conv",
        )(x)
        shortcut = batch_norm(f"{prefix}_shortcut_bn")(shortcut)
    y = x
    if stride != 1:
        # PyTorch's symmetric padding=1; "same" would pad (0, 1) and shift the samples.
        y = keras.layers.ZeroPadding2D(1, name=f"{prefix}_pad")(y)
    y = keras.layers.Conv2D(
        filters,
        3,
        strides=stride,
        padding="same" if stride == 1 else "valid",
        use_bias=False,
        kernel_initializer=conv_initializer(),
        name=f"{prefix}_conv1",
    )(y)
    y = batch_norm(f"{prefix}_bn1")(y)
    y = keras.layers.Activation("relu", name=f"{prefix}_relu1")(y)
    y = keras.layers.Conv2D(
        filters,
        3,
        padding="same",
        use_bias=False,
        kernel_initializer=conv_initializer(),
        name=f"{prefix}_conv2",
    )(y)
    y = batch_norm(f"{prefix}_bn2")(y)
    y = keras.layers.Add(name=f"{prefix}_add")([shortcut, y])
    return keras.layers.Activation("relu", name=out_name)(y)
