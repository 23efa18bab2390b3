"""PyTorch's convolution and eval-mode BatchNorm in NumPy, NCHW, for the reference
forward passes the converted networks are checked against."""

from __future__ import annotations

import numpy as np


def conv(x, w, stride=1, pad=0, bias=None):
    """`torch.nn.functional.conv2d(x, w, bias, stride, pad)` for NCHW `x`, OIHW `w`."""
    x = np.pad(x, ((0, 0), (0, 0), (pad, pad), (pad, pad)))
    k = w.shape[-1]
    h = (x.shape[2] - k) // stride + 1
    wd = (x.shape[3] - k) // stride + 1
    out = np.zeros((x.shape[0], w.shape[0], h, wd))
    for i in range(k):
        for j in range(k):
            patch = x[:, :, i:i + stride * h:stride, j:j + stride * wd:stride]
            out += np.einsum("nchw,oc->nohw", patch, w[:, :, i, j])
    return out if bias is None else out + bias[None, :, None, None]


def batch_norm(x, state, name):
    """Eval-mode `BatchNorm2d` named `name` in the PyTorch state dict `state` (eps 1e-5)."""
    scale = state[f"{name}.weight"] / np.sqrt(state[f"{name}.running_var"] + 1e-5)
    shift = state[f"{name}.bias"] - state[f"{name}.running_mean"] * scale
    return x * scale[None, :, None, None] + shift[None, :, None, None]
