"""Image-folder datasets: one sub-folder per class, as users keep their own data.

Layout (class names are the sub-folder names, sorted; images may sit deeper inside a
class folder, e.g. Tiny ImageNet's ``train/<wnid>/images/``)::

    root/train/<class>/<image>.jpg      the official train split (validation is carved from it)
    root/test/<class>/<image>.jpg       the official test split (optional)

A ``root`` without a ``train`` folder is read as the class folders of a train split with
no test split. Tiny ImageNet's official ``val/`` (``val/images/*.JPEG`` and
``val/val_annotations.txt``) is read as its test split, see `tiny_imagenet_source`.
Accepted files: .jpg .jpeg .png .bmp .gif (any case); other files are ignored.
"""

from __future__ import annotations

import os
from collections.abc import Sequence

import numpy as np
import tensorflow as tf

from keras_l2t.data import pipeline
from keras_l2t.data.source import Source

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".gif")
_MAGIC = (b"\xff\xd8\xff", b"\x89PNG\r\n\x1a\n", b"GIF87a", b"GIF89a", b"BM")


def check_image_file(path: str) -> None:
    """Raises ValueError naming ``path`` if it cannot be read or is not JPEG/PNG/GIF/BMP."""
    try:
        with open(path, "rb") as f:
            head = f.read(8)
    except OSError as e:
        raise ValueError(f"Unreadable image file {path}: {e}") from e
    if not any(head.startswith(m) for m in _MAGIC):
        what = "empty" if not head else "not a JPEG, PNG, GIF or BMP image"
        raise ValueError(f"Unreadable image file {path}: {what}. Remove or replace it.")


def _images_under(directory: str, check_files: bool) -> list[str]:
    found = []
    visited = set()  # real paths: a symlink back up the tree is read once, not forever
    for dirpath, dirnames, filenames in os.walk(directory, followlinks=True):
        visited.add(os.path.realpath(dirpath))
        dirnames[:] = sorted(
            d for d in dirnames
            if not d.startswith(".")
            and os.path.realpath(os.path.join(dirpath, d)) not in visited
        )
        for name in sorted(filenames):
            if name.startswith(".") or not name.lower().endswith(IMAGE_EXTENSIONS):
                continue
            path = os.path.join(dirpath, name)
            if check_files:
                check_image_file(path)
            found.append(path)
    return found


def list_image_folder(
    directory: str,
    class_names: Sequence[str] | None = None,
    *,
    check_files: bool = True,
) -> tuple[list[str], np.ndarray, tuple[str, ...]]:
    """Lists the images of a class-per-sub-folder directory, sorted by path.

    Args:
        directory: folder holding one sub-folder per class.
        class_names: the class list to label with (e.g. the train split's, when listing
            a test split); None: the sorted sub-folder names, at least two.
        check_files: read the first bytes of every image and fail on an unreadable one.

    Returns:
        (paths, int64 labels, class names).

    Example:
        >>> import os, tempfile
        >>> root = tempfile.mkdtemp()
        >>> for name in ("bird", "dog"):
        ...     os.makedirs(os.path.join(root, name))
        ...     png = tf.io.encode_png(np.zeros((8, 8, 3), np.uint8))
        ...     tf.io.write_file(os.path.join(root, name, "0.png"), png)
        >>> paths, labels, names = list_image_folder(root)
        >>> [os.path.relpath(p, root) for p in paths], labels.tolist(), names
        (['bird/0.png', 'dog/0.png'], [0, 1], ('bird', 'dog'))
    """
    if not os.path.isdir(directory):
        raise FileNotFoundError(f"Image folder {directory} does not exist (or is not a folder).")
    folders = sorted(
        d
        for d in os.listdir(directory)
        if not d.startswith(".") and os.path.isdir(os.path.join(directory, d))
    )
    if not folders:
        raise ValueError(
            f"Image folder {directory} has no class sub-folders: put each class's images in "
            f"{directory}/<class name>/."
        )
    if class_names is None:
        if len(folders) < 2:
            raise ValueError(
                f"Image folder {directory} has a single class ({folders[0]!r}); "
                "classification needs at least two class sub-folders."
            )
        class_names = tuple(folders)
    else:
        class_names = tuple(class_names)
        unknown = sorted(set(folders) - set(class_names))
        if unknown:
            raise ValueError(
                f"Image folder {directory} has classes missing from the train split: {unknown}."
            )
    paths: list[str] = []
    labels: list[int] = []
    for folder in folders:
        found = _images_under(os.path.join(directory, folder), check_files)
        if not found:
            raise ValueError(
                f"Class folder {os.path.join(directory, folder)} has no image "
                f"({', '.join(IMAGE_EXTENSIONS)})."
            )
        paths += found
        labels += [class_names.index(folder)] * len(found)
    return paths, np.asarray(labels, dtype=np.int64), class_names


def find_unreadable_images(directory: str) -> list[str]:
    """Decodes every image under `directory` and returns those that fail.

    Listing checks only each file's first bytes; a file damaged further in (a truncated
    JPEG) fails when training decodes it. This finds such files (slow: it decodes all).

    Args:
        directory: a dataset folder (any depth of sub-folders).

    Returns:
        The paths that TensorFlow cannot decode, sorted.

    Example:
        >>> import os, tempfile
        >>> root = tempfile.mkdtemp()
        >>> for name in ("bird", "dog"):
        ...     os.makedirs(os.path.join(root, name))
        ...     png = tf.io.encode_png(np.zeros((8, 8, 3), np.uint8))
        ...     tf.io.write_file(os.path.join(root, name, "0.png"), png)
        >>> with open(os.path.join(root, "dog", "1.jpg"), "wb") as f:
        ...     _ = f.write(b"\\xff\\xd8\\xff truncated")  # a JPEG's first bytes, then nothing
        >>> [os.path.relpath(p, root) for p in find_unreadable_images(root)]
        ['dog/1.jpg']
    """
    bad = []
    for path in _images_under(directory, check_files=False):
        try:
            tf.io.decode_image(tf.io.read_file(path), channels=3, expand_animations=False)
        except (tf.errors.InvalidArgumentError, tf.errors.DataLossError):
            bad.append(path)
    return bad


def read_tiny_imagenet_val(
    val_dir: str, class_names: Sequence[str], *, check_files: bool = True
) -> tuple[list[str], np.ndarray]:
    """Reads Tiny ImageNet's official ``val/`` (``images/`` + ``val_annotations.txt``).

    Args:
        val_dir: the ``tiny-imagenet-200/val`` folder.
        class_names: the wnids of the train split, indexed by label.
        check_files: check every image file as `list_image_folder` does.

    Returns:
        (paths sorted, int64 labels).
    """
    annotations = os.path.join(val_dir, "val_annotations.txt")
    label_of = {name: i for i, name in enumerate(class_names)}
    rows = []
    with open(annotations) as f:
        for line_no, line in enumerate(f, 1):
            fields = line.split()
            if not fields:
                continue
            if len(fields) < 2 or fields[1] not in label_of:
                raise ValueError(
                    f"{annotations}:{line_no}: expected '<file> <wnid> ...' with a wnid of "
                    f"the train split, got {line.strip()!r}."
                )
            path = os.path.join(val_dir, "images", fields[0])
            if check_files:
                if not os.path.exists(path):
                    raise FileNotFoundError(f"{annotations}:{line_no} names missing file {path}.")
                check_image_file(path)
            rows.append((path, label_of[fields[1]]))
    if not rows:
        raise ValueError(f"{annotations} lists no image.")
    rows.sort()
    return [p for p, _ in rows], np.asarray([c for _, c in rows], dtype=np.int64)


SPLIT_NAMES = ("train", "training", "test", "testing", "val", "valid", "validation")


def _refuse_split_like_classes(root: str, train_dir: str, test_dir: str) -> None:
    """Raises when a folder without `train_dir` has sub-folders named like splits
    (``Train/``, ``Test/``...), which would otherwise be read as classes."""
    split_like = sorted(
        d for d in os.listdir(root)
        if d.lower() in SPLIT_NAMES and os.path.isdir(os.path.join(root, d))
    )
    if split_like:
        raise ValueError(
            f"Image folder {root} has no '{train_dir}/' folder but sub-folders named like "
            f"splits: {split_like}. Rename them '{train_dir}/' and '{test_dir}/' (lower "
            "case), or pass the folder that holds the class folders."
        )


class ImageFolderSource(Source):
    """A dataset of image files, one sub-folder per class (see the module docstring).

    Args:
        root: the dataset folder.
        train_dir: sub-folder of the train split; None reads ``root`` itself, with no
            test split, when ``root/train`` is absent.
        test_dir: sub-folder of the test split (absent: no test split).
        tiny_imagenet_val: read the test split as Tiny ImageNet's ``val/`` when it has a
            ``val_annotations.txt``.
        check_files: check every image's first bytes while listing.

    Example (class folders without ``train/``: a train split only):
        >>> import os, tempfile
        >>> root = tempfile.mkdtemp()
        >>> for name in ("bird", "dog"):
        ...     os.makedirs(os.path.join(root, name))
        ...     png = tf.io.encode_png(np.zeros((8, 8, 3), np.uint8))
        ...     tf.io.write_file(os.path.join(root, name, "0.png"), png)
        >>> source = ImageFolderSource(root)
        >>> keys, labels = source.index("train")
        >>> source.class_names, labels.tolist(), source.has_test
        (('bird', 'dog'), [0, 1], False)
    """

    kind = pipeline.PATH

    def __init__(
        self,
        root: str,
        *,
        train_dir: str | None = "train",
        test_dir: str = "test",
        tiny_imagenet_val: bool = False,
        check_files: bool = True,
    ):
        if not os.path.isdir(root):
            raise FileNotFoundError(f"Image folder {root} does not exist (or is not a folder).")
        self.root = root
        train_path = os.path.join(root, train_dir) if train_dir else root
        if train_dir and not os.path.isdir(train_path):
            _refuse_split_like_classes(root, train_dir, test_dir)
            train_path = root  # a bare class-per-folder directory: train split only
        paths, labels, self.class_names = list_image_folder(train_path, check_files=check_files)
        self._splits = {"train": (paths, labels)}
        test_path = os.path.join(root, test_dir)
        if train_path != root and os.path.isdir(test_path):
            official_val = all(
                os.path.exists(os.path.join(test_path, name))
                for name in ("val_annotations.txt", "images")
            )
            if tiny_imagenet_val and official_val:
                test = read_tiny_imagenet_val(test_path, self.class_names, check_files=check_files)
            else:
                test = list_image_folder(test_path, self.class_names, check_files=check_files)[:2]
            self._splits["test"] = test
        self.has_test = "test" in self._splits

    def index(self, split: str) -> tuple[np.ndarray, np.ndarray]:
        paths, labels = self._splits[split]
        keys = np.asarray([os.path.relpath(p, self.root).replace(os.sep, "/") for p in paths])
        return keys, labels

    def dataset(self, split: str, indices: np.ndarray, labels: np.ndarray) -> tf.data.Dataset:
        paths = np.asarray(self._splits[split][0])[indices]
        return tf.data.Dataset.from_tensor_slices(
            (tf.constant(paths, tf.string), tf.constant(labels, tf.int64))
        )
