"""Fixtures for the data tests: generated image folders and Fashion-MNIST idx files."""

from __future__ import annotations

import os

import numpy as np
import pytest
from data_helpers import flat_image, write_idx, write_image


@pytest.fixture
def image_folder(tmp_path):
    """Factory: builds root/<split>/<class>/<n>.<ext> with flat id-coloured images.

    Returns (root, ids) where ids[(split, class, n)] is the id encoded in that image.
    """

    def make(
        counts: dict[str, dict[str, int]] | None = None,
        *,
        ext: str = "png",
        subdir: str = "",
    ) -> tuple[str, dict]:
        counts = counts or {
            "train": {"cat": 10, "dog": 10, "emu": 10},
            "test": {"cat": 2, "dog": 2, "emu": 2},
        }
        root = str(tmp_path / "images")
        ids, next_id = {}, 0
        for split, classes in counts.items():
            for name, n in classes.items():
                os.makedirs(os.path.join(root, split, name), exist_ok=True)
                for k in range(n):
                    e = ext if ext != "mixed" else ("jpg" if k % 2 else "png")
                    path = os.path.join(root, split, name, subdir, f"{k:03d}.{e}")
                    write_image(path, flat_image(next_id, 36 + 2 * (k % 3), 44))
                    ids[(split, name, k)] = next_id
                    next_id += 1
        return root, ids

    return make


@pytest.fixture
def fashion_dir(tmp_path):
    """Factory: a folder of tiny Fashion-MNIST idx files (train n_train, test n_test).

    Image i of the train split has the flat grey value of its id: ``4 + 8 * (i % 32)``.
    """

    def make(n_train: int = 60, n_test: int = 20, gz: bool = True) -> str:
        directory = tmp_path / "fmnist"
        directory.mkdir(exist_ok=True)
        suffix = ".gz" if gz else ""
        for split, n, offset in (("train", n_train, 0), ("t10k", n_test, 500)):
            values = (8 * ((np.arange(n) + offset) % 32) + 4).astype(np.uint8)
            images = np.broadcast_to(values[:, None, None], (n, 28, 28))
            labels = np.arange(n) % 10
            write_idx(str(directory / f"{split}-images-idx3-ubyte{suffix}"), images)
            write_idx(str(directory / f"{split}-labels-idx1-ubyte{suffix}"), labels)
        return str(directory)

    return make
