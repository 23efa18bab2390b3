"""Median time and peak memory of one training iteration per method, on random data.

Usage (the paper's two settings):
    python benchmarks/step_time.py --source=resnet32 --target=vgg9 --image_size=32 \
        --batch_size=64 --num_classes=100
    python benchmarks/step_time.py --source=resnet34 --target=resnet18 --image_size=224 \
        --batch_size=8 --num_classes=200

Runs on the Keras backend of `KERAS_BACKEND` (TensorFlow or JAX) through `model.fit`.
Each method runs in its own process, so its peak memory is its own: resident memory
(ru_maxrss) on CPU, the accelerator's peak bytes in use on a JAX GPU. Prints one line per
method: the median iteration time after warm-up, its spread, the ratio to the `scratch`
step, the pipelined time, the first iteration's time (tracing and compilation included)
and the peak memory.

Two timings: the median waits after every iteration until all its logs are Python
numbers (the timer is a batch-level callback, so Keras converts the logs before the next
step starts). The pipelined time is the mean over a second `fit` of `steps` iterations
whose only callback lets Keras convert the logs in its background thread while the next
step runs, as in a `fit` without batch-level callbacks; it ends when the last
iteration's logs reach the host (JAX; TensorFlow's Keras converts them in line anyway).
Pairs: the method's default preset over the networks' default taps (l2t_ww: all-to-all).

`--profile_dir=DIR` (JAX) traces a few more iterations after the timed ones;
`benchmarks/kernel_summary.py DIR/<method>` says where their device time goes (pass
`--iterations` = profile_steps x steps_per_execution).

`--steps_per_execution=N` runs N iterations per call, as `compile` does for users.

`--meta_every=1,2,4,8 --lookahead_steps=1,2` times each meta-learned method once per
(k, T) (issue "Cheaper L2T-ww"); with k > 1 the iterations alternate between a meta
iteration and the real step alone, so read the mean (over `--steps`, a multiple of
every k), not the median.

`--device_batch` (JAX) feeds the same device-resident batch every step: the difference
to the default says what the per-step input copy, and the new buffer addresses it brings,
cost.

`--write_architectures=DIR` saves the networks' architectures as JSON and
`--architectures=DIR` builds from them, for machines without keras-hub (whose
tensorflow-text needs TensorFlow) such as a JAX-only GPU machine.
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
flags.DEFINE_integer("steps", 10, "Timed iterations after the warm-up (a multiple of every "
                     "--meta_every for a fair mean).")
flags.DEFINE_list("meta_every", ["1"], "Meta-learned methods: one run per k "
                  "(TransferModel(meta_every=k)).")
flags.DEFINE_list("lookahead_steps", ["2"], "Meta-learned methods: one run per T.")
flags.DEFINE_integer("warmup", 3, "Untimed iterations (tracing, first steps).")
flags.DEFINE_string("dtype_policy", None, "Keras dtype policy, e.g. mixed_bfloat16.")
flags.DEFINE_enum("jit_compile", "auto", ["auto", "true", "false"],
                  "XLA for the step (Keras' auto: on for JAX, off for TensorFlow on CPU).")
flags.DEFINE_string("architectures", None, "Build the networks from DIR/<name>.json.")
flags.DEFINE_string("write_architectures", None, "Write DIR/<name>.json and exit.")
flags.DEFINE_string("profile_dir", None,
                    "JAX only: after the timed iterations, trace --profile_steps more with "
                    "JAX's profiler into DIR/<method> (read it with kernel_summary.py).")
flags.DEFINE_integer("profile_steps", 3, "Iterations traced with --profile_dir.")
flags.DEFINE_integer("steps_per_execution", 1,
                     "Keras' compile(steps_per_execution=N): --warmup, --steps and "
                     "--profile_steps then count calls of N iterations; times stay per "
                     "iteration.")
flags.DEFINE_bool("device_batch", False,
                  "JAX only: feed one batch already on the device, the same buffers every "
                  "step, instead of NumPy arrays that each step copies to the device.")
flags.DEFINE_string("child", None, "Internal: time this one method and print JSON.")


def build(name: str, role: str):
    """Network `name` with random weights, from its builder or a saved architecture."""
    import keras

    from keras_l2t.networks import build_network

    if FLAGS.architectures:
        with open(f"{FLAGS.architectures}/{name}.json") as file:
            return keras.models.model_from_json(file.read())
    shape = (FLAGS.image_size, FLAGS.image_size, 3)
    return build_network(name, FLAGS.num_classes, shape, exact_batch_norm=role == "target")


def peak_memory_mb() -> float:
    """Peak accelerator memory on a JAX GPU, else the process' peak resident memory."""
    import keras

    if keras.backend.backend() == "jax":
        import jax

        stats = jax.devices()[0].memory_stats() or {}
        if "peak_bytes_in_use" in stats:
            return stats["peak_bytes_in_use"] / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def variants(methods: list[str]) -> list[str]:
    """The runs: each method, and for a meta-learned one each `--meta_every` k and
    `--lookahead_steps` T, as "l2t_ww k=4 T=1"."""
    from keras_l2t.methods import get_method

    runs = []
    for method in methods:
        if not get_method(method).meta_learned:
            runs.append(method)
            continue
        runs += [f"{method} k={k} T={t}" for t in FLAGS.lookahead_steps
                 for k in FLAGS.meta_every]
    return runs


def build_model(run: str):
    """The compiled `TransferModel` of a run (`variants`) on the flags' networks (seed 0).

    Pairs: the method's default preset over the networks' default taps; one-to-one
    takes the deepest target taps, one per source tap.
    """
    import keras

    import keras_l2t
    from keras_l2t.methods import get_method
    from keras_l2t.networks import default_taps

    method, *settings = run.split()
    kwargs = {"meta_every": 1, "lookahead_steps": 2}
    for setting in settings:  # "k=4", "T=1"
        name, value = setting.split("=")
        kwargs[{"k": "meta_every", "T": "lookahead_steps"}[name]] = int(value)
    if not get_method(method).meta_learned:
        kwargs = {}
    keras.utils.set_random_seed(0)
    source, target = build(FLAGS.source, "source"), build(FLAGS.target, "target")
    source_layers, target_layers = default_taps(FLAGS.source), default_taps(FLAGS.target)
    if get_method(method).default_pairs == "one_to_one":
        count = min(len(source_layers), len(target_layers))
        source_layers, target_layers = source_layers[-count:], target_layers[-count:]
    model = keras_l2t.TransferModel(
        source, target, method=method, source_layers=source_layers,
        target_layers=target_layers, **kwargs,
    )
    jit = {"auto": "auto", "true": True, "false": False}[FLAGS.jit_compile]
    model.compile(jit_compile=jit, steps_per_execution=FLAGS.steps_per_execution)
    return model


def random_batch():
    """One batch of the flags' size: uniform images and random labels (fixed seeds)."""
    import numpy as np

    shape = (FLAGS.batch_size, FLAGS.image_size, FLAGS.image_size, 3)
    images = np.random.default_rng(0).random(shape, dtype="float32")
    labels = np.random.default_rng(1).integers(0, FLAGS.num_classes, FLAGS.batch_size)
    return images, labels


def time_method(method: str) -> dict:
    """Times `steps` iterations of `method` after warm-up, in this process; then traces
    `profile_steps` more with JAX's profiler when `--profile_dir` is given."""
    import keras

    class StepTimer(keras.callbacks.Callback):
        """Wall time from batch begin to batch end; Keras turns the logs into Python
        numbers for callbacks, which waits for the device."""

        def __init__(self, calls: int):
            super().__init__()
            self.calls, self.times = calls, []

        def on_train_batch_begin(self, batch, logs=None):
            if FLAGS.profile_dir and len(self.times) == FLAGS.warmup + FLAGS.steps:
                import jax

                jax.profiler.start_trace(f"{FLAGS.profile_dir}/{method}")
            self.start = time.perf_counter()

        def on_train_batch_end(self, batch, logs=None):
            float(logs["loss"])  # the step has finished on the device
            self.times.append(time.perf_counter() - self.start)
            if FLAGS.profile_dir and len(self.times) == self.calls:
                import jax

                jax.profiler.stop_trace()  # before fit's epoch-end work

    class PipelinedTimer(keras.callbacks.Callback):
        """Wall time from the second call's begin (the first one of a `fit` also
        prepares its state) to the moment the last call's logs are Python numbers."""

        async_safe = True  # Keras may run on_train_batch_end in its background thread

        def __init__(self):
            super().__init__()
            self.start, self.end, self.calls = None, 0.0, 0

        def on_train_batch_begin(self, batch, logs=None):
            self.calls += 1
            if self.calls == 2:
                self.start = time.perf_counter()

        def on_train_batch_end(self, batch, logs=None):
            self.end = max(self.end, time.perf_counter())  # calls may finish out of order

    model = build_model(method)
    per_call = FLAGS.steps_per_execution
    calls = FLAGS.warmup + FLAGS.steps + (FLAGS.profile_steps if FLAGS.profile_dir else 0)
    images, labels = random_batch()
    if FLAGS.device_batch:
        import jax

        images, labels = jax.device_put((images, labels))

    def batches():
        while True:
            yield images, labels

    timer = StepTimer(calls)
    model.fit(batches(), epochs=1, steps_per_epoch=calls * per_call, callbacks=[timer],
              verbose=0)
    times = [t / per_call for t in timer.times[FLAGS.warmup:FLAGS.warmup + FLAGS.steps]]
    pipelined = PipelinedTimer()
    model.fit(batches(), epochs=1, steps_per_epoch=(FLAGS.steps + 1) * per_call,
              callbacks=[pipelined], verbose=0)
    return {
        "method": method,
        "pairs": len(model.pairs),
        "median_s": statistics.median(times),
        "mean_s": statistics.mean(times),
        "min_s": min(times),
        "max_s": max(times),
        "pipelined_s": (pipelined.end - pipelined.start) / (FLAGS.steps * per_call),
        "first_s": timer.times[0],  # the first call, tracing and compilation included
        "peak_mb": peak_memory_mb(),
    }


def write_architectures(directory: str) -> None:
    """Saves the source's and target's architectures as DIR/<name>.json."""
    import os

    os.makedirs(directory, exist_ok=True)
    for name, role in ((FLAGS.source, "source"), (FLAGS.target, "target")):
        with open(f"{directory}/{name}.json", "w") as file:
            file.write(build(name, role).to_json())


def main(argv):
    del argv
    if FLAGS.dtype_policy:  # saved architectures keep the policy they were written with
        import keras

        keras.config.set_dtype_policy(FLAGS.dtype_policy)
    if FLAGS.write_architectures:
        write_architectures(FLAGS.write_architectures)
        return
    if FLAGS.child:
        print(json.dumps(time_method(FLAGS.child)))
        return
    import keras

    if FLAGS.profile_dir and keras.backend.backend() != "jax":
        raise SystemExit("--profile_dir uses JAX's profiler: run with KERAS_BACKEND=jax.")
    print(f"command: python {' '.join(sys.argv)}")
    print(f"machine: {platform.machine()}, {platform.python_version()}, Keras "
          f"{keras.__version__} on {keras.backend.backend()} ({device_name()}); settings: "
          f"{FLAGS.source} -> {FLAGS.target}, {FLAGS.image_size} px, batch "
          f"{FLAGS.batch_size}, {FLAGS.num_classes} classes, "
          f"dtype policy {FLAGS.dtype_policy or 'float32'}, jit_compile {FLAGS.jit_compile}, "
          f"steps per execution {FLAGS.steps_per_execution}"
          f"{', one device-resident batch' if FLAGS.device_batch else ''}")
    scratch = None
    for run, result in child_results(variants(FLAGS.methods)):
        scratch = result["median_s"] if run == "scratch" else scratch
        ratio = f"x{result['mean_s'] / scratch:.1f}" if scratch else "-"
        print(f"{run:8s} {result['pairs']:3d} pairs  median {result['median_s']:.4f} s "
              f"(min {result['min_s']:.4f}, max {result['max_s']:.4f}, n={FLAGS.steps})  "
              f"mean {result['mean_s']:.4f} s  {ratio:>6s} scratch's median  "
              f"pipelined {result['pipelined_s']:.4f} s  "
              f"first {result['first_s']:.1f} s  "
              f"peak {result['peak_mb']:.0f} MB", flush=True)


def child_results(methods):
    """Reruns this script with `--child=RUN` per run (a method, or a `variants` entry),
    each in its own process (so memory peaks and compilations are its own); yields (run,
    the child's JSON result). A failed child's error is printed and its run skipped."""
    for method in methods:
        child = subprocess.run(
            [sys.executable, *sys.argv, f"--child={method}"], capture_output=True, text=True
        )
        if child.returncode != 0:
            print(f"{method:8s} failed (exit {child.returncode}):\n{child.stderr[-3000:]}",
                  flush=True)
            continue
        yield method, json.loads(child.stdout.strip().splitlines()[-1])


def device_name() -> str:
    """The accelerator the backend runs on, or "CPU"."""
    import keras

    if keras.backend.backend() == "jax":
        import jax

        return jax.devices()[0].device_kind
    import tensorflow as tf

    gpus = tf.config.list_physical_devices("GPU")
    return gpus[0].name if gpus else "CPU"


if __name__ == "__main__":
    app.run(main)
