"""Sources from keras-hub image backbone presets: `load_source("hub:<preset>")`.

A preset is any keras-hub image backbone preset: a Hugging Face handle such as
`hf://timm/resnet34.tv_in1k` (timm's copy of torchvision's ImageNet ResNet-34, the
paper's 224-px source, read by keras-hub's timm loader), a Kaggle handle
(`kaggle://keras/resnetv1/keras/resnet_50_imagenet/2`) or keras-hub built-in name
(`resnet_50_imagenet`), or a local preset directory holding the same files.

The loaded network is rebuilt as a flat functional model of fresh layers (no nested
keras-hub model), so its inner layers can be tapped by name. Its default taps are the
backbone's stage outputs (keras-hub's `pyramid_outputs`, for a ResNet the four stage
outputs), renamed `stage1_out`, `stage2_out`, ...; the classifier is renamed `logits`
and outputs logits. keras-l2t feeds every network ImageNet mean/std-normalised RGB; when
the preset's image converter expects another scale (for example 0-1 RGB), a frozen
per-channel `Rescaling` layer, `imagenet_to_preset`, converts one into the other. For
torchvision's weights it is the identity and left out.

Offline, a preset that is neither cached nor local raises one
`keras_l2t.sources.SourceWeightsUnavailable` naming what to download and the
local-directory form.
"""

from __future__ import annotations

import contextlib
import logging
import os
import re

import keras
import numpy as np

from keras_l2t.data.augment import IMAGENET_MEAN, IMAGENET_STD

# `load_source` and train.py's --source take a preset as "hub:<preset>".
HUB_PREFIX = "hub:"
ADAPTER_NAME = "imagenet_to_preset"
LOGITS_NAME = "logits"
# keras-hub reads a preset's architecture from this file; fetching it probes the network.
CONFIG_FILE = "config.json"


def load_hub_source(
    preset: str,
    input_shape: tuple[int | None, ...] | None = None,
    include_top: bool = True,
) -> keras.Model:
    """Loads a keras-hub image backbone preset as a flat functional source.

    Args:
        preset: A Hugging Face handle (`hf://org/name`), a Kaggle handle
            (`kaggle://...`) or keras-hub built-in name, or a local preset directory.
        input_shape: (height, width, 3); the preset's own (often any size) if None.
        include_top: Keep the preset's classifier (outputs logits; LwF needs it).
            False keeps the backbone only (output: its last feature map).

    Returns:
        A flat functional model (not yet frozen) whose taps are `stage<i>_out`.

    Raises:
        keras_l2t.sources.SourceWeightsUnavailable: a remote preset cannot be fetched.
        FileNotFoundError: a local preset directory does not exist.
        ValueError: the preset is not an image backbone (with a classifier, when
            `include_top`) keras-hub can load.

    Example (a local preset directory, as `hf://timm/resnet34.tv_in1k` holds):
        `load_hub_source("/data/resnet34.tv_in1k", input_shape=(224, 224, 3))`.
    """
    import keras_hub  # Only when a preset is loaded.

    if not preset:
        raise ValueError(f"Empty keras-hub preset: pass {HUB_PREFIX}<preset>.")
    _fetch_config(preset)
    kwargs = {} if input_shape is None else {"image_shape": tuple(input_shape)}
    try:
        if include_top:
            task = keras_hub.models.ImageClassifier.from_preset(preset, **kwargs)
            backbone = task.backbone
            converter = getattr(task.preprocessor, "image_converter", None)
        else:
            task = None
            backbone = keras_hub.models.Backbone.from_preset(preset, **kwargs)
            converter = _image_converter(keras_hub, preset)
    except (ValueError, TypeError, KeyError, OSError) as error:
        raise ValueError(
            f"keras-hub preset '{preset}' cannot be loaded as an image "
            f"{'classifier' if include_top else 'backbone'}: {error}"
        ) from error
    return _flat_source(preset, backbone, task, _input_adapter(converter))


def download_hint(preset: str) -> str:
    """Which files of a preset to download, and where (for the offline message).

    Example:
        >>> download_hint("hf://timm/resnet34.tv_in1k").split(" (")[0]
        'the files of https://huggingface.co/timm/resnet34.tv_in1k'
    """
    scheme, handle = _remote_handle(preset)
    if scheme == "hf":
        return (
            f"the files of https://huggingface.co/{handle} ({CONFIG_FILE} and "
            "model.safetensors of a timm model, every file of a keras-hub one)"
        )
    if scheme == "kaggle":
        return f"every file of https://www.kaggle.com/models/{handle}"
    return f"the files of the keras-hub preset '{preset}'"


def _remote_handle(preset: str) -> tuple[str | None, str]:
    """("hf" or "kaggle", handle) of a remote preset; (None, preset) for the others."""
    if preset.startswith("hf://"):
        return "hf", preset.removeprefix("hf://")
    if preset.startswith("kaggle://"):
        return "kaggle", preset.removeprefix("kaggle://")
    if "://" not in preset and not os.path.exists(preset):
        import keras_hub

        builtin = keras_hub.models.Backbone.presets.get(preset)
        if builtin is not None:
            return "kaggle", builtin["kaggle_handle"].removeprefix("kaggle://")
    return None, preset


def _fetch_config(preset: str) -> None:
    """Fetches (or finds cached) the preset's config, which tells whether it is reachable.

    Raises:
        SourceWeightsUnavailable: a Hugging Face or Kaggle preset cannot be fetched.
        FileNotFoundError: a local directory that does not exist.
    """
    from keras_l2t.sources import SourceWeightsUnavailable

    scheme, handle = _remote_handle(preset)
    if scheme is None:
        if "://" not in preset and not os.path.isdir(preset):
            raise FileNotFoundError(
                f"No keras-hub preset directory '{preset}' (nor a built-in preset of that "
                f"name): pass hf://<org>/<name>, kaggle://<handle> or a folder with the "
                f"preset's {CONFIG_FILE} and weights."
            )
        return
    try:
        with _quiet("huggingface_hub"):
            if scheme == "hf":
                import huggingface_hub

                huggingface_hub.hf_hub_download(repo_id=handle, filename=CONFIG_FILE)
            else:
                import kagglehub

                kagglehub.model_download(handle, CONFIG_FILE)
    except Exception as error:  # Each client raises its own errors offline.
        cause = " ".join(str(error).split()) or type(error).__name__
        if len(cause) > 200:
            cause = cause[:200] + "..."
        raise SourceWeightsUnavailable(
            f"Could not fetch the keras-hub preset '{preset}' ({cause}). Download "
            f"{download_hint(preset)} elsewhere, copy the folder to this machine and pass "
            f"--source={HUB_PREFIX}/path/to/folder (in Python: "
            f"load_source('{HUB_PREFIX}/path/to/folder'))."
        ) from None


@contextlib.contextmanager
def _quiet(logger_name: str):
    """Silences a library's retry warnings: the failure is reported in one line."""
    logger = logging.getLogger(logger_name)
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        yield
    finally:
        logger.setLevel(level)


def _image_converter(keras_hub, preset: str):
    """The preset's image converter, or None when it has none."""
    try:
        return keras_hub.layers.ImageConverter.from_preset(preset)
    except (FileNotFoundError, ValueError):
        return None


def _input_adapter(converter) -> keras.layers.Layer | None:
    """A frozen layer from ImageNet mean/std-normalised RGB to what `converter` makes.

    The converter maps 0-255 RGB `x` to `x * scale + offset`; the project's input is
    `z = (x / 255 - mean) / std`, so the network expects `a * z + b` with
    `a = 255 * scale * std` and `b = 255 * scale * mean + offset` per channel. None when
    that is the identity (torchvision's ImageNet normalisation) or the preset has no
    converter (its network is assumed to take the project's input).
    """
    if converter is None or (converter.scale is None and converter.offset is None):
        return None
    scale = np.broadcast_to(
        np.asarray(1.0 if converter.scale is None else converter.scale, "float64"), (3,)
    )
    offset = np.broadcast_to(
        np.asarray(0.0 if converter.offset is None else converter.offset, "float64"), (3,)
    )
    a = 255.0 * scale * np.asarray(IMAGENET_STD)
    b = 255.0 * scale * np.asarray(IMAGENET_MEAN) + offset
    if np.allclose(a, 1.0, rtol=0, atol=1e-6) and np.allclose(b, 0.0, rtol=0, atol=1e-6):
        return None
    return keras.layers.Rescaling(
        scale=[float(v) for v in a],
        offset=[float(v) for v in b],
        trainable=False,
        name=ADAPTER_NAME,
    )


def _stage_layer_names(backbone: keras.Model) -> list[str]:
    """Names of the layers that output the backbone's `pyramid_outputs`, in order."""
    pyramid = getattr(backbone, "pyramid_outputs", None) or {}
    names = []
    for tensor in pyramid.values():
        names += [layer.name for layer in backbone.layers if layer.output is tensor]
    return names


def _flat_source(
    preset: str,
    backbone: keras.Model,
    task: keras.Model | None,
    adapter: keras.layers.Layer | None,
) -> keras.Model:
    stages = _stage_layer_names(backbone)  # Before the backbone's layers are reused.
    inputs = keras.Input(tuple(backbone.input.shape)[1:], name="image")
    x = inputs if adapter is None else adapter(inputs)
    # `call`, not `__call__`: the backbone's layers join this graph one by one.
    x = backbone.call(x)
    if task is not None:
        pooler, dense = getattr(task, "pooler", None), getattr(task, "output_dense", None)
        if pooler is None or dense is None:
            raise ValueError(
                f"keras-hub preset '{preset}': {type(task).__name__} has no pooler and "
                "output_dense to rebuild as logits; load it with include_top=False."
            )
        logits = keras.layers.Dense(dense.units, name=LOGITS_NAME)
        x = logits(pooler(x))
        logits.set_weights(dense.get_weights())
    traced = keras.Model(inputs, x)
    # Rebuilt from its config: fresh layers, each in this one graph (tappable by name).
    flat = keras.Model.from_config(traced.get_config())
    for layer in flat.layers:
        layer.set_weights(traced.get_layer(layer.name).get_weights())
    for index, name in enumerate(stages, start=1):
        flat.get_layer(name).name = f"stage{index}_out"
    flat.name = re.sub(r"\W", "_", preset.rstrip("/").rsplit("/", 1)[-1]) or "hub_source"
    return flat
