"""Audit packages end to end: a settled period is exported by an auditor, verified by the standalone
verifier (the console script, as a subprocess) with only the archive and the RPC URL, and every kind of
tampering is reported as the failing item with a non-zero exit. Real anvil, IPFS, SQLite and PostgreSQL."""

from __future__ import annotations

import hashlib
import io
import json
import secrets
import subprocess
import sys
import tarfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from edgeledger.auth.models import Role
from edgeledger.config import Settings
from tests.backend.support.scenes import Scene
from tests.backend.support.stack import make_caller

pytestmark = pytest.mark.integration
VERIFIER = Path(sys.executable).with_name("edgeledger-verify-package")


def _ok(response: Any) -> Any:
    assert response.status_code < 400, response.text
    return response.json()


def _package(scene: Scene, **body: Any) -> bytes:
    request = {
        "period_start": scene.day,
        "period_end": scene.day + 86_400,
        "legal_basis": "annual audit",
        **body,
    }
    response = scene.client.post("/audit/packages", json=request, headers=scene.auditor.headers)
    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == "application/gzip"
    event = response.headers["X-Compliance-Event"]
    logged = _ok(scene.client.get(f"/compliance/events/{event}", headers=scene.admin.headers))
    assert logged["action"] == "export" and logged["legal_basis"] == "annual audit"
    return response.content


def _verify(archive: bytes, settings: Settings, tmp_path: Path) -> tuple[int, list[dict[str, Any]]]:
    path = tmp_path / f"package-{secrets.token_hex(4)}.tar.gz"
    path.write_bytes(archive)
    done = subprocess.run(
        [str(VERIFIER), str(path), "--rpc-url", settings.eth_rpc_url, "--json"],
        capture_output=True,
        text=True,
        check=False,
        timeout=300,
    )
    assert done.returncode in (0, 1), done.stderr
    return done.returncode, json.loads(done.stdout)["items"]


def _files(archive: bytes) -> dict[str, bytes]:
    with tarfile.open(fileobj=io.BytesIO(archive), mode="r:gz") as tar:
        return {m.name: tar.extractfile(m).read() for m in tar.getmembers()}  # type: ignore[union-attr]


def _retar(
    files: dict[str, bytes], path: str, change: Callable[[Any], None], *, reindex: bool = True
) -> bytes:
    """The archive with one JSON file changed; with ``reindex`` its sha256 in the index follows."""
    changed = dict(files)
    document = json.loads(changed[path])
    change(document)
    changed[path] = json.dumps(document).encode()
    if reindex:
        index = json.loads(changed["package.json"])
        for item in index["items"]:
            if item["path"] == path:
                item["sha256"] = hashlib.sha256(changed[path]).hexdigest()
        changed["package.json"] = json.dumps(index).encode()
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as tar:
        for name, data in changed.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return buffer.getvalue()


def _failing(items: list[dict[str, Any]]) -> list[tuple[str, str]]:
    return [(i["kind"], i["path"]) for i in items if not i["ok"]]


def test_a_merchant_package_verifies_and_every_tampering_is_caught(scene: Scene, tmp_path: Path) -> None:
    archive = _package(scene, merchant_user_id=scene.merchant.user_id)
    code, items = _verify(archive, scene.settings, tmp_path)
    assert code == 0, items
    kinds = {i["kind"] for i in items}
    assert {"batch", "manifest chain", "settlement", "statement", "cases", "compliance erase"} <= kinds
    assert all(i["ok"] for i in items)
    files = _files(archive)
    inputs = next(p for p in files if p.endswith("inputs.json"))
    batch = next(p for p in files if p.startswith("batches/"))
    statement = next(p for p in files if p.endswith("statement.json"))

    def bump_total(doc: Any) -> None:
        doc["total"] += 1

    def flip_signature(doc: Any) -> None:
        signature = doc["batch"]["signature"]
        doc["batch"]["signature"] = (
            signature[:-4] + ("00" if signature[-4:-2] != "00" else "11") + signature[-2:]
        )

    def unknown_batch(doc: Any) -> None:
        doc["batch"]["manifest"]["batchId"] = "0x" + "ab" * 32

    for path, change, kind in (
        (inputs, bump_total, "settlement"),
        (batch, flip_signature, "batch"),
        (batch, unknown_batch, "batch"),
    ):
        code, items = _verify(_retar(files, path, change), scene.settings, tmp_path)
        assert code == 1 and (kind, path) in _failing(items), _failing(items)

    # Bytes that no longer match the index.
    code, items = _verify(
        _retar(files, statement, lambda d: d.update(total=0), reindex=False), scene.settings, tmp_path
    )
    assert code == 1 and _failing(items) == [("file", statement)]


def test_a_source_package_proves_requested_lines_and_a_forged_sibling_fails(
    scene: Scene, tmp_path: Path
) -> None:
    archive = _package(scene, source="cf-shop", request_ids=scene.request_ids)
    code, items = _verify(archive, scene.settings, tmp_path)
    assert code == 0, items
    files = _files(archive)
    (proofs,) = [p for p in files if p.startswith("proofs/")]
    assert len(json.loads(files[proofs])["proofs"]) == len(scene.request_ids)
    assert not any(ip in b"".join(files.values()) for ip in (b"192.0.2.", b"198.51.100.", b"203.0.113."))

    def forge_sibling(doc: Any) -> None:
        first = doc["proofs"][0]
        first["proof"][0] = "0x" + "11" * 32

    code, items = _verify(_retar(files, proofs, forge_sibling), scene.settings, tmp_path)
    assert code == 1 and ("proofs", proofs) in _failing(items)


def test_packages_are_for_auditors_within_scope(scene: Scene) -> None:
    client, day = scene.client, scene.day
    body = {
        "period_start": day,
        "period_end": day + 86_400,
        "legal_basis": "audit",
        "merchant_user_id": scene.merchant.user_id,
    }
    other = make_caller(client, Role.merchant, "Other shop")
    scoped = make_caller(client, Role.auditor, "Scoped auditor")
    _ok(
        client.put(
            f"/admin/users/{scoped.user_id}/scope",
            json={"merchants": [other.user_id]},
            headers=scene.admin.headers,
        )
    )
    denied = client.post("/audit/packages", json=body, headers=scoped.headers)
    assert denied.status_code == 403 and denied.json()["error"]["code"] == "out_of_scope"
    merchant = client.post("/audit/packages", json=body, headers=scene.merchant.headers)
    assert merchant.status_code == 403 and merchant.json()["error"]["code"] == "forbidden"
    both = client.post("/audit/packages", json={**body, "source": "cf-shop"}, headers=scene.auditor.headers)
    assert both.status_code == 400 and both.json()["error"]["code"] == "scope_invalid"
    no_basis = {k: v for k, v in body.items() if k != "legal_basis"}
    missing = client.post("/audit/packages", json=no_basis, headers=scene.auditor.headers)
    assert missing.status_code == 422 and missing.json()["error"]["code"] == "validation_error"
