"""`vitrine demo --screenshots DIR`: the live demo dashboard in headless Chromium, one PNG per page.

The catalog explorer on a product with several photos (thumbnails with item boxes, neighbour image grids per
model and the baseline), the latent map (pretrained beside trained) and the experiment page with its three
arms. Same browser driver as `vitrine dashboard screenshots` (vitrine/screenshots.py); each page's text is
checked for 'None' / 'nan' and for horizontal overflow, and the PNG for being more than one colour.
"""

from __future__ import annotations

import tempfile
import time
from contextlib import ExitStack
from pathlib import Path
from typing import Any
from urllib.parse import quote

from vitrine.screenshots import BAD_WORDS, CONTENT_HEIGHT_JS, _browser, _settle, _sign_in, browser_paths

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
            t0 = time.monotonic()
            driver.set_window_size(WIDTH, 1000)
            driver.get(url + path)
            try:
                _settle(driver, marker, charts)
            except TimeoutError as exc:
                driver.save_screenshot(str(out / f"failed-demo-{name}.png"))
                raise TimeoutError(f"{name}: {exc} (see {out / f'failed-demo-{name}.png'})") from exc
            height, scroll_w, client_w = driver.execute_script(CONTENT_HEIGHT_JS)
            driver.set_window_size(WIDTH, min(int(height), 6000))
            _settle(driver, marker, charts)
            file = out / f"demo-{name}.png"
            driver.save_screenshot(str(file))
            body = driver.find_element(By.TAG_NAME, "body").text
            images = len(driver.find_elements(By.CSS_SELECTOR, "[data-testid='stImage'] img, img[src^='data:image']"))
            shots.append(
                {
                    "page": name,
                    "path": str(file),
                    "width": WIDTH,
                    "height": min(int(height), 6000),
                    "seconds": round(time.monotonic() - t0, 1),
                    "images": images,
                    "bad_words": sorted(set(BAD_WORDS.findall(body))),
                    "overflow_x": scroll_w > client_w + 1,
                    "model": model_key,
                }
            )
    return shots
