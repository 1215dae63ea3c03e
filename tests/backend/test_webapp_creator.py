"""The creators' web app in a real Chromium with an injected EIP-1193 wallet backed by an anvil account:
a creator signs in, drops a file on the upload page (upload progress, then the registration signed with
``eth_signTypedData_v4``), sees the asset with its provenance; the asset is delivered and the period
settled and made claimable; the creator claims every claimable period (one ``claimMany`` sent from the
wallet, or gas-free through a signed authorization) and its token balance, read from the chain by the
test, rises by exactly the claimable amount. Then the same flow in Simplified Chinese on a phone screen,
with a licence update signed in the wallet. With WEBAPP_SCREENSHOTS=docs/screenshots the main pages are
screenshotted there."""

from __future__ import annotations

import base64
import os
import re
import secrets
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import requests
from eth_account import Account
from fastapi.testclient import TestClient
from playwright.sync_api import Browser, Page
from sqlalchemy.orm import Session

from edgeledger.auth import service as auth_service
from edgeledger.auth.models import Role
from edgeledger.chain.client import ChainClient
from edgeledger.config import PROJECT_ROOT, Settings
from edgeledger.db import make_engine
from edgeledger.devtools.samples import demo_png
from edgeledger.webapp.i18n import format_amount
from tests.backend.support.browser import (
    DESKTOP,
    DEV_ACCOUNTS,
    PHONE,
    WalletPage,
    open_wallet_page,
    screenshot,
    sign_in,
)
from tests.backend.support.scenes import settle_deliveries
from tests.backend.support.stack import make_caller, rpc

pytestmark = pytest.mark.integration
# ruff: noqa: RUF001 (the Chinese pages use full-width punctuation)
DAY = 86_400


@pytest.fixture
def shots(tmp_path: Path) -> Path:
    """Where screenshots go: ``WEBAPP_SCREENSHOTS`` (docs/webapp.md: docs/screenshots), else a temporary
    directory, so an ordinary run changes no file of the repository."""
    chosen = os.environ.get("WEBAPP_SCREENSHOTS")
    return (PROJECT_ROOT / chosen) if chosen else tmp_path


def _drop_file(page: Page, name: str, content: bytes, media_type: str) -> None:
    """Drops a file on the drop zone as a user's drag and drop would (a DataTransfer with the file)."""
    transfer = page.evaluate_handle(
        """([name, b64, type]) => {
            const bytes = Uint8Array.from(atob(b64), (c) => c.charCodeAt(0));
            const dt = new DataTransfer();
            dt.items.add(new File([bytes], name, { type }));
            return dt;
        }""",
        [name, base64.b64encode(content).decode(), media_type],
    )
    page.dispatch_event("#dropzone", "dragover", {"dataTransfer": transfer})
    page.dispatch_event("#dropzone", "drop", {"dataTransfer": transfer})


def _unlabelled(page: Page) -> list[str]:
    """Form fields of the page without a label (or aria-label): none may be."""
    return page.evaluate(
        """() => Array.from(document.querySelectorAll("input, textarea, select"))
            .filter((el) => !(el.labels && el.labels.length) && !el.getAttribute("aria-label"))
            .map((el) => el.id || el.name)"""
    )


def _upload(page: Page, base: str, title: str, content: bytes) -> None:
    page.goto(f"{base}/app/upload")
    assert _unlabelled(page) == []
    _drop_file(page, "poster.png", content, "image/png")
    assert "poster.png" in page.inner_text("#file-name")
    page.fill("#title", title)
    week_ago = (datetime.now(UTC) - timedelta(days=7)).strftime("%Y-%m-%d")
    page.fill("#valid-from", week_ago)
    page.fill("#royalty", "250")


def _register_in_browser(wallet: WalletPage, base: str, title: str, content: bytes) -> int:
    page = wallet.page
    _upload(page, base, title, content)
    # The progress bar's values as the page shows them, noted to the test (the page navigates away).
    page.evaluate(
        """() => new MutationObserver(() => window.__edgeledgerTestNote(
              "progress " + document.getElementById("progress").value))
              .observe(document.getElementById("progress"), { attributes: true })"""
    )
    page.click("#register")
    _wait_for(page, "updated=registered", "#upload-status")
    assert "eth_signTypedData_v4" in wallet.calls
    assert "progress 100" in wallet.notes, wallet.notes
    asset_id = int(re.search(r"/app/assets/(\d+)", page.url).group(1))  # type: ignore[union-attr]
    assert page.get_attribute("#asset-badge .badge", "data-verified") == "ok"
    return asset_id


def _poster() -> bytes:
    """A PNG of about 300 kB (so the upload reports progress), different every time."""
    return demo_png(secrets.token_hex(8)) + secrets.token_bytes(300_000)


def _wait_for(page: Page, in_url: str, status: str) -> None:
    """Waits until the page navigated to a URL containing ``in_url``, or its ``status`` shows an error
    (then fails with that error's text)."""
    page.wait_for_function(
        """([part, selector]) => location.href.includes(part)
            || (document.querySelector(selector) || {dataset: {}}).dataset.kind === "error" """,
        arg=[in_url, status],
        timeout=60_000,
    )
    if in_url not in page.url:
        pytest.fail(f"{status}: {page.inner_text(status)}")
    page.wait_for_load_state()


def _settle(app_client: TestClient, settings: Settings, chain_snapshot: Any, asset_id: int) -> None:
    """The asset delivered three days ago, the period settled and posted, the challenge window passed."""
    admin = make_caller(app_client, Role.admin, "admin")
    operator = make_caller(app_client, Role.operator, "operator")
    merchant = make_caller(app_client, Role.merchant, "Shop")
    provenance = app_client.get(f"/assets/{asset_id}", headers=admin.headers)
    assert provenance.status_code == 200, provenance.text
    settle_deliveries(
        app_client, settings, chain_snapshot, provenance.json()["asset"], admin, merchant, operator
    )
    rpc(settings.eth_rpc_url, "evm_increaseTime", DAY + 1)
    rpc(settings.eth_rpc_url, "evm_mine")
    assert app_client.post("/settlement/run", headers=admin.headers).status_code < 400


def _token_balance(settings: Settings, address: str) -> int:
    chain = ChainClient.from_settings(settings)
    return int(chain.call(chain.contract("TestStablecoin").functions.balanceOf(address)))


def _claimable(page: Page) -> int:
    return int(page.get_attribute("section.token dd.claimable", "data-minor") or "0")


def test_a_creator_registers_a_file_and_claims_from_the_wallet(
    chromium: Browser,
    live_api: str,
    app_client: TestClient,
    settings: Settings,
    chain_snapshot: Any,
    shots: Path,
) -> None:
    address = DEV_ACCOUNTS[7]
    wallet = open_wallet_page(chromium, settings.eth_rpc_url, address, locale="en-GB", viewport=DESKTOP)
    page = wallet.page
    try:
        sign_in(page, live_api)
        page.goto(f"{live_api}/app/upload")
        screenshot(page, shots, "webapp-upload-desktop")
        content = _poster()
        asset_id = _register_in_browser(wallet, live_api, "Poster", content)
        assert page.inner_text("#asset-title") == f"Asset {asset_id}: Poster"
        assert page.inner_text("#licence-royalty") == "250 bps"
        assert page.inner_text("#holder") == address
        assert _unlabelled(page) == []

        # A split update signed in the wallet and relayed: 70 % to the creator, 30 % to a co-author.
        co_author = DEV_ACCOUNTS[9]
        page.fill("#split-lines", f"{address} 7000\n{co_author} 3000")
        page.click("#split-submit")
        _wait_for(page, "updated=split", "#split-status")
        assert page.inner_text("#updated") == "Split updated on chain."
        rows = page.locator("#split tbody tr")
        assert rows.count() == 2 and "3,000 bps" in rows.nth(1).inner_text()
        assert co_author in rows.nth(1).inner_text()

        # The same file again: a clear refusal in the page, nothing signed.
        signed = wallet.calls.count("eth_signTypedData_v4")
        _upload(page, live_api, "Poster again", content)
        page.click("#register")
        page.wait_for_selector("#upload-status[data-kind='error']", timeout=30_000)
        assert page.inner_text("#upload-status") == "This exact file is already registered."
        assert wallet.calls.count("eth_signTypedData_v4") == signed
        page.goto(f"{live_api}/app/assets")
        assert page.locator(f"tr.asset[data-asset-id='{asset_id}']").count() == 1

        _settle(app_client, settings, chain_snapshot, asset_id)
        page.goto(f"{live_api}/app/assets/{asset_id}")
        assert "requests" in page.inner_text("#delivery-totals")
        assert page.locator("figure.chart svg").count() == 1
        assert "GB delivered (10^9 bytes)" in page.inner_html("figure.chart svg")
        screenshot(page, shots, "webapp-asset-desktop")

        page.goto(f"{live_api}/app/earnings")
        claimable = _claimable(page)
        assert claimable > 0
        assert page.inner_text("section.token dd.claimable") == format_amount(claimable, 6, "tUSDC")
        before = _token_balance(settings, address)
        assert page.get_attribute("section.token dd.balance", "data-minor") == str(before)
        screenshot(page, shots, "webapp-earnings-desktop")

        page.click("#claim-wallet")
        _wait_for(page, "claimed=", "#claim-status")
        assert "eth_sendTransaction" in wallet.calls
        assert _token_balance(settings, address) == before + claimable
        assert page.get_attribute("section.token dd.balance", "data-minor") == str(before + claimable)
        assert page.inner_text("section.token dd.paid") == format_amount(claimable, 6, "tUSDC")
        assert page.locator("#claim-wallet").count() == 0  # nothing left to claim
    finally:
        wallet.close()


def test_the_same_flow_in_chinese_on_a_phone_gas_free(
    chromium: Browser,
    live_api: str,
    app_client: TestClient,
    settings: Settings,
    chain_snapshot: Any,
    shots: Path,
) -> None:
    address = DEV_ACCOUNTS[8]
    wallet = open_wallet_page(chromium, settings.eth_rpc_url, address, locale="zh-CN", viewport=PHONE)
    page = wallet.page
    try:
        sign_in(page, live_api)
        assert "创作者" in page.inner_text("#welcome")
        screenshot(page, shots, "webapp-home-phone-zh")
        page.goto(f"{live_api}/app/upload")
        assert page.inner_text("h1") == "上传并登记"
        assert page.evaluate("() => document.documentElement.scrollWidth") <= PHONE["width"]
        screenshot(page, shots, "webapp-upload-phone-zh")
        asset_id = _register_in_browser(wallet, live_api, "海报", _poster())
        assert page.inner_text("#asset-title") == f"作品 {asset_id}：海报"
        assert page.inner_text("#updated") == "已在链上登记。"
        assert page.inner_text("#licence-territories") == "全球"

        # A licence update signed in the wallet and relayed by the platform.
        # With the keyboard only: type into the field and press Enter to submit the form.
        page.focus("#lic-royalty")
        page.keyboard.press("Control+A")
        page.keyboard.type("300")
        page.keyboard.press("Enter")
        _wait_for(page, "updated=licence", "#licence-status")
        assert page.inner_text("#licence-royalty") == "300 个基点"
        assert page.inner_text("#updated") == "许可已在链上更新。"

        # Declining in the wallet: a readable Chinese message, nothing sent.
        wallet.reject.add("eth_signTypedData_v4")
        page.fill("#lic-royalty", "400")
        page.click("#licence-submit")
        page.wait_for_selector("#licence-status[data-kind='error']")
        assert page.inner_text("#licence-status") == "您在钱包中拒绝了请求。"
        wallet.reject.clear()

        _settle(app_client, settings, chain_snapshot, asset_id)
        page.goto(f"{live_api}/app/assets/{asset_id}")
        assert "次请求" in page.inner_text("#delivery-totals")
        chart = page.inner_html("figure.chart svg")  # the chart's own words in Chinese too
        assert "分发量（GB" in chart and "日期（UTC" in chart and "GB delivered" not in chart
        assert page.evaluate("() => document.documentElement.scrollWidth") <= PHONE["width"]
        screenshot(page, shots, "webapp-asset-phone-zh")

        page.goto(f"{live_api}/app/earnings")
        claimable = _claimable(page)
        assert claimable > 0
        assert page.inner_text("section.token dd.claimable") == format_amount(claimable, 6, "tUSDC")
        period = page.inner_text("tr.period td")
        assert re.fullmatch(r"\d{4}年\d{1,2}月\d{1,2}日", period), period
        assert "可领取" in page.inner_text("tr.period")
        screenshot(page, shots, "webapp-earnings-phone-zh")

        before = _token_balance(settings, address)
        eth_before = int(rpc(settings.eth_rpc_url, "eth_getBalance", address, "latest"), 16)
        page.click("#claim-relay")
        _wait_for(page, "claimed=", "#claim-status")
        assert page.inner_text("#claimed-notice") == "已领取 1 个结算期，代币已转入您的钱包。"
        assert "eth_sendTransaction" not in wallet.calls  # gas-free: the wallet only signed
        assert _token_balance(settings, address) == before + claimable
        assert int(rpc(settings.eth_rpc_url, "eth_getBalance", address, "latest"), 16) == eth_before
        assert page.inner_text("section.token dd.balance") == format_amount(before + claimable, 6, "tUSDC")
    finally:
        wallet.close()


def test_pages_refuse_other_roles_and_missing_sessions(live_api: str, settings: Settings) -> None:
    """Without a session the JSON endpoints answer 401 JSON and pages redirect to the sign-in page; another
    site's page is refused; a merchant's session gets the creators' pages refused in its language."""
    answer = requests.post(f"{live_api}/app/claims/prepare", json={}, timeout=10)
    assert answer.status_code == 401 and answer.json()["error"]["code"] == "unauthenticated"
    answer = requests.post(
        f"{live_api}/app/claims/prepare", json={}, headers={"Origin": "https://evil.example"}, timeout=10
    )
    assert answer.status_code == 403 and answer.json()["error"]["code"] == "cross_origin"
    page = requests.get(f"{live_api}/app/earnings", allow_redirects=False, timeout=10)
    assert page.status_code == 303 and page.headers["location"] == "/app/signin?next=/app/earnings"

    engine = make_engine(settings.resolved_database_url)
    try:
        with Session(engine) as session:
            merchant = auth_service.create_user(
                session, role=Role.merchant, address=Account.create().address, name="Shop"
            )
            token, _ = auth_service.create_session(session, merchant, timedelta(hours=1))
            session.commit()
    finally:
        engine.dispose()
    cookies = {"edgeledger_session": token}
    page = requests.get(
        f"{live_api}/app/earnings", cookies=cookies, headers={"Accept-Language": "zh-CN"}, timeout=10
    )
    assert page.status_code == 403 and "此页面仅供：创作者。" in page.text
    answer = requests.post(f"{live_api}/app/claims/prepare", json={}, cookies=cookies, timeout=10)
    assert answer.status_code == 403 and answer.json()["error"]["code"] == "forbidden"


def test_the_creators_endpoints_refuse_bad_input_clearly(app_client: TestClient) -> None:
    """Each refusal is a 4xx with a machine-readable code (and HTML pages answer in the page's language)."""
    engine = app_client.app.state.engine  # type: ignore[attr-defined]
    with Session(engine) as session:
        user = auth_service.create_user(
            session, role=Role.creator, address=Account.create().address, name="creator"
        )
        token, _ = auth_service.create_session(session, user, timedelta(hours=1))
        session.commit()
    app_client.cookies.set("edgeledger_session", token, path="/app")

    def code(response: Any, status: int) -> str:
        assert response.status_code == status, response.text
        return str(response.json()["error"]["code"])

    png = ("a.png", demo_png(secrets.token_hex(4)), "image/png")
    assert code(app_client.post("/app/upload", data={"metadata": "{}"}), 422) == "file_missing"
    assert code(app_client.post("/app/upload", files={"file": png}, data={"metadata": "{"}), 422) == (
        "validation_error"
    )
    missing_title = app_client.post("/app/upload", files={"file": png}, data={"metadata": '{"aigc": false}'})
    assert (
        code(missing_title, 422) == "validation_error" and "title" in missing_title.json()["error"]["message"]
    )
    someone = '{"title": "x", "creator": "' + Account.create().address + '"}'
    assert code(app_client.post("/app/upload", files={"file": png}, data={"metadata": someone}), 422) == (
        "creator_mismatch"
    )
    signature = {"signature": "0x" + "11" * 65}
    assert code(app_client.post("/app/registrations/999/signature", json=signature), 404) == (
        "registration_not_found"
    )
    assert code(app_client.post("/app/claims/prepare", json={}), 409) == "nothing_to_claim"
    assert code(app_client.post("/app/claims/authorization", json={}), 409) == "nothing_to_claim"
    licence = {"territories": ["*"], "royalty_bps": 100}
    assert code(app_client.post("/app/assets/999/licence", json=licence), 404) == "not_found"
    page = app_client.get("/app/assets/999", headers={"Accept-Language": "zh-CN"})
    assert page.status_code == 404 and "您没有编号为 999 的作品。" in page.text
    assert "Traceback" not in page.text
    earnings = app_client.get("/app/earnings")
    assert earnings.status_code == 200 and "No earnings yet." in earnings.text
    app_client.cookies.clear()
    assert code(app_client.post("/app/upload", files={"file": png}, data={"metadata": "{}"}), 401) == (
        "unauthenticated"
    )
