"""The merchants' web pages: token amounts typed by people parsed exactly, and in a real Chromium with the
injected anvil-backed wallet, a merchant who signs in, deposits into the vault (approve then deposit from
its wallet; the balance read back from the chain), imports a bill with an error (the line shown) and then a
correct one, decides the case it opens, sees the settlement posted with its challenge window, downloads
its statement and challenges the posted root from its wallet; pages in Chinese and on a 375 px phone.
With WEBAPP_SCREENSHOTS=docs/screenshots the main pages are screenshotted there (``merchant-*``)."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Any

import pytest
import requests
from fastapi.testclient import TestClient
from playwright.sync_api import Browser, Page
from sqlalchemy.orm import Session

from edgeledger.auth.models import Role, User
from edgeledger.config import Settings
from edgeledger.ledger.vault import SettlementStatus
from edgeledger.settlement import flows, service
from edgeledger.settlement.models import CaseState, Settlement, SettlementState
from edgeledger.webapp.merchant import parse_amount
from edgeledger.webapp.session import WebAppError
from tests.backend.support.browser import DEV_ACCOUNTS, PHONE, open_wallet_page, screenshot, sign_in
from tests.backend.support.merchant_scene import CHARGE, DAY0, DAY0_TEXT, GB, merchant_scene


def _shots() -> Path:
    """Where screenshots go: ``WEBAPP_SCREENSHOTS`` (docs/webapp.md: docs/screenshots), else a temporary
    directory, so an ordinary run changes no file of the repository."""
    chosen = os.environ.get("WEBAPP_SCREENSHOTS")
    return (
        (Path(__file__).resolve().parents[2] / chosen) if chosen else Path(tempfile.mkdtemp(prefix="shots-"))
    )


SHOTS = _shots()
MERCHANT = DEV_ACCOUNTS[1]


@pytest.mark.parametrize(
    ("text", "decimals", "minor"),
    [
        ("25", 6, 25_000_000),
        ("1,250.5", 6, 1_250_500_000),
        (" 0.000001 ", 6, 1),
        ("12.340000", 2, 1_234),
        ("7", 0, 7),
        (
            "123456789012345678901234567890.123456789012345678",
            18,
            123456789012345678901234567890123456789012345678,
        ),
    ],
)
def test_typed_amounts_become_exact_minor_units(text: str, decimals: int, minor: int) -> None:
    assert parse_amount(text, decimals) == minor


def test_adjustments_may_be_negative_but_deposits_not() -> None:
    assert parse_amount("-0.1", 6, signed=True) == -100_000
    with pytest.raises(WebAppError) as negative:
        parse_amount("-0.1", 6)
    assert negative.value.code == "amount_invalid"


@pytest.mark.parametrize(
    ("text", "code"),
    [
        ("1.0000001", "amount_too_precise"),
        ("0", "amount_zero"),
        ("0.000", "amount_zero"),
        ("1e6", "amount_invalid"),
        ("12,34", "amount_invalid"),
        ("0x10", "amount_invalid"),
        ("", "amount_invalid"),
        ("1" * 31, "amount_invalid"),
        ("NaN", "amount_invalid"),
    ],
)
def test_bad_amounts_are_refused_with_a_code(text: str, code: str) -> None:
    with pytest.raises(WebAppError) as refused:
        parse_amount(text, 6)
    assert refused.value.code == code and refused.value.status == 400


def _fits(page: Page, width: int) -> bool:
    return bool(page.evaluate("() => document.documentElement.scrollWidth") <= width)


BAD_BILL = (
    "date,region,bytes,requests,amount,currency\n"
    f"{DAY0_TEXT},EU,{60 * GB},30,5.10,USD\n"
    f"{DAY0_TEXT},EU,sixty,20,3.40,USD\n"
)
#: 110 GB billed where 100 GB were anchored: beyond the 0.5 % tolerance, a case opens
GOOD_BILL = f"date,region,bytes,requests,amount,currency\n{DAY0_TEXT},EU,{110 * GB},50,9.35,USD\n"


@pytest.mark.integration
def test_a_merchant_deposits_imports_its_bill_decides_a_case_and_challenges(
    chromium: Browser, live_api: str, settings: Settings, app_client: TestClient, chain_snapshot: Any
) -> None:
    scene = merchant_scene(app_client, settings, chain_snapshot.admin, MERCHANT, 50_000_000)
    wallet = open_wallet_page(chromium, settings.eth_rpc_url, MERCHANT)
    page = wallet.page
    try:
        sign_in(page, live_api)
        assert "Merchant" in page.inner_text("#welcome")

        # --- escrow: nothing yet; a deposit from the wallet, approve then deposit --------------------
        page.click("nav >> text=Escrow")
        page.wait_for_url(f"{live_api}/app/merchant/escrow")
        assert page.inner_text("#escrow-balance") == "0.00 tUSDC"
        assert page.inner_text("#rate-cap") == "No cap"  # the merchant set no rate cap in the vault
        assert "50.00 tUSDC" in page.inner_text("#wallet-balance")
        page.fill("#deposit-amount", "1.0000001")  # more precise than the token: refused, nothing sent
        page.click("#deposit-button")
        page.wait_for_selector("#deposit-status[data-kind='error']")
        assert page.inner_text("#deposit-status") == "The amount has more decimals than the token."
        assert "eth_sendTransaction" not in wallet.calls
        wallet.reject.add("eth_sendTransaction")  # the merchant declines in its wallet
        page.fill("#deposit-amount", "1")
        page.click("#deposit-button")
        page.wait_for_selector("#deposit-status[data-kind='error']")
        assert page.inner_text("#deposit-status") == "You declined the request in your wallet."
        assert scene.escrow() == 0
        wallet.reject.clear()

        sent = wallet.calls.count("eth_sendTransaction")
        page.fill("#deposit-amount", "20.5")
        page.click("#deposit-button")
        page.wait_for_selector("#deposit-status[data-kind='ok']", timeout=60_000)
        assert wallet.calls.count("eth_sendTransaction") == sent + 2 and "eth_call" in wallet.calls
        assert scene.escrow() == 20_500_000  # on chain: the vault's escrowOf, read by the test
        assert page.inner_text("#escrow-balance") == "20.50 tUSDC"
        assert "20.50 tUSDC" in page.inner_text("#deposit-status")
        page.reload()
        assert page.inner_text("#escrow-balance") == "20.50 tUSDC"
        screenshot(page, SHOTS, "merchant-escrow")

        # --- rate cards -------------------------------------------------------------------------------
        page.goto(f"{live_api}/app/merchant/rate-cards")
        assert page.is_visible("#current-card")
        assert "0.085 TUSDC/GB" in page.inner_text("#card-1")
        screenshot(page, SHOTS, "merchant-rate-cards")

        # --- billing: a bill with a bad line is refused with its line number; then the correct one ------
        page.goto(f"{live_api}/app/merchant/billing")
        page.fill("#billing-day", DAY0_TEXT)
        page.set_input_files(
            "#billing-file", {"name": "bill.csv", "mimeType": "text/csv", "buffer": BAD_BILL.encode()}
        )
        page.click("#billing-submit")
        page.wait_for_selector("#problems")
        (line, problem) = page.locator("#problems tbody tr td").all_inner_texts()
        assert line == "3" and "sixty" in problem
        assert "nothing was stored" in page.inner_text("#billing-error")
        screenshot(page, SHOTS, "merchant-billing-error")
        page.set_input_files(
            "#billing-file", {"name": "bill.csv", "mimeType": "text/csv", "buffer": GOOD_BILL.encode()}
        )
        page.click("#billing-submit")
        page.wait_for_selector("#billing-result")
        assert page.inner_text("#billing-rows") == "1"
        assert "110.00" in page.inner_text("#usage")
        screenshot(page, SHOTS, "merchant-billing")

        # The period settles: the bill disagrees with the anchored deliveries, a case opens.
        scene.settle()
        with Session(scene.engine) as session:
            (case,) = service.cases_of(session, scene.merchant_id, DAY0)
            assert case.state == CaseState.open
            blocked = session.query(Settlement).one()
            assert blocked.state == SettlementState.blocked and blocked.error_code == "reconciliation_open"

        # --- the case: adjust with a reason ------------------------------------------------------------
        page.goto(f"{live_api}/app/merchant/cases")
        assert page.is_visible(f"#case-{case.id}")
        assert "Bytes differ" in page.inner_text(f"#case-{case.id}")
        screenshot(page, SHOTS, "merchant-cases")
        page.select_option(f"#case-{case.id}-action", "adjust")
        page.fill(f"#case-{case.id}-reason", "CDN counted retries")
        page.click(f"#case-{case.id}-submit")  # no adjustment typed: refused, the form keeps its text
        page.wait_for_selector(f"#case-{case.id}-error")
        assert page.input_value(f"#case-{case.id}-reason") == "CDN counted retries"
        page.fill(f"#case-{case.id}-adjustment", "0.1")
        page.click(f"#case-{case.id}-submit")
        page.wait_for_selector("#decided-status")
        assert page.is_visible("#no-open-cases")
        assert "CDN counted retries" in page.inner_text(f"#decided-{case.id}")
        with Session(scene.engine) as session:
            decided = service.get_case(session, case.id)
            assert decided.state == CaseState.adjusted and decided.adjustment == 100_000
            assert decided.decided_by == scene.merchant_id

        # --- settlements: posted, challenge window, statement, challenge --------------------------------
        scene.settle()
        with Session(scene.engine) as session:
            posted = session.query(Settlement).one()
            assert posted.state == SettlementState.posted and posted.total == CHARGE + 100_000
        page.goto(f"{live_api}/app/merchant/escrow")
        assert page.inner_text("#escrow-reserved") == "9.10 tUSDC"
        assert page.inner_text("#escrow-balance") == "11.40 tUSDC"
        page.goto(f"{live_api}/app/merchant/settlements")
        assert page.inner_text(f"#settlement-{posted.id}-state") == "Posted"
        assert page.inner_text(f"#settlement-{posted.id}-total") == "9.10 tUSDC"
        assert " left" in page.inner_text(f"#settlement-{posted.id}-window")
        screenshot(page, SHOTS, "merchant-settlements")
        csv = page.request.get(f"{live_api}/app/merchant/settlements/{posted.id}/statement.csv")
        assert csv.status == 200 and "attachment" in csv.headers["content-disposition"]
        assert csv.text().startswith("kind,source,") and "delivery,EU," in csv.text()
        document = page.request.get(f"{live_api}/app/merchant/settlements/{posted.id}/statement.json").json()
        assert "CDN counted retries" in str(document)
        html = page.request.get(f"{live_api}/app/merchant/settlements/{posted.id}/statement.html")
        assert html.status == 200 and "script-src" not in html.headers["content-security-policy"]

        page.click(f"#challenge-{posted.id}-open")
        page.fill(f"#challenge-{posted.id}-reason", "Royalty rate differs from our contract")
        page.click(f"#challenge-{posted.id}-submit")
        page.wait_for_selector(f"#challenge-{posted.id}-status[data-kind='ok']", timeout=60_000)
        with Session(scene.engine) as session:
            on_chain = flows.chain_settlement(scene.chain, session.get(Settlement, posted.id))
        assert on_chain.status == SettlementStatus.CHALLENGED

        # --- the same page in Simplified Chinese --------------------------------------------------------
        page.click("#lang-zh-CN")
        page.wait_for_load_state()
        assert page.inner_text("h1") == "结算"
        assert "2023年11月14日" in page.inner_text(f"#settlement-{posted.id}-h")
        assert page.inner_text(f"#settlement-{posted.id}-total") == "9.10 tUSDC"
        assert "剩余" in page.inner_text(f"#settlement-{posted.id}-window")
        screenshot(page, SHOTS, "merchant-settlements-zh")
        # A bill's bad line is worded in Chinese too (from its problem code and values).
        page.goto(f"{live_api}/app/merchant/billing")
        page.fill("#billing-day", DAY0_TEXT)
        page.set_input_files(
            "#billing-file", {"name": "bill.csv", "mimeType": "text/csv", "buffer": BAD_BILL.encode()}
        )
        page.click("#billing-submit")
        page.wait_for_selector("#problems")
        (line, problem) = page.locator("#problems tbody tr td").all_inner_texts()
        assert line == "3" and "sixty" in problem and "不是整数" in problem, problem
    finally:
        wallet.close()

    # --- a 375 px phone: every main page fits, keyboard-usable labels ------------------------------------
    phone = open_wallet_page(chromium, settings.eth_rpc_url, MERCHANT, viewport=PHONE)
    try:
        sign_in(phone.page, live_api)
        for name in ("escrow", "rate-cards", "billing", "cases", "settlements"):
            phone.page.goto(f"{live_api}/app/merchant/{name}")
            assert _fits(phone.page, PHONE["width"]), name
            unlabelled = phone.page.evaluate(
                "() => [...document.querySelectorAll('main input, main select, main textarea')]"
                ".filter(el => !el.labels || !el.labels.length).map(el => el.id)"
            )
            assert unlabelled == [], (name, unlabelled)
            screenshot(phone.page, SHOTS, f"merchant-{name}-phone")
    finally:
        phone.close()


@pytest.mark.integration
def test_merchant_pages_are_the_merchants_own(
    chromium: Browser, live_api: str, settings: Settings, app_client: TestClient, chain_snapshot: Any
) -> None:
    """A creator is refused the merchant pages; another merchant can neither download a merchant's
    statement nor prepare a challenge of its settlement, and the JSON endpoints refuse other sites."""
    scene = merchant_scene(app_client, settings, chain_snapshot.admin, DEV_ACCOUNTS[2], 1_000_000)
    scene.settle()  # computed, then blocked: no escrow to reserve
    with Session(scene.engine) as session:
        settlement = session.query(Settlement).one()
        assert settlement.statement_json is not None and settlement.error_code == "insufficient_escrow"
        settlement_id = settlement.id
        other = User(role=Role.merchant, name="Other shop", address=DEV_ACCOUNTS[3])
        session.add(other)
        session.commit()
        params = service.AccountParams(
            token=scene.chain.contract("TestStablecoin").address,
            token_symbol="tUSDC",
            token_decimals=6,
            settle_from=DAY0,
        )
        service.upsert_account(session, scene.settings, other, params, now=DAY0)
        session.commit()

    # The settlement waits for a deposit: the merchant sees the shortfall and why it waits.
    owner = open_wallet_page(chromium, settings.eth_rpc_url, DEV_ACCOUNTS[2])
    try:
        sign_in(owner.page, live_api)
        owner.page.goto(f"{live_api}/app/merchant/escrow")
        assert owner.page.inner_text("#escrow-pending") == "9.00 tUSDC"
        assert owner.page.inner_text("#escrow-shortfall").startswith("9.00 tUSDC")
        screenshot(owner.page, SHOTS, "merchant-escrow-shortfall")
        owner.page.goto(f"{live_api}/app/merchant/settlements")
        assert "deposit" in owner.page.inner_text(f"#settlement-{settlement_id}-why")
    finally:
        owner.close()

    # Without a session the upload is not read: the browser is sent to sign in.
    anonymous = requests.post(
        f"{live_api}/app/merchant/billing",
        files={"file": ("bill.csv", GOOD_BILL.encode())},
        data={"day": DAY0_TEXT},
        allow_redirects=False,
        timeout=30,
    )
    assert anonymous.status_code == 303
    assert anonymous.headers["location"] == "/app/signin?next=/app/merchant/billing"

    creator = open_wallet_page(chromium, settings.eth_rpc_url, DEV_ACCOUNTS[4], locale="zh-CN")
    try:
        sign_in(creator.page, live_api)  # a first sign-in: a creator
        response = creator.page.goto(f"{live_api}/app/merchant/escrow")
        assert response is not None and response.status == 403
        assert "商户" in creator.page.inner_text("#error-message")
        refused = creator.page.request.post(f"{live_api}/app/merchant/escrow/deposit", data={"amount": "1"})
        assert refused.status == 403 and refused.json()["error"]["code"] == "forbidden"
    finally:
        creator.close()

    wallet = open_wallet_page(chromium, settings.eth_rpc_url, DEV_ACCOUNTS[3])
    try:
        sign_in(wallet.page, live_api)
        wallet.page.goto(f"{live_api}/app/merchant/settlements")
        assert wallet.page.is_visible("#no-settlements")
        statement = wallet.page.request.get(
            f"{live_api}/app/merchant/settlements/{settlement_id}/statement.csv"
        )
        assert statement.status == 403 and "Shop" not in statement.text()
        challenge = wallet.page.request.post(
            f"{live_api}/app/merchant/settlements/{settlement_id}/challenge", data={"reason": "not mine"}
        )
        assert challenge.status == 403 and challenge.json()["error"]["code"] == "forbidden"
        cross = wallet.page.request.post(
            f"{live_api}/app/merchant/escrow/deposit",
            data={"amount": "1"},
            headers={"Origin": "https://elsewhere.example"},
        )
        assert cross.status == 403 and cross.json()["error"]["code"] == "cross_origin"
        prepared = wallet.page.request.post(f"{live_api}/app/merchant/escrow/deposit", data={"amount": "2.5"})
        assert prepared.status == 200
        approve, deposit = prepared.json()["calls"]
        assert approve["to"] == scene.chain.contract("TestStablecoin").address
        assert deposit["to"] == scene.chain.contract(flows.VAULT).address
    finally:
        wallet.close()
