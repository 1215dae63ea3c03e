"""A licence that starts or ends during a period, end-to-end on a real chain and database: the period's
receipts of the asset are split at the licence's boundaries by their records' times, so the royalty is
paid for exactly what was delivered inside the window (both ends included, as the registry's
``isLicensedFor`` judges them) and the auditor's ``verify settlement`` checks each part's time; a
merchant's audit package proves the records behind the parts, and ``verify package`` holds each part to
the proven records delivered in its time range.

The money world and its helpers: tests/backend/support/money.py, test_settlement_money.py.
"""

from __future__ import annotations

import hashlib
import json
import secrets
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select

from edgeledger.auth.models import Role
from edgeledger.deliveries import proofs as delivery_proofs
from edgeledger.deliveries.models import DeliveryRecordRow
from edgeledger.ledger.ids import merchant_id_for
from edgeledger.settlement.payouts import licensed_at
from edgeledger.settlement.period_inputs import receipt_key
from edgeledger.territories import territory_index
from edgeledger.verify.package import claims_of, verify_archive
from edgeledger.verify.result import Report
from edgeledger.verify.rpc import Chain
from edgeledger.verify.settlement import chain_terms, check_document, recompute
from tests.backend.support.money import DELIVERY_FEE, NOW, Money
from tests.backend.support.packages import tar, untar
from tests.backend.support.stack import make_caller
from tests.backend.test_settlement_flow import DAY, DAY0
from tests.backend.test_settlement_money import _register_from_a_wallet

pytestmark = pytest.mark.integration

#: money.deliver's records are one a second from an hour into the period: record i at FIRST + i
FIRST = DAY0 + 3_600
VALID_FROM = FIRST + 20  # records 0-19 before the licence
VALID_UNTIL = FIRST + 39  # records 20-39 inside it (39 on its last second), 40-49 after
PER_DELIVERY = 10_000  # the card's royalty per delivery


def _licensed_asset(money: Money, valid_from: int, valid_until: int) -> tuple[int, str]:
    """Content registered from a creator's wallet with a worldwide licence for ``[valid_from,
    valid_until]``, all royalties to one payee: (asset id, payee)."""
    asset_id, _, payee, _ = _register_from_a_wallet(money, valid_from, valid_until)
    money.mine()
    return asset_id, payee


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


def _package(money: Money, shop: str) -> dict[str, bytes]:
    """An auditor's package of the shop's period DAY0, as its files."""
    scope = {
        "period_start": DAY0,
        "period_end": DAY0 + DAY,
        "legal_basis": "annual audit",
        "merchant": money.shops[shop].key.address,
    }
    auditor = make_caller(money.app, Role.admin, "auditor")
    response = money.app.post("/audit/packages", json=scope, headers=auditor.headers)
    assert response.status_code == 200, response.text
    return untar(response.content)


def _verify_files(files: dict[str, bytes], tmp_path: Path, money: Money) -> Report:
    path = tmp_path / f"package-{secrets.token_hex(4)}.tar.gz"
    path.write_bytes(tar(files))
    return verify_archive(path, money.settings.eth_rpc_url)


def _parts_check(report: Report) -> Any:
    (check,) = [c for c in report.checks if c.name == "settlement receipt parts"]
    return check


def test_a_package_proves_how_split_receipts_divide_their_records(money: Money, tmp_path: Path) -> None:
    """The merchant's package holds the proofs of the 50 records behind the split receipt, and the
    verifier finds each part within the proven records delivered in its range."""
    asset_id, _ = _licensed_asset(money, VALID_FROM, VALID_UNTIL)
    [batch] = money.deliver("a", asset_id=asset_id, anchor=False)
    # another shop's records in the same batch: not the merchant's, not in its package
    assert money.deliver("b", asset_id=asset_id) == [batch]
    money.run(NOW)
    money.posted("a")
    files = _package(money, "a")
    proofs = json.loads(files[f"proofs/{batch.batch_id}.json"])
    hosts = {p["record"]["host"] for p in proofs["proofs"]}
    assert len(proofs["proofs"]) == 50 and hosts == {money.shops["a"].host}
    assert json.loads(files["package.json"])["merchant_hosts"] == [money.shops["a"].host]

    report = _verify_files(files, tmp_path, money)
    assert report.failed == 0, [c.line() for c in report.checks if not c.ok]
    check = _parts_check(report)
    assert "3 part(s) of 1 split receipt(s)" in check.detail and "not checked" not in check.detail, check


def test_a_package_fails_records_moved_between_parts(
    money: Money, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Inputs that move ten of the deliveries before the licence into its licensed part (30 royalties
    for 20 licensed deliveries; the receipt's totals and each part's time unchanged) fail against the
    proven records, even padded with proofs of another shop's records of the batch; beyond the
    package's cap the parts are reported as not checked."""
    asset_id, _ = _licensed_asset(money, VALID_FROM, VALID_UNTIL)
    [batch] = money.deliver("a", asset_id=asset_id, anchor=False)
    assert money.deliver("b", asset_id=asset_id) == [batch]
    money.run(NOW)
    row = money.posted("a")
    files = _package(money, "a")
    key = receipt_key(batch.batch_id, asset_id, "EU", "DE")
    inputs_path, proofs_path = f"settlements/{row.id}/inputs.json", f"proofs/{batch.batch_id}.json"

    document = json.loads(files[inputs_path])
    receipts = _receipts(document)
    before, inside = receipts[key], receipts[f"{key}:{VALID_FROM}"]
    moved = before["bytes"] // 2
    before["requests"], before["bytes"] = 10, before["bytes"] - moved
    inside["requests"], inside["bytes"] = 30, inside["bytes"] + moved
    document["inputs"]["receipts"] = list(receipts.values())
    others = money.session.scalars(
        select(DeliveryRecordRow).where(
            DeliveryRecordRow.batch_pk == batch.id,
            DeliveryRecordRow.merchant_id == merchant_id_for(money.shops["b"].host),
        )
    )
    padded = json.loads(files[proofs_path])
    padded["proofs"] += delivery_proofs.proofs_document(money.session, money.settings, batch, list(others))[
        "proofs"
    ]
    changed = {inputs_path: document, proofs_path: padded}
    index = json.loads(files["package.json"])
    tampered = {path: json.dumps(doc).encode() for path, doc in changed.items()}
    for item in index["items"]:
        if item["path"] in changed:
            item["sha256"] = hashlib.sha256(tampered[item["path"]]).hexdigest()
            item["claims"] = claims_of(item["kind"], changed[item["path"]])
    report = _verify_files({**files, **tampered, "package.json": json.dumps(index).encode()}, tmp_path, money)
    proofs_check = next(c for c in report.checks if c.name == "proofs")
    assert proofs_check.ok and "100 lines proven" in proofs_check.detail, proofs_check
    check = _parts_check(report)
    assert not check.ok and check.subject == inputs_path, check
    assert f"{key}:{VALID_FROM} counts 30 requests" in check.detail, check
    assert f"the package proves 20 records of {inside['bytes'] - moved} bytes" in check.detail, check

    # Leaving the proofs out does not dodge the check: the receipt is within the package's cap, so the
    # verifier, choosing from the inputs alone, expects it proven.
    without = {path: body for path, body in files.items() if path != proofs_path}
    index = json.loads(files["package.json"])
    index["items"] = [item for item in index["items"] if item["path"] != proofs_path]
    without["package.json"] = json.dumps(index).encode()
    check = _parts_check(_verify_files(without, tmp_path, money))
    assert not check.ok and f"{key}: within the package's cap, but no record of it is proven" in check.detail
    # Nor does an index naming no merchant hosts to count records by.
    index = json.loads(files["package.json"])
    del index["merchant_hosts"]
    check = _parts_check(
        _verify_files({**files, "package.json": json.dumps(index).encode()}, tmp_path, money)
    )
    assert not check.ok and "names no merchant hosts" in check.detail, check

    # A receipt stating more records than the package's cap is proven by none: nothing contradicts its
    # parts, and the verifier says it did not check them.
    monkeypatch.setattr("edgeledger.verify.receipt_parts.PROOF_CAP", 49)
    capped = _package(money, "a")
    assert not any(name.startswith("proofs/") for name in capped)
    check = _parts_check(_verify_files(capped, tmp_path, money))
    assert check.ok and "not checked: 1 split receipt(s) (3 parts) beyond the package's cap" in check.detail
    assert f"records of the hosts {money.shops['a'].host}" in check.detail, check
