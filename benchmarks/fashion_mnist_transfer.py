r"""Transfer on Fashion-MNIST: a miniature of the paper's table, offline, on a CPU.

Command (the run recorded in docs/benchmarks.md, about 22 minutes on 2 CPU cores):

    python benchmarks/fashion_mnist_transfer.py --seeds=0,1,2 --steps=300 --diagnostic_meta_lr=1e-3

Diagnostics recorded there (each reuses the cached sources and finished runs):

    python benchmarks/fashion_mnist_transfer.py --settings=A_N5 --methods=at \
        --diagnostic_meta_lr=1e-2
    python benchmarks/fashion_mnist_transfer.py --settings=A_N5 --methods=scratch,fm --beta=10
    python benchmarks/fashion_mnist_transfer.py --seeds=0 --probe --diagnostic_meta_lr=1e-3
    python benchmarks/fashion_mnist_transfer.py --settings=A_N20,B_N10 --methods=at \
        --diagnostic_meta_lr=1e-3 --diagnostic_settings=A_N20,B_N10
    python benchmarks/fashion_mnist_transfer.py --steps=1000 --settings=A_N5 \
        --methods=scratch,at,l2t_ww

Two frozen sources are pretrained once and cached under `--work_dir`
(default runs/fashion_mnist_benchmark/source_all and source_0_4): the small CNN
`cnn_32_64_128` on Fashion-MNIST train images 0-49,999, on all 10 classes (case A) or on
classes 0-4 only (case B), with the library's recipe (`pretrain_source`). Then, for each
setting, seed and method, a target `cnn_16_32_64` is trained from scratch for a fixed
number of SGD steps:

- A, N=5 and A, N=20 ("like ImageNet -> Dogs", the source knows the target's classes):
  N images per class drawn from train images 50,000-59,999, tested on the official
  10,000 test images;
- B, N=10 (unrelated classes): source on classes 0-4, target on classes 5-9 of images
  50,000-59,999, tested on the 5,000 test images of classes 5-9.

Methods: scratch, fm (single pair), at (one-to-one), l2t_w (one-to-one), l2t_ww
(all-to-all, 3 x 3 pairs). The paper's networks are scaled down: ResNet-32 source ->
3-stage VGG-style `cnn_32_64_128`, VGG-9 target -> 3-stage `cnn_16_32_64`; taps are the
stage outputs (after ReLU, before the max-pool). Everything else is the paper's 32-px
recipe (pad 4 + random crop 32 + flip, CoupledSGD lr 0.1 momentum 0.9 weight decay 1e-4
with cosine decay to 0, Adam 1e-4 (TorchAdam) for the meta-networks, T = 2), except
beta = 2.0 (as the demo, for short runs) and a fixed number of steps instead of 200
epochs. A seed fixes the target images, their batch order and augmentation, and the
target's initial weights, identically for every method. Test accuracy is taken at the
end of training (no validation set is held out). Results of every run are appended to
`<work_dir>/results.json`; a rerun skips the runs already there.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import math
import os
import sys
import time
from typing import Any

import keras
import numpy as np
import tensorflow as tf

from keras_l2t import CoupledSGD, TorchAdam, TransferModel
from keras_l2t.data import load_dataset
from keras_l2t.networks import small_cnn, small_cnn_taps
from keras_l2t.source_pretraining import SOURCE_FILE_NAME, pretrain_source

SOURCE_NET = "cnn_32_64_128"
TARGET_NET = "cnn_16_32_64"
TARGET_TRAIN = range(50_000, 60_000)
SOURCE_TRAIN = range(0, 50_000)

# setting name -> (source name, target classes or None, samples per class)
SETTINGS: dict[str, tuple[str, list[int] | None, int]] = {
    "A_N5": ("source_all", None, 5),
    "A_N20": ("source_all", None, 20),
    "B_N10": ("source_0_4", [5, 6, 7, 8, 9], 10),
}
SOURCES: dict[str, list[int] | None] = {"source_all": None, "source_0_4": [0, 1, 2, 3, 4]}
METHOD_PAIRS: dict[str, str | None] = {
    "scratch": None,
    "fm": "single",
    "at": "one_to_one",
    "l2t_w": "one_to_one",
    "l2t_ww": "all",
}
META_METHODS = ("l2t_w", "l2t_ww")
META_OPTIMIZERS = {"torch_adam": TorchAdam, "keras_adam": keras.optimizers.Adam}


def meta_optimizer_of(method: str, name: str) -> str:
    """The meta-optimizer a run of `method` uses ("-" for methods without meta-networks)."""
    return name if method in META_METHODS else "-"


def recorded_meta_optimizer(result: dict[str, Any]) -> str:
    """A stored run's meta-optimizer; runs from before the flag used Keras' Adam."""
    return result.get("meta_optimizer") or meta_optimizer_of(result["method"], "keras_adam")


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--work_dir", default="runs/fashion_mnist_benchmark")
    parser.add_argument("--data_dir", default=None, help="Fashion-MNIST idx folder.")
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--settings", default=",".join(SETTINGS))
    parser.add_argument("--methods", default=",".join(METHOD_PAIRS))
    parser.add_argument("--steps", type=int, default=300, help="SGD steps per target run.")
    parser.add_argument("--chunks", type=int, default=10,
                        help="Logging intervals per run (meta_ce etc. over training).")
    parser.add_argument("--batch_size", type=int, default=16)
    parser.add_argument("--beta", type=float, default=2.0)
    parser.add_argument("--learning_rate", type=float, default=0.1)
    parser.add_argument("--meta_learning_rate", type=float, default=1e-4)
    parser.add_argument("--meta_optimizer", default="torch_adam",
                        choices=sorted(META_OPTIMIZERS),
                        help="torch_adam (the library's default, PyTorch's Adam) or "
                             "keras_adam (keras.optimizers.Adam, the runs before it).")
    parser.add_argument("--source_epochs", type=int, default=2)
    parser.add_argument("--augmentation", default="pad_crop",
                        help="pad_crop (the paper's 32-px augmentation).")
    parser.add_argument("--diagnostic_meta_lr", default="",
                        help="Comma-separated meta learning rates: extra L2T-ww runs.")
    parser.add_argument("--diagnostic_settings", default="A_N5",
                        help="Comma-separated settings of the --diagnostic_meta_lr runs.")
    parser.add_argument("--probe", action="store_true",
                        help="Diagnostic only: train L2T-ww on A_N5 (first seed) and measure "
                             "the meta-gradient on training vs held-out batches over training.")
    parser.add_argument("--tag", default="", help="Label stored with every run of this call.")
    return parser.parse_args(argv)


def sha1_of(weights: list[np.ndarray]) -> str:
    digest = hashlib.sha1()
    for w in weights:
        digest.update(np.ascontiguousarray(w).tobytes())
    return digest.hexdigest()[:12]


def data_for(args: argparse.Namespace, classes: list[int] | None, samples_per_class: int,
             indices: range, seed: int, batch_size: int):
    return load_dataset(
        "fashion_mnist", data_dir=args.data_dir, train_indices=indices,
        samples_per_class=samples_per_class or None, classes=classes, image_size=32,
        augmentation=args.augmentation, val_fraction=0.0,
        batch_size=batch_size, eval_batch_size=500, split_seed=seed, shuffle_seed=seed,
    )


def cached_source(args: argparse.Namespace, name: str) -> tuple[keras.Model, float]:
    """Pretrains (once) and loads a source; returns it and its test accuracy."""
    directory = os.path.join(args.work_dir, name)
    path = os.path.join(directory, SOURCE_FILE_NAME)
    classes = SOURCES[name]
    data = data_for(args, classes, 0, SOURCE_TRAIN, seed=0, batch_size=128)
    if not os.path.exists(path):
        keras.utils.set_random_seed(0)
        network = small_cnn(SOURCE_NET, data.num_classes, (32, 32, 3), exact_batch_norm=False)
        print(f"Pretraining {name}: {SOURCE_NET} on {data.num_train} images, "
              f"{args.source_epochs} epochs (cached in {directory}).", flush=True)
        start = time.time()
        pretrain_source(network, data.train, None, args.source_epochs, directory, verbose=2)
        print(f"  {time.time() - start:.0f} s", flush=True)
    source = keras.saving.load_model(path, compile=False)
    accuracy = _accuracy(source, data.test)
    print(f"Source {name}: test accuracy {accuracy:.4f}", flush=True)
    return source, accuracy


def _accuracy(model: keras.Model, dataset: tf.data.Dataset) -> float:
    correct, total = 0, 0
    for x, y in dataset:
        predicted = np.argmax(model(x, training=False), axis=-1)
        correct += int(np.sum(predicted == y.numpy()))
        total += int(y.shape[0])
    return correct / total


class ChunkLog(keras.callbacks.Callback):
    """Keeps the training logs of every chunk (Keras epoch)."""

    def __init__(self) -> None:
        super().__init__()
        self.rows: list[dict[str, float]] = []

    def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
        self.rows.append({k: float(v) for k, v in (logs or {}).items()})


class MetaGradientProbe(keras.callbacks.Callback):
    """At the end of every chunk: the meta objective and the meta-gradient's norm on
    batches of the target's own training images and on held-out batches (source-range
    images 0-49,999 the target never trains on). Measures only; nothing is updated."""

    def __init__(self, train: tf.data.Dataset, held_out: tf.data.Dataset,
                 batches: int = 2) -> None:
        super().__init__()
        self.train = list(train.take(batches))
        self.held_out = list(held_out.take(batches))
        self.rows: list[dict[str, float]] = []

    def _measure(self, batches: list) -> tuple[float, float]:
        losses, norms = [], []
        for x, y in batches:
            loss, grads = self.model.meta_gradient(x, y)
            losses.append(float(loss))
            norms.append(float(tf.linalg.global_norm(grads)))
        return float(np.mean(losses)), float(np.mean(norms))

    def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
        train_loss, train_norm = self._measure(self.train)
        held_loss, held_norm = self._measure(self.held_out)
        phi = float(tf.linalg.global_norm([tf.convert_to_tensor(v)
                                           for v in self.model._phi_variables]))
        self.rows.append({"chunk": epoch, "meta_ce_train": train_loss,
                          "meta_grad_norm_train": train_norm, "meta_ce_held_out": held_loss,
                          "meta_grad_norm_held_out": held_norm, "phi_norm": phi})
        print("  probe " + " ".join(f"{k}={v:.4g}" for k, v in self.rows[-1].items()),
              flush=True)


def probe(args: argparse.Namespace, seed: int) -> None:
    """Trains L2T-ww on A_N5 with `MetaGradientProbe`, writes probe.json."""
    source, _ = cached_source(args, "source_all")
    keras.utils.set_random_seed(seed)
    held_out = data_for(args, None, 0, range(0, 2000), seed, args.batch_size).train
    rows: dict[str, Any] = {}
    for rate in [args.meta_learning_rate,
                 *map(float, filter(None, args.diagnostic_meta_lr.split(",")))]:
        print(f"Probe: A_N5 l2t_ww seed {seed} meta lr {rate:g}", flush=True)
        result = run_one(args, "A_N5", "l2t_ww", seed, source, rate, held_out=held_out)
        rows[f"{rate:g}"] = result
    with open(os.path.join(args.work_dir, "probe.json"), "w") as f:
        json.dump(rows, f, indent=1)


def run_one(args: argparse.Namespace, setting: str, method: str, seed: int,
            source: keras.Model, meta_learning_rate: float,
            held_out: tf.data.Dataset | None = None) -> dict[str, Any]:
    _, classes, samples_per_class = SETTINGS[setting]
    # The global seed first: the library's train pipeline depends on it, not only on
    # shuffle_seed (see docs/benchmarks.md), so it must be the same for every method.
    keras.utils.set_random_seed(seed)
    data = data_for(args, classes, samples_per_class, TARGET_TRAIN, seed, args.batch_size)
    keras.utils.set_random_seed(seed)
    target = small_cnn(TARGET_NET, data.num_classes, (32, 32, 3), exact_batch_norm=True)
    init_sha = sha1_of(target.get_weights())
    pairs = METHOD_PAIRS[method]
    kwargs: dict[str, Any] = {}
    if pairs is not None:
        kwargs = dict(pairs=pairs, source_layers=small_cnn_taps(SOURCE_NET),
                      target_layers=small_cnn_taps(TARGET_NET))
    model = TransferModel(source, target, method=method, beta=args.beta, **kwargs)
    chunk = max(1, args.steps // args.chunks)
    chunks = math.ceil(args.steps / chunk)
    total_steps = chunk * chunks
    model.compile(
        optimizer=CoupledSGD(
            keras.optimizers.schedules.CosineDecay(args.learning_rate, total_steps, alpha=0.0),
            momentum=0.9, weight_decay=1e-4,
        ),
        meta_optimizer=META_OPTIMIZERS[args.meta_optimizer](meta_learning_rate),
        metrics=[keras.metrics.SparseCategoricalAccuracy(name="accuracy")],
    )
    phi_start = [v.numpy() for v in model._phi_variables]
    log = ChunkLog()
    callbacks: list[keras.callbacks.Callback] = [log]
    if held_out is not None:
        callbacks.append(MetaGradientProbe(data.train, held_out))
    start = time.time()
    model.fit(data.train.repeat(), steps_per_epoch=chunk, epochs=chunks, callbacks=callbacks,
              verbose=0)
    train_seconds = time.time() - start
    test_accuracy = _accuracy(model.target, data.test)
    result: dict[str, Any] = {
        "setting": setting, "method": method, "seed": seed, "pairs": pairs,
        "num_pairs": len(model.pairs), "meta_learning_rate": meta_learning_rate,
        "steps": total_steps, "batch_size": args.batch_size, "beta": args.beta,
        "augmentation": args.augmentation, "tag": args.tag,
        "meta_optimizer": meta_optimizer_of(method, args.meta_optimizer),
        "num_train": data.num_train, "num_test": data.num_test,
        "target_init_sha1": init_sha, "test_accuracy": test_accuracy,
        "train_seconds": train_seconds,
        "first_chunk": log.rows[0], "last_chunk": log.rows[-1],
    }
    if held_out is not None:
        result["probe"] = callbacks[1].rows
    if model.method.meta_learned:
        result["meta_ce_by_chunk"] = [row.get("meta_ce") for row in log.rows]
        result["ce_by_chunk"] = [row.get("ce") for row in log.rows]
        result["phi_change"] = {
            v.path: float(np.linalg.norm(v.numpy() - s))
            for v, s in zip(model._phi_variables, phi_start)
        }
        last = log.rows[-1]
        result["pairs_detail"] = [
            {
                "pair": list(pair),
                "lambda": last.get(_key(model, "lambda", i)),
                "entropy": last.get(_key(model, "entropy", i)),
                "log_c": math.log(_source_channels(model, i)),
            }
            for i, pair in enumerate(model.pairs)
        ]
    return result


def _key(model: TransferModel, prefix: str, i: int) -> str:
    digits = len(str(max(len(model.pairs) - 1, 0)))
    return f"{prefix}_{i:0{digits}d}"


def _source_channels(model: TransferModel, i: int) -> int:
    """C of pair i's source layer (the channel weights' length)."""
    return int(model._source_shapes[model._pair_source_index[i]][-1])


def summarise(results: list[dict[str, Any]], tag: str | None = None) -> str:
    """Mean +- std per (setting, method) and paired differences against scratch."""
    rows = [r for r in results if tag is None or r["tag"] == tag]
    lines = ["| setting | method | runs | test accuracy (mean ± std) | vs scratch, paired "
             "(mean ± std) | paired t | wins |", "| --- | --- | --- | --- | --- | --- | --- |"]
    for setting in SETTINGS:
        by_method: dict[str, dict[int, float]] = {}
        for r in rows:
            if r["setting"] == setting:
                meta = r["method"] in META_METHODS
                name = r["method"] + (f" (meta lr {r['meta_learning_rate']:g})"
                                      if meta and r["meta_learning_rate"] != 1e-4 else "")
                name += " (Keras Adam)" if recorded_meta_optimizer(r) == "keras_adam" else ""
                by_method.setdefault(name, {})[r["seed"]] = 100 * r["test_accuracy"]
        scratch = by_method.get("scratch", {})
        order = list(METHOD_PAIRS)
        for name, accs in sorted(by_method.items(),
                                 key=lambda item: (order.index(item[0].split(" ")[0]), item[0])):
            values = np.array(list(accs.values()))
            line = (f"| {setting} | {name} | {len(values)} | {values.mean():.2f} ± "
                    f"{_std(values):.2f} |")
            common = sorted(set(accs) & set(scratch))
            if name != "scratch" and common:
                diffs = np.array([accs[s] - scratch[s] for s in common])
                t = diffs.mean() / (_std(diffs) / math.sqrt(len(common)))
                line += (f" {diffs.mean():+.2f} ± {_std(diffs):.2f} (n={len(common)}) | "
                         f"{t:+.1f} | {int(np.sum(diffs > 0))}/{len(common)} |")
            else:
                line += " – | – | – |"
            lines.append(line)
    return "\n".join(lines)


def _std(values: np.ndarray) -> float:
    return float(np.std(values, ddof=1)) if len(values) > 1 else float("nan")


def evidence(results: list[dict[str, Any]]) -> str:
    """Per L2T run: meta_ce first/last chunk, lambda range, entropy deficit, |d phi|."""
    lines = ["| setting | method | meta lr | seed | meta_ce first -> last | ce first -> last |"
             " lambda min..max (last) | max (log C - entropy) | max abs phi change |",
             "| --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
    for r in results:
        if "meta_ce_by_chunk" not in r:
            continue
        detail = r["pairs_detail"]
        lambdas = [d["lambda"] for d in detail if d["lambda"] is not None]
        deficits = [d["log_c"] - d["entropy"] for d in detail if d["entropy"] is not None]
        lam = f"{min(lambdas):.3f}..{max(lambdas):.3f}" if lambdas else "1 (fixed)"
        lines.append(
            f"| {r['setting']} | {r['method']} | {r['meta_learning_rate']:g}"
            f"{' (Keras Adam)' if recorded_meta_optimizer(r) == 'keras_adam' else ''} | "
            f"{r['seed']} | "
            f"{r['meta_ce_by_chunk'][0]:.3f} -> {r['meta_ce_by_chunk'][-1]:.3f} | "
            f"{r['ce_by_chunk'][0]:.3f} -> {r['ce_by_chunk'][-1]:.3f} | {lam} | "
            f"{max(deficits):.2e} | {max(r['phi_change'].values()):.3f} |"
        )
    return "\n".join(lines)


def main(argv: list[str]) -> None:
    args = parse_args(argv)
    print("Command: python " + " ".join([sys.argv[0], *argv]), flush=True)
    os.makedirs(args.work_dir, exist_ok=True)
    results_path = os.path.join(args.work_dir, "results.json")
    results: list[dict[str, Any]] = []
    if os.path.exists(results_path):
        with open(results_path) as f:
            results = json.load(f)["runs"]
    done = {(r["setting"], r["method"], r["seed"], r["meta_learning_rate"], r["steps"],
             r["augmentation"], r["beta"], recorded_meta_optimizer(r)) for r in results}
    seeds = [int(s) for s in args.seeds.split(",")]
    settings = args.settings.split(",")
    methods = args.methods.split(",")
    jobs = [(s, m, seed, args.meta_learning_rate) for s in settings for seed in seeds
            for m in methods]
    for rate in filter(None, args.diagnostic_meta_lr.split(",")):
        jobs += [(setting, "l2t_ww", seed, float(rate))
                 for setting in args.diagnostic_settings.split(",") for seed in seeds]
    if args.probe:
        probe(args, seeds[0])
        return
    start = time.time()
    sources: dict[str, tuple[keras.Model, float]] = {}
    for setting, method, seed, meta_lr in jobs:
        chunk = max(1, args.steps // args.chunks)
        key = (setting, method, seed, meta_lr, chunk * math.ceil(args.steps / chunk),
               args.augmentation, args.beta, meta_optimizer_of(method, args.meta_optimizer))
        if key in done:
            continue
        source_name = SETTINGS[setting][0]
        if source_name not in sources:
            sources[source_name] = cached_source(args, source_name)
        result = run_one(args, setting, method, seed, sources[source_name][0], meta_lr)
        result["source_test_accuracy"] = sources[source_name][1]
        results.append(result)
        print(f"[{time.time() - start:6.0f} s] {setting} {method} seed {seed} "
              f"meta lr {meta_lr:g}: test {100 * result['test_accuracy']:.2f}% "
              f"({result['train_seconds']:.0f} s)", flush=True)
        with open(results_path + ".tmp", "w") as f:
            json.dump({"command": "python " + " ".join([sys.argv[0], *argv]),
                       "runs": results}, f, indent=1)
        os.replace(results_path + ".tmp", results_path)
    print(f"\nWall time of this call: {time.time() - start:.0f} s "
          f"(results: {results_path})\n", flush=True)
    mine = [r for r in results if r["steps"] == key[4] and r["augmentation"] == args.augmentation
            and r["beta"] == args.beta] if jobs else results
    print(summarise(mine))
    print()
    print(evidence(mine))


if __name__ == "__main__":
    main(sys.argv[1:])
