"""Distribution strategies by name, and who the chief is."""

from __future__ import annotations

import json
import os

import tensorflow as tf

from keras_l2t.experiment.errors import ExperimentError


def set_cpu_devices(count: int) -> None:
    """Splits the first CPU into `count` logical devices (before TensorFlow starts).

    Lets `--strategy=mirrored` run several replicas on a machine without GPUs.

    Raises:
        ExperimentError: if TensorFlow already initialised its devices.
    """
    if count <= 1:
        return
    cpus = tf.config.list_physical_devices("CPU")
    try:
        tf.config.set_logical_device_configuration(
            cpus[0], [tf.config.LogicalDeviceConfiguration()] * count
        )
    except RuntimeError:
        if len(tf.config.list_logical_devices("CPU")) != count:
            raise ExperimentError(
                "--cpu_devices must be applied before TensorFlow starts; pass it to "
                "train.py, not after TensorFlow was used."
            ) from None


def make_strategy(name: str) -> tf.distribute.Strategy:
    """Returns the strategy `name`: "default", "mirrored" or "multi_worker".

    "mirrored" uses every visible GPU, or every logical CPU device when there is no GPU;
    "multi_worker" reads the cluster from the TF_CONFIG environment variable.

    Raises:
        ExperimentError: for an unknown name or a missing / malformed TF_CONFIG.
    """
    if name == "default":
        return tf.distribute.get_strategy()
    if name == "mirrored":
        gpus = tf.config.list_logical_devices("GPU")
        devices = gpus or tf.config.list_logical_devices("CPU")
        return tf.distribute.MirroredStrategy([d.name for d in devices])
    if name == "multi_worker":
        tf_config = os.environ.get("TF_CONFIG")
        if not tf_config:
            raise ExperimentError(
                "--strategy=multi_worker needs the TF_CONFIG environment variable "
                '(e.g. {"cluster": {"worker": ["host1:port", "host2:port"]}, '
                '"task": {"type": "worker", "index": 0}}) on every worker.'
            )
        try:
            json.loads(tf_config)["cluster"]
        except (ValueError, KeyError, TypeError):
            raise ExperimentError(
                f"TF_CONFIG is not JSON with a 'cluster' entry: {tf_config!r}."
            ) from None
        return tf.distribute.MultiWorkerMirroredStrategy()
    raise ExperimentError(f"Unknown --strategy={name!r}; use default, mirrored or multi_worker.")


def is_chief(strategy: tf.distribute.Strategy) -> bool:
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


def is_multi_worker(strategy: tf.distribute.Strategy) -> bool:
    """Whether the strategy spans several processes."""
    return isinstance(strategy, tf.distribute.MultiWorkerMirroredStrategy)
