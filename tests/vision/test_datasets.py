"""Evaluation datasets: Fashion-MNIST IDX files and ImageFolder trees."""

from __future__ import annotations

import gzip
import io

import numpy as np
import pytest
from PIL import Image

from vision.datasets import (
    FASHION_MNIST_CLASSES,
    FASHION_MNIST_DIR,
    DatasetError,
    balanced_sample,
    load_fashion_mnist,
    load_image_folder,
)


def _write_idx(path, array: np.ndarray) -> None:
    header = (0x0800 + array.ndim).to_bytes(4, "big") + b"".join(d.to_bytes(4, "big") for d in array.shape)
    with gzip.open(path, "wb") as f:
        f.write(header + array.astype(np.uint8).tobytes())


def test_balanced_sample_is_seeded_and_balanced():
    labels = ["a"] * 10 + ["b"] * 10 + ["c"] * 2
    first = balanced_sample(labels, 12, seed=3)
    assert first == balanced_sample(labels, 12, seed=3)
    assert first != balanced_sample(labels, 12, seed=4)
    counts = {c: sum(labels[i] == c for i in first) for c in "abc"}
    assert counts == {"a": 5, "b": 5, "c": 2}
    assert len(balanced_sample(labels, 100, seed=0)) == 22


def test_fashion_mnist_reader_on_a_tiny_idx_file(tmp_path):
    pixels = np.arange(40 * 28 * 28, dtype=np.int64).reshape(40, 28, 28) % 256
    labels = np.arange(40) % 10
    _write_idx(tmp_path / "t10k-images-idx3-ubyte.gz", pixels)
    _write_idx(tmp_path / "t10k-labels-idx1-ubyte.gz", labels)
    data = load_fashion_mnist(tmp_path, sample=20, seed=0)
    assert len(data.images) == 20 and data.images[0].size == (28, 28)
    assert sorted(set(data.labels)) == sorted(FASHION_MNIST_CLASSES)
    assert all(data.labels.count(c) == 2 for c in FASHION_MNIST_CLASSES)


def test_missing_fashion_mnist_says_how_to_install(tmp_path):
    with pytest.raises(DatasetError, match="apt-get install dataset-fashion-mnist"):
        load_fashion_mnist(tmp_path / "nowhere")


@pytest.mark.skipif(not FASHION_MNIST_DIR.is_dir(), reason="Debian package dataset-fashion-mnist not installed")
def test_the_installed_debian_dataset():
    data = load_fashion_mnist(sample=100, seed=0)
    assert len(data.images) == 100 and len(set(data.labels)) == 10


def test_image_folder(tmp_path):
    for label, colour in (("red", (255, 0, 0)), ("blue", (0, 0, 255))):
        (tmp_path / label).mkdir()
        for i in range(3):
            buf = io.BytesIO()
            Image.new("RGB", (16 + i, 16), colour).save(buf, "PNG")
            (tmp_path / label / f"{i}.png").write_bytes(buf.getvalue())
    (tmp_path / "red" / "notes.jpg").write_text("not an image")
    data = load_image_folder(tmp_path, sample=100, seed=0)
    assert sorted(data.labels) == ["blue"] * 3 + ["red"] * 3
    assert "1 unreadable skipped" in data.description


def test_image_folder_needs_two_labels(tmp_path):
    (tmp_path / "only").mkdir()
    Image.new("RGB", (4, 4)).save(tmp_path / "only" / "a.png")
    with pytest.raises(DatasetError):
        load_image_folder(tmp_path)
    with pytest.raises(DatasetError):
        load_image_folder(tmp_path / "missing")
