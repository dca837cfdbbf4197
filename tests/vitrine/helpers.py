"""Helpers of the roof's tests: `vitrine` commands and `vitrine up` as a user runs them (real processes)."""

from __future__ import annotations

import colorsys
import os
import subprocess
import sys
from pathlib import Path

from PIL import Image, ImageDraw


def vitrine(*args, env=None, timeout=120) -> subprocess.CompletedProcess:
    """Run one `vitrine` command to completion."""
    return subprocess.run(
        [sys.executable, "-m", "vitrine", *args],
        env={**os.environ, **(env or {})},
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def alive(pid: int) -> bool:
    """Whether the process runs (a zombie does not count)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    with open(f"/proc/{pid}/stat") as f:
        return f.read().rsplit(")", 1)[-1].split()[0] != "Z"


def start_up(env) -> tuple[subprocess.Popen, str]:
    """Start `vitrine up`; returns the process and its output up to the `ready` line."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "vitrine", "up"],
        env={**os.environ, **env},
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    lines = []
    while True:
        line = proc.stdout.readline()
        assert line, f"vitrine up exited early:\n{''.join(lines)}"
        lines.append(line)
        if line.startswith("ready"):
            return proc, "".join(lines)


# openclipart topic -> hue; the topics map to 8 different shop categories.
TOPICS = {
    "food/fruit": 0.0,
    "people/clothing/hats": 0.08,
    "recreation/toys": 0.16,
    "food/beverages": 0.3,
    "food/desserts": 0.45,
    "plants/flowers": 0.58,
    "animals/birds": 0.7,
    "transportation/vehicles": 0.85,
}
SHOP = {
    "fruit & vegetables",
    "clothing",
    "toys & games",
    "drinks",
    "desserts",
    "flowers & plants",
    "animals",
    "vehicles",
}
SHAPES = ("ellipse", "rectangle", "triangle", "diamond", "hexagon")


def write_drawings(root: Path, topics: dict[str, float], per_topic: int = 5, side: int = 200) -> Path:
    """root/<topic>/<shape>_<n>.png: a saturated shape of the topic's hue with a darker band, on transparency."""
    for topic, hue in topics.items():
        folder = root / topic
        folder.mkdir(parents=True, exist_ok=True)
        for n in range(per_topic):
            im = Image.new("RGBA", (side, side), (0, 0, 0, 0))
            draw = ImageDraw.Draw(im)
            m = side // 8 + 2 * n
            fill = _rgb(hue, 0.95 - 0.05 * (n % 3))
            shape = SHAPES[n % len(SHAPES)]
            if shape == "ellipse":
                draw.ellipse((m, m, side - m, side - m), fill=fill)
            elif shape == "rectangle":
                draw.rounded_rectangle((m, m, side - m, side - m), radius=side // 10, fill=fill)
            elif shape == "triangle":
                draw.polygon([(side // 2, m), (side - m, side - m), (m, side - m)], fill=fill)
            elif shape == "diamond":
                draw.polygon([(side // 2, m), (side - m, side // 2), (side // 2, side - m), (m, side // 2)], fill=fill)
            else:
                draw.regular_polygon((side // 2, side // 2, side // 2 - m), 6, fill=fill)
            band = Image.new("L", (side, side), 0)
            ImageDraw.Draw(band).rectangle((0, side // 2 - side // 10, side, side // 2 + side // 10), fill=255)
            im.paste(_rgb(hue, 0.55), (0, 0), Image.composite(band, Image.new("L", band.size, 0), im.getchannel("A")))
            im.save(folder / f"{shape}_{n:02d}.png")
    return root


def _rgb(hue: float, value: float) -> tuple[int, int, int, int]:
    return (*(round(c * 255) for c in colorsys.hsv_to_rgb(hue, 0.9, value)), 255)
