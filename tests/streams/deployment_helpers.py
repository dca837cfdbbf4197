"""Helpers of the deployment tests: a catalog of stored backbone vectors, a ready trained head on it, a small
fine-tuned tower (a real ONNX graph) to re-embed from the images."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from core.contracts import CatalogEvent
from db import catalog
from db import trained_models as models_repo
from db.catalog import ImageResult, ItemRow
from vision.trained import write_artefact

BACKBONE = "m@1"  # the test catalog's stored "backbone" vectors, 4-d
DIM_IN, DIM_OUT, BITS = 4, 6, 8


def head_weights(seed: int = 0, *, bits: int | None = BITS) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    head = {
        "w1": rng.normal(size=(DIM_IN, 16)).astype(np.float32),
        "b1": np.zeros(16, np.float32),
        "w2": rng.normal(size=(16, DIM_OUT)).astype(np.float32),
        "b2": np.zeros(DIM_OUT, np.float32),
    }
    if bits:
        head |= {"w3": rng.normal(size=(DIM_OUT, bits)).astype(np.float32), "b3": np.zeros(bits, np.float32)}
    return head


def head_card(*, backbone: str = BACKBONE, bits: int | None = BITS) -> dict:
    card = {
        "name": "triplet-head",
        "method": "triplet",
        "dim": DIM_OUT,
        "input": {"size": 224, "preprocessing": "imagenet"},
        "backbone": {"name": "efficientnet-lite0", "model_key": backbone},
    }
    return card | ({"bits": bits} if bits else {})


def ready_model(s, tenant: str, directory: Path, *, seed: int = 0, bits: int | None = BITS, **card_changes) -> str:
    """Register a finished training job of `tenant` with a head artefact; returns its model key."""
    card = head_card(bits=bits, **card_changes)
    path = write_artefact(directory, card, head=head_weights(seed, bits=bits))
    job = models_repo.start_job(s, tenant, method="triplet", finetune=False, params={})
    key = path.stem
    stored = card | {"weights": "head.npz"}
    models_repo.finish_job(s, tenant, job.job_id, model_key=key, artefact_path=str(path), card=stored)
    return key


def products(
    s, tenant: str, ids: range | list[int], *, version: int = 1, derived=None, seed: int = 0, backbone: str = BACKBONE
) -> None:
    """Products `p<i>` with one image and one 4-d backbone item each (clustered by i % 5), in one upsert."""
    rng = np.random.default_rng(seed)
    batch = []
    for i in ids:
        vec = np.eye(DIM_IN, dtype=np.float32)[i % DIM_IN] + rng.normal(scale=0.1, size=DIM_IN).astype(np.float32)
        event = CatalogEvent.model_validate(
            {
                "event_id": f"{tenant}-p{i}-v{version}",
                "tenant_id": tenant,
                "type": "product.upserted",
                "product": {
                    "id": f"p{i}",
                    "version": version,
                    "title": f"P{i}",
                    "category": f"c{i % 3}",
                    "image_urls": [f"https://x.test/p{i}.jpg"],
                },
            }
        )
        item = ItemRow("whole", (0, 0, 1, 1), "product", 1.0, vec / np.linalg.norm(vec))
        image = ImageResult(f"https://x.test/p{i}.jpg", 0, "ok", content_hash=f"h{i}-{version}", items=[item])
        batch.append((event, [image]))
    catalog.upsert_products(s, batch, model_key=backbone, dim=DIM_IN, derived=derived)


TOWER_DIM = 8


def tower_artefact(directory: Path) -> Path:
    """A small real ONNX tower (conv, pool) with a fine-tune's card: `vitrine model train --finetune`, in miniature."""
    import torch

    from vision.onnx_export import export_onnx

    torch.manual_seed(0)
    module = torch.nn.Sequential(
        torch.nn.Conv2d(3, TOWER_DIM, 3, stride=4), torch.nn.ReLU(), torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten()
    ).eval()
    directory.mkdir(parents=True, exist_ok=True)
    export_onnx(module, torch.rand(2, 3, 64, 64), directory / "tower.onnx")
    card = {"name": "triplet-finetune", "method": "finetune", "dim": TOWER_DIM,
            "input": {"size": 64, "preprocessing": "imagenet"}}  # fmt: skip
    return write_artefact(directory / "models", card, onnx=(directory / "tower.onnx").read_bytes())


def ready_tower(s, tenant: str, path: Path) -> str:
    """Register a finished fine-tuning job of `tenant` with the tower artefact at `path`; returns its model key."""
    job = models_repo.start_job(s, tenant, method="triplet", finetune=True, params={})
    models_repo.finish_job(s, tenant, job.job_id, model_key=path.stem, artefact_path=str(path), card={})
    return path.stem
