"""Distribution by name, per backend, and who the chief is.

On TensorFlow a `--strategy` is a `tf.distribute.Strategy`. On JAX it is a
`JaxStrategy`, which offers the two things the experiment asks of a strategy (a replica
count and a scope to build and train in) over Keras' `DataParallel`.
"""

from __future__ import annotations

import contextlib
import json
import os

import keras
import tensorflow as tf

from keras_l2t.experiment.errors import ExperimentError

BACKENDS = ("tensorflow", "jax")


class JaxStrategy:
    """The JAX counterpart of a `tf.distribute.Strategy`, as far as experiments use one.

    Args:
        devices: Keras device names (`keras.distribution.list_devices()`) to split each
            batch over with `keras.distribution.DataParallel`; None for one device.

    Example:
        >>> from keras_l2t.experiment.strategy import JaxStrategy
        >>> strategy = JaxStrategy()  # JaxStrategy(devices) splits each batch over them
        >>> strategy.num_replicas_in_sync
        1
    """

    def __init__(self, devices: list[str] | None = None):
        self.distribution = keras.distribution.DataParallel(devices=devices) if devices else None
        self.num_replicas_in_sync = len(devices) if devices else 1

    def scope(self) -> contextlib.AbstractContextManager:
        """Where variables are created and `fit` runs (the distribution, if any)."""
        return self.distribution.scope() if self.distribution else contextlib.nullcontext()


Strategy = tf.distribute.Strategy | JaxStrategy


def set_cpu_devices(count: int) -> None:
    """Splits the CPU into `count` devices (before the backend starts).

    Lets `--strategy=mirrored` run several replicas on a machine without GPUs.

    Raises:
        ExperimentError: if the backend already initialised its devices.
    """
    if count <= 1:
        return
    if keras.backend.backend() == "jax":
        import jax

        try:
            jax.config.update("jax_num_cpu_devices", count)
        except RuntimeError:
            if len(jax.devices("cpu")) != count:
                raise _too_late() from None
        return
    cpus = tf.config.list_physical_devices("CPU")
    try:
        tf.config.set_logical_device_configuration(
            cpus[0], [tf.config.LogicalDeviceConfiguration()] * count
        )
    except RuntimeError:
        if len(tf.config.list_logical_devices("CPU")) != count:
            raise _too_late() from None


def _too_late() -> ExperimentError:
    return ExperimentError(
        f"--cpu_devices must be applied before {keras.backend.backend()} starts; pass it "
        "to train.py, not after the backend was used."
    )


def make_strategy(name: str) -> Strategy:
    """Returns the strategy `name`: "default", "mirrored" or "multi_worker".

    "mirrored" uses every visible GPU, or every CPU device when there is no GPU: a
    `tf.distribute.MirroredStrategy` on TensorFlow, `keras.distribution.DataParallel`
    on JAX. "multi_worker" (TensorFlow only) reads the cluster from TF_CONFIG.

    Raises:
        ExperimentError: for an unknown name, another backend than TensorFlow or JAX,
            multi_worker on JAX, or a missing / malformed TF_CONFIG.
    """
    if name not in ("default", "mirrored", "multi_worker"):
        raise ExperimentError(
            f"Unknown --strategy={name!r}; use default, mirrored or multi_worker."
        )
    backend = keras.backend.backend()
    if backend not in BACKENDS:
        raise ExperimentError(
            f"Experiments run on the tensorflow or jax backend, not {backend!r}; set "
            "KERAS_BACKEND=tensorflow or KERAS_BACKEND=jax."
        )
    if backend == "jax":
        return _jax_strategy(name)
    if name == "default":
        return tf.distribute.get_strategy()
    if name == "mirrored":
        gpus = tf.config.list_logical_devices("GPU")
        devices = gpus or tf.config.list_logical_devices("CPU")
        return tf.distribute.MirroredStrategy([d.name for d in devices])
    tf_config = os.environ.get("TF_CONFIG")
    if not tf_config:
        raise ExperimentError(
            "--strategy=multi_worker needs the TF_CONFIG environment variable "
            '(e.g. {"cluster": {"worker": ["host1:port", "host2:port"]}, '
            '"task": {"type": "worker", "index": 0}}) on every worker.'
        )
    try:
        config = json.loads(tf_config)
        config["cluster"]
    except (ValueError, KeyError, TypeError):
        raise ExperimentError(
            f"TF_CONFIG is not JSON with a 'cluster' entry: {tf_config!r}."
        ) from None
    try:
        return tf.distribute.MultiWorkerMirroredStrategy()
    except tf.errors.UnknownError as error:
        if "Could not start gRPC server" not in str(error):
            raise
        task = config.get("task", {})
        try:
            address = config["cluster"][task["type"]][task["index"]]
        except (KeyError, IndexError, TypeError):
            address = "this task's address"
        raise ExperimentError(
            f"--strategy=multi_worker: this worker could not listen on {address} (TF_CONFIG "
            f"task {task.get('type')} {task.get('index')}); another process may hold the "
            "port. Choose a free port for it in TF_CONFIG, on every worker."
        ) from None


def _jax_strategy(name: str) -> JaxStrategy:
    if name == "multi_worker":
        raise ExperimentError(
            "--strategy=multi_worker is TensorFlow's MultiWorkerMirroredStrategy: run it "
            "with KERAS_BACKEND=tensorflow, or use --strategy=mirrored on JAX (every "
            "device of this machine)."
        )
    if name == "default":
        return JaxStrategy()
    return JaxStrategy(keras.distribution.list_devices())


def is_chief(strategy: Strategy) -> bool:
    """True for the one process that writes results, logs and exports."""
    resolver = getattr(strategy, "cluster_resolver", None)
    if resolver is None or not resolver.cluster_spec().as_dict():
        return True
    task_type, task_id = resolver.task_type, resolver.task_id
    if task_type == "chief":
        return True
    return task_type == "worker" and task_id == 0 and "chief" not in (
        resolver.cluster_spec().as_dict()
    )


def is_multi_worker(strategy: Strategy) -> bool:
    """Whether the strategy spans several processes."""
    return isinstance(strategy, tf.distribute.MultiWorkerMirroredStrategy)
