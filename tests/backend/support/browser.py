"""Pytest plugin and helpers for the web app in a real Chromium (Debian's /usr/bin/chromium, Playwright):
a page with a test EIP-1193 wallet injected, backed by one of anvil's unlocked development accounts.

The wallet is a small init script defining ``window.ethereum.request({method, params})``; it forwards
every call to a function exposed with ``page.expose_function`` (not subject to the page's CSP), which
sends it to the test's anvil. Anvil answers ``eth_sendTransaction``, ``personal_sign`` and
``eth_signTypedData_v4`` itself for its development accounts, so nothing is signed by the test: the
page's own scripts drive the wallet exactly as they would drive a browser extension.
``eth_requestAccounts``/``eth_accounts`` answer the one account the page was opened with, and the
wallet records every method it was asked for (``calls``), so a test can assert what the page used.

Usage::

    def test_x(chromium: Browser, live_api: str, settings: Settings) -> None:
        wallet = open_wallet_page(chromium, settings.eth_rpc_url, DEV_ACCOUNTS[7])
        sign_in(wallet.page, live_api)
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import requests
from playwright.sync_api import Browser, BrowserContext, Page, sync_playwright

CHROMIUM = "/usr/bin/chromium"
PHONE = {"width": 375, "height": 812}
DESKTOP = {"width": 1280, "height": 900}
#: anvil's default development accounts (the "test test ... junk" mnemonic), unlocked in every anvil
#: this suite starts. The deployment and the other tests use fresh random keys, never these.
DEV_ACCOUNTS = (
    "0xf39Fd6e51aad88F6F4ce6aB8827279cffFb92266",
    "0x70997970C51812dc3A010C7d01b50e0d17dc79C8",
    "0x3C44CdDdB6a900fa2b585dd299e03d12FA4293BC",
    "0x90F79bf6EB2c4f870365E785982E1f101E93b906",
    "0x15d34AAf54267DB7D7c367839AAf71A00a2C6A65",
    "0x9965507D1a55bcC2695C58ba16FB37d819B0A4dc",
    "0x976EA74026E726554dB657fA54763abd0C3a0aa9",
    "0x14dC79964da2C08b23698B3D3cc7Ca32193d9955",
    "0x23618e81E3f5cdF7f54C3d65f7FBc0aBf5B21E8f",
    "0xa0Ee7A142d267C1f36714E4a8F75612F20a79720",
)

_PROVIDER_JS = """
(() => {
  const listeners = {};
  window.ethereum = {
    isEdgeLedgerTestWallet: true,
    request: async ({ method, params }) => {
      const reply = await window.__edgeledgerWallet(method, params === undefined ? [] : params);
      if (reply.error) {
        const err = new Error(reply.error.message);
        err.code = reply.error.code;
        throw err;
      }
      return reply.result;
    },
    on: (event, fn) => { (listeners[event] = listeners[event] || []).push(fn); },
    removeListener: (event, fn) => { listeners[event] = (listeners[event] || []).filter((f) => f !== fn); },
  };
})();
"""


@dataclass
class WalletPage:
    """A page with the test wallet of ``address``; ``calls`` lists the methods the page asked for."""

    context: BrowserContext
    page: Page
    address: str
    rpc_url: str
    calls: list[str] = field(default_factory=list)
    #: methods the wallet refuses as a user would (EIP-1193 code 4001)
    reject: set[str] = field(default_factory=set)
    #: what the test's own page scripts noted with ``window.__edgeledgerTestNote(text)``
    notes: list[str] = field(default_factory=list)

    def close(self) -> None:
        self.context.close()


def _forward(wallet: WalletPage, method: str, params: Any) -> dict[str, Any]:
    wallet.calls.append(method)
    if method in wallet.reject:
        return {"error": {"code": 4001, "message": "User rejected the request."}}
    if method in ("eth_requestAccounts", "eth_accounts"):
        return {"result": [wallet.address]}
    params = list(params or [])
    if method == "eth_signTypedData_v4" and len(params) == 2 and isinstance(params[1], str):
        params[1] = json.loads(params[1])  # wallets take the JSON text; anvil takes the object
    reply = requests.post(
        wallet.rpc_url, json={"jsonrpc": "2.0", "id": 1, "method": method, "params": params}, timeout=60
    ).json()
    if "error" in reply:
        return {"error": {"code": reply["error"].get("code", -32000), "message": reply["error"]["message"]}}
    return {"result": reply["result"]}


def open_wallet_page(
    browser: Browser,
    rpc_url: str,
    address: str,
    *,
    locale: str = "en-GB",
    viewport: dict[str, int] | None = None,
) -> WalletPage:
    """A new context (own cookies) whose pages have the test wallet of ``address``; ``locale`` sets
    the browser's Accept-Language."""
    context = browser.new_context(locale=locale, viewport=viewport or DESKTOP)  # type: ignore[arg-type]
    page = context.new_page()
    wallet = WalletPage(context, page, address, rpc_url)
    page.expose_function("__edgeledgerWallet", lambda method, params: _forward(wallet, method, params))
    page.expose_function("__edgeledgerTestNote", lambda note: wallet.notes.append(str(note)))
    page.add_init_script(_PROVIDER_JS)
    return wallet


def sign_in(page: Page, base_url: str) -> None:
    """Signs in from the sign-in page with the injected wallet; returns on the start page."""
    page.goto(f"{base_url}/app/signin")
    page.click("#connect")
    page.wait_for_url(f"{base_url}/app/", timeout=30_000)


def screenshot(page: Page, directory: Path, name: str) -> Path:
    """A full-page screenshot ``name``.png in ``directory``."""
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / f"{name}.png"
    page.screenshot(path=str(path), full_page=True)
    return path


@pytest.fixture(scope="module")
def chromium() -> Iterator[Browser]:
    """One headless Chromium per test module."""
    assert Path(CHROMIUM).is_file(), "scripts/bootstrap.sh installs Debian's chromium"
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        try:
            yield browser
        finally:
            browser.close()
