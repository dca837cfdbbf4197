"""Build the vision components a process needs from its settings (the glue between Settings and vision/)."""

from __future__ import annotations

from core.settings import Settings


def build_embedder(settings: Settings):
    """The configured embedder, created but not loaded (weights load on first use)."""
    from vision.embedder import create_embedder

    options = {}
    if settings.embedder == "clip":
        options = {"model_name": settings.clip_model, "pretrained": settings.clip_pretrained}
    elif settings.embedder == "trained":
        options = {"artefact": settings.embedder_artefact}
    return create_embedder(
        settings.embedder,
        cache_dir=settings.data_dir / "models",
        batch_size=settings.embed_batch_size,
        threads=settings.torch_threads,
        use_onnx=settings.use_onnx,
        **options,
    )


def build_detector(settings: Settings):
    """The configured detector, created but not loaded."""
    from vision.detector import create_detector

    options = {}
    if settings.detector == "yolo":
        options = {"weights": settings.yolo_weights}
    return create_detector(settings.detector, cache_dir=settings.data_dir / "models", **options)
