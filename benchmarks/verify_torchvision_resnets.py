"""Checks torchvision's ResNet-18/34, loaded through keras-hub, against PyTorch.

    /work/torchvenv/bin/python benchmarks/verify_torchvision_resnets.py   # torch + keras-l2t

Needs PyTorch (not a test dependency) next to keras-l2t, keras-hub and safetensors.
torchvision's `resnet18` / `resnet34` are rebuilt here in PyTorch from their published
description (7x7/2 stem, 3x3/2 max-pool, basic blocks with the stride on the first 3x3
convolution and a 1x1 convolution + BN projection where the shape changes, global
average pooling, a linear classifier; every padding symmetric), with random weights and
BatchNorm statistics (measured on other random images) under torchvision's names. Each
is written as a local timm-format preset (config.json + model.safetensors, as
`hf://timm/resnet34.tv_in1k` holds one), loaded with
`keras_l2t.sources.load_source("hub:<folder>")`, and both run in eval mode, float32, on
the same random 224 x 224 images. Prints the maximum absolute difference of the logits
and of the four tapped stage outputs (torchvision's `layer1` ... `layer4`), with each
map's largest magnitude; then the same for `build_network(arch, 1000)` holding the same
weights (the target builder's architecture). `--float64` repeats the first comparison in
float64, where only the architectures can differ, and prints PyTorch's own float32
rounding (its float32 maps against its float64 ones).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile

import numpy as np
import torch
from safetensors.numpy import save_file
from torch import nn

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

BLOCKS = {"resnet18": (2, 2, 2, 2), "resnet34": (3, 4, 6, 3)}
TAPS = ["stage1_out", "stage2_out", "stage3_out", "stage4_out"]


class Block(nn.Module):
    """A basic block under torchvision's module names (conv1, bn1, conv2, bn2, downsample)."""

    def __init__(self, inplanes: int, planes: int, stride: int):
        super().__init__()
        self.conv1 = nn.Conv2d(inplanes, planes, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.downsample = None
        if stride != 1 or inplanes != planes:
            self.downsample = nn.Sequential(
                nn.Conv2d(inplanes, planes, 1, stride, bias=False), nn.BatchNorm2d(planes)
            )

    def forward(self, x):
        y = torch.relu(self.bn1(self.conv1(x)))
        y = self.bn2(self.conv2(y))
        shortcut = x if self.downsample is None else self.downsample(x)
        return torch.relu(y + shortcut)


class TorchvisionResNet(nn.Module):
    """torchvision's ImageNet ResNet with basic blocks; forward returns (logits, stage maps)."""

    def __init__(self, blocks: tuple[int, ...], num_classes: int = 1000):
        super().__init__()
        self.conv1 = nn.Conv2d(3, 64, 7, 2, 3, bias=False)
        self.bn1 = nn.BatchNorm2d(64)
        self.maxpool = nn.MaxPool2d(3, 2, 1)
        inplanes = 64
        for index, (count, planes) in enumerate(zip(blocks, (64, 128, 256, 512)), start=1):
            stride = 1 if index == 1 else 2
            layers = [Block(inplanes, planes, stride)]
            layers += [Block(planes, planes, 1) for _ in range(count - 1)]
            setattr(self, f"layer{index}", nn.Sequential(*layers))
            inplanes = planes
        self.fc = nn.Linear(512, num_classes)

    def forward(self, x):
        x = self.maxpool(torch.relu(self.bn1(self.conv1(x))))
        maps = []
        for index in range(1, 5):
            x = getattr(self, f"layer{index}")(x)
            maps.append(x)
        return self.fc(torch.flatten(nn.functional.adaptive_avg_pool2d(x, 1), 1)), maps


def random_network(arch: str, seed: int, calibration: np.ndarray) -> TorchvisionResNet:
    """torchvision's initialisation, random BatchNorm scales and shifts, and BatchNorm
    statistics measured on `calibration` images, as a trained network's running statistics
    keep its maps at their usual scale (uncalibrated random statistics let the residual
    sums grow into the thousands, where float32 rounding alone exceeds 1e-4)."""
    torch.manual_seed(seed)
    network = TorchvisionResNet(BLOCKS[arch])
    for module in network.modules():
        if isinstance(module, nn.Conv2d):
            nn.init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")
        elif isinstance(module, nn.BatchNorm2d):
            with torch.no_grad():
                module.weight.uniform_(0.5, 1.5)
                module.bias.normal_(0, 0.1)
            module.reset_running_stats()
            module.momentum = None  # a cumulative average over the calibration batches
    network.train()
    with torch.no_grad():
        for batch in np.split(calibration, 4):
            network(torch.from_numpy(batch.transpose(0, 3, 1, 2).copy()))
    return network.eval()


def write_timm_preset(network: nn.Module, arch: str, directory: str) -> str:
    """The network as timm lays out `resnet34.tv_in1k`: config.json + model.safetensors."""
    os.makedirs(directory, exist_ok=True)
    state = {k: v.detach().numpy().copy() for k, v in network.state_dict().items()}
    save_file(state, os.path.join(directory, "model.safetensors"))
    config = {
        "architecture": arch,
        "num_classes": 1000,
        "num_features": 512,
        "pretrained_cfg": {
            "input_size": [3, 224, 224],
            "interpolation": "bilinear",
            "mean": [0.485, 0.456, 0.406],
            "std": [0.229, 0.224, 0.225],
            "num_classes": 1000,
            "first_conv": "conv1",
            "classifier": "fc",
        },
    }
    with open(os.path.join(directory, "config.json"), "w") as f:
        json.dump(config, f)
    return directory


def _keras_outputs(model, x):
    import keras

    extractor = keras.Model(model.input, [model.get_layer(t).output for t in TAPS] + [model.output])
    *maps, logits = [keras.ops.convert_to_numpy(t) for t in extractor(x, training=False)]
    return logits, maps


def _report(name, ours, theirs):
    logits, maps = ours
    their_logits, their_maps = theirs
    rows = [("logits", logits, their_logits)] + list(zip(TAPS, maps, their_maps))
    print(f"  {name}")
    worst = 0.0
    for tap, mine, reference in rows:
        diff = float(np.abs(mine - reference).max())
        worst = max(worst, diff)
        print(
            f"    {tap:<11} max |keras - torch| = {diff:.2e}   "
            f"(max |torch| = {np.abs(reference).max():.2f})"
        )
    agree = np.mean(logits.argmax(1) == their_logits.argmax(1))
    print(f"    top-1 classes agree on {agree:.0%} of the images")
    return worst


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=16)
    parser.add_argument("--preset_dir", default=None, help="Where to write the presets.")
    parser.add_argument(
        "--float64", action="store_true", help="Also compare in float64 (no float32 rounding)."
    )
    args = parser.parse_args()

    import keras

    from keras_l2t.networks import build_network
    from keras_l2t.sources import load_source

    root = args.preset_dir or tempfile.mkdtemp(prefix="tv_presets_")
    rng = np.random.default_rng(0)
    x = rng.normal(size=(args.images, 224, 224, 3)).astype(np.float32)
    calibration = rng.normal(size=(32, 224, 224, 3)).astype(np.float32)
    print(
        f"python benchmarks/verify_torchvision_resnets.py (Keras {keras.__version__} on "
        f"{keras.backend.backend()}, torch {torch.__version__}, {args.images} random "
        "224 x 224 images, float32)"
    )
    worst = 0.0
    for seed, arch in enumerate(("resnet18", "resnet34")):
        network = random_network(arch, seed, calibration)
        with torch.no_grad():
            logits, maps = network(torch.from_numpy(x.transpose(0, 3, 1, 2).copy()))
        theirs = (logits.numpy(), [m.numpy().transpose(0, 2, 3, 1) for m in maps])
        preset = write_timm_preset(network, arch, os.path.join(root, f"{arch}.tv_in1k"))
        source = load_source(f"hub:{preset}", input_shape=(224, 224, 3))
        print(f"{arch}: {sum(p.numel() for p in network.parameters()):,} parameters (torch)")
        worst = max(
            worst, _report(f"load_source('hub:{preset}')", _keras_outputs(source, x), theirs)
        )
        target = build_network(arch, 1000, exact_batch_norm=False)
        for layer in target.layers:
            if layer.weights:
                layer.set_weights(source.get_layer(layer.name).get_weights())
        worst = max(
            worst,
            _report(
                f"build_network('{arch}', 1000), same weights", _keras_outputs(target, x), theirs
            ),
        )
        if args.float64:  # the same comparison without float32 rounding
            keras.config.set_dtype_policy("float64")
            with torch.no_grad():
                logits, maps = network.double()(torch.from_numpy(x.transpose(0, 3, 1, 2)).double())
            theirs64 = (logits.numpy(), [m.numpy().transpose(0, 2, 3, 1) for m in maps])
            source = load_source(f"hub:{preset}", input_shape=(224, 224, 3))
            _report("the same in float64", _keras_outputs(source, x.astype(np.float64)), theirs64)
            # float32's own rounding: PyTorch float32 against PyTorch float64 (as "keras").
            _report("torch float32 against torch float64 (in the keras column)", theirs, theirs64)
            keras.config.set_dtype_policy("float32")
    print(f"largest difference: {worst:.2e} ({'within' if worst <= 1e-4 else 'above'} 1e-4)")


if __name__ == "__main__":
    main()
