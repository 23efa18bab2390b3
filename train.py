"""Runs one keras-l2t experiment from absl flags.

    python train.py --flagfile=configs/demo.flags
    python train.py --flagfile=configs/dogs.flags --epochs=10 --work_dir=runs/dogs_short
    KERAS_BACKEND=jax python train.py --flagfile=configs/demo.flags  # the same on JAX

Flags after --flagfile override it. Rerunning the same command resumes the run from
its work directory; a finished run is reported, not retrained. Every flag is a field of
`keras_l2t.experiment.ExperimentConfig`; see docs/experiments.md.
"""

from __future__ import annotations

import dataclasses
import os
import sys
import typing

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from absl import app, flags, logging  # noqa: E402

from keras_l2t.experiment import (  # noqa: E402
    ExperimentConfig,
    ExperimentError,
    NonFiniteLoss,
    OutputError,
    run_experiment,
    set_cpu_devices,
)
from keras_l2t.experiment.interrupts import deferred_interrupts  # noqa: E402
from keras_l2t.sources import SourceWeightsUnavailable  # noqa: E402

FLAGS = flags.FLAGS
CONFIG_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "configs")


def define_flags(flag_values: flags.FlagValues = FLAGS) -> None:
    """Defines one absl flag per `ExperimentConfig` field, with its type and help."""
    hints = typing.get_type_hints(ExperimentConfig)
    for field in dataclasses.fields(ExperimentConfig):
        kind, default, help_text = hints[field.name], field.default, field.metadata["help"]
        args = (field.name, default, help_text)
        if kind is bool:
            flags.DEFINE_boolean(*args, flag_values=flag_values)
        elif kind in (int, int | None):
            flags.DEFINE_integer(*args, flag_values=flag_values)
        elif kind is float:
            flags.DEFINE_float(*args, flag_values=flag_values)
        elif kind == list[str] | None:
            flags.DEFINE_list(*args, flag_values=flag_values)
        else:
            flags.DEFINE_string(*args, flag_values=flag_values)


def config_from_flags(flag_values: flags.FlagValues = FLAGS) -> ExperimentConfig:
    """The `ExperimentConfig` of parsed flags."""
    return ExperimentConfig(
        **{f.name: flag_values[f.name].value for f in dataclasses.fields(ExperimentConfig)}
    )


def check_flagfiles(argv: list[str]) -> None:
    """Exits with one clear line when a --flagfile does not exist (before absl parses)."""
    for i, arg in enumerate(argv):
        path = None
        if arg.startswith(("--flagfile=", "-flagfile=")):
            path = arg.split("=", 1)[1]
        elif arg in ("--flagfile", "-flagfile") and i + 1 < len(argv):
            path = argv[i + 1]
        if path is not None and not os.path.isfile(path):
            names = sorted(n for n in os.listdir(CONFIG_DIR) if n.endswith(".flags"))
            sys.stderr.write(
                f"error: flagfile '{path}' not found; the configs are "
                f"{', '.join('configs/' + n for n in names)}.\n"
            )
            sys.exit(2)


def main(argv: list[str], flag_values: flags.FlagValues = FLAGS) -> int:
    """Runs the experiment of the parsed flags; returns the exit code.

    Exit codes (docs/experiments.md lists them with their messages): 0 done (or already
    finished), 1 source weights unavailable, 2 bad input (one `error:` line naming the
    fix), 3 the loss became NaN or infinite, 4 a file of the work directory could not be
    written (full disk, permissions), 130 interrupted (Ctrl-C). Every finished epoch is
    kept in all of them.
    """
    if len(argv) > 1:
        sys.stderr.write(
            f"error: unexpected arguments {argv[1:]}; flags take the form --name=value.\n"
        )
        return 2
    logging.set_verbosity(logging.WARNING)
    try:
        with deferred_interrupts():
            config = config_from_flags(flag_values)
            set_cpu_devices(config.cpu_devices)
            run_experiment(config)
    except NonFiniteLoss as error:
        sys.stderr.write(f"error: {error}\n")
        return 3
    except ExperimentError as error:
        sys.stderr.write(f"error: {error}\n")
        return 2
    except SourceWeightsUnavailable as error:
        sys.stderr.write(f"error: {error}\n")
        return 1
    except OutputError as error:
        sys.stderr.write(f"error: {error}\n")
        return 4
    except KeyboardInterrupt:
        sys.stderr.write("\nInterrupted. Every finished epoch is kept: rerun the same "
                         "command to resume.\n")
        return 130
    return 0


if __name__ == "__main__":
    define_flags()
    check_flagfiles(sys.argv)
    app.run(main)
