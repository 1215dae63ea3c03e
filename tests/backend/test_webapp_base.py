"""The web app's shared base: catalogs complete in both languages, locale formatting from integer minor
units, language negotiation; and in a real Chromium with the injected anvil-backed wallet, Sign-In with
Ethereum, the session cookie, the language switch and the refusal shown when the wallet declines."""

from __future__ import annotations

import json
from datetime import timedelta
from pathlib import Path

import pytest
from eth_account import Account
from fastapi.testclient import TestClient
from playwright.sync_api import Browser
from sqlalchemy.orm import Session

from edgeledger.auth import service as auth_service
from edgeledger.auth.models import Role
from edgeledger.config import Settings
from edgeledger.main import create_app
from edgeledger.webapp import i18n
from tests.backend.support.browser import DEV_ACCOUNTS, PHONE, open_wallet_page, sign_in


def test_every_message_exists_in_both_languages() -> None:
    assert i18n.missing_keys() == {}
    assert set(i18n.CATALOGS) == set(i18n.LANGUAGES)
    for lang, texts in i18n.CATALOGS.items():
        assert all(text.strip() for text in texts.values()), lang
    # Placeholders match: a translation never drops or invents a value.
    import string

    def names(text: str) -> set[str]:
        return {f for _, f, _, _ in string.Formatter().parse(text) if f}

    for key, text in i18n.CATALOGS["en"].items():
        assert names(text) == names(i18n.CATALOGS["zh-CN"][key]), key


def test_a_key_in_two_catalog_files_is_refused(tmp_path: Path) -> None:
    (tmp_path / "a.json").write_text(json.dumps({"en": {"x.one": "1"}, "zh-CN": {"x.one": "一"}}))
    (tmp_path / "b.json").write_text(json.dumps({"en": {"x.one": "again"}}))
    with pytest.raises(ValueError, match=r"already defined in a\.json"):
        i18n.load_catalogs(tmp_path)
    (tmp_path / "b.json").write_text(json.dumps({"en": {"x.two": "2"}}))
    assert i18n.missing_keys(i18n.load_catalogs(tmp_path)) == {"zh-CN": ["x.two"]}


@pytest.mark.parametrize(
    ("minor", "decimals", "symbol", "text"),
    [
        (12_345_600, 6, "tUSDC", "12.3456 tUSDC"),
        (1_234_567_000_000, 6, "tUSDC", "1,234,567.00 tUSDC"),
        (5, 6, "", "0.000005"),
        (-1_500, 2, "EUR", "-15.00 EUR"),
        (10**30 + 1, 18, "WETH", "1,000,000,000,000.000000000000000001 WETH"),
        (42, 0, "PTS", "42 PTS"),
    ],
)
def test_token_amounts_are_exact(minor: int, decimals: int, symbol: str, text: str) -> None:
    assert i18n.format_amount(minor, decimals, symbol) == text


def test_dates_are_utc_in_the_locale_style() -> None:
    ts = 1_764_988_500  # 2025-12-06 02:35 UTC
    assert i18n.format_datetime(ts, "en") == "6 Dec 2025 02:35 UTC"
    assert i18n.format_datetime(ts, "zh-CN") == "2025年12月6日 02:35 UTC"
    assert i18n.format_int(1234567) == "1,234,567"


def test_the_app_sign_in_shares_the_apis_anonymous_budgets() -> None:
    from edgeledger.ratelimit import ANONYMOUS_ROUTES

    assert ANONYMOUS_ROUTES[("POST", "/app/signin/nonce")] == ANONYMOUS_ROUTES[("POST", "/auth/siwe/nonce")]
    assert ANONYMOUS_ROUTES[("POST", "/app/signin")] == ANONYMOUS_ROUTES[("POST", "/auth/siwe/verify")]


def test_big_integers_reach_the_browser_as_exact_strings() -> None:
    from edgeledger.webapp.prepared import js_safe

    bitmap = (1 << 249) - 1
    typed = {"message": {"territories": bitmap, "nonce": 3, "ok": True, "list": [2**53, 2**53 - 1]}}
    assert js_safe(typed) == {
        "message": {"territories": str(bitmap), "nonce": 3, "ok": True, "list": [str(2**53), 2**53 - 1]}
    }


@pytest.mark.parametrize(
    ("cookie", "header", "lang"),
    [
        (None, None, "en"),
        (None, "zh-CN,zh;q=0.9,en;q=0.8", "zh-CN"),
        (None, "en-US,en;q=0.9,zh;q=0.8", "en"),
        (None, "fr-FR, zh-Hans;q=0.5", "zh-CN"),
        (None, "de;q=1, en;q=0", "en"),  # nothing acceptable: the default
        ("zh-CN", "en", "zh-CN"),  # the switch wins
        ("xx", "zh", "zh-CN"),  # an unknown cookie is ignored
    ],
)
def test_language_negotiation(cookie: str | None, header: str | None, lang: str) -> None:
    assert i18n.negotiate(cookie, header) == lang


@pytest.mark.integration
def test_sign_in_with_the_wallet_in_both_languages(
    chromium: Browser, live_api: str, settings: Settings
) -> None:
    address = DEV_ACCOUNTS[5]
    wallet = open_wallet_page(chromium, settings.eth_rpc_url, address, viewport=PHONE)
    page = wallet.page
    try:
        # Without a session a page sends the browser to the sign-in page.
        page.goto(f"{live_api}/app/")
        assert page.url.startswith(f"{live_api}/app/signin")
        response = page.goto(f"{live_api}/app/signin")
        assert response is not None
        csp = response.headers["content-security-policy"]
        assert "script-src 'self';" in csp and "unsafe-inline" not in csp

        # Declining in the wallet gives a readable message and no session.
        wallet.reject.add("personal_sign")
        page.click("#connect")
        page.wait_for_selector("#status[data-kind='error']")
        assert page.inner_text("#status") == "You declined the request in your wallet."
        wallet.reject.clear()

        sign_in(page, live_api)
        assert {"eth_requestAccounts", "eth_chainId", "personal_sign"} <= set(wallet.calls)
        assert "Creator" in page.inner_text("#welcome")  # a first sign-in makes a creator account
        assert address[-4:] in page.inner_text("#who")
        (cookie,) = [c for c in wallet.context.cookies() if c["name"] == "edgeledger_session"]
        assert cookie["httpOnly"] and cookie["sameSite"] == "Strict" and cookie["path"] == "/app"
        # The page fits a 375 px phone: nothing wider than the viewport.
        assert page.evaluate("() => document.documentElement.scrollWidth") <= PHONE["width"]

        # The switch: the same page in Simplified Chinese, and it stays so.
        page.click("#lang-zh-CN")
        page.wait_for_load_state()
        assert page.get_attribute("html", "lang") == "zh-CN"
        assert "创作者" in page.inner_text("#welcome")
        assert page.inner_text("#sign-out") == "退出"
        page.goto(f"{live_api}/app/")
        assert "欢迎" in page.inner_text("h1")

        page.click("#sign-out")
        page.wait_for_url(f"{live_api}/app/signin")
        assert not [c for c in wallet.context.cookies() if c["name"] == "edgeledger_session"]
    finally:
        wallet.close()

    # A browser asking for Chinese gets Chinese pages from the first request.
    wallet = open_wallet_page(chromium, settings.eth_rpc_url, DEV_ACCOUNTS[6], locale="zh-CN")
    try:
        wallet.page.goto(f"{live_api}/app/signin")
        assert wallet.page.inner_text("#connect") == "连接钱包并登录"
        sign_in(wallet.page, live_api)
        assert "创作者" in wallet.page.inner_text("#welcome")
    finally:
        wallet.close()


@pytest.mark.integration
def test_app_pages_are_rate_limited_per_caller_and_refused_as_a_page(settings: Settings) -> None:
    """Over RATE_LIMIT_APP_PER_MINUTE a caller's next page is the app's error page with the API's 429,
    code (``data-code``) and Retry-After, in the caller's language. Each signed-in user has its own count,
    anonymous pages count by address; static files and the pages' JSON endpoints (``write``) do not count."""
    app = create_app(settings.model_copy(update={"rate_limit_app_per_minute": 3}))
    with Session(app.state.engine) as session:
        tokens = []
        for name in ("first", "second"):
            user = auth_service.create_user(
                session, role=Role.creator, address=Account.create().address, name=name
            )
            tokens.append(auth_service.create_session(session, user, timedelta(hours=1))[0])
        session.commit()
    try:
        with TestClient(app) as client:
            client.cookies.set("edgeledger_session", tokens[0], path="/app")
            assert [client.get(path).status_code for path in ("/app/", "/app/assets", "/app/upload")] == [
                200
            ] * 3
            assert client.get("/app/static/app.css").status_code == 200  # not a page: not counted
            prepare = client.post("/app/claims/prepare", json={})  # a JSON endpoint: the write bucket
            assert prepare.status_code == 409 and prepare.json()["error"]["code"] == "nothing_to_claim"
            refused = client.get("/app/assets", headers={"Accept-Language": "zh-CN"})
            assert refused.status_code == 429, refused.text
            assert refused.headers["content-type"].startswith("text/html")
            assert 1 <= int(refused.headers["Retry-After"]) <= 60
            assert 'data-code="rate_limited"' in refused.text
            assert "短时间内打开的页面过多" in refused.text and "Content-Security-Policy" in refused.headers

            client.cookies.set("edgeledger_session", tokens[1], path="/app")
            assert client.get("/app/assets").status_code == 200  # another user: its own count

            client.cookies.clear()
            signin = [client.get("/app/signin").status_code for _ in range(4)]
            assert signin == [200, 200, 200, 429]  # no session: counted by the client's address
            english = client.get("/app/signin")
            assert (
                english.status_code == 429 and "Too many pages in a short time: try again in" in english.text
            )
    finally:
        app.state.engine.dispose()


@pytest.mark.integration
def test_app_form_posts_over_the_write_limit_get_a_page_and_scripts_get_json(settings: Settings) -> None:
    """Over RATE_LIMIT_WRITE_PER_MINUTE the middleware refuses before any route: a plain form post (it
    accepts text/html) gets the app's error page with the 429, code and Retry-After in the caller's
    language; a page script's fetch (and the API) keeps the JSON error it reads."""
    app = create_app(settings.model_copy(update={"rate_limit_write_per_minute": 2}))
    with Session(app.state.engine) as session:
        address = Account.create().address
        user = auth_service.create_user(session, role=Role.creator, address=address, name="f")
        token = auth_service.create_session(session, user, timedelta(hours=1))[0]
        session.commit()
    html = {"Accept": "text/html,application/xhtml+xml,*/*;q=0.8", "Accept-Language": "zh-CN"}
    try:
        with TestClient(app) as client:
            client.cookies.set("edgeledger_session", token, path="/app")
            for _ in range(2):
                assert client.post("/app/claims/prepare", json={}).status_code == 409
            form = client.post("/app/signout", headers=html, follow_redirects=False)
            assert form.status_code == 429, form.text
            assert form.headers["content-type"].startswith("text/html")
            assert 1 <= int(form.headers["Retry-After"]) <= 60
            assert 'data-code="rate_limited"' in form.text and "短时间内提交的操作过多" in form.text
            script = client.post("/app/claims/prepare", json={})
            assert script.status_code == 429 and script.json()["error"]["code"] == "rate_limited"
            assert "Retry-After" in script.headers
            # Outside /app (here counted by the client's address: the session cookie is the app's) the
            # refusal stays JSON whatever the request accepts.
            api = [client.post("/assets/1/split", headers=html, json={}) for _ in range(3)]
            assert all(r.status_code != 429 for r in api[:2])
            assert api[2].status_code == 429 and api[2].json()["error"]["code"] == "rate_limited"
            # Still signed in: the refused sign-out did nothing.
            assert client.cookies.get("edgeledger_session", path="/app") == token
    finally:
        app.state.engine.dispose()


@pytest.mark.integration
def test_app_pages_with_the_rate_limit_store_unreachable_get_a_503_page(settings: Settings) -> None:
    """Counters in a Redis that cannot be reached: the page is refused (503, never unlimited), as a page."""
    app = create_app(settings.model_copy(update={"rate_limit_redis_url": "redis://127.0.0.1:1/0"}))
    try:
        with TestClient(app) as client:
            refused = client.get("/app/signin")
    finally:
        app.state.engine.dispose()
    assert refused.status_code == 503 and refused.headers["content-type"].startswith("text/html")
    assert 'data-code="rate_limit_unavailable"' in refused.text and refused.headers["Retry-After"] == "5"
    assert "The service cannot count requests just now" in refused.text
