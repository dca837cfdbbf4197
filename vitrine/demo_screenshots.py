"""`vitrine demo --screenshots DIR`: the live demo dashboard in headless Chromium, one PNG per page.

The catalog explorer on a product with several photos (thumbnails with item boxes, neighbour image grids per
model and the baseline), the latent map (pretrained beside trained) and the experiment page with its three
arms. Same browser driver as `vitrine dashboard screenshots` (vitrine/screenshots.py); each page's text is
checked for 'None' / 'nan' and for horizontal overflow, and the PNG for being more than one colour.
"""

from __future__ import annotations

import tempfile
from contextlib import ExitStack
from pathlib import Path
from typing import Any
from urllib.parse import quote

from vitrine.screenshots import _browser, _sign_in, browser_paths, capture

WIDTH = 1280


def pages(tenant: str, experiment: str, product: str) -> list[tuple[str, str, str, int]]:
    """(name, path, text that marks the page as rendered, charts to wait for)."""
    return [
        ("catalog", f"/catalog?tenant={tenant}&product={quote(product)}", "What each arm would recommend", 0),
        ("latent-map", f"/latent-map?tenant={tenant}", "Latent map", 1),
        ("experiment", f"/experiment?tenant={tenant}&experiment={experiment}", "Results per metric and arm", 2),
    ]


def showcase_product(products: list[dict]) -> str:
    """A product with several photos whose design also comes in another colour: the page shows the most."""
    from collections import Counter

    def design(p: dict) -> str:
        return str(p.get("attributes", {}).get("design"))

    designs = Counter(design(p) for p in products)
    best = max(products, key=lambda p: (len(p.get("image_urls", [])) > 1, designs[design(p)] > 1))
    return best["id"]


def take_demo_screenshots(
    url: str, password: str, out: Path, catalog, model_key: str, *, tenant: str = "demo", experiment: str | None = None
) -> list[dict[str, Any]]:
    """Save demo-<page>.png under `out`; per shot its path, size, seconds and the checks' findings."""
    from selenium.webdriver.common.by import By

    from vitrine.demo import DEMO_TENANT, EXPERIMENT

    browser_paths()
    tenant, experiment = tenant or DEMO_TENANT, experiment or EXPERIMENT
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    shots = []
    with ExitStack() as stack:
        workdir = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="demo-shots-")))
        driver = _browser(stack, workdir, WIDTH)
        _sign_in(driver, url, password)
        for name, path, marker, charts in pages(tenant, experiment, showcase_product(catalog.products)):
            shot = capture(driver, url + path, marker, charts, out / f"demo-{name}.png", WIDTH, f"demo-{name}")
            images = len(driver.find_elements(By.CSS_SELECTOR, "[data-testid='stImage'] img, img[src^='data:image']"))
            shot.pop("text")
            shots.append({"page": name, **shot, "images": images, "model": model_key})
    return shots
