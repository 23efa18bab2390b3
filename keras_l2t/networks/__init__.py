"""The paper's networks, with named feature taps, and loading networks from files.

Every builder returns a flat functional `keras.Model` whose output is logits (no
softmax) and whose BatchNorm layers use exact second-order moments by default
(see `keras_l2t.exact_batch_norm`). Feature taps are addressed by layer name
(`default_taps(name)`), and `feature_extractor` turns any functional model into one
returning them.

| name     | style             | input       | default taps                 |
| -------- | ----------------- | ----------- | ---------------------------- |
| resnet18 | ImageNet (224 px) | 224x224x3   | stage1_out ... stage4_out    |
| resnet34 | ImageNet (224 px) | 224x224x3   | stage1_out ... stage4_out    |
| resnet32 | CIFAR (32 px)     | 32x32x3     | stage1_out ... stage3_out    |
| vgg9     | CIFAR (32 px)     | 32x32x3     | stage1_out ... stage5_out    |
| cnn_<w>_<w>... | small CNN   | 32x32x3     | stage1_out ... stage<n>_out  |

`cnn_16_32_64` and the like (`small_cnn`: one Conv-BN-ReLU + max-pool stage per width)
take seconds per epoch on a CPU; the demo and the tests use them.
"""

from __future__ import annotations

import functools
import os
from collections.abc import Callable, Sequence

import keras

from keras_l2t.features import feature_extractor, feature_map_layers
from keras_l2t.networks.cifar_resnet import CIFAR_RESNET_TAPS, resnet32
from keras_l2t.networks.imagenet_resnet import IMAGENET_RESNET_TAPS, resnet18, resnet34
from keras_l2t.networks.loading import load_network, load_weights_file
from keras_l2t.networks.small_cnn import is_small_cnn, small_cnn, small_cnn_taps
from keras_l2t.networks.vgg import VGG9_TAPS, vgg9

NETWORKS: dict[str, Callable[..., keras.Model]] = {
    "resnet18": resnet18,
    "resnet34": resnet34,
    "resnet32": resnet32,
    "vgg9": vgg9,
}

DEFAULT_TAPS: dict[str, tuple[str, ...]] = {
    "resnet18": IMAGENET_RESNET_TAPS,
    "resnet34": IMAGENET_RESNET_TAPS,
    "resnet32": CIFAR_RESNET_TAPS,
    "vgg9": VGG9_TAPS,
}


def build_network(
    name: str,
    num_classes: int,
    input_shape: Sequence[int | None] | None = None,
    *,
    weights: str | os.PathLike | None = None,
    exact_batch_norm: bool = True,
) -> keras.Model:
    """Builds one of the paper's networks, or a small CNN, by name.

    Args:
        name: One of `NETWORKS` ("resnet18", "resnet34", "resnet32", "vgg9"), or a
            small CNN "cnn_<width>_<width>..." such as "cnn_16_32_64".
        num_classes: Number of output logits.
        input_shape: (height, width, 3); the builder's default (224 or 32 px) if None.
        weights: Optional `.weights.h5` (or `.keras`) file saved from the same
            architecture, loaded into the new model.
        exact_batch_norm: Switch BatchNorm to exact second-order moments (see
            `keras_l2t.exact_batch_norm`). Keep True for a target network.

    Returns:
        A flat functional model with logits output and the taps `default_taps(name)`.

    Raises:
        ValueError: for an unknown name (the known ones are listed) or weights that do
            not fit.

    Example:
        >>> from keras_l2t.networks import build_network, default_taps, feature_extractor
        >>> target = build_network("cnn_8_16", num_classes=10, input_shape=(8, 8, 3))
        >>> taps = feature_extractor(target, default_taps("cnn_8_16"))
        >>> [tuple(output.shape) for output in taps.outputs]
        [(None, 8, 8, 8), (None, 4, 4, 16)]
    """
    builder = NETWORKS.get(name)
    if builder is None and is_small_cnn(name):
        builder = functools.partial(small_cnn, name)
    if builder is None:
        raise ValueError(
            f"Unknown network '{name}'. Known networks: {sorted(NETWORKS)} and small CNNs "
            "cnn_<width>_<width>... (e.g. cnn_16_32_64)."
        )
    kwargs = {} if input_shape is None else {"input_shape": tuple(input_shape)}
    model = builder(num_classes=num_classes, exact_batch_norm=exact_batch_norm, **kwargs)
    if weights is not None:
        load_weights_file(model, weights)
    return model


def default_taps(name: str) -> list[str]:
    """Returns the documented default tap layer names of network `name`.

    Example:
        >>> from keras_l2t.networks import default_taps
        >>> default_taps("resnet32")
        ['stage1_out', 'stage2_out', 'stage3_out']
        >>> default_taps("cnn_16_32")
        ['stage1_out', 'stage2_out']
    """
    if is_small_cnn(name):
        return small_cnn_taps(name)
    if name not in DEFAULT_TAPS:
        raise ValueError(f"Unknown network '{name}'. Known networks: {sorted(DEFAULT_TAPS)}.")
    return list(DEFAULT_TAPS[name])


__all__ = [
    "DEFAULT_TAPS",
    "NETWORKS",
    "build_network",
    "default_taps",
    "feature_extractor",
    "feature_map_layers",
    "is_small_cnn",
    "load_network",
    "load_weights_file",
    "resnet18",
    "resnet32",
    "resnet34",
    "small_cnn",
    "small_cnn_taps",
    "vgg9",
]
