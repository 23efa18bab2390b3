"""Pictures of what L2T-ww learned: where (pair weights) and what (channel weights).

Figures are drawn off-screen (matplotlib's Agg) and returned as PNG bytes or files.
"""

from __future__ import annotations

import io
import os
from collections.abc import Sequence

import numpy as np


def pair_weight_grid(pairs: Sequence[tuple[str, str]], values: Sequence[float]):
    """Arranges one value per (source layer, target layer) pair in a grid.

    Args:
        pairs: The model's pairs, in order.
        values: One value per pair (e.g. the mean pair weight lambda).

    Returns:
        (source layer names, target layer names, matrix of shape (sources, targets)),
        NaN where a combination is not a pair.

    Example:
        >>> from keras_l2t.pictures import pair_weight_grid
        >>> pair_weight_grid([("s1", "t1"), ("s2", "t1")], [0.5, 2.0])[2].tolist()
        [[0.5], [2.0]]
    """
    sources = list(dict.fromkeys(s for s, _ in pairs))
    targets = list(dict.fromkeys(t for _, t in pairs))
    grid = np.full((len(sources), len(targets)), np.nan)
    for (s, t), value in zip(pairs, values, strict=True):
        grid[sources.index(s), targets.index(t)] = value
    return sources, targets, grid


def plot_pair_weights(pairs, values, title: str = "Pair weights λ (mean over images)"):
    """Heatmap of the pair weights: source layers as rows, target layers as columns."""
    plt = _pyplot()
    sources, targets, grid = pair_weight_grid(pairs, values)
    figure, axes = plt.subplots(
        figsize=(1.4 + 1.3 * len(targets), 1.2 + 0.8 * len(sources)), layout="constrained"
    )
    image = axes.imshow(grid, cmap="viridis", vmin=0.0, vmax=max(np.nanmax(grid), 1e-6))
    axes.set_xticks(range(len(targets)), targets, rotation=30, ha="right")
    axes.set_yticks(range(len(sources)), sources)
    axes.set_xlabel("target layer")
    axes.set_ylabel("source layer")
    for (row, column), value in np.ndenumerate(grid):
        if not np.isnan(value):
            bright = value > 0.6 * np.nanmax(grid)
            axes.text(column, row, f"{value:.2f}", ha="center", va="center",
                      color="black" if bright else "white", fontsize=9)
    figure.colorbar(image, ax=axes, label="λ")
    axes.set_title(title)
    return figure


def plot_pair_weight_history(pairs, history: dict[str, Sequence[float]]):
    """The mean pair weight of every pair over the epochs, one line per pair.

    Args:
        pairs: The model's pairs, in order.
        history: Per-epoch logs with the model's `lambda_<i>` metrics.
    """
    plt = _pyplot()
    keys = sorted(k for k in history if k.startswith("lambda_"))
    figure, axes = plt.subplots(figsize=(7.5, 4.5), layout="constrained")
    colours = plt.get_cmap("tab20")
    for i, key in enumerate(keys):
        source, target = pairs[int(key.split("_")[1])]
        values = np.asarray(history[key], dtype=float)
        axes.plot(np.arange(1, len(values) + 1), values, color=colours(i % 20),
                  label=f"{source} → {target}")
    axes.set_xlabel("epoch")
    axes.xaxis.get_major_locator().set_params(integer=True)
    axes.set_ylabel("mean pair weight λ")
    axes.set_title("Where to transfer: pair weights over training")
    axes.legend(fontsize=7, ncol=2 if len(keys) > 8 else 1, loc="best")
    axes.grid(alpha=0.3)
    return figure


def plot_channel_weights(pairs, channel_weights: Sequence[np.ndarray]):
    """Per pair, the channel weights relative to uniform (C * w; 1 = uniform), averaged
    over images and sorted, with the 10-90% range over images.

    Args:
        pairs: The model's pairs, in order.
        channel_weights: Per pair, a (images, C) array of "what" weights.
    """
    plt = _pyplot()
    count = len(channel_weights)
    columns = min(4, count)
    rows = -(-count // columns)
    figure, grid = plt.subplots(rows, columns, figsize=(3.2 * columns, 2.4 * rows),
                                layout="constrained", squeeze=False)
    for axes, (source, target), weights in zip(grid.flat, pairs, channel_weights):
        relative = np.asarray(weights) * np.shape(weights)[-1]
        order = np.argsort(relative.mean(axis=0))[::-1]
        channels = np.arange(1, relative.shape[-1] + 1)
        low, high = np.percentile(relative[:, order], [10, 90], axis=0)
        axes.fill_between(channels, low, high, alpha=0.3, label="10-90% of images")
        axes.plot(channels, relative.mean(axis=0)[order], lw=1.5, label="mean")
        axes.axhline(1.0, color="black", ls="--", lw=1, label="uniform")
        axes.set_title(f"{source} → {target}", fontsize=9)
        axes.set_xlabel("channel (sorted)", fontsize=8)
        axes.xaxis.get_major_locator().set_params(integer=True)
        axes.tick_params(labelsize=7)
    for axes in list(grid.flat)[:count:columns]:
        axes.set_ylabel("C · w", fontsize=8)
    for axes in list(grid.flat)[count:]:
        axes.axis("off")
    grid.flat[0].legend(fontsize=7)
    figure.suptitle("What to transfer: channel weights per pair (1 = uniform)")
    return figure


def to_png(figure) -> bytes:
    """Renders `figure` to PNG bytes and closes it."""
    plt = _pyplot()
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=110)
    plt.close(figure)
    return buffer.getvalue()


def current_weights(model, images) -> tuple[list[float], list[np.ndarray]]:
    """The mean pair weight and the channel weights of `model` on `images`.

    Returns:
        (mean lambda per pair (empty unless learned), per pair the (images, C) channel
        weights (empty unless learned)).
    """
    source = model._source_outputs(images)
    channel_weights, pair_weights = model._transfer_weights(source)
    lambdas = []
    if model.method.learns_pair_weights:
        lambdas = [float(np.mean(np.asarray(lam))) for lam in pair_weights]
    channels = []
    if model.method.learns_channel_weights:
        channels = [np.asarray(w) for w in channel_weights]
    return lambdas, channels


def write_pictures(model, images, history: dict[str, Sequence[float]],
                   directory: str) -> list[str]:
    """Writes the pictures of a trained L2T-w / L2T-ww model as PNG files.

    Args:
        model: A `TransferModel` whose method learns pair and/or channel weights.
        images: A batch of (preprocessed) images to compute the weights on.
        history: Per-epoch logs with `lambda_<i>` (for the course over epochs).
        directory: Where to write; created if needed.

    Returns:
        The paths written: pair_weights.png, pair_weights_over_epochs.png,
        channel_weights.png, where the method learns them.
    """
    os.makedirs(directory, exist_ok=True)
    lambdas, channels = current_weights(model, images)
    figures = {}
    if lambdas:
        figures["pair_weights.png"] = plot_pair_weights(model.pairs, lambdas)
        if any(k.startswith("lambda_") for k in history):
            figures["pair_weights_over_epochs.png"] = plot_pair_weight_history(
                model.pairs, history
            )
    if channels:
        figures["channel_weights.png"] = plot_channel_weights(model.pairs, channels)
    paths = []
    for name, figure in figures.items():
        path = os.path.join(directory, name)
        with open(path, "wb") as f:
            f.write(to_png(figure))
        paths.append(path)
    return paths


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt
