"""ImageNet-style ResNet-18 and ResNet-34 (He et al., CVPR 2016), the 224-px networks.

This is the only module of keras-l2t that imports keras-cv (lazily, when a network
is built, so the 32-px networks do not need it): the backbone is keras-cv's
`ResNetBackbone` built from its config arguments (no preset, so no network access,
which presets need). The returned model is a flat functional `keras.Model` of plain
Keras layers: saving it to `.keras` and loading it back does not need keras-cv, and
swapping keras-cv for keras-hub later only touches this file.

The architecture matches torchvision's `resnet18` / `resnet34` (which the reference
implementation uses): a 7x7/2 stem, 3x3/2 max-pool, four stages of basic blocks with
the stride on the first 3x3 convolution and 1x1 projection shortcuts where the shape
changes, global average pooling and a linear classifier. With 1000 classes the
trainable parameter count equals torchvision's exactly (11,689,512 and 21,797,672).
Like the reference, convolutions start Kaiming-normal (fan-out) and BatchNorm uses
PyTorch's momentum 0.1 and epsilon 1e-5 (keras-cv's defaults are 0.01 and 1.001e-5).
"""

from __future__ import annotations

from collections.abc import Sequence

import keras

from keras_l2t.networks.common import (
    BN_EPSILON,
    BN_MOMENTUM,
    classification_head,
    conv_initializer,
    finish_target,
)

# Blocks per stage (torchvision / He et al. Table 1).
STAGE_BLOCKS = {"resnet18": (2, 2, 2, 2), "resnet34": (3, 4, 6, 3)}
STAGE_FILTERS = (64, 128, 256, 512)

# Tap names: the output of each stage (after the last block's ReLU). The stem is not
# a tap (the paper's 224-px setting: 4 x 4 stage outputs, stem excluded).
IMAGENET_RESNET_TAPS = ("stage1_out", "stage2_out", "stage3_out", "stage4_out")


def resnet18(
    num_classes: int = 1000,
    input_shape: Sequence[int | None] = (224, 224, 3),
    exact_batch_norm: bool = True,
    name: str = "resnet18",
) -> keras.Model:
    """ResNet-18, ImageNet style, with a logits head.

    Args:
        num_classes: Number of output logits.
        input_shape: (height, width, 3); 224 x 224 in the paper. Inputs are expected
            normalised with the ImageNet mean and std (no rescaling inside).
        exact_batch_norm: Switch BatchNorm to exact second-order moments (see
            `keras_l2t.exact_batch_norm`). Keep True for a target network.
        name: Model name.

    Returns:
        A flat functional model whose taps `stage1_out` ... `stage4_out` give
        56x56x64, 28x28x128, 14x14x256 and 7x7x512 at 224 px.
    """
    return _imagenet_resnet("resnet18", num_classes, input_shape, exact_batch_norm, name)


def resnet34(
    num_classes: int = 1000,
    input_shape: Sequence[int | None] = (224, 224, 3),
    exact_batch_norm: bool = True,
    name: str = "resnet34",
) -> keras.Model:
    """ResNet-34, ImageNet style, with a logits head (the paper's 224-px source).

    Args and Returns are as for `resnet18`; the taps have the same shapes.
    """
    return _imagenet_resnet("resnet34", num_classes, input_shape, exact_batch_norm, name)


def _imagenet_resnet(
    arch: str,
    num_classes: int,
    input_shape: Sequence[int | None],
    exact_batch_norm: bool,
    name: str,
) -> keras.Model:
    from keras_cv.models import ResNetBackbone  # Imported here: keras-cv only when used.

    blocks = STAGE_BLOCKS[arch]
    backbone = ResNetBackbone(
        stackwise_filters=list(STAGE_FILTERS),
        stackwise_blocks=list(blocks),
        stackwise_strides=[1, 2, 2, 2],
        include_rescaling=False,
        input_shape=tuple(input_shape),
        block_type="basic_block",
    )
    # keras-cv names stage outputs "v2_stack_{i}_block{n}_out"; give them stable names.
    for stage, (num_blocks, tap) in enumerate(zip(blocks, IMAGENET_RESNET_TAPS)):
        backbone.get_layer(f"v2_stack_{stage}_block{num_blocks}_out").name = tap
    _torch_style_init(backbone)
    logits = classification_head(backbone.output, num_classes)
    # Built on the backbone's own input tensor, so its layers are top-level layers.
    model = keras.Model(backbone.input, logits, name=name)
    return finish_target(model, exact_batch_norm)


def _torch_style_init(backbone: keras.Model) -> None:
    for layer in backbone.layers:
        if isinstance(layer, keras.layers.Conv2D):
            layer.kernel.assign(conv_initializer()(layer.kernel.shape))
        elif isinstance(layer, keras.layers.BatchNormalization):
            layer.momentum = BN_MOMENTUM
            layer.epsilon = BN_EPSILON
