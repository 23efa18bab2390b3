"""Experiments: a resolved config -> data, networks, training, checkpoints, results, export.

`train.py` parses flags into an `ExperimentConfig` and calls `run_experiment`; nothing
in this package reads flags.

Modules: `config` (the config), `run` (networks, training, evaluation, records, the
run), `data`, `fingerprint` (what a resume checks it trains on), `strategy`,
`checkpoints`, `work_dir` (its layout, lock and files), `export` (the serving
SavedModel), `interrupts` (Ctrl-C at safe points), `errors`.
"""

from keras_l2t.experiment.config import ExperimentConfig
from keras_l2t.experiment.errors import ExperimentError, NonFiniteLoss, OutputError
from keras_l2t.experiment.export import export_target
from keras_l2t.experiment.run import run_experiment
from keras_l2t.experiment.strategy import make_strategy, set_cpu_devices

__all__ = [
    "ExperimentConfig",
    "ExperimentError",
    "NonFiniteLoss",
    "OutputError",
    "export_target",
    "make_strategy",
    "run_experiment",
    "set_cpu_devices",
]
