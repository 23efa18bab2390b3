"""Checkpoints of the training state, the same on TensorFlow and JAX.

    checkpoints/epoch_<N>.weights.h5   the model after epoch N (Keras weights file)
    checkpoints/state.json             which file is `last` and which is `best`, the
                                       epochs and the best validation accuracy

A weights file of the `TransferModel` holds every variable it owns: the target, the
adapters, the meta-networks, any other variable the method trains, the frozen source,
the target's optimizer (momentum buffers and iteration counter, hence the learning-rate
schedule's position) and the meta-optimizer (Adam moments). Saving writes a new file
under a temporary name, renames it, then replaces `state.json` atomically: a kill at any
point leaves the previous checkpoint whole, and files no slot names (older epochs, the
temporary file of a killed write) are deleted after. A write that fails (full disk)
raises `OutputError` and leaves the previous checkpoint as the last one.
"""

from __future__ import annotations

import os

from keras_l2t.experiment import work_dir
from keras_l2t.transfer_model import TransferModel

STATE = "state.json"


class TrainingState:
    """The checkpointed state of one `TransferModel` run, in `last` and `best` slots.

    Args:
        model: A compiled, built `TransferModel` (both optimizers built).
        directory: Where this process writes its checkpoints.
        read_directory: Where it restores `last` from (the chief's `directory`; a
            multi-worker non-chief writes to a scratch directory but reads the chief's).

    Attributes:
        epoch: Finished epochs of the restored or last saved checkpoint.
        best_epoch: The epoch with the best validation accuracy (-1 before any).
        best_val_accuracy: That accuracy (-1.0 before any).
    """

    def __init__(self, model: TransferModel, directory: str, read_directory: str | None = None):
        self.model = model
        self.directory = directory
        self.read_directory = read_directory or directory
        self.epoch = 0
        self.best_epoch = -1
        self.best_val_accuracy = -1.0
        self._slots: dict[str, str] = {}

    def restore_last(self) -> int:
        """Restores the last checkpoint, if any; returns the number of finished epochs."""
        saved = work_dir.read_json(os.path.join(self.read_directory, STATE))
        if saved is not None:
            self.model.load_weights(os.path.join(self.read_directory, saved["last"]))
            self.epoch, self.best_epoch = saved["epoch"], saved["best_epoch"]
            self.best_val_accuracy = saved["best_val_accuracy"]
            self._slots = {"last": saved["last"], "best": saved["best"]}
        return self.epoch

    def restore_best(self) -> None:
        """Restores the best-validation checkpoint (the weights reported), if any."""
        if "best" not in self._slots:
            return
        path = os.path.join(self.directory, self._slots["best"])
        if not os.path.exists(path):
            # A non-chief that resumed from the chief's `best`, unbeaten since: the chief
            # keeps that file while it is the best, and the weights are the same.
            path = os.path.join(self.read_directory, self._slots["best"])
        self.model.load_weights(path)

    def save(self, finished_epochs: int, val_accuracy: float) -> bool:
        """Saves at the end of an epoch; it becomes `best` too when validation improved.

        Returns:
            Whether this epoch is the new best.
        """
        name = f"epoch_{finished_epochs}.weights.h5"
        temporary = os.path.join(self.directory, f".tmp_{name}")
        with work_dir.writing(os.path.join(self.directory, name)):
            os.makedirs(self.directory, exist_ok=True)
            try:
                self.model.save_weights(temporary)
                os.replace(temporary, os.path.join(self.directory, name))
            except BaseException:
                if os.path.exists(temporary):
                    os.remove(temporary)
                raise
        improved = val_accuracy > self.best_val_accuracy
        if improved:
            self.best_val_accuracy, self.best_epoch = val_accuracy, finished_epochs
            self._slots["best"] = name
        self._slots["last"] = name
        self.epoch = finished_epochs
        work_dir.write_json_atomic(os.path.join(self.directory, STATE), {
            **self._slots, "epoch": self.epoch, "best_epoch": self.best_epoch,
            "best_val_accuracy": self.best_val_accuracy,
        })
        for other in set(os.listdir(self.directory)) - set(self._slots.values()):
            if other.startswith(("epoch_", ".tmp_")):  # .tmp_: a write killed halfway
                with work_dir.writing(os.path.join(self.directory, other)):
                    os.remove(os.path.join(self.directory, other))
        return improved
