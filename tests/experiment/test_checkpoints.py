"""TrainingState on its own: slots, clean-up, and a crash between its writes."""

from __future__ import annotations

import os

import keras
import numpy as np

from keras_l2t import CoupledSGD, TransferModel
from keras_l2t.experiment.checkpoints import TrainingState
from keras_l2t.networks import small_cnn


def _model() -> TransferModel:
    keras.utils.set_random_seed(0)
    source = small_cnn("cnn_4_6", 10, (8, 8, 3), exact_batch_norm=False)
    source.trainable = False
    model = TransferModel(source, small_cnn("cnn_3_4", 10, (8, 8, 3)), pairs="all",
                          source_layers=["stage1_out", "stage2_out"],
                          target_layers=["stage1_out", "stage2_out"])
    model.compile(optimizer=CoupledSGD(0.1, momentum=0.9),
                  meta_optimizer=keras.optimizers.Adam(1e-3))
    return model


def _kernel(model: TransferModel) -> np.ndarray:
    return keras.ops.convert_to_numpy(model.target.trainable_variables[0])


def _shift(model: TransferModel) -> None:
    """Changes the target's first weight and both optimizers' iteration counters."""
    variable = model.target.trainable_variables[0]
    variable.assign(variable + 1.0)
    for optimizer in (model.optimizer, model.meta_optimizer):
        optimizer.iterations.assign(optimizer.iterations + 1)


def test_slots_clean_up_and_a_crash_while_saving(tmp_path):
    directory = str(tmp_path / "checkpoints")
    model = _model()
    state = TrainingState(model, directory)
    assert state.restore_last() == 0
    kernels = {}
    for epoch, accuracy in ((1, 0.5), (2, 0.4), (3, 0.6), (4, 0.3)):
        _shift(model)
        kernels[epoch] = _kernel(model)
        assert state.save(epoch, accuracy) == (epoch in (1, 3))
    assert sorted(os.listdir(directory)) == [
        "epoch_3.weights.h5", "epoch_4.weights.h5", "state.json"]

    # Killed while saving epoch 5: its file renamed, state.json not yet replaced, and
    # a temporary file of a kill before the rename.
    _shift(model)
    model.save_weights(os.path.join(directory, "epoch_5.weights.h5"))
    model.save_weights(os.path.join(directory, ".tmp_epoch_5.weights.h5"))

    fresh = _model()
    resumed = TrainingState(fresh, directory)
    assert resumed.restore_last() == 4
    assert (resumed.best_epoch, resumed.best_val_accuracy) == (3, 0.6)
    np.testing.assert_array_equal(_kernel(fresh), kernels[4])
    assert int(fresh.optimizer.iterations) == int(fresh.meta_optimizer.iterations) == 4
    resumed.save(5, 0.1)
    assert sorted(os.listdir(directory)) == [
        "epoch_3.weights.h5", "epoch_5.weights.h5", "state.json"]
    resumed.restore_best()
    np.testing.assert_array_equal(_kernel(fresh), kernels[3])
