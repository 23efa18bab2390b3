"""`ExperimentConfig`: everything one experiment needs, resolved, as plain data.

`train.py` turns its absl flags into this dataclass (one flag per field, same name, the
field's `help` metadata as the flag's help); nothing in `keras_l2t` reads flags. The
resolved config is written to `<work_dir>/config.json` and compared on resume.
"""

from __future__ import annotations

import dataclasses
import json
import os
import re
from typing import Any

from keras_l2t.experiment.errors import ExperimentError
from keras_l2t.pairs import PAIR_PRESETS

MODES = ("transfer", "pretrain_source")
STRATEGIES = ("default", "mirrored", "multi_worker")
PROGRESS = ("auto", "bar", "line")
LR_SCHEDULES = ("cosine", "constant")
BETA_SCHEDULES = ("constant", "cosine")

# Fields that may change between a run and its resume without changing the experiment.
RUNTIME_FIELDS = frozenset(
    {
        "work_dir", "data_dir", "download", "strategy", "cpu_devices", "progress",
        "overwrite", "deterministic", "source_weights",
    }
)


def _field(default: Any, help: str) -> Any:  # noqa: A002 (absl's name)
    return dataclasses.field(default=default, metadata={"help": help})


@dataclasses.dataclass
class ExperimentConfig:
    """One experiment: data, networks, transfer method, optimisation and run settings.

    Every field is a `train.py` flag of the same name (see docs/experiments.md).

    Example:
        >>> from keras_l2t.experiment import ExperimentConfig
        >>> config = ExperimentConfig(dataset="fashion_mnist", target="cnn_8_16",
        ...                           method="scratch", epochs=1, work_dir="run")
        >>> config.validate()
        >>> config.differences(ExperimentConfig(**{**config.to_dict(), "epochs": 2}))
        ['epochs']
    """

    # What to run.
    mode: str = _field("transfer", "transfer: train the target from the source; "
                       "pretrain_source: train --target alone as a future source.")
    # Data.
    dataset: str = _field("", "Required. Dataset name: stanford_dogs, cub200, mit_indoor67, "
                          "stanford40, cifar100, stl10, tiny_imagenet, fashion_mnist, "
                          "image_folder.")
    data_dir: str | None = _field(None, "TFDS data dir, image-folder root or idx folder.")
    download: bool = _field(False, "Allow downloading a missing TFDS dataset.")
    image_size: int | None = _field(None, "Image side; the dataset's default (224 or 32).")
    samples_per_class: int | None = _field(None, "Keep this many training images per class.")
    train_indices: str | None = _field(None, "START:STOP positions of the official train "
                                       "split to use (before the validation carve).")
    val_fraction: float = _field(0.1, "Class-balanced fraction of train held out as val.")
    split_seed: int = _field(0, "Seed of the validation carve and samples_per_class.")
    # Source.
    source: str | None = _field(None, "A keras-hub preset (hub:hf://timm/resnet34.tv_in1k, "
                                "hub:<folder>, ...), an ImageNet source (resnet50_imagenet, "
                                "...), a network name, or a .keras file; or several sources "
                                "by name, name=SOURCE,name=SOURCE (their layers then "
                                "'name/layer'; not in the paper). Unused by "
                                "--method=scratch.")
    source_weights: str | None = _field(None, "Local weights file for --source; with "
                                        "several sources name=PATH,name=PATH.")
    source_num_classes: int | None = _field(None, "Classes of a network-name source's head "
                                            "(of each, with several sources).")
    source_layers: list[str] | None = _field(None, "Source tap layers ('name/layer' with "
                                             "several sources); default the stages (of "
                                             "every source).")
    source_pretrain_epochs: int = _field(0, "Pretrain a network-name --source first, on "
                                         "--source_pretrain_indices of --dataset (cached "
                                         "in <work_dir>/source), with --learning_rate, "
                                         "--momentum and --weight_decay (x0.1 at 50% and "
                                         "75% of its epochs).")
    source_pretrain_indices: str | None = _field(None, "START:STOP train positions for "
                                                 "the source pretraining.")
    source_pretrain_batch_size: int = _field(128, "Batch size of the source pretraining.")
    # Target and transfer.
    target: str = _field("", "Required. Target network name (resnet18, vgg9, "
                         "cnn_16_32_64, ...) or a .keras file.")
    target_layers: list[str] | None = _field(None, "Target tap layers; default its stages.")
    pairs: str = _field("", "all, one_to_one, single, or SRC:TGT,SRC:TGT,... layer pairs; "
                        "empty: the method's default (l2t_ww: all).")
    method: str = _field("l2t_ww", "scratch, lwf, at, lwf_at, fm, l2t_w or l2t_ww "
                         "(keras_l2t.methods.METHODS).")
    beta: float = _field(0.5, "Weight of the feature-matching loss.")
    beta_schedule: str = _field("constant", "constant (the paper) or cosine: --beta and "
                                "--attention_beta decay to 0 over the run with a per-step "
                                "cosine, as the learning rate.")
    lookahead_steps: int = _field(2, "T, lookahead steps on the matching loss.")
    pair_weight_activation: str = _field("relu6", "Output of the 'where' network: relu6, relu, "
                                         "relu_avg or constant.")
    attention_beta: float = _field(1000.0, "Weight of the attention-transfer loss (at, "
                                   "lwf_at).")
    distillation_temperature: float = _field(2.0, "LwF softening temperature (lwf, lwf_at).")
    distillation_weight: float = _field(1.0, "Weight of LwF's distillation loss.")
    meta_objective: str = _field("train_batch", "The batch the meta step's L_org (after the "
                                 "lookahead) is computed on: train_batch, the real step's "
                                 "own batch (the paper), or held_out, a second batch of "
                                 "other images (see --meta_fraction); held_out needs "
                                 "--method=l2t_ww or l2t_w.")
    meta_fraction: float = _field(0.0, "With --meta_objective=held_out: the class-balanced "
                                  "fraction of the training images (after --val_fraction "
                                  "and --samples_per_class) carved out as the meta split, "
                                  "e.g. 0.1; 0: the meta batches are another shuffled "
                                  "stream of the training images themselves.")
    source_normalization: str = _field("none", "none (the paper) or rms: each example's "
                                       "tapped source map divided by its root mean "
                                       "square, so the matching losses and the "
                                       "meta-networks' inputs do not depend on the "
                                       "source's activation scale.")
    pair_weight_normalization: str = _field("none", "none (the paper) or mean: each "
                                            "example's pair weights divided by their mean "
                                            "over the pairs, so 'where' spreads a fixed "
                                            "budget; needs --method=l2t_ww.")
    transfer_gate: str = _field("none", "none (the paper) or aligned: the real step takes "
                                "the transfer terms' gradient only on iterations where it "
                                "is aligned with the classification loss's gradient on the "
                                "meta batch (positive dot product); needs a method with "
                                "transfer terms (not scratch).")
    transfer_gate_momentum: float = _field(0.0, "With --transfer_gate=aligned: m in "
                                           "[0, 1); the gate opens where a moving average "
                                           "of the alignment, a = m * a + (1 - m) * cosine, "
                                           "is positive (over about 1 / (1 - m) "
                                           "iterations); 0: each iteration's own sign.")
    meta_every: int = _field(1, "Run the lookahead and meta step on every k-th iteration "
                             "only (the others: the real step alone); 1, every iteration, is "
                             "the paper. Needs --method=l2t_ww or l2t_w for k > 1.")
    # Optimisation.
    epochs: int = _field(200, "Training epochs.")
    batch_size: int | None = _field(None, "Global batch; the dataset's default (64 / 128).")
    eval_batch_size: int | None = _field(None, "Validation/test batch; default batch_size.")
    learning_rate: float = _field(0.1, "Initial learning rate of the target (CoupledSGD).")
    momentum: float = _field(0.9, "SGD momentum.")
    weight_decay: float = _field(1e-4, "Coupled (torch-style) weight decay.")
    lr_schedule: str = _field("cosine", "cosine (per step, to 0 at the end) or constant.")
    meta_learning_rate: float = _field(1e-4, "TorchAdam learning rate of the meta-networks.")
    meta_weight_decay: float = _field(1e-4, "L2 added to the meta-gradient.")
    seed: int = _field(0, "Seed of initialisation, shuffling and augmentation.")
    deterministic: bool = _field(False, "Enable TensorFlow op determinism (slower).")
    # Run.
    work_dir: str = _field("", "Required. Output directory; rerunning the command resumes "
                           "there.")
    strategy: str = _field("default", "default, mirrored or multi_worker (TF_CONFIG).")
    cpu_devices: int = _field(0, "Split the CPU into N logical devices (for mirrored "
                              "without GPUs).")
    progress: str = _field("auto", "auto (bar when interactive), bar or line.")
    max_steps_per_epoch: int | None = _field(None, "Cap the steps of each epoch (smoke "
                                             "tests).")
    overwrite: bool = _field(False, "Delete an existing experiment in work_dir first.")

    # ---------------------------------------------------------------- checks
    def validate(self) -> None:
        """Checks the fields on their own (no network access; on disk it only looks
        whether --source names an existing path, see `source_specs`).

        The values the library checks itself (the method's networks and arguments,
        `TransferModel`'s) are checked when the run builds them, before it writes.

        Raises:
            ExperimentError: naming the flag and the fix.
        """
        _one_of("mode", self.mode, MODES)
        _one_of("strategy", self.strategy, STRATEGIES)
        _one_of("progress", self.progress, PROGRESS)
        _one_of("lr_schedule", self.lr_schedule, LR_SCHEDULES)
        _one_of("beta_schedule", self.beta_schedule, BETA_SCHEDULES)
        from keras_l2t.transfer_model import (
            META_OBJECTIVES,
            PAIR_WEIGHT_NORMALIZATIONS,
            SOURCE_NORMALIZATIONS,
            TRANSFER_GATES,
        )

        _one_of("source_normalization", self.source_normalization, SOURCE_NORMALIZATIONS)
        _one_of("transfer_gate", self.transfer_gate, TRANSFER_GATES)
        _one_of("pair_weight_normalization", self.pair_weight_normalization,
                PAIR_WEIGHT_NORMALIZATIONS)
        _one_of("meta_objective", self.meta_objective, META_OBJECTIVES)
        missing = [f"--{n}" for n in ("dataset", "target", "work_dir") if not getattr(self, n)]
        if missing:
            raise ExperimentError(
                f"{' and '.join(missing)} {'is' if len(missing) == 1 else 'are'} required "
                "(or a --flagfile that sets them, e.g. --flagfile=configs/demo.flags)."
            )
        from keras_l2t.data import get_spec
        from keras_l2t.methods import get_method

        for flag, check in (("dataset", get_spec), ("method", get_method)):
            try:
                check(getattr(self, flag))
            except ValueError as error:
                raise ExperimentError(f"--{flag}: {error}") from None
        for name in ("epochs", "source_pretrain_batch_size"):
            if getattr(self, name) < 1:
                raise ExperimentError(f"--{name} must be >= 1, got {getattr(self, name)}.")
        for name in ("batch_size", "eval_batch_size", "image_size", "samples_per_class",
                     "max_steps_per_epoch", "source_num_classes"):
            value = getattr(self, name)
            if value is not None and value < 1:
                raise ExperimentError(f"--{name} must be >= 1, got {value}.")
        if not 0.0 <= self.val_fraction < 1.0:
            raise ExperimentError(f"--val_fraction must be in [0, 1), got {self.val_fraction}.")
        if not 0.0 <= self.meta_fraction < 1.0:
            raise ExperimentError(
                f"--meta_fraction must be in [0, 1), got {self.meta_fraction}.")
        self._check_meta_objective()
        if self.learning_rate <= 0:
            raise ExperimentError(f"--learning_rate must be > 0, got {self.learning_rate}.")
        for name in ("seed", "split_seed"):
            if not 0 <= getattr(self, name) < 2**32:
                raise ExperimentError(
                    f"--{name} must be in [0, 2**32), got {getattr(self, name)}."
                )
        for name in ("source_pretrain_epochs", "cpu_devices", "meta_learning_rate", "beta",
                     "weight_decay", "meta_weight_decay", "attention_beta",
                     "distillation_weight"):
            if getattr(self, name) < 0:
                raise ExperimentError(f"--{name} must be >= 0, got {getattr(self, name)}.")
        if not 0.0 <= self.momentum <= 1.0:
            raise ExperimentError(f"--momentum must be in [0, 1], got {self.momentum}.")
        if self.distillation_temperature <= 0:
            raise ExperimentError(
                f"--distillation_temperature must be > 0, got {self.distillation_temperature}."
            )
        parse_range("train_indices", self.train_indices)
        parse_range("source_pretrain_indices", self.source_pretrain_indices)
        self.pair_list()
        if self.mode == "transfer" and self.method != "scratch" and not self.source:
            raise ExperimentError(
                f"--method={self.method} needs --source (a keras-hub preset such as "
                "hub:hf://timm/resnet34.tv_in1k, an ImageNet source such as "
                "resnet50_imagenet, a network name, or a .keras file); or use "
                "--method=scratch."
            )
        self._check_several_sources()
        if self.pairs == "one_to_one" and self.source_layers and self.target_layers and (
            len(self.source_layers) != len(self.target_layers)
        ):
            raise ExperimentError(
                "--pairs=one_to_one needs as many --source_layers as --target_layers, got "
                f"{len(self.source_layers)} and {len(self.target_layers)}."
            )
        if self.strategy == "multi_worker" and (
            self.mode == "pretrain_source" or self.source_pretrain_epochs
        ):
            raise ExperimentError(
                "Source pretraining uses keras fit(), which fails under "
                "MultiWorkerMirroredStrategy in Keras 3: pretrain with --strategy=mirrored "
                "or default, then pass the .keras file as --source."
            )

    def _check_meta_objective(self) -> None:
        """--meta_objective=held_out needs meta-networks; --meta_fraction needs held_out."""
        from keras_l2t.methods import get_method

        if self.meta_objective == "held_out":
            if self.mode != "transfer":
                raise ExperimentError(
                    "--meta_objective=held_out is for --mode=transfer (the meta step of "
                    "l2t_ww and l2t_w); drop it for --mode=pretrain_source."
                )
            if not get_method(self.method).meta_learned:
                raise ExperimentError(
                    f"--meta_objective=held_out needs a method with meta-networks "
                    f"(--method=l2t_ww or l2t_w); --method={self.method} has none, so "
                    "drop --meta_objective (or set it to train_batch)."
                )
        elif self.meta_fraction:
            raise ExperimentError(
                f"--meta_fraction={self.meta_fraction} carves a meta split for "
                "--meta_objective=held_out; add --meta_objective=held_out, or drop "
                "--meta_fraction."
            )

    def _check_several_sources(self) -> None:
        """Several sources: their names and weights read; no pretraining here, no LwF."""
        from keras_l2t.methods import get_method

        if self.mode != "transfer" or self.method == "scratch":
            return  # the source is unused
        specs = self.source_specs()
        if specs is None:
            return
        if self.source_pretrain_epochs:
            raise ExperimentError(
                "--source_pretrain_epochs pretrains a single network-name --source; with "
                "several sources pretrain each with --mode=pretrain_source (the network as "
                "--target, a --work_dir of its own), then pass the files: "
                "--source=NAME=WORK_DIR/source.keras,NAME=..."
            )
        if get_method(self.method).distills_outputs:
            raise ExperimentError(
                f"--method={self.method} distils one source's class outputs; give --source "
                f"a single source, not {len(specs)} ({', '.join(specs)})."
            )
        self.source_weight_files()

    def source_specs(self) -> dict[str, str] | None:
        """--source's sources by name (name=SOURCE,name=SOURCE), or None for one source.

        A value with "=" is read as entries unless it names an existing file or folder,
        so a single path with "=" in it still works.

        Raises:
            ExperimentError: for an entry without a name, a name with '/' or ':', or a
                name given twice.
        """
        if not self.source or "=" not in self.source or os.path.exists(self.source):
            return None
        return _named_entries("source", self.source, "SOURCE")

    def source_weight_files(self) -> dict[str, str]:
        """With several sources, --source_weights by source name (name=PATH entries).

        Raises:
            ExperimentError: for an entry that is not name=PATH or names no source.
        """
        specs = self.source_specs() or {}
        if not self.source_weights:
            return {}
        weights = _named_entries("source_weights", self.source_weights, "PATH")
        unknown = [name for name in weights if name not in specs]
        if unknown:
            raise ExperimentError(
                f"--source_weights names {', '.join(unknown)}, not a source of --source "
                f"({', '.join(specs)}); write name=PATH with one of those names."
            )
        return weights

    def pair_list(self) -> str | list[tuple[str, str]] | None:
        """`pairs` as TransferModel takes it: None (the method's default), a preset name,
        or explicit (source layer, target layer) pairs."""
        if not self.pairs:
            return None
        if self.pairs in PAIR_PRESETS:
            return self.pairs
        pairs = []
        for item in self.pairs.split(","):
            parts = item.strip().split(":")
            if len(parts) != 2 or not all(parts):
                raise ExperimentError(
                    f"--pairs: cannot read {item!r}; use all, one_to_one, single or "
                    "SRC_LAYER:TGT_LAYER,SRC_LAYER:TGT_LAYER,... (SRC_LAYER as "
                    "name/layer with several sources)"
                )
            pairs.append((parts[0], parts[1]))
        return pairs

    # ------------------------------------------------------------ (de)serialise
    def to_dict(self) -> dict[str, Any]:
        """The config as JSON-ready data."""
        return dataclasses.asdict(self)

    def to_json(self) -> str:
        """The config as indented JSON."""
        return json.dumps(self.to_dict(), indent=2, sort_keys=True)

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> ExperimentConfig:
        """The config from `to_dict` output; unknown keys are an error."""
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(values) - names)
        if unknown:
            raise ExperimentError(f"Unknown config keys {unknown}.")
        return cls(**values)

    def differences(self, other: ExperimentConfig) -> list[str]:
        """Names of the fields (other than `RUNTIME_FIELDS`) where the configs differ."""
        mine, theirs = self.to_dict(), other.to_dict()
        return sorted(k for k in mine if k not in RUNTIME_FIELDS and mine[k] != theirs.get(k))


def parse_range(name: str, value: str | None) -> range | None:
    """Parses "START:STOP" into a range (None stays None).

    Example:
        >>> from keras_l2t.experiment.config import parse_range
        >>> parse_range("train_indices", "0:50000")
        range(0, 50000)
    """
    if value is None:
        return None
    match = re.fullmatch(r"\s*(\d+)\s*:\s*(\d+)\s*", value)
    if not match or int(match[1]) >= int(match[2]):
        raise ExperimentError(f"--{name} must be START:STOP with START < STOP, got {value!r}.")
    return range(int(match[1]), int(match[2]))


def _named_entries(flag: str, value: str, what: str) -> dict[str, str]:
    """Reads "name=WHAT,name=WHAT" (several sources) into a dict, checking the names.

    Names may not hold "/" (it splits "name/layer"), ":" (it splits --pairs' SRC:TGT),
    "=" or ",".
    """
    entries: dict[str, str] = {}
    for item in value.split(","):
        name, _, text = (part.strip() for part in item.partition("="))
        if not name or not text or "/" in name or ":" in name:
            raise ExperimentError(
                f"--{flag}: cannot read {item.strip()!r}; several sources are written "
                f"name={what},name={what},... with names that hold no '/', ':', '=' or ','."
            )
        if name in entries:
            raise ExperimentError(
                f"--{flag} names '{name}' twice; give each source its own name.")
        entries[name] = text
    return entries


def _one_of(name: str, value: str, choices: tuple[str, ...]) -> None:
    if value not in choices:
        raise ExperimentError(f"--{name}={value!r} is not one of {', '.join(choices)}.")
