"""A licence that starts or ends during a period, end-to-end on a real chain and database: the period's
receipts of the asset are split at the licence's boundaries by their records' times, so the royalty is
paid for exactly what was delivered inside the window (both ends included, as the registry's
``isLicensedFor`` judges them) and the auditor's ``verify settlement`` checks each part's time.

The money world and its helpers: tests/backend/support/money.py, test_settlement_money.py.
"""

from __future__ import annotations

import secrets
from typing import Any

import pytest
from eth_account import Account
from hexbytes import HexBytes

from edgeledger.auth.models import Role
from edgeledger.ipfs.cid import cid_of_bytes
from edgeledger.settlement.payouts import licensed_at
from edgeledger.settlement.period_inputs import receipt_key
from edgeledger.territories import ALL_TERRITORIES_BITMAP, territory_index
from edgeledger.verify.rpc import Chain
from edgeledger.verify.settlement import chain_terms, check_document, recompute
from tests.backend.support.money import DELIVERY_FEE, NOW, Money
from tests.backend.support.stack import make_caller, self_register
from tests.backend.test_settlement_flow import DAY0

pytestmark = pytest.mark.integration

#: money.deliver's records are one a second from an hour into the period: record i at FIRST + i
FIRST = DAY0 + 3_600
VALID_FROM = FIRST + 20  # records 0-19 before the licence
VALID_UNTIL = FIRST + 39  # records 20-39 inside it (39 on its last second), 40-49 after
PER_DELIVERY = 10_000  # the card's royalty per delivery


def _licensed_asset(money: Money, valid_from: int, valid_until: int) -> tuple[int, str]:
    """Content registered from a creator's wallet with a worldwide licence for ``[valid_from,
    valid_until]``, all royalties to one payee: (asset id, payee)."""
    creator, payee, content = Account.create(), Account.create().address, secrets.token_bytes(64)
    registration = (
        HexBytes(secrets.token_bytes(32)),
        cid_of_bytes(content),
        cid_of_bytes(b"{}" + content),
        creator.address,
        0,
        False,
        (ALL_TERRITORIES_BITMAP, valid_from, valid_until, 0, ""),
        [payee],
        [10_000],
        0,
    )
    self_register(lambda call: money.as_wallet(creator, call), money.registry, registration)
    money.mine()
    return int(money.chain.call(money.registry.functions.totalAssets())), payee


def _receipts(document: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {r["key"]: r for r in document["inputs"]["receipts"]}


def test_a_licence_starting_and_ending_in_the_period_pays_royalties_for_its_window_only(money: Money) -> None:
    asset_id, payee = _licensed_asset(money, VALID_FROM, VALID_UNTIL)
    # The registry's own judgement of the window's ends, which settlement follows.
    germany = territory_index("DE")
    for at in (VALID_FROM - 1, VALID_FROM, VALID_UNTIL, VALID_UNTIL + 1):
        on_chain = bool(money.chain.call(money.registry.functions.isLicensedFor(asset_id, germany, at)))
        assert on_chain == licensed_at(at, VALID_FROM, VALID_UNTIL), at
    [batch] = money.deliver("a", asset_id=asset_id)
    money.run(NOW)
    row = money.posted("a")

    key = receipt_key(batch.batch_id, asset_id, "EU", "DE")
    document = money.document(row)
    assert (document["version"], document["inputs"]["licence_end"]) == (4, "inclusive")
    receipts = _receipts(document)
    assert {k: (r["at"], r["requests"]) for k, r in receipts.items()} == {
        key: (DAY0, 20),
        f"{key}:{VALID_FROM}": (VALID_FROM, 20),
        f"{key}:{VALID_UNTIL + 1}": (VALID_UNTIL + 1, 10),
    }
    statement = money.statement(row)
    # The delivery fee is every record's; the royalty only the 20 inside the window's.
    assert statement.delivery_fees == {"EU": DELIVERY_FEE}
    assert statement.royalties == {str(asset_id): 20 * PER_DELIVERY}
    assert sorted((v.receipt_key, v.reason) for v in statement.violations) == [
        (key, "window"),
        (f"{key}:{VALID_UNTIL + 1}", "window"),
    ]
    assert money.payouts(row)[payee.lower()] == 20 * PER_DELIVERY * 9 // 10  # after the platform's 10 %

    # The auditor recomputes the same root and checks each part's time.
    checks = money.verify(document)
    assert checks.get("receipt times") is True and all(checks.values()), checks

    # The merchant's statement names each part's first second.
    admin = make_caller(money.app, Role.admin, "admin")
    answer = money.app.get(f"/settlement/settlements/{row.id}/statement", headers=admin.headers)
    assert answer.status_code == 200, answer.text
    entries = answer.json()["receipts"]
    assert entries[f"{key}:{VALID_FROM}"]["from"] == VALID_FROM and "from" not in entries[key]


def _forged_checks(money: Money, document: dict[str, Any]) -> dict[str, Any]:
    terms = chain_terms(Chain(money.chain.rpc_url), document["registry"], recompute(document)[0])
    return {c.name: c for c in check_document(document, None, terms)}


def test_verify_settlement_refuses_receipts_judged_at_other_times(money: Money) -> None:
    """A receipt moved into the licence by the time it states (all 50 deliveries judged at the licence's
    start, earning 50 royalties), or a part starting at a second that is no boundary of the licence,
    fails ``receipt times`` whatever the rest of the document says."""
    asset_id, _ = _licensed_asset(money, VALID_FROM, VALID_UNTIL)
    [batch] = money.deliver("a", asset_id=asset_id)
    money.run(NOW)
    document = money.document(money.posted("a"))
    key = receipt_key(batch.batch_id, asset_id, "EU", "DE")

    merged = money.document(money.posted("a"))
    parts = merged["inputs"]["receipts"]
    whole = {**parts[0], "key": key, "at": VALID_FROM}
    whole["requests"] = sum(r["requests"] for r in parts)
    whole["bytes"] = sum(r["bytes"] for r in parts)
    merged["inputs"]["receipts"] = [whole]
    found = _forged_checks(money, merged)
    assert not found["receipt times"].ok and "not the period's start" in found["receipt times"].detail

    shifted = _receipts(document)
    moved = shifted.pop(f"{key}:{VALID_UNTIL + 1}")
    shifted[f"{key}:{VALID_UNTIL + 5}"] = {**moved, "key": f"{key}:{VALID_UNTIL + 5}", "at": VALID_UNTIL + 5}
    document["inputs"]["receipts"] = list(shifted.values())
    found = _forged_checks(money, document)
    assert not found["receipt times"].ok and "licence boundaries" in found["receipt times"].detail


def test_a_licence_open_all_period_leaves_receipts_whole(money: Money) -> None:
    """Licensed from before the period to after it: no boundary inside, one receipt judged at the
    period's start, every delivery earning its royalty (as before any split existed)."""
    asset_id, payee = _licensed_asset(money, DAY0 - 10, NOW)
    [batch] = money.deliver("a", asset_id=asset_id)
    money.run(NOW)
    row = money.posted("a")
    receipts = _receipts(money.document(row))
    assert list(receipts) == [receipt_key(batch.batch_id, asset_id, "EU", "DE")]
    assert money.payouts(row)[payee.lower()] == 50 * PER_DELIVERY * 9 // 10
