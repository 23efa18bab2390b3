"""Preprocessing and augmentation: shapes, value ranges, geometry, determinism."""

import numpy as np
import pytest
import tensorflow as tf

from keras_l2t.data import augment
from keras_l2t.data.augment import IMAGENET_MEAN, IMAGENET_STD

SEED = tf.constant([1, 2], tf.int64)


def _noise(h=60, w=80, c=3, seed=0):
    return np.random.default_rng(seed).integers(0, 256, (h, w, c), dtype=np.uint8)


def _unnormalize(x):
    return (np.asarray(x) * np.asarray(IMAGENET_STD) + np.asarray(IMAGENET_MEAN)) * 255.0


def test_normalize_uses_imagenet_mean_and_std():
    x = augment.normalize(tf.fill([2, 2, 3], tf.constant(255, tf.uint8))).numpy()
    expected = (1.0 - np.asarray(IMAGENET_MEAN)) / np.asarray(IMAGENET_STD)
    np.testing.assert_allclose(x[0, 0], expected, rtol=1e-6)
    assert x.dtype == np.float32


@pytest.mark.parametrize("encoding", ["array", "png", "jpeg"])
def test_random_resized_crop_shapes_and_range(encoding):
    image = _noise()
    if encoding == "png":
        image = tf.io.encode_png(image)
    elif encoding == "jpeg":
        image = tf.io.encode_jpeg(image)
    out = augment.random_resized_crop_flip(tf.constant(image), SEED, 24).numpy()
    assert out.shape == (24, 24, 3) and out.dtype == np.float32
    pixels = _unnormalize(out)
    assert pixels.min() >= -0.5 and pixels.max() <= 255.5
    assert pixels.std() > 10  # noise, not a flat or blank image


def test_jpeg_fast_path_matches_decode_then_crop():
    jpeg = tf.io.encode_jpeg(_noise(), quality=95)
    decoded = tf.io.decode_jpeg(jpeg, channels=3)
    for k in range(3):
        seed = tf.constant([k, 2], tf.int64)
        fast = augment.random_resized_crop_flip(jpeg, seed, 32).numpy()
        slow = augment.random_resized_crop_flip(decoded, seed, 32).numpy()
        # Same crop window; only chroma upsampling at the window's edge differs.
        assert np.abs(fast - slow).mean() < 0.02


def test_augmentation_is_deterministic_per_seed_and_varies_across_seeds():
    image = tf.constant(_noise())
    for fn in (
        lambda s: augment.random_resized_crop_flip(image, s, 32),
        lambda s: augment.pad_crop_flip(image, s, 32),
    ):
        a, b = fn(SEED).numpy(), fn(SEED).numpy()
        np.testing.assert_array_equal(a, b)
        others = [fn(tf.constant([k, 9], tf.int64)).numpy() for k in range(4)]
        assert any(np.abs(o - a).max() > 0.1 for o in others)


def test_pad_crop_flip_pads_with_zeros_and_keeps_size():
    image = tf.fill([32, 32, 3], tf.constant(200, tf.uint8))
    outs = [augment.pad_crop_flip(image, tf.constant([k, 0], tf.int64), 32) for k in range(8)]
    pixels = np.stack([_unnormalize(o) for o in outs])
    assert pixels.shape == (8, 32, 32, 3)
    values = np.unique(np.round(pixels))
    # Only the image value and zero padding appear, and padding does appear.
    assert set(values.tolist()) == {0.0, 200.0}


def test_resize_only_resizes_stl10_to_32_and_passes_32_through():
    big = augment.resize_only(tf.constant(_noise(96, 96)), 32)
    assert big.shape == (32, 32, 3)
    small = _noise(32, 32)
    same = _unnormalize(augment.resize_only(tf.constant(small), 32).numpy())
    np.testing.assert_allclose(same, small, atol=1e-3)


def test_resize_center_crop_geometry():
    # A 100x200 image whose left half is black and right half white: after resizing the
    # shorter side to 256/224*112 = 128 and centre-cropping 112, the crop is the middle
    # of a 128x256 image, so its left half is black and right half white.
    image = np.zeros([100, 200, 3], np.uint8)
    image[:, 100:] = 255
    out = _unnormalize(augment.resize_center_crop(tf.constant(image), 112).numpy())
    assert out.shape == (112, 112, 3)
    assert out[:, :50].max() < 1.0 and out[:, 62:].min() > 254.0


def test_grayscale_becomes_rgb():
    gray = _noise(30, 30, 1)
    for out in (
        augment.resize_only(tf.constant(gray), 32),
        augment.resize_only(tf.constant(gray[..., 0]), 32),
        augment.random_resized_crop_flip(tf.io.encode_png(gray), SEED, 16),
    ):
        raw = _unnormalize(out.numpy())
        assert raw.shape[-1] == 3
        np.testing.assert_allclose(raw[..., 0], raw[..., 1], atol=1e-3)
        np.testing.assert_allclose(raw[..., 0], raw[..., 2], atol=1e-3)


def test_default_augmentation_and_unknown_names():
    assert augment.default_augmentation(224) == augment.RESIZED_CROP
    assert augment.default_augmentation(32) == augment.PAD_CROP
    with pytest.raises(ValueError, match="Unknown augmentation"):
        augment.train_transform("cutmix", 32)


def test_antialias_switch():
    image = tf.constant(_noise(200, 200))
    smooth = augment.resize_center_crop(image, 32).numpy()
    sharp = augment.resize_center_crop(image, 32, antialias=False).numpy()
    assert smooth.shape == sharp.shape == (32, 32, 3)
    # Downsizing noise 6x: the antialiased image averages it out, the other does not.
    assert _unnormalize(smooth).std() < 0.5 * _unnormalize(sharp).std()


@pytest.mark.parametrize("transform", ["resized_crop", "pad_crop"])
def test_horizontal_flip_happens_about_half_the_time(transform):
    # Brightness grows left to right; a flipped output has it falling instead.
    ramp = np.broadcast_to(np.linspace(0, 255, 64).astype(np.uint8)[None, :, None], (64, 64, 3))
    fn = augment.train_transform(transform, 32)
    flipped = []
    for k in range(16):
        out = _unnormalize(fn(tf.constant(ramp), tf.constant([k, 5], tf.int64)).numpy())
        columns = out[8:24, 8:24, 0].mean(axis=0)  # inside any zero padding
        flipped.append(columns[-1] < columns[0])
    assert 3 <= sum(flipped) <= 13


def _torchvision_windows(height, width, rng, n):
    """RandomResizedCrop.get_params (scale 0.08-1, ratio 3/4-4/3) written out in NumPy."""
    windows = []
    for _ in range(n):
        for _ in range(10):
            area = height * width * rng.uniform(0.08, 1.0)
            ratio = np.exp(rng.uniform(np.log(3 / 4), np.log(4 / 3)))
            w, h = round(np.sqrt(area * ratio)), round(np.sqrt(area / ratio))
            if 0 < w <= width and 0 < h <= height:
                windows.append((rng.integers(0, height - h + 1), rng.integers(0, width - w + 1),
                                h, w))
                break
        else:
            windows.append(None)
    return windows


@pytest.mark.parametrize("height, width", [(256, 256), (375, 500)])
def test_crop_windows_are_distributed_as_torchvision_draws_them(height, width):
    seeds = tf.random.experimental.stateless_split(tf.constant([3, 4], tf.int64), 4000)
    draw = tf.function(lambda s: augment._crop_window(tf.constant([height, width, 3]), s))
    windows = tf.function(lambda seeds: tf.map_fn(draw, seeds, fn_output_signature=tf.int32))(
        seeds).numpy()
    y, x, h, w = windows.T
    assert (y >= 0).all() and (x >= 0).all() and (y + h <= height).all() and (x + w <= width).all()
    reference = np.array(_torchvision_windows(height, width, np.random.default_rng(0), 4000))
    ours_area, their_area = h * w / (height * width), reference[:, 2] * reference[:, 3] / (
        height * width)
    assert abs(ours_area.mean() - their_area.mean()) < 0.02  # about 5 standard errors
    assert abs(np.median(ours_area) - np.median(their_area)) < 0.03
    assert abs(np.mean(np.log(w / h)) - np.mean(np.log(reference[:, 3] / reference[:, 2]))) < 0.02


def test_crop_window_falls_back_to_a_centre_crop_within_the_ratio_range():
    # 10 x 1000: no box of 8 % or more of the area fits within ratios 3/4 to 4/3.
    window = augment._crop_window(tf.constant([10, 1000, 3]), tf.constant([1, 2], tf.int64))
    np.testing.assert_array_equal(window.numpy(), [0, (1000 - 13) // 2, 10, 13])
