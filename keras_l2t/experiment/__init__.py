"""Experiments: a resolved config -> data, networks, training, checkpoints, results, export.

`train.py` parses flags into an `ExperimentConfig` and calls `run_experiment`; nothing
in this package reads flags.

Example:
    >>> from keras_l2t.experiment import ExperimentConfig, run_experiment
    >>> results = run_experiment(ExperimentConfig(
    ...     dataset="fashion_mnist", target="cnn_16_32", method="scratch",
    ...     epochs=2, work_dir="/tmp/run"))  # doctest: +SKIP
"""

from keras_l2t.experiment.config import ExperimentConfig
from keras_l2t.experiment.errors import ExperimentError
from keras_l2t.experiment.export import export_target
from keras_l2t.experiment.loop import NonFiniteLoss
from keras_l2t.experiment.runner import run_experiment
from keras_l2t.experiment.strategy import make_strategy, set_cpu_devices

__all__ = [
    "ExperimentConfig",
    "ExperimentError",
    "NonFiniteLoss",
    "export_target",
    "make_strategy",
    "run_experiment",
    "set_cpu_devices",
]
