"""ImageNet-style ResNet-18 and ResNet-34 (He et al., CVPR 2016), the 224-px networks.

The backbone is keras-hub's `ResNetBackbone`, built from its config arguments (no
preset, so no network access): basic blocks, a 7x7/2 stem, 3x3/2 max-pool, four stages
with the stride on the first 3x3 convolution and 1x1 projection shortcuts where the
shape changes, `use_pre_activation=False`. It is torchvision's `resnet18` / `resnet34`
layer for layer, padding included: the strided convolutions and the max-pool pad both
sides equally (`ZeroPadding2D` then `"valid"`), so torchvision weights load exactly
(`keras_l2t.sources.load_source("hub:hf://timm/resnet34.tv_in1k")`). With 1000 classes
the trainable parameter count equals torchvision's (11,689,512 and 21,797,672).

keras-hub is imported only here and in `keras_l2t.sources`, lazily. The returned model
is a flat functional `keras.Model` of plain Keras layers: it saves to `.keras` and
loads back without keras-hub. A target from scratch starts as torchvision's ResNet:
Kaiming-normal fan-out convolutions, BatchNorm gamma 1 / beta 0 with PyTorch's
momentum 0.1 and epsilon 1e-5, the head as a default `torch.nn.Linear`.
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
STAGE_STRIDES = (1, 2, 2, 2)

# Tap names: the output of each stage (after the last block's ReLU). The stem is not
# a tap (the paper's 224-px setting: 4 x 4 stage outputs, stem excluded).
IMAGENET_RESNET_TAPS = ("stage1_out", "stage2_out", "stage3_out", "stage4_out")


def resnet18(
    num_classes: int = 1000,
    input_shape: Sequence[int | None] = (224, 224, 3),
    exact_batch_norm: bool = True,
    name: str = "resnet18",
) -> keras.Model:
    """ResNet-18, ImageNet style (torchvision's), with a logits head.

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

    Example:
        >>> model = resnet18(num_classes=10, input_shape=(32, 32, 3))
        >>> tuple(model.get_layer("stage4_out").output.shape)
        (None, 1, 1, 512)
    """
    return _imagenet_resnet("resnet18", num_classes, input_shape, exact_batch_norm, name)


def resnet34(
    num_classes: int = 1000,
    input_shape: Sequence[int | None] = (224, 224, 3),
    exact_batch_norm: bool = True,
    name: str = "resnet34",
) -> keras.Model:
    """ResNet-34, ImageNet style (torchvision's), with a logits head: the paper's source.

    Args and Returns are as for `resnet18`; the taps have the same shapes.
    """
    return _imagenet_resnet("resnet34", num_classes, input_shape, exact_batch_norm, name)


def resnet_backbone(arch: str, input_shape: Sequence[int | None]) -> keras.Model:
    """keras-hub's `ResNetBackbone` in torchvision's layout, from config arguments.

    Args:
        arch: "resnet18" or "resnet34".
        input_shape: (height, width, 3).

    Returns:
        The backbone (a keras-hub model), with keras-hub's initialisation.
    """
    from keras_hub.models import ResNetBackbone  # keras-hub only when a ResNet is built.

    return ResNetBackbone(
        input_conv_filters=[64],
        input_conv_kernel_sizes=[7],
        stackwise_num_filters=list(STAGE_FILTERS),
        stackwise_num_blocks=list(STAGE_BLOCKS[arch]),
        stackwise_num_strides=list(STAGE_STRIDES),
        block_type="basic_block",
        use_pre_activation=False,
        image_shape=tuple(input_shape),
    )


def stage_output_names(blocks: Sequence[int]) -> list[str]:
    """keras-hub's names of a ResNet's stage outputs (the last block's ReLU per stage)."""
    return [f"stack{stage}_block{count - 1}_out" for stage, count in enumerate(blocks)]


def _imagenet_resnet(
    arch: str,
    num_classes: int,
    input_shape: Sequence[int | None],
    exact_batch_norm: bool,
    name: str,
) -> keras.Model:
    backbone = resnet_backbone(arch, input_shape)
    for old, new in zip(stage_output_names(STAGE_BLOCKS[arch]), IMAGENET_RESNET_TAPS):
        backbone.get_layer(old).name = new
    _torch_style_init(backbone)
    logits = classification_head(backbone.output, num_classes)
    # Built on the backbone's own input tensor, so its layers are top-level layers.
    model = keras.Model(backbone.input, logits, name=name)
    return finish_target(model, exact_batch_norm)


def _torch_style_init(backbone: keras.Model) -> None:
    for layer in backbone.layers:
        if isinstance(layer, keras.layers.Conv2D):
            kernel = layer.kernel
            kernel.assign(conv_initializer()(kernel.shape, kernel.dtype))
        elif isinstance(layer, keras.layers.BatchNormalization):
            layer.momentum = BN_MOMENTUM
            layer.epsilon = BN_EPSILON
