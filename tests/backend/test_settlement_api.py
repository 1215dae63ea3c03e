"""The settlement API on a real chain and database: who may read and change what (own / foreign
merchant, auditor, payee), accounts with the vault's escrow, rate cards, the FX table, billing imports,
reconciliation decisions, and a period driven through ``POST /settlement/run`` to claimed payouts.
"""

from __future__ import annotations

import json
import secrets
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from eth_account import Account
from eth_account.signers.local import LocalAccount
from fastapi.testclient import TestClient
from hexbytes import HexBytes
from sqlalchemy import func, select
from sqlalchemy.orm import Session
from typer.testing import CliRunner

from edgeledger.auth.models import Role
from edgeledger.chain.client import ChainClient
from edgeledger.cli import app as cli_app
from edgeledger.config import Settings
from edgeledger.devtools.samples import demo_png
from edgeledger.settlement import flows, service
from edgeledger.settlement.models import BillingImport, FxRateRow, RateCardRow, Settlement
from tests.backend.support.deliveries import (
    add_merchant_host,
    add_records,
    authorise_source,
    close_and_anchor,
    register_source,
)
from tests.backend.support.settlement import CARD, delivery_records, send_as
from tests.backend.support.stack import Caller, make_caller, post_asset, rpc

pytestmark = pytest.mark.integration

DAY = 86400
GB = 10**9
HOST = "shop.example"
BILLING_SAMPLES = Path(__file__).parent / "samples" / "billing"
# 50 deliveries of 2 GB in EU at 0.085 -> 8,500,000; 50 deliveries at 0.01 royalty -> 500,000
CHARGE = 8_500_000 + 500_000


def _ok(response: Any, status: int = 200) -> Any:
    assert response.status_code == status, response.text
    return response.json()


def _error(response: Any, status: int, code: str) -> dict[str, Any]:
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert error["code"] == code, error
    assert error["message"]
    return error


@dataclass
class Roles:
    admin: Caller
    auditor: Caller
    merchant: Caller
    other_merchant: Caller
    creator: Caller
    operator: Caller


@pytest.fixture
def roles(app_client: TestClient, settings: Settings) -> Roles:
    callers = Roles(
        admin=make_caller(app_client, Role.admin, "Admin"),
        auditor=make_caller(app_client, Role.auditor, "Auditor"),
        merchant=make_caller(app_client, Role.merchant, "Shop"),
        other_merchant=make_caller(app_client, Role.merchant, "Other shop"),
        creator=make_caller(app_client, Role.creator, "Creator"),
        operator=make_caller(app_client, Role.operator, "Operator"),
    )
    for caller in (callers.merchant, callers.creator):
        rpc(settings.eth_rpc_url, "anvil_setBalance", caller.account.address, hex(10**21))
    return callers


@pytest.fixture
def chain(settings: Settings) -> ChainClient:
    return ChainClient.from_settings(settings)


def _account_body(chain: ChainClient, **extra: Any) -> dict[str, Any]:
    return {
        "token": chain.deployment.address_of("TestStablecoin"),
        "token_symbol": "tUSDC",
        "token_decimals": 6,
        **extra,
    }


def _deposit(chain: ChainClient, admin: LocalAccount, merchant: LocalAccount, amount: int) -> None:
    token, vault = chain.contract("TestStablecoin"), chain.contract(flows.VAULT)
    send_as(chain, admin, token.functions.mint(merchant.address, amount))
    send_as(chain, merchant, token.functions.approve(vault.address, amount))
    send_as(chain, merchant, vault.functions.deposit(token.address, amount))


# --- accounts ----------------------------------------------------------------------------------------


def test_accounts_role_matrix_token_check_and_live_escrow(
    app_client: TestClient, roles: Roles, chain: ChainClient, chain_snapshot: Any
) -> None:
    merchant_id = roles.merchant.user_id
    path = f"/settlement/accounts/{merchant_id}"
    body = _account_body(chain, tolerance_bps=100)

    # Only that merchant or an admin may write it.
    for caller in (roles.other_merchant, roles.auditor, roles.creator, roles.operator):
        _error(app_client.put(path, json=body, headers=caller.headers), 403, "forbidden")
    _error(app_client.put(path, json=body), 401, "unauthenticated")
    # A token the vault does not allow-list is refused before anything is stored.
    stranger = Account.create().address
    error = _error(
        app_client.put(path, json={**body, "token": stranger}, headers=roles.merchant.headers),
        422,
        "token_not_allowed",
    )
    assert error["details"]["token"] == stranger
    _error(app_client.get(path, headers=roles.admin.headers), 404, "account_not_found")
    # The vault debits the escrow address: a merchant cannot point its account at someone else's.
    _error(
        app_client.put(
            path,
            json={**body, "address": roles.other_merchant.account.address},
            headers=roles.merchant.headers,
        ),
        403,
        "forbidden",
    )
    _error(
        app_client.put(
            f"/settlement/accounts/{roles.creator.user_id}", json=body, headers=roles.admin.headers
        ),
        404,
        "merchant_not_found",
    )

    # A merchant may not start its own account far in the past (each past period is a row to open).
    _error(
        app_client.put(path, json={**body, "settle_from": 0}, headers=roles.merchant.headers),
        422,
        "settle_from_too_early",
    )
    created = _ok(app_client.put(path, json=body, headers=roles.merchant.headers))
    assert created["address"] == roles.merchant.account.address  # default: the merchant's own address
    assert created["tolerance_bps"] == 100 and created["token_decimals"] == 6
    assert created["escrow"] == 0 and created["reserved"] == 0 and created["pending"] == 0
    day_start = int(time.time()) // DAY * DAY
    assert created["next_period_start"] in (day_start, day_start + DAY)  # the current period

    updated = _ok(app_client.put(path, json={**body, "require_billing": True}, headers=roles.admin.headers))
    assert updated["require_billing"] is True and updated["next_period_start"] == created["next_period_start"]
    own = {**body, "address": roles.merchant.account.address.lower()}
    assert _ok(app_client.put(path, json=own, headers=roles.merchant.headers))["require_billing"] is False

    _deposit(chain, chain_snapshot.admin, roles.merchant.account, 1_234_567)
    for reader in (roles.merchant, roles.auditor, roles.admin):
        detail = _ok(app_client.get(path, headers=reader.headers))
        assert detail["escrow"] == 1_234_567 and isinstance(detail["escrow"], int)
        assert detail["shortfall"] == 0 and detail["open_settlements"] == 0
    for stranger_caller in (roles.other_merchant, roles.creator, roles.operator):
        _error(app_client.get(path, headers=stranger_caller.headers), 403, "forbidden")

    listed = _ok(app_client.get("/settlement/accounts", headers=roles.auditor.headers))
    assert [a["merchant_user_id"] for a in listed] == [merchant_id]
    # One escrow, one merchant: not even an admin may point another merchant's account at it (the vault
    # would charge both merchants' settlements to it, in one set of period slots).
    taken = _error(
        app_client.put(
            f"/settlement/accounts/{roles.other_merchant.user_id}",
            json={**body, "address": roles.merchant.account.address.lower()},
            headers=roles.admin.headers,
        ),
        409,
        "address_taken",
    )
    assert taken["details"]["merchant_user_id"] == merchant_id
    assert [
        a["merchant_user_id"]
        for a in _ok(app_client.get("/settlement/accounts", headers=roles.auditor.headers))
    ] == [merchant_id]
    _error(app_client.get("/settlement/accounts", headers=roles.merchant.headers), 403, "forbidden")


def test_two_concurrent_writes_cannot_put_one_escrow_address_on_two_accounts(
    app_client: TestClient,
    roles: Roles,
    chain: ChainClient,
    settings: Settings,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The service's check and the write are two statements: a concurrent write naming the same address,
    committed between them, passes the check too. The database's unique index refuses the later write,
    and the API answers it as the check would have (409 ``address_taken``, naming the holder)."""
    engine = app_client.app.state.engine  # type: ignore[attr-defined]
    escrow = roles.merchant.account.address
    real_check = service.ensure_address_free
    competing: list[int] = []

    def check_then_lose_the_race(session: Session, merchant: Any, address: str) -> str:
        checked = real_check(session, merchant, address)
        if merchant.id == roles.merchant.user_id and not competing:
            # the other merchant's write (its own check passes too) lands right after this check
            with Session(engine) as other:
                rival = service.merchant_user(other, roles.other_merchant.user_id)
                params = service.AccountParams(**_account_body(chain, address=escrow))
                competing.append(service.upsert_account(other, settings, rival, params, now=0).id)
                other.commit()
        return checked

    monkeypatch.setattr(service, "ensure_address_free", check_then_lose_the_race)
    path = f"/settlement/accounts/{roles.merchant.user_id}"
    taken = _error(
        app_client.put(path, json=_account_body(chain), headers=roles.merchant.headers), 409, "address_taken"
    )
    assert taken["details"]["merchant_user_id"] == roles.other_merchant.user_id and competing
    listed = _ok(app_client.get("/settlement/accounts", headers=roles.auditor.headers))
    assert [(a["merchant_user_id"], a["address"]) for a in listed] == [(roles.other_merchant.user_id, escrow)]


def test_rate_cards_versions_and_overlap(app_client: TestClient, roles: Roles, chain: ChainClient) -> None:
    merchant_id = roles.merchant.user_id
    _ok(
        app_client.put(
            f"/settlement/accounts/{merchant_id}", json=_account_body(chain), headers=roles.merchant.headers
        )
    )
    path = f"/settlement/accounts/{merchant_id}/rate-cards"
    first = {**CARD, "valid_until": 1_000 * DAY}
    _error(app_client.post(path, json=first, headers=roles.merchant.headers), 403, "forbidden")
    stored = _ok(app_client.post(path, json=first, headers=roles.admin.headers), 201)
    assert stored["version"] == 1 and stored["valid_until"] == 1_000 * DAY
    assert stored["card"]["delivery"]["EU"]["tiers"][0]["price_per_gb"] == 85_000
    assert stored["created_by"] == roles.admin.user_id

    # Overlapping windows and repeated version numbers are refused; nothing is stored.
    error = _error(
        app_client.post(
            path, json={**CARD, "version": 2, "valid_from": 500 * DAY}, headers=roles.admin.headers
        ),
        422,
        "rate_card_overlap",
    )
    assert error["details"]["versions"] == [1, 2]
    _error(
        app_client.post(path, json={**CARD, "valid_from": 1_000 * DAY}, headers=roles.admin.headers),
        422,
        "rate_card_version",
    )
    error = _error(
        app_client.post(
            path,
            json={**CARD, "version": 2, "delivery": {"XX": CARD["delivery"]["EU"]}},  # type: ignore[index]
            headers=roles.admin.headers,
        ),
        422,
        "rate_card_invalid",
    )
    assert error["details"]["problems"]
    second = _ok(
        app_client.post(
            path, json={**CARD, "version": 2, "valid_from": 1_000 * DAY}, headers=roles.admin.headers
        ),
        201,
    )
    assert second["valid_until"] is None

    for reader in (roles.merchant, roles.auditor, roles.admin):
        versions = _ok(app_client.get(path, headers=reader.headers))
        assert [(v["version"], v["valid_from"]) for v in versions] == [(1, 0), (2, 1_000 * DAY)]
    _error(app_client.get(path, headers=roles.other_merchant.headers), 403, "forbidden")
    with Session(app_client.app.state.engine) as session:  # type: ignore[attr-defined]
        assert session.scalar(select(func.count()).select_from(RateCardRow)) == 2


def test_fx_rates_exact_and_unique(app_client: TestClient, roles: Roles) -> None:
    body = {"source": "ecb", "timestamp": 1_700_000_000, "base": "USD", "quote": "TUSDC", "rate": "0.9998"}
    _error(
        app_client.post("/settlement/fx-rates", json=body, headers=roles.merchant.headers), 403, "forbidden"
    )
    _error(
        app_client.post("/settlement/fx-rates", json=body, headers=roles.auditor.headers), 403, "forbidden"
    )
    row = _ok(app_client.post("/settlement/fx-rates", json=body, headers=roles.admin.headers), 201)
    assert (row["numerator"], row["denominator"], row["rate"]) == ("4999", "5000", "4999/5000")
    error = _error(
        app_client.post("/settlement/fx-rates", json=body, headers=roles.admin.headers), 409, "fx_rate_exists"
    )
    assert "ecb" in error["message"]
    _error(
        app_client.post("/settlement/fx-rates", json={**body, "rate": "1e3"}, headers=roles.admin.headers),
        422,
        "fx_rate_invalid",
    )
    _error(
        app_client.post("/settlement/fx-rates", json={**body, "rate": 0.9998}, headers=roles.admin.headers),
        422,
        "validation_error",
    )
    for base, quote in (("eur", "USD"), ("USD", "U"), ("USD", "TUSDC$")):  # never a card's currency
        odd = {**body, "base": base, "quote": quote}
        _error(
            app_client.post("/settlement/fx-rates", json=odd, headers=roles.admin.headers),
            422,
            "validation_error",
        )
    # A typo's rate would zero (or inflate) every charge converted with it: outside 10^-12 .. 10^12, refused.
    for typo in ("0." + "0" * 70 + "1", "1" + "0" * 13, "1/10000000000000"):
        _error(
            app_client.post("/settlement/fx-rates", json={**body, "rate": typo}, headers=roles.admin.headers),
            422,
            "fx_rate_out_of_range",
        )
    precise = "1.123456789012345678901234567"  # more digits than a float holds
    wide = _ok(
        app_client.post(
            "/settlement/fx-rates",
            json={**body, "timestamp": body["timestamp"] + 1, "rate": precise},  # type: ignore[operator]
            headers=roles.admin.headers,
        ),
        201,
    )
    assert wide["numerator"] == "1123456789012345678901234567" and wide["denominator"] == str(10**27)
    listed = _ok(app_client.get("/settlement/fx-rates?base=USD", headers=roles.merchant.headers))
    assert [r["timestamp"] for r in listed] == [1_700_000_000, 1_700_000_001]
    assert _ok(app_client.get("/settlement/fx-rates?base=EUR", headers=roles.merchant.headers)) == []
    with Session(app_client.app.state.engine) as session:  # type: ignore[attr-defined]
        assert session.scalar(select(func.count()).select_from(FxRateRow)) == 2


def test_billing_import_bad_rows_are_reported_by_line_and_nothing_is_stored(
    app_client: TestClient, roles: Roles, chain: ChainClient
) -> None:
    merchant_id = roles.merchant.user_id
    _ok(
        app_client.put(
            f"/settlement/accounts/{merchant_id}", json=_account_body(chain), headers=roles.merchant.headers
        )
    )
    period = int(datetime(2026, 11, 20, tzinfo=UTC).timestamp())
    path = f"/settlement/accounts/{merchant_id}/billing?period_start={period}"
    broken = (BILLING_SAMPLES / "own_broken.csv").read_bytes()
    valid = (BILLING_SAMPLES / "own_valid.csv").read_bytes()
    for far in (-DAY, 864_000_000_000_000 // DAY * DAY):  # before 1970, after 9999: no calendar day
        outside = f"/settlement/accounts/{merchant_id}/billing?period_start={far}"
        _error(app_client.post(outside, content=valid, headers=roles.merchant.headers), 422, "period_invalid")
    # Each row fits 64 bits, their sum does not: refused as a bad bill, not an internal error.
    row = f"2026-11-20,EU,{2**63 - 1},1,0.01,USD\n"
    huge = ("date,region,bytes,requests,amount,currency\n" + row * 2).encode()
    error = _error(
        app_client.post(path, content=huge, headers=roles.merchant.headers), 422, "billing_invalid"
    )
    assert error["details"]["problems"][0]["code"] == "too_large"
    error = _error(
        app_client.post(path, content=broken, headers=roles.merchant.headers), 422, "billing_invalid"
    )
    problems = error["details"]["problems"]
    assert [p["line"] for p in problems] == list(range(3, 12))
    assert all(p["problem"] for p in problems)
    # Each problem also as a code with the values it names, for clients that word it in another language.
    assert [p["code"] for p in problems] == [
        "bad_time",
        "unknown_region",
        "negative",
        "too_large",
        "unknown_currency",
        "field_count",
        "not_an_integer",
        "negative",
        "mixed_currency",
    ]
    assert problems[1]["values"] == {"value": "XX"}
    assert problems[5]["values"] == {"expected": "6", "found": "3"}
    assert problems[8]["values"] == {"value": "EUR", "expected": "USD"}
    with Session(app_client.app.state.engine) as session:  # type: ignore[attr-defined]
        assert session.scalar(select(func.count()).select_from(BillingImport)) == 0

    valid = (BILLING_SAMPLES / "own_valid.csv").read_bytes()
    _error(app_client.post(path, content=valid, headers=roles.other_merchant.headers), 403, "forbidden")
    _error(app_client.post(path, content=valid, headers=roles.auditor.headers), 403, "forbidden")
    # The sample has a row of the next day: outside the period, refused with its line.
    error = _error(
        app_client.post(path, content=valid, headers=roles.merchant.headers), 422, "billing_wrong_period"
    )
    assert error["details"]["lines"] == [4]
    one_day = b"".join(line for line in valid.splitlines(keepends=True) if b"2026-11-21" not in line)
    _error(
        app_client.post(
            f"/settlement/accounts/{merchant_id}/billing?period_start={period + 1}",
            content=one_day,
            headers=roles.merchant.headers,
        ),
        422,
        "period_invalid",
    )
    first = _ok(app_client.post(path, content=one_day, headers=roles.merchant.headers), 201)
    assert first["layout"] and first["rows"] == 3 and first["supersedes"] == []
    assert first["filename"] == f"billing-{period}.csv" and first["imported_by"] == merchant_id
    usage = {(u["region"], u["day"]): u for u in first["usage"]}
    assert usage[("EU", "2026-11-20")]["bytes"] == 2_000_000_000
    assert usage[("EU", "2026-11-20")]["requests"] == 4_010
    assert usage[("EU", "2026-11-20")]["amount"] == 17 and usage[("NA", "2026-11-20")]["bytes"] == GB

    second = _ok(
        app_client.post(
            path,
            files={"file": ("november.csv", one_day, "text/csv")},
            headers=roles.admin.headers,
        ),
        201,
    )
    assert second["filename"] == "november.csv" and second["supersedes"] == [first["id"]]
    with Session(app_client.app.state.engine) as session:  # type: ignore[attr-defined]
        rows = session.execute(select(BillingImport.id, BillingImport.superseded).order_by(BillingImport.id))
        assert rows.all() == [(first["id"], True), (second["id"], False)]


# --- a period settled through the API ---------------------------------------------------------------


@dataclass
class Scene:
    client: TestClient
    roles: Roles
    chain: ChainClient
    admin_key: LocalAccount
    co_payee: LocalAccount
    period_start: int
    signer: str

    def run(self) -> dict[str, Any]:
        return _ok(self.client.post("/settlement/run", headers=self.roles.admin.headers))

    def settlement(self) -> dict[str, Any]:
        page = _ok(
            self.client.get(
                f"/settlement/settlements?merchant_user_id={self.roles.merchant.user_id}",
                headers=self.roles.admin.headers,
            )
        )
        (row,) = [s for s in page["items"] if s["period_start"] == self.period_start]
        return row


@pytest.fixture
def scene(
    app_client: TestClient, settings: Settings, roles: Roles, chain: ChainClient, chain_snapshot: Any
) -> Iterator[Scene]:
    """Merchant ``Shop`` with 50 anchored 2 GB deliveries of the creator's asset (70 % creator, 30 % a
    co-payee) three days ago, an account settling from that period, a rate card and 20 tUSDC escrow."""
    period_start = int(time.time()) // DAY * DAY - 3 * DAY
    co_payee = Account.create()
    response = post_asset(
        app_client,
        roles.creator,
        files={"file": ("shot.png", demo_png(secrets.token_hex(8)), "image/png")},
        data={
            "metadata": json.dumps(
                {
                    "title": "Product shot",
                    "valid_from": 0,
                    "split": [
                        {"recipient": roles.creator.account.address, "bps": 7_000},
                        {"recipient": co_payee.address, "bps": 3_000},
                    ],
                }
            )
        },
    )
    body = _ok(response, 201)
    asset_id = int(body["asset"]["id"] if "asset" in body else body["id"])
    with Session(app_client.app.state.engine) as session:  # type: ignore[attr-defined]
        add_merchant_host(session, HOST, roles.merchant.user_id)
        node = Account.create()
        source = register_source(session, chain, "edge-fra", provider="edgeledger", signer=node.address)
        authorise_source(session, roles.merchant.user_id, source)
        batches = add_records(
            session,
            settings,
            source,
            delivery_records(period_start, 50, 2 * GB, HOST),
            asset_id=asset_id,
            region="EU",
        )
        close_and_anchor(session, settings, chain, batches, node)
    merchant_id = roles.merchant.user_id
    _ok(
        app_client.put(
            f"/settlement/accounts/{merchant_id}",
            json=_account_body(chain, settle_from=period_start),
            headers=roles.merchant.headers,
        )
    )
    _ok(
        app_client.post(
            f"/settlement/accounts/{merchant_id}/rate-cards", json=CARD, headers=roles.admin.headers
        ),
        201,
    )
    _deposit(chain, chain_snapshot.admin, roles.merchant.account, 20_000_000)
    yield Scene(app_client, roles, chain, chain_snapshot.admin, co_payee, period_start, chain.signer_address)


def test_a_period_through_the_api_cases_statements_payouts_earnings(
    scene: Scene, live_api: str, tmp_path: Path
) -> None:
    client, roles = scene.client, scene.roles
    merchant_id = roles.merchant.user_id
    day = datetime.fromtimestamp(scene.period_start, UTC).strftime("%Y-%m-%d")
    # The CDN billed 110 GB where 100 GB were anchored: beyond the tolerance, a case blocks the period.
    bill = f"date,region,bytes,requests,amount,currency\n{day},EU,{110 * GB},50,9.35,USD\n".encode()
    _ok(
        client.post(
            f"/settlement/accounts/{merchant_id}/billing?period_start={scene.period_start}&name=bill.csv",
            content=bill,
            headers=roles.merchant.headers,
        ),
        201,
    )
    _error(client.post("/settlement/run", headers=roles.merchant.headers), 403, "forbidden")
    report = scene.run()
    settlement = scene.settlement()
    assert settlement["id"] in report["opened"]
    assert report["blocked"][str(settlement["id"])] == "reconciliation_open"
    assert settlement["state"] == "blocked" and settlement["error_code"] == "reconciliation_open"

    # Cases: own / foreign.
    (case,) = _ok(client.get("/settlement/cases?state=open", headers=roles.merchant.headers))
    assert case["merchant_user_id"] == merchant_id and "bytes" in case["reasons"]
    assert (case["ours_bytes"], case["theirs_bytes"]) == (100 * GB, 110 * GB)
    assert _ok(client.get("/settlement/cases", headers=roles.other_merchant.headers)) == []
    # Paged: one case, so the page after it is empty; a page size outside 1..1,000 is refused.
    assert _ok(client.get("/settlement/cases?limit=1", headers=roles.merchant.headers)) == [case]
    assert _ok(client.get("/settlement/cases?limit=1&offset=1", headers=roles.merchant.headers)) == []
    assert client.get("/settlement/cases?limit=0", headers=roles.merchant.headers).json()["error"][
        "code"
    ] == ("bad_page")
    _error(
        client.get(f"/settlement/cases?merchant_user_id={merchant_id}", headers=roles.other_merchant.headers),
        403,
        "forbidden",
    )
    _error(
        client.get(f"/settlement/cases/{case['id']}", headers=roles.other_merchant.headers), 403, "forbidden"
    )
    _error(client.get(f"/settlement/cases/{case['id']}", headers=roles.creator.headers), 403, "forbidden")
    assert (
        _ok(client.get(f"/settlement/cases/{case['id']}", headers=roles.auditor.headers))["state"] == "open"
    )
    _error(client.get("/settlement/cases?state=closed", headers=roles.admin.headers), 422, "bad_state")

    # The decision: only the case's merchant or an admin; who, when, why recorded; decided once.
    decision = {"action": "adjust", "adjustment": 100_000, "reason": "CDN counted retries"}
    decide = f"/settlement/cases/{case['id']}/decision"
    _error(client.post(decide, json=decision, headers=roles.other_merchant.headers), 403, "forbidden")
    _error(client.post(decide, json=decision, headers=roles.auditor.headers), 403, "forbidden")
    _error(
        client.post(decide, json={**decision, "action": "accept"}, headers=roles.merchant.headers),
        422,
        "adjustment_invalid",
    )
    for odd in ("100000", 2**63, -(2**63), 1.5):  # a string, beyond the amount columns, a float
        bad = {**decision, "adjustment": odd}
        _error(client.post(decide, json=bad, headers=roles.merchant.headers), 422, "validation_error")
    before = datetime.now(UTC)
    decided = _ok(client.post(decide, json=decision, headers=roles.merchant.headers))
    assert decided["state"] == "adjusted" and decided["adjustment"] == 100_000
    assert decided["decided_by"] == merchant_id and decided["decided_by_name"] == "Shop"
    assert decided["reason"] == "CDN counted retries"
    decided_at = datetime.fromisoformat(decided["decided_at"])
    assert abs((decided_at - before).total_seconds()) < 60
    error = _error(
        client.post(
            decide, json={"action": "accept", "reason": "second thoughts"}, headers=roles.admin.headers
        ),
        409,
        "case_not_open",
    )
    assert "adjusted" in error["message"]
    assert _ok(client.get(f"/settlement/cases/{case['id']}", headers=roles.admin.headers)) == decided

    # Posted with the adjustment.
    report = scene.run()
    settlement = scene.settlement()
    total = CHARGE + 100_000
    assert settlement["state"] == "posted", settlement
    assert settlement["total"] == total and isinstance(settlement["total"], int)
    assert settlement["tx_hash"] and settlement["root"] and settlement["claims_open_at"]
    assert settlement["receipt_count"] == 1 and len(settlement["batch_ids"]) == 1
    assert settlement["payee_count"] == 3  # creator, co-payee, signer (operator and platform)
    settlement_id = settlement["id"]

    # Settlements: own / foreign.
    own = _ok(client.get("/settlement/settlements", headers=roles.merchant.headers))
    assert own["total"] >= 1 and {s["merchant_user_id"] for s in own["items"]} == {merchant_id}
    assert _ok(client.get("/settlement/settlements", headers=roles.other_merchant.headers))["total"] == 0
    _error(
        client.get(
            f"/settlement/settlements?merchant_user_id={merchant_id}", headers=roles.other_merchant.headers
        ),
        403,
        "forbidden",
    )
    one = f"/settlement/settlements/{settlement_id}"
    assert _ok(client.get(one, headers=roles.auditor.headers)) == settlement
    assert _ok(client.get(one, headers=roles.merchant.headers))["root"] == settlement["root"]
    for stranger in (roles.other_merchant, roles.creator, roles.operator):
        _error(client.get(one, headers=stranger.headers), 403, "forbidden")
    _error(
        client.get("/settlement/settlements/999999", headers=roles.admin.headers), 404, "settlement_not_found"
    )
    paged = _ok(client.get("/settlement/settlements?limit=1&state=posted", headers=roles.admin.headers))
    assert paged["total"] == 1 and [s["id"] for s in paged["items"]] == [settlement_id]

    # Statements in three formats, merchant view.
    statement = client.get(f"{one}/statement", headers=roles.merchant.headers)
    assert statement.status_code == 200 and statement.headers["content-type"].startswith("application/json")
    document = statement.json()
    assert document["view"] == "merchant" and document["settlement_id"] == settlement_id
    assert document["charge"]["minor"] == total and document["paid_total"]["minor"] == total
    assert document["merchant"]["name"] == "Shop" and document["root"] == settlement["root"]
    (recorded,) = document["decisions"]
    assert recorded["reason"] == "CDN counted retries" and "Shop" in recorded["decided_by"]
    assert recorded["adjustment"]["minor"] == 100_000
    csv_response = client.get(f"{one}/statement?format=csv", headers=roles.auditor.headers)
    assert csv_response.status_code == 200 and csv_response.headers["content-type"].startswith("text/csv")
    csv_lines = csv_response.text.splitlines()
    assert len(csv_lines) == len(document["line_items"]) + 1
    assert "payee" in csv_lines[0] and "amount_minor" in csv_lines[0]
    html_response = client.get(f"{one}/statement?format=html", headers=roles.merchant.headers)
    assert html_response.status_code == 200 and html_response.headers["content-type"].startswith("text/html")
    assert "<table" in html_response.text
    _error(client.get(f"{one}/statement", headers=roles.other_merchant.headers), 403, "forbidden")
    _error(client.get(f"{one}/statement", headers=roles.creator.headers), 403, "forbidden")
    _error(client.get(f"{one}/statement?format=pdf", headers=roles.merchant.headers), 422, "validation_error")
    cli_auth = ["--api", live_api, "--api-key", roles.merchant.api_key]
    out = tmp_path / "statement.csv"
    result = CliRunner().invoke(
        cli_app, ["settlement", "statement", str(settlement_id), "--format", "csv", "-o", str(out), *cli_auth]
    )
    assert result.exit_code == 0, result.output
    # the same statement; its links are absolute, to the API it was fetched from
    saved = out.read_text().replace(live_api.rstrip("/"), "http://testserver")
    assert live_api.rstrip("/") in out.read_text() and saved.splitlines() == csv_lines
    result = CliRunner().invoke(cli_app, ["settlement", "show", str(settlement_id), *cli_auth])
    assert result.exit_code == 0 and json.loads(result.stdout)["root"] == settlement["root"]

    # Payouts: the leaves sum to the total.
    payouts = _ok(client.get(f"{one}/payouts", headers=roles.merchant.headers))
    assert payouts["total"] == 3 and payouts["root"] == settlement["root"]
    amounts = {p["payee"]: p["amount"] for p in payouts["items"]}
    assert sum(amounts.values()) == total
    creator_address = roles.creator.account.address
    creator_amount = amounts[creator_address.lower()]
    assert creator_amount == 500_000 * 9 // 10 * 7 // 10
    assert _ok(client.get(f"{one}/payouts?limit=1&offset=2", headers=roles.auditor.headers))["items"]
    _error(client.get(f"{one}/payouts", headers=roles.other_merchant.headers), 403, "forbidden")
    _error(client.get(f"{one}/payouts?limit=0", headers=roles.admin.headers), 422, "bad_page")

    # Payee statements: the payee itself, the merchant, auditors, admins; not another payee.
    payee_path = f"{one}/payees/{creator_address}/statement"
    for reader in (roles.creator, roles.merchant, roles.auditor, roles.admin):
        mine = _ok(client.get(payee_path, headers=reader.headers))
        assert mine["view"] == "payee" and mine["total"]["minor"] == creator_amount and mine["line_items"]
        assert {item["payee"] for item in mine["line_items"]} == {creator_address.lower()}
        assert sum(item["amount"]["minor"] for item in mine["line_items"]) == creator_amount
    payee_csv = client.get(f"{payee_path}?format=csv", headers=roles.creator.headers)
    assert payee_csv.status_code == 200 and payee_csv.headers["content-type"].startswith("text/csv")
    assert creator_address.lower() in payee_csv.text
    payee_html = client.get(f"{payee_path}?format=html", headers=roles.creator.headers)
    assert payee_html.status_code == 200 and payee_html.headers["content-type"].startswith("text/html")
    _error(
        client.get(f"{one}/payees/{scene.co_payee.address}/statement", headers=roles.creator.headers),
        403,
        "forbidden",
    )
    _error(client.get(payee_path, headers=roles.other_merchant.headers), 403, "forbidden")
    _error(
        client.get(f"{one}/payees/{Account.create().address}/statement", headers=roles.admin.headers),
        404,
        "payee_not_found",
    )

    # Recompute is for blocked or cancelled settlements, by admins.
    _error(client.post(f"{one}/recompute", headers=roles.merchant.headers), 403, "forbidden")
    _error(client.post(f"{one}/recompute", headers=roles.admin.headers), 409, "settlement_not_recomputable")

    # The account shows the reserve.
    account = _ok(client.get(f"/settlement/accounts/{merchant_id}", headers=roles.merchant.headers))
    assert account["escrow"] == 20_000_000 - total and account["reserved"] == total
    assert account["pending"] == 0 and account["open_settlements"] == 1

    # Earnings before and after the window and a claim on chain.
    earnings_path = f"/settlement/payees/{creator_address}/earnings"
    earnings = _ok(client.get(earnings_path, headers=roles.creator.headers))
    (item,) = earnings["items"]
    assert item["settlement_id"] == settlement_id and item["amount"] == creator_amount
    assert item["state"] == "posted" and item["claimed"] is False
    token = scene.chain.deployment.address_of("TestStablecoin")
    assert earnings["totals"][token] == {
        "earned": creator_amount,
        "released": 0,
        "claimed": 0,
        "claimable": 0,
        "pending": creator_amount,
        "not_posted": 0,
        "unclaimed": creator_amount,
    }
    for stranger in (roles.merchant, roles.other_merchant, roles.operator):
        _error(client.get(earnings_path, headers=stranger.headers), 403, "forbidden")
    assert _ok(client.get(earnings_path, headers=roles.auditor.headers))["items"] == earnings["items"]

    # Scoped auditors: one of the other merchant reads nothing of this one's; one of this merchant does.
    foreign_auditor = make_caller(client, Role.auditor, "Foreign auditor")
    own_auditor = make_caller(client, Role.auditor, "Own auditor")
    for auditor, merchant in ((foreign_auditor, roles.other_merchant), (own_auditor, roles.merchant)):
        scope = {"merchants": [merchant.user_id]}
        _ok(client.put(f"/admin/users/{auditor.user_id}/scope", json=scope, headers=roles.admin.headers))
    _error(client.get(one, headers=foreign_auditor.headers), 403, "out_of_scope")
    _error(client.get(f"{one}/statement", headers=foreign_auditor.headers), 403, "out_of_scope")
    assert _ok(client.get("/settlement/settlements", headers=foreign_auditor.headers))["total"] == 0
    _error(client.get(earnings_path, headers=own_auditor.headers), 403, "out_of_scope")
    assert _ok(client.get(one, headers=own_auditor.headers)) == settlement
    listed = _ok(client.get("/settlement/settlements", headers=own_auditor.headers))
    assert {s["merchant_user_id"] for s in listed["items"]} == {merchant_id}
    assert [
        a["merchant_user_id"] for a in _ok(client.get("/settlement/accounts", headers=own_auditor.headers))
    ] == [merchant_id]
    _error(
        client.get("/settlement/payees/0x1234/earnings", headers=roles.admin.headers), 422, "address_invalid"
    )

    rpc(scene.chain.rpc_url, "evm_increaseTime", DAY + 1)
    rpc(scene.chain.rpc_url, "evm_mine")
    scene.run()
    assert scene.settlement()["state"] == "claimable"
    with Session(client.app.state.engine) as session:  # type: ignore[attr-defined]
        row = session.get(Settlement, settlement_id)
        assert row is not None
        proof = flows.payout_tree(session, row).proof(creator_address)
    vault = scene.chain.contract(flows.VAULT)
    claim = (
        settlement["period_id"],
        roles.merchant.account.address,
        proof.amount,
        [HexBytes(p) for p in proof.proof],
    )
    send_as(scene.chain, roles.creator.account, vault.functions.claim(claim, creator_address))
    earnings = _ok(client.get(earnings_path, headers=roles.creator.headers))
    assert earnings["items"][0]["claimed"] is True and earnings["items"][0]["state"] == "claimable"
    assert earnings["totals"][token]["claimed"] == creator_amount
    co_payee = _ok(
        client.get(f"/settlement/payees/{scene.co_payee.address}/earnings", headers=roles.admin.headers)
    )
    assert co_payee["items"][0]["claimed"] is False
    assert co_payee["totals"][token]["claimable"] == co_payee["items"][0]["amount"]


def test_a_statement_before_computation_and_a_blocked_recompute(scene: Scene) -> None:
    client, roles = scene.client, scene.roles
    # Without the FX rate or rate card problems the period computes; make it block on a missing bill.
    _ok(
        client.put(
            f"/settlement/accounts/{roles.merchant.user_id}",
            json=_account_body(scene.chain, require_billing=True),
            headers=roles.admin.headers,
        )
    )
    scene.run()
    settlement = scene.settlement()
    assert settlement["state"] == "blocked" and settlement["error_code"] == "billing_missing"
    one = f"/settlement/settlements/{settlement['id']}"
    error = _error(client.get(f"{one}/statement", headers=roles.merchant.headers), 409, "statement_missing")
    assert "billing_missing" in error["message"]
    recomputed = _ok(client.post(f"{one}/recompute", headers=roles.admin.headers))
    assert recomputed["id"] == settlement["id"] and recomputed["error_code"] == "not_computed"
    account = _ok(
        client.get(f"/settlement/accounts/{roles.merchant.user_id}", headers=roles.merchant.headers)
    )
    assert account["open_settlements"] >= 1 and account["reserved"] == 0


# --- the CLI -----------------------------------------------------------------------------------------


def test_cli_account_fx_and_a_bad_bill(
    app_client: TestClient, roles: Roles, chain: ChainClient, live_api: str, tmp_path: Path
) -> None:
    admin = ["--api", live_api, "--api-key", roles.admin.api_key]
    merchant = ["--api", live_api, "--api-key", roles.merchant.api_key]
    runner = CliRunner()
    token = chain.deployment.address_of("TestStablecoin")
    account_args = [str(roles.merchant.user_id), "--token", token, "--symbol", "tUSDC", "--decimals", "6"]
    result = runner.invoke(cli_app, ["settlement", "accounts", "set", *account_args, *merchant])
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["token"] == token
    result = runner.invoke(cli_app, ["settlement", "accounts", "show", *admin])
    assert result.exit_code == 0 and [a["token"] for a in json.loads(result.stdout)] == [token]

    fx = ["settlement", "fx", "add", "USD", "TUSDC", "0.9998", "--source", "ecb", "--timestamp", "1700000000"]
    result = runner.invoke(cli_app, [*fx, *admin])
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["rate"] == "4999/5000"
    again = runner.invoke(cli_app, [*fx, *admin])
    assert again.exit_code == 1 and "409 fx_rate_exists" in again.stderr
    listed = runner.invoke(cli_app, ["settlement", "fx", "list", *merchant])
    assert listed.exit_code == 0 and "1 USD = 4999/5000 TUSDC" in listed.stdout

    card = tmp_path / "card.json"
    card.write_text(json.dumps(CARD))
    add_card = ["settlement", "rate-card", "add", str(roles.merchant.user_id), str(card)]
    assert runner.invoke(cli_app, [*add_card, *merchant]).exit_code == 1  # admins only
    result = runner.invoke(cli_app, [*add_card, *admin])
    assert result.exit_code == 0, result.output
    overlap = runner.invoke(cli_app, [*add_card, *admin])
    assert overlap.exit_code == 1 and "rate_card_version" in overlap.stderr

    period = str(int(datetime(2026, 11, 20, tzinfo=UTC).timestamp()))
    bill = ["settlement", "billing", "import", str(roles.merchant.user_id), period]
    result = runner.invoke(cli_app, [*bill, str(BILLING_SAMPLES / "own_broken.csv"), *merchant])
    assert result.exit_code == 1
    assert "own_broken.csv: line 3:" in result.stderr and "own_broken.csv: line 11:" in result.stderr
    assert "422 billing_invalid" in result.stderr
    good = tmp_path / "bill.csv"
    good.write_text("date,region,bytes,requests,amount,currency\n2026-11-20,EU,1000,2,0.01,USD\n")
    result = runner.invoke(cli_app, [*bill, str(good), *merchant])
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["filename"] == "bill.csv"

    cases = runner.invoke(cli_app, ["settlement", "cases", "--open", *merchant])
    assert cases.exit_code == 0 and cases.stdout == ""
    listed = runner.invoke(cli_app, ["settlement", "list", *merchant])
    assert listed.exit_code == 0 and "0 of 0" in listed.stderr
    missing = runner.invoke(cli_app, ["settlement", "show", "424242", *admin])
    assert missing.exit_code == 1 and "404 settlement_not_found" in missing.stderr
