"""Per-example preprocessing and augmentation, as in the authors' code, in TF ops.

224-px style ("resized_crop"): train = random resized crop (area 8-100%, aspect 3/4-4/3)
+ horizontal flip; eval = resize the shorter side to 256 (for 224) and centre crop.
32-px style ("pad_crop"): the image is first resized to the output size (STL-10 96 -> 32,
Tiny ImageNet 64 -> 32, Fashion-MNIST 28 -> 32); train = zero-pad 4, random crop,
horizontal flip; eval = the resize only. Every image is RGB (grayscale repeated to three
channels), float32, scaled to [0, 1] and normalised with the ImageNet mean and std.

Randomness is stateless: each example carries its own seed, which the pipeline
(`pipeline.build_pipeline`) derives from its seed and the example's position, as it
derives the shuffle order: a pipeline's batches are a function of its seed alone, not
of TensorFlow's global seed, on every run and every iteration.

The crop box is drawn as torchvision's `RandomResizedCrop` draws it (the reference's),
from stateless draws. One departure: resizing is TensorFlow's bilinear with
antialiasing rather than PIL's.
"""

from __future__ import annotations

import math

import tensorflow as tf

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
RESIZED_CROP = "resized_crop"
PAD_CROP = "pad_crop"
AUGMENTATIONS = (RESIZED_CROP, PAD_CROP)


def default_augmentation(image_size: int) -> str:
    """The authors' style for an output size: ``pad_crop`` below 64 px, else ``resized_crop``."""
    return PAD_CROP if image_size < 64 else RESIZED_CROP


def to_rgb(image: tf.Tensor) -> tf.Tensor:
    """Repeats a one-channel image to three channels; leaves RGB images alone."""
    if image.shape.rank == 3 and image.shape[-1] == 3:
        return image
    return tf.image.grayscale_to_rgb(image) if image.shape[-1] == 1 else image[..., :3]


def decode(image: tf.Tensor) -> tf.Tensor:
    """Encoded bytes (JPEG, PNG, GIF, BMP) or a uint8 array -> uint8 RGB [H, W, 3]."""
    if image.dtype == tf.string:
        image = tf.io.decode_image(image, channels=3, expand_animations=False)
        image.set_shape([None, None, 3])
        return image
    if image.shape.rank == 2:
        image = image[..., tf.newaxis]
    return to_rgb(image)


def normalize(image: tf.Tensor) -> tf.Tensor:
    """uint8 or [0, 255] float -> float32 normalised with the ImageNet mean and std."""
    image = tf.cast(image, tf.float32) / 255.0
    return (image - tf.constant(IMAGENET_MEAN)) / tf.constant(IMAGENET_STD)


def _resize(image: tf.Tensor, size: tf.Tensor, antialias: bool = True) -> tf.Tensor:
    """Bilinear resize (antialiased when downsizing, like PIL), float32 in [0, 255] out."""
    return tf.image.resize(image, size, method="bilinear", antialias=antialias)


CROP_SCALE = (0.08, 1.0)
CROP_RATIO = (3.0 / 4.0, 4.0 / 3.0)
CROP_TRIES = 10


def _crop_window(shape: tf.Tensor, seed: tf.Tensor) -> tf.Tensor:
    """Random-resized-crop box [y, x, h, w] (int32) for an image of shape [h, w, ...].

    torchvision's `RandomResizedCrop.get_params`, with stateless draws: up to 10 tries of
    an area uniform in 8-100 % of the image and a log-uniform aspect ratio in [3/4, 4/3],
    sides rounded (half to even, as Python's round); the first box that fits is placed
    uniformly; if none fits, the centre crop of the largest box within the ratio range.
    """
    height, width = tf.cast(shape[0], tf.float32), tf.cast(shape[1], tf.float32)
    scale_seed, ratio_seed, offset_seed = tf.unstack(
        tf.random.experimental.stateless_split(seed, 3)
    )
    area = height * width * tf.random.stateless_uniform([CROP_TRIES], scale_seed, *CROP_SCALE)
    log_low, log_high = math.log(CROP_RATIO[0]), math.log(CROP_RATIO[1])
    ratio = tf.exp(tf.random.stateless_uniform([CROP_TRIES], ratio_seed, log_low, log_high))
    widths, heights = tf.round(tf.sqrt(area * ratio)), tf.round(tf.sqrt(area / ratio))
    fits = (widths > 0) & (widths <= width) & (heights > 0) & (heights <= height)
    first = tf.argmax(tf.cast(fits, tf.int32))  # the first try that fits
    image_ratio = width / height
    fallback_w = tf.where(image_ratio > CROP_RATIO[1], tf.round(height * CROP_RATIO[1]), width)
    fallback_h = tf.where(image_ratio < CROP_RATIO[0], tf.round(width / CROP_RATIO[0]), height)
    found = tf.reduce_any(fits)
    h = tf.where(found, tf.gather(heights, first), fallback_h)
    w = tf.where(found, tf.gather(widths, first), fallback_w)
    offsets = tf.random.stateless_uniform([2], offset_seed)
    y = tf.where(found, tf.floor(offsets[0] * (height - h + 1)), tf.floor((height - h) / 2))
    x = tf.where(found, tf.floor(offsets[1] * (width - w + 1)), tf.floor((width - w) / 2))
    return tf.cast(tf.stack([y, x, h, w]), tf.int32)


def _decode_and_random_crop(image: tf.Tensor, seed: tf.Tensor) -> tf.Tensor:
    """Decodes and crops; JPEG bytes are decoded inside the crop window only (fast)."""
    if image.dtype != tf.string:
        image = decode(image)
        w = _crop_window(tf.shape(image), seed)
        return image[w[0] : w[0] + w[2], w[1] : w[1] + w[3]]

    def jpeg() -> tf.Tensor:
        w = _crop_window(tf.io.extract_jpeg_shape(image), seed)
        return tf.io.decode_and_crop_jpeg(image, w, channels=3)

    def other() -> tf.Tensor:
        decoded = decode(image)
        w = _crop_window(tf.shape(decoded), seed)
        return decoded[w[0] : w[0] + w[2], w[1] : w[1] + w[3]]

    cropped = tf.cond(tf.io.is_jpeg(image), jpeg, other)
    cropped.set_shape([None, None, 3])
    return cropped


def random_resized_crop_flip(
    image: tf.Tensor, seed: tf.Tensor, image_size: int, antialias: bool = True
) -> tf.Tensor:
    """Train transform of the 224-px setting.

    Args:
        image: encoded image bytes (scalar string) or a uint8 [H, W, C] array.
        seed: int [2] stateless seed of this example.
        image_size: output side.
        antialias: antialiased resize (as PIL does); False is about 1.6x faster.

    Returns:
        float32 [image_size, image_size, 3], normalised.
    """
    crop_seed, flip_seed = tf.unstack(tf.random.experimental.stateless_split(seed, 2))
    image = _decode_and_random_crop(image, crop_seed)
    image = _resize(image, [image_size, image_size], antialias)
    image = tf.image.stateless_random_flip_left_right(image, flip_seed)
    return normalize(image)


def resize_center_crop(image: tf.Tensor, image_size: int, antialias: bool = True) -> tf.Tensor:
    """Eval transform of the 224-px setting: shorter side to 256/224 x size, centre crop."""
    image = decode(image)
    resize = round(image_size * 256 / 224)
    shape = tf.cast(tf.shape(image)[:2], tf.float32)
    scale = resize / tf.reduce_min(shape)
    new = tf.maximum(tf.cast(tf.round(shape * scale), tf.int32), resize)
    image = _resize(image, new, antialias)
    top = (new[0] - image_size + 1) // 2
    left = (new[1] - image_size + 1) // 2
    image = image[top : top + image_size, left : left + image_size]
    image.set_shape([image_size, image_size, 3])
    return normalize(image)


def _resize_to(image: tf.Tensor, image_size: int, antialias: bool = True) -> tf.Tensor:
    """Decodes and resizes to [size, size] unless already that size; float32 [0, 255]."""
    image = decode(image)
    shape = tf.shape(image)
    image = tf.cond(
        tf.logical_and(tf.equal(shape[0], image_size), tf.equal(shape[1], image_size)),
        lambda: tf.cast(image, tf.float32),
        lambda: _resize(image, [image_size, image_size], antialias),
    )
    image.set_shape([image_size, image_size, 3])
    return image


def pad_crop_flip(
    image: tf.Tensor, seed: tf.Tensor, image_size: int, pad: int = 4, antialias: bool = True
) -> tf.Tensor:
    """Train transform of the 32-px setting: resize, zero-pad ``pad``, random crop, flip.

    Args:
        image: encoded image bytes (scalar string) or a uint8 [H, W, C] array.
        seed: int [2] stateless seed of this example.
        image_size: output side (the image is resized to it first if needed).
        pad: zero padding on each side before the crop.
        antialias: antialiased resize.

    Returns:
        float32 [image_size, image_size, 3], normalised.
    """
    crop_seed, flip_seed = tf.unstack(tf.random.experimental.stateless_split(seed, 2))
    image = _resize_to(image, image_size, antialias)
    image = tf.pad(image, [[pad, pad], [pad, pad], [0, 0]])
    image = tf.image.stateless_random_crop(image, [image_size, image_size, 3], crop_seed)
    image = tf.image.stateless_random_flip_left_right(image, flip_seed)
    return normalize(image)


def resize_only(image: tf.Tensor, image_size: int, antialias: bool = True) -> tf.Tensor:
    """Eval transform of the 32-px setting."""
    return normalize(_resize_to(image, image_size, antialias))


def train_transform(augmentation: str, image_size: int, antialias: bool = True):
    """Returns ``fn(image, seed) -> normalised float32 image`` for training."""
    if augmentation == RESIZED_CROP:
        return lambda image, seed: random_resized_crop_flip(image, seed, image_size, antialias)
    if augmentation == PAD_CROP:
        return lambda image, seed: pad_crop_flip(image, seed, image_size, antialias=antialias)
    raise ValueError(f"Unknown augmentation {augmentation!r}; use one of {AUGMENTATIONS}.")


def eval_transform(augmentation: str, image_size: int, antialias: bool = True):
    """Returns ``fn(image) -> normalised float32 image`` for validation and test."""
    if augmentation == RESIZED_CROP:
        return lambda image: resize_center_crop(image, image_size, antialias)
    if augmentation == PAD_CROP:
        return lambda image: resize_only(image, image_size, antialias)
    raise ValueError(f"Unknown augmentation {augmentation!r}; use one of {AUGMENTATIONS}.")
