"""Throughput of the 224-px training input pipeline on generated JPEGs.

Writes ``--num_images`` photo-like JPEGs (``--height`` x ``--width``, about the size of
Stanford Dogs / CUB images) into a temporary image folder, builds
``load_dataset("image_folder", ...)`` exactly as training does (file read, JPEG decode
inside the random crop window, random resized crop to 224, flip, ImageNet normalisation,
parallel map, batch 64, prefetch), and reports images per second of the train pipeline,
of the eval pipeline, and of the train pipeline with ``antialias=False``. With
``--step_model resnet18`` it also times a plain ResNet-18 SGD step on the same batches,
the cheapest training step there is (an L2T-ww iteration costs about 15 times more,
see docs/benchmarks.md): the pipeline is not the bottleneck while its rate exceeds the step's.

Usage:
    python benchmarks/input_pipeline.py                     # defaults below
    python benchmarks/input_pipeline.py --num_images 2048 --batches 60 --step_model resnet18
"""

from __future__ import annotations

import argparse
import os
import shlex
import sys
import tempfile
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def write_jpegs(root: str, num_images: int, num_classes: int, height: int, width: int) -> int:
    """Writes photo-like JPEGs (smooth colour fields plus grain); returns bytes written."""
    import tensorflow as tf

    rng = np.random.default_rng(0)
    total = 0
    for i in range(num_images):
        coarse = rng.uniform(0, 255, (height // 16, width // 16, 3)).astype(np.float32)
        image = tf.image.resize(coarse[None], (height, width), method="bicubic")[0].numpy()
        image += rng.normal(0, 12, image.shape)
        encoded = tf.io.encode_jpeg(np.clip(image, 0, 255).astype(np.uint8), quality=90)
        folder = os.path.join(root, "train", f"class_{i % num_classes:03d}")
        os.makedirs(folder, exist_ok=True)
        tf.io.write_file(os.path.join(folder, f"{i:06d}.jpg"), encoded)
        total += len(encoded.numpy())
    return total


def time_batches(ds, batches: int, warmup: int) -> tuple[float, int]:
    """Seconds and images for ``batches`` batches after ``warmup`` batches."""
    it = iter(ds.repeat())
    for _ in range(warmup):
        next(it)
    images = 0
    start = time.perf_counter()
    for _ in range(batches):
        x, _ = next(it)
        images += int(x.shape[0])
    _ = x.numpy()  # make sure the last batch is materialised
    return time.perf_counter() - start, images


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--num_images", type=int, default=1024)
    parser.add_argument("--num_classes", type=int, default=16)
    parser.add_argument("--height", type=int, default=375)
    parser.add_argument("--width", type=int, default=500)
    parser.add_argument("--batch_size", type=int, default=64)
    parser.add_argument("--batches", type=int, default=40, help="timed batches")
    parser.add_argument("--warmup", type=int, default=5, help="untimed batches first")
    parser.add_argument("--step_model", choices=["none", "resnet18"], default="none")
    parser.add_argument("--step_batches", type=int, default=5)
    parser.add_argument("--data_dir", default=None, help="reuse this folder (else a temp one)")
    args = parser.parse_args(argv)

    import tensorflow as tf

    from keras_l2t.data import load_dataset

    command = "python " + " ".join(shlex.quote(a) for a in sys.argv)
    gpus = tf.config.list_physical_devices("GPU")
    print(f"command: {command}")
    print(
        f"machine: {os.cpu_count()} CPU cores, GPUs: {len(gpus)}, "
        f"TensorFlow {tf.__version__}, Python {sys.version.split()[0]}"
    )
    with tempfile.TemporaryDirectory() as tmp:
        root = args.data_dir or tmp
        start = time.perf_counter()
        if not os.path.isdir(os.path.join(root, "train")):
            size = write_jpegs(root, args.num_images, args.num_classes, args.height, args.width)
            print(
                f"wrote {args.num_images} JPEGs of {args.height}x{args.width} "
                f"({size / args.num_images / 1024:.0f} KiB each) in "
                f"{time.perf_counter() - start:.1f} s"
            )
        data = load_dataset(
            "image_folder", data_dir=root, batch_size=args.batch_size, image_size=224
        )
        seconds, images = time_batches(data.train, args.batches, args.warmup)
        train_rate = images / seconds
        print(
            f"224-px train pipeline: {train_rate:.0f} images/s "
            f"({images} images in {seconds:.2f} s, batch {args.batch_size})"
        )
        seconds, images = time_batches(data.val, args.batches, args.warmup)
        print(f"224-px eval pipeline:  {images / seconds:.0f} images/s")
        fast = load_dataset(
            "image_folder",
            data_dir=root,
            batch_size=args.batch_size,
            image_size=224,
            antialias=False,
        )
        seconds, images = time_batches(fast.train, args.batches, args.warmup)
        print(f"224-px train pipeline, antialias=False: {images / seconds:.0f} images/s")

        if args.step_model == "resnet18":
            import keras

            from keras_l2t.networks import resnet18

            model = resnet18(num_classes=args.num_classes)
            model.compile(
                optimizer=keras.optimizers.SGD(0.1, momentum=0.9),
                loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
            )
            x, y = next(iter(data.train))
            model.train_on_batch(x, y)  # compile / warm up
            start = time.perf_counter()
            for _ in range(args.step_batches):
                model.train_on_batch(x, y)
            step = (time.perf_counter() - start) / args.step_batches
            step_rate = args.batch_size / step
            print(
                f"plain ResNet-18 SGD step on {'GPU' if gpus else 'CPU'}: {step:.3f} s/step, "
                f"{step_rate:.0f} images/s; pipeline / step = {train_rate / step_rate:.1f}x"
            )


if __name__ == "__main__":
    main()
