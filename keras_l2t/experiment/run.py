"""`run_experiment`: a resolved config -> data, networks, training, checkpoints, results.

Sections, in the order a run meets them:

1. Networks and the model: networks by name or file, the source, the `TransferModel`,
   its optimizers.
2. Training: one `keras.Model.fit` per epoch (each epoch gets its own seeded train
   pipeline), with callbacks that check every step's loss and, at the end of the
   epoch, validate, log, draw and checkpoint. Under `MultiWorkerMirroredStrategy`
   alone, a small loop over `train_step` drives the same callbacks: `fit` fails there
   in Keras 3.15 (see `_multi_worker_epoch`).
3. Evaluation: each process evaluates the target locally.
4. Records: the CSV and TensorBoard log, the pictures of the learned weights.
5. Source pretraining: the demo's cached source and `--mode=pretrain_source`.
6. The run: every check that can fail on user input (flags, dataset, networks, layer
   names, strategy, batch size) runs before the first byte is written to the work
   directory; then the epochs, the results and the exports.
"""

from __future__ import annotations

import contextlib
import csv
import hashlib
import math
import os
import shutil
import sys
import tempfile
import time
import weakref

import keras
import numpy as np
import tensorflow as tf
from tensorflow.core.framework import summary_pb2

from keras_l2t import networks, pictures, sources
from keras_l2t._network_checks import outputs_logits
from keras_l2t.experiment import fingerprint, interrupts, work_dir
from keras_l2t.experiment.checkpoints import TrainingState
from keras_l2t.experiment.config import ExperimentConfig
from keras_l2t.experiment.data import ExperimentData, load_data
from keras_l2t.experiment.errors import ExperimentError, NonFiniteLoss
from keras_l2t.experiment.export import export_target
from keras_l2t.experiment.strategy import Strategy, is_chief, is_multi_worker, make_strategy
from keras_l2t.features import LayerNameError
from keras_l2t.methods import get_method
from keras_l2t.optimizers import CoupledSGD, TorchAdam
from keras_l2t.source_pretraining import SOURCE_FILE_NAME, pretrain_source
from keras_l2t.transfer_model import TransferModel

# ---------------------------------------------------------------------------------------
# 1. Networks and the model
# ---------------------------------------------------------------------------------------

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
    if not (networks.is_small_cnn(name) or name in networks.NETWORKS):
        raise ExperimentError(f"Unknown network '{name}'; use one of {NETWORK_HELP}.")
    try:
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
    if networks.is_small_cnn(name):
        return networks.default_taps(name)
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


def build_source(config: ExperimentConfig, num_classes: int,
                 image_size: int) -> keras.Model | dict[str, keras.Model]:
    """The frozen source, or with several (--source=name=SOURCE,...) the sources by name.

    For `--method=scratch` a trivial placeholder (the source is never run).

    Raises:
        ExperimentError: for an unknown source or a missing file (naming the entry with
            several sources).
        keras_l2t.sources.SourceWeightsUnavailable: when ImageNet weights or a keras-hub
            preset cannot be fetched.
    """
    if config.method == "scratch":
        inputs = keras.Input((image_size, image_size, 3))
        return keras.Model(inputs, keras.layers.Identity()(inputs), name="no_source")
    specs = config.source_specs()
    if specs is None:
        return build_one_source(config, config.source, config.source_weights, num_classes,
                                image_size)
    weights = config.source_weight_files()
    models = {}
    for name, spec in specs.items():
        with _entry_named(name):
            models[name] = build_one_source(
                config, spec, weights.get(name), num_classes, image_size,
                weights_hint=f"--source_weights={name}=PATH")
    return models


def build_one_source(config: ExperimentConfig, name: str, weights: str | None,
                     num_classes: int, image_size: int,
                     weights_hint: str = "--source_weights=PATH or --source_pretrain_epochs=N",
                     ) -> keras.Model:
    """One frozen source `name` (a --source value) with its weights file: loaded, or
    freshly built when it will be pretrained here. `weights_hint` is the flag a network
    name without weights is told to add.

    Raises:
        ExperimentError: for an unknown source or a missing file.
        keras_l2t.sources.SourceWeightsUnavailable: when ImageNet weights or a keras-hub
            preset cannot be fetched.
    """
    shape = (image_size, image_size, 3)
    source_classes = config.source_num_classes or num_classes
    if needs_pretraining(config):
        if not (networks.is_small_cnn(name) or name in networks.NETWORKS):
            raise ExperimentError(
                f"--source_pretrain_epochs needs a network name as --source, got '{name}'."
            )
        model = build_network(name, source_classes, image_size, exact_batch_norm=False)
    elif networks.is_small_cnn(name):
        if not weights:
            raise ExperimentError(
                f"Source '{name}' has no pretrained weights: pass {weights_hint}.")
        model = build_network(name, source_classes, image_size, exact_batch_norm=False)
        try:
            networks.load_weights_file(model, _existing(weights))
        except ValueError as error:
            raise ExperimentError(f"--source_weights: {error}") from None
    else:
        if name.endswith(".keras") and not os.path.exists(name):
            raise ExperimentError(
                f"Source file '{name}' does not exist; make it first (convert_source.py "
                "for the authors' ResNet-32, configs/tiny_imagenet.flags to pretrain your "
                "own) or fix --source."
            )
        if os.path.isdir(name):
            inside = os.path.join(name, SOURCE_FILE_NAME)
            preset = os.path.exists(os.path.join(name, "config.json"))
            raise ExperimentError(
                f"--source={name} is a folder; pass --source={inside}" if os.path.exists(inside)
                else f"--source={name} is a keras-hub preset folder; pass "
                f"--source={sources.HUB_PREFIX}{name}" if preset
                else f"--source={name} is a folder, not a network: pass a .keras file, "
                f"{sources.HUB_PREFIX}<keras-hub preset> or one of "
                f"{sorted(sources.IMAGENET_SOURCES)}, {NETWORK_HELP}."
            )
        known = (name in sources.IMAGENET_SOURCES or name in networks.NETWORKS
                 or name.startswith(sources.HUB_PREFIX))
        if not (known or name.endswith(".keras")):
            raise ExperimentError(
                f"Unknown source '{name}'; use {sources.HUB_PREFIX}<keras-hub preset> (e.g. "
                f"{sources.HUB_PREFIX}hf://timm/resnet34.tv_in1k) or one of "
                f"{sorted(sources.IMAGENET_SOURCES)}, {NETWORK_HELP}."
            )
        try:
            model = sources.load_source(
                name,
                weights=weights,
                num_classes=config.source_num_classes,
                input_shape=shape if not name.endswith(".keras") else None,
            )
        except (FileNotFoundError, ValueError) as error:
            raise ExperimentError(str(error)) from None
        if name.endswith(".keras"):
            check_image_size(model, image_size, name)
    model.trainable = False
    return model


@contextlib.contextmanager
def _entry_named(name: str):
    """Puts "--source entry '<name>': " before the errors of that source."""
    try:
        yield
    except ExperimentError as error:
        raise ExperimentError(f"--source entry '{name}': {error}") from None
    except sources.SourceWeightsUnavailable as error:
        raise sources.SourceWeightsUnavailable(f"--source entry '{name}': {error}") from None


def default_source_layers(config: ExperimentConfig,
                          source: keras.Model | dict[str, keras.Model]) -> list[str]:
    """The default source taps: the source's stage outputs; with several sources every
    source's, as "name/layer"."""
    specs = config.source_specs()
    if specs is None:
        return default_layers(config.source, source)
    layers = []
    for name, spec in specs.items():
        with _entry_named(name):
            layers += [f"{name}/{layer}" for layer in default_layers(spec, source[name])]
    return layers


def build_transfer_model(config: ExperimentConfig,
                         source: keras.Model | dict[str, keras.Model],
                         target: keras.Model, total_steps: int) -> TransferModel:
    """The `TransferModel` of the config; the library checks the values. `source` is
    `build_source`'s; `total_steps` sizes the cosine of `--beta_schedule=cosine`.

    Raises:
        ExperimentError: for unknown layer names or pairs, or an argument the
            `TransferModel` refuses, naming the flag.
    """
    method = get_method(config.method)
    kwargs = {}
    if method.uses_pairs:
        kwargs = dict(
            pairs=config.pair_list(),
            source_layers=config.source_layers or default_source_layers(config, source),
            target_layers=config.target_layers or default_layers(config.target, target),
        )
    arguments = {name: getattr(config, name) for name in (
        "pair_weight_activation", "lookahead_steps", "meta_weight_decay", "attention_beta",
        "distillation_temperature", "distillation_weight", "beta", "meta_objective",
        "meta_every", "source_normalization",
        # before transfer_gate, so its errors name its own flag (see `_flag_of`)
        "transfer_gate_momentum", "transfer_gate", "pair_weight_normalization",
    )}
    if config.beta_schedule == "cosine":  # per step, so a checkpoint restores its position
        for name in ("beta", "attention_beta"):
            arguments[name] = keras.optimizers.schedules.CosineDecay(
                arguments[name], total_steps, alpha=0.0)
    try:
        return TransferModel(source, target, method=config.method, **arguments, **kwargs)
    except LayerNameError as error:
        raise ExperimentError(f"{_layer_flag(config, error.role)}: {error}") from None
    except ValueError as error:
        raise ExperimentError(f"{_flag_of(error, arguments)}{error}".replace("\n", " ")
                              ) from None


def _layer_flag(config: ExperimentConfig, role: str) -> str:
    """The flag that named a layer of the `role` ("source", "target") network."""
    return "--pairs" if isinstance(config.pair_list(), list) else f"--{role}_layers"


def _flag_of(error: ValueError, arguments: dict) -> str:
    """The flag prefix ("--name: ") of the `TransferModel` argument `error` names, or ""."""
    message = str(error)
    for name in arguments:
        if name in message or name.replace("_", " ") in message:
            return f"--{name}: "
    return ""


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


# ---------------------------------------------------------------------------------------
# 2. Training
# ---------------------------------------------------------------------------------------


def interactive(progress: str) -> bool:
    """Whether to draw Keras progress bars ("auto": when stdout is a terminal)."""
    if progress == "auto":
        return sys.stdout.isatty()
    return progress == "bar"


def check_step(loss: float, epoch: int, step: int, steps: int) -> None:
    """Stops at a non-finite loss.

    Args:
        loss: The step's loss.
        epoch: 0-based epoch.
        step: 0-based step in the epoch.
        steps: Steps per epoch.

    Raises:
        NonFiniteLoss: when `loss` is NaN or infinite.
    """
    if not math.isfinite(loss):
        kept = (f"the checkpoint of epoch {epoch} (the last finished) is kept" if epoch
                else "no checkpoint was written (the first epoch had not finished)")
        raise NonFiniteLoss(
            f"The training loss became {loss} at epoch {epoch + 1}, step {step + 1} "
            f"(global step {epoch * steps + step + 1}); training stopped and {kept}. Lower "
            "--learning_rate or check the data, in a new --work_dir."
        )


class _StepCheck(keras.callbacks.Callback):
    """`check_step` after every training step.

    `async_safe` lets `fit` start the next step while this one's logs are fetched and
    checked (on JAX; Keras runs TensorFlow's callbacks in line), rather than wait for
    every step's logs. On a GPU, where the iteration is bound by the host's launches,
    that matters: in docs/benchmarks.md a `fit` that waits takes about 29 ms per L2T-ww
    iteration of the 32-px setting on an H200, one that does not about 17 ms. A
    non-finite loss still stops the run, a step or two later, and the error names the
    step it happened at.
    """

    async_safe = True

    def __init__(self, steps: int):
        super().__init__()
        self.steps, self.epoch = steps, 0

    def on_epoch_begin(self, epoch, logs=None):
        self.epoch = epoch

    def on_train_batch_end(self, batch, logs=None):
        check_step(float(logs["loss"]), self.epoch, batch, self.steps)


class _EpochEnd(keras.callbacks.Callback):
    """At the end of an epoch: validates, logs, draws, checkpoints and prints a line.

    Args:
        config: The experiment's config.
        model: The `TransferModel`.
        val: The validation pipeline, or None.
        state: The run's checkpoints.
        log: The run's `EpochLog` (the chief's), or None.
        picture_log: The run's `PictureLog` (the chief's), or None.
    """

    def __init__(self, config: ExperimentConfig, model, val: tf.data.Dataset | None,
                 state: TrainingState, log: EpochLog | None, picture_log: PictureLog | None):
        super().__init__()
        self.config, self.transfer, self.val = config, model, val
        self.state, self.log, self.picture_log = state, log, picture_log
        self.began, self.learning_rate = 0.0, 0.0

    def on_epoch_begin(self, epoch, logs=None):
        self.began = time.time()
        self.learning_rate = float(
            keras.ops.convert_to_numpy(self.transfer.optimizer.learning_rate))

    def on_epoch_end(self, epoch, logs=None):
        logs = {k: float(v) for k, v in (logs or {}).items()}
        val = evaluate(self.transfer.target, self.val)
        logs.update({f"val_{k}": v for k, v in val.items()})
        logs.update(learning_rate=self.learning_rate, seconds=time.time() - self.began)
        if self.log is not None:
            self.log.write(epoch, logs)
            self.picture_log.epoch(epoch)
        best = self.state.save(epoch + 1, val.get("accuracy", float(epoch)))
        _log(f"epoch {epoch + 1}/{self.config.epochs}: loss {logs['loss']:.4f} accuracy "
             f"{logs.get('accuracy', float('nan')):.4f} val_accuracy "
             f"{logs.get('val_accuracy', float('nan')):.4f} lr {self.learning_rate:.5f} "
             f"{logs['seconds']:.1f}s{' (best)' if best else ''}")


def _train_epoch(model, strategy: Strategy, dataset: tf.data.Dataset, epoch: int,
                 steps: int, callbacks: list, progress_bar: bool) -> None:
    """Trains epoch `epoch` (0-based, `steps` batches of `dataset`) with `callbacks`.

    Raises:
        NonFiniteLoss: at the first step whose loss is NaN or infinite.
    """
    if is_multi_worker(strategy):
        _multi_worker_epoch(model, strategy, dataset, epoch, steps, callbacks, progress_bar)
        return
    with strategy.scope():  # fit's data and state follow the strategy
        model.fit(dataset, epochs=epoch + 1, initial_epoch=epoch, steps_per_epoch=steps,
                  callbacks=callbacks, verbose=1 if progress_bar else 0, shuffle=False)
        # shuffle=False: the dataset shuffles itself; Keras would only warn.


# One compiled distributed step per model (multi-worker).
_MULTI_WORKER_STEPS: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def _multi_worker_epoch(model, strategy: tf.distribute.Strategy, dataset: tf.data.Dataset,
                        epoch: int, steps: int, callbacks: list, progress_bar: bool) -> None:
    """One epoch of `model.train_step` under `MultiWorkerMirroredStrategy`, driving
    `callbacks` as `fit` would.

    `fit` cannot run there in Keras 3.15.1: before the first step it averages a batch
    of the distributed dataset across workers to build the model
    (`TensorFlowTrainer._maybe_symbolic_build`), which fails with
    "ValueError: Attempt to convert a value (PerReplica:{...}) with an unsupported type
    (<class 'tensorflow.python.distribute.values.PerReplica'>) to a Tensor."; past it,
    `reduce_per_replica` reduces the scalar logs with `axis=0` (TensorFlow issue 72388).
    """
    options = tf.data.Options()
    options.experimental_distribute.auto_shard_policy = (
        tf.data.experimental.AutoShardPolicy.DATA)  # shard by batch across the workers
    distributed = strategy.experimental_distribute_dataset(dataset.with_options(options))
    step = _MULTI_WORKER_STEPS.get(model)
    if step is None:
        def replicated(batch):
            logs = strategy.run(model.train_step, args=(batch,))
            # Each replica's metrics cover its share of the batch: average them.
            return {k: strategy.reduce("MEAN", v, axis=None) for k, v in logs.items()}

        step = _MULTI_WORKER_STEPS[model] = tf.function(replicated, reduce_retracing=True)
    callback_list = keras.callbacks.CallbackList(
        callbacks, add_progbar=progress_bar, model=model, verbose=1, epochs=epoch + 1,
        steps=steps)
    model.reset_metrics()
    model.stop_training = False
    callback_list.on_train_begin()
    callback_list.on_epoch_begin(epoch)
    logs = {}
    for index, batch in enumerate(distributed):
        callback_list.on_train_batch_begin(index)
        logs = {k: float(v) for k, v in step(batch).items()}
        callback_list.on_train_batch_end(index, logs)
        if model.stop_training:  # as fit: a callback or Ctrl-C asked to stop
            break
    callback_list.on_epoch_end(epoch, logs)
    callback_list.on_train_end(logs)


# ---------------------------------------------------------------------------------------
# 3. Evaluation
# ---------------------------------------------------------------------------------------

# One compiled inference function per network, reused across epochs (TensorFlow).
_FORWARDS: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def evaluate(network: keras.Model, dataset: tf.data.Dataset | None) -> dict[str, float]:
    """Loss and accuracy of `network` on `dataset`, in this process alone.

    Every worker holds the same weights, so each evaluates the whole dataset locally
    (no collective ops: workers never wait on each other, whatever the batch count).

    Args:
        network: A network returning logits, or probabilities (ending in a softmax).
        dataset: Batches of (images, integer labels), or None.

    Returns:
        {"loss": mean cross-entropy, "accuracy": top-1}; {} for None or no examples.
    """
    if dataset is None:
        return {}
    forward, from_logits = _forward(network), outputs_logits(network)
    total, correct, loss = 0, 0, 0.0
    for x, labels in dataset.as_numpy_iterator():
        interrupts.check()
        outputs = np.asarray(forward(x)).astype(np.float64)
        if from_logits:
            shifted = outputs - outputs.max(axis=1, keepdims=True)
            log_probs = shifted - np.log(np.exp(shifted).sum(axis=1, keepdims=True))
        else:
            log_probs = np.log(np.clip(outputs, 1e-12, 1.0))
        loss += float(-log_probs[np.arange(len(labels)), labels].sum())
        correct += int((outputs.argmax(axis=1) == labels).sum())
        total += len(labels)
    if total == 0:
        return {}
    return {"loss": loss / total, "accuracy": correct / total}


def _forward(network: keras.Model):
    """The network's compiled inference: Keras' own on JAX, a `tf.function` on TensorFlow
    (run in this process alone even when the network was built under a strategy)."""
    if keras.backend.backend() == "jax":
        return network.predict_on_batch
    forward = _FORWARDS.get(network)
    if forward is None:
        forward = _FORWARDS[network] = tf.function(
            lambda x: network(x, training=False), reduce_retracing=True
        )
    return forward


# ---------------------------------------------------------------------------------------
# 4. Records
# ---------------------------------------------------------------------------------------

# Marks a summary as a TensorBoard scalar without importing tensorboard (not a
# dependency): what `tensorboard.summary.scalar` writes.
_SCALAR = summary_pb2.SummaryMetadata(
    plugin_data=summary_pb2.SummaryMetadata.PluginData(plugin_name="scalars"),
    data_class=summary_pb2.DATA_CLASS_SCALAR,
)
# Likewise for an image: a string tensor [width, height, png bytes], as
# `tensorboard.summary.image` writes it.
_IMAGE = summary_pb2.SummaryMetadata(
    plugin_data=summary_pb2.SummaryMetadata.PluginData(plugin_name="images"),
    data_class=summary_pb2.DATA_CLASS_BLOB_SEQUENCE,
)


class EpochLog:
    """Appends one row per epoch to a CSV file and one scalar per metric to TensorBoard.

    Args:
        csv_path: The CSV file.
        tensorboard_dir: The TensorBoard log directory.

    Example:
        >>> import os, tempfile
        >>> from keras_l2t.experiment.run import EpochLog
        >>> folder = tempfile.mkdtemp()
        >>> log = EpochLog(os.path.join(folder, "log.csv"), os.path.join(folder, "tb"))
        >>> log.write(0, {"loss": 1.25})
        >>> log.write(1, {"loss": 0.5})
        >>> log.truncate(finished_epochs=1)  # on resume: drop rows of unfinished epochs
        >>> log.read()
        {'epoch': [0.0], 'loss': [1.25]}
    """

    def __init__(self, csv_path: str, tensorboard_dir: str):
        self.csv_path, self.tensorboard_dir = csv_path, tensorboard_dir
        with work_dir.writing(tensorboard_dir):
            self.writer = tf.summary.create_file_writer(tensorboard_dir)

    def truncate(self, finished_epochs: int) -> None:
        """Keeps only the rows of the first `finished_epochs` epochs (after a resume)."""
        if not os.path.exists(self.csv_path):
            return
        with open(self.csv_path, newline="") as f:
            rows = list(csv.DictReader(f))
        kept = [row for row in rows if int(row["epoch"]) < finished_epochs]
        if len(kept) != len(rows):
            self._rewrite(kept, list(rows[0].keys()) if rows else ["epoch"])

    def write(self, epoch: int, logs: dict[str, float]) -> None:
        """Records epoch `epoch` (0-based)."""
        row = {"epoch": epoch, **{k: f"{v:.6g}" for k, v in logs.items()}}
        size = os.path.getsize(self.csv_path) if os.path.exists(self.csv_path) else 0
        with work_dir.writing(self.csv_path), open(self.csv_path, "a", newline="") as f:
            try:
                writer = csv.DictWriter(f, fieldnames=list(row))
                if not size:
                    writer.writeheader()
                writer.writerow(row)
                f.flush()
                os.fsync(f.fileno())
            except OSError:
                f.truncate(size)  # no half row for the resumed run to read
                raise
        with work_dir.writing(self.tensorboard_dir), self.writer.as_default(step=epoch):
            for key, value in logs.items():
                tf.summary.write(key, tf.constant(value, tf.float32), metadata=_SCALAR)
            self.writer.flush()

    def write_image(self, epoch: int, name: str, png: bytes) -> None:
        """Records a PNG image under `name` at epoch `epoch` (0-based) in TensorBoard."""
        shape = tf.shape(tf.io.decode_png(png))
        value = tf.stack([tf.as_string(shape[1]), tf.as_string(shape[0]), tf.constant(png)])
        with work_dir.writing(self.tensorboard_dir), self.writer.as_default(step=epoch):
            tf.summary.write(name, value, metadata=_IMAGE)
            self.writer.flush()

    def read(self) -> dict[str, list[float]]:
        """The CSV log as columns: metric name -> one value per recorded epoch."""
        if not os.path.exists(self.csv_path):
            return {}
        with open(self.csv_path, newline="") as f:
            rows = list(csv.DictReader(f))
        return {key: [float(row[key]) for row in rows] for key in (rows[0] if rows else {})}

    def _rewrite(self, rows: list[dict], fieldnames: list[str]) -> None:
        temporary = self.csv_path + ".tmp"
        with work_dir.writing(self.csv_path):
            with open(temporary, "w", newline="") as f:
                writer = csv.DictWriter(f, fieldnames=fieldnames)
                writer.writeheader()
                writer.writerows(rows)
            os.replace(temporary, self.csv_path)


class PictureLog:
    """Draws what an L2T-w / L2T-ww run learned (chief only; needs matplotlib).

    Every epoch: the pair-weight heatmap and the channel weights as TensorBoard images.
    At the end: `pictures/pair_weights.png`, `pair_weights_over_epochs.png` and
    `channel_weights.png` in the work directory, and the same in TensorBoard. Methods
    without meta-networks draw nothing.

    Args:
        model: The `TransferModel`.
        images: A fixed batch of preprocessed images to compute the weights on.
        log: The run's `EpochLog` (TensorBoard writer and CSV history).
        directory: Where the final PNG files go.
    """

    def __init__(self, model, images, log: EpochLog, directory: str):
        self.model, self.images, self.log, self.directory = model, images, log, directory
        self.enabled = model.method.meta_learned

    def epoch(self, epoch: int) -> None:
        """Adds this epoch's pictures to TensorBoard."""
        if not self.enabled:
            return
        lambdas, channels = pictures.current_weights(self.model, self.images)
        if lambdas:
            figure = pictures.plot_pair_weights(
                self.model.pairs, lambdas, title=f"Pair weights λ, epoch {epoch + 1}"
            )
            self.log.write_image(epoch, "pair_weights", pictures.to_png(figure))
        if channels:
            figure = pictures.plot_channel_weights(self.model.pairs, channels)
            self.log.write_image(epoch, "channel_weights", pictures.to_png(figure))

    def finish(self, epoch: int) -> list[str]:
        """Writes the final PNG files (and TensorBoard images at `epoch`); returns paths."""
        if not self.enabled:
            return []
        with work_dir.writing(self.directory):
            paths = pictures.write_pictures(self.model, self.images, self.log.read(),
                                            self.directory)
        for path in paths:
            with open(path, "rb") as f:
                name = os.path.splitext(os.path.basename(path))[0]
                self.log.write_image(epoch, f"final/{name}", f.read())
        return paths



# ---------------------------------------------------------------------------------------
# 5. Source pretraining
# ---------------------------------------------------------------------------------------


def _verbose(config: ExperimentConfig) -> int:
    return 1 if interactive(config.progress) else 2


def _source_file(config: ExperimentConfig) -> str:
    return os.path.join(work_dir.path(config.work_dir, work_dir.SOURCE), SOURCE_FILE_NAME)


def pretraining_data(config: ExperimentConfig, strategy: Strategy) -> ExperimentData | None:
    """The data the cached source will pretrain on; None when it is pretrained already.

    Called before the work directory is written, so that a bad `--source_pretrain_*`
    flag fails with nothing written.
    """
    if os.path.exists(_source_file(config)) and not config.overwrite:
        return None
    return load_data(config, num_replicas=strategy.num_replicas_in_sync,
                     source_pretraining=True, repeat=True)


def cached_source(config: ExperimentConfig, strategy: Strategy, source: keras.Model,
                  data: ExperimentData | None, test_ds: tf.data.Dataset | None) -> str:
    """Pretrains the config's source network once (cached) and loads it into `source`.

    The source trains on `data` (`pretraining_data`: `--source_pretrain_indices` of
    `--dataset`, all classes, no sample limit), `--source_pretrain_epochs` epochs, with
    the library's recipe (`keras_l2t.source_pretraining`). The file is
    `<work_dir>/source/source.keras`; an interrupted pretraining resumes, a finished one
    is reused (then `data` is None).

    Returns:
        The path of the pretrained source file.
    """
    path = _source_file(config)
    directory = os.path.dirname(path)
    if not os.path.exists(path):
        print(f"Pretraining the source {config.source} on {data.splits.num_train} images "
              f"for {config.source_pretrain_epochs} epochs (cached in {directory}).",
              flush=True)
        # Seeded here, so the source does not depend on what the run built before it
        # (the target and the method's modules): every method gets the same source.
        keras.utils.set_random_seed(config.seed)
        with strategy.scope():
            network = build_network(
                config.source, config.source_num_classes or data.splits.num_classes,
                data.splits.image_size, exact_batch_norm=False,
            )
            with work_dir.writing(directory):
                pretrain_source(network, data.splits.train, None,
                                config.source_pretrain_epochs, directory,
                                learning_rate=config.learning_rate, momentum=config.momentum,
                                weight_decay=config.weight_decay,
                                steps_per_epoch=data.steps_per_epoch,
                                verbose=_verbose(config))
    pretrained = keras.saving.load_model(path, compile=False)
    source.set_weights(pretrained.get_weights())
    if test_ds is not None:
        accuracy = evaluate(pretrained, test_ds)["accuracy"]
        print(f"Source {config.source}: test accuracy {accuracy:.4f}", flush=True)
    return path


def run_pretraining(config: ExperimentConfig, strategy: Strategy) -> dict:
    """`--mode=pretrain_source`: trains `--target` alone and saves it as a source.

    Writes `<work_dir>/source.keras` (load it with `--source=<that path>`),
    `history.csv`, and returns the results (also written to results.json by the caller).
    """
    data = load_data(config, num_replicas=strategy.num_replicas_in_sync, repeat=True)
    splits = data.splits
    with strategy.scope():
        network = build_network(config.target, splits.num_classes, splits.image_size,
                                exact_batch_norm=False)
    data_json = _check_same_data(config, data)
    # --- Every check passed: from here on the work directory is written. ---
    with work_dir.locked(config.work_dir):
        _start_writing(config, data_json)
        return _pretrain(config, strategy, data, network)


def _pretrain(config: ExperimentConfig, strategy: Strategy, data: ExperimentData,
              network: keras.Model) -> dict:
    """Everything of `--mode=pretrain_source` that writes: the training, the results."""
    splits = data.splits
    print(f"Pretraining {config.target} on {config.dataset} ({splits.num_train} train / "
          f"{splits.num_val} val / {splits.num_test} test, {splits.num_classes} classes, "
          f"{splits.image_size} px) for {config.epochs} epochs.", flush=True)
    # Under several replicas, fit() would split each validation batch across them, and
    # an uneven last batch fails; validation then runs once at the end, in this process.
    per_epoch_val = splits.val if splits.num_val and strategy.num_replicas_in_sync == 1 else None
    # fit's data and optimizer variables follow the strategy
    with strategy.scope(), work_dir.writing(config.work_dir):
        path = pretrain_source(
            network, splits.train, per_epoch_val, config.epochs,
            config.work_dir, learning_rate=config.learning_rate, momentum=config.momentum,
            weight_decay=config.weight_decay, steps_per_epoch=data.steps_per_epoch,
            verbose=_verbose(config),
        )
    test = evaluate(network, splits.test)
    val = evaluate(network, splits.val if splits.num_val else None)
    return {
        "mode": "pretrain_source",
        "source_file": os.path.abspath(path),
        "val_accuracy": val.get("accuracy"),
        "test_accuracy": test.get("accuracy"),
        "epochs": config.epochs,
        "num_classes": splits.num_classes,
    }



# ---------------------------------------------------------------------------------------
# 6. The run
# ---------------------------------------------------------------------------------------


def _log(message: str) -> None:
    print(message, flush=True)


def _check_existing(config: ExperimentConfig) -> dict | None:
    """Returns the results of a finished identical run; raises for a different one."""
    if config.overwrite:
        work_dir.check_clearable(config.work_dir)
        return None
    if not work_dir.holds_experiment(config.work_dir):
        if os.path.exists(work_dir.path(config.work_dir, work_dir.CONFIG)):
            raise ExperimentError(
                f"--work_dir={config.work_dir} has a {work_dir.CONFIG} that train.py did "
                "not write; use a new --work_dir."
            )
        return None
    saved = work_dir.read_json(work_dir.path(config.work_dir, work_dir.CONFIG))
    try:
        differences = config.differences(ExperimentConfig.from_dict(saved))
    except (ExperimentError, TypeError):
        differences = ["(config.json of another keras_l2t version)"]
    if differences:
        raise ExperimentError(
            f"--work_dir={config.work_dir} holds a different experiment (it differs in: "
            f"{', '.join(differences)}); use a new --work_dir, or --overwrite to delete it."
        )
    return work_dir.read_json(work_dir.path(config.work_dir, work_dir.RESULTS))


def run_experiment(config: ExperimentConfig, strategy: Strategy | None = None,
                   callbacks: list[keras.callbacks.Callback] = ()) -> dict:
    """Runs (or resumes, or reports the finished) experiment of `config`.

    Runs on the TensorFlow and JAX backends alike (`KERAS_BACKEND`).

    Args:
        config: The resolved configuration.
        strategy: A ready strategy; default `make_strategy(config.strategy)`.
        callbacks: More Keras callbacks for the training of the transfer run (every
            epoch's `fit`), after the run's own: its step check, and the validation,
            logs, pictures and checkpoint at the end of each epoch (an `on_epoch_end`
            sees the validation's `val_*` in the run's `log.csv`, not in its `logs`).

    Returns:
        The results (as in `<work_dir>/results.json`).

    Raises:
        ExperimentError: for any problem the user can fix, before anything is written
            (but for an image that fails to decode mid-training: the last checkpoint
            stays intact); `NonFiniteLoss` when training diverges.
        keras_l2t.sources.SourceWeightsUnavailable: offline without source weights.
    """
    config.validate()
    with _decode_errors_named(config):
        return _run(config, strategy, list(callbacks))


def _run(config: ExperimentConfig, strategy: Strategy | None, callbacks: list) -> dict:
    work_dir.check_writable(config.work_dir)
    strategy = strategy or make_strategy(config.strategy)
    finished = _check_existing(config)
    if finished is not None:
        _log(f"This experiment already finished: {config.work_dir}/results.json has "
             f"test accuracy {finished.get('test_accuracy')}. Nothing to do; use a new "
             "--work_dir or --overwrite to train again.")
        return finished
    if config.deterministic:  # the data pipelines are TensorFlow's on every backend
        tf.config.experimental.enable_op_determinism()
    keras.utils.set_random_seed(config.seed)
    if config.mode == "pretrain_source":
        results = run_pretraining(config, strategy)
        work_dir.write_json_atomic(work_dir.path(config.work_dir, work_dir.RESULTS), results)
        _log(f"Source pretraining done: test accuracy {_percent(results['test_accuracy'])}. "
             f"Use it with --source={results['source_file']}.")
        return results
    return _run_transfer(config, strategy, callbacks)


# Words of TensorFlow's image-decoding errors.
_DECODE_ERROR_WORDS = ("JPEG", "PNG", "GIF", "BMP", "Uncompress", "image file format")


@contextlib.contextmanager
def _decode_errors_named(config: ExperimentConfig):
    """Turns an image that fails to decode mid-training into an ExperimentError that
    says how to find the file (listing checks only the first bytes of each file)."""
    try:
        yield
    except (tf.errors.InvalidArgumentError, tf.errors.DataLossError) as error:
        message = str(error.message if hasattr(error, "message") else error)
        if not any(word in message for word in _DECODE_ERROR_WORDS):
            raise
        reason = message.strip().splitlines()[0][:200]
        folder = config.data_dir or "DATA_DIR"
        raise ExperimentError(
            f"An image of --dataset={config.dataset} could not be decoded ({reason}). "
            f"List the damaged files with: python -c \"from keras_l2t.data import "
            f"find_unreadable_images; print(find_unreadable_images('{folder}'))\", remove "
            "or replace them, and rerun the command: training resumes from the last "
            "finished epoch."
        ) from None


def _run_transfer(config: ExperimentConfig, strategy: Strategy, callbacks: list) -> dict:
    """Checks all a transfer run's input (data, networks, pairs, the data of a run to
    resume), then holds the work directory and trains (`_train_transfer`)."""
    chief = is_chief(strategy)
    if (config.meta_every > 1 and strategy.num_replicas_in_sync > 1
            and keras.backend.backend() == "tensorflow"):
        raise ExperimentError(
            f"--meta_every={config.meta_every} does not run over several replicas on "
            "TensorFlow; use KERAS_BACKEND=jax, one device, or --meta_every=1.")
    data = load_data(config, num_replicas=strategy.num_replicas_in_sync)
    splits = data.splits
    total_steps = config.epochs * data.steps_per_epoch
    # A fixed batch: it builds the compiled metrics, and the pictures are drawn on it.
    # (x, y), also with a held-out meta objective (`data.train` then pairs it with a meta
    # batch); epoch 0's first training batch when there is no validation split.
    sample = next((splits.val if splits.num_val else splits.train).as_numpy_iterator())
    with strategy.scope():
        target = build_network(config.target, splits.num_classes, splits.image_size)
        source = build_source(config, splits.num_classes, splits.image_size)
        model = build_transfer_model(config, source, target, total_steps)
        compile_model(model, config, total_steps)
        # Built now, `fit` builds nothing: on JAX its build would draw a batch of the
        # epoch's pipeline, and so change the batches of a resumed run's first epoch.
        model.compute_metrics(sample[0], sample[1], model(sample[0]), sample_weight=None)
        model.reset_metrics()
    pretraining = (pretraining_data(config, strategy)
                   if needs_pretraining(config) else None)
    data_json = _check_same_data(config, data)
    # --- Every check passed: from here on the work directory is written. ---
    # Only the chief writes the work directory; other workers write to scratch folders.
    with work_dir.locked(config.work_dir) if chief else contextlib.nullcontext():
        if chief:
            _start_writing(config, data_json)
        else:
            os.makedirs(config.work_dir, exist_ok=True)
        return _train_transfer(config, strategy, callbacks, data, model, sample, pretraining)


def _check_same_data(config: ExperimentConfig, data: ExperimentData) -> dict:
    """The data's fingerprint, checked against the one the run started with (if any).

    Raises:
        ExperimentError: when a run to resume was started on other data.
    """
    current = fingerprint.data_fingerprint(config, data)
    if config.overwrite:
        return current
    try:
        saved = work_dir.read_json(work_dir.path(config.work_dir, work_dir.DATA))
    except (OSError, ValueError):
        saved = None  # unreadable: written again below
    if isinstance(saved, dict):
        differences = fingerprint.differences(saved, current)
        if differences:
            raise ExperimentError(
                f"--work_dir={config.work_dir} was started on other data (it differs in: "
                f"{'; '.join(differences)}); resume it with the data it started on, or "
                "start anew with --overwrite or a new --work_dir."
            )
    return current


def _start_writing(config: ExperimentConfig, data_json: dict) -> None:
    """Clears the work directory on --overwrite, then writes data.json and config.json."""
    if config.overwrite:
        work_dir.clear(config.work_dir)
    work_dir.write_json_atomic(work_dir.path(config.work_dir, work_dir.DATA), data_json)
    work_dir.write_json_atomic(work_dir.path(config.work_dir, work_dir.CONFIG),
                               config.to_dict())


def _train_transfer(config: ExperimentConfig, strategy: Strategy, callbacks: list,
                    data: ExperimentData, model: TransferModel, sample,
                    pretraining: ExperimentData | None) -> dict:
    """Everything of a transfer run that writes: resume, epochs, results, exports."""
    chief = is_chief(strategy)
    splits = data.splits
    if needs_pretraining(config):
        cached_source(config, strategy, model.source, pretraining, splits.test)

    checkpoint_dir = work_dir.path(config.work_dir, work_dir.CHECKPOINTS)
    scratch = None if chief else tempfile.mkdtemp(prefix="l2t_worker_")
    state = TrainingState(model, scratch or checkpoint_dir, read_directory=checkpoint_dir)
    start = state.restore_last()
    log = EpochLog(work_dir.path(config.work_dir, work_dir.LOG),
                   work_dir.path(config.work_dir, work_dir.TENSORBOARD)) if chief else None
    picture_log = None
    if log is not None:
        log.truncate(start)
        picture_log = PictureLog(model, sample[0], log,
                                 work_dir.path(config.work_dir, work_dir.PICTURES))
    meta = ""
    if config.meta_objective == "held_out":
        meta = (f"{splits.num_meta} meta / " if config.meta_fraction
                else "meta batches from train / ")
    _log(f"{config.method}: {config.source or '-'} -> {config.target} on {config.dataset} "
         f"({splits.num_train} train / {splits.num_val} val / {meta}{splits.num_test} test, "
         f"{splits.num_classes} classes, {len(model.pairs)} pairs), "
         f"{strategy.num_replicas_in_sync} replica(s) on {keras.backend.backend()}, "
         f"{data.steps_per_epoch} steps/epoch.")
    if model.pairs:
        _log(pairs_text(model.pairs))
    if start >= config.epochs:
        _log(f"All {config.epochs} epochs were trained before; finishing.")
    elif start:
        _log(f"Resuming after epoch {start} of {config.epochs} from {checkpoint_dir}.")

    epoch_end = _EpochEnd(config, model, splits.val if splits.num_val else None, state, log,
                          picture_log)
    callbacks = [interrupts.StopOnInterrupt(), _StepCheck(data.steps_per_epoch), epoch_end,
                 *callbacks]
    with interrupts.training_epochs(model):
        for epoch in range(start, config.epochs):
            interrupts.check()
            _train_epoch(model, strategy, data.train(epoch), epoch, data.steps_per_epoch,
                         callbacks, interactive(config.progress))
    interrupts.check()

    last_val = evaluate(model.target, splits.val if splits.num_val else None)
    last_test = evaluate(model.target, splits.test)
    state.restore_best()
    test = evaluate(model.target, splits.test)
    best_val = state.best_val_accuracy
    results = {
        "mode": "transfer",
        "method": config.method,
        "dataset": config.dataset,
        "source": config.source,
        "target": config.target,
        "pairs": [list(pair) for pair in model.pairs],
        "epochs": config.epochs,
        "best_epoch": state.best_epoch,
        "best_val_accuracy": best_val if splits.num_val else None,
        "test_accuracy": test.get("accuracy"),
        "test_loss": test.get("loss"),
        "last_epoch_val_accuracy": last_val.get("accuracy"),
        "last_epoch_test_accuracy": last_test.get("accuracy"),
        "num_train": splits.num_train,
        "num_val": splits.num_val,
        "num_test": splits.num_test,
        "meta_objective": config.meta_objective,
        "meta_fraction": config.meta_fraction,
        "num_meta": splits.num_meta,
        "class_names": list(splits.class_names),
        "image_size": splits.image_size,
        "target_weights_sha1": _fingerprint(model.target),
    }
    if isinstance(model.source, dict):  # several sources: each one's --source entry
        results["sources"] = config.source_specs()
    if chief:
        # The final pictures show the meta-networks of the best epoch (restored above),
        # the one results.json reports; the course over epochs shows every epoch.
        picture_log.finish(max(config.epochs - 1, 0))
        _write_outputs(config, model, splits.image_size, results)
    elif scratch:
        shutil.rmtree(scratch, ignore_errors=True)
    if splits.num_val:
        _log(f"Test accuracy at the best validation epoch ({results['best_epoch']}): "
             f"{_percent(results['test_accuracy'])}; at the last epoch: "
             f"{_percent(results['last_epoch_test_accuracy'])}.")
    else:
        _log(f"No validation set (--val_fraction=0): test accuracy at the last epoch "
             f"({results['best_epoch']}): {_percent(results['test_accuracy'])}.")
    _log(f"Target weights sha1 {results['target_weights_sha1']}.")
    if chief:
        _log(f"Results in {work_dir.path(config.work_dir, work_dir.RESULTS)}; the target as "
             f"{work_dir.TARGET} and, for serving, the SavedModel {work_dir.EXPORT}/ there.")
    return results


def pairs_text(pairs: list[tuple[str, str]], width: int = 100) -> str:
    """The pairs numbered as the logs' `lambda_<i>` / `entropy_<i>` columns, wrapped
    between pairs at `width` characters.

    Example:
        >>> from keras_l2t.experiment.run import pairs_text
        >>> print(pairs_text([("a/s1", "t1"), ("a/s1", "t2"), ("b/s1", "t2")], width=40))
        pairs: 0 a/s1 -> t1, 1 a/s1 -> t2,
               2 b/s1 -> t2
    """
    digits = len(str(len(pairs) - 1))
    items = [f"{i:0{digits}d} {source} -> {target}" for i, (source, target) in enumerate(pairs)]
    lines = [f"pairs: {items[0]}"]
    for item in items[1:]:
        if len(lines[-1]) + 2 + len(item) <= width:
            lines[-1] += f", {item}"
        else:
            lines[-1] += ","
            lines.append(" " * len("pairs: ") + item)
    return "\n".join(lines)


def _fingerprint(network: keras.Model) -> str:
    """A hash of the network's weights: identical on every worker of a synchronous run."""
    digest = hashlib.sha1()
    for value in network.get_weights():
        digest.update(value.tobytes())
    return digest.hexdigest()


def _write_outputs(config: ExperimentConfig, model, image_size: int, results: dict) -> None:
    """The target as .keras and as a serving SavedModel, then results.json (last)."""
    target_path = work_dir.path(config.work_dir, work_dir.TARGET)
    export_path = work_dir.path(config.work_dir, work_dir.EXPORT)
    with work_dir.writing(target_path):
        model.target.save(target_path)
    # Exported from a plain copy (loaded outside any strategy scope: one device).
    plain = keras.saving.load_model(target_path, compile=False)
    with work_dir.writing(export_path):
        if os.path.exists(export_path):
            shutil.rmtree(export_path)
        export_target(plain, export_path, image_size)
    results = dict(results, target_file=os.path.abspath(target_path),
                   export_dir=os.path.abspath(export_path))
    work_dir.write_json_atomic(work_dir.path(config.work_dir, work_dir.RESULTS), results)


def _percent(value: float | None) -> str:
    return "n/a" if value is None else f"{100 * value:.2f}%"
