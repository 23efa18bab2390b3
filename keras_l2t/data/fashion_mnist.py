"""Fashion-MNIST from its idx files, for offline real-data runs and the benchmark.

The files (``train-images-idx3-ubyte``, ``train-labels-idx1-ubyte``,
``t10k-images-idx3-ubyte``, ``t10k-labels-idx1-ubyte``, each optionally ``.gz``) are read
from ``data_dir``, or else from the first of `DEFAULT_DIRS` that has them: the Debian
package ``dataset-fashion-mnist`` installs them in /usr/share/datasets/fashion-mnist, and
``keras.datasets.fashion_mnist.load_data()`` caches them in ~/.keras/datasets/fashion-mnist.
"""

from __future__ import annotations

import gzip
import os

import numpy as np
import tensorflow as tf

from keras_l2t.data import pipeline
from keras_l2t.data.source import Source

DEBIAN_DIR = "/usr/share/datasets/fashion-mnist"
KERAS_CACHE_DIR = os.path.join(os.path.expanduser("~"), ".keras", "datasets", "fashion-mnist")
DEFAULT_DIRS = (DEBIAN_DIR, KERAS_CACHE_DIR)
FILES = {
    "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}
CLASS_NAMES = (
    "T-shirt/top",
    "Trouser",
    "Pullover",
    "Dress",
    "Coat",
    "Sandal",
    "Shirt",
    "Sneaker",
    "Bag",
    "Ankle boot",
)


def read_idx(path: str) -> np.ndarray:
    """Reads an idx file of unsigned bytes (``.gz`` or plain).

    Args:
        path: the file.

    Returns:
        A uint8 array with the file's shape ([N] labels or [N, 28, 28] images).
    """
    opener = gzip.open if path.endswith(".gz") else open
    try:
        with opener(path, "rb") as f:
            data = f.read()
    except (OSError, EOFError) as e:
        raise ValueError(f"Cannot read idx file {path}: {e}") from e
    if len(data) < 4 or data[:2] != b"\x00\x00" or data[2] != 0x08:
        raise ValueError(f"{path} is not an idx file of unsigned bytes (bad magic number).")
    ndim = data[3]
    dims = tuple(int.from_bytes(data[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim))
    offset = 4 + 4 * ndim
    if len(data) - offset != int(np.prod(dims)):
        raise ValueError(
            f"{path}: header says shape {dims}, but it holds {len(data) - offset} bytes of data."
        )
    return np.frombuffer(data, dtype=np.uint8, offset=offset).reshape(dims)


def _find(directory: str, stem: str) -> str | None:
    for name in (stem, stem + ".gz"):
        if os.path.isfile(os.path.join(directory, name)):
            return os.path.join(directory, name)
    return None


def find_fashion_mnist_dir(data_dir: str | None = None) -> str:
    """Returns the folder holding the four idx files, or raises saying how to get them."""
    candidates = [data_dir] if data_dir else list(DEFAULT_DIRS)
    for directory in candidates:
        if all(_find(directory, stem) for pair in FILES.values() for stem in pair):
            return directory
    raise FileNotFoundError(
        f"Fashion-MNIST idx files not found in {' or '.join(candidates)} (looked for "
        f"{', '.join(s for pair in FILES.values() for s in pair)}, optionally .gz). Get them "
        "with `apt-get install dataset-fashion-mnist` (installs them in "
        f"{DEBIAN_DIR}), or pass the folder that holds them as data_dir (train.py: "
        "--data_dir), or pass download=True (train.py: --download) to fetch them with "
        "keras.datasets.fashion_mnist (needs internet)."
    )


def load_fashion_mnist_arrays(
    data_dir: str | None = None, *, download: bool = False
) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Reads Fashion-MNIST into memory.

    Args:
        data_dir: folder of the idx files; None searches `DEFAULT_DIRS`.
        download: when no files are found, download them into Keras' cache.

    Returns:
        ``{"train": (images [60000, 28, 28] uint8, labels [60000] uint8), "test": ...}``.

    Example (four tiny idx files; the real ones hold 60,000 and 10,000 images):
        >>> import os, tempfile
        >>> folder = tempfile.mkdtemp()
        >>> for prefix, n in (("train", 6), ("t10k", 2)):
        ...     for kind, array in (("images-idx3", np.zeros((n, 28, 28), np.uint8)),
        ...                         ("labels-idx1", np.arange(n, dtype=np.uint8))):
        ...         header = bytes([0, 0, 8, array.ndim]) + b"".join(
        ...             d.to_bytes(4, "big") for d in array.shape)
        ...         with open(os.path.join(folder, f"{prefix}-{kind}-ubyte"), "wb") as f:
        ...             _ = f.write(header + array.tobytes())
        >>> arrays = load_fashion_mnist_arrays(folder)
        >>> arrays["train"][0].shape, arrays["test"][1].tolist()
        ((6, 28, 28), [0, 1])
    """
    try:
        directory = find_fashion_mnist_dir(data_dir)
    except FileNotFoundError:
        if not download:
            raise
        import keras

        keras.datasets.fashion_mnist.load_data()
        directory = find_fashion_mnist_dir(KERAS_CACHE_DIR)
    arrays = {}
    for split, (images_stem, labels_stem) in FILES.items():
        images_path, labels_path = _find(directory, images_stem), _find(directory, labels_stem)
        images, labels = read_idx(images_path), read_idx(labels_path)
        if images.ndim != 3 or labels.ndim != 1 or len(images) != len(labels):
            raise ValueError(
                f"{images_path} {images.shape} and {labels_path} {labels.shape} do not match: "
                "expected [N, H, W] images and N labels."
            )
        if labels.size and labels.max() >= len(CLASS_NAMES):
            raise ValueError(f"{labels_path} has label {labels.max()}; Fashion-MNIST has 10.")
        arrays[split] = (images, labels)
    return arrays


class FashionMnistSource(Source):
    """Fashion-MNIST as a `Source` (28x28 grayscale; the pipeline makes it RGB).

    Args:
        data_dir: folder of the idx files; None searches `DEFAULT_DIRS`.
        download: when no files are found, download them into Keras' cache.
    """

    kind = pipeline.ARRAY
    class_names = CLASS_NAMES

    def __init__(self, data_dir: str | None = None, *, download: bool = False):
        self._arrays = load_fashion_mnist_arrays(data_dir, download=download)

    def index(self, split: str) -> tuple[np.ndarray, np.ndarray]:
        images, labels = self._arrays[split]
        return np.char.zfill(np.arange(len(images)).astype(str), 6), labels.astype(np.int64)

    def dataset(self, split: str, indices: np.ndarray, labels: np.ndarray) -> tf.data.Dataset:
        images = self._arrays[split][0][indices][..., np.newaxis]
        return tf.data.Dataset.from_tensor_slices((images, labels.astype(np.int64)))
