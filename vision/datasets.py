"""Labelled image sets for evaluation: Fashion-MNIST (Debian package) and ImageFolder directories."""

from __future__ import annotations

import gzip
import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from vision.image import ImageError, load_image

log = logging.getLogger(__name__)

FASHION_MNIST_DIR = Path("/usr/share/datasets/fashion-mnist")
FASHION_MNIST_CLASSES = (
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
IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".webp", ".bmp", ".gif", ".tif", ".tiff"}
INSTALL_HINT = (
    "install it with `sudo apt-get install dataset-fashion-mnist` (Debian/Ubuntu); without root: "
    "`apt-get download dataset-fashion-mnist && dpkg -x dataset-fashion-mnist_*.deb DIR` and set "
    "VITRINE_FASHION_MNIST_DIR=DIR/usr/share/datasets/fashion-mnist"
)


class DatasetError(ValueError):
    """A dataset that is missing or unusable; the message says how to fix it."""


@dataclass(frozen=True)
class LabelledImages:
    """Images with one label each, plus where they came from."""

    name: str
    images: list[Image.Image]
    labels: list[str]
    description: str


def load_fashion_mnist(
    root: Path = FASHION_MNIST_DIR, *, split: str = "t10k", sample: int = 2000, seed: int = 0
) -> LabelledImages:
    """A seeded, class-balanced sample of Fashion-MNIST (28x28 grey product photos, 10 classes)."""
    root = Path(root)
    images_gz, labels_gz = root / f"{split}-images-idx3-ubyte.gz", root / f"{split}-labels-idx1-ubyte.gz"
    if not images_gz.is_file() or not labels_gz.is_file():
        raise DatasetError(f"Fashion-MNIST not found in {root}: {INSTALL_HINT}")
    pixels = _read_idx(images_gz, 3)
    labels = _read_idx(labels_gz, 1)
    index = balanced_sample(labels, sample, seed)
    return LabelledImages(
        name="fashion-mnist",
        images=[Image.fromarray(pixels[i], mode="L") for i in index],
        labels=[FASHION_MNIST_CLASSES[int(labels[i])] for i in index],
        description=f"Fashion-MNIST {split}, {len(index)} images ({len(index) // 10}/class, seed {seed})",
    )


def load_image_folder(
    root: Path, *, sample: int = 2000, seed: int = 0, max_bytes: int = 20 * 1024 * 1024, max_pixels: int = 40_000_000
) -> LabelledImages:
    """An ImageFolder tree (one subfolder per label), sampled with a seed, unreadable files skipped."""
    root = Path(root)
    if not root.is_dir():
        raise DatasetError(f"{root} is not a directory (expected one subfolder of images per label)")
    files = image_folder_files(root)
    if len({label for _, label in files}) < 2:
        raise DatasetError(f"{root} needs at least two label subfolders with images in them")
    labels = np.array([label for _, label in files])
    index = balanced_sample(labels, sample, seed)
    images, kept, skipped = [], [], 0
    for i in index:
        path, label = files[i]
        try:
            images.append(load_image(path.read_bytes(), max_bytes=max_bytes, max_pixels=max_pixels).image)
            kept.append(label)
        except (ImageError, OSError) as exc:
            skipped += 1
            log.warning("skipping %s: %s", path, exc)
    return LabelledImages(
        name=str(root),
        images=images,
        labels=kept,
        description=f"{root}: {len(images)} images in {len(set(kept))} labels (seed {seed}"
        + (f", {skipped} unreadable skipped)" if skipped else ")"),
    )


def image_folder_files(root: Path) -> list[tuple[Path, str]]:
    """(image path, its top-level subfolder's name) for every image file below `root`'s subfolders, sorted."""
    return sorted(
        (p, d.name)
        for d in Path(root).iterdir()
        if d.is_dir()
        for p in d.rglob("*")
        if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file()
    )


def balanced_sample(labels, n: int, seed: int) -> list[int]:
    """Up to n indices, as equal per label as the data allows, reproducible for a seed."""
    labels = np.asarray(labels)
    rng = np.random.default_rng(seed)
    classes = sorted(set(labels.tolist()), key=str)
    pools = {c: rng.permutation(np.flatnonzero(labels == c)).tolist() for c in classes}
    chosen: list[int] = []
    # Round-robin over labels: small labels are exhausted, the rest share the remaining budget.
    while len(chosen) < n and any(pools.values()):
        for c in classes:
            if pools[c] and len(chosen) < n:
                chosen.append(pools[c].pop())
    return sorted(chosen)


def _read_idx(path: Path, ndim: int) -> np.ndarray:
    with gzip.open(path, "rb") as f:
        data = f.read()
    magic = int.from_bytes(data[:4], "big")
    if magic != 0x0800 + ndim:  # IDX: unsigned bytes, `ndim` dimensions
        raise DatasetError(f"{path} is not an IDX file of {ndim} dimensions")
    dims = [int.from_bytes(data[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim)]
    return np.frombuffer(data, dtype=np.uint8, offset=4 + 4 * ndim).reshape(dims)
