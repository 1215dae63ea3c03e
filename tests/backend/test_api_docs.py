"""/docs (Swagger UI) and /redoc (ReDoc) are served whole by the app: every asset the pages reference
comes from the app, no page names another host, and in a real headless Chromium both render the API's
operations under their Content-Security-Policy with no request leaving the app and no CSP violation."""

from __future__ import annotations

import re
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urljoin, urlsplit

import pytest
import uvicorn
from fastapi.testclient import TestClient
from playwright.sync_api import sync_playwright

from edgeledger.apidocs.views import CONTENT_SECURITY_POLICY
from edgeledger.config import Settings
from edgeledger.main import create_app
from tests.backend.support.stack import free_port

CHROMIUM = "/usr/bin/chromium"
PAGES = ("/docs", "/redoc")


@pytest.fixture
def docs_app(tmp_path: Path) -> Iterator[TestClient]:
    app = create_app(Settings(data_dir=tmp_path))
    with TestClient(app) as client:
        yield client
    app.state.engine.dispose()


@pytest.fixture
def served(tmp_path: Path) -> Iterator[str]:
    """The app on a free loopback port (the pages need no chain, IPFS node or database)."""
    port = free_port()
    server = uvicorn.Server(
        uvicorn.Config(
            create_app(Settings(data_dir=tmp_path)), host="127.0.0.1", port=port, log_level="warning"
        )
    )
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    while not server.started:
        time.sleep(0.05)
    yield f"http://127.0.0.1:{port}"
    server.should_exit = True
    thread.join(timeout=10)


def _references(html: str) -> list[str]:
    return re.findall(r'(?:src|href)="([^"]+)"', html)


def test_every_asset_the_pages_reference_comes_from_the_app(docs_app: TestClient) -> None:
    for page in PAGES:
        response = docs_app.get(page)
        assert response.status_code == 200
        assert response.headers["content-security-policy"] == CONTENT_SECURITY_POLICY
        assert re.search(r"https?:|//", response.text.replace("<!doctype html>", "")) is None, response.text
        references = _references(response.text)
        assert len(references) >= 3, references
        for reference in [*references, "openapi.json"]:
            url = urljoin(f"http://testserver{page}", reference)
            assert urlsplit(url).netloc == "testserver", url
            asset = docs_app.get(url)
            assert asset.status_code == 200, (url, asset.text[:200])
            assert len(asset.content) > 100, url
    bundle = docs_app.get("/docs/assets/swagger-ui-bundle.js")
    assert (
        bundle.headers["content-type"].startswith("text/javascript") and b"SwaggerUIBundle" in bundle.content
    )


def test_only_the_listed_assets_are_served(docs_app: TestClient) -> None:
    for name in ("package.json", "..%2F..%2Fpackage.json", "swagger-ui.js.map"):
        response = docs_app.get(f"/docs/assets/{name}")
        assert response.status_code == 404 and response.json()["error"]["code"] == "not_found"
    assert docs_app.get("/docs/assets/../../pyproject.toml").status_code == 404


def test_both_pages_render_in_a_browser_without_leaving_the_app(served: str, tmp_path: Path) -> None:
    assert Path(CHROMIUM).is_file(), "scripts/bootstrap.sh installs Debian's chromium"
    origin = urlsplit(served).netloc
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        try:
            for page_path, ready in (("/docs", ".opblock-summary"), ("/redoc", "[role=menuitem]")):
                page = browser.new_page(viewport={"width": 1280, "height": 900})
                requested: list[str] = []
                problems: list[str] = []
                page.on("request", lambda request, seen=requested: seen.append(request.url))
                page.on(
                    "console",
                    lambda message, seen=problems: (
                        seen.append(message.text)
                        if message.type == "error" or "Content Security Policy" in message.text
                        else None
                    ),
                )
                page.on("pageerror", lambda error, seen=problems: seen.append(str(error)))
                page.goto(f"{served}{page_path}")
                page.wait_for_selector(ready, timeout=60_000)
                page.wait_for_load_state("networkidle")
                operations = page.locator(ready).count()
                assert operations > 20, (page_path, operations)  # the API's operations are listed
                assert "/assets" in page.inner_text("body")  # rendered from the app's own document
                page.screenshot(path=str(tmp_path / f"{page_path.strip('/')}.png"))
                outside = [
                    url
                    for url in requested
                    if urlsplit(url).scheme in ("http", "https") and urlsplit(url).netloc != origin
                ]
                assert outside == [], outside
                assert any(url.endswith("/openapi.json") for url in requested), requested
                assert problems == [], (page_path, problems)
                page.close()
        finally:
            browser.close()
