"""The one data interface every method trains on: images (or stored vectors) with a product and a category each.

Sources: an ImageFolder (one subfolder per category, or one per product with a `products.json` naming
each product's category), Fashion-MNIST, or a tenant's catalog (stored backbone vectors handed up by
the caller: this package does no SQL). `split_holdout` splits by product, or by image for
category-only data where every product has a single image, always seeded.
"""

from __future__ import annotations

import json
import logging
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
from PIL import Image

from vision.datasets import DatasetError, balanced_sample, image_folder_files, load_fashion_mnist
from vision.image import ImageError, load_image

log = logging.getLogger(__name__)

MIN_PRODUCTS = 10  # below this a held-out split says nothing
MIN_TEST_QUERIES = 4


class TrainingError(DatasetError):
    """Data that cannot train or evaluate a model; the message names the problem and what to do."""


@dataclass
class TrainingSet:
    """Aligned arrays, one entry per image: its product, its category, and the image or its stored vector."""

    name: str
    products: np.ndarray  # str, one per image; equal to the image's own id for category-only data
    labels: np.ndarray  # str category per image
    images: Sequence[Image.Image] | None = None  # None when only stored vectors are known (a tenant's catalog)
    features: np.ndarray | None = None  # stored backbone unit vectors, aligned with products
    description: str = ""
    skipped: int = 0  # images that failed to load
    meta: dict = field(default_factory=dict)
    keys: np.ndarray | None = None  # the caller's id of each entry (a catalog's item ids), aligned with products

    def __len__(self) -> int:
        return len(self.products)

    @property
    def multi_photo(self) -> bool:
        """True when some product has two or more images: relevance is then "same product"."""
        return bool(len(self)) and max(Counter(self.products.tolist()).values()) >= 2

    def subset(self, index) -> TrainingSet:
        """The entries at `index`, in that order."""
        index = np.asarray(index, dtype=np.int64)
        return TrainingSet(
            name=self.name,
            products=self.products[index],
            labels=self.labels[index],
            images=None if self.images is None else [self.images[i] for i in index],
            features=None if self.features is None else self.features[index],
            description=self.description,
            meta=self.meta,
            keys=None if self.keys is None else self.keys[index],
        )

    def with_images(self, images: Sequence[Image.Image]) -> TrainingSet:
        """The same entries with their images (aligned), e.g. a catalog's held-out photos fetched again."""
        if len(images) != len(self):
            raise ValueError(f"{len(images)} images for {len(self)} entries")
        return replace(self, images=list(images))

    def summary(self) -> dict:
        """Counts for the model card."""
        return {
            "images": len(self),
            "products": len(set(self.products.tolist())),
            "categories": len(set(self.labels.tolist())),
            "multi_photo": self.multi_photo,
        }


def fashion_mnist(split: str, sample: int, seed: int, root: Path | None = None) -> TrainingSet:
    """A class-balanced seeded sample of one Fashion-MNIST split; each image is its own product."""
    kwargs = {"root": root} if root else {}
    ds = load_fashion_mnist(split=split, sample=sample, seed=seed, **kwargs)
    ids = np.array([f"{split}-{i}" for i in range(len(ds.labels))])
    return TrainingSet("fashion-mnist", ids, np.array(ds.labels), images=ds.images, description=ds.description)


def image_folder(root: Path, *, sample: int | None = None, seed: int = 0, folders: str = "auto") -> TrainingSet:
    """An ImageFolder tree. `folders`: `label` (a subfolder = a category, each image its own product),
    `product` (a subfolder = one product; its category is the folder too unless `products.json` names it),
    or `auto` (`product` when `products.json` exists, else `label`)."""
    root = Path(root)
    if not root.is_dir():
        raise TrainingError(f"{root} is not a directory (expected one subfolder of images per label or product)")
    meta_file = root / "products.json"
    if folders == "auto":
        folders = "product" if meta_file.is_file() else "label"
    if folders not in ("label", "product"):
        raise ValueError(f"folders must be auto, label or product, not {folders!r}")
    meta = _read_products_json(meta_file) if meta_file.is_file() else {}
    files = image_folder_files(root)
    if not files:
        raise TrainingError(f"{root} holds no images in subfolders (expected {root}/<label>/<image>.jpg)")
    folder_names = np.array([name for _, name in files])
    if sample is not None and sample < len(files):
        index = balanced_sample(folder_names, sample, seed)
        files = [files[i] for i in index]
    images, products, labels, skipped = [], [], [], 0
    for path, folder in files:
        try:
            images.append(load_image(path.read_bytes()).image)
        except (ImageError, OSError) as exc:
            skipped += 1
            log.warning("skipping %s: %s", path, exc)
            continue
        if folders == "label":
            products.append(str(path.relative_to(root)))
            labels.append(folder)
        else:
            products.append(folder)
            labels.append(str(meta.get(folder, {}).get("category") or folder))
    if not images:
        raise TrainingError(f"none of the {len(files)} images under {root} could be read")
    ts = TrainingSet(
        name=str(root),
        products=np.array(products),
        labels=np.array(labels),
        images=images,
        description=f"{root}: {len(images)} images, {len(set(products))} products, {len(set(labels))} categories"
        + (f", {skipped} unreadable skipped" if skipped else ""),
        skipped=skipped,
    )
    check_trainable(ts, str(root))
    return ts


def from_vectors(
    name: str,
    products: Sequence[str],
    labels: Sequence[str | None],
    vectors: np.ndarray,
    keys: Sequence[int] | None = None,
) -> TrainingSet:
    """A tenant's catalog as stored backbone vectors (rows from db/, handed up as plain values); `keys`: the
    item id of each row, by which a caller can find its pixels again (`train_model`'s `held_out_images`)."""
    labels = ["" if lab is None else str(lab) for lab in labels]
    ts = TrainingSet(
        name=name,
        products=np.array([str(p) for p in products]),
        labels=np.array(labels),
        features=np.asarray(vectors, dtype=np.float32),
        description=f"{name}: {len(labels)} stored vectors of {len(set(products))} products",
        keys=None if keys is None else np.asarray(keys, dtype=np.int64),
    )
    check_trainable(ts, name)
    return ts


def check_trainable(ts: TrainingSet, where: str) -> None:
    """Refuse data a model cannot learn from or be judged on, naming what is missing."""
    n_products = len(set(ts.products.tolist()))
    categories = Counter(ts.labels.tolist())
    if n_products < MIN_PRODUCTS:
        raise TrainingError(f"{where}: too small to split: {n_products} products, need at least {MIN_PRODUCTS}")
    if not ts.multi_photo and len(categories) < 2:
        only = next(iter(categories), "")
        raise TrainingError(
            f"{where}: a single label ({only!r}) and one image per product: nothing tells similar from "
            "dissimilar; give at least two categories, or several photos per product"
        )


def split_holdout(ts: TrainingSet, holdout: float, seed: int) -> tuple[np.ndarray, np.ndarray, str]:
    """(train index, held-out index, how): by product when products have several photos, else by image.

    Either way no product is on both sides, so the held-out set is made of products training never saw.
    Within each category the held-out share is `holdout` (at least one product when the category has two).
    """
    if not 0 < holdout < 1:
        raise ValueError("holdout must be between 0 and 1")
    rng = np.random.default_rng(seed)
    product_category: dict[str, str] = {}
    for p, lab in zip(ts.products.tolist(), ts.labels.tolist()):
        product_category.setdefault(p, lab)
    by_category: dict[str, list[str]] = {}
    for p, lab in sorted(product_category.items()):
        by_category.setdefault(lab, []).append(p)
    held: set[str] = set()
    for lab in sorted(by_category):
        members = by_category[lab]
        held.update(rng.permutation(members)[: held_out_count(len(members), holdout)].tolist())
    is_held = np.array([p in held for p in ts.products.tolist()])
    train, test = np.flatnonzero(~is_held), np.flatnonzero(is_held)
    how = "by product" if ts.multi_photo else "by image (one image per product)"
    if len(test) < MIN_TEST_QUERIES or len(train) < 2:
        raise TrainingError(
            f"{ts.name}: too small to split: {len(set(ts.products.tolist()))} products give "
            f"{len(train)} training and {len(test)} held-out images"
        )
    return train, test, how


def held_out_count(products: int, holdout: float) -> int:
    """How many of a category's `products` the split holds out: the `holdout` share, at least one, never all."""
    return 0 if products < 2 else min(products - 1, max(1, round(holdout * products)))


def enough_held_out(category_sizes: Sequence[int], holdout: float) -> bool:
    """Whether categories of these sizes (products each) leave enough held-out products to judge a model."""
    return sum(held_out_count(n, holdout) for n in category_sizes) >= MIN_TEST_QUERIES


def _read_products_json(path: Path) -> dict:
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise TrainingError(f"{path} is not valid JSON: {exc}") from exc
    if not isinstance(data, dict):
        raise TrainingError(f"{path} must map product folder -> {{category, ...}}")
    return data
