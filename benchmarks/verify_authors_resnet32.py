"""Checks the converted authors' Tiny ImageNet ResNet-32 against PyTorch, on the same inputs.

    pip install torch --index-url https://download.pytorch.org/whl/cpu   # not a test dependency
    python benchmarks/verify_authors_resnet32.py \
        --checkpoint=../shared/authors-l2t-ww/tinyimagenet-200-resnet32.pth.tar

Their network is rebuilt here in PyTorch from its description (alinlab/L2T-ww
`models/resnet_cifar.py`: CResNet with n = 4 and torchvision's BasicBlock), their
checkpoint loaded into it (strictly, but for their unused `alphas`), and both it and
`convert_source.py`'s conversion run in eval mode, float32, on random images. Prints the
maximum absolute difference of the logits and of the three tapped stage outputs (theirs:
the outputs of `blocks2`, `blocks4`, `blocks6`), with each map's largest magnitude.
"""

from __future__ import annotations

import argparse
import os
import sys

import numpy as np
import torch
from torch import nn

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import convert_source  # noqa: E402
from keras_l2t.networks import authors_resnet32  # noqa: E402


class BasicBlock(nn.Module):
    """torchvision's BasicBlock, with its module names."""

    def __init__(self, inplanes: int, planes: int, stride: int = 1):
        super().__init__()
        self.conv1 = nn.Conv2d(inplanes, planes, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.downsample = None
        if stride != 1 or inplanes != planes:
            self.downsample = nn.Sequential(nn.Conv2d(inplanes, planes, 1, stride, bias=False),
                                            nn.BatchNorm2d(planes))

    def forward(self, x):
        y = torch.relu(self.bn1(self.conv1(x)))
        y = self.bn2(self.conv2(y))
        return torch.relu(y + (x if self.downsample is None else self.downsample(x)))


class TheirResNet32(nn.Module):
    """Their CResNet(n=4) forward: logits and the outputs of blocks2, blocks4, blocks6."""

    def __init__(self, num_classes: int):
        super().__init__()
        self.conv1 = nn.Conv2d(3, 16, 3, padding=1)
        self.bn1 = nn.BatchNorm2d(16)
        self.block1 = BasicBlock(16, 16)
        self.blocks2 = nn.Sequential(*[BasicBlock(16, 16) for _ in range(4)])
        self.block3 = BasicBlock(16, 32, 2)
        self.blocks4 = nn.Sequential(*[BasicBlock(32, 32) for _ in range(4)])
        self.block5 = BasicBlock(32, 64, 2)
        self.blocks6 = nn.Sequential(*[BasicBlock(64, 64) for _ in range(4)])
        self.fc = nn.Linear(64, num_classes)

    def forward(self, x):
        x = torch.relu(self.bn1(self.conv1(x)))
        f1 = self.blocks2(self.block1(x))
        f3 = self.blocks4(self.block3(f1))
        f5 = self.blocks6(self.block5(f3))
        return self.fc(torch.nn.functional.avg_pool2d(f5, 8).flatten(1)), [f1, f3, f5]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--checkpoint", required=True)
    parser.add_argument("--images", type=int, default=16)
    args = parser.parse_args()

    checkpoint = torch.load(args.checkpoint, map_location="cpu", weights_only=True)
    state = {k: v for k, v in checkpoint["state_dict"].items() if not k.startswith("alphas.")}
    theirs = TheirResNet32(state["fc.weight"].shape[0])
    theirs.load_state_dict(state, strict=True)
    theirs.eval()
    ours = authors_resnet32.convert(convert_source.read_state_dict(args.checkpoint))

    x = np.random.default_rng(0).normal(size=(args.images, 32, 32, 3)).astype(np.float32)
    with torch.no_grad():
        logits, maps = theirs(torch.from_numpy(x.transpose(0, 3, 1, 2).copy()))
    import keras

    taps = ["stage1_out", "stage2_out", "stage3_out"]
    extractor = keras.Model(ours.inputs, [ours.get_layer(t).output for t in taps] + [ours.output])
    *our_maps, our_logits = [keras.ops.convert_to_numpy(t) for t in extractor(x, training=False)]
    print(f"python benchmarks/verify_authors_resnet32.py --checkpoint={args.checkpoint} "
          f"(Keras {keras.__version__} on {keras.backend.backend()}, torch {torch.__version__}, "
          f"{args.images} random 32 x 32 images, float32)")
    print(f"checkpoint: epoch {checkpoint.get('epoch')}, their validation top-1 "
          f"{checkpoint.get('best')} %, {len(checkpoint['state_dict'])} entries")
    rows = [("logits", our_logits, logits.numpy())] + [
        (tap, mine, t.numpy().transpose(0, 2, 3, 1))
        for tap, mine, t in zip(taps, our_maps, maps, strict=True)]
    for name, mine, reference in rows:
        print(f"  {name:<11} max |keras - torch| = {np.abs(mine - reference).max():.2e}   "
              f"(max |torch| = {np.abs(reference).max():.2f})")
    agree = np.mean(our_logits.argmax(1) == logits.numpy().argmax(1))
    print(f"  top-1 classes agree on {agree:.0%} of the images")


if __name__ == "__main__":
    main()
