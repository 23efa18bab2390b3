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

The cross-domain case (X_N10, below; not among the default settings). At 300 steps
transfer does not hurt there: the target underfits permuted images (scratch 33.7 %,
training cross-entropy still ~1.5) and the matching losses act as optimisation hints
(5 seeds, paired vs scratch: at +3.1, t +5.1, 5/5; l2t_ww +0.1). Neither more data
(X_N100) nor inverted intensities (XI_N10) changed that (2 seeds). The harder case is
the same X_N10 trained for 1,000 steps, where scratch learns the task (55.5 %): fm and
at are then neutral (-0.1, -0.4) and l2t_ww falls below scratch, -2.7 +- 2.3 points,
t -2.7, in 4 of 5 seeds (the fifth a tie). Logs in
benchmarks/results/cpu_fashion_mnist_cross_domain*.log:

    python benchmarks/fashion_mnist_transfer.py --settings=X_N10 \
        --methods=scratch,fm,at,l2t_ww --seeds=0,1,2,3,4 --steps=300
    python benchmarks/fashion_mnist_transfer.py --settings=X_N10 \
        --methods=scratch,fm,at,l2t_ww --seeds=0,1,2,3,4 --steps=1000
    python benchmarks/fashion_mnist_transfer.py --settings=XI_N10,X_N100 \
        --methods=scratch,fm,at,l2t_ww --seeds=0,1 --steps=300

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
  50,000-59,999, tested on the 5,000 test images of classes 5-9;
- X, N=10 (cross-domain, a target the source should not help with): source_all; the
  target is 10 images per class of images 50,000-59,999, all 10 classes, tested on the
  official test images, but every image (train and test) is first resized to 32 x 32 as
  usual and then goes through ONE fixed random permutation of its 1,024 pixel positions
  (`PERMUTATION_SEED`, the same for every run seed; `PermutedFashionMnist`). Nothing of
  a garment's spatial structure is left for convolutional features. The permutation acts
  on the 32-px image, not on the raw 28-px one: then it is lossless and the network's
  input is exactly a permutation of what a plain Fashion-MNIST setting would feed it (up
  to augmentation), whereas permuting at 28 px would let the 28 -> 32 bilinear
  upsampling blend unrelated pixels into each input pixel. It is applied in the source
  dataset, before the library's pipeline, so the rest of the recipe is unchanged: the
  pipeline sees 32-px images (and skips its resize), and pads, crops and flips the
  permuted image as it would any image (the flip and the shift are no longer the
  symmetries of the data; they are kept because they are the recipe's). Two variants
  tried as harder cases at 300 steps (neither made transfer hurt): X_N100, 100 images
  per class; XI_N10, the permuted images also inverted (255 - x, so the source sees a
  bright background it never saw, while the target's first convolution and batch norm
  can absorb a sign flip).

T, N=10 (a real pretrained source, not trained here): the authors' Tiny ImageNet
ResNet-32 (natural RGB images, 200 classes; `convert_source.py` writes it, path
`--authors_source`), taps `stage1_out`..`stage3_out`; the target is the plain Fashion-MNIST
task of X without the permutation (10 images per class of 50,000-59,999, grey images
repeated over RGB, ImageNet mean/std as the source was trained with):

    python convert_source.py --checkpoint=tinyimagenet-200-resnet32.pth.tar
    python benchmarks/fashion_mnist_transfer.py --settings=T_N10 \
        --methods=scratch,fm,at,l2t_ww,l2t_ww_held_out --seeds=0,1,2,3,4 --steps=300

Several sources (`TransferModel(source={"source_all": ..., "source_random": ...})`): R_N5
is A_N5's target with an unhelpful source alone, `cnn_32_64_128` with its random initial
weights (`RANDOM_SOURCE_SEED`, never trained); M_N5 is the same target with source_all
and the random source together, pairs "all" over both sources' taps (6 x 3 = 18 pairs,
source layers written "source_all/block1_out" etc.). The summary then adds a table: each
M_N5 row against the same recipe with each source alone (A_N5, R_N5), paired by seed,
and the mean pair weight of each source's pairs over training:

    python benchmarks/fashion_mnist_transfer.py --settings=M_N5,R_N5,A_N5 \
        --methods=scratch,l2t_ww,l2t_ww_rms --seeds=0,1,2,3,4 --steps=300 \
        --plot_pair_weights=docs/images/fashion_mnist_two_sources_pair_weights.png

Methods: scratch, fm (single pair), at (one-to-one), l2t_w (one-to-one), l2t_ww
(all-to-all, 3 x 3 pairs). Each row of the table is a recipe (`RECIPES`, the names that
`--methods` takes): a method with its pairs, extra `TransferModel` arguments and the
data its meta objective is computed on. The five methods are plain recipes of the same
name; `l2t_ww_held_out` and `l2t_ww_held_out_train` compute L2T-ww's meta objective on a
separate meta batch (`TransferModel(meta_objective="held_out")`, elements `((x, y),
(x_meta, y_meta))`): the first carves `--meta_fraction` of each class's N images off as
meta images (at least 1 per class; the real steps never train on them), the second draws
its meta batches from a second shuffled, augmented stream of the same N images (another
seed). Recipes ending in `_beta_cosine` weigh their transfer loss (beta, or
attention_beta for at) with a per-step cosine from its value to 0 over the run
(`TransferModel(beta=CosineDecay(...))`, train.py's `--beta_schedule=cosine`), so the
target trains on its own loss alone at the end (`_beta_cosine_half`: over the first half,
then 0). Recipes ending in `_rms` divide each example's tapped source map by its root
mean square (`TransferModel(source_normalization="rms")`). `fm_all` is fm on L2T-ww's
3 x 3 pairs (uniform channel and pair weights: L2T-ww without its meta-networks;
`fm_all_rms` the same with rms source maps), and
`l2t_w_all` learns the channel weights on them with every lambda 1 (without "where").
Recipes ending in `_gate` take the transfer terms' gradient in the real step only where
it is aligned with L_org's gradient on the meta batch
(`TransferModel(transfer_gate="aligned")`); their runs record the fraction of iterations
with transfer on per chunk; `_gate_avg` gates on the alignment's moving average over
about 50 iterations (`transfer_gate_momentum=0.98`). Recipes with `_pair_mean` divide
each example's pair weights by their mean over the pairs
(`TransferModel(pair_weight_normalization="mean")`): "where" spreads a fixed budget.
The paper's networks are scaled down:
ResNet-32 source -> 3-stage VGG-style `cnn_32_64_128`, VGG-9 target -> 3-stage
`cnn_16_32_64`; taps are the stage outputs (after ReLU, before the max-pool). Everything
else is the paper's 32-px recipe (pad 4 + random crop 32 + flip, CoupledSGD lr 0.1
momentum 0.9 weight decay 1e-4 with cosine decay to 0, Adam 1e-4 (TorchAdam) for the
meta-networks, T = 2), except beta = 2.0 (as the demo, for short runs) and a fixed
number of steps instead of 200 epochs. A seed fixes the target images, their batch order
and augmentation, and the target's initial weights, identically for every method. Test
accuracy is taken at the end of training (no validation set is held out). Results of
every run are appended to `<work_dir>/results.json`; a rerun skips the runs already
there (a run is identified by its setting, recipe, seed and training knobs; runs stored
before recipes existed count as their method's plain recipe).

The summary prints, per setting, a table against scratch, then one line per setting:
every row's paired difference to the better of the fm and at baselines (by mean), and
the mean wall time of one run's training per row.
"""

from __future__ import annotations

import argparse
import dataclasses
import fcntl
import hashlib
import inspect
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
from keras_l2t.data.fashion_mnist import FashionMnistSource
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
    "X_N10": ("source_all", None, 10),
    "X_N100": ("source_all", None, 100),
    "XI_N10": ("source_all", None, 10),
    "T_N10": ("authors_resnet32", None, 10),
    # A's target with an unhelpful source alone, and with the helpful and the unhelpful
    # source together (`TransferModel(source={...})`; source names joined by "+").
    "R_N5": ("source_random", None, 5),
    "M_N5": ("source_all+source_random", None, 5),
}
# The settings a call runs without --settings (the recorded table's; X_* on request).
DEFAULT_SETTINGS = ("A_N5", "A_N20", "B_N10")
# Settings whose target images (train and test) go through `PermutedFashionMnist`, and
# whether their intensities are also inverted (255 - x).
PERMUTED_SETTINGS: dict[str, bool] = {"X_N10": False, "X_N100": False, "XI_N10": True}
# The permutation of X's pixels: fixed, independent of the run seeds.
PERMUTATION_SEED = 1919
IMAGE_SIZE = 32
SOURCES: dict[str, list[int] | None] = {"source_all": None, "source_0_4": [0, 1, 2, 3, 4]}
# An unhelpful source: SOURCE_NET with its initial random weights, never trained (its
# inference-mode batch norm is the identity); the same weights in every session.
RANDOM_SOURCE = "source_random"
RANDOM_SOURCE_SEED = 2323
# A real pretrained source, not trained here: the authors' Tiny ImageNet ResNet-32
# (natural RGB images, 200 classes), converted by convert_source.py (`--authors_source`).
AUTHORS_SOURCE = "authors_resnet32"
AUTHORS_SOURCE_TAPS = ["stage1_out", "stage2_out", "stage3_out"]
METHOD_PAIRS: dict[str, str | None] = {
    "scratch": None,
    "fm": "single",
    "at": "one_to_one",
    "l2t_w": "one_to_one",
    "l2t_ww": "all",
}
META_METHODS = ("l2t_w", "l2t_ww")
META_OPTIMIZERS = {"torch_adam": TorchAdam, "keras_adam": keras.optimizers.Adam}
# Where a recipe's meta objective is computed (`Recipe.meta_data`).
TRAIN_BATCH = "train_batch"  # the real step's own batch (the paper); fit on (x, y)
CARVE = "carve"  # meta images carved off the N training images, not trained on
STREAM = "stream"  # a second shuffled, augmented stream of the same training images
# The meta stream's shuffle/augmentation seed is the run seed plus this.


@dataclasses.dataclass(frozen=True)
class Recipe:
    """One row of the table: how a target is trained.

    Attributes:
        method: `TransferModel`'s method.
        pairs: the pair preset (None: no pairs, scratch).
        model_kwargs: extra `TransferModel` arguments.
        meta_data: TRAIN_BATCH, CARVE or STREAM (the last two need
            `model_kwargs["meta_objective"] == "held_out"`).
        beta_schedule: "constant" (the paper), "cosine" (beta and attention_beta
            decay to 0 over the run) or "cosine_half" (to 0 at half the run, then 0).
    """

    method: str
    pairs: str | None
    model_kwargs: dict[str, Any] = dataclasses.field(default_factory=dict)
    meta_data: str = TRAIN_BATCH
    beta_schedule: str = "constant"


RECIPES: dict[str, Recipe] = {
    **{method: Recipe(method, pairs) for method, pairs in METHOD_PAIRS.items()},
    "l2t_ww_held_out": Recipe("l2t_ww", "all", {"meta_objective": "held_out"}, CARVE),
    "l2t_ww_held_out_train": Recipe("l2t_ww", "all", {"meta_objective": "held_out"}, STREAM),
    **{f"{method}_beta_cosine": Recipe(method, METHOD_PAIRS[method], beta_schedule="cosine")
       for method in ("fm", "at", "l2t_ww")},
    "l2t_ww_held_out_beta_cosine": Recipe("l2t_ww", "all", {"meta_objective": "held_out"},
                                          CARVE, beta_schedule="cosine"),
    "l2t_ww_beta_cosine_half": Recipe("l2t_ww", "all", beta_schedule="cosine_half"),
    **{f"{method}_rms": Recipe(method, METHOD_PAIRS[method], {"source_normalization": "rms"})
       for method in ("fm", "at", "l2t_ww")},
    "l2t_ww_held_out_rms": Recipe(
        "l2t_ww", "all", {"meta_objective": "held_out", "source_normalization": "rms"}, CARVE),
    **{f"{method}_gate": Recipe(method, METHOD_PAIRS[method], {"transfer_gate": "aligned"})
       for method in ("fm", "at", "l2t_ww")},
    "l2t_ww_held_out_gate": Recipe(
        "l2t_ww", "all", {"meta_objective": "held_out", "transfer_gate": "aligned"}, CARVE),
    # The held-out gate on the alignment's moving average over about 50 iterations.
    "l2t_ww_held_out_gate_avg": Recipe(
        "l2t_ww", "all", {"meta_objective": "held_out", "transfer_gate": "aligned",
                          "transfer_gate_momentum": 0.98}, CARVE),
    "l2t_ww_rms_gate": Recipe(
        "l2t_ww", "all", {"source_normalization": "rms", "transfer_gate": "aligned"}),
    # fm on L2T-ww's 3 x 3 pairs with uniform weights: L2T-ww without its meta-networks.
    "fm_all": Recipe("fm", "all"),
    "fm_all_rms": Recipe("fm", "all", {"source_normalization": "rms"}),
    # Learned channel weights ("what") on L2T-ww's 3 x 3 pairs, every lambda 1: L2T-ww
    # without its "where" networks.
    "l2t_w_all": Recipe("l2t_w", "all"),
    "l2t_ww_pair_mean": Recipe("l2t_ww", "all", {"pair_weight_normalization": "mean"}),
    "l2t_ww_rms_pair_mean": Recipe(
        "l2t_ww", "all", {"source_normalization": "rms", "pair_weight_normalization": "mean"}),
}
# The fraction of the run over which a beta schedule decays to 0 (then stays there).
BETA_DECAY_FRACTION = {"cosine": 1.0, "cosine_half": 0.5}


def recipe_of(result: dict[str, Any]) -> str:
    """A stored run's recipe; runs from before recipes are their method's plain recipe."""
    return result.get("recipe") or result["method"]


def meta_optimizer_of(method: str, name: str) -> str:
    """The meta-optimizer a run of `method` uses ("-" for methods without meta-networks)."""
    return name if method in META_METHODS else "-"


def recorded_meta_optimizer(result: dict[str, Any]) -> str:
    """A stored run's meta-optimizer; runs from before the flag used Keras' Adam."""
    return result.get("meta_optimizer") or meta_optimizer_of(result["method"], "keras_adam")


def meta_every_of(recipe: Recipe, args: argparse.Namespace) -> int:
    """--meta_every for a meta-learned recipe, 1 for the others."""
    return args.meta_every if recipe.method in META_METHODS else 1


def lookahead_steps_of(recipe: Recipe, args: argparse.Namespace) -> int:
    """--lookahead_steps (T) for a meta-learned recipe, the paper's 2 for the others."""
    return args.lookahead_steps if recipe.method in META_METHODS else 2


def run_key(setting: str, recipe: str, seed: int, meta_learning_rate: float, steps: int,
            augmentation: str, beta: float, meta_optimizer: str,
            meta_fraction: float | None, dtype_policy: str = "float32",
            meta_every: int = 1, lookahead_steps: int = 2) -> tuple:
    """What identifies a run in results.json (a rerun skips a key already there)."""
    return (setting, recipe, seed, meta_learning_rate, steps, augmentation, beta,
            meta_optimizer, meta_fraction, dtype_policy, meta_every, lookahead_steps)


def stored_key(result: dict[str, Any]) -> tuple:
    return run_key(result["setting"], recipe_of(result), result["seed"],
                   result["meta_learning_rate"], result["steps"], result["augmentation"],
                   result["beta"], recorded_meta_optimizer(result),
                   result.get("meta_fraction"), result.get("dtype_policy", "float32"),
                   result.get("meta_every", 1), result.get("lookahead_steps", 2))


def check_recipes(names: list[str]) -> None:
    """Fails early on an unknown recipe, or one whose arguments this TransferModel lacks."""
    accepted = inspect.signature(TransferModel.__init__).parameters
    for name in names:
        if name not in RECIPES:
            raise SystemExit(f"Unknown method/recipe {name!r}; the recipes are "
                             f"{', '.join(RECIPES)}.")
        recipe = RECIPES[name]
        missing = [k for k in recipe.model_kwargs if k not in accepted]
        if missing:
            raise SystemExit(f"Recipe {name!r} needs TransferModel({', '.join(missing)}=...), "
                             "which this version of keras_l2t does not have.")
        if recipe.meta_data != TRAIN_BATCH and (
                recipe.method not in META_METHODS
                or recipe.model_kwargs.get("meta_objective") != "held_out"):
            raise SystemExit(f"Recipe {name!r}: a separate meta batch needs a meta-learned "
                             "method and meta_objective='held_out'.")


class PermutedFashionMnist(FashionMnistSource):
    """Fashion-MNIST resized to `image_size` and put through one fixed pixel permutation
    (and, with `invert`, negated: 255 - x).

    Elements are float32 [S, S, 1] in [0, 255] (bilinear, antialiased: the library's
    resize), so `load_dataset`'s pipeline skips its own resize and augments and normalises
    the permuted image as any other.
    """

    def __init__(self, data_dir: str | None = None, image_size: int = IMAGE_SIZE,
                 seed: int = PERMUTATION_SEED, invert: bool = False):
        super().__init__(data_dir)
        self.image_size = image_size
        self.invert = invert
        self.permutation = np.random.default_rng(seed).permutation(image_size * image_size)

    def dataset(self, split: str, indices: np.ndarray, labels: np.ndarray) -> tf.data.Dataset:
        size, invert = self.image_size, self.invert
        permutation = tf.constant(self.permutation, tf.int32)

        def permute(image, label):
            image = tf.image.resize(image, [size, size], method="bilinear", antialias=True)
            if invert:
                image = 255.0 - image
            pixels = tf.gather(tf.reshape(image, [size * size, 1]), permutation)
            return tf.reshape(pixels, [size, size, 1]), label

        return super().dataset(split, indices, labels).map(permute)


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--work_dir", default="runs/fashion_mnist_benchmark")
    parser.add_argument("--data_dir", default=None, help="Fashion-MNIST idx folder.")
    parser.add_argument("--authors_source",
                        default="sources/authors_tiny_imagenet_resnet32.keras",
                        help="T_* settings: the authors' ResNet-32 as convert_source.py "
                             "writes it.")
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--settings", default=",".join(DEFAULT_SETTINGS),
                        help=f"Comma-separated settings: {', '.join(SETTINGS)}.")
    parser.add_argument("--methods", default=",".join(METHOD_PAIRS),
                        help=f"Comma-separated recipes: {', '.join(RECIPES)}.")
    parser.add_argument("--meta_fraction", type=float, default=0.2,
                        help="Recipes with carved meta images: the fraction of each class's "
                             "N training images carved off (rounded, at least 1 per class).")
    parser.add_argument("--steps", type=int, default=300, help="SGD steps per target run.")
    parser.add_argument("--chunks", type=int, default=10,
                        help="Logging intervals per run (meta_ce etc. over training).")
    parser.add_argument("--batch_size", type=int, default=16)
    parser.add_argument("--beta", type=float, default=2.0)
    parser.add_argument("--meta_every", type=int, default=1,
                        help="Meta-learned recipes: the lookahead and meta step on every "
                             "k-th iteration only (TransferModel(meta_every=k)).")
    parser.add_argument("--lookahead_steps", type=int, default=2,
                        help="Meta-learned recipes: T, the lookahead's steps on the "
                             "matching loss (the paper's 2).")
    parser.add_argument("--dtype_policy", default="float32",
                        help="The target's, adapters' and meta-networks' Keras dtype policy "
                             "(e.g. mixed_bfloat16); the source stays float32.")
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
    parser.add_argument("--accuracy_and_time", action="store_true",
                        help="Also print every (row, steps) of the settings and --methods, "
                             "whatever its k, T and step budget, against l2t_ww at --steps, "
                             "with its training time and whether it is on the Pareto front.")
    parser.add_argument("--iteration_seconds", default="",
                        help="With --accuracy_and_time / --plot_accuracy_time: mean seconds "
                             "per iteration by kind, measured apart with step_time.py on an "
                             "idle machine, e.g. scratch=0.01,k1T2=0.1,k4T1=0.03; a run's "
                             "time is then steps x that (its own wall time otherwise).")
    parser.add_argument("--plot_accuracy_time", default="",
                        help="Write a picture of accuracy against training time (one panel "
                             "per setting, every (row, steps)) to this PNG path.")
    parser.add_argument("--plot_pair_weights", default="",
                        help="Write a picture of every pair's lambda over training (mean over "
                             "seeds) per L2T-ww row of the first setting to this PNG path.")
    return parser.parse_args(argv)


def sha1_of(weights: list[np.ndarray]) -> str:
    digest = hashlib.sha1()
    for w in weights:
        digest.update(np.ascontiguousarray(w).tobytes())
    return digest.hexdigest()[:12]


def data_for(args: argparse.Namespace, classes: list[int] | None, samples_per_class: int,
             indices, seed: int, batch_size: int, source: FashionMnistSource | None = None,
             **meta):
    """The `DataSplits`; `train` endless, every pass shuffled and augmented anew from
    the seed alone (`load_dataset(repeat=True)`); `meta`: `load_dataset`'s meta split
    arguments."""
    return load_dataset(
        "fashion_mnist", data_dir=args.data_dir, train_indices=indices,
        samples_per_class=samples_per_class or None, classes=classes, image_size=IMAGE_SIZE,
        augmentation=args.augmentation, val_fraction=0.0,
        batch_size=batch_size, eval_batch_size=500, split_seed=seed, shuffle_seed=seed,
        source=source, repeat=True, **meta,
    )


def target_data(args: argparse.Namespace, setting: str, recipe: Recipe, seed: int):
    """The target's `DataSplits`, and (meta stream, its image count), None for TRAIN_BATCH
    recipes: `load_dataset`'s carved meta split (CARVE, `--meta_fraction` of each class's
    N images, never trained on) or a second stream of the training images (STREAM), both
    endless, shuffled and augmented as the training batches with their own seed."""
    _, classes, samples_per_class = SETTINGS[setting]
    source = (PermutedFashionMnist(args.data_dir, invert=PERMUTED_SETTINGS[setting])
              if setting in PERMUTED_SETTINGS else None)
    meta = {TRAIN_BATCH: {}, STREAM: {"meta_from_train": True},
            CARVE: {"meta_fraction": args.meta_fraction}}[recipe.meta_data]
    data = data_for(args, classes, samples_per_class, TARGET_TRAIN, seed, args.batch_size,
                    source, **meta)
    return data, (None if data.meta is None else (data.meta, data.num_meta))


def cached_source(args: argparse.Namespace, name: str) -> tuple[Any, float | None]:
    """Pretrains (once) and loads a source; returns it and its test accuracy (None for
    the authors' network, whose 200 classes are not Fashion-MNIST's). Several sources
    ("a+b") come back as a dict by name, with the first one's accuracy."""
    if "+" in name:
        loaded = {part: cached_source(args, part) for part in name.split("+")}
        return ({part: model for part, (model, _) in loaded.items()},
                next(iter(loaded.values()))[1])
    if name == RANDOM_SOURCE:
        keras.utils.set_random_seed(RANDOM_SOURCE_SEED)
        network = small_cnn(SOURCE_NET, 10, (32, 32, 3), exact_batch_norm=False)
        data = data_for(args, None, 0, SOURCE_TRAIN, seed=0, batch_size=128)
        accuracy = _accuracy(network, data.test)
        print(f"Source {name}: random weights (seed {RANDOM_SOURCE_SEED}), test accuracy "
              f"{accuracy:.4f}", flush=True)
        return network, accuracy
    if name == AUTHORS_SOURCE:
        if not os.path.exists(args.authors_source):
            raise SystemExit(
                f"--authors_source={args.authors_source} does not exist; convert the "
                "authors' checkpoint first: python convert_source.py "
                f"--checkpoint=tinyimagenet-200-resnet32.pth.tar --output={args.authors_source}")
        print(f"Source {name}: {args.authors_source}", flush=True)
        return keras.saving.load_model(args.authors_source, compile=False), None
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
        pretrain_source(network, data.train, None, args.source_epochs, directory,
                        steps_per_epoch=data.steps_per_epoch, verbose=2)
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


def run_one(args: argparse.Namespace, setting: str, recipe_name: str, seed: int,
            source: keras.Model | dict[str, keras.Model], meta_learning_rate: float,
            held_out: tf.data.Dataset | None = None) -> dict[str, Any]:
    recipe = RECIPES[recipe_name]
    method = recipe.method
    data, meta = target_data(args, setting, recipe, seed)  # its batches: from seed alone
    keras.utils.set_random_seed(seed)  # the target's initial weights
    keras.config.set_dtype_policy(args.dtype_policy)  # the target, adapters, meta-networks
    target = small_cnn(TARGET_NET, data.num_classes, (32, 32, 3), exact_batch_norm=True)
    init_sha = sha1_of(target.get_weights())
    pairs = recipe.pairs
    kwargs: dict[str, Any] = dict(recipe.model_kwargs)
    if pairs is not None:
        source_taps = (AUTHORS_SOURCE_TAPS if SETTINGS[setting][0] == AUTHORS_SOURCE
                       else small_cnn_taps(SOURCE_NET))
        if isinstance(source, dict):  # several sources: "name/layer"
            source_taps = [f"{name}/{layer}" for name in source for layer in source_taps]
        kwargs.update(pairs=pairs, source_layers=source_taps,
                      target_layers=small_cnn_taps(TARGET_NET))
    if meta_every_of(recipe, args) > 1:
        kwargs["meta_every"] = meta_every_of(recipe, args)
    if recipe.method in META_METHODS:
        kwargs["lookahead_steps"] = args.lookahead_steps
    chunk = max(1, args.steps // args.chunks)
    chunks = math.ceil(args.steps / chunk)
    total_steps = chunk * chunks
    beta: Any = args.beta
    if recipe.beta_schedule != "constant":
        decay_steps = max(1, round(BETA_DECAY_FRACTION[recipe.beta_schedule] * total_steps))
        cosine = keras.optimizers.schedules.CosineDecay
        beta = cosine(args.beta, decay_steps, alpha=0.0)
        attention_beta = inspect.signature(TransferModel).parameters["attention_beta"].default
        kwargs["attention_beta"] = cosine(attention_beta, decay_steps, alpha=0.0)
    model = TransferModel(source, target, method=method, beta=beta, **kwargs)
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
    train = data.train
    if meta is not None:  # only recipes with meta_objective="held_out"
        train = tf.data.Dataset.zip((train, meta[0]))
    start = time.time()
    model.fit(train, steps_per_epoch=chunk, epochs=chunks, callbacks=callbacks, verbose=0)
    train_seconds = time.time() - start
    keras.config.set_dtype_policy("float32")
    test_accuracy = _accuracy(model.target, data.test)
    result: dict[str, Any] = {
        "setting": setting, "recipe": recipe_name, "method": method, "seed": seed,
        "pairs": pairs,
        "num_pairs": len(model.pairs), "meta_learning_rate": meta_learning_rate,
        "steps": total_steps, "batch_size": args.batch_size, "beta": args.beta,
        "augmentation": args.augmentation, "tag": args.tag,
        "dtype_policy": args.dtype_policy, "meta_every": meta_every_of(recipe, args),
        "lookahead_steps": lookahead_steps_of(recipe, args),
        "beta_schedule": recipe.beta_schedule,
        "meta_optimizer": meta_optimizer_of(method, args.meta_optimizer),
        "num_train": data.num_train, "num_test": data.num_test,
        "target_init_sha1": init_sha, "test_accuracy": test_accuracy,
        "train_seconds": train_seconds,
        "first_chunk": log.rows[0], "last_chunk": log.rows[-1],
    }
    if recipe.model_kwargs:
        result["model_kwargs"] = dict(recipe.model_kwargs)
    if meta is not None:
        result["meta_data"] = recipe.meta_data
        result["num_meta"] = meta[1]
        if recipe.meta_data == CARVE:
            result["meta_fraction"] = args.meta_fraction
    if setting in PERMUTED_SETTINGS:
        result["permutation_seed"] = PERMUTATION_SEED
        result["inverted"] = PERMUTED_SETTINGS[setting]
    if held_out is not None:
        result["probe"] = callbacks[1].rows
    if model.transfer_gate != "none":
        result["transfer_on_by_chunk"] = [row.get("transfer_on") for row in log.rows]
        result["transfer_cosine_by_chunk"] = [row.get("transfer_cosine") for row in log.rows]
    if model.method.meta_learned:
        result["meta_ce_by_chunk"] = [row.get("meta_ce") for row in log.rows]
        result["ce_by_chunk"] = [row.get("ce") for row in log.rows]
        result["lambda_by_chunk"] = [
            [row.get(_key(model, "lambda", i)) for i in range(len(model.pairs))]
            for row in log.rows
        ]
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


def row_name(result: dict[str, Any]) -> str:
    """A run's row in the tables: its recipe, and its meta lr / optimizer when not default."""
    meta = result["method"] in META_METHODS
    name = recipe_of(result) + (f" (meta lr {result['meta_learning_rate']:g})"
                                if meta and result["meta_learning_rate"] != 1e-4 else "")
    name += " (Keras Adam)" if recorded_meta_optimizer(result) == "keras_adam" else ""
    name += f" (k {result['meta_every']})" if result.get("meta_every", 1) != 1 else ""
    name += (f" (T {result['lookahead_steps']})" if result.get("lookahead_steps", 2) != 2
             else "")
    fraction = result.get("meta_fraction")
    return name + (f" (meta fraction {fraction:g})" if fraction not in (None, 0.2) else "")


def _paired(accs: dict[int, float], base: dict[int, float]) -> tuple[np.ndarray, float]:
    """Per-seed differences on the seeds both have, and their paired t value."""
    common = sorted(set(accs) & set(base))
    diffs = np.array([accs[s] - base[s] for s in common])
    t = diffs.mean() / (_std(diffs) / math.sqrt(len(common))) if len(common) else float("nan")
    return diffs, t


def _by_row(rows: list[dict[str, Any]], setting: str,
            field: str) -> dict[str, dict[int, float]]:
    by_name: dict[str, dict[int, float]] = {}
    for r in rows:
        if r["setting"] == setting:
            scale = 100.0 if field == "test_accuracy" else 1.0
            by_name.setdefault(row_name(r), {})[r["seed"]] = scale * r[field]
    order = list(RECIPES)
    return dict(sorted(by_name.items(),
                       key=lambda item: (order.index(item[0].split(" ")[0]), item[0])))


def summarise(results: list[dict[str, Any]], tag: str | None = None) -> str:
    """Mean +- std per (setting, recipe) and paired differences against scratch; then per
    setting, paired differences against the better of fm and at, and the wall times."""
    rows = [r for r in results if tag is None or r["tag"] == tag]
    lines = ["| setting | method | runs | test accuracy (mean ± std) | vs scratch, paired "
             "(mean ± std) | paired t | wins |", "| --- | --- | --- | --- | --- | --- | --- |"]
    summary = ["| setting | best of fm/at (mean) | paired difference to it: mean (t, wins) |"
               " train seconds per run (mean) |", "| --- | --- | --- | --- |"]
    for setting in SETTINGS:
        by_method = _by_row(rows, setting, "test_accuracy")
        if not by_method:
            continue
        scratch = by_method.get("scratch", {})
        for name, accs in by_method.items():
            values = np.array(list(accs.values()))
            line = (f"| {setting} | {name} | {len(values)} | {values.mean():.2f} ± "
                    f"{_std(values):.2f} |")
            diffs, t = _paired(accs, scratch) if name != "scratch" else (np.array([]), 0.0)
            if len(diffs):
                line += (f" {diffs.mean():+.2f} ± {_std(diffs):.2f} (n={len(diffs)}) | "
                         f"{t:+.1f} | {int(np.sum(diffs > 0))}/{len(diffs)} |")
            else:
                line += " – | – | – |"
            lines.append(line)
        baselines = {name: np.mean(list(by_method[name].values()))
                     for name in ("fm", "at") if name in by_method}
        seconds = _by_row(rows, setting, "train_seconds")
        times = "; ".join(f"{name} {np.mean(list(v.values())):.0f}"
                          for name, v in seconds.items())
        if not baselines:
            summary.append(f"| {setting} | – | – | {times} |")
            continue
        best = max(baselines, key=baselines.get)
        versus = []
        for name, accs in by_method.items():
            diffs, t = _paired(accs, by_method[best]) if name != best else (np.array([]), 0.0)
            if len(diffs):
                versus.append(f"{name} {diffs.mean():+.2f} ({t:+.1f}, "
                              f"{int(np.sum(diffs > 0))}/{len(diffs)})")
        summary.append(f"| {setting} | {best} ({baselines[best]:.2f}) | "
                       f"{'; '.join(versus) or '–'} | {times} |")
    return "\n".join(lines) + "\n\n" + "\n".join(summary)


def _std(values: np.ndarray) -> float:
    return float(np.std(values, ddof=1)) if len(values) > 1 else float("nan")


def several_sources(results: list[dict[str, Any]]) -> str:
    """For each setting with several sources: each recipe's accuracy there and with each
    source alone (the settings of the same target), the paired difference of "all
    sources" to each source alone, and the mean pair weight of each source's pairs
    (last logging chunk, mean over seeds)."""
    lines = []
    for setting, (name, classes, samples) in SETTINGS.items():
        if "+" not in name:
            continue
        alone = {part: other for part in name.split("+") for other, spec in SETTINGS.items()
                 if spec == (part, classes, samples)}
        together = _by_row(results, setting, "test_accuracy")
        for recipe, accs in together.items():
            if recipe == "scratch":
                continue
            cells = []
            for part, other in alone.items():
                single = _by_row(results, other, "test_accuracy").get(recipe, {})
                diffs, t = _paired(accs, single)
                if len(diffs):
                    cells.append(f"{other} ({part} alone) {np.mean(list(single.values())):.2f}, "
                                 f"{setting} - {other}: {diffs.mean():+.2f} ± {_std(diffs):.2f}"
                                 f" (t {t:+.1f}, {int(np.sum(diffs > 0))}/{len(diffs)})")
            weights = _source_pair_weights(results, setting, recipe)
            lines.append(f"| {setting} | {recipe} | {np.mean(list(accs.values())):.2f} "
                         f"(n={len(accs)}) | {'; '.join(cells) or '–'} | {weights or '–'} |")
    if not lines:
        return ""
    return "\n".join(["| setting | recipe | test accuracy | vs each source alone, paired | "
                      "mean lambda by source, first -> last chunk |",
                      "| --- | --- | --- | --- | --- |", *lines])


def _source_pair_weights(results: list[dict[str, Any]], setting: str, recipe: str) -> str:
    """"name first -> last" per source: its pairs' mean lambda, averaged over seeds."""
    runs = [r for r in results if r["setting"] == setting and row_name(r) == recipe
            and r.get("lambda_by_chunk")]
    if not runs:
        return ""
    pairs = [detail["pair"][0] for detail in runs[0]["pairs_detail"]]
    lambdas = np.array([r["lambda_by_chunk"] for r in runs], dtype=float)  # seeds, chunks, pairs
    cells = []
    for name in dict.fromkeys(pair.split("/")[0] for pair in pairs):
        mine = [i for i, pair in enumerate(pairs) if pair.split("/")[0] == name]
        mean = lambdas[:, :, mine].mean(axis=(0, 2))
        cells.append(f"{name} {mean[0]:.2f} -> {mean[-1]:.2f}")
    return "; ".join(cells)


def evidence(results: list[dict[str, Any]]) -> str:
    """Per L2T run: meta_ce first/last chunk, lambda range, entropy deficit, |d phi|."""
    lines = ["| setting | recipe | meta lr | seed | meta_ce first -> last | ce first -> last |"
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
            f"| {r['setting']} | {recipe_of(r)} | {r['meta_learning_rate']:g}"
            f"{' (Keras Adam)' if recorded_meta_optimizer(r) == 'keras_adam' else ''} | "
            f"{r['seed']} | "
            f"{r['meta_ce_by_chunk'][0]:.3f} -> {r['meta_ce_by_chunk'][-1]:.3f} | "
            f"{r['ce_by_chunk'][0]:.3f} -> {r['ce_by_chunk'][-1]:.3f} | {lam} | "
            f"{max(deficits):.2e} | {max(r['phi_change'].values()):.3f} |"
        )
    return "\n".join(lines)


def parse_iteration_seconds(text: str) -> dict[str, float]:
    """"scratch=0.01,k1T2=0.08,..." (step_time.py's mean seconds per iteration) -> dict."""
    seconds = {}
    for item in filter(None, text.split(",")):
        name, _, value = item.partition("=")
        seconds[name.strip()] = float(value)
    return seconds


def run_seconds(result: dict[str, Any], iteration_seconds: dict[str, float]) -> float:
    """A run's training time: steps x the measured iteration time of its kind ("k4T2" for
    a meta-learned method, else the method's name) when `iteration_seconds` has it, else
    the run's own wall time."""
    kind = (f"k{result.get('meta_every', 1)}T{result.get('lookahead_steps', 2)}"
            if result["method"] in META_METHODS else result["method"])
    if kind in iteration_seconds:
        return result["steps"] * iteration_seconds[kind]
    return result["train_seconds"]


def _cost_rows(results: list[dict[str, Any]], setting: str) -> dict[tuple, dict[int, dict]]:
    """The runs of `setting` by (row name, steps), then by seed."""
    rows: dict[tuple, dict[int, dict]] = {}
    for r in results:
        if r["setting"] == setting:
            rows.setdefault((row_name(r), r["steps"]), {})[r["seed"]] = r
    return rows


def accuracy_and_time(results: list[dict[str, Any]], settings: list[str],
                      reference: tuple[str, int], iteration_seconds: dict[str, float]) -> str:
    """Every (row, steps) of `settings`, whatever its step budget: accuracy, the paired
    difference to `reference` (row name, steps) and the mean training seconds per run,
    marking the rows on the Pareto front (no other row both faster and more accurate).
    Seconds: see `run_seconds`."""
    lines = ["| setting | row | steps | runs | test accuracy (mean ± std) | vs "
             f"{reference[0]} at {reference[1]} steps, paired (t, wins) | train seconds per "
             "run (mean) | Pareto front |", "| --- | --- | --- | --- | --- | --- | --- | --- |"]
    for setting in settings:
        rows = _cost_rows(results, setting)
        means = {key: (np.mean([run_seconds(r, iteration_seconds) for r in runs.values()]),
                       100 * np.mean([r["test_accuracy"] for r in runs.values()]))
                 for key, runs in rows.items()}
        base = {seed: 100 * r["test_accuracy"] for seed, r in rows.get(reference, {}).items()}
        for key in sorted(rows, key=lambda k: means[k][0]):
            accs = {seed: 100 * r["test_accuracy"] for seed, r in rows[key].items()}
            values = np.array(list(accs.values()))
            diffs, t = _paired(accs, base) if key != reference else (np.array([]), 0.0)
            versus = (f"{diffs.mean():+.2f} ± {_std(diffs):.2f} ({t:+.1f}, "
                      f"{int(np.sum(diffs > 0))}/{len(diffs)})" if len(diffs) else "–")
            front = not any(other[0] <= means[key][0] and other[1] > means[key][1]
                            for k, other in means.items() if k != key)
            lines.append(f"| {setting} | {key[0]} | {key[1]} | {len(values)} | "
                         f"{values.mean():.2f} ± {_std(values):.2f} | {versus} | "
                         f"{means[key][0]:.0f} | {'yes' if front else ''} |")
    return "\n".join(lines)


def plot_accuracy_time(results: list[dict[str, Any]], settings: list[str], path: str,
                       iteration_seconds: dict[str, float], reference_steps: int) -> None:
    """One panel per setting: mean test accuracy (± its standard error over the seeds)
    against the mean training seconds per run, one point per (row, steps), one colour per
    row; circles at `reference_steps`, squares at other budgets, each labelled with its
    steps; the Pareto front joined by a line."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(1, len(settings), figsize=(6.5 * len(settings), 4.8),
                                squeeze=False)
    for axis, setting in zip(axes[0], settings):
        points = []
        for (name, steps), runs in _cost_rows(results, setting).items():
            accs = np.array([100 * r["test_accuracy"] for r in runs.values()])
            seconds = np.mean([run_seconds(r, iteration_seconds) for r in runs.values()])
            error = _std(accs) / math.sqrt(len(accs)) if len(accs) > 1 else 0.0
            points.append((seconds, accs.mean(), error, name, steps))
        points.sort()
        names = dict.fromkeys(p[3] for p in points)  # rows in order of their fastest run
        colour_of = {name: plt.get_cmap("tab10")(i % 10) for i, name in enumerate(names)}
        for seconds, accuracy, error, name, steps in points:
            axis.errorbar(seconds, accuracy, yerr=error, color=colour_of[name], capsize=2,
                          markersize=5, fmt="o" if steps == reference_steps else "s")
            axis.annotate(str(steps), (seconds, accuracy), textcoords="offset points",
                          xytext=(4, -9), fontsize=6, color=colour_of[name])
        for name, colour in colour_of.items():
            axis.plot([], [], "o", color=colour, label=name)
        front, best = [], -np.inf
        for seconds, accuracy, *_ in points:
            if accuracy > best:
                front.append((seconds, accuracy))
                best = accuracy
        axis.plot(*zip(*front), color="grey", linewidth=0.8, zorder=0)
        axis.set_xlabel("training seconds per run (mean)")
        axis.legend(fontsize=6, loc="lower right")
        axis.set_title(f"{setting}: accuracy against training time (circles: "
                       f"{reference_steps} steps; squares: other budgets, steps beside)",
                       fontsize=8)
    axes[0][0].set_ylabel("test accuracy % (mean ± s.e.)")
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    print(f"Accuracy against training time: {path}")


def plot_pair_weights(results: list[dict[str, Any]], setting: str, path: str) -> None:
    """One panel per L2T-ww row of `setting`: each pair's lambda (batch mean, averaged
    over a logging chunk) against the training step, mean over the seeds."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows: dict[str, list[dict[str, Any]]] = {}
    for r in results:
        if r["setting"] == setting and r.get("lambda_by_chunk") and all(
                lam is not None for row in r["lambda_by_chunk"] for lam in row):
            name = recipe_of(r) + (f" (meta lr {r['meta_learning_rate']:g})"
                                   if r["meta_learning_rate"] != 1e-4 else "")
            rows.setdefault(name, []).append(r)
    if not rows:
        print(f"No run of {setting} has lambda_by_chunk: no picture.")
        return
    figure, axes = plt.subplots(1, len(rows), figsize=(4.5 * len(rows), 3.6), sharey=True,
                                squeeze=False)
    for axis, (name, runs) in zip(axes[0], sorted(rows.items())):
        lambdas = np.array([r["lambda_by_chunk"] for r in runs], dtype=float)
        steps = np.linspace(0, runs[0]["steps"], lambdas.shape[1] + 1)[1:]
        # With several sources ("name/layer"), one colour per source.
        sources = list(dict.fromkeys(d["pair"][0].split("/")[0]
                                     for d in runs[0]["pairs_detail"]))
        several = all("/" in d["pair"][0] for d in runs[0]["pairs_detail"])
        for i, pair in enumerate(runs[0]["pairs_detail"]):
            colour = (dict(color=f"C{sources.index(pair['pair'][0].split('/')[0])}")
                      if several else {})
            axis.plot(steps, lambdas[:, :, i].mean(axis=0), label=" -> ".join(pair["pair"]),
                      linewidth=1.0, **colour)
        axis.set_title(f"{setting}: {name}, {len(runs)} seeds", fontsize=9)
        axis.set_xlabel("step")
        axis.axhline(0.0, color="grey", linewidth=0.5)
    axes[0][0].set_ylabel("pair weight lambda (mean)")
    axes[0][-1].legend(fontsize=6, loc="upper left", bbox_to_anchor=(1.0, 1.0))
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    print(f"Pair weights over training: {path}")


def load_runs(path: str) -> list[dict[str, Any]]:
    """The runs stored in results.json (none when it does not exist yet)."""
    if not os.path.exists(path):
        return []
    with open(path) as f:
        return json.load(f)["runs"]


def save_run(path: str, command: str, result: dict[str, Any]) -> list[dict[str, Any]]:
    """Adds one run to results.json and returns all its runs.

    Re-reads the file under an exclusive lock, so calls running at the same time on one
    `--work_dir` keep each other's runs (each used to write back the list it had read
    at its start).
    """
    with open(path + ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        runs = load_runs(path) + [result]
        with open(path + ".tmp", "w") as f:
            json.dump({"command": command, "runs": runs}, f, indent=1)
        os.replace(path + ".tmp", path)
    return runs


def main(argv: list[str]) -> None:
    args = parse_args(argv)
    print("Command: python " + " ".join([sys.argv[0], *argv]), flush=True)
    os.makedirs(args.work_dir, exist_ok=True)
    results_path = os.path.join(args.work_dir, "results.json")
    results = load_runs(results_path)
    done = {stored_key(r) for r in results}
    seeds = [int(s) for s in args.seeds.split(",")]
    settings = args.settings.split(",")
    methods = args.methods.split(",")
    unknown = [s for s in settings + args.diagnostic_settings.split(",") if s not in SETTINGS]
    if unknown:
        raise SystemExit(f"Unknown settings {unknown}; the settings are {', '.join(SETTINGS)}.")
    check_recipes(methods)
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
    for setting, name, seed, meta_lr in jobs:
        chunk = max(1, args.steps // args.chunks)
        recipe = RECIPES[name]
        key = run_key(setting, name, seed, meta_lr, chunk * math.ceil(args.steps / chunk),
                      args.augmentation, args.beta,
                      meta_optimizer_of(recipe.method, args.meta_optimizer),
                      args.meta_fraction if recipe.meta_data == CARVE else None,
                      args.dtype_policy, meta_every_of(recipe, args),
                      lookahead_steps_of(recipe, args))
        if key in done:
            continue
        source_name = SETTINGS[setting][0]
        if source_name not in sources:
            sources[source_name] = cached_source(args, source_name)
        result = run_one(args, setting, name, seed, sources[source_name][0], meta_lr)
        result["source_test_accuracy"] = sources[source_name][1]
        results = save_run(results_path, "python " + " ".join([sys.argv[0], *argv]), result)
        print(f"[{time.time() - start:6.0f} s] {setting} {name} seed {seed} "
              f"meta lr {meta_lr:g}: test {100 * result['test_accuracy']:.2f}% "
              f"({result['train_seconds']:.0f} s)", flush=True)
    print(f"\nWall time of this call: {time.time() - start:.0f} s "
          f"(results: {results_path})\n", flush=True)
    mine = [r for r in results if r["steps"] == key[4] and r["augmentation"] == args.augmentation
            and r["beta"] == args.beta] if jobs else results
    print(summarise(mine))
    print()
    comparison = several_sources(mine)
    if comparison:
        print(comparison)
        print()
    print(evidence(mine))
    if args.plot_pair_weights:
        plot_pair_weights(mine, settings[0], args.plot_pair_weights)
    grid = [r for r in results if recipe_of(r) in methods]  # every k, T and step budget
    if args.accuracy_and_time:
        print()
        print(accuracy_and_time(grid, settings, ("l2t_ww", key[4] if jobs else args.steps),
                                parse_iteration_seconds(args.iteration_seconds)))
    if args.plot_accuracy_time:
        plot_accuracy_time(grid, settings, args.plot_accuracy_time,
                           parse_iteration_seconds(args.iteration_seconds),
                           key[4] if jobs else args.steps)


if __name__ == "__main__":
    main(sys.argv[1:])
