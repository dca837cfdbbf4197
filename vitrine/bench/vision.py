"""Throughput measurements of detectors and embedders on a fixed image set, and the machine they ran on."""

from __future__ import annotations

import importlib.util
import io
import resource
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
from PIL import Image

from vision.detector import Detector
from vision.embedder import Embedder


def bench_images(n: int = 64, seed: int = 0) -> list[Image.Image]:
    """A fixed set: seeded crops (200-800 px) of real photos shipped by ultralytics and matplotlib."""
    sources = [Image.open(p).convert("RGB") for p in sample_photo_paths()]
    rng = np.random.default_rng(seed)
    out = []
    for i in range(n):
        src = sources[i % len(sources)]
        w = int(rng.integers(min(200, src.width), min(800, src.width) + 1))
        h = int(rng.integers(min(200, src.height), min(800, src.height) + 1))
        x, y = int(rng.integers(0, src.width - w + 1)), int(rng.integers(0, src.height - h + 1))
        out.append(src.crop((x, y, x + w, y + h)))
    return out


def sample_photo_paths() -> list[Path]:
    """Real photos that ship inside installed packages (no download needed)."""
    found = []
    for package, rel in (
        ("ultralytics", "assets/bus.jpg"),
        ("ultralytics", "assets/zidane.jpg"),
        ("matplotlib", "mpl-data/sample_data/grace_hopper.jpg"),
    ):
        spec = importlib.util.find_spec(package)
        if spec and spec.submodule_search_locations:
            path = Path(spec.submodule_search_locations[0]) / rel
            if path.is_file():
                found.append(path)
    if not found:
        raise FileNotFoundError("no sample photos found (ultralytics or matplotlib must be installed)")
    return found


def throughput(
    fn: Callable[[Sequence[Image.Image]], object],
    images: Sequence[Image.Image],
    batch: int,
    *,
    warmup: int = 1,
    rounds: int = 3,
) -> dict:
    """Images/s of fn over all images in batches of `batch`: median and best of `rounds` timed passes.

    Several passes because a shared 2-core machine is noisy; the median is the honest figure, the
    best one shows what the code does when nothing else runs.
    """
    batches = [images[i : i + batch] for i in range(0, len(images), batch)]
    for b in batches[:warmup]:
        fn(b)
    rates = []
    for _ in range(max(1, rounds)):
        started = time.perf_counter()
        for b in batches:
            fn(b)
        rates.append(len(images) / (time.perf_counter() - started))
    return {
        "batch": batch,
        "images": len(images),
        "rounds": len(rates),
        "images_per_s": round(float(np.median(rates)), 2),
        "best_images_per_s": round(max(rates), 2),
    }


def bench_detector(detector: Detector, images: Sequence[Image.Image]) -> dict:
    """Detection images/s, one image per call (as the ingest worker calls it)."""
    started = time.perf_counter()
    detector.load()
    load_s = time.perf_counter() - started
    return {
        "name": detector.name,
        "detector": detector.describe(),
        "load_seconds": round(load_s, 2),
        **throughput(detector.detect, images, 1),
    }


def bench_embedder(embedder: Embedder, images: Sequence[Image.Image], batches: Sequence[int] = (1, 32)) -> dict:
    """Embedding images/s (preprocessing from full-size photos included) at each batch size."""
    started = time.perf_counter()
    embedder.load()
    load_s = time.perf_counter() - started
    runs = []
    original = embedder.batch_size
    try:
        for b in batches:
            embedder.batch_size = b
            runs.append(throughput(embedder.embed, images, b))
    finally:
        embedder.batch_size = original
    return {
        "model_key": embedder.model_key,
        "dim": embedder.dim,
        "runtime": embedder.runtime,
        "load_seconds": round(load_s, 2),
        "runs": runs,
    }


def bench_pipeline(detector: Detector, embedder: Embedder, images: Sequence[Image.Image], **policy) -> dict:
    """Images/s of the ingest path per image: JPEG bytes -> load_image -> detect -> extract_items -> embed."""
    from vision.image import load_image
    from vision.items import extract_items

    encoded = []
    for im in images:
        buf = io.BytesIO()
        im.save(buf, "JPEG", quality=90)
        encoded.append(buf.getvalue())

    def one_by_one(batch: Sequence[bytes]) -> None:
        for data in batch:
            loaded = load_image(data)
            items = extract_items(loaded.image, detector.detect([loaded.image])[0], **policy)
            embedder.embed([it.crop for it in items])

    return {
        "stages": "load_image + detect + extract_items + embed, one image per call",
        **throughput(one_by_one, encoded, 1),
    }


def peak_rss_mb() -> float:
    """Peak resident memory of this process so far (Linux reports ru_maxrss in KiB)."""
    kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return round(kib / 1024 if sys.platform != "darwin" else kib / 2**20, 1)
