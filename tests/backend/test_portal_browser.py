"""The portal in a real headless Chromium (Debian's /usr/bin/chromium, driven by Playwright): an auditor
signs in, looks up a delivered request, and the page proves it in the browser (leaf, Merkle path) and on
chain (eth_call from the browser to the RPC). The screenshots are inspected: the verdict badge must be
green when the proof holds and red after the proof data is tampered with in the page."""

from __future__ import annotations

from pathlib import Path
from urllib.parse import urlencode

import pytest
from PIL import Image
from playwright.sync_api import Page, sync_playwright

from tests.backend.support.scenes import Scene

pytestmark = pytest.mark.integration
CHROMIUM = "/usr/bin/chromium"
GREEN = (0x1A, 0x7F, 0x37)  # .badge.ok
RED = (0xCF, 0x22, 0x2E)  # .badge.bad


def _share_of_colour(png: Path, page: Page, selector: str, colour: tuple[int, int, int]) -> float:
    """Share of the element's pixels (in the screenshot) within a small distance of ``colour``."""
    box = page.locator(selector).bounding_box()
    assert box is not None and box["width"] > 20 and box["height"] > 10
    image = Image.open(png).convert("RGB")
    region = image.crop(
        (int(box["x"]), int(box["y"]), int(box["x"] + box["width"]), int(box["y"] + box["height"]))
    )
    pixels = list(region.getdata())
    close = sum(1 for p in pixels if sum(abs(a - b) for a, b in zip(p, colour, strict=True)) < 40)
    return close / len(pixels)


def test_an_auditor_proves_a_line_in_the_browser_and_a_tampered_proof_fails(
    scene: Scene, live_api: str, tmp_path: Path
) -> None:
    assert Path(CHROMIUM).is_file(), "scripts/bootstrap.sh installs Debian's chromium"
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        try:
            page = browser.new_page(viewport={"width": 1280, "height": 1000})
            page.goto(f"{live_api}/portal/login")
            page.fill("#api_key", scene.auditor.api_key)
            page.click("#sign-in")
            page.wait_for_url(f"{live_api}/portal/")
            query = urlencode({"source": "cf-shop", "request_id": scene.request_ids[1]})
            page.goto(f"{live_api}/portal/lookup?{query}")
            page.wait_for_selector("#overall[data-result]", timeout=60_000)
            assert page.get_attribute("#overall", "data-result") == "pass", page.inner_text("#result")
            for step in ("step-leaf", "step-path", "step-chain"):
                assert page.get_attribute(f"#{step}", "data-result") == "pass", step
            verified = tmp_path / "verified.png"
            page.screenshot(path=str(verified), full_page=False)
            assert _share_of_colour(verified, page, "#overall", GREEN) > 0.5
            assert _share_of_colour(verified, page, "#overall", RED) < 0.05

            # Change one delivered-bytes value in the page's proof data: the browser must refuse it.
            page.evaluate(
                """() => {
                    const el = document.getElementById("proof-data");
                    const doc = JSON.parse(el.textContent);
                    doc.leaf_values[7] = String(BigInt(doc.leaf_values[7]) + 1n);
                    el.textContent = JSON.stringify(doc);
                }"""
            )
            page.click("#reverify")
            page.wait_for_selector("#overall[data-result='fail']", timeout=60_000)
            assert page.get_attribute("#step-leaf", "data-result") == "fail"
            tampered = tmp_path / "tampered.png"
            page.screenshot(path=str(tampered), full_page=False)
            assert _share_of_colour(tampered, page, "#overall", RED) > 0.5
            assert _share_of_colour(tampered, page, "#overall", GREEN) < 0.05
        finally:
            browser.close()
