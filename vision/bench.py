"""Throughput measurements of detectors and embedders on a fixed image set, and the machine they ran on."""

from __future__ import annotations

import importlib.util
from importlib import metadata
import os
import platform
import resource
import sys
import time
from pathlib import Path
from typing import Callable, Sequence

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
    for package, rel in (("ultralytics", "assets/bus.jpg"), ("ultralytics", "assets/zidane.jpg"),
                         ("matplotlib", "mpl-data/sample_data/grace_hopper.jpg")):
        spec = importlib.util.find_spec(package)
        if spec and spec.submodule_search_locations:
            path = Path(spec.submodule_search_locations[0]) / rel
            if path.is_file():
                found.append(path)
    if not found:
        raise FileNotFoundError("no sample photos found (ultralytics or matplotlib must be installed)")
    return found


def throughput(fn: Callable[[Sequence[Image.Image]], object], images: Sequence[Image.Image], batch: int,
               *, warmup: int = 1, min_seconds: float = 0.0) -> dict:
    """Images/s of fn over images in batches of `batch`, after `warmup` untimed batches."""
    batches = [images[i:i + batch] for i in range(0, len(images), batch)]
    for b in batches[:warmup]:
        fn(b)
    done, started = 0, time.perf_counter()
    while True:
        for b in batches:
            fn(b)
            done += len(b)
        elapsed = time.perf_counter() - started
        if elapsed >= min_seconds:
            break
    return {"batch": batch, "images": done, "seconds": round(elapsed, 3),
            "images_per_s": round(done / elapsed, 2)}


def bench_detector(detector: Detector, images: Sequence[Image.Image]) -> dict:
    """Detection images/s, one image per call (as the ingest worker calls it)."""
    started = time.perf_counter()
    detector.load()
    load_s = time.perf_counter() - started
    return {"detector": detector.describe(), "load_seconds": round(load_s, 2),
            **throughput(detector.detect, images, 1)}


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
    return {"model_key": embedder.model_key, "dim": embedder.dim, "runtime": embedder.runtime,
            "load_seconds": round(load_s, 2), "runs": runs}


def peak_rss_mb() -> float:
    """Peak resident memory of this process so far (Linux reports ru_maxrss in KiB)."""
    kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return round(kib / 1024 if sys.platform != "darwin" else kib / 2**20, 1)


def machine_info() -> dict:
    """CPU model, cores, Python and the versions of the inference libraries."""
    info = {"cpu": _cpu_model(), "cores": os.cpu_count(), "python": platform.python_version(),
            "platform": platform.platform(),
            # Shared machines: a busy neighbour halves the figures; the reader should see that.
            "load_average_1m": round(os.getloadavg()[0], 2) if hasattr(os, "getloadavg") else None}
    # Versions from package metadata: importing ultralytics here would configure it before vision does.
    for key, dist in (("torch", "torch"), ("onnxruntime", "onnxruntime"), ("open_clip", "open_clip_torch"),
                      ("ultralytics", "ultralytics"), ("numpy", "numpy"), ("pillow", "pillow")):
        try:
            info[key] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            info[key] = None
    try:
        import torch

        info["torch_threads"] = torch.get_num_threads()
    except ImportError:
        pass
    return info


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()
