"""Shared set-up for the experiment tests: tiny idx data, a tiny source, train.py runs."""

from __future__ import annotations

import gzip
import os
import subprocess
import sys

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
TRAIN = os.path.join(ROOT, "train.py")
# train.py with a callback that SIGKILLs it at --kill_at_step.
KILLED_TRAIN = os.path.join(ROOT, "tests", "experiment", "killed_train.py")
# train.py's main with hooks: pause at a step, Ctrl-C at a given moment.
HOOKED_TRAIN = os.path.join(ROOT, "tests", "experiment", "hooked_train.py")
NUM_TRAIN, NUM_TEST = 60, 20


def write_idx(path: str, array: np.ndarray) -> None:
    """Writes a uint8 idx file (gzipped)."""
    array = np.ascontiguousarray(array, dtype=np.uint8)
    header = bytes([0, 0, 8, array.ndim]) + b"".join(int(d).to_bytes(4, "big") for d in array.shape)
    with gzip.open(path, "wb") as f:
        f.write(header + array.tobytes())


def make_fashion_dir(directory: str, num_train: int = NUM_TRAIN) -> str:
    """Tiny Fashion-MNIST-format data: class c is a bright bar at row 2c, with noise."""
    os.makedirs(directory, exist_ok=True)
    rng = np.random.default_rng(0)
    for split, n in (("train", num_train), ("t10k", NUM_TEST)):
        labels = np.arange(n) % 10
        images = rng.integers(0, 60, size=(n, 28, 28))
        for i, label in enumerate(labels):
            images[i, 2 * label + 4: 2 * label + 7, :] = 250
        write_idx(os.path.join(directory, f"{split}-images-idx3-ubyte.gz"), images)
        write_idx(os.path.join(directory, f"{split}-labels-idx1-ubyte.gz"), labels)
    return directory


def make_source_file(path: str) -> str:
    """A small random 'pretrained' source network saved as .keras (8 px input)."""
    import keras

    from keras_l2t.networks import small_cnn

    keras.utils.set_random_seed(1)
    small_cnn("cnn_4_6", num_classes=10, input_shape=(8, 8, 3), exact_batch_norm=False).save(path)
    return path


def _tiny_values(work_dir: str, data_dir: str, source: str, **overrides) -> dict:
    values = dict(
        dataset="fashion_mnist", data_dir=data_dir, image_size=8, val_fraction=0.2,
        source=source, target="cnn_3_4", method="l2t_ww", pairs="all", epochs=3,
        batch_size=8, eval_batch_size=16, meta_learning_rate=0.01, seed=3,
        work_dir=work_dir, progress="line",
    )
    values.update(overrides)
    return values


def tiny_flags(work_dir: str, data_dir: str, source: str, **overrides) -> list[str]:
    """Flags of a seconds-long L2T-ww run: 8 px, two-stage CNNs, 4 pairs."""
    values = _tiny_values(work_dir, data_dir, source, **overrides)
    return [f"--{k}={v}" for k, v in values.items() if v is not None]


def tiny_config(work_dir: str, data_dir: str, source: str, **overrides):
    """The `ExperimentConfig` of `tiny_flags` with the same arguments (in-process runs)."""
    from keras_l2t.experiment import ExperimentConfig

    return ExperimentConfig(**_tiny_values(work_dir, data_dir, source, **overrides))


def run_train(flags: list[str], env: dict | None = None, timeout: int = 180,
              script: str = TRAIN, **kwargs) -> subprocess.CompletedProcess:
    """Runs train.py (or `script`) in a fresh process; returns the finished process."""
    return subprocess.run([sys.executable, script, *flags], capture_output=True, text=True,
                          env=train_env(env), timeout=timeout, cwd=ROOT, **kwargs)


def start_train(flags: list[str], script: str = TRAIN, **kwargs) -> subprocess.Popen:
    """Starts train.py (or `script`) in a fresh process and returns at once."""
    return subprocess.Popen([sys.executable, script, *flags], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=train_env(), cwd=ROOT,
                            **kwargs)


def train_env(env: dict | None = None) -> dict:
    """The environment of a train.py process the tests start."""
    return dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3", **(env or {}))


def error_line(process) -> str:
    """The one `error:` line a refused train.py printed (the test fails if not exactly one)."""
    lines = [line for line in process.stderr.splitlines() if line.startswith("error:")]
    assert len(lines) == 1, process.stderr[-3000:]
    return lines[0]


def checkpoint_state(work_dir: str) -> dict:
    """The run's checkpoints/state.json (slots, epochs, best validation accuracy)."""
    return load_json(os.path.join(work_dir, "checkpoints", "state.json"))


def checkpoint_values(work_dir: str, slot: str = "last") -> dict[str, np.ndarray]:
    """Every variable of the run's `slot` checkpoint, by its path in the weights file."""
    import h5py

    values = {}

    def visit(name, item):
        if isinstance(item, h5py.Dataset):
            values[name] = item[()]

    path = os.path.join(work_dir, "checkpoints", checkpoint_state(work_dir)[slot])
    with h5py.File(path, "r") as f:
        f.visititems(visit)
    return values


def epochs_in_log(work_dir: str) -> list[int]:
    """The epochs of the rows of the run's log.csv, in order."""
    import csv

    with open(os.path.join(work_dir, "log.csv"), newline="") as f:
        return [int(row["epoch"]) for row in csv.DictReader(f)]


def load_json(path: str):
    """The JSON content of a file."""
    import json

    with open(path) as f:
        return json.load(f)
