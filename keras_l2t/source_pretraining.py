"""Training a source network ourselves: ResNet-32 on Tiny ImageNet for the 32-px setting.

The authors trained their ResNet-32 source with SGD, learning rate 0.1 decayed x0.1 at
50% and 75% of the epochs, batch 128. `pretrain_source` runs that recipe
with momentum 0.9 and PyTorch-style (coupled) weight decay 1e-4
(`keras_l2t.optimizers.CoupledSGD`, as `torch.optim.SGD`), the CIFAR ResNet
recipe of He et al. (CVPR 2016), whose decays at 32k and 48k of 64k iterations are the
same 50% / 75% milestones. The authors' weight decay and epoch count for this run are
not published; 1e-4 and the `epochs` you choose are this project's assumptions.

The result is a `.keras` file that `keras_l2t.sources.load_source(path)` loads.
"""

from __future__ import annotations

import os

import keras
import tensorflow as tf

from keras_l2t.optimizers import CoupledSGD

SOURCE_FILE_NAME = "source.keras"
HISTORY_FILE_NAME = "history.csv"
BACKUP_DIR_NAME = "backup"  # BackupAndRestore's state while a pretraining runs


def step_decay(
    epoch: int,
    epochs: int,
    base_learning_rate: float = 0.1,
    milestones: tuple[float, ...] = (0.5, 0.75),
    factor: float = 0.1,
) -> float:
    """Learning rate of `epoch` (0-based): `base * factor ** (milestones passed)`.

    A milestone fraction f is passed from epoch `ceil(f * epochs)` on, as
    `torch.optim.lr_scheduler.MultiStepLR([f * epochs, ...])` stepped once per epoch.

    Example:
        >>> from keras_l2t.source_pretraining import step_decay
        >>> [round(step_decay(e, 4), 6) for e in range(4)]
        [0.1, 0.1, 0.01, 0.001]
    """
    passed = sum(epoch >= fraction * epochs for fraction in milestones)
    return base_learning_rate * factor**passed


def pretrain_source(
    model: keras.Model,
    train_ds: tf.data.Dataset,
    val_ds: tf.data.Dataset | None,
    epochs: int,
    work_dir: str | os.PathLike,
    *,
    learning_rate: float = 0.1,
    momentum: float = 0.9,
    weight_decay: float = 1e-4,
    milestones: tuple[float, ...] = (0.5, 0.75),
    steps_per_epoch: int | None = None,
    verbose: int | str = "auto",
) -> str:
    """Trains `model` as a source network and saves it to `work_dir/source.keras`.

    Cross-entropy on logits, SGD with momentum and coupled weight decay, the learning
    rate decayed x0.1 at 50% and 75% of the epochs. Training resumes from
    `work_dir/backup` if a previous run was interrupted; the per-epoch history goes to
    `work_dir/history.csv`.

    Args:
        model: A classifier that outputs logits, e.g.
            `build_network("resnet32", num_classes=200)`.
        train_ds: Batches of (images, integer labels), already augmented and
            normalised as the transfer runs will normalise (ImageNet mean/std), batched
            128 for the paper's recipe. For new batches every epoch, an endless stream
            with `steps_per_epoch` (`load_dataset(..., repeat=True)`): `fit` iterates a
            finite dataset anew each epoch, and `load_dataset`'s one-pass `train` is the
            same every time.
        val_ds: Optional validation batches of the same form.
        epochs: Number of epochs.
        work_dir: Output directory (created if needed).
        learning_rate: Initial learning rate.
        momentum: SGD momentum.
        weight_decay: Coupled (PyTorch-style) L2 coefficient on every variable.
        milestones: Fractions of `epochs` at which the learning rate drops x0.1.
        steps_per_epoch: Batches per epoch; needed with an endless `train_ds`.
        verbose: Passed to `fit`.

    Returns:
        The path of the saved `.keras` file; `keras_l2t.sources.load_source(path)`
        loads it as a frozen source.
    """
    work_dir = os.fspath(work_dir)
    os.makedirs(work_dir, exist_ok=True)
    model.compile(
        optimizer=CoupledSGD(
            learning_rate=learning_rate, momentum=momentum, weight_decay=weight_decay
        ),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        metrics=[keras.metrics.SparseCategoricalAccuracy(name="accuracy")],
    )
    backup_dir = os.path.join(work_dir, BACKUP_DIR_NAME)
    resuming = os.path.isdir(backup_dir)  # fit deletes it once the last epoch is done
    callbacks = [
        keras.callbacks.LearningRateScheduler(
            lambda epoch: step_decay(epoch, epochs, learning_rate, milestones)
        ),
        keras.callbacks.BackupAndRestore(backup_dir),
        # A fresh start rewrites the history (a crash after fit but before the save
        # below would otherwise repeat its rows); a resumed run continues it.
        keras.callbacks.CSVLogger(os.path.join(work_dir, HISTORY_FILE_NAME),
                                  append=resuming),
    ]
    model.fit(
        train_ds, validation_data=val_ds, epochs=epochs, steps_per_epoch=steps_per_epoch,
        callbacks=callbacks, shuffle=False, verbose=verbose,
    )  # shuffle=False: the dataset shuffles itself; Keras would only warn
    path = os.path.join(work_dir, SOURCE_FILE_NAME)
    model.save(path)
    return path
