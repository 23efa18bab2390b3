"""The datasets of the paper (and Fashion-MNIST, and a user's image folder), by name."""

from __future__ import annotations

import dataclasses

TFDS = "tfds"
IMAGE_FOLDER = "image_folder"
FASHION_MNIST = "fashion_mnist"


@dataclasses.dataclass(frozen=True)
class DatasetSpec:
    """How to load one named dataset, and its defaults in the authors' code.

    Attributes:
        name: the name `load_dataset` takes.
        source: ``"tfds"``, ``"image_folder"`` or ``"fashion_mnist"``.
        image_size: default output side (224 or 32).
        batch_size: default batch (64 at 224 px, 128 at 32 px, as in the reference).
        tfds_name: the TFDS catalog name, for TFDS sources.
        tiny_imagenet_val: the test split is Tiny ImageNet's official ``val/`` folder.
        description: one line for error messages and docs.
    """

    name: str
    source: str
    image_size: int
    batch_size: int
    tfds_name: str | None = None
    tiny_imagenet_val: bool = False
    description: str = ""


DATASETS: dict[str, DatasetSpec] = {
    spec.name: spec
    for spec in (
        DatasetSpec(
            "stanford_dogs",
            TFDS,
            224,
            64,
            "stanford_dogs",
            description="Stanford Dogs, 120 classes (TFDS)",
        ),
        DatasetSpec(
            "cub200",
            TFDS,
            224,
            64,
            "caltech_birds2011",
            description="CUB-200-2011, 200 classes (TFDS caltech_birds2011)",
        ),
        DatasetSpec(
            "cifar100", TFDS, 32, 128, "cifar100", description="CIFAR-100, 100 classes (TFDS)"
        ),
        DatasetSpec(
            "stl10",
            TFDS,
            32,
            128,
            "stl10",
            description="STL-10, 10 classes, 96 px resized to 32 (TFDS)",
        ),
        DatasetSpec(
            "mit_indoor67", IMAGE_FOLDER, 224, 64, description="MIT Indoor 67 (image folder)"
        ),
        DatasetSpec(
            "stanford40", IMAGE_FOLDER, 224, 64, description="Stanford 40 Actions (image folder)"
        ),
        DatasetSpec(
            "tiny_imagenet",
            IMAGE_FOLDER,
            32,
            128,
            tiny_imagenet_val=True,
            description="Tiny ImageNet, 200 classes, 64 px resized to 32 (image folder)",
        ),
        DatasetSpec(
            "image_folder",
            IMAGE_FOLDER,
            224,
            64,
            description="your own data: data_dir/train/<class>/, data_dir/test/<class>/",
        ),
        DatasetSpec(
            "fashion_mnist",
            FASHION_MNIST,
            32,
            128,
            description="Fashion-MNIST from idx files, 28 px resized to 32",
        ),
    )
}
ALIASES = {
    "caltech_birds2011": "cub200",
    "cub": "cub200",
    "cub_200_2011": "cub200",
    "mit_indoor": "mit_indoor67",
    "indoor67": "mit_indoor67",
    "stanford40_actions": "stanford40",
    "tiny_imagenet_200": "tiny_imagenet",
}


def get_spec(name: str) -> DatasetSpec:
    """Returns the `DatasetSpec` of a dataset name or alias (case-insensitive, '-' = '_')."""
    key = name.lower().replace("-", "_")
    key = ALIASES.get(key, key)
    if key not in DATASETS:
        known = ", ".join(sorted(DATASETS))
        raise ValueError(f"Unknown dataset {name!r}; known: {known}.")
    return DATASETS[key]
