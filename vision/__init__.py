"""Image bytes -> items (box, label, score, crop) -> vectors. Knows nothing of Kafka, HTTP or SQL."""

from vision.image import ImageError, LoadedImage, content_hash, load_image
from vision.model import ModelLoadError, UnknownBackend, VisionError

__all__ = [
    "ImageError",
    "LoadedImage",
    "ModelLoadError",
    "UnknownBackend",
    "VisionError",
    "content_hash",
    "load_image",
]
