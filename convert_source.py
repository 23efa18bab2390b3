"""Converts the authors' Tiny ImageNet ResNet-32 (a PyTorch checkpoint) into a `.keras`
source for `train.py --source=...`.

    python convert_source.py \
        --checkpoint=model_best.pth.tar \
        --output=sources/authors_tiny_imagenet_resnet32.keras

The checkpoint is the one alinlab/L2T-ww publishes
(`logs/tinyimagenet-200-resnet32/0/model_best.pth.tar`, MIT license), or any state dict
of their `resnet32`. Reading it needs PyTorch, and only this command does (a CPU build
is enough: `pip install torch --index-url https://download.pytorch.org/whl/cpu`).

Exit codes: 0 written, 1 PyTorch is not installed, 2 bad input (one `error:` line).
"""

from __future__ import annotations

import os
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from absl import app, flags  # noqa: E402

CHECKPOINT = flags.DEFINE_string("checkpoint", None, "The PyTorch checkpoint (.pth.tar).")
OUTPUT = flags.DEFINE_string(
    "output", "sources/authors_tiny_imagenet_resnet32.keras", "The .keras file to write.")
TORCH_HELP = ("pip install torch --index-url https://download.pytorch.org/whl/cpu "
              "(a CPU build; PyPI's default is a CUDA build of several GB)")


def read_state_dict(path: str) -> dict:
    """The checkpoint's state dict as NumPy arrays (its `state_dict` entry, or itself).

    Raises:
        ImportError: without PyTorch.
        ValueError: for a file that is not a PyTorch checkpoint with a state dict.
    """
    import torch  # only this command needs it

    try:
        checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # torch raises many kinds for a file it cannot read
        raise ValueError(f"cannot read '{path}' as a PyTorch checkpoint ({error})."
                         .replace("\n", " ")) from None
    state = checkpoint.get("state_dict", checkpoint) if isinstance(checkpoint, dict) else None
    if not isinstance(state, dict):
        raise ValueError(f"'{path}' holds no state dict.")
    return {name.removeprefix("module."): value.numpy() for name, value in state.items()
            if hasattr(value, "numpy")}


def main(argv: list[str]) -> int:
    if len(argv) > 1 or not CHECKPOINT.value:
        sys.stderr.write("error: usage: python convert_source.py --checkpoint=PATH "
                         "[--output=PATH.keras]\n")
        return 2
    if not os.path.isfile(CHECKPOINT.value):
        sys.stderr.write(f"error: --checkpoint={CHECKPOINT.value} does not exist.\n")
        return 2
    if not OUTPUT.value.endswith(".keras"):
        sys.stderr.write(f"error: --output={OUTPUT.value} must end in .keras.\n")
        return 2
    try:
        state = read_state_dict(CHECKPOINT.value)
    except ImportError:
        sys.stderr.write(f"error: reading a PyTorch checkpoint needs PyTorch: {TORCH_HELP}.\n")
        return 1
    except ValueError as error:
        sys.stderr.write(f"error: {error}\n")
        return 2
    from keras_l2t.networks import authors_resnet32

    try:
        model = authors_resnet32.convert(state)
    except ValueError as error:
        sys.stderr.write(f"error: --checkpoint={CHECKPOINT.value}: {error}\n")
        return 2
    os.makedirs(os.path.dirname(os.path.abspath(OUTPUT.value)), exist_ok=True)
    model.save(OUTPUT.value)
    print(f"Wrote {OUTPUT.value}: the authors' resnet32 ({model.output.shape[-1]} classes, "
          f"{model.count_params():,} parameters). Use it with --source={OUTPUT.value}.")
    return 0


if __name__ == "__main__":
    app.run(main)
