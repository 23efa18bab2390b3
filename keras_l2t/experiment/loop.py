"""The training and evaluation loops: one epoch of `train_step`s, and a local evaluation.

On TensorFlow, `TrainLoop` runs the epoch itself: `keras.Model.fit` in Keras 3.15 fails
under `MultiWorkerMirroredStrategy` (it reduces scalar logs with `axis=0`, TensorFlow
issue 72388). On JAX, `FitLoop` runs one `fit` epoch, whose compiled stateless step
carries the model's state on the devices. Both check every step's loss, and each epoch
gets its own train pipeline (per-epoch data seeds). The step itself is
`TransferModel.train_step` either way.
"""

from __future__ import annotations

import math
import os
import signal
import sys
import weakref

import keras
import numpy as np
import tensorflow as tf

from keras_l2t.experiment.errors import ExperimentError
from keras_l2t.experiment.strategy import Strategy, is_multi_worker

# One compiled inference function per network, reused across epochs (TensorFlow).
_FORWARDS: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


class NonFiniteLoss(ExperimentError):
    """The training loss became NaN or infinite; training stopped before saving."""


def interactive(progress: str) -> bool:
    """Whether to draw Keras progress bars ("auto": when stdout is a terminal)."""
    if progress == "auto":
        return sys.stdout.isatty()
    return progress == "bar"


def make_train_loop(model, strategy: Strategy, progress_bar: bool = False,
                    kill_at_step: int | None = None) -> TrainLoop | FitLoop:
    """The backend's epoch loop: `TrainLoop` on TensorFlow, `FitLoop` on JAX.

    Args:
        model: A compiled `TransferModel`.
        strategy: The strategy the model was built under.
        progress_bar: Draw a Keras progress bar per epoch.
        kill_at_step: Testing only: SIGKILL this process at this global step.
    """
    if keras.backend.backend() == "jax":
        return FitLoop(model, strategy, progress_bar, kill_at_step)
    return TrainLoop(model, strategy, progress_bar, kill_at_step,
                     auto_shard=is_multi_worker(strategy))


def check_step(loss: float, epoch: int, step: int, steps: int,
               kill_at_step: int | None = None) -> None:
    """Stops at a non-finite loss; testing only: SIGKILLs this process at `kill_at_step`.

    Args:
        loss: The step's loss.
        epoch: 0-based epoch.
        step: 0-based step in the epoch.
        steps: Steps per epoch.
        kill_at_step: 1-based global step to be killed at.

    Raises:
        NonFiniteLoss: when `loss` is NaN or infinite.
    """
    global_step = epoch * steps + step + 1
    if not math.isfinite(loss):
        raise NonFiniteLoss(
            f"The training loss became {loss} at epoch {epoch + 1}, step {step + 1} "
            f"(global step {global_step}); training stopped and the last good checkpoint "
            "(end of the previous epoch) is kept. Lower --learning_rate or check the data, "
            "in a new --work_dir."
        )
    if kill_at_step == global_step:
        os.kill(os.getpid(), signal.SIGKILL)


class TrainLoop:
    """Runs epochs of `model.train_step` under a `tf.distribute` strategy (TensorFlow).

    Args:
        model: A compiled `TransferModel`.
        strategy: The strategy the model was built under.
        progress_bar: Draw a Keras progress bar per epoch.
        kill_at_step: Testing only: SIGKILL this process at this global step.
        auto_shard: Shard the train data across workers by batch (multi-worker).

    Example:
        >>> loop = TrainLoop(model, tf.distribute.get_strategy())
        >>> logs = loop.train_epoch(train_ds, epoch=0, steps=100)
    """

    def __init__(self, model, strategy: tf.distribute.Strategy, progress_bar: bool = False,
                 kill_at_step: int | None = None, auto_shard: bool = False):
        self.model = model
        self.strategy = strategy
        self.progress_bar = progress_bar
        self.kill_at_step = kill_at_step
        self.auto_shard = auto_shard
        self._step = tf.function(self._distributed_step, reduce_retracing=True)

    def _distributed_step(self, batch):
        logs = self.strategy.run(self.model.train_step, args=(batch,))
        # Each replica's metrics cover its share of the batch: average them.
        return {k: self.strategy.reduce("MEAN", v, axis=None) for k, v in logs.items()}

    def train_epoch(self, dataset: tf.data.Dataset, epoch: int, steps: int) -> dict[str, float]:
        """Trains one epoch (0-based `epoch`, `steps` batches) and returns its mean logs.

        Raises:
            NonFiniteLoss: at the first step whose loss is NaN or infinite.
        """
        if self.auto_shard:
            options = tf.data.Options()
            options.experimental_distribute.auto_shard_policy = (
                tf.data.experimental.AutoShardPolicy.DATA
            )
            dataset = dataset.with_options(options)
        self.model.reset_metrics()
        bar = keras.utils.Progbar(steps, stateful_metrics=None) if self.progress_bar else None
        logs: dict[str, float] = {}
        for step, batch in enumerate(self.strategy.experimental_distribute_dataset(dataset)):
            values = self._step(batch)
            logs = {k: float(v) for k, v in values.items()}
            check_step(logs["loss"], epoch, step, steps, self.kill_at_step)
            if bar is not None:
                bar.update(step + 1, values=[(k, logs[k]) for k in ("loss", "accuracy")
                                             if k in logs], finalize=step + 1 == steps)
        return logs


class FitLoop:
    """Runs epochs of `model.fit` under a `JaxStrategy` (JAX).

    Same interface as `TrainLoop`. The model's state stays on the devices during the
    epoch and is written back to its variables at the end (or when a step fails).

    Args:
        model: A compiled `TransferModel`.
        strategy: The `JaxStrategy` the model was built under.
        progress_bar: Draw a Keras progress bar per epoch.
        kill_at_step: Testing only: SIGKILL this process at this global step.
    """

    def __init__(self, model, strategy: Strategy, progress_bar: bool = False,
                 kill_at_step: int | None = None):
        self.model = model
        self.strategy = strategy
        self.progress_bar = progress_bar
        self.kill_at_step = kill_at_step

    def train_epoch(self, dataset: tf.data.Dataset, epoch: int, steps: int) -> dict[str, float]:
        """Trains one epoch (0-based `epoch`, `steps` batches) and returns its mean logs.

        Raises:
            NonFiniteLoss: at the first step whose loss is NaN or infinite.
        """
        with self.strategy.scope():
            history = self.model.fit(
                dataset, epochs=epoch + 1, initial_epoch=epoch, steps_per_epoch=steps,
                callbacks=[_StepCheck(epoch, steps, self.kill_at_step)],
                verbose=1 if self.progress_bar else 0, shuffle=False,
            )  # shuffle=False: the dataset shuffles itself; Keras would only warn
        return {k: float(v[-1]) for k, v in history.history.items()}


class _StepCheck(keras.callbacks.Callback):
    """`check_step` after every step of `fit`, in Keras' callback thread.

    `async_safe` lets `fit` start the next step while this one's logs are fetched and
    checked, rather than wait for every step's logs. On a GPU, where the iteration is
    bound by the host's launches, that matters: in docs/benchmarks.md a `fit` that waits
    takes about 29 ms per L2T-ww iteration of the 32-px setting on an H200, one that
    does not about 17 ms. A non-finite loss still stops the run, a step or two later,
    and the error names the step it happened at.
    """

    async_safe = True

    def __init__(self, epoch: int, steps: int, kill_at_step: int | None):
        super().__init__()
        self.epoch, self.steps, self.kill_at_step = epoch, steps, kill_at_step

    def on_train_batch_end(self, batch, logs=None):
        check_step(float(logs["loss"]), self.epoch, batch, self.steps, self.kill_at_step)


def evaluate(network: keras.Model, dataset: tf.data.Dataset | None,
             from_logits: bool = True) -> dict[str, float]:
    """Loss and accuracy of `network` on `dataset`, in this process alone.

    Every worker holds the same weights, so each evaluates the whole dataset locally
    (no collective ops: workers never wait on each other, whatever the batch count).

    Returns:
        {"loss": mean cross-entropy, "accuracy": top-1}; {} for an empty dataset.
    """
    if dataset is None:
        return {}
    forward = _forward(network)
    total, correct, loss = 0, 0, 0.0
    for x, labels in dataset.as_numpy_iterator():
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
