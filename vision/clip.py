"""The `clip` embedder: open_clip image tower (ONNX when possible) and text tower, one shared space."""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from PIL import Image

from vision.embedder import Embedder, _file_digest, l2_normalize
from vision.model import ModelLoadError
from vision.yolo import _check_reachable

log = logging.getLogger(__name__)

HUB_HOST = "huggingface.co"  # where open_clip fetches laion/datacomp weights
RANDOM_SEED = 0  # pretrained=None: seeded, so the random model (and its ONNX cache) is reproducible


class ClipEmbedder(Embedder):
    """open_clip model + pretrained tag (or local checkpoint, or None = seeded random init for tests)."""

    name = "clip"
    supports_text = True

    def __init__(
        self,
        *,
        model_name: str = "ViT-B-32",
        pretrained: str | Path | None = "laion2b_s34b_b79k",
        load_timeout: float = 600.0,
        **kwargs,
    ):
        super().__init__(**kwargs)
        import open_clip

        cfg = open_clip.get_model_config(model_name)
        if cfg is None:
            raise ModelLoadError(f"open_clip has no model {model_name!r} (see open_clip.list_models())")
        self.model_name = model_name
        self.pretrained = None if pretrained in (None, "", "none", "None") else str(pretrained)
        self.dim = int(cfg["embed_dim"])
        size = cfg.get("vision_cfg", {}).get("image_size", 224)
        self.input_size = int(size if isinstance(size, int) else size[0])
        self.load_timeout = load_timeout
        self._model = None
        self._transform = None
        self._tokenizer = None

    @property
    def _is_local(self) -> bool:
        p = self.pretrained
        return p is not None and (os.sep in p or p.endswith((".pt", ".pth", ".bin", ".safetensors")))

    @property
    def version(self) -> str:
        if self.pretrained is None:
            return f"{self.model_name}-random-seed{RANDOM_SEED}"
        if self._is_local:
            if not hasattr(self, "_digest"):
                self._digest = _file_digest(Path(self.pretrained))
            return f"{self.model_name}-file-{self._digest}"
        return f"{self.model_name}-{self.pretrained}"

    def describe(self) -> str:
        src = {None: "random init (no weights)"}.get(self.pretrained, self.pretrained)
        return f"clip {self.model_name}: {self.dim}-d, weights {src}, runtime {self.runtime}"

    def preprocess(self, image: Image.Image) -> np.ndarray:
        return self._transform(image.convert("RGB") if image.mode != "RGB" else image).numpy()

    def embed_text(self, texts: Sequence[str]) -> np.ndarray:
        """Embed text queries into the same space as the images (torch; text queries are few)."""
        import torch

        self.load()
        if len(texts) == 0:
            return np.zeros((0, self.dim), dtype=np.float32)
        parts = []
        with torch.inference_mode():
            for start in range(0, len(texts), self.batch_size):
                tokens = self._tokenizer(list(texts[start : start + self.batch_size]))
                parts.append(self._model.encode_text(tokens).float().numpy())
        return l2_normalize(np.concatenate(parts))

    def _build_image_tower(self):
        import open_clip
        import torch

        cache = self.cache_dir / "open_clip"
        if self.pretrained is None:
            with torch.random.fork_rng(devices=[]):  # seed without disturbing the caller's RNG
                torch.manual_seed(RANDOM_SEED)
                model, _, transform = open_clip.create_model_and_transforms(self.model_name, pretrained=None)
        elif self._is_local:
            if not Path(self.pretrained).is_file():
                raise ModelLoadError(f"CLIP checkpoint not found: {self.pretrained}")
            try:
                model, _, transform = open_clip.create_model_and_transforms(self.model_name, pretrained=self.pretrained)
            except Exception as exc:
                raise ModelLoadError(
                    f"CLIP checkpoint {self.pretrained} does not load into {self.model_name}: {exc}"
                ) from exc
        else:
            model, transform = self._load_from_hub(open_clip, cache)
        model.eval()
        self._model, self._transform = model, transform
        self._tokenizer = open_clip.get_tokenizer(self.model_name)
        return _image_tower(model).eval()

    def _load_from_hub(self, open_clip, cache: Path):
        tags = open_clip.list_pretrained_tags_by_model(self.model_name)
        if self.pretrained not in tags:
            raise ModelLoadError(
                f"open_clip has no pretrained tag {self.pretrained!r} for {self.model_name}; "
                f"known tags: {', '.join(tags) or 'none'}; or give a local checkpoint path"
            )
        hint = (
            f"fetch the checkpoint on a connected machine (open_clip {self.model_name} {self.pretrained}) "
            f"and set VITRINE_CLIP_PRETRAINED to its file path"
        )
        offline = _check_reachable(HUB_HOST)
        outcome: dict = {}

        def run() -> None:
            # Cached weights load without the network; otherwise this downloads (~600 MB for ViT-B-32).
            try:
                model, _, transform = open_clip.create_model_and_transforms(
                    self.model_name, pretrained=self.pretrained, cache_dir=str(cache)
                )
                outcome["result"] = (model, transform)
            except BaseException as exc:  # reported to the loading thread below
                outcome["error"] = exc

        worker = threading.Thread(target=run, name="clip-load", daemon=True)
        worker.start()
        worker.join(self.load_timeout)
        if worker.is_alive():
            raise ModelLoadError(
                f"loading CLIP {self.model_name}/{self.pretrained} did not finish in {self.load_timeout:.0f}s; {hint}"
            )
        if "error" in outcome:
            why = f"{HUB_HOST} is unreachable ({offline}); this machine looks offline" if offline else outcome["error"]
            raise ModelLoadError(f"cannot load CLIP {self.model_name}/{self.pretrained}: {why}. {hint}")
        return outcome["result"]


def _image_tower(model):
    import torch

    class ImageTower(torch.nn.Module):
        """The CLIP image encoder alone (what the ONNX graph contains)."""

        def __init__(self, clip_model):
            super().__init__()
            self.clip = clip_model

        def forward(self, x):
            return self.clip.encode_image(x)

    return ImageTower(model)
