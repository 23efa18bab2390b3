"""Arranging the official MIT Indoor 67 and Stanford 40 downloads into image folders."""

import os

import numpy as np
import pytest
from data_helpers import flat_image, write_image

from keras_l2t.data import load_dataset
from keras_l2t.data.layouts import arrange_mit_indoor67, arrange_stanford40


@pytest.mark.parametrize("link", [True, False])
def test_mit_indoor67(tmp_path, link):
    src = tmp_path / "indoorCVPR_09"
    train, test = [], []
    for c in ("airport_inside", "bakery", "kitchen"):
        for k in range(5):
            rel = f"{c}/{c}_{k}.jpg"
            write_image(str(src / "Images" / rel), flat_image(k))
            (train if k < 4 else test).append(rel)
    (src / "TrainImages.txt").write_text("\n".join(train) + "\n")
    (src / "TestImages.txt").write_text("\n".join(test) + "\n")
    dst = str(tmp_path / "mit_indoor67")
    assert arrange_mit_indoor67(str(src), dst, link=link) == {"train": 12, "test": 3}
    assert os.path.islink(os.path.join(dst, "train", train[0])) == link
    data = load_dataset("mit_indoor67", data_dir=dst, image_size=32, val_fraction=0.25)
    assert data.class_names == ("airport_inside", "bakery", "kitchen")
    assert (data.num_train, data.num_val, data.num_test) == (9, 3, 3)


def test_rerun_after_moving_the_download_relinks(tmp_path):
    src = tmp_path / "indoorCVPR_09"
    for c in ("a", "b"):
        write_image(str(src / "Images" / c / "0.jpg"), flat_image(0))
        write_image(str(src / "Images" / c / "1.jpg"), flat_image(1))
    (src / "TrainImages.txt").write_text("a/0.jpg\nb/0.jpg\n")
    (src / "TestImages.txt").write_text("a/1.jpg\nb/1.jpg\n")
    dst = str(tmp_path / "mit")
    arrange_mit_indoor67(str(src), dst)
    moved = tmp_path / "moved"
    os.rename(src, moved)
    assert arrange_mit_indoor67(str(moved), dst) == {"train": 2, "test": 2}
    link = os.path.join(dst, "train", "a", "0.jpg")
    assert os.readlink(link) == str(moved / "Images" / "a" / "0.jpg") and os.path.exists(link)
    arrange_mit_indoor67(str(moved), dst, link=False)  # copies replace the links
    assert not os.path.islink(link) and os.path.isfile(link)


def test_stanford40(tmp_path):
    src = tmp_path / "Stanford40"
    (src / "ImageSplits").mkdir(parents=True)
    for action in ("applauding", "riding_a_bike"):
        names = [f"{action}_{k:03d}.jpg" for k in range(1, 6)]
        for name in names:
            write_image(str(src / "JPEGImages" / name), flat_image(1))
        (src / "ImageSplits" / f"{action}_train.txt").write_text("\n".join(names[:3]) + "\n")
        (src / "ImageSplits" / f"{action}_test.txt").write_text("\n".join(names[3:]) + "\n")
    # The official download also has train.txt / test.txt / actions.txt: not classes.
    (src / "ImageSplits" / "train.txt").write_text("applauding_001.jpg\n")
    (src / "ImageSplits" / "actions.txt").write_text("action_name\tnumber_of_images\n")
    dst = str(tmp_path / "stanford40")
    assert arrange_stanford40(str(src), dst) == {"train": 6, "test": 4}
    data = load_dataset("stanford40", data_dir=dst, image_size=32, batch_size=16)
    assert data.class_names == ("applauding", "riding_a_bike")
    _, y = next(iter(data.test))
    assert np.bincount(y.numpy()).tolist() == [2, 2]


def test_missing_lists_say_what_is_expected(tmp_path):
    with pytest.raises(FileNotFoundError, match="TrainImages.txt"):
        arrange_mit_indoor67(str(tmp_path), str(tmp_path / "out"))
    with pytest.raises(FileNotFoundError, match="ImageSplits"):
        arrange_stanford40(str(tmp_path), str(tmp_path / "out"))


def test_missing_image_is_named(tmp_path):
    src = tmp_path / "indoor"
    (src / "Images").mkdir(parents=True)
    (src / "TrainImages.txt").write_text("bar/x.jpg\n")
    (src / "TestImages.txt").write_text("")
    with pytest.raises(FileNotFoundError, match=os.path.join(str(src), "Images", "bar/x.jpg")):
        arrange_mit_indoor67(str(src), str(tmp_path / "out"))
