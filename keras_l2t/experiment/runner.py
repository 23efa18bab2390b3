"""`run_experiment`: config -> data + networks -> TransferModel -> epochs -> results.

Order matters for "nothing half-written": every check that can fail on user input
(flags, dataset, networks, layer names, strategy, batch size) runs before the first
byte is written to the work directory.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import shutil
import tempfile
import time

import keras
import tensorflow as tf

from keras_l2t.experiment import models, source_stage, work_dir
from keras_l2t.experiment.checkpoints import TrainingState
from keras_l2t.experiment.config import ExperimentConfig
from keras_l2t.experiment.data import load_data
from keras_l2t.experiment.epoch_log import EpochLog
from keras_l2t.experiment.errors import ExperimentError
from keras_l2t.experiment.export import export_target
from keras_l2t.experiment.loop import evaluate, interactive, make_train_loop
from keras_l2t.experiment.picture_log import PictureLog
from keras_l2t.experiment.strategy import Strategy, is_chief, make_strategy


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


def run_experiment(config: ExperimentConfig, strategy: Strategy | None = None) -> dict:
    """Runs (or resumes, or reports the finished) experiment of `config`.

    Runs on the TensorFlow and JAX backends alike (`KERAS_BACKEND`).

    Args:
        config: The resolved configuration.
        strategy: A ready strategy; default `make_strategy(config.strategy)`.

    Returns:
        The results (as in `<work_dir>/results.json`).

    Raises:
        ExperimentError: for any problem the user can fix, before anything is written
            (but for an image that fails to decode mid-training: the last checkpoint
            stays intact); `loop.NonFiniteLoss` when training diverges.
        keras_l2t.sources.SourceWeightsUnavailable: offline without source weights.

    Example:
        >>> results = run_experiment(ExperimentConfig(dataset="fashion_mnist", ...))
    """
    config.validate()
    with _decode_errors_named(config):
        return _run(config, strategy)


def _run(config: ExperimentConfig, strategy: Strategy | None) -> dict:
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
        results = source_stage.run_pretraining(config, strategy)
        work_dir.write_json_atomic(work_dir.path(config.work_dir, work_dir.RESULTS), results)
        _log(f"Source pretraining done: test accuracy {_percent(results['test_accuracy'])}. "
             f"Use it with --source={results['source_file']}.")
        return results
    return _run_transfer(config, strategy)


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


def _run_transfer(config: ExperimentConfig, strategy: Strategy) -> dict:
    chief = is_chief(strategy)
    data = load_data(config, num_replicas=strategy.num_replicas_in_sync)
    splits = data.splits
    total_steps = config.epochs * data.steps_per_epoch
    with strategy.scope():
        target = models.build_network(config.target, splits.num_classes, splits.image_size)
        source = models.build_source(config, splits.num_classes, splits.image_size)
        model = models.build_transfer_model(config, source, target)
        models.compile_model(model, config, total_steps)
        # Builds the compiled metrics now, outside any replica context.
        sample = next((splits.val if splits.num_val else data.train(0)).as_numpy_iterator())
        model._symbolic_build(data_batch=sample)
    pretraining = (source_stage.pretraining_data(config, strategy)
                   if models.needs_pretraining(config) else None)

    # --- Every check passed: from here on the work directory is written. ---
    if config.overwrite and chief:
        work_dir.clear(config.work_dir)
    os.makedirs(config.work_dir, exist_ok=True)
    if chief:
        work_dir.write_json_atomic(work_dir.path(config.work_dir, work_dir.CONFIG),
                                   config.to_dict())
    if models.needs_pretraining(config):
        source_stage.cached_source(config, strategy, model.source, pretraining, splits.test)

    checkpoint_dir = work_dir.path(config.work_dir, work_dir.CHECKPOINTS)
    scratch = None if chief else tempfile.mkdtemp(prefix="l2t_worker_")
    state = TrainingState(model, scratch or checkpoint_dir, read_directory=checkpoint_dir)
    start = state.restore_last()
    log = EpochLog(work_dir.path(config.work_dir, work_dir.LOG),
                   work_dir.path(config.work_dir, work_dir.TENSORBOARD)) if chief else None
    pictures = None
    if log is not None:
        log.truncate(start)
        pictures = PictureLog(model, sample[0], log,
                              work_dir.path(config.work_dir, work_dir.PICTURES))
    _log(f"{config.method}: {config.source or '-'} -> {config.target} on {config.dataset} "
         f"({splits.num_train} train / {splits.num_val} val / {splits.num_test} test, "
         f"{splits.num_classes} classes, {len(model.pairs)} pairs), "
         f"{strategy.num_replicas_in_sync} replica(s) on {keras.backend.backend()}, "
         f"{data.steps_per_epoch} steps/epoch.")
    if start >= config.epochs:
        _log(f"All {config.epochs} epochs were trained before; finishing.")
    elif start:
        _log(f"Resuming after epoch {start} of {config.epochs} from {checkpoint_dir}.")

    loop = make_train_loop(model, strategy, progress_bar=interactive(config.progress),
                           kill_at_step=config.testing_kill_at_step)
    for epoch in range(start, config.epochs):
        began = time.time()
        learning_rate = float(keras.ops.convert_to_numpy(model.optimizer.learning_rate))
        logs = loop.train_epoch(data.train(epoch), epoch, data.steps_per_epoch)
        val = evaluate(model.target, splits.val if splits.num_val else None, model.from_logits)
        logs.update({f"val_{k}": v for k, v in val.items()})
        logs.update(learning_rate=learning_rate, seconds=time.time() - began)
        if log is not None:
            log.write(epoch, logs)
            pictures.epoch(epoch)
        best = state.save(epoch + 1, val.get("accuracy", float(epoch)))
        _log(f"epoch {epoch + 1}/{config.epochs}: loss {logs['loss']:.4f} accuracy "
             f"{logs.get('accuracy', float('nan')):.4f} val_accuracy "
             f"{logs.get('val_accuracy', float('nan')):.4f} lr {learning_rate:.5f} "
             f"{logs['seconds']:.1f}s{' (best)' if best else ''}")

    last_val = evaluate(model.target, splits.val if splits.num_val else None, model.from_logits)
    last_test = evaluate(model.target, splits.test, model.from_logits)
    state.restore_best()
    test = evaluate(model.target, splits.test, model.from_logits)
    best_val = state.best_val_accuracy
    results = {
        "mode": "transfer",
        "method": config.method,
        "dataset": config.dataset,
        "source": config.source,
        "target": config.target,
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
        "class_names": list(splits.class_names),
        "image_size": splits.image_size,
        "target_weights_sha1": _fingerprint(model.target),
    }
    if chief:
        # The final pictures show the meta-networks of the best epoch (restored above),
        # the one results.json reports; the course over epochs shows every epoch.
        pictures.finish(max(config.epochs - 1, 0))
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
    model.target.save(target_path)
    # Exported from a plain copy (loaded outside any strategy scope: one device).
    plain = keras.saving.load_model(target_path, compile=False)
    if os.path.exists(export_path):
        shutil.rmtree(export_path)
    export_target(plain, export_path, image_size)
    results = dict(results, target_file=os.path.abspath(target_path),
                   export_dir=os.path.abspath(export_path))
    work_dir.write_json_atomic(work_dir.path(config.work_dir, work_dir.RESULTS), results)


def _percent(value: float | None) -> str:
    return "n/a" if value is None else f"{100 * value:.2f}%"
