"""torchvision's ResNet-18/34 in NumPy, for tests without PyTorch.

Random state dicts under torchvision's (and timm's) names and PyTorch layouts, their
eval-mode forward pass written from torchvision's description (NCHW, float64, padding
on both sides), and a local timm-format preset (config.json + model.safetensors) as
`hf://timm/resnet34.tv_in1k` holds one.
"""

from __future__ import annotations

import json
import os

import numpy as np
from numpy_forward import batch_norm, conv
from safetensors.numpy import save_file

BLOCKS = {"resnet18": (2, 2, 2, 2), "resnet34": (3, 4, 6, 3)}
WIDTHS = (64, 128, 256, 512)
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def random_state_dict(arch: str, num_classes: int, seed: int = 0) -> dict[str, np.ndarray]:
    """torchvision `resnet18()` / `resnet34()` state dict names and shapes, random values."""
    rng = np.random.default_rng(seed)
    state = {}

    def conv(name, out, inp, k):
        state[f"{name}.weight"] = rng.normal(0, (2 / (k * k * out)) ** 0.5, (out, inp, k, k))

    def bn(name, c):
        state[f"{name}.weight"] = rng.uniform(0.5, 1.5, c)
        state[f"{name}.bias"] = rng.normal(0, 0.1, c)
        state[f"{name}.running_mean"] = rng.normal(0, 0.1, c)
        state[f"{name}.running_var"] = rng.uniform(0.5, 1.5, c)
        state[f"{name}.num_batches_tracked"] = np.array(1000)

    conv("conv1", 64, 3, 7)
    bn("bn1", 64)
    inp = 64
    for stage, (count, width) in enumerate(zip(BLOCKS[arch], WIDTHS), start=1):
        for i in range(count):
            name = f"layer{stage}.{i}"
            conv(f"{name}.conv1", width, inp, 3)
            bn(f"{name}.bn1", width)
            conv(f"{name}.conv2", width, width, 3)
            bn(f"{name}.bn2", width)
            if inp != width:
                conv(f"{name}.downsample.0", width, inp, 1)
                bn(f"{name}.downsample.1", width)
            inp = width
    state["fc.weight"] = rng.normal(0, 0.05, (num_classes, 512))
    state["fc.bias"] = rng.normal(0, 0.1, num_classes)
    return {
        k: np.asarray(v, np.int64 if k.endswith("num_batches_tracked") else np.float32)
        for k, v in state.items()
    }


def _max_pool_3x3_s2_p1(x):
    x = np.pad(x, ((0, 0), (0, 0), (1, 1), (1, 1)), constant_values=-np.inf)
    h = (x.shape[2] - 3) // 2 + 1
    w = (x.shape[3] - 3) // 2 + 1
    return np.max(
        [x[:, :, i : i + 2 * h : 2, j : j + 2 * w : 2] for i in range(3) for j in range(3)],
        axis=0,
    )


def forward(arch: str, state: dict[str, np.ndarray], x_nhwc: np.ndarray):
    """torchvision's eval-mode forward: (logits, [layer1 ... layer4 outputs, NHWC])."""
    x = np.transpose(x_nhwc, (0, 3, 1, 2)).astype(np.float64)
    x = np.maximum(batch_norm(conv(x, state["conv1.weight"], 2, 3), state, "bn1"), 0)
    x = _max_pool_3x3_s2_p1(x)
    stages = []
    for stage, count in enumerate(BLOCKS[arch], start=1):
        for i in range(count):
            name = f"layer{stage}.{i}"
            stride = 2 if stage > 1 and i == 0 else 1
            y = conv(x, state[f"{name}.conv1.weight"], stride, 1)
            y = np.maximum(batch_norm(y, state, f"{name}.bn1"), 0)
            y = batch_norm(conv(y, state[f"{name}.conv2.weight"], 1, 1), state, f"{name}.bn2")
            if f"{name}.downsample.0.weight" in state:
                x = batch_norm(
                    conv(x, state[f"{name}.downsample.0.weight"], stride),
                    state,
                    f"{name}.downsample.1",
                )
            x = np.maximum(y + x, 0)
        stages.append(np.transpose(x, (0, 2, 3, 1)))
    logits = x.mean(axis=(2, 3)) @ state["fc.weight"].T + state["fc.bias"]
    return logits, stages


def write_timm_preset(
    directory: str,
    arch: str,
    state: dict[str, np.ndarray],
    mean=IMAGENET_MEAN,
    std=IMAGENET_STD,
) -> str:
    """Writes `state` as a local timm-format preset (config.json, model.safetensors)."""
    os.makedirs(directory, exist_ok=True)
    num_classes = int(state["fc.weight"].shape[0])
    config = {
        "architecture": arch,
        "num_classes": num_classes,
        "num_features": 512,
        "pretrained_cfg": {
            "tag": "tv_in1k",
            "input_size": [3, 224, 224],
            "interpolation": "bilinear",
            "mean": list(mean),
            "std": list(std),
            "num_classes": num_classes,
            "first_conv": "conv1",
            "classifier": "fc",
        },
    }
    with open(os.path.join(directory, "config.json"), "w") as f:
        json.dump(config, f)
    save_file(state, os.path.join(directory, "model.safetensors"))
    return directory
