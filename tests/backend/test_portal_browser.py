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


def test_chart_legends_fit_and_a_settlement_opens_with_its_statement(scene: Scene, live_api: str) -> None:
    """In a real browser: every legend entry of the overview's usage chart is drawn inside the chart
    (not clipped); the settlements list links to a detail page, which links to the statement, whose
    style element the page's Content-Security-Policy allows (by hash) and applies."""
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        try:
            page = browser.new_page(viewport={"width": 900, "height": 1000})
            page.goto(f"{live_api}/portal/login")
            page.fill("#api_key", scene.auditor.api_key)
            page.click("#sign-in")
            page.wait_for_url(f"{live_api}/portal/")
            chart = page.locator("svg.chart-bytes").bounding_box()
            entries = page.locator("svg.chart-bytes g.legend")
            assert chart is not None and entries.count() >= 1
            for i in range(entries.count()):
                box = entries.nth(i).bounding_box()
                assert box is not None and box["width"] > 10
                assert chart["x"] <= box["x"] and box["x"] + box["width"] <= chart["x"] + chart["width"]
                assert box["y"] + box["height"] <= chart["y"] + chart["height"]

            page.goto(f"{live_api}/portal/settlements")
            rows = page.locator("tr.settlement")
            posted = next(
                i for i in range(rows.count()) if "vault holds this root" in rows.nth(i).inner_text()
            )
            rows.nth(posted).locator("a").click()
            page.wait_for_selector("#settlement-badge")
            assert "tUSDC, 6 decimals" in page.inner_text("td.token")
            assert page.get_attribute("#settlement-badge .badge", "data-verified") == "ok"
            page.click("#statement-link")
            page.wait_for_load_state()
            assert "tUSDC" in page.inner_text("body")
            font_size = page.evaluate("() => getComputedStyle(document.body).fontSize")
            assert font_size == "12px"  # STATEMENT_CSS applied: the CSP let its style element through
        finally:
            browser.close()
