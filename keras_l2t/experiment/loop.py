"""The training and evaluation loops: one epoch of `train_step`s, and a local evaluation.

`keras.Model.fit` is not used for the transfer runs: in Keras 3.15 it fails under
`MultiWorkerMirroredStrategy` (it reduces scalar logs with `axis=0`, TensorFlow issue
72388), and a per-step loop also gives the NaN check and the per-epoch data seeds.
The step itself is `TransferModel.train_step`, as `fit` would run it.
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

# One compiled inference function per network, reused across epochs.
_FORWARDS: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


class NonFiniteLoss(ExperimentError):
    """The training loss became NaN or infinite; training stopped before saving."""


def interactive(progress: str) -> bool:
    """Whether to draw Keras progress bars ("auto": when stdout is a terminal)."""
    if progress == "auto":
        return sys.stdout.isatty()
    return progress == "bar"


class TrainLoop:
    """Runs epochs of `model.train_step` under `strategy`.

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
            global_step = epoch * steps + step + 1
            if not math.isfinite(logs["loss"]):
                raise NonFiniteLoss(
                    f"The training loss became {logs['loss']} at epoch {epoch + 1}, step "
                    f"{step + 1} (global step {global_step}); training stopped and the last "
                    "good checkpoint (end of the previous epoch) is kept. Lower "
                    "--learning_rate or check the data, in a new --work_dir."
                )
            if self.kill_at_step == global_step:
                os.kill(os.getpid(), signal.SIGKILL)
            if bar is not None:
                bar.update(step + 1, values=[(k, logs[k]) for k in ("loss", "accuracy")
                                             if k in logs], finalize=step + 1 == steps)
        return logs


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
    forward = _FORWARDS.get(network)
    if forward is None:
        forward = _FORWARDS[network] = tf.function(
            lambda x: network(x, training=False), reduce_retracing=True
        )
    total, correct, loss = 0, 0, 0.0
    for x, y in dataset:
        outputs = forward(x).numpy().astype(np.float64)
        labels = y.numpy()
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
