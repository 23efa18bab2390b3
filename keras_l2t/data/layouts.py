"""Turn the official MIT Indoor 67 and Stanford 40 Actions downloads into image folders.

Both datasets ship one image folder plus split lists; these helpers build the
``DST/train/<class>/`` and ``DST/test/<class>/`` layout that `load_dataset` reads, with
symbolic links (no copy) by default. Rerunning one after moving the download, or with
another `link`, replaces what an earlier run placed.

Example (a miniature of the MIT Indoor 67 download: one category, two images):
    >>> import os, tempfile
    >>> from keras_l2t.data.layouts import arrange_mit_indoor67
    >>> download, data_dir = tempfile.mkdtemp(), tempfile.mkdtemp()
    >>> os.makedirs(os.path.join(download, "Images", "kitchen"))
    >>> for name in ("a.jpg", "b.jpg"):
    ...     open(os.path.join(download, "Images", "kitchen", name), "wb").close()
    >>> for list_name, line in (("TrainImages.txt", "kitchen/a.jpg"),
    ...                         ("TestImages.txt", "kitchen/b.jpg")):
    ...     with open(os.path.join(download, list_name), "w") as f:
    ...         print(line, file=f)
    >>> arrange_mit_indoor67(download, data_dir)
    {'train': 1, 'test': 1}
    >>> os.listdir(os.path.join(data_dir, "test", "kitchen"))
    ['b.jpg']
"""

from __future__ import annotations

import glob
import os
import shutil


def _place(src: str, dst: str, link: bool) -> None:
    if not os.path.isfile(src):
        raise FileNotFoundError(f"The split list names {src}, which does not exist.")
    os.makedirs(os.path.dirname(dst), exist_ok=True)
    target = os.path.abspath(src)
    if link and os.path.islink(dst) and os.readlink(dst) == target:
        return  # placed by an earlier run
    if not link and os.path.isfile(dst) and not os.path.islink(dst):
        return  # copied by an earlier run
    if os.path.lexists(dst):
        os.remove(dst)  # an earlier run's link to a moved download, or the other kind
    if link:
        os.symlink(target, dst)
    else:
        shutil.copy2(src, dst)


def _read_list(path: str) -> list[str]:
    with open(path) as f:
        return [line.strip() for line in f if line.strip()]


def arrange_mit_indoor67(src: str, dst: str, *, link: bool = True) -> dict[str, int]:
    """Builds MIT Indoor 67's train/test image folders from the official download.

    Args:
        src: the extracted download, holding ``Images/<category>/*.jpg`` and the split
            lists ``TrainImages.txt`` and ``TestImages.txt`` (lines ``<category>/<file>``;
            80 train and 20 test images per category).
        dst: the folder to create (pass it as ``data_dir``).
        link: symlink the images (True) or copy them.

    Returns:
        Number of images placed per split.
    """
    src, dst = os.path.expanduser(src), os.path.expanduser(dst)
    counts = {}
    for split, list_name in (("train", "TrainImages.txt"), ("test", "TestImages.txt")):
        list_path = os.path.join(src, list_name)
        if not os.path.isfile(list_path):
            raise FileNotFoundError(
                f"{list_path} not found: src must hold Images/, TrainImages.txt and "
                "TestImages.txt of MIT Indoor 67."
            )
        rows = _read_list(list_path)
        for rel in rows:
            _place(os.path.join(src, "Images", rel), os.path.join(dst, split, rel), link)
        counts[split] = len(rows)
    return counts


def arrange_stanford40(src: str, dst: str, *, link: bool = True) -> dict[str, int]:
    """Builds Stanford 40 Actions' train/test image folders from the official download.

    Args:
        src: the extracted download, holding ``JPEGImages/<action>_<nnn>.jpg`` and
            ``ImageSplits/<action>_train.txt`` / ``<action>_test.txt`` (one file name a
            line; 100 train images per action, the rest test).
        dst: the folder to create (pass it as ``data_dir``).
        link: symlink the images (True) or copy them.

    Returns:
        Number of images placed per split.
    """
    src, dst = os.path.expanduser(src), os.path.expanduser(dst)
    counts = {}
    for split in ("train", "test"):
        lists = sorted(glob.glob(os.path.join(src, "ImageSplits", f"*_{split}.txt")))
        if not lists:
            raise FileNotFoundError(
                f"No {os.path.join(src, 'ImageSplits', f'<action>_{split}.txt')} found: src "
                "must hold JPEGImages/ and ImageSplits/ of Stanford 40 Actions."
            )
        counts[split] = 0
        for list_path in lists:
            action = os.path.basename(list_path)[: -len(f"_{split}.txt")]
            for name in _read_list(list_path):
                _place(
                    os.path.join(src, "JPEGImages", name),
                    os.path.join(dst, split, action, name),
                    link,
                )
                counts[split] += 1
    return counts
