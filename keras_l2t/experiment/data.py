"""The experiment's data: val/test once, and one train pipeline per epoch.

Each epoch's train pipeline is shuffled and augmented with a seed derived from
(seed, epoch), and from nothing else (not TensorFlow's global seed), so epoch k sees the
same batches whether or not the process was restarted before it: a resumed run repeats
the uninterrupted one. With
`--meta_objective=held_out` an epoch's pipeline pairs each training batch with a meta
batch, `((x, y), (x_meta, y_meta))`; the meta stream is rebuilt every epoch too, its
seed derived from the epoch's.
"""

from __future__ import annotations

import dataclasses
import math

import tensorflow as tf

from keras_l2t.data import DataSplits, get_spec, load_dataset, make_source, zip_meta
from keras_l2t.experiment.config import ExperimentConfig, parse_range
from keras_l2t.experiment.errors import ExperimentError


def epoch_seed(seed: int, epoch: int) -> int:
    """The shuffle/augmentation seed of one epoch (deterministic, distinct per epoch)."""
    return (seed * 1_000_003 + epoch * 7_919 + 1) % (2**31 - 1)


@dataclasses.dataclass
class ExperimentData:
    """Val and test pipelines, and a factory of per-epoch train pipelines.

    Attributes:
        splits: The `DataSplits` of epoch 0 (val, test, sizes, class names; `meta` with
            a held-out meta objective).
        steps_per_epoch: Train steps in one epoch.
    """

    splits: DataSplits
    steps_per_epoch: int
    seed: int
    _kwargs: dict

    def train(self, epoch: int) -> tf.data.Dataset:
        """What `fit` trains on in `epoch` (0-based): batches (x, y), or with a meta
        stream (`--meta_objective=held_out`) `((x, y), (x_meta, y_meta))`."""
        splits = load_dataset(**self._kwargs, shuffle_seed=epoch_seed(self.seed, epoch))
        train = splits.train if splits.meta is None else zip_meta(splits.train, splits.meta)
        return train.take(self.steps_per_epoch)


def load_data(config: ExperimentConfig, *, num_replicas: int = 1,
              source_pretraining: bool = False, repeat: bool = False) -> ExperimentData:
    """Loads the config's dataset.

    Args:
        config: The experiment config.
        num_replicas: Replicas in sync; the batch must divide by it.
        source_pretraining: Load the data of the cached source's pretraining instead:
            `--source_pretrain_indices` of the train split (all of it by default), all
            its examples per class, no validation, `--source_pretrain_batch_size`.
        repeat: `splits.train` endless, every pass shuffled anew, for one `fit` over
            all epochs with `steps_per_epoch` (source pretraining).

    Raises:
        ExperimentError: for missing data, bad sizes or a batch the replicas cannot split,
            naming the flag to change.
    """
    spec = get_spec(config.dataset)
    if source_pretraining:
        batch_flag, batch = "--source_pretrain_batch_size", config.source_pretrain_batch_size
        indices_flag, indices = "source_pretrain_indices", config.source_pretrain_indices
        samples_per_class, val_fraction = None, 0.0
        meta = {}
    else:
        batch_flag, batch = "--batch_size", config.batch_size or spec.batch_size
        indices_flag, indices = "train_indices", config.train_indices
        samples_per_class, val_fraction = config.samples_per_class, config.val_fraction
        held_out = config.meta_objective == "held_out"
        meta = dict(meta_fraction=config.meta_fraction if held_out else 0.0,
                    meta_from_train=held_out and not config.meta_fraction)
    if batch % num_replicas:
        raise ExperimentError(
            f"{batch_flag}={batch} does not divide by the {num_replicas} replicas; use a "
            f"multiple of {num_replicas}, e.g. {num_replicas * max(1, batch // num_replicas)}."
        )
    drop_remainder = num_replicas > 1
    try:
        source = make_source(config.dataset, config.data_dir, download=config.download)
    except (FileNotFoundError, ValueError, RuntimeError) as error:
        raise ExperimentError(f"--dataset={config.dataset}: {error}".replace("\n", " ")) from None
    kwargs = dict(
        name=config.dataset,
        source=source,
        split_seed=config.split_seed,
        val_fraction=val_fraction,
        samples_per_class=samples_per_class,
        train_indices=parse_range(indices_flag, indices),
        image_size=config.image_size,
        batch_size=batch,
        eval_batch_size=config.eval_batch_size or batch,
        drop_remainder=drop_remainder,
        repeat=repeat,
        **meta,
    )
    try:
        splits = load_dataset(**kwargs, shuffle_seed=epoch_seed(config.seed, 0))
    except (FileNotFoundError, ValueError) as error:
        message = str(error).replace("train_indices", f"--{indices_flag}").replace(
            "meta_fraction=", "--meta_fraction=")
        raise ExperimentError(f"--dataset={config.dataset}: {message}".replace("\n", " ")
                              ) from None
    rounding = math.floor if drop_remainder else math.ceil
    steps = rounding(splits.num_train / batch)
    # A target batch larger than the split would train one step an epoch, silently.
    if steps < 1 or (batch > splits.num_train and not source_pretraining):
        raise ExperimentError(
            f"{batch_flag}={batch} is larger than the {splits.num_train} training examples; "
            f"use at most {splits.num_train}."
        )
    if config.max_steps_per_epoch:
        steps = min(steps, config.max_steps_per_epoch)
    return ExperimentData(splits, steps, config.seed, kwargs)
