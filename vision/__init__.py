"""Image bytes -> items (box, label, score, crop) -> vectors. Knows nothing of Kafka, HTTP or SQL.

Importing vision costs numpy and Pillow only: torch, onnxruntime, open_clip and ultralytics are
imported when a model loads.
"""

from vision.detector import Detection, Detector, create_detector
from vision.embedder import Embedder, TextNotSupported, create_embedder
from vision.image import ImageError, LoadedImage, content_hash, load_image
from vision.items import ItemCrop, extract_items
from vision.model import ModelLoadError, UnknownBackend, VisionError

__all__ = [
    "Detection",
    "Detector",
    "Embedder",
    "ImageError",
    "ItemCrop",
    "LoadedImage",
    "ModelLoadError",
    "TextNotSupported",
    "UnknownBackend",
    "VisionError",
    "content_hash",
    "create_detector",
    "create_embedder",
    "extract_items",
    "load_image",
]
