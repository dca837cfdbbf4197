"""One class per training method, all fitting the same MLP head on backbone features.

- `supervised`: supervised contrastive loss (pytorch-metric-learning's SupConLoss); positives share a
  label: the category, or the product.
- `triplet`: triplet margin loss with semi-hard mining (pytorch-metric-learning); positives are other
  photos of the same product, or augmented views of a single-photo product. With `bits`, a code layer
  is trained beside it: triplet loss on the relaxed codes tanh(Wz), a quantization error pushing them
  to +-1, and a weak orthogonality penalty on W, so that sign(Wz) is a compact binary code.
- `design`: self-supervised (lightly's NT-Xent loss, SimCLR-style) between two colour-removing views of
  the same image: no labels at all, and colour carries no signal.

The autoencoder is different in kind (it learns from pixels, not from backbone features): see
training/autoencoder.py.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass

import numpy as np

from training.heads import build_head, export_head

log = logging.getLogger(__name__)

Progress = Callable[[int, int, float], None]  # (step, total steps, last loss)


@dataclass(frozen=True)
class HeadConfig:
    """Hyperparameters of a head; recorded in the model card."""

    epochs: int = 20
    batch_size: int = 256
    lr: float = 1e-3
    weight_decay: float = 1e-4
    hidden: int = 1024
    out_dim: int = 128
    dropout: float = 0.2
    temperature: float = 0.1  # supervised contrastive and NT-Xent
    margin: float = 0.2  # triplet
    bits: int | None = None  # triplet: 32, 48 or 64-bit codes
    quantization_weight: float = 0.1
    orthogonality_weight: float = 0.01
    seed: int = 0

    def as_dict(self) -> dict:
        return asdict(self)


@dataclass
class HeadData:
    """What a head trains on: features (n, d) with integer labels, plus (n, v, d) augmented views if any."""

    features: np.ndarray
    labels: np.ndarray  # the positives' key per row: category or product codes
    views: np.ndarray | None = None


@dataclass
class FittedHead:
    """The trained head as arrays, with its loss curve and time."""

    weights: dict[str, np.ndarray]
    losses: list[float]
    seconds: float


class HeadMethod:
    """Shared loop: seeded batches, AdamW with a one-cycle schedule, export of the eval-mode head."""

    name = ""
    uses_labels = True
    needs_views = False

    def __init__(self, config: HeadConfig):
        self.config = config

    def fit(self, data: HeadData, progress: Progress | None = None) -> FittedHead:
        """Train a fresh head on `data`; deterministic for a seed on one machine."""
        import torch

        cfg = self.config
        torch.manual_seed(cfg.seed)
        rng = np.random.default_rng(cfg.seed)
        head = build_head(data.features.shape[1], cfg.out_dim, cfg.hidden, cfg.dropout, self.bits)
        self.setup(data)
        params = [{"params": head.parameters(), "lr": cfg.lr}]
        extra = [p for p in self.loss_parameters() if p.requires_grad]
        if extra:
            params.append({"params": extra, "lr": cfg.lr * 10})
        optimizer = torch.optim.AdamW(params, weight_decay=cfg.weight_decay)
        batches = [self.batches(data, rng) for _ in range(cfg.epochs)]
        total = sum(len(b) for b in batches)
        if total == 0:
            raise ValueError("no training batch: fewer rows than needed for one batch")
        scheduler = torch.optim.lr_scheduler.OneCycleLR(
            optimizer, max_lr=[g["lr"] for g in params], total_steps=total, pct_start=0.1
        )
        losses, step, started = [], 0, time.perf_counter()
        head.train()
        for epoch_batches in batches:
            epoch_losses = []
            for batch in epoch_batches:
                loss = self.loss(head, data, batch)
                optimizer.zero_grad()
                loss.backward()
                optimizer.step()
                scheduler.step()
                step += 1
                value = float(loss.detach())
                epoch_losses.append(value)
                if progress is not None:
                    progress(step, total, value)
            losses.append(float(np.mean(epoch_losses)))
        return FittedHead(export_head(head), losses, time.perf_counter() - started)

    @property
    def bits(self) -> int | None:
        return None

    def setup(self, data: HeadData) -> None:
        """Build the loss (and miner) once the data is known."""

    def loss_parameters(self):
        return []

    def batches(self, data: HeadData, rng: np.random.Generator) -> list[np.ndarray]:
        """One epoch's batches of row indices (shuffled, full batches only)."""
        n, b = len(data.features), min(self.config.batch_size, len(data.features))
        order = rng.permutation(n)
        return [order[i : i + b] for i in range(0, n - b + 1, b)]

    def loss(self, head, data: HeadData, batch: np.ndarray):
        raise NotImplementedError


class Supervised(HeadMethod):
    """Supervised contrastive: rows with the same label attract, all others repel."""

    name = "supervised"

    def setup(self, data: HeadData) -> None:
        from pytorch_metric_learning import losses

        self._loss = losses.SupConLoss(temperature=self.config.temperature)

    def batches(self, data: HeadData, rng: np.random.Generator) -> list[np.ndarray]:
        return _m_per_label_batches(data.labels, self.config.batch_size, rng) or super().batches(data, rng)

    def loss(self, head, data: HeadData, batch: np.ndarray):
        import torch

        x, y = _rows(data, batch)
        return self._loss(torch.nn.functional.normalize(head(x), dim=1), y)


class Triplet(HeadMethod):
    """Triplet margin loss with semi-hard mining; positives = same product (or an augmented view of it)."""

    name = "triplet"

    def __init__(self, config: HeadConfig):
        if config.bits not in (None, 32, 48, 64):
            raise ValueError("bits must be 32, 48 or 64")
        super().__init__(config)

    @property
    def bits(self) -> int | None:
        return self.config.bits

    def setup(self, data: HeadData) -> None:
        from pytorch_metric_learning import losses, miners

        self._loss = losses.TripletMarginLoss(margin=self.config.margin)
        self._miner = miners.TripletMarginMiner(margin=self.config.margin, type_of_triplets="semihard")

    def batches(self, data: HeadData, rng: np.random.Generator) -> list[np.ndarray]:
        # Views make every row a product with >= 2 samples; without views, products need 2 photos.
        labels = _with_views(data)[1]
        return _m_per_label_batches(labels, self.config.batch_size, rng, m=2) or super().batches(data, rng)

    def loss(self, head, data: HeadData, batch: np.ndarray):
        import torch

        x, y = _rows(data, batch, with_views=True)
        z = torch.nn.functional.normalize(head(x), dim=1)
        loss = self._loss(z, y, self._miner(z, y))
        if self.bits:
            h = torch.tanh(head.code_logits(z))
            loss = loss + self._loss(h, y, self._miner(h, y))
            loss = loss + self.config.quantization_weight * ((h.abs() - 1) ** 2).mean()
            w = torch.nn.functional.normalize(head.code.weight, dim=1)
            eye = torch.eye(w.shape[0], device=w.device)
            loss = loss + self.config.orthogonality_weight * ((w @ w.T - eye) ** 2).mean()
        return loss


class Design(HeadMethod):
    """Self-supervised (NT-Xent between two colour-removing views of one image): colour-agnostic designs."""

    name = "design"
    uses_labels = False
    needs_views = True

    def setup(self, data: HeadData) -> None:
        from lightly.loss import NTXentLoss

        if data.views is None or data.views.shape[1] < 2:
            raise ValueError("the design method needs at least two augmented views per image")
        self._loss = NTXentLoss(temperature=self.config.temperature)

    def loss(self, head, data: HeadData, batch: np.ndarray):
        import torch

        pick = np.random.default_rng(int(batch[0])).choice(data.views.shape[1], size=2, replace=False)
        a = torch.from_numpy(data.views[batch, pick[0]])
        b = torch.from_numpy(data.views[batch, pick[1]])
        return self._loss(head(a), head(b))


METHODS: dict[str, type[HeadMethod]] = {m.name: m for m in (Supervised, Triplet, Design)}


def _rows(data: HeadData, batch: np.ndarray, with_views: bool = False):
    import torch

    features, labels = _with_views(data) if with_views else (data.features, data.labels)
    return torch.from_numpy(features[batch]), torch.from_numpy(labels[batch].astype(np.int64))


def _with_views(data: HeadData) -> tuple[np.ndarray, np.ndarray]:
    # Originals followed by each view, all labelled with their row's label (cached on the data object).
    cached = getattr(data, "_stacked", None)
    if cached is None:
        if data.views is None:
            cached = (data.features, data.labels)
        else:
            v = data.views.shape[1]
            feats = np.concatenate([data.features, data.views.transpose(1, 0, 2).reshape(-1, data.features.shape[1])])
            cached = (np.ascontiguousarray(feats), np.concatenate([data.labels] * (v + 1)))
        data._stacked = cached
    return cached


def _m_per_label_batches(labels: np.ndarray, batch_size: int, rng: np.random.Generator, m: int = 4) -> list:
    """Batches holding m rows of each of batch_size/m labels (so every row has positives), one epoch's worth.

    pytorch-metric-learning's MPerClassSampler does the same for a DataLoader; this is its index-level
    equivalent for feature arrays, seeded by our generator."""
    from pytorch_metric_learning.samplers import MPerClassSampler

    counts = np.bincount(labels)
    per_batch = max(2, min(batch_size, len(labels)) // m * m)
    if (counts >= 2).sum() < 2 or np.count_nonzero(counts) * m < per_batch:
        return []  # few labels (categories): plain shuffled batches already hold positives
    sampler = MPerClassSampler(labels, m=m, batch_size=per_batch, length_before_new_iter=len(labels))
    import torch

    torch.manual_seed(int(rng.integers(2**31)))
    order = np.fromiter(iter(sampler), dtype=np.int64)
    return [order[i : i + per_batch] for i in range(0, len(order) - per_batch + 1, per_batch)]
