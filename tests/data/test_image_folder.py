"""Image-folder datasets: layouts, Tiny ImageNet's val folder, and bad folders."""

import os

import numpy as np
import pytest
from data_helpers import flat_image, write_image

from keras_l2t.data import ImageFolderSource, list_image_folder, load_dataset


def test_lists_classes_sorted_and_labels(image_folder):
    root, _ = image_folder({"train": {"b": 2, "a": 3}})
    paths, labels, names = list_image_folder(os.path.join(root, "train"))
    assert names == ("a", "b")
    assert labels.tolist() == [0, 0, 0, 1, 1]
    assert paths == sorted(paths)


def test_train_and_test_layout(image_folder):
    root, _ = image_folder()
    source = ImageFolderSource(root)
    assert source.class_names == ("cat", "dog", "emu") and source.has_test
    keys, labels = source.index("train")
    assert len(keys) == 30 and keys[0] == "train/cat/000.png"
    assert np.bincount(source.index("test")[1]).tolist() == [2, 2, 2]


def test_bare_class_folders_have_no_test_split(image_folder):
    root, _ = image_folder({"train": {"a": 3, "b": 3}})
    source = ImageFolderSource(os.path.join(root, "train"))
    assert not source.has_test and len(source.index("train")[0]) == 6
    data = load_dataset("image_folder", data_dir=os.path.join(root, "train"), image_size=16)
    assert data.test is None and data.num_test == 0


def test_images_nested_inside_class_folders_and_other_files_ignored(image_folder):
    root, _ = image_folder({"train": {"n01": 2, "n02": 2}}, subdir="images")
    with open(os.path.join(root, "train", "n01", "n01_boxes.txt"), "w") as f:
        f.write("not an image")
    paths, labels, names = list_image_folder(os.path.join(root, "train"))
    assert names == ("n01", "n02") and labels.tolist() == [0, 0, 1, 1]
    assert all(os.sep + "images" + os.sep in p for p in paths)


def test_tiny_imagenet_val_annotations_become_the_test_split(tmp_path):
    root = tmp_path / "tiny-imagenet-200"
    for wnid in ("n01443537", "n01629819"):
        for k in range(3):
            write_image(str(root / "train" / wnid / "images" / f"{wnid}_{k}.JPEG"), flat_image(k))
    rows = [("val_0.JPEG", "n01629819"), ("val_1.JPEG", "n01443537"), ("val_2.JPEG", "n01629819")]
    for name, _ in rows:
        write_image(str(root / "val" / "images" / name), flat_image(7))
    (root / "val" / "val_annotations.txt").write_text(
        "".join(f"{n}\t{w}\t0\t0\t63\t63\n" for n, w in rows)
    )
    (root / "test" / "images").mkdir(parents=True)  # unlabeled official test: ignored
    data = load_dataset("tiny_imagenet", data_dir=str(root), batch_size=8)
    assert data.class_names == ("n01443537", "n01629819")
    assert data.num_test == 3 and data.image_size == 32
    x, y = next(iter(data.test))
    assert x.shape == (3, 32, 32, 3) and sorted(y.numpy().tolist()) == [0, 1, 1]


def test_tiny_imagenet_annotation_with_unknown_wnid(tmp_path):
    root = tmp_path / "tiny"
    for wnid in ("n1", "n2"):
        write_image(str(root / "train" / wnid / "images" / "a.JPEG"), flat_image(0))
    write_image(str(root / "val" / "images" / "v.JPEG"), flat_image(0))
    (root / "val" / "val_annotations.txt").write_text("v.JPEG\tn9\t0\t0\t1\t1\n")
    with pytest.raises(ValueError, match=r"val_annotations.txt:1"):
        load_dataset("tiny_imagenet", data_dir=str(root))


def test_missing_folder_names_the_path(tmp_path):
    missing = str(tmp_path / "nope")
    with pytest.raises(FileNotFoundError, match=missing):
        load_dataset("mit_indoor67", data_dir=missing)


def test_empty_folder_names_the_path(tmp_path):
    with pytest.raises(ValueError, match=f"{tmp_path}.*no class sub-folders"):
        load_dataset("stanford40", data_dir=str(tmp_path))


def test_single_class_names_the_path(image_folder):
    root, _ = image_folder({"train": {"only": 3}})
    with pytest.raises(ValueError, match=f"{root}.*single class"):
        ImageFolderSource(root)


def test_class_folder_without_images_names_it(image_folder):
    root, _ = image_folder({"train": {"a": 2, "b": 2}})
    os.makedirs(os.path.join(root, "train", "c"))
    with pytest.raises(ValueError, match=os.path.join(root, "train", "c") + " has no image"):
        ImageFolderSource(root)


@pytest.mark.parametrize("content", [b"", b"this is text, not a jpeg"])
def test_unreadable_file_names_the_path(image_folder, content):
    root, _ = image_folder({"train": {"a": 2, "b": 2}})
    bad = os.path.join(root, "train", "b", "broken.jpg")
    with open(bad, "wb") as f:
        f.write(content)
    with pytest.raises(ValueError, match=f"Unreadable image file {bad}"):
        load_dataset("image_folder", data_dir=root)


def test_test_split_with_unknown_class(image_folder):
    root, _ = image_folder({"train": {"a": 2, "b": 2}, "test": {"a": 1, "z": 1}})
    with pytest.raises(ValueError, match=r"missing from the train split: \['z'\]"):
        ImageFolderSource(root)


def test_image_folder_needs_data_dir():
    with pytest.raises(ValueError, match="pass data_dir"):
        load_dataset("mit_indoor67")


def test_split_folders_with_other_names_are_not_read_as_classes(image_folder, tmp_path):
    root, _ = image_folder()
    os.rename(os.path.join(root, "train"), os.path.join(root, "Train"))
    os.rename(os.path.join(root, "test"), os.path.join(root, "Test"))
    with pytest.raises(ValueError, match=r"named like splits: \['Test', 'Train'\]. Rename"):
        ImageFolderSource(root)


def test_a_symlink_loop_counts_each_image_once(image_folder):
    root, _ = image_folder({"train": {"a": 3, "b": 2}})
    os.symlink(".", os.path.join(root, "train", "a", "again"))  # a -> a -> a ...
    paths, labels, _ = list_image_folder(os.path.join(root, "train"))
    assert np.bincount(labels).tolist() == [3, 2]
    assert len({os.path.realpath(p) for p in paths}) == len(paths)


def test_tiny_imagenet_val_rearranged_into_class_folders(tmp_path):
    root = tmp_path / "tiny"
    for wnid in ("n1", "n2"):
        for k in range(2):
            write_image(str(root / "train" / wnid / "images" / f"{k}.JPEG"), flat_image(k))
        write_image(str(root / "val" / wnid / f"val_{wnid}.JPEG"), flat_image(5))
    (root / "val" / "val_annotations.txt").write_text("val_n1.JPEG\tn1\t0\t0\t1\t1\n")  # kept
    data = load_dataset("tiny_imagenet", data_dir=str(root), batch_size=4, val_fraction=0.0)
    assert data.num_test == 2
    assert sorted(np.concatenate([y.numpy() for _, y in data.test]).tolist()) == [0, 1]
