"""The authors' Tiny ImageNet ResNet-32 (alinlab/L2T-ww, `models/resnet_cifar.py`) as a
keras-l2t `resnet32`: the names and layouts of their PyTorch state dict.

Their `CResNet` with n = 4: `conv1` (3x3, with bias) and `bn1`, then per stage a first
torchvision `BasicBlock` (`block1`, `block3`, `block5`; the last two stride 2 with a
`downsample` 1x1 convolution + BN) and four more (`blocks2.i`, `blocks4.i`,
`blocks6.i`), and `fc`. keras-l2t's `resnet32` is the same network (symmetric padding of
the strided convolutions), its block b of stage s named `stage{s}_block{b}_*`. Their
model also holds `alphas.*`, which the forward pass never reads: ignored.

Layouts: a PyTorch convolution kernel is (out, in, h, w), Keras' (h, w, in, out); a
linear weight is (out, in), a Dense kernel (in, out); BatchNorm keeps gamma, beta,
moving mean and moving variance in that order (PyTorch's `num_batches_tracked` is
dropped). Both use epsilon 1e-5.
"""

from __future__ import annotations

from collections.abc import Mapping

import keras
import numpy as np

from keras_l2t.networks.cifar_resnet import BLOCKS_PER_STAGE, STAGE_FILTERS, resnet32

_FIRST_BLOCKS = ("block1", "block3", "block5")  # stage 1, 2, 3: their first block
_OTHER_BLOCKS = ("blocks2", "blocks4", "blocks6")  # and the four after it
_IGNORED = ("alphas.",)
_BN = ("weight", "bias", "running_mean", "running_var")


def layer_names() -> dict[str, str]:
    """Their module name -> the keras-l2t `resnet32` layer it becomes.

    Example:
        >>> from keras_l2t.networks.authors_resnet32 import layer_names
        >>> names = layer_names()
        >>> names["blocks4.0.conv2"], names["block5.downsample.1"]
        ('stage2_block2_conv2', 'stage3_block1_shortcut_bn')
    """
    names = {"conv1": "stem_conv", "bn1": "stem_bn", "fc": "logits"}
    for stage in range(1, len(STAGE_FILTERS) + 1):
        blocks = [_FIRST_BLOCKS[stage - 1]] + [
            f"{_OTHER_BLOCKS[stage - 1]}.{i}" for i in range(BLOCKS_PER_STAGE - 1)]
        for number, theirs in enumerate(blocks, start=1):
            ours = f"stage{stage}_block{number}"
            for part in ("conv1", "bn1", "conv2", "bn2"):
                names[f"{theirs}.{part}"] = f"{ours}_{part}"
            if stage > 1 and number == 1:
                names[f"{theirs}.downsample.0"] = f"{ours}_shortcut_conv"
                names[f"{theirs}.downsample.1"] = f"{ours}_shortcut_bn"
    return names


def keras_weights(state_dict: Mapping[str, np.ndarray]) -> dict[str, list[np.ndarray]]:
    """Their state dict -> the weights of each keras-l2t layer, in Keras' order and layout.

    Args:
        state_dict: parameter name -> array (a PyTorch state dict as NumPy arrays).

    Returns:
        Layer name -> the list `layer.set_weights` takes.

    Raises:
        ValueError: naming the missing and the unexpected entries.
    """
    names = layer_names()
    weights, used = {}, set()
    missing = []
    for theirs, ours in names.items():
        if ours.rsplit("_", 1)[-1].startswith("bn"):
            keys = [f"{theirs}.{k}" for k in _BN]
        elif theirs in ("conv1", "fc"):  # the stem convolution and fc have biases
            keys = [f"{theirs}.weight", f"{theirs}.bias"]
        else:
            keys = [f"{theirs}.weight"]
        used.update(keys)
        missing += [k for k in keys if k not in state_dict]
        if any(k not in state_dict for k in keys):
            continue
        arrays = [np.asarray(state_dict[k], dtype=np.float32) for k in keys]
        if theirs == "fc":
            arrays[0] = arrays[0].T
        elif arrays[0].ndim == 4:
            arrays[0] = arrays[0].transpose(2, 3, 1, 0)
        weights[ours] = arrays
    unexpected = sorted(k for k in state_dict if k not in used and not k.startswith(_IGNORED)
                        and not k.endswith("num_batches_tracked"))
    if missing or unexpected:
        raise ValueError(
            "Not a state dict of the authors' resnet32 (alinlab/L2T-ww "
            f"models/resnet_cifar.py): missing {sorted(missing)[:5]}"
            f"{' ...' if len(missing) > 5 else ''}, unexpected {unexpected[:5]}"
            f"{' ...' if len(unexpected) > 5 else ''}."
        )
    return weights


def convert(state_dict: Mapping[str, np.ndarray]) -> keras.Model:
    """A keras-l2t `resnet32` holding the weights of their state dict.

    Args:
        state_dict: their parameter name -> array; the classes are `fc`'s rows (200 for
            their Tiny ImageNet source).

    Returns:
        `resnet32(num_classes, exact_batch_norm=False)` with their weights: save it as
        `.keras` and pass it as `--source`.

    Raises:
        ValueError: for a state dict of another network, or arrays of other shapes.
    """
    weights = keras_weights(state_dict)
    model = resnet32(num_classes=int(weights["logits"][0].shape[1]), exact_batch_norm=False)
    for name, arrays in weights.items():
        layer = model.get_layer(name)
        expected = [tuple(w.shape) for w in layer.get_weights()]
        if [a.shape for a in arrays] != expected:
            raise ValueError(f"{name}: their arrays have shapes {[a.shape for a in arrays]}, "
                             f"resnet32 expects {expected}.")
        layer.set_weights(arrays)
    return model
