"""`vitrine.screenshots` for one state in real headless Chromium: sign in once, open the results page's deep
link with the sign-in cookie, save a PNG that is not blank, and no 'None' / 'nan' in the page's DOM text."""

from __future__ import annotations

import time

import numpy as np
import pytest
from PIL import Image

from vitrine.screenshots import BrowserMissing, browser_paths, take_screenshots

pytestmark = pytest.mark.integration

try:
    browser_paths()
except BrowserMissing as exc:
    pytest.skip(str(exc), allow_module_level=True)


def test_guardrail_failing_results_page(database_url, tmp_path):
    t0 = time.monotonic()
    # half the users of the docs' screenshot: still a failing guardrail, half the seeding and aggregation time
    result = take_screenshots(tmp_path, ["guardrail"], width=1280, database_url=database_url, scale=0.5)
    shot = result["screenshots"][0]
    pixels = np.asarray(Image.open(shot["path"]).convert("L"), dtype=float)
    assert pixels.shape[1] == 1280 and pixels.shape[0] >= 1000
    assert pixels.std() > 20  # a blank or one-colour page has ~0
    assert shot["bad_words"] == [] and not shot["overflow_x"]
    text = shot["text"]
    assert "Guardrail failed: Conversion" in text and "Running" in text  # signed in through the cookie
    assert "efficientnet-lite0" in text  # served by
    print(f"screenshot test: {time.monotonic() - t0:.1f} s, seeding {result['seed_seconds']} s")
