"""Median time and peak memory of one training iteration per method, on random data.

Usage (the paper's two settings):
    python benchmarks/step_time.py --source=resnet32 --target=vgg9 --image_size=32 \
        --batch_size=64 --num_classes=100
    python benchmarks/step_time.py --source=resnet34 --target=resnet18 --image_size=224 \
        --batch_size=8 --num_classes=200

Each method runs in its own process, so its peak resident memory (ru_maxrss) is its own.
Prints one line per method: the median iteration time after warm-up, its spread, the
ratio to the `scratch` step, and the peak memory. Pairs: the method's default preset over
the networks' default taps (l2t_ww: all-to-all).
"""

from __future__ import annotations

import json
import platform
import resource
import statistics
import subprocess
import sys
import time

from absl import app, flags

FLAGS = flags.FLAGS
flags.DEFINE_string("source", "resnet32", "Source network name.")
flags.DEFINE_string("target", "vgg9", "Target network name.")
flags.DEFINE_integer("image_size", 32, "Input size in pixels.")
flags.DEFINE_integer("num_classes", 100, "Classes of source and target.")
flags.DEFINE_integer("batch_size", 64, "Batch size.")
flags.DEFINE_list("methods", ["scratch", "lwf", "at", "lwf_at", "fm", "l2t_w", "l2t_ww"],
                  "Methods to time.")
flags.DEFINE_integer("steps", 10, "Timed iterations after the warm-up.")
flags.DEFINE_integer("warmup", 3, "Untimed iterations (tracing, first steps).")
flags.DEFINE_string("child", None, "Internal: time this one method and print JSON.")


def time_method(method: str) -> dict:
    """Times `steps` iterations of `method` after warm-up, in this process."""
    import keras
    import numpy as np
    import tensorflow as tf

    import keras_l2t
    from keras_l2t.networks import build_network, default_taps

    class StepTimer(keras.callbacks.Callback):
        def __init__(self):
            super().__init__()
            self.times = []

        def on_train_batch_begin(self, batch, logs=None):
            self.start = time.perf_counter()

        def on_train_batch_end(self, batch, logs=None):
            self.times.append(time.perf_counter() - self.start)

    keras.utils.set_random_seed(0)
    shape = (FLAGS.image_size, FLAGS.image_size, 3)
    source = build_network(FLAGS.source, FLAGS.num_classes, shape, exact_batch_norm=False)
    target = build_network(FLAGS.target, FLAGS.num_classes, shape)
    source_layers, target_layers = default_taps(FLAGS.source), default_taps(FLAGS.target)
    if keras_l2t.get_method(method).default_pairs == "one_to_one":
        # One-to-one needs equal counts: the deepest target taps, one per source tap.
        count = min(len(source_layers), len(target_layers))
        source_layers, target_layers = source_layers[-count:], target_layers[-count:]
    model = keras_l2t.TransferModel(
        source, target, method=method, source_layers=source_layers,
        target_layers=target_layers,
    )
    model.compile()
    total = FLAGS.warmup + FLAGS.steps
    images = np.random.default_rng(0).random((FLAGS.batch_size, *shape), dtype="float32")
    labels = np.random.default_rng(1).integers(0, FLAGS.num_classes, FLAGS.batch_size)
    data = tf.data.Dataset.from_tensors((images, labels)).repeat(total)
    timer = StepTimer()
    model.fit(data, epochs=1, steps_per_epoch=total, callbacks=[timer], shuffle=False,
              verbose=0)
    times = timer.times[FLAGS.warmup:]
    return {
        "method": method,
        "pairs": len(model.pairs),
        "median_s": statistics.median(times),
        "min_s": min(times),
        "max_s": max(times),
        "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
    }


def main(argv):
    del argv
    if FLAGS.child:
        print(json.dumps(time_method(FLAGS.child)))
        return
    print(f"command: python {' '.join(sys.argv)}")
    print(f"machine: {platform.machine()}, {platform.python_version()}; "
          f"settings: {FLAGS.source} -> {FLAGS.target}, {FLAGS.image_size} px, "
          f"batch {FLAGS.batch_size}, {FLAGS.num_classes} classes")
    scratch = None
    for method in FLAGS.methods:
        child = subprocess.run(
            [sys.executable, *sys.argv, f"--child={method}"],
            capture_output=True, text=True, check=True,
        )
        result = json.loads(child.stdout.strip().splitlines()[-1])
        scratch = result["median_s"] if method == "scratch" else scratch
        ratio = f"x{result['median_s'] / scratch:.1f}" if scratch else "-"
        print(f"{method:8s} {result['pairs']:3d} pairs  median {result['median_s']:.3f} s "
              f"(min {result['min_s']:.3f}, max {result['max_s']:.3f}, n={FLAGS.steps})  "
              f"{ratio:>6s} scratch  peak {result['peak_rss_mb']:.0f} MB", flush=True)


if __name__ == "__main__":
    app.run(main)
