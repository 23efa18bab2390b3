"""Source pretraining inside an experiment: the demo's cached source, and the
`--mode=pretrain_source` runs (e.g. ResNet-32 on Tiny ImageNet)."""

from __future__ import annotations

import os

import keras
import tensorflow as tf

from keras_l2t.experiment import models, work_dir
from keras_l2t.experiment.config import ExperimentConfig
from keras_l2t.experiment.data import ExperimentData, load_data
from keras_l2t.experiment.loop import evaluate, interactive
from keras_l2t.experiment.strategy import Strategy
from keras_l2t.source_pretraining import SOURCE_FILE_NAME, pretrain_source


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
                     source_pretraining=True)


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
            network = models.build_network(
                config.source, config.source_num_classes or data.splits.num_classes,
                data.splits.image_size, exact_batch_norm=False,
            )
            pretrain_source(network, data.splits.train, None, config.source_pretrain_epochs,
                            directory, learning_rate=config.learning_rate,
                            momentum=config.momentum, weight_decay=config.weight_decay,
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
    data = load_data(config, num_replicas=strategy.num_replicas_in_sync)
    splits = data.splits
    with strategy.scope():
        network = models.build_network(config.target, splits.num_classes, splits.image_size,
                                       exact_batch_norm=False)
    # --- Every check passed: from here on the work directory is written. ---
    if config.overwrite:
        work_dir.clear(config.work_dir)
    os.makedirs(config.work_dir, exist_ok=True)
    work_dir.write_json_atomic(work_dir.path(config.work_dir, work_dir.CONFIG), config.to_dict())
    print(f"Pretraining {config.target} on {config.dataset} ({splits.num_train} train / "
          f"{splits.num_val} val / {splits.num_test} test, {splits.num_classes} classes, "
          f"{splits.image_size} px) for {config.epochs} epochs.", flush=True)
    # Under several replicas, fit() would split each validation batch across them, and
    # an uneven last batch fails; validation then runs once at the end, in this process.
    per_epoch_val = splits.val if splits.num_val and strategy.num_replicas_in_sync == 1 else None
    with strategy.scope():  # fit's data and optimizer variables follow the strategy
        path = pretrain_source(
            network, splits.train, per_epoch_val, config.epochs,
            config.work_dir, learning_rate=config.learning_rate, momentum=config.momentum,
            weight_decay=config.weight_decay, verbose=_verbose(config),
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
