"""The delivery-receipt promise end to end, through public interfaces only.

An operator uploads a real-format CloudFront log (gzip) of its distribution; the periods are long past
their late window, so an ordinary close (no force) closes them and they are anchored on the real anvil
chain. An auditor then proves single lines four ways: the API (by request id and by raw line), the
contract's verifyRecord, the chain-only `verify-delivery` CLI on an export, and @openzeppelin/merkle-tree
under node on the same export. Real anvil, real IPFS, SQLite and PostgreSQL.
"""

from __future__ import annotations

import gzip
import json
import shutil
import subprocess
from pathlib import Path

from fastapi.testclient import TestClient
from typer.testing import CliRunner

from edgeledger.auth.models import Role
from edgeledger.chain.client import ChainClient
from edgeledger.cli import app as cli_app
from edgeledger.config import PROJECT_ROOT, Settings
from edgeledger.ledger.delivery_leaf import leaf_hash, leaf_values_from_json
from edgeledger.ledger.hashing import bytes32
from edgeledger.ledger.merkle import verify_proof
from tests.backend.support.stack import Caller, make_caller

SAMPLE = PROJECT_ROOT / "tests" / "backend" / "samples" / "logs" / "cloudfront.log.gz"
OZ_EXPORT_SCRIPT = PROJECT_ROOT / "tests" / "backend" / "js" / "oz_export.mjs"


def _data_lines() -> list[str]:
    text = gzip.decompress(SAMPLE.read_bytes()).decode()
    return [line for line in text.splitlines() if line and not line.startswith("#")]


def _request_id(line: str) -> str:
    return line.split("\t")[14]  # x-edge-request-id in the sample's #Fields order


def _ok(response):  # type: ignore[no-untyped-def]
    assert response.status_code < 400, response.text
    return response.json()


def test_operator_ingests_a_cloudfront_log_and_an_auditor_proves_every_line(
    app_client: TestClient, settings: Settings, tmp_path: Path
) -> None:
    admin = make_caller(app_client, Role.admin, "admin")
    operator = make_caller(app_client, Role.operator, "operator")
    auditor = make_caller(app_client, Role.auditor, "auditor")
    _ok(
        app_client.post(
            "/deliveries/sources",
            json={
                "name": "cf-dist",
                "kind": "cdn_provider",
                "provider": "cloudfront",
                "regions": ["*"],
                "jurisdiction": "US",
                "operator_user_id": operator.user_id,
            },
            headers=admin.headers,
        )
    )

    lines = _data_lines()
    with SAMPLE.open("rb") as handle:
        report = _ok(
            app_client.post(
                "/deliveries/sources/cf-dist/logs",
                files={"file": ("E2SAMPLE.2019-12-04.gz", handle)},
                headers=operator.headers,
            )
        )
    assert report["state"] == "done"
    assert report["records_new"] == len(lines) and report["quarantined"] == 0

    # The sample is from 2019: its periods are past the late window, a normal close takes them.
    closed = _ok(
        app_client.post(
            "/deliveries/batches/close", json={"force": False, "anchor_now": True}, headers=admin.headers
        )
    )
    assert closed["closed"], closed
    batches = _ok(
        app_client.get("/deliveries/batches", params={"source": "cf-dist"}, headers=auditor.headers)
    )
    assert batches and all(b["state"] in ("anchored", "final") for b in batches), batches
    assert sum(b["leaf_count"] for b in batches) == len(lines)

    chain = ChainClient.from_settings(settings)
    ledger = chain.contract("DeliveryLedger").functions
    for line in lines:
        by_id = _ok(
            app_client.get(
                "/deliveries/proofs",
                params={"source": "cf-dist", "request_id": _request_id(line)},
                headers=auditor.headers,
            )
        )
        by_line = _ok(
            app_client.post(
                "/deliveries/proofs/line", json={"source": "cf-dist", "line": line}, headers=auditor.headers
            )
        )
        assert by_line["leaf"] == by_id["leaf"] and by_line["proof"] == by_id["proof"]
        values = leaf_values_from_json(by_id["leaf_values"])
        leaf = leaf_hash(values)
        assert "0x" + leaf.hex() == by_id["leaf"]
        assert verify_proof(bytes32(by_id["root"]), leaf, [bytes32(p) for p in by_id["proof"]])
        batch_id = bytes32(by_id["batch"]["batch_id"])
        assert chain.call(ledger.verifyRecord(batch_id, tuple(values), [bytes32(p) for p in by_id["proof"]]))
        assert chain.call(ledger.isBatchRoot(batch_id, bytes32(by_id["root"])))

    # A line that was never delivered as logged is not provable: its status changed.
    forged = lines[0].split("\t")
    forged[8] = "206" if forged[8] != "206" else "200"
    response = app_client.post(
        "/deliveries/proofs/line",
        json={"source": "cf-dist", "line": "\t".join(forged)},
        headers=auditor.headers,
    )
    assert response.status_code == 409 and response.json()["error"]["code"] == "line_mismatch"

    for batch in batches:
        export = app_client.get(f"/deliveries/batches/{batch['batch_id']}/export", headers=auditor.headers)
        assert export.status_code == 200, export.text
        path = tmp_path / f"{batch['batch_id']}.json"
        path.write_bytes(export.content)
        _check_with_cli(path, settings, batch["leaf_count"])
        _check_with_openzeppelin(path, batch["root"])


def _check_with_cli(path: Path, settings: Settings, leaf_count: int) -> None:
    result = CliRunner().invoke(
        cli_app,
        [
            "verify-delivery",
            str(path),
            "--rpc-url",
            settings.eth_rpc_url,
            "--deployment",
            str(settings.resolved_deployment_file),
        ],
    )
    assert result.exit_code == 0, result.output
    assert result.output.count("PASS") >= leaf_count and "FAIL" not in result.output


def _check_with_openzeppelin(path: Path, root: str) -> None:
    node = shutil.which("node")
    assert node is not None, "node is required (the toolchain installs it)"
    done = subprocess.run(
        [node, str(OZ_EXPORT_SCRIPT), str(path)],
        capture_output=True,
        text=True,
        cwd=PROJECT_ROOT,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout)
    assert "error" not in result, result
    assert result["root"] == root
    assert result["verified"] == result["leafCount"] and result["failed"] == []


def test_a_foreign_operator_can_neither_upload_nor_prove(app_client: TestClient) -> None:
    admin = make_caller(app_client, Role.admin, "admin")
    owner = make_caller(app_client, Role.operator, "owner")
    stranger: Caller = make_caller(app_client, Role.operator, "stranger")
    _ok(
        app_client.post(
            "/deliveries/sources",
            json={
                "name": "cf-owned",
                "kind": "cdn_provider",
                "provider": "cloudfront",
                "regions": ["US"],
                "jurisdiction": "US",
                "operator_user_id": owner.user_id,
            },
            headers=admin.headers,
        )
    )
    with SAMPLE.open("rb") as handle:
        upload = app_client.post(
            "/deliveries/sources/cf-owned/logs", files={"file": ("x.gz", handle)}, headers=stranger.headers
        )
    assert upload.status_code == 403 and upload.json()["error"]["code"]
    proof = app_client.get(
        "/deliveries/proofs",
        params={"source": "cf-owned", "request_id": _request_id(_data_lines()[0])},
        headers=stranger.headers,
    )
    assert proof.status_code == 403
