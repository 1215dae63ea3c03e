"""``edgeledger verify delivery`` reads batch exports in bounded memory (verify/stream.py): the chunked
reader against ``json.load``, and a 200,000-record export anchored on anvil verified with tracemalloc's
peak far below the export's size, a tampered record still failing."""

from __future__ import annotations

import contextlib
import json
import multiprocessing
import os
import random
import time
import tracemalloc
from pathlib import Path
from typing import Any

import pytest
from eth_account import Account
from sqlalchemy import Engine
from sqlalchemy.orm import Session

from edgeledger.chain.client import ChainClient
from edgeledger.config import Settings
from edgeledger.deliveries.models import BatchState, DeliveryBatch
from edgeledger.deliveries.proofs import EXPORT_FORMAT, export_batch_header, ledger_location
from edgeledger.ledger.delivery_leaf import LEAF_TYPES, LeafValues, leaf_hash, leaf_values_to_json
from edgeledger.ledger.merkle import STANDARD_FORMAT, MerkleTree
from edgeledger.verify import stream
from edgeledger.verify.cli import run_delivery
from edgeledger.verify.result import UnusableInput
from edgeledger.verify.stream import read_document
from tests.backend.support.deliveries import anchor_batch, register_source

# ----------------------------------------------------------------------------------------------
# The reader (pure: no chain)
# ----------------------------------------------------------------------------------------------


def _random_export(rng: random.Random, n: int) -> dict[str, Any]:
    return {
        "format": EXPORT_FORMAT,
        "chain_id": rng.randrange(10**12),
        "ratio": 1.5e10,
        "anchored": True,
        "nothing": None,
        "batch": {"manifest": {"leafCount": n, "root": "0x" + rng.randbytes(32).hex()}, "tag": "ü€"},
        "tree": {
            "format": STANDARD_FORMAT,
            "tree": ["0x" + rng.randbytes(32).hex() for _ in range(2 * n - 1)],
            "values": [
                {"value": [str(rng.randrange(10**9)) for _ in range(3)], "treeIndex": rng.randrange(10**6)}
                for _ in range(n)
            ],
            "leafEncoding": list(LEAF_TYPES),
        },
        "last": 12345678,
    }


@pytest.mark.parametrize("chunk", [1, 2, 7, 64, 1 << 16])
def test_reader_gives_what_json_load_gives_at_any_chunk_size(
    chunk: int, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(stream, "CHUNK", chunk)
    rng = random.Random(chunk)
    for trial in range(30):
        doc = _random_export(rng, rng.randrange(1, 6))
        path = tmp_path / f"{trial}.json"
        path.write_text(json.dumps(doc, indent=rng.choice([None, 1]), ensure_ascii=rng.random() < 0.5))
        got = read_document(path)
        nodes, values = got["tree"]["tree"], got["tree"]["values"]
        assert isinstance(nodes, stream.PackedNodes) and isinstance(values, stream.StreamedValues)
        assert ["0x" + nodes[i].hex() for i in range(len(nodes))] == doc["tree"]["tree"]
        assert len(values) == len(doc["tree"]["values"]) and list(values) == doc["tree"]["values"]
        assert list(values) == doc["tree"]["values"]  # a second pass reads the same
        got["tree"]["tree"], got["tree"]["values"] = doc["tree"]["tree"], doc["tree"]["values"]
        assert got == doc


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("[1, 2", "Expecting ',' delimiter at character 5"),
        ('{"a": 1', "expected ',' or '}' at character 7"),
        ('{"a": 1} x', "extra data after the document"),
        ('{"a": 1, "a": 2}', "the document has the key 'a' twice"),
        ('{"tree": {"values": [], "values": []}}', "tree has the key 'values' twice"),
        ('{"tree": {"values": [1, 2,]}}', "Expecting value at character 26"),
        ("", "unexpected end of file"),
        ('{"tree": {"tree": ["0x12"]}}', "tree.tree[0] must be 0x-hex of 32 bytes"),
        ("[" * 100_000, "nested too deeply"),
    ],
)
def test_reader_refuses_malformed_documents(tmp_path: Path, text: str, message: str) -> None:
    path = tmp_path / "bad.json"
    path.write_text(text)
    with pytest.raises(UnusableInput) as caught:
        read_document(path)
    assert message in str(caught.value)


def test_reader_bounds_one_value_and_notices_a_changed_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "export.json"
    long_value = {"value": ["1" * (stream.MAX_ITEM + 10)], "treeIndex": 0}
    path.write_text(json.dumps({"tree": {"tree": ["0x" + "00" * 32], "values": [long_value]}}))
    with pytest.raises(UnusableInput, match="a value longer than 1,048,576 characters"):
        read_document(path)

    doc = _random_export(random.Random(3), 4)
    path.write_text(json.dumps(doc))
    values = read_document(path)["tree"]["values"]
    doc["tree"]["values"].pop()
    path.write_text(json.dumps(doc))
    with pytest.raises(UnusableInput, match="changed while it was being verified"):
        list(values)


# ----------------------------------------------------------------------------------------------
# A large export against anvil (20,000 records in CI, 200,000 by VERIFY_STREAM_RECORDS)
# ----------------------------------------------------------------------------------------------

#: CI verifies 20,000 records (the same bounds per record); the documented run: VERIFY_STREAM_RECORDS=200000.
RECORDS = int(os.environ.get("VERIFY_STREAM_RECORDS", "20000"))
#: Peak memory allowed: 100 bytes per record (the packed tree nodes and flags take about 77) plus 1 MB
#: fixed (a read chunk, the decoder, the output buffer).
BOUND = 100 * RECORDS + 1_000_000


def _values(source_id: bytes, count: int, seed: int) -> list[LeafValues]:
    rng = random.Random(seed)
    day = 1_714_521_600_000
    merchant = rng.randbytes(32)
    return [
        LeafValues(
            source_id,
            rng.randbytes(32),
            day + rng.randrange(86_400_000),
            b"FRA1" + bytes(12),
            b"DE",
            rng.randrange(1000),
            merchant,
            rng.randrange(2**40),
            rng.choice([200, 206, 304]),
            rng.randrange(6),
            rng.randbytes(32),
        )
        for _ in range(count)
    ]


def _write_export(path: Path, head: dict[str, Any], tree: MerkleTree, values: list[LeafValues]) -> None:
    """The document ``deliveries.proofs.stream_batch_export`` sends, byte for byte in layout: the compact
    head, then the OZ dump (nodes root first, values with their tree index), written in chunks."""
    with open(path, "w", encoding="utf-8") as out:
        out.write(json.dumps(head, separators=(",", ":"))[:-1])
        out.write(',"tree":{"format":"' + STANDARD_FORMAT + '","leafEncoding":')
        out.write(json.dumps(list(LEAF_TYPES), separators=(",", ":")) + ',"tree":[')
        out.write(",".join(f'"0x{node.hex()}"' for node in tree.nodes))
        out.write('],"values":[')
        for i, value in enumerate(values):
            entry = {"value": leaf_values_to_json(value), "treeIndex": tree.tree_index(i)}
            out.write(("," if i else "") + json.dumps(entry, separators=(",", ":")))
        out.write("]}}")


@pytest.fixture
def big_export(settings: Settings, db_engine: Engine, tmp_path: Path) -> tuple[Path, str]:
    """An anchored batch of RECORDS synthetic records and its export file; (path, contract address).
    The database only holds the source and batch rows, so one backend is enough."""
    if not settings.database_url.startswith("sqlite"):
        pytest.skip("reading an export involves no database: run once, on SQLite")
    chain = ChainClient.from_settings(settings)
    signer = Account.create()
    with Session(db_engine, expire_on_commit=False) as session:
        source = register_source(session, chain, "stream", provider="edgeledger", signer=signer.address)
        values = _values(bytes.fromhex(source.source_id[2:]), RECORDS, 17)
        tree = MerkleTree.build([leaf_hash(v) for v in values])
        batch = DeliveryBatch(
            batch_id="0x" + random.Random(18).randbytes(32).hex(),
            source_pk=source.id,
            period_start=1_714_521_600,
            period_end=1_714_608_000,
            root="0x" + tree.root.hex(),
            leaf_count=RECORDS,
            state=BatchState.closed,
        )
        session.add(batch)
        session.commit()
        anchor_batch(session, chain, batch, signer)
        contract, chain_id = ledger_location(settings)
        assert contract is not None
        head = {
            "format": EXPORT_FORMAT,
            "chain_id": chain_id,
            "contract": contract,
            "batch": export_batch_header(session, batch, source),
        }
    path = tmp_path / "export.json"
    _write_export(path, head, tree, values)
    return path, contract


def _traced_child(path: str, rpc_url: str, contract: str, results: Any) -> None:
    # One untraced run first, its output discarded: what a first run imports and caches (web3's
    # providers, ABI codecs) is not the verifier's memory, and the parent process had it already.
    with open(os.devnull, "w") as sink, contextlib.redirect_stdout(sink):
        run_delivery(Path(path), rpc_url, contract=contract, onchain_sample=4)
    tracemalloc.start()
    started = time.monotonic()
    code = run_delivery(Path(path), rpc_url, contract=contract, onchain_sample=4)
    results.put((code, tracemalloc.get_traced_memory()[1], time.monotonic() - started))


def _verify_traced(path: Path, settings: Settings, contract: str) -> tuple[int, int, float]:
    """(exit code, tracemalloc peak in bytes, seconds) of ``edgeledger verify delivery``'s runner, run
    in a fresh process: tracemalloc counts every thread of its process, and threads other tests left in
    this one (servers, pools) would add their allocations to the verifier's peak. Its output goes to
    this process's captured stdout."""
    context = multiprocessing.get_context("spawn")
    results = context.Queue()
    child = context.Process(target=_traced_child, args=(str(path), settings.eth_rpc_url, contract, results))
    child.start()
    try:
        code, peak, seconds = results.get(timeout=600)
    finally:
        child.join(timeout=60)
    assert child.exitcode == 0, child.exitcode
    return int(code), int(peak), float(seconds)


@pytest.mark.integration
def test_a_200k_record_export_verifies_in_bounded_memory(
    big_export: tuple[Path, str], settings: Settings, capfd: pytest.CaptureFixture[str]
) -> None:
    path, contract = big_export
    size = path.stat().st_size
    code, peak, seconds = _verify_traced(path, settings, contract)
    out, _ = capfd.readouterr()
    with capfd.disabled():
        print(
            f"\nverify delivery, {RECORDS:,} records, {size / 1e6:.0f} MB export: "
            f"tracemalloc peak {peak / 1e6:.1f} MB, {seconds:.1f} s"
        )
    assert code == 0, out[-2000:]
    lines = out.splitlines()
    assert lines[0].startswith("PASS batch 0x")
    assert sum(line.startswith("PASS leaf ") for line in lines) == RECORDS
    assert lines[-1] == f"proven on chain: {RECORDS + 1} checks passed, 4 on-chain verify calls"
    # The packed tree is 64 bytes per record, plus two bytes per node of flags: far below the export
    # (about 540 bytes of JSON, some 2 kB decoded, per record).
    assert peak < BOUND < size / 2, (peak, size)

    # One value's bytesDelivered changed in place (same length): that leaf fails, the rest pass.
    text = path.read_bytes()
    marker = b'"treeIndex":'
    at = text.index(marker, len(text) // 2)
    start = text.rindex(b'{"value":[', 0, at)
    entry = json.loads(text[start : text.index(b"}", at) + 1])
    entry["value"][7] = str(int(entry["value"][7]) ^ 1)
    end = text.index(b"}", at) + 1
    path.write_bytes(text[:start] + json.dumps(entry, separators=(",", ":")).encode() + text[end:])
    del text
    code, peak, _ = _verify_traced(path, settings, contract)
    out, _ = capfd.readouterr()
    assert code == 1
    failed = [line for line in out.splitlines() if line.startswith("FAIL")]
    assert len(failed) == 1 and f"(tree index {entry['treeIndex']})" in failed[0], failed
    assert "do not hash to tree node" in failed[0]
    assert out.splitlines()[-1].startswith("not verified: 1 of")
    assert peak < BOUND, peak
