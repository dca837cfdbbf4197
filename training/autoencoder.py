"""The cold-start baseline: a convolutional autoencoder from pixels (3 x S x S, RGB in [0, 1]) to a code.

It needs no backbone and no labels; its encoder, exported to ONNX, is the embedder. It is here for
comparison: reconstructing pixels rewards colour and layout, not what makes two products alike.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass

import numpy as np
from PIL import Image

from training.methods import FittedHead, Progress


@dataclass(frozen=True)
class AutoencoderConfig:
    """Hyperparameters; recorded in the model card."""

    size: int = 128  # input side; must be a multiple of 16
    code: int = 512
    width: int = 32
    epochs: int = 10
    batch_size: int = 64
    lr: float = 1e-3
    seed: int = 0

    def as_dict(self) -> dict:
        return asdict(self)


def pixels(images: Sequence[Image.Image], size: int) -> np.ndarray:
    """(n, 3, size, size) float32 in [0, 1]: the autoencoder's input (the artefact's `unit` preprocessing)."""
    out = np.empty((len(images), 3, size, size), dtype=np.float32)
    for i, image in enumerate(images):
        rgb = image.convert("RGB").resize((size, size), Image.BILINEAR)
        out[i] = (np.asarray(rgb, dtype=np.float32) / 255.0).transpose(2, 0, 1)
    return out


def build_autoencoder(cfg: AutoencoderConfig):
    """Encoder (4 stride-2 convolutions, a linear layer to `code`) and a mirrored decoder."""
    import torch
    from torch import nn

    if cfg.size % 16:
        raise ValueError("the autoencoder's input size must be a multiple of 16")
    w, side = cfg.width, cfg.size // 16

    def down(i, o):
        return nn.Sequential(nn.Conv2d(i, o, 3, stride=2, padding=1), nn.BatchNorm2d(o), nn.ReLU())

    def up(i, o):
        return nn.Sequential(nn.ConvTranspose2d(i, o, 4, stride=2, padding=1), nn.BatchNorm2d(o), nn.ReLU())

    class Autoencoder(nn.Module):
        def __init__(self):
            super().__init__()
            self.encoder = nn.Sequential(
                down(3, w), down(w, 2 * w), down(2 * w, 4 * w), down(4 * w, 8 * w), nn.Flatten(),
                nn.Linear(8 * w * side * side, cfg.code),
            )  # fmt: skip
            self.decoder = nn.Sequential(
                nn.Linear(cfg.code, 8 * w * side * side), nn.Unflatten(1, (8 * w, side, side)),
                up(8 * w, 4 * w), up(4 * w, 2 * w), up(2 * w, w), nn.ConvTranspose2d(w, 3, 4, stride=2, padding=1),
                nn.Sigmoid(),
            )  # fmt: skip

        def forward(self, x):
            return self.decoder(self.encoder(x))

    torch.manual_seed(cfg.seed)
    return Autoencoder()


def fit_autoencoder(images: Sequence[Image.Image], cfg: AutoencoderConfig, progress: Progress | None = None):
    """Train on `images` (reconstruction MSE); returns (the model, FittedHead with no weights: see export)."""
    import torch

    model = build_autoencoder(cfg)
    x = torch.from_numpy(pixels(images, cfg.size))
    optimizer = torch.optim.Adam(model.parameters(), lr=cfg.lr)
    generator = torch.Generator().manual_seed(cfg.seed)
    per_epoch = max(1, len(x) // cfg.batch_size)
    total, step, losses, started = cfg.epochs * per_epoch, 0, [], time.perf_counter()
    model.train()
    for _ in range(cfg.epochs):
        order = torch.randperm(len(x), generator=generator)
        epoch = []
        for b in range(per_epoch):
            batch = x[order[b * cfg.batch_size : (b + 1) * cfg.batch_size]]
            loss = torch.nn.functional.mse_loss(model(batch), batch)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            step += 1
            epoch.append(float(loss.detach()))
            if progress is not None:
                progress(step, total, epoch[-1])
        losses.append(float(np.mean(epoch)))
    return model.eval(), FittedHead({}, losses, time.perf_counter() - started)


def encoder_onnx(model, cfg: AutoencoderConfig, path) -> bytes:
    """The encoder as ONNX bytes (verified against torch by vision's exporter)."""
    import torch

    from vision.onnx_export import export_onnx

    example = torch.rand(2, 3, cfg.size, cfg.size, generator=torch.Generator().manual_seed(cfg.seed))
    export_onnx(model.encoder.eval(), example, path)
    return path.read_bytes()
