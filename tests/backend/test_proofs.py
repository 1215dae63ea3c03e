"""Delivery proofs and batch exports: the API, the chain-only CLI verifier, the contract's verifyRecord and
@openzeppelin/merkle-tree under node, on real anvil and real databases (SQLite and PostgreSQL)."""

from __future__ import annotations

import itertools
import json
import random
import shutil
import string
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from eth_account import Account
from eth_account.signers.local import LocalAccount
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, given
from hypothesis import settings as hyp_settings
from hypothesis import strategies as st
from sqlalchemy import select
from sqlalchemy.orm import Session
from typer.testing import CliRunner

from edgeledger.auth.models import Role
from edgeledger.chain.client import ChainClient
from edgeledger.cli import app as cli_app
from edgeledger.config import Settings
from edgeledger.deliveries import proofs
from edgeledger.deliveries.models import BatchState, DeliveryBatch, DeliveryRecordRow, DeliverySource
from edgeledger.deliveries.records import CacheResult, DeliveryRecord, make_record
from edgeledger.deliveries.service import leaf_values_of
from edgeledger.ledger.delivery_leaf import LEAF_TYPES, LeafValues, leaf_hash, leaf_values_from_json
from edgeledger.ledger.hashing import bytes32
from edgeledger.ledger.merkle import MerkleTree, dump_standard, load_standard, verify_proof
from tests.backend.support.deliveries import (
    add_merchant_host,
    add_records,
    anchor_batch,
    close_and_anchor,
    close_batch,
    parse_sample,
    register_source,
    sample_lines,
)
from tests.backend.support.stack import Caller, make_caller

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
OZ_EXPORT_SCRIPT = ROOT / "tests" / "backend" / "js" / "oz_export.mjs"
SAMPLE_FILES = {
    "cloudfront": "cloudfront.log",
    "cloudflare": "cloudflare.ndjson",
    "edgeledger": "edgeledger.jsonl",
}


# ----------------------------------------------------------------------------------------------
# Fixtures
# ----------------------------------------------------------------------------------------------


@dataclass
class World:
    client: TestClient
    settings: Settings
    chain: ChainClient
    signer: LocalAccount
    sources: dict[str, DeliverySource]  # by provider
    records: dict[str, list[DeliveryRecord]]  # parsed sample records by provider
    operator: Caller  # operates the cloudfront source
    merchant: Caller  # owns media.example.com
    auditor: Caller

    def session(self) -> Session:
        return Session(self.client.app.state.engine)  # type: ignore[attr-defined]


@pytest.fixture
def chain(settings: Settings) -> ChainClient:
    return ChainClient.from_settings(settings)


@pytest.fixture
def world(app_client: TestClient, settings: Settings, chain: ChainClient) -> World:
    """One source per sample format, every sample record stored, every batch closed and anchored."""
    signer = Account.create()
    operator = make_caller(app_client, Role.operator, "operator")
    merchant = make_caller(app_client, Role.merchant, "merchant")
    auditor = make_caller(app_client, Role.auditor, "auditor")
    sources: dict[str, DeliverySource] = {}
    records: dict[str, list[DeliveryRecord]] = {}
    with Session(app_client.app.state.engine, expire_on_commit=False) as session:  # type: ignore[attr-defined]
        for provider, file in SAMPLE_FILES.items():
            source = register_source(
                session,
                chain,
                f"{provider}-source",
                provider=provider,
                signer=signer.address,
                operator_user_id=operator.user_id if provider == "cloudfront" else None,
            )
            records[provider] = parse_sample(file)
            assert records[provider], file
            batches = add_records(session, settings, source, records[provider])
            close_and_anchor(session, settings, chain, batches, signer)
            sources[provider] = source
        add_merchant_host(session, "media.example.com", merchant.user_id)
    return World(app_client, settings, chain, signer, sources, records, operator, merchant, auditor)


def assert_error(response: Any, status: int, code: str) -> dict[str, Any]:
    assert response.status_code == status, response.text
    body = response.json()["error"]
    assert body["code"] == code, body
    assert body["message"]
    return body


def onchain_verify(chain: ChainClient, batch_id: str, values: LeafValues, proof: list[bytes]) -> bool:
    ledger = chain.contract("DeliveryLedger")
    return bool(chain.call(ledger.functions.verifyRecord(bytes32(batch_id), tuple(values), proof)))


def check_proof_document(chain: ChainClient, body: dict[str, Any]) -> None:
    """The proof verifies locally (merkle.verify_proof) and with the contract's verifyRecord."""
    values = leaf_values_from_json(body["leaf_values"])
    leaf = leaf_hash(values)
    proof = [bytes32(node) for node in body["proof"]]
    assert "0x" + leaf.hex() == body["leaf"]
    assert verify_proof(bytes32(body["root"]), leaf, proof)
    assert onchain_verify(chain, body["batch"]["batch_id"], values, proof)
    ledger = chain.contract("DeliveryLedger").functions
    batch_id = bytes32(body["batch"]["batch_id"])
    assert chain.call(ledger.isBatchRoot(batch_id, bytes32(body["root"])))
    assert "0x" + bytes(chain.call(ledger.batchSource(batch_id))).hex() == body["batch"]["source_id"]


def get_proof(world: World, caller: Caller, provider: str, request_id: str) -> Any:
    return world.client.get(
        "/deliveries/proofs",
        params={"source": world.sources[provider].name, "request_id": request_id},
        headers=caller.headers,
    )


def post_line(world: World, caller: Caller, provider: str, line: str, header: str | None = None) -> Any:
    body: dict[str, Any] = {"source": world.sources[provider].name, "line": line}
    if header is not None:
        body["header"] = header
    return world.client.post("/deliveries/proofs/line", json=body, headers=caller.headers)


# ----------------------------------------------------------------------------------------------
# Proof API
# ----------------------------------------------------------------------------------------------


def test_proof_by_request_id_for_every_sample_record(world: World) -> None:
    deployment = json.loads(world.settings.resolved_deployment_file.read_text())
    for provider, records in world.records.items():
        for record in records:
            response = get_proof(world, world.auditor, provider, record.request_id)
            assert response.status_code == 200, response.text
            body = response.json()
            assert body["format"] == "edgeledger-proof/v1"
            assert body["leaf_encoding"] == proofs.LEAF_ENCODING_NAME
            assert body["leaf_types"] == list(LEAF_TYPES)
            shown = body["record"]
            assert shown["request_id"] == record.request_id
            assert shown["timestamp_ms"] == record.timestamp_ms
            assert (shown["host"], shown["uri"], shown["edge_location"]) == (
                record.host,
                record.uri,
                record.edge_location,
            )
            assert (shown["bytes_delivered"], shown["status"], shown["cache_result"]) == (
                record.bytes_delivered,
                record.status,
                int(record.cache_result),
            )
            # The client appears only as its commitment: never the pseudonym nor the salt.
            assert not {"client_pseudonym", "salt", "pseudonym_key_id"} & set(shown)
            assert record.client_pseudonym.hex() not in response.text
            assert body["anchored"] is True
            assert body["batch"]["state"] == BatchState.anchored
            assert body["contract"] == deployment["contracts"]["DeliveryLedger"]["address"]
            assert body["chain_id"] == deployment["chain_id"]
            receipt = world.chain.w3.eth.get_transaction_receipt(body["tx_hash"])
            assert receipt["blockNumber"] == body["block_number"]
            check_proof_document(world.chain, body)


@pytest.mark.parametrize("provider", list(SAMPLE_FILES))
def test_proof_by_raw_line(world: World, provider: str) -> None:
    lines = sample_lines(SAMPLE_FILES[provider])
    for record in world.records[provider]:
        line = lines[record.line_number - 1]
        response = post_line(world, world.auditor, provider, line)
        assert response.status_code == 200, response.text
        body = response.json()
        assert body["record"]["request_id"] == record.request_id
        check_proof_document(world.chain, body)
        by_id = get_proof(world, world.auditor, provider, record.request_id).json()
        assert by_id == body


def test_cloudfront_line_with_its_own_header(world: World) -> None:
    lines = sample_lines("cloudfront.log")
    header = next(line for line in lines if line.startswith("#Fields:"))
    columns = header.removeprefix("#Fields:").split()
    record = world.records["cloudfront"][0]
    fields = lines[record.line_number - 1].split("\t")
    # The same line with its columns in another order, described by its own header.
    order = list(reversed(range(len(columns))))
    shuffled_header = "#Fields: " + " ".join(columns[i] for i in order)
    shuffled_line = "\t".join(fields[i] for i in order)
    response = post_line(world, world.auditor, "cloudfront", shuffled_line, header=shuffled_header)
    assert response.status_code == 200, response.text
    assert response.json()["record"]["request_id"] == record.request_id
    # Without the header the default column order reads the wrong columns: not a valid record.
    response = post_line(world, world.auditor, "cloudfront", shuffled_line)
    assert response.status_code in (404, 409, 422), response.text


def test_line_mismatch_names_the_differing_fields(world: World) -> None:
    lines = sample_lines("cloudfront.log")
    record = world.records["cloudfront"][0]
    fields = lines[record.line_number - 1].split("\t")
    fields[30] = str(int(fields[30]) + 1)  # sc-content-len: the body bytes a record counts
    fields[8] = "404"  # sc-status
    body = assert_error(
        post_line(world, world.auditor, "cloudfront", "\t".join(fields)), 409, "line_mismatch"
    )
    assert body["details"]["fields"] == ["bytes", "status"]
    assert body["details"]["request_id"] == record.request_id

    json_record = world.records["edgeledger"][0]
    obj = json.loads(sample_lines("edgeledger.jsonl")[json_record.line_number - 1])
    obj["uri"] = "/other/path.mp4"
    obj["edge_location"] = "AMS1"
    body = assert_error(post_line(world, world.auditor, "edgeledger", json.dumps(obj)), 409, "line_mismatch")
    assert body["details"]["fields"] == ["edge_location", "uri"]


def test_record_not_found_and_malformed_lines(world: World) -> None:
    body = assert_error(get_proof(world, world.auditor, "cloudflare", "no-such-ray"), 404, "record_not_found")
    assert body["details"]["request_id"] == "no-such-ray"
    line = sample_lines("cloudflare.ndjson")[world.records["cloudflare"][0].line_number - 1]
    obj = json.loads(line)
    obj["RayID"] = "00000000deadbeef"
    assert_error(post_line(world, world.auditor, "cloudflare", json.dumps(obj)), 404, "record_not_found")
    # Malformed lines: the parser's quarantine reason comes back with a 422.
    body = assert_error(post_line(world, world.auditor, "cloudflare", "{not json"), 422, "line_invalid")
    assert body["details"]["reason"] == "invalid_json"
    body = assert_error(
        post_line(world, world.auditor, "cloudfront", "2024-05-01\t12:00:01"), 422, "line_invalid"
    )
    assert body["details"]["reason"] == "field_count"
    obj = json.loads(line)
    obj["EdgeResponseStatus"] = 999
    body = assert_error(post_line(world, world.auditor, "cloudflare", json.dumps(obj)), 422, "line_invalid")
    assert body["details"]["reason"] == "bad_status"
    assert_error(get_proof(world, world.auditor, "cloudfront", ""), 404, "record_not_found")
    assert_error(
        world.client.get(
            "/deliveries/proofs", params={"source": "nope", "request_id": "x"}, headers=world.auditor.headers
        ),
        404,
        "source_not_found",
    )


def test_batch_not_closed_and_closed_but_not_anchored(
    app_client: TestClient, settings: Settings, chain: ChainClient
) -> None:
    auditor = make_caller(app_client, Role.auditor, "auditor")
    records = parse_sample("edgeledger.jsonl")
    with Session(app_client.app.state.engine, expire_on_commit=False) as session:  # type: ignore[attr-defined]
        source = register_source(
            session, chain, "node-1", provider="edgeledger", signer=Account.create().address
        )
        batches = add_records(session, settings, source, records)
    params = {"source": "node-1", "request_id": records[0].request_id}
    body = assert_error(
        app_client.get("/deliveries/proofs", params=params, headers=auditor.headers), 409, "batch_not_closed"
    )
    assert body["details"]["state"] == "open"
    batch_id = batches[0].batch_id
    assert_error(
        app_client.get(f"/deliveries/batches/{batch_id}/export", headers=auditor.headers),
        409,
        "batch_not_closed",
    )
    with Session(app_client.app.state.engine, expire_on_commit=False) as session:  # type: ignore[attr-defined]
        for batch in batches:
            close_batch(session, settings, session.get(DeliveryBatch, batch.id))  # type: ignore[arg-type]
    response = app_client.get("/deliveries/proofs", params=params, headers=auditor.headers)
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["anchored"] is False and body["batch"]["state"] == "closed"
    assert body["tx_hash"] is None and body["block_number"] is None
    values = leaf_values_from_json(body["leaf_values"])
    assert verify_proof(bytes32(body["root"]), leaf_hash(values), [bytes32(p) for p in body["proof"]])


def test_authorisation(world: World, app_client: TestClient) -> None:
    cloudfront = world.records["cloudfront"]
    media = next(r for r in cloudfront if r.host == "media.example.com")
    other = next(r for r in cloudfront if r.host != "media.example.com")
    # The operator reads its own source, not another one.
    assert get_proof(world, world.operator, "cloudfront", other.request_id).status_code == 200
    cloudflare_id = world.records["cloudflare"][0].request_id
    assert_error(get_proof(world, world.operator, "cloudflare", cloudflare_id), 403, "forbidden")
    # Even an unknown request id of a foreign source is a 403, not a 404 (no probing).
    assert_error(get_proof(world, world.operator, "cloudflare", "unknown"), 403, "forbidden")
    # The merchant reads records of its hosts only, on any source; another merchant's record is answered
    # as if it did not exist (no probing), and a line that differs from it shows nothing of it.
    assert get_proof(world, world.merchant, "cloudfront", media.request_id).status_code == 200
    missing = assert_error(
        get_proof(world, world.merchant, "cloudfront", other.request_id), 404, "record_not_found"
    )
    unknown = assert_error(
        get_proof(world, world.merchant, "cloudfront", "no-such-id"), 404, "record_not_found"
    )
    assert set(missing) == set(unknown)
    line = sample_lines("cloudfront.log")[other.line_number - 1]
    assert_error(post_line(world, world.merchant, "cloudfront", line), 404, "record_not_found")
    fields = line.split("\t")
    fields[3] = str(int(fields[3]) + 1)  # a wrong byte count: the mismatch answer would show stored values
    body = assert_error(
        post_line(world, world.merchant, "cloudfront", "\t".join(fields)), 404, "record_not_found"
    )
    assert "differences" not in json.dumps(body)
    # Creators are not readers at all; anonymous callers are not authenticated.
    creator = make_caller(app_client, Role.creator, "creator")
    assert_error(get_proof(world, creator, "cloudfront", media.request_id), 403, "forbidden")
    response = world.client.get(
        "/deliveries/proofs", params={"source": "cloudfront-source", "request_id": "x"}
    )
    assert_error(response, 401, "unauthenticated")
    # Exports: the whole batch for admins, auditors and the source's operator; a merchant only its lines.
    with world.session() as session:
        batch_id = session.scalar(
            select(DeliveryBatch.batch_id)
            .join(DeliveryRecordRow)
            .where(DeliveryRecordRow.request_id == media.request_id)
        )
    url = f"/deliveries/batches/{batch_id}/export"
    assert world.client.get(url, headers=world.operator.headers).status_code == 200
    assert_error(world.client.get(url, headers=world.merchant.headers), 403, "forbidden")
    response = world.client.get(url, params={"request_ids": media.request_id}, headers=world.merchant.headers)
    assert response.status_code == 200, response.text
    foreign = world.records["cloudflare"][0].request_id
    assert_error(
        world.client.get(url, headers=make_caller(app_client, Role.operator, "op2").headers), 403, "forbidden"
    )
    assert_error(
        world.client.get(url, params={"request_ids": foreign}, headers=world.auditor.headers),
        404,
        "record_not_found",
    )


# ----------------------------------------------------------------------------------------------
# Property: every proof verifies; any flipped byte breaks both the local and the on-chain check
# ----------------------------------------------------------------------------------------------

_FIELD_WIDTHS = [int(t[5:]) if t.startswith("bytes") else int(t[4:]) // 8 for t in LEAF_TYPES]
_names = itertools.count()


def _flip_field(values: LeafValues, field: int, position: int, mask: int) -> LeafValues:
    items = list(values)
    width = _FIELD_WIDTHS[field]
    position %= width
    if isinstance(items[field], bytes):
        raw = bytearray(items[field])
        raw[position] ^= mask
        items[field] = bytes(raw)
    else:
        items[field] ^= mask << (8 * position)
    return LeafValues(*items)


@st.composite
def delivery_records(draw: st.DrawFn) -> list[DeliveryRecord]:
    count = draw(st.integers(1, 24))
    ids = draw(
        st.lists(
            st.text(string.ascii_letters + string.digits + "-_=", min_size=1, max_size=40),
            min_size=count,
            max_size=count,
            unique=True,
        )
    )
    day = draw(st.integers(0, 40_000)) * 86_400_000
    out = []
    for number, request_id in enumerate(ids, start=1):
        out.append(
            make_record(
                "edgeledger",
                request_id,
                day + draw(st.integers(0, 86_399_999)),
                draw(st.text(string.ascii_uppercase + string.digits + "-", min_size=1, max_size=16)),
                draw(st.sampled_from(["DE", "US", "JP", ""])),
                draw(st.sampled_from(["media.example.com", "cdn.example.org", "a.b.example"])),
                "/" + draw(st.text(string.ascii_lowercase + "/.%20", max_size=30)),
                draw(st.integers(0, 2**58)),  # 24 of them still sum below the 2**63 of total_bytes
                draw(st.integers(100, 599)),
                CacheResult(draw(st.integers(0, 5))),
                draw(st.binary(min_size=32, max_size=32)),
                number,
            )
        )
    return out


@hyp_settings(max_examples=25, deadline=None, suppress_health_check=list(HealthCheck))
@given(
    records=delivery_records(),
    pick=st.integers(0, 10**6),
    positions=st.lists(st.integers(0, 31), min_size=11, max_size=11),
    mask=st.integers(1, 255),
    proof_pick=st.integers(0, 10**6),
    asset_id=st.integers(0, 2**63 - 1),  # the database column is a signed 64-bit integer
)
def test_property_proofs_verify_and_any_flipped_byte_fails(
    app_client: TestClient,
    settings: Settings,
    chain: ChainClient,
    records: list[DeliveryRecord],
    pick: int,
    positions: list[int],
    mask: int,
    proof_pick: int,
    asset_id: int,
) -> None:
    signer = Account.create()
    with Session(app_client.app.state.engine, expire_on_commit=False) as session:  # type: ignore[attr-defined]
        source = register_source(
            session, chain, f"prop-{next(_names)}", provider="edgeledger", signer=signer.address
        )
        batches = add_records(session, settings, source, records, asset_id=asset_id)
        assert len(batches) == 1
        close_and_anchor(session, settings, chain, batches, signer)
        rows = session.scalars(
            select(DeliveryRecordRow).where(DeliveryRecordRow.source_pk == source.id)
        ).all()
        documents = [proofs.record_proof(session, settings, row) for row in rows]
    batch_id = batches[0].batch_id
    for doc in documents:
        values = leaf_values_from_json(doc.leaf_values)
        proof = [bytes32(p) for p in doc.proof]
        assert verify_proof(bytes32(doc.root), leaf_hash(values), proof)
        assert onchain_verify(chain, batch_id, values, proof)
    doc = documents[pick % len(documents)]
    values = leaf_values_from_json(doc.leaf_values)
    proof = [bytes32(p) for p in doc.proof]
    root = bytes32(doc.root)
    for field in range(len(LEAF_TYPES)):
        flipped = _flip_field(values, field, positions[field], mask)
        assert flipped != values
        assert not verify_proof(root, leaf_hash(flipped), proof), LEAF_TYPES[field]
        assert not onchain_verify(chain, batch_id, flipped, proof), LEAF_TYPES[field]
    if proof:
        k = proof_pick % len(proof)
        node = bytearray(proof[k])
        node[proof_pick % 32] ^= mask
        bad_proof = [*proof[:k], bytes(node), *proof[k + 1 :]]
        assert not verify_proof(root, leaf_hash(values), bad_proof)
        assert not onchain_verify(chain, batch_id, values, bad_proof)


# ----------------------------------------------------------------------------------------------
# Exports, the CLI verifier and @openzeppelin/merkle-tree
# ----------------------------------------------------------------------------------------------


def synthetic_records(count: int, seed: int) -> list[DeliveryRecord]:
    rng = random.Random(seed)
    day = 1_714_521_600_000  # 2024-05-01T00:00:00Z
    return [
        make_record(
            "edgeledger",
            f"req-{seed}-{i}",
            day + rng.randrange(86_400_000),
            rng.choice(["FRA1", "AMS2", "NRT12"]),
            rng.choice(["DE", "NL", "JP", ""]),
            rng.choice(["media.example.com", "cdn.example.org"]),
            f"/media/{rng.randrange(1000)}.mp4",
            rng.randrange(2**40),
            rng.choice([200, 206, 304]),
            CacheResult(rng.randrange(6)),
            rng.randbytes(32),
            i + 1,
        )
        for i in range(count)
    ]


@pytest.fixture
def big_batch(app_client: TestClient, settings: Settings, chain: ChainClient) -> tuple[str, int]:
    """An anchored batch of 4,500 records (more than two export chunks)."""
    signer = Account.create()
    with Session(app_client.app.state.engine, expire_on_commit=False) as session:  # type: ignore[attr-defined]
        source = register_source(session, chain, "bulk", provider="edgeledger", signer=signer.address)
        batches = add_records(session, settings, source, synthetic_records(4_500, 7))
        close_and_anchor(session, settings, chain, batches, signer)
    return batches[0].batch_id, 4_500


def run_verify(path: Path, settings: Settings, *extra: str) -> Any:
    args = ["verify-delivery", str(path), "--rpc-url", settings.eth_rpc_url]
    args += ["--deployment", str(settings.resolved_deployment_file), *extra]
    return CliRunner().invoke(cli_app, args)


def export(client: TestClient, caller: Caller, batch_id: str, tmp_path: Path, **params: str) -> Path:
    response = client.get(f"/deliveries/batches/{batch_id}/export", params=params, headers=caller.headers)
    assert response.status_code == 200, response.text
    path = tmp_path / f"{batch_id}-{len(params)}.json"
    path.write_bytes(response.content)
    return path


def test_export_verifies_with_the_cli_and_tampering_fails(
    app_client: TestClient, settings: Settings, big_batch: tuple[str, int], tmp_path: Path
) -> None:
    batch_id, count = big_batch
    auditor = make_caller(app_client, Role.auditor, "auditor")
    path = export(app_client, auditor, batch_id, tmp_path)
    doc = json.loads(path.read_text())
    assert doc["format"] == "edgeledger-batch-export/v1"
    assert doc["batch"]["manifest"]["batchId"] == batch_id and doc["batch"]["anchored"] is True
    assert doc["tree"]["format"] == "standard-v1" and len(doc["tree"]["values"]) == count
    # Our own loader (OZ's load rules) accepts it.
    tree, _ = load_standard(doc["tree"])
    assert "0x" + tree.root.hex() == doc["batch"]["manifest"]["root"]

    result = run_verify(path, settings, "--onchain-sample", "5")
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    assert sum(line.startswith("PASS leaf ") for line in lines) == count
    assert sum("verifyRecord on chain: true" in line for line in lines) == 5
    assert not any(line.startswith("FAIL") for line in lines)
    assert f"proven on chain: {count + 1} checks passed, 5 on-chain verify calls" == lines[-1]

    # One byte of one value changed: that leaf fails, everything else still passes.
    tampered = json.loads(path.read_text())
    value = tampered["tree"]["values"][123]["value"]
    value[7] = str(int(value[7]) ^ 1)  # bytesDelivered
    bad = tmp_path / "tampered.json"
    bad.write_text(json.dumps(tampered))
    result = run_verify(bad, settings)
    assert result.exit_code == 1, result.output
    failed = [line for line in result.output.splitlines() if line.startswith("FAIL")]
    assert len(failed) == 1 and failed[0].startswith("FAIL leaf 123 ") and "do not hash" in failed[0]

    # A manifest hash that is not the anchored one: the batch line fails, the leaves still pass.
    other = json.loads(path.read_text())
    other["batch"]["manifest_hash"] = "0x" + "11" * 32
    bad.write_text(json.dumps(other))
    result = run_verify(bad, settings, "--onchain-sample", "0")
    assert result.exit_code == 1, result.output
    first = result.output.splitlines()[0]
    assert first.startswith("FAIL batch ") and "manifest hash" in first

    # Manifest totals that were not signed, and a signature of someone else.
    for edit, reason in (
        (lambda d: d["batch"]["manifest"].__setitem__("totalBytes", 1), "do not hash to the anchored"),
        (lambda d: d["batch"].__setitem__("signer", Account.create().address), "does not recover"),
    ):
        other = json.loads(path.read_text())
        edit(other)
        bad.write_text(json.dumps(other))
        result = run_verify(bad, settings, "--onchain-sample", "0")
        assert result.exit_code == 1, result.output
        first = result.output.splitlines()[0]
        assert first.startswith("FAIL batch ") and reason in first, first

    # A consistent tree over altered values (root rebuilt): the root is not the anchored one.
    forged = json.loads(path.read_text())
    values = [leaf_values_from_json(v["value"]) for v in forged["tree"]["values"]]
    values[0] = values[0]._replace(bytes_delivered=values[0].bytes_delivered + 1)
    rebuilt = MerkleTree.build([leaf_hash(v) for v in values])
    forged["tree"] = dump_standard(rebuilt, values)
    forged["batch"]["manifest"]["root"] = "0x" + rebuilt.root.hex()
    bad.write_text(json.dumps(forged))
    result = run_verify(bad, settings, "--onchain-sample", "0")
    assert result.exit_code == 1, result.output
    out = result.output.splitlines()
    assert out[0].startswith("FAIL batch ") and "root" in out[0]
    assert sum(line.startswith("FAIL leaf ") for line in out) == count
    assert "does not lead to the anchored root" in out[1]


def test_proofs_documents_and_unanchored_exports_with_the_cli(
    world: World, settings: Settings, tmp_path: Path
) -> None:
    records = world.records["cloudflare"]
    with world.session() as session:
        batch_id = session.scalar(
            select(DeliveryBatch.batch_id)
            .join(DeliveryRecordRow)
            .where(DeliveryRecordRow.request_id == records[0].request_id)
        )
        in_batch = session.scalars(
            select(DeliveryRecordRow.request_id).join(DeliveryBatch).where(DeliveryBatch.batch_id == batch_id)
        ).all()
    wanted = ",".join(in_batch[:3])
    path = export(world.client, world.auditor, batch_id, tmp_path, request_ids=wanted)
    doc = json.loads(path.read_text())
    assert doc["format"] == "edgeledger-proofs/v1"
    assert [p["record"]["request_id"] for p in doc["proofs"]] == in_batch[:3]
    result = run_verify(path, settings)
    assert result.exit_code == 0, result.output
    assert [line.split()[1] for line in result.output.splitlines()[:-1]] == in_batch[:3]
    assert all(line.startswith("PASS ") for line in result.output.splitlines()[:-1])

    # A single proof document, as GET /deliveries/proofs returns it.
    single = tmp_path / "single.json"
    single.write_text(get_proof(world, world.auditor, "cloudflare", records[0].request_id).text)
    result = run_verify(single, settings, "--contract", "ignored")  # both given: unusable
    assert result.exit_code == 2
    result = CliRunner().invoke(
        cli_app,
        ["verify-delivery", str(single), "--rpc-url", settings.eth_rpc_url, "--contract", doc["contract"]],
    )
    assert result.exit_code == 0, result.output
    assert result.output.startswith(f"PASS {records[0].request_id} ")

    # The readable record no longer matching its leaf values fails.
    forged = json.loads(single.read_text())
    forged["record"]["bytes_delivered"] += 1
    single.write_text(json.dumps(forged))
    result = run_verify(single, settings)
    assert result.exit_code == 1 and "bytes_delivered" in result.output

    # Unusable input: exit code 2; an unreachable RPC: exit code 3.
    garbage = tmp_path / "garbage.json"
    garbage.write_text("[1, 2")
    assert run_verify(garbage, settings).exit_code == 2
    result = CliRunner().invoke(
        cli_app,
        ["verify-delivery", str(path), "--rpc-url", "http://127.0.0.1:9", "--contract", doc["contract"]],
    )
    assert result.exit_code == 3 and "error: the chain RPC at http://127.0.0.1:9" in result.output


def test_closed_but_unanchored_export_fails_verification(
    app_client: TestClient, settings: Settings, chain: ChainClient, tmp_path: Path
) -> None:
    auditor = make_caller(app_client, Role.auditor, "auditor")
    with Session(app_client.app.state.engine, expire_on_commit=False) as session:  # type: ignore[attr-defined]
        source = register_source(
            session, chain, "closed-only", provider="edgeledger", signer=Account.create().address
        )
        batches = add_records(session, settings, source, synthetic_records(40, 3))
        close_batch(session, settings, batches[0])
    path = export(app_client, auditor, batches[0].batch_id, tmp_path)
    assert json.loads(path.read_text())["batch"]["anchored"] is False
    result = run_verify(path, settings)
    assert result.exit_code == 1, result.output
    assert "is not anchored on chain" in result.output.splitlines()[0]
    assert not any(line.startswith("PASS") for line in result.output.splitlines())


def test_export_loads_in_openzeppelin_merkle_tree(
    app_client: TestClient, settings: Settings, chain: ChainClient, big_batch: tuple[str, int], tmp_path: Path
) -> None:
    node = shutil.which("node")
    if node is None:
        pytest.skip("node is not on PATH")
    batch_id, count = big_batch
    auditor = make_caller(app_client, Role.auditor, "auditor")
    path = export(app_client, auditor, batch_id, tmp_path)
    done = subprocess.run(
        [node, str(OZ_EXPORT_SCRIPT), str(path)], capture_output=True, text=True, cwd=ROOT, check=False
    )
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout)
    assert "error" not in result, result
    ledger = chain.contract("DeliveryLedger").functions
    assert result["root"] == result["manifestRoot"]
    assert chain.call(ledger.isBatchRoot(bytes32(batch_id), bytes32(result["root"])))
    assert result["verified"] == result["leafCount"] == count and result["failed"] == []
    # OZ's getProof(i) is the proof the API hands out for the same record.
    doc = json.loads(path.read_text())
    with Session(app_client.app.state.engine) as session:  # type: ignore[attr-defined]
        leaf_to_request = {
            "0x" + leaf.hex(): rid
            for rid, leaf in session.execute(select(DeliveryRecordRow.request_id, DeliveryRecordRow.leaf))
        }
    for i in range(3):
        leaf = "0x" + leaf_hash(leaf_values_from_json(doc["tree"]["values"][i]["value"])).hex()
        response = app_client.get(
            "/deliveries/proofs",
            params={"source": "bulk", "request_id": leaf_to_request[leaf]},
            headers=auditor.headers,
        )
        assert response.json()["proof"] == result["proofs"][str(i)]


# ----------------------------------------------------------------------------------------------
# Gas of one on-chain verifyRecord
# ----------------------------------------------------------------------------------------------


def test_verify_record_gas_by_proof_depth(
    settings: Settings, chain: ChainClient, app_client: TestClient
) -> None:
    """eth_estimateGas of verifyRecord for a proof of depth 10 (a batch of 1,024 leaves; 1,000 leaves give
    depth 9-10) and of depth 20 (1,048,576 leaves; 1,000,000 give depth 19-20): batches anchored with
    synthetic leaves around one real record."""
    signer = Account.create()
    ledger = chain.contract("DeliveryLedger")
    record = synthetic_records(1, 11)[0]
    gas: dict[int, int] = {}
    with Session(app_client.app.state.engine, expire_on_commit=False) as session:  # type: ignore[attr-defined]
        source = register_source(session, chain, "gas", provider="edgeledger", signer=signer.address)
        add_records(session, settings, source, [record])
        row = session.scalars(select(DeliveryRecordRow)).one()
        values = leaf_values_of(source.source_id, row)
        rng = random.Random(5)
        for seq, leaves in enumerate((1 << 10, 1 << 20)):
            tree = MerkleTree.build([row.leaf, *(rng.randbytes(32) for _ in range(leaves - 1))])
            batch = DeliveryBatch(
                batch_id="0x" + rng.randbytes(32).hex(),
                source_pk=source.id,
                period_start=10 * seq,
                period_end=10 * seq + 5,
                root="0x" + tree.root.hex(),
                leaf_count=leaves,
                state=BatchState.closed,
            )
            session.add(batch)
            session.commit()
            anchor_batch(session, chain, batch, signer)
            proof = tree.proof(0)
            fn = ledger.functions.verifyRecord(bytes32(batch.batch_id), tuple(values), proof)
            assert fn.call() is True
            gas[len(proof)] = fn.estimate_gas()
    print(f"verifyRecord gas (eth_estimateGas): depth 10: {gas[10]}, depth 20: {gas[20]}")
    assert set(gas) == {10, 20}
    assert 20_000 < gas[10] < gas[20] < 80_000
