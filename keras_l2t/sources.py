"""Pretrained source networks: keras-hub presets, Keras ImageNet weights, local files.

A source is frozen (`trainable = False`) and run in inference mode by the library, and
outputs logits. It can come from:

(a) A keras-hub image backbone preset, `"hub:<preset>"` (`keras_l2t.hub_sources`): the
    paper's 224-px source, torchvision's ImageNet ResNet-34, is
    `"hub:hf://timm/resnet34.tv_in1k"`; a Kaggle handle, a keras-hub built-in name or a
    local preset directory work the same way. Taps: the backbone's stage outputs.
(b) Keras ImageNet weights (`keras.applications`): "resnet50_imagenet",
    "resnet101_imagenet", "resnet152_imagenet". Keras' ImageNet ResNets expect "caffe"
    inputs (BGR, 0-255, mean subtracted); the project feeds every network ImageNet
    mean/std-normalised RGB (as the authors' code does), so the loaded source starts
    with a frozen 1x1 convolution, `imagenet_to_caffe`, that converts one into the
    other exactly.
(c) A local file: a `.keras` model (any functional model), or a weights file for a
    named architecture (the Keras ImageNet `.h5` file, or a `.weights.h5`).
(d) A source trained by this project (`keras_l2t.source_pretraining.pretrain_source`
    writes a `.keras` file that `load_source(path)` loads).

Offline, a failed download raises `SourceWeightsUnavailable`, whose message names the
files to fetch elsewhere and how to pass their local copy.
"""

from __future__ import annotations

import dataclasses
import os
import re

import keras
import numpy as np

from keras_l2t.data.augment import IMAGENET_MEAN, IMAGENET_STD
from keras_l2t.features import feature_map_layers
from keras_l2t.hub_sources import HUB_PREFIX, load_hub_source
from keras_l2t.networks import (
    NETWORKS,
    build_network,
    default_taps,
    load_network,
    load_weights_file,
)

# The command-line flag that takes a local weights file (train.py).
WEIGHTS_FLAG = "--source_weights"

# keras.applications ResNet "caffe" preprocessing: BGR means on the 0-255 scale.
CAFFE_MEAN_BGR = (103.939, 116.779, 123.68)

KERAS_APPLICATIONS_URL = "https://storage.googleapis.com/tensorflow/keras-applications/resnet/"


class SourceWeightsUnavailable(RuntimeError):
    """Pretrained source weights could not be downloaded (for example, offline).

    The message names the file to fetch elsewhere and how to pass its local path.
    """


@dataclasses.dataclass(frozen=True)
class _ApplicationSource:
    application: str  # keras.applications attribute
    weights_name: str  # file stem used by keras.applications
    stage_blocks: tuple[int, int, int, int]
    hashes: tuple[str, str]  # md5 of the (top, notop) files, from keras.applications

    def file_name(self, include_top: bool) -> str:
        suffix = "" if include_top else "_notop"
        return f"{self.weights_name}_weights_tf_dim_ordering_tf_kernels{suffix}.h5"

    def stage_outputs(self) -> list[str]:
        return [f"conv{i + 2}_block{n}_out" for i, n in enumerate(self.stage_blocks)]


IMAGENET_SOURCES: dict[str, _ApplicationSource] = {
    "resnet50_imagenet": _ApplicationSource(
        "ResNet50",
        "resnet50",
        (3, 4, 6, 3),
        ("2cb95161c43110f7111970584f804107", "4d473c1dd8becc155b73f8504c6f6626"),
    ),
    "resnet101_imagenet": _ApplicationSource(
        "ResNet101",
        "resnet101",
        (3, 4, 23, 3),
        ("f1aeb4b969a6efcfb50fad2f0c20cfc5", "88cf7a10940856eca736dc7b7e228a21"),
    ),
    "resnet152_imagenet": _ApplicationSource(
        "ResNet152",
        "resnet152",
        (3, 8, 36, 3),
        ("100835be76be38e30d865e96f2aaae62", "ee4c566cf9a93f14d82f913c2dc6dd0c"),
    ),
}

# Stage outputs of every ImageNet source are renamed to these, as in the builders.
IMAGENET_SOURCE_TAPS = ("stage1_out", "stage2_out", "stage3_out", "stage4_out")
ADAPTER_NAME = "imagenet_to_caffe"


def load_source(
    source: str | os.PathLike,
    weights: str | os.PathLike | None = None,
    *,
    num_classes: int | None = None,
    input_shape: tuple[int | None, ...] | None = None,
    include_top: bool = True,
    cache_dir: str | None = None,
) -> keras.Model:
    """Loads a frozen, pretrained source network.

    Args:
        source: One of
            - `"hub:<preset>"`: a keras-hub image backbone preset (a Hugging Face
              handle such as `hf://timm/resnet34.tv_in1k`, a Kaggle handle or
              keras-hub built-in name, or a local preset directory), fetched unless
              cached or local;
            - a key of `IMAGENET_SOURCES` ("resnet50_imagenet", ...): Keras ImageNet
              weights, downloaded unless `weights` gives the local file;
            - a builder name of `keras_l2t.networks.NETWORKS` ("resnet32", "resnet34",
              ...), with `weights` (required) and `num_classes`;
            - the path of a `.keras` file (any functional model, e.g. from
              `pretrain_source`).
        weights: Local weights file (the CLI flag `--source_weights=PATH`). For an
            ImageNet source: the Keras `.h5` file named by `weights_file_name`, or a
            `.weights.h5` saved from a source loaded here. For a builder name: a
            `.weights.h5` or `.keras` file saved from that architecture.
        num_classes: Number of classes of a builder source's head (e.g. 200 for a
            Tiny ImageNet ResNet-32).
        input_shape: Input shape; the builder's default (ImageNet sources: 224 px; a
            preset: its own, often any size).
        include_top: ImageNet sources and presets only: keep the 1000-class classifier (outputs
            logits; needed by LwF). False keeps only the convolutional backbone
            (output: the last stage's feature map) and uses the smaller "notop" file.
        cache_dir: Keras download cache directory (default `~/.keras`).

    Returns:
        A functional model with `trainable = False`; `source_taps(model)` gives its
        default taps.

    Raises:
        SourceWeightsUnavailable: when ImageNet weights or a preset cannot be downloaded.
        FileNotFoundError: when a given file does not exist.
        ValueError: for an unknown source, a missing argument, or a file that does not
            fit the architecture.

    Example (a `.keras` file, as `pretrain_source` writes one):
        >>> import os, tempfile
        >>> inputs = keras.Input((32, 32, 3))  # an untrained stand-in, 10 classes
        >>> conv = keras.layers.Conv2D(10, 3, kernel_initializer="zeros", name="stage1_out")
        >>> logits = keras.layers.GlobalAveragePooling2D()(conv(inputs))
        >>> path = os.path.join(tempfile.mkdtemp(), "source.keras")
        >>> keras.Model(inputs, logits).save(path)
        >>> source = load_source(path)
        >>> source.trainable, source_taps(source)
        (False, ['stage1_out'])

        Offline, an ImageNet source loads from the Keras file that `weights_file_name`
        names, fetched elsewhere: `load_source("resnet50_imagenet", weights=PATH)`.

        >>> weights_file_name("resnet50_imagenet")
        'resnet50_weights_tf_dim_ordering_tf_kernels.h5'
    """
    source = os.fspath(source)
    if source.startswith(HUB_PREFIX):
        if weights is not None:
            raise ValueError(f"Source '{source}' is a keras-hub preset; do not pass weights.")
        model = load_hub_source(source[len(HUB_PREFIX) :], input_shape, include_top)
    elif source in IMAGENET_SOURCES:
        model = _load_imagenet_source(
            source, weights, input_shape or (224, 224, 3), include_top, cache_dir
        )
    elif source in NETWORKS:
        model = _load_builder_source(source, weights, num_classes, input_shape)
    elif source.endswith(".keras"):
        if weights is not None:
            raise ValueError(f"Source '{source}' is a full .keras model; do not pass weights.")
        model = load_network(source, exact_batch_norm=False)
    else:
        raise ValueError(
            f"Unknown source '{source}'. Use {HUB_PREFIX}<keras-hub preset>, an ImageNet source "
            f"{sorted(IMAGENET_SOURCES)}, a network name {sorted(NETWORKS)} with "
            "weights=PATH, or the path of a .keras file."
        )
    model.trainable = False
    return model


def source_taps(source: str | keras.Model) -> list[str]:
    """Returns the default tap names of a source: its stage outputs.

    Args:
        source: An ImageNet source or network name accepted by `load_source` (not a
            file path), or a loaded model (e.g. from a `.keras` file), whose layers
            named `stage{i}_out` are returned in order.

    Raises:
        ValueError: when the source has no `stage{i}_out` layers; choose taps from the
            listed 4-D layers instead.
    """
    if isinstance(source, keras.Model):
        names = [n for n in feature_map_layers(source) if re.fullmatch(r"stage\d+_out", n)]
        if not names:
            raise ValueError(
                f"Model '{source.name}' has no 'stage<i>_out' layers; name its taps "
                f"explicitly. Layers with 4-D feature maps: {feature_map_layers(source)}"
            )
        return sorted(names, key=lambda n: int(n[5:-4]))
    if source in IMAGENET_SOURCES:
        return list(IMAGENET_SOURCE_TAPS)
    if source in NETWORKS:
        return default_taps(source)
    raise ValueError(
        f"No default taps for '{source}': load it and pass the model, or name the taps."
    )


def weights_file_name(source: str, include_top: bool = True) -> str:
    """The Keras file name of an ImageNet source's weights (what `weights` expects)."""
    return _imagenet_spec(source).file_name(include_top)


def weights_url(source: str, include_top: bool = True) -> str:
    """The download address of an ImageNet source's Keras weights file."""
    return KERAS_APPLICATIONS_URL + weights_file_name(source, include_top)


def imagenet_to_caffe_layer(name: str = ADAPTER_NAME) -> keras.layers.Conv2D:
    """A frozen 1x1 convolution from ImageNet mean/std-normalised RGB to "caffe" input.

    Caffe input is BGR on the 0-255 scale minus `CAFFE_MEAN_BGR`, what
    `keras.applications.resnet.preprocess_input` produces from 0-255 RGB.

    Returns:
        A built, non-trainable `Conv2D(3, 1)` layer.
    """
    kernel = np.zeros((1, 1, 3, 3), dtype="float32")
    bias = np.zeros((3,), dtype="float32")
    for out_channel in range(3):
        rgb = 2 - out_channel  # BGR output channel c reads RGB input channel 2 - c.
        kernel[0, 0, rgb, out_channel] = 255.0 * IMAGENET_STD[rgb]
        bias[out_channel] = 255.0 * IMAGENET_MEAN[rgb] - CAFFE_MEAN_BGR[out_channel]
    layer = keras.layers.Conv2D(3, 1, trainable=False, name=name)
    layer.build((None, None, None, 3))
    layer.set_weights([kernel, bias])
    return layer


def _imagenet_spec(source: str) -> _ApplicationSource:
    if source not in IMAGENET_SOURCES:
        raise ValueError(f"Unknown ImageNet source '{source}'. Known: {sorted(IMAGENET_SOURCES)}.")
    return IMAGENET_SOURCES[source]


def _load_imagenet_source(
    source: str,
    weights: str | os.PathLike | None,
    input_shape: tuple[int | None, ...],
    include_top: bool,
    cache_dir: str | None,
) -> keras.Model:
    spec = _imagenet_spec(source)
    path = (
        _download(source, spec, include_top, cache_dir) if weights is None else _existing(weights)
    )
    model = _build_imagenet_source(source, spec, input_shape, include_top)
    if path.endswith((".weights.h5", ".keras")):
        load_weights_file(model, path)  # Saved from a source built here.
        return model
    # The Keras ImageNet file (legacy .h5): load it into the stock application the way
    # keras.applications does, then copy layer by layer (the adapter is extra).
    application = getattr(keras.applications, spec.application)
    try:
        stock = application(
            include_top=include_top,
            weights=path,
            input_shape=tuple(input_shape),
            classifier_activation=None,
        )
    except (ValueError, OSError) as error:  # OSError: h5py cannot read the file
        raise ValueError(
            f"'{path}' cannot be loaded into {spec.application} (include_top={include_top})"
            f"; expected the Keras file '{spec.file_name(include_top)}': {error}"
        ) from error
    renamed = _renamed_layers(spec)
    for layer in stock.layers:
        if layer.weights:
            target = model.get_layer(renamed.get(layer.name, layer.name))
            target.set_weights(layer.get_weights())
    return model


def _build_imagenet_source(
    source: str,
    spec: _ApplicationSource,
    input_shape: tuple[int | None, ...],
    include_top: bool,
) -> keras.Model:
    inputs = keras.Input(shape=tuple(input_shape), name="image")
    caffe = imagenet_to_caffe_layer()(inputs)
    application = getattr(keras.applications, spec.application)
    # Built on `caffe`, so the application's layers are top-level layers of the model.
    stock = application(
        include_top=include_top, weights=None, input_tensor=caffe, classifier_activation=None
    )
    # A single input tensor, not a one-element list (keras.applications' structure).
    model = keras.Model(inputs, stock.outputs[0], name=source)
    for old, new in _renamed_layers(spec).items():
        if old in (layer.name for layer in model.layers):
            model.get_layer(old).name = new
    return model


def _renamed_layers(spec: _ApplicationSource) -> dict[str, str]:
    """Keras application layer names -> the names used by keras-l2t's sources."""
    names = dict(zip(spec.stage_outputs(), IMAGENET_SOURCE_TAPS, strict=True))
    names["predictions"] = "logits"
    return names


def _download(
    source: str, spec: _ApplicationSource, include_top: bool, cache_dir: str | None
) -> str:
    file_name = spec.file_name(include_top)
    origin = KERAS_APPLICATIONS_URL + file_name
    try:
        return keras.utils.get_file(
            file_name,
            origin,
            cache_subdir="models",
            file_hash=spec.hashes[0 if include_top else 1],
            cache_dir=cache_dir,
        )
    # keras.utils.get_file raises a plain Exception offline.
    except Exception as error:
        cache = os.path.join(cache_dir or os.path.join("~", ".keras"), "models", file_name)
        raise SourceWeightsUnavailable(
            f"Could not download the ImageNet weights of source '{source}' ({error}). "
            f"Fetch the file elsewhere: {origin} (md5 "
            f"{spec.hashes[0 if include_top else 1]}), copy it to this machine and pass "
            f"its path with {WEIGHTS_FLAG}=PATH (in Python: load_source('{source}', "
            f"weights=PATH)), or put it at {cache} where Keras finds it without network."
        ) from None


def _load_builder_source(
    source: str,
    weights: str | os.PathLike | None,
    num_classes: int | None,
    input_shape: tuple[int | None, ...] | None,
) -> keras.Model:
    if weights is None:
        raise ValueError(
            f"Source '{source}' has no built-in pretrained weights: pass a .weights.h5 "
            f"or .keras file saved from it with {WEIGHTS_FLAG}=PATH (in Python: "
            f"load_source('{source}', weights=PATH, num_classes=N)), e.g. one written by "
            "keras_l2t.source_pretraining.pretrain_source."
        )
    if num_classes is None:
        raise ValueError(
            f"Source '{source}' needs num_classes, the classes of its head (train.py: "
            "--source_num_classes=N)."
        )
    return build_network(
        source, num_classes, input_shape, weights=_existing(weights), exact_batch_norm=False
    )


def _existing(path: str | os.PathLike) -> str:
    path = os.fspath(path)
    if not os.path.exists(path):
        raise FileNotFoundError(f"No such source weights file: '{path}'.")
    return path
