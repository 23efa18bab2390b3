"""Checkpoints of the training state: both optimizers, meta-networks, epoch, best score.

`tf.train.Checkpoint` holds the target, the adapters, the meta-networks, any other
variable the method trains, the target's
optimizer (momentum buffers and iteration counter, hence the learning-rate schedule's
position), the meta-optimizer (Adam moments) and counters. The frozen source is left
out (it never changes). `CheckpointManager` writes the new files and then replaces the
small index file atomically, so a kill while saving leaves the previous checkpoint.
"""

from __future__ import annotations

import os

import tensorflow as tf

from keras_l2t.transfer_model import TransferModel


class TrainingState:
    """The checkpointed state of one `TransferModel` run, in `last` and `best` slots.

    Args:
        model: A compiled `TransferModel` (both optimizers built).
        directory: Where this process writes `last/` and `best/`.
        read_directory: Where it restores them from (the chief's `directory`; a
            multi-worker non-chief writes to a scratch directory but reads the chief's).

    Example:
        >>> state = TrainingState(model, "run/checkpoints")
        >>> state.restore_last()  # 0 for a fresh run
    """

    def __init__(self, model: TransferModel, directory: str, read_directory: str | None = None):
        self.epoch = tf.Variable(0, dtype=tf.int64, trainable=False, name="epoch")
        self.best_val_accuracy = tf.Variable(-1.0, dtype=tf.float64, trainable=False)
        self.best_epoch = tf.Variable(-1, dtype=tf.int64, trainable=False)
        objects = {
            "target": model.target,
            "optimizer": model.optimizer,
            "meta_optimizer": model.meta_optimizer,
            "epoch": self.epoch,
            "best_val_accuracy": self.best_val_accuracy,
            "best_epoch": self.best_epoch,
        }
        covered = {id(v) for v in model.target.variables}
        for kind in ("adapters", "channel_weight_networks", "pair_weight_networks"):
            for i, layer in enumerate(getattr(model, kind, [])):
                objects[f"{kind}_{i}"] = layer
                covered.update(id(v) for v in layer.variables)
        # Anything else the method trains (e.g. an extra distillation head), by position.
        covered.update(id(v) for v in model.source.variables)
        extra = tf.Module()
        extra.values = [
            v for v in model.trainable_variables + model.non_trainable_variables
            if id(v) not in covered
        ]
        objects["other_variables"] = extra
        self.checkpoint = tf.train.Checkpoint(**objects)
        self.last = tf.train.CheckpointManager(
            self.checkpoint, os.path.join(directory, "last"), max_to_keep=1)
        self.best = tf.train.CheckpointManager(
            self.checkpoint, os.path.join(directory, "best"), max_to_keep=1)
        self.directory = directory
        self.read_directory = read_directory or directory

    def _restore(self, directory: str) -> bool:
        latest = tf.train.latest_checkpoint(directory)
        if latest:
            self.checkpoint.restore(latest).assert_existing_objects_matched()
        return latest is not None

    def restore_last(self) -> int:
        """Restores the last checkpoint, if any; returns the number of finished epochs."""
        self._restore(os.path.join(self.read_directory, "last"))
        return int(self.epoch.numpy())

    def restore_best(self) -> None:
        """Restores this process' best-validation checkpoint (the weights reported)."""
        self._restore(os.path.join(self.directory, "best"))

    def save(self, finished_epochs: int, val_accuracy: float) -> bool:
        """Saves at the end of an epoch; also to `best` when validation improved.

        Returns:
            Whether this epoch is the new best.
        """
        self.epoch.assign(finished_epochs)
        improved = val_accuracy > float(self.best_val_accuracy.numpy())
        if improved:
            self.best_val_accuracy.assign(val_accuracy)
            self.best_epoch.assign(finished_epochs)
            self.best.save(checkpoint_number=finished_epochs)
        self.last.save(checkpoint_number=finished_epochs)
        return improved
