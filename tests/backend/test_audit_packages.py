"""Audit packages end to end: a settled period is exported by an auditor, verified by the standalone
verifier (the console script, as a subprocess) with only the archive and the RPC URL, and every kind of
tampering is reported as the failing item with a non-zero exit. Real anvil, IPFS, SQLite and PostgreSQL."""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import secrets
import subprocess
import sys
import tarfile
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from eth_keys import keys
from sqlalchemy import select
from sqlalchemy.orm import Session
from typer.testing import CliRunner

from edgeledger.auth.models import Role
from edgeledger.cli import app as cli_app
from edgeledger.config import Settings
from edgeledger.deliveries.models import DeliveryRecordRow
from edgeledger.devtools.samples import demo_cloudfront_log
from edgeledger.ledger.manifest import Manifest
from edgeledger.verify.package import claims_of
from tests.backend.support.packages import tar, untar
from tests.backend.support.scenes import Scene
from tests.backend.support.stack import make_caller

pytestmark = pytest.mark.integration
BIN = Path(sys.executable).parent
VERIFIER = BIN / "edgeledger-verify-package"
DAY = 86_400


def _ok(response: Any) -> Any:
    assert response.status_code < 400, response.text
    return response.json()


def _package(scene: Scene, days: int = 1, **body: Any) -> bytes:
    request = {"period_start": scene.day, "period_end": scene.day + days * DAY, "legal_basis": "annual audit"}
    response = scene.client.post("/audit/packages", json={**request, **body}, headers=scene.auditor.headers)
    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == "application/gzip"
    assert response.headers["X-Package-Sha256"] == hashlib.sha256(response.content).hexdigest()
    event = response.headers["X-Compliance-Event"]
    logged = _ok(scene.client.get(f"/compliance/events/{event}", headers=scene.admin.headers))
    assert logged["action"] == "export" and logged["legal_basis"] == "annual audit"
    return response.content


def _run_verifier(archive: bytes, settings: Settings, tmp_path: Path, *extra: str) -> tuple[int, str]:
    path = tmp_path / f"package-{secrets.token_hex(4)}.tar.gz"
    path.write_bytes(archive)
    done = subprocess.run(
        [str(VERIFIER), str(path), "--rpc-url", settings.eth_rpc_url, *extra],
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode in (0, 1), done.stderr
    return done.returncode, done.stdout


def _verify(archive: bytes, settings: Settings, tmp_path: Path) -> tuple[int, list[dict[str, Any]]]:
    code, out = _run_verifier(archive, settings, tmp_path, "--json")
    report = json.loads(out)
    assert report["ok"] == (code == 0)
    return code, report["checks"]


def _members(archive: bytes) -> list[str]:
    with tarfile.open(fileobj=io.BytesIO(archive), mode="r:gz") as opened:
        return opened.getnames()


def _retar(
    files: dict[str, bytes], path: str, change: Callable[[Any], None], *, reindex: bool = True
) -> bytes:
    """The archive with one JSON file changed. With ``reindex`` the index follows the file (sha256 and
    claims), so only the check of the file's content against the chain can catch the change."""
    changed = dict(files)
    document = json.loads(changed[path])
    change(document)
    changed[path] = json.dumps(document).encode()
    if reindex:
        index = json.loads(changed["package.json"])
        for item in index["items"]:
            if item["path"] == path:
                item["sha256"] = hashlib.sha256(changed[path]).hexdigest()
                item["claims"] = claims_of(item["kind"], document)
        changed["package.json"] = json.dumps(index).encode()
    return tar(changed)


def _failing(items: list[dict[str, Any]]) -> list[tuple[str, str]]:
    return [(i["name"], i["subject"]) for i in items if not i["ok"]]


def _anchor_more_days(scene: Scene, days_ago: tuple[int, ...]) -> None:
    """More logs of the scene's asset through cf-shop, one batch per day, anchored."""
    fields = scene.lines[0].split("\t")
    cid, size = fields[7].removeprefix("/ipfs/"), int(fields[3]) - 320
    for ago in days_ago:
        log, _ = demo_cloudfront_log(cid, size, f"more{ago}", lines=8, days_ago=ago)
        upload = {"file": (f"MORE{ago}.gz", log)}
        _ok(scene.client.post("/deliveries/sources/cf-shop/logs", files=upload, headers=scene.admin.headers))
    close = {"force": True, "anchor_now": True}
    _ok(scene.client.post("/deliveries/batches/close", json=close, headers=scene.admin.headers))


def test_a_merchant_package_verifies_and_every_tampering_is_caught(scene: Scene, tmp_path: Path) -> None:
    archive = _package(scene, merchant=scene.merchant.account.address)
    code, items = _verify(archive, scene.settings, tmp_path)
    assert code == 0, items
    kinds = {i["name"] for i in items}
    assert {"batch", "manifest chain", "settlement", "settlement receipts", "statement", "cases"} <= kinds
    assert "compliance erase" in kinds
    assert all(i["ok"] for i in items)

    # The index lists every other file with its sha256 and claims; the archive's order is fixed.
    files = untar(archive)
    index = json.loads(files["package.json"])
    assert index["scope"]["merchant_user_id"] == scene.merchant.user_id
    assert sorted(i["path"] for i in index["items"]) == sorted(set(files) - {"package.json"})
    for item in index["items"]:
        assert item["sha256"] == hashlib.sha256(files[item["path"]]).hexdigest()
        assert item["claims"] == claims_of(item["kind"], json.loads(files[item["path"]]))
    assert _members(archive) == ["package.json", *sorted(set(files) - {"package.json"})]
    inputs = next(p for p in files if p.endswith("inputs.json"))
    statement = next(p for p in files if p.endswith("statement.json"))
    batch = next(p for p in files if p.startswith("batches/"))
    claimed = next(i["claims"] for i in index["items"] if i["path"] == statement)
    assert sum(claimed["payees"].values()) == claimed["paid_total"] > 0

    # The human table of the real console script.
    code, table = _run_verifier(archive, scene.settings, tmp_path)
    assert code == 0 and f"package verified: {len(items)} checks passed" in table
    assert "PASS statement " in table and "registered signer" in table

    def raise_a_payout(doc: Any) -> None:
        doc["payees"][0]["amount"]["minor"] += 1

    def bump_total(doc: Any) -> None:
        doc["total"] += 1

    def flip_signature_byte(doc: Any) -> None:
        signature = bytearray.fromhex(doc["batch"]["signature"].removeprefix("0x"))
        signature[10] ^= 0x01
        doc["batch"]["signature"] = "0x" + signature.hex()

    def sign_with_another_key(doc: Any) -> None:
        # A valid signature of the right manifest, by a key the ledger never registered for the source.
        key = keys.PrivateKey(secrets.token_bytes(32))
        digest = Manifest.from_message(doc["batch"]["manifest"]).digest_bytes(
            index["chain_id"], index["contracts"]["DeliveryLedger"]
        )
        signed = key.sign_msg_hash(digest)
        doc["batch"]["signature"] = "0x" + (signed.to_bytes()[:64] + bytes([signed.v + 27])).hex()
        doc["batch"]["signer"] = key.public_key.to_checksum_address()

    def another_root(doc: Any) -> None:
        doc["batch"]["manifest"]["root"] = "0x" + "cd" * 32

    def unanchored_batch(doc: Any) -> None:
        doc["batch"]["manifest"]["batchId"] = "0x" + "ab" * 32

    # Each change is caught by the item it concerns; a batch that fails also leaves the settlement
    # counting a batch the package does not prove.
    receipts = ("settlement receipts", inputs)
    tampers: list[tuple[str, Callable[[Any], None], str, str, list[tuple[str, str]]]] = [
        (statement, raise_a_payout, "statement", "payees", []),
        (inputs, bump_total, "settlement", "total recomputed", []),
        (batch, flip_signature_byte, "batch", "signature", [receipts]),
        (batch, sign_with_another_key, "batch", "the ledger's signer of the source was", [receipts]),
        (batch, another_root, "batch", "isBatchRoot is false", [receipts]),
        (batch, unanchored_batch, "batch", "not anchored on chain", [receipts]),
    ]
    for path, change, kind, reason, also in tampers:
        code, items = _verify(_retar(files, path, change), scene.settings, tmp_path)
        assert code == 1 and _failing(items) == [(kind, path), *also], (change.__name__, _failing(items))
        failed = next(i for i in items if (i["name"], i["subject"]) == (kind, path))
        assert reason in failed["detail"], (change.__name__, failed["detail"])

    # Bytes that no longer match the index: that file fails, its content is not trusted any further.
    code, items = _verify(
        _retar(files, statement, lambda d: d.update(state="void"), reindex=False), scene.settings, tmp_path
    )
    assert code == 1 and _failing(items) == [("file", statement)]

    # An index whose claims are not the file's (the file itself intact).
    index_changed = json.loads(files["package.json"])
    for item in index_changed["items"]:
        if item["path"] == inputs:
            item["claims"]["total"] += 1
    code, items = _verify(
        tar({**files, "package.json": json.dumps(index_changed).encode()}), scene.settings, tmp_path
    )
    assert code == 1 and _failing(items) == [("index", inputs)]

    # A settlement whose receipts name a batch the package does not prove.
    without_batch = json.loads(files["package.json"])
    without_batch["items"] = [i for i in without_batch["items"] if i["path"] != batch]
    rest = {p: d for p, d in files.items() if p != batch} | {
        "package.json": json.dumps(without_batch).encode()
    }
    code, items = _verify(tar(rest), scene.settings, tmp_path)
    assert code == 1 and _failing(items) == [("settlement receipts", inputs)]

    # Receipts that pay another operator than the batch's source registered, or count more than the batch's
    # signed manifest holds, fail against the batch (a dishonest server would post the matching root).
    def pay_another_operator(doc: Any) -> None:
        doc["inputs"]["receipts"][0]["operator"] = "0x" + "ee" * 20

    def inflate_bytes(doc: Any) -> None:
        doc["inputs"]["receipts"][0]["bytes"] += 10**12

    for change, reason in (
        (pay_another_operator, "the source's operator is"),
        (inflate_bytes, "its manifest signs"),
    ):
        code, items = _verify(_retar(files, inputs, change), scene.settings, tmp_path)
        failed = next(i for i in items if (i["name"], i["subject"]) == ("settlement receipts", inputs))
        assert code == 1 and not failed["ok"] and reason in failed["detail"], (change.__name__, failed)

    # With the auditor's own deployment file, its contracts are the ones read: the package's match them.
    deployment = str(scene.settings.resolved_deployment_file)
    code, out = _run_verifier(archive, scene.settings, tmp_path, "--json", "--deployment", deployment)
    pinned = [c for c in json.loads(out)["checks"] if c["name"] == "contracts"]
    assert code == 0 and {c["subject"] for c in pinned} == {
        "DeliveryLedger",
        "SettlementVault",
        "ContentRegistry",
    }
    # A package naming another vault (a look-alike its operator deployed) fails against it.
    look_alike = "0x" + secrets.token_hex(20)

    def other_vault(doc: Any) -> None:
        doc["vault"] = look_alike

    changed = untar(_retar(files, inputs, other_vault))
    index_other = json.loads(changed["package.json"])
    index_other["contracts"]["SettlementVault"] = look_alike
    changed["package.json"] = json.dumps(index_other).encode()
    code, out = _run_verifier(tar(changed), scene.settings, tmp_path, "--json", "--deployment", deployment)
    failing = _failing(json.loads(out)["checks"])
    assert code == 1 and failing[:1] == [("contracts", "SettlementVault")], failing
    assert ("settlement", inputs) in failing, failing


def test_a_source_package_proves_lines_and_its_manifest_chain(scene: Scene, tmp_path: Path) -> None:
    _anchor_more_days(scene, (2, 1))
    by_line = scene.lines[2]
    archive = _package(
        scene, days=3, source="cf-shop", request_ids=scene.request_ids[:2], log_lines=[by_line]
    )
    code, items = _verify(archive, scene.settings, tmp_path)
    assert code == 0, items
    files = untar(archive)
    batches = sorted(p for p in files if p.startswith("batches/"))
    assert len(batches) >= 3
    # The same scope exported again: the same files, byte for byte (only the index's time differs).
    again = untar(
        _package(scene, days=3, source="cf-shop", request_ids=scene.request_ids[:2], log_lines=[by_line])
    )
    assert {p: d for p, d in again.items() if p != "package.json"} == {
        p: d for p, d in files.items() if p != "package.json"
    }
    (chain,) = [i for i in items if i["name"] == "manifest chain"]
    assert chain["ok"] and f"{len(batches)} batches, {len(batches) - 1} prev-hash links" in chain["detail"]
    (proofs,) = [p for p in files if p.startswith("proofs/")]
    proven = json.loads(files[proofs])["proofs"]
    assert [p["record"]["request_id"] for p in proven] == scene.request_ids[:3]

    # Nothing personal: no client IP of the log, no pseudonym, no salt.
    everything = b"".join(files.values())
    assert not any(ip in everything for ip in (b"192.0.2.", b"198.51.100.", b"203.0.113."))
    with Session(scene.client.app.state.engine) as session:  # type: ignore[attr-defined]
        secrets_held = [
            value
            for row in session.execute(select(DeliveryRecordRow.client_pseudonym, DeliveryRecordRow.salt))
            for value in row
            if value is not None
        ]
    assert secrets_held
    for value in secrets_held:
        assert value not in everything and value.hex().encode() not in everything.lower()

    def forge_sibling(doc: Any) -> None:
        doc["proofs"][0]["proof"][0] = "0x" + "11" * 32

    code, items = _verify(_retar(files, proofs, forge_sibling), scene.settings, tmp_path)
    assert code == 1 and _failing(items) == [("proofs", proofs)]

    # A batch taken out of the middle: every remaining batch is anchored, but the chain has a gap.
    by_block = sorted(batches, key=lambda p: json.loads(files[p])["batch"]["block_number"])
    middle = by_block[1]
    index = json.loads(files["package.json"])
    index["items"] = [i for i in index["items"] if i["path"] != middle]
    gapped = {p: d for p, d in files.items() if p != middle} | {"package.json": json.dumps(index).encode()}
    code, items = _verify(tar(gapped), scene.settings, tmp_path)
    source_id = json.loads(files[middle])["batch"]["manifest"]["sourceId"]
    assert code == 1 and _failing(items) == [("manifest chain", source_id)]


def test_packages_are_for_auditors_and_admins_within_scope(scene: Scene) -> None:
    client, day = scene.client, scene.day
    body = {
        "period_start": day,
        "period_end": day + DAY,
        "legal_basis": "audit",
        "merchant_user_id": scene.merchant.user_id,
    }
    source_id = _ok(client.get("/deliveries/sources/cf-shop", headers=scene.admin.headers))["source_id"]
    other = make_caller(client, Role.merchant, "Other shop")
    by_merchant = make_caller(client, Role.auditor, "Merchant-scoped auditor")
    by_source = make_caller(client, Role.auditor, "Source-scoped auditor")
    for auditor, scope in (
        (by_merchant, {"merchants": [other.user_id]}),
        (by_source, {"sources": [source_id]}),
    ):
        _ok(client.put(f"/admin/users/{auditor.user_id}/scope", json=scope, headers=scene.admin.headers))

    def post(request: dict[str, Any], headers: dict[str, str]) -> Any:
        return client.post("/audit/packages", json=request, headers=headers)

    source_body = {**{k: v for k, v in body.items() if k != "merchant_user_id"}, "source": "cf-shop"}
    for request, caller, status, code in (
        (body, by_merchant, 403, "out_of_scope"),
        (body, by_source, 403, "out_of_scope"),
        (source_body, by_merchant, 403, "out_of_scope"),
        (body, scene.merchant, 403, "forbidden"),
        ({**body, "source": "cf-shop"}, scene.auditor, 400, "scope_invalid"),
        ({**body, "merchant": scene.merchant.account.address}, scene.auditor, 400, "scope_invalid"),
        ({**body, "log_lines": scene.lines[:1]}, scene.auditor, 400, "scope_invalid"),
        ({**source_body, "merchant": "0x" + "12" * 20}, scene.auditor, 400, "scope_invalid"),
    ):
        response = post(request, caller.headers)
        assert response.status_code == status and response.json()["error"]["code"] == code, response.text
    unknown = {**source_body, "source": None, "merchant": "0x" + "12" * 20}
    response = post(unknown, scene.auditor.headers)
    assert response.status_code == 404 and response.json()["error"]["code"] == "merchant_not_found"
    no_basis = {k: v for k, v in body.items() if k != "legal_basis"}
    missing = post(no_basis, scene.auditor.headers)
    assert missing.status_code == 422 and missing.json()["error"]["code"] == "validation_error"

    # Allowed: the source-scoped auditor its source, the merchant-scoped one its merchant, admins all.
    scoped = post(source_body, by_source.headers)
    assert scoped.status_code == 200
    assert post({**body, "merchant_user_id": other.user_id}, by_merchant.headers).status_code == 200
    admins = post(source_body, scene.admin.headers)
    assert admins.status_code == 200 and post(body, scene.admin.headers).status_code == 200
    # Erasures and retention purges are platform-wide: in the admin's package, not the scoped auditor's.
    assert any(path.startswith("compliance/") for path in untar(admins.content))
    assert not any(path.startswith("compliance/") for path in untar(scoped.content))
    exports = _ok(client.get("/compliance/events", params={"action": "export"}, headers=scene.admin.headers))
    subjects = {e["subject"] for e in exports["items"]}
    assert {"audit-package/source:cf-shop", f"audit-package/merchant:{scene.merchant.user_id}"} <= subjects


def test_the_cli_exports_and_verifies_a_package(scene: Scene, live_api: str, tmp_path: Path) -> None:
    output = tmp_path / "package.tar.gz"
    day = datetime.fromtimestamp(scene.day, tz=UTC).strftime("%Y-%m-%d")
    args = ["audit", "export", "--period", day, "--merchant", scene.merchant.account.address]
    args += ["--legal-basis", "annual audit", "-o", str(output), "--api", live_api]
    exported = CliRunner().invoke(cli_app, [*args, "--api-key", scene.auditor.api_key])
    assert exported.exit_code == 0, exported.output
    assert json.loads(untar(output.read_bytes())["package.json"])["scope"]["period_start"] == scene.day

    verify = [
        str(BIN / "edgeledger"),
        "audit",
        "verify",
        str(output),
        "--rpc-url",
        scene.settings.eth_rpc_url,
    ]
    done = subprocess.run(verify, capture_output=True, text=True, check=False)
    assert done.returncode == 0 and "package verified" in done.stdout, done.stdout + done.stderr

    files = untar(output.read_bytes())
    statement = next(p for p in files if p.endswith("statement.json"))
    raw = gzip.compress(files[statement])  # any other bytes under the same name
    output.write_bytes(tar({**files, statement: raw}))
    done = subprocess.run([*verify, "--json"], capture_output=True, text=True, check=False)
    assert done.returncode == 1 and _failing(json.loads(done.stdout)["checks"]) == [("file", statement)]

    # An unreachable RPC is exit code 3 and an unreadable archive exit code 2, with one line, not a verdict.
    done = subprocess.run(
        [str(VERIFIER), str(output), "--rpc-url", "http://127.0.0.1:9"], capture_output=True, text=True
    )
    assert done.returncode == 3 and done.stderr.startswith("error:") and done.stderr.count("\n") == 1
    output.write_bytes(b"not a tar archive")
    done = subprocess.run(
        [str(VERIFIER), str(output), "--rpc-url", scene.settings.eth_rpc_url], capture_output=True, text=True
    )
    assert done.returncode == 2 and done.stderr.startswith("error:") and done.stderr.count("\n") == 1
