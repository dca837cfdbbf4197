"""Fine-tuning the backbone's last blocks with the head: CUDA when present, the CPU for small catalogs.

The model is the pretrained tower (global-average-pooled EfficientNet-Lite0 features, L2-normalised)
followed by the same MLP head as the frozen-backbone depth; the stem and the first blocks stay frozen
(and in eval mode, so their batch-norm statistics stay ImageNet's). Images are augmented with
torchvision (random resized crop, horizontal flip) and the loss is the method's (supervised
contrastive or triplet). The result is exported as one ONNX graph: backbone + head.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass

import numpy as np
from PIL import Image

from training.heads import build_head
from training.methods import FittedHead, Progress
from vision.embedder import IMAGENET_MEAN, IMAGENET_STD, Embedder

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class FinetuneConfig:
    """Hyperparameters; recorded in the model card."""

    epochs: int = 6
    batch_size: int = 128
    lr_backbone: float = 3e-4
    lr_head: float = 1e-3
    weight_decay: float = 1e-4
    trainable_blocks: int = 10  # of EfficientNet-Lite0's 16 MBConv blocks, plus the 1x1 head convolution
    hidden: int = 1024
    out_dim: int = 128
    temperature: float = 0.1
    margin: float = 0.2
    min_crop: float = 0.6
    seed: int = 0
    workers: int = 0  # DataLoader worker processes (0 = the training process decodes images)

    def as_dict(self) -> dict:
        return asdict(self)


def device_name() -> str:
    """`cuda` when a GPU is usable, else `cpu`."""
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


def finetune(
    embedder: Embedder,
    images: Sequence[Image.Image],
    labels: np.ndarray,
    cfg: FinetuneConfig,
    *,
    method: str = "supervised",
    progress: Progress | None = None,
):
    """Fine-tune `embedder`'s tower (an EfficientNet-Lite0) with a new head; returns (module on CPU, FittedHead)."""
    import torch
    from pytorch_metric_learning import losses, miners
    from torchvision import transforms

    if method not in ("supervised", "triplet"):
        raise ValueError(f"fine-tuning supports the supervised and triplet methods, not {method!r}")
    torch.manual_seed(cfg.seed)
    device = device_name()
    tower = embedder._build_image_tower()  # the pretrained module, as the embedder builds it
    model = _Finetuned(tower, build_head(embedder.dim, cfg.out_dim, cfg.hidden))
    trainable = _unfreeze_last_blocks(tower, cfg.trainable_blocks)
    model.to(device)
    if device == "cuda":
        model = model.to(memory_format=torch.channels_last)
    augment = transforms.Compose(
        [
            transforms.RandomResizedCrop(embedder.input_size, scale=(cfg.min_crop, 1.0), antialias=True),
            transforms.RandomHorizontalFlip(),
            transforms.ToTensor(),
            transforms.Normalize(IMAGENET_MEAN.tolist(), IMAGENET_STD.tolist()),
        ]
    )
    labels = np.asarray(labels, dtype=np.int64)
    counts = np.bincount(labels)
    # Positives in every batch: two augmented views of each image when every label is one image (the
    # triplet method on single-photo products), m photos per product when labels are products, else
    # plain shuffling (a few categories fill any batch with positives).
    views = 2 if counts.max() == 1 else 1
    batch_size = max(2, min(cfg.batch_size, len(images) * views) // views)
    sampler = None
    if views == 1 and np.count_nonzero(counts) * 2 >= batch_size and method == "triplet":
        from pytorch_metric_learning.samplers import MPerClassSampler

        batch_size -= batch_size % 2
        sampler = MPerClassSampler(labels, m=2, batch_size=batch_size, length_before_new_iter=len(labels))
    dataset = _Images(images, labels, augment, views)
    loader = torch.utils.data.DataLoader(
        dataset,
        batch_size=batch_size,
        shuffle=sampler is None,
        sampler=sampler,
        drop_last=True,
        num_workers=cfg.workers,
        pin_memory=device == "cuda",
        persistent_workers=cfg.workers > 0,
        generator=torch.Generator().manual_seed(cfg.seed),
    )
    if method == "supervised":
        loss_fn, miner = losses.SupConLoss(temperature=cfg.temperature), None
    else:
        loss_fn = losses.TripletMarginLoss(margin=cfg.margin)
        miner = miners.TripletMarginMiner(margin=cfg.margin, type_of_triplets="semihard")
    optimizer = torch.optim.AdamW(
        [
            {"params": trainable, "lr": cfg.lr_backbone},
            {"params": model.head.parameters(), "lr": cfg.lr_head},
        ],
        weight_decay=cfg.weight_decay,
    )
    total = cfg.epochs * len(loader)
    if total == 0:
        raise ValueError("too few images for one fine-tuning batch")
    scheduler = torch.optim.lr_scheduler.OneCycleLR(
        optimizer, max_lr=[cfg.lr_backbone, cfg.lr_head], total_steps=total, pct_start=0.1
    )
    step, history, started = 0, [], time.perf_counter()
    for _ in range(cfg.epochs):
        model.train()
        _freeze_mode(tower, cfg.trainable_blocks)
        epoch = []
        for x, y in loader:
            if views > 1:  # (b, views, 3, H, W) -> (b * views, 3, H, W), each label repeated
                x, y = x.flatten(0, 1), y.repeat_interleave(views)
            x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
            if device == "cuda":
                x = x.to(memory_format=torch.channels_last)
            with torch.autocast(device_type=device, dtype=torch.bfloat16, enabled=device == "cuda"):
                z = model(x)
            z = torch.nn.functional.normalize(z.float(), dim=1)
            loss = loss_fn(z, y) if miner is None else loss_fn(z, y, miner(z, y))
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            scheduler.step()
            step += 1
            epoch.append(float(loss.detach()))
            if progress is not None:
                progress(step, total, epoch[-1])
        history.append(float(np.mean(epoch)))
    model = model.to("cpu", memory_format=torch.contiguous_format).eval()
    return model, FittedHead({}, history, time.perf_counter() - started)


def _build_finetuned_class():
    import torch

    class Finetuned(torch.nn.Module):
        """Pooled backbone features, L2-normalised, through the head (the head depth's exact input)."""

        def __init__(self, tower, head):
            super().__init__()
            self.tower, self.head = tower, head

        def forward(self, x):
            return self.head(torch.nn.functional.normalize(self.tower(x), dim=1))

    return Finetuned


def _Finetuned(tower, head):  # noqa: N802  a class built on first use, so importing this module needs no torch
    return _build_finetuned_class()(tower, head)


class _Images:
    """A map-style dataset over PIL images with integer labels (DataLoader workers pickle it)."""

    def __init__(self, images, labels, transform, views: int = 1):
        self.images, self.labels, self.transform, self.views = images, labels, transform, views

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, i):
        import torch

        image = self.images[i].convert("RGB")
        if self.views == 1:
            return self.transform(image), int(self.labels[i])
        return torch.stack([self.transform(image) for _ in range(self.views)]), int(self.labels[i])


def _unfreeze_last_blocks(tower, n: int) -> list:
    net = tower.net
    for p in net.parameters():
        p.requires_grad_(False)
    modules = [*net._blocks[len(net._blocks) - n :], net._conv_head, net._bn1] if n > 0 else []
    params = []
    for module in modules:
        for p in module.parameters():
            p.requires_grad_(True)
            params.append(p)
    return params


def _freeze_mode(tower, n: int) -> None:
    # Frozen layers keep ImageNet's batch-norm statistics: eval mode for everything before the last n blocks.
    net = tower.net
    for module in (net._conv_stem, net._bn0, *net._blocks[: len(net._blocks) - n]):
        module.eval()
