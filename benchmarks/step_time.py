"""Median time of one training iteration per method, on random data.

Usage:
    python benchmarks/step_time.py --source=resnet32 --target=vgg9 --image_size=32 \
        --batch_size=64 --methods=scratch,fm,l2t_ww --steps=10

Prints one line per method: median and spread of the iteration time after warm-up, and
the ratio to the `scratch` step. Pairs: the method's default preset over the networks'
default taps (l2t_ww: all-to-all).
"""

from __future__ import annotations

import platform
import statistics
import sys
import time

import keras
import numpy as np
import tensorflow as tf
from absl import app, flags

import keras_l2t
from keras_l2t.networks import build_network, default_taps

FLAGS = flags.FLAGS
flags.DEFINE_string("source", "resnet32", "Source network name.")
flags.DEFINE_string("target", "vgg9", "Target network name.")
flags.DEFINE_integer("image_size", 32, "Input size in pixels.")
flags.DEFINE_integer("num_classes", 100, "Classes of source and target.")
flags.DEFINE_integer("batch_size", 64, "Batch size.")
flags.DEFINE_list("methods", ["scratch", "fm", "l2t_ww"], "Methods to time.")
flags.DEFINE_integer("steps", 10, "Timed iterations after the warm-up.")
flags.DEFINE_integer("warmup", 3, "Untimed iterations (tracing, first steps).")


class _StepTimer(keras.callbacks.Callback):
    def __init__(self):
        super().__init__()
        self.times = []

    def on_train_batch_begin(self, batch, logs=None):
        self._start = time.perf_counter()

    def on_train_batch_end(self, batch, logs=None):
        self.times.append(time.perf_counter() - self._start)


def time_method(method: str) -> list[float]:
    """Returns the iteration times (seconds) of `steps` iterations after warm-up."""
    keras.utils.set_random_seed(0)
    shape = (FLAGS.image_size, FLAGS.image_size, 3)
    source = build_network(FLAGS.source, FLAGS.num_classes, shape, exact_batch_norm=False)
    target = build_network(FLAGS.target, FLAGS.num_classes, shape)
    model = keras_l2t.TransferModel(
        source, target, method=method,
        source_layers=default_taps(FLAGS.source), target_layers=default_taps(FLAGS.target),
    )
    model.compile()
    total = FLAGS.warmup + FLAGS.steps
    images = np.random.default_rng(0).random((FLAGS.batch_size, *shape), dtype="float32")
    labels = np.random.default_rng(1).integers(0, FLAGS.num_classes, FLAGS.batch_size)
    data = tf.data.Dataset.from_tensors((images, labels)).repeat(total)
    timer = _StepTimer()
    model.fit(data, epochs=1, steps_per_epoch=total, callbacks=[timer], shuffle=False,
              verbose=0)
    return timer.times[FLAGS.warmup:]


def main(argv):
    del argv
    print(f"command: python {' '.join(sys.argv)}")
    print(f"machine: {platform.processor() or platform.machine()}, "
          f"{len(tf.config.list_physical_devices('CPU'))} CPU device(s), "
          f"{len(tf.config.list_physical_devices('GPU'))} GPU(s); TF {tf.__version__}, "
          f"Keras {keras.__version__}")
    medians = {}
    for method in FLAGS.methods:
        times = time_method(method)
        medians[method] = statistics.median(times)
        ratio = medians[method] / medians["scratch"] if "scratch" in medians else float("nan")
        print(f"{method:8s} median {medians[method]:.3f} s  (min {min(times):.3f}, "
              f"max {max(times):.3f}, n={len(times)})  x{ratio:.1f} scratch", flush=True)


if __name__ == "__main__":
    app.run(main)
