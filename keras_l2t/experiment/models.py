"""Builds the networks, the `TransferModel` and both optimizers of an experiment."""

from __future__ import annotations

import os

import keras

from keras_l2t import networks, sources
from keras_l2t.experiment import small_networks
from keras_l2t.experiment.config import ExperimentConfig
from keras_l2t.experiment.errors import ExperimentError
from keras_l2t.features import LayerNameError
from keras_l2t.methods import get_method
from keras_l2t.optimizers import CoupledSGD, TorchAdam
from keras_l2t.transfer_model import TransferModel

NETWORK_HELP = (
    f"{sorted(networks.NETWORKS)}, cnn_<width>_<width>... (e.g. cnn_16_32_64) or a "
    ".keras file"
)


def build_network(name: str, num_classes: int, image_size: int,
                  exact_batch_norm: bool = True) -> keras.Model:
    """A network by name (`keras_l2t.networks`, a small CNN) or from a `.keras` file.

    Raises:
        ExperimentError: for an unknown name, a missing or unreadable file, a file model
            for another image size, or an image size the network cannot take.
    """
    shape = (image_size, image_size, 3)
    if name.endswith(".keras"):
        if not os.path.exists(name):
            raise ExperimentError(f"Network file '{name}' does not exist; check the path.")
        try:
            model = networks.load_network(name, exact_batch_norm=exact_batch_norm)
        except (OSError, ValueError, TypeError) as error:
            raise ExperimentError(f"Cannot load '{name}': {error}") from None
        check_image_size(model, image_size, name)
        return model
    if not (small_networks.is_small_cnn(name) or name in networks.NETWORKS):
        raise ExperimentError(f"Unknown network '{name}'; use one of {NETWORK_HELP}.")
    try:
        if small_networks.is_small_cnn(name):
            return small_networks.small_cnn(name, num_classes, shape, exact_batch_norm)
        return networks.build_network(name, num_classes, shape,
                                      exact_batch_norm=exact_batch_norm)
    except ValueError as error:
        lines = [line.strip() for line in str(error).splitlines() if line.strip()]
        reason = next((line for line in lines if "size" in line.lower()), lines[0])
        raise ExperimentError(
            f"Network '{name}' cannot take {image_size}-px images ({reason}); use a larger "
            "--image_size."
        ) from None


def check_image_size(model: keras.Model, image_size: int, name: str) -> None:
    """Raises ExperimentError when a file's model takes another fixed image size."""
    height, width = tuple(model.input_shape)[1:3]
    if (height, width) != (None, None) and (height, width) != (image_size, image_size):
        raise ExperimentError(
            f"'{name}' takes {height}x{width} images, not --image_size={image_size}; pass "
            f"--image_size={height} or a network built for {image_size}-px images."
        )


def default_layers(name: str, model: keras.Model) -> list[str]:
    """The default tap layers of a network: its stage outputs."""
    if small_networks.is_small_cnn(name):
        return small_networks.small_cnn_taps(name)
    if name in networks.NETWORKS or name in sources.IMAGENET_SOURCES:
        return sources.source_taps(name)
    try:
        return sources.source_taps(model)
    except ValueError as error:
        raise ExperimentError(f"{error} (pass --source_layers / --target_layers).") from None


def needs_pretraining(config: ExperimentConfig) -> bool:
    """Whether the experiment trains its source network itself first."""
    return (config.mode == "transfer" and config.method != "scratch"
            and config.source_pretrain_epochs > 0)


def build_source(config: ExperimentConfig, num_classes: int, image_size: int) -> keras.Model:
    """The frozen source: loaded, or freshly built when it will be pretrained here.

    For `--method=scratch` a trivial placeholder (the source is never run).

    Raises:
        ExperimentError: for an unknown source or a missing file.
        keras_l2t.sources.SourceWeightsUnavailable: when ImageNet weights cannot be fetched.
    """
    shape = (image_size, image_size, 3)
    if config.method == "scratch":
        inputs = keras.Input(shape)
        return keras.Model(inputs, keras.layers.Identity()(inputs), name="no_source")
    name = config.source
    source_classes = config.source_num_classes or num_classes
    if needs_pretraining(config):
        if not (small_networks.is_small_cnn(name) or name in networks.NETWORKS):
            raise ExperimentError(
                f"--source_pretrain_epochs needs a network name as --source, got '{name}'."
            )
        model = build_network(name, source_classes, image_size, exact_batch_norm=False)
    elif small_networks.is_small_cnn(name):
        if not config.source_weights:
            raise ExperimentError(
                f"Source '{name}' has no pretrained weights: pass --source_weights=PATH or "
                "--source_pretrain_epochs=N."
            )
        model = build_network(name, source_classes, image_size, exact_batch_norm=False)
        try:
            networks.load_weights_file(model, _existing(config.source_weights))
        except ValueError as error:
            raise ExperimentError(f"--source_weights: {error}") from None
    else:
        if name.endswith(".keras") and not os.path.exists(name):
            raise ExperimentError(
                f"Source file '{name}' does not exist; train it first (e.g. "
                "configs/tiny_imagenet.flags) or fix --source."
            )
        known = name in sources.IMAGENET_SOURCES or name in networks.NETWORKS
        if not (known or name.endswith(".keras")):
            raise ExperimentError(
                f"Unknown source '{name}'; use one of {sorted(sources.IMAGENET_SOURCES)}, "
                f"{NETWORK_HELP}."
            )
        try:
            model = sources.load_source(
                name,
                weights=config.source_weights,
                num_classes=config.source_num_classes,
                input_shape=shape if not name.endswith(".keras") else None,
            )
        except (FileNotFoundError, ValueError) as error:
            raise ExperimentError(str(error)) from None
        if name.endswith(".keras"):
            check_image_size(model, image_size, name)
    model.trainable = False
    return model


def build_transfer_model(config: ExperimentConfig, source: keras.Model,
                         target: keras.Model) -> TransferModel:
    """The `TransferModel` of the config (layer names are checked here).

    Raises:
        ExperimentError: for unknown layer names or pairs.
    """
    method = get_method(config.method)
    kwargs = {}
    if method.uses_pairs:
        kwargs = dict(
            pairs=config.pair_list(),
            source_layers=config.source_layers or default_layers(config.source, source),
            target_layers=config.target_layers or default_layers(config.target, target),
        )
    try:
        return TransferModel(
            source, target, method=config.method, beta=config.beta,
            lookahead_steps=config.lookahead_steps,
            pair_weight_activation=config.pair_weight_activation,
            meta_weight_decay=config.meta_weight_decay,
            attention_beta=config.attention_beta,
            distillation_temperature=config.distillation_temperature,
            distillation_weight=config.distillation_weight, **kwargs,
        )
    except LayerNameError as error:
        flag = "--pairs" if isinstance(config.pair_list(), list) else f"--{error.role}_layers"
        raise ExperimentError(f"{flag}: {error}") from None
    except ValueError as error:
        raise ExperimentError(f"{error}".replace("\n", " ")) from None


def learning_rate(config: ExperimentConfig, total_steps: int):
    """The target's learning rate: a per-step cosine decay to 0, or a constant.

    Per step, so the schedule's position lives in the optimizer's iteration counter and
    a checkpoint restores it.
    """
    if config.lr_schedule == "constant":
        return config.learning_rate
    return keras.optimizers.schedules.CosineDecay(config.learning_rate, total_steps, alpha=0.0)


def compile_model(model: TransferModel, config: ExperimentConfig, total_steps: int) -> None:
    """Compiles with the reference's optimizers: CoupledSGD, and TorchAdam for the meta-networks."""
    model.compile(
        optimizer=CoupledSGD(
            learning_rate(config, total_steps), momentum=config.momentum,
            weight_decay=config.weight_decay,
        ),
        meta_optimizer=TorchAdam(config.meta_learning_rate),
        metrics=[keras.metrics.SparseCategoricalAccuracy(name="accuracy")],
    )


def _existing(path: str) -> str:
    if not os.path.exists(path):
        raise ExperimentError(f"No such file: '{path}'; check --source_weights.")
    return path
