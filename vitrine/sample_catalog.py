"""A small sample catalog built from real photos that ship inside installed packages (offline).

ultralytics ships bus.jpg and zidane.jpg, matplotlib a gift-box PNG and a portrait; the samples
are crops, mirrors and rotations of them, so a few products genuinely look alike.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from PIL import Image, ImageOps


@dataclass(frozen=True)
class Sample:
    id: str
    title: str
    category: str
    price: str
    image: str  # file name under the output folder


def _assets() -> dict[str, Path]:
    import matplotlib
    import ultralytics

    ua = Path(ultralytics.__file__).parent / "assets"
    mpl = Path(matplotlib.get_data_path()) / "sample_data"
    return {
        "bus": ua / "bus.jpg",
        "zidane": ua / "zidane.jpg",
        "gift": mpl / "Minduka_Present_Blue_Pack.png",
        "portrait": mpl / "grace_hopper.jpg",
    }


def _crop(img: Image.Image, box: tuple[float, float, float, float]) -> Image.Image:
    w, h = img.size
    return img.crop((int(box[0] * w), int(box[1] * h), int(box[2] * w), int(box[3] * h)))


def _on_white(img: Image.Image, angle: float = 0.0) -> Image.Image:
    img = img.convert("RGBA")
    if angle:
        img = img.rotate(angle, expand=True, resample=Image.Resampling.BICUBIC)
    canvas = Image.new("RGBA", (img.width + 80, img.height + 80), (255, 255, 255, 255))
    canvas.alpha_composite(img, (40, 40))
    return canvas.convert("RGB")


SAMPLES = [
    Sample("bus-front", "City bus, front view", "vehicles", "49.90", "bus-front.jpg"),
    Sample("bus-wide", "City bus on the street", "vehicles", "39.90", "bus-wide.jpg"),
    Sample("bus-mirror", "City bus, mirrored print", "vehicles", "44.00", "bus-mirror.jpg"),
    Sample("suit-left", "Dark suit with tie", "apparel", "299.00", "suit-left.jpg"),
    Sample("suit-right", "Suit, relaxed fit", "apparel", "259.00", "suit-right.jpg"),
    Sample("gift-blue", "Blue gift box", "gifts", "12.50", "gift-blue.jpg"),
    Sample("gift-blue-tilt", "Blue gift box, large", "gifts", "18.00", "gift-blue-tilt.jpg"),
    Sample("portrait", "Portrait print", "prints", "25.00", "portrait.jpg"),
]


def write_sample_images(out: Path) -> list[Sample]:
    """Render the sample images into `out` (idempotent) and return the catalog."""
    out.mkdir(parents=True, exist_ok=True)
    a = _assets()
    bus, zidane = Image.open(a["bus"]).convert("RGB"), Image.open(a["zidane"]).convert("RGB")
    gift = Image.open(a["gift"])
    renders = {
        "bus-front.jpg": _crop(bus, (0.0, 0.2, 1.0, 0.75)),
        "bus-wide.jpg": bus,
        "bus-mirror.jpg": ImageOps.mirror(_crop(bus, (0.05, 0.15, 1.0, 0.8))),
        "suit-left.jpg": _crop(zidane, (0.05, 0.0, 0.6, 1.0)),
        "suit-right.jpg": ImageOps.mirror(_crop(zidane, (0.5, 0.0, 1.0, 1.0))),
        "gift-blue.jpg": _on_white(gift),
        "gift-blue-tilt.jpg": _on_white(gift.resize((gift.width * 3 // 2, gift.height * 3 // 2)), angle=12),
        "portrait.jpg": Image.open(a["portrait"]).convert("RGB"),
    }
    for name, img in renders.items():
        path = out / name
        if not path.exists():
            img.save(path, quality=90)
    return SAMPLES


def sample_event(
    sample: Sample, tenant_id: str, base_url: str, *, version: int = 1, event_id: str | None = None
) -> dict:
    """A product.upserted event for one sample, with its image served from `base_url`."""
    return {
        "event_id": event_id or f"{tenant_id}-{sample.id}-v{version}",
        "tenant_id": tenant_id,
        "type": "product.upserted",
        "product": {
            "id": sample.id,
            "version": version,
            "title": sample.title,
            "category": sample.category,
            "price": sample.price,
            "currency": "EUR",
            "in_stock": True,
            "image_urls": [f"{base_url}/{sample.image}"],
        },
    }
