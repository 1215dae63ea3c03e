"""Merkle tree and every proof for a batch of delivery records: ours against OpenZeppelin's merkle-tree.

Ours (edgeledger.deliveries), timed stage by stage from the record values: ABI-encode every record, leaf
hashes (double keccak), `MerkleTree.build` (sort + inner nodes) and `all_proofs()`. OpenZeppelin: the same
records through `StandardMerkleTree.of(values, LEAF_TYPES)` and `getProof(i)` for every record, run by
benchmarks/merkle_tree_oz.mjs under node (the records reach it in a file; only `of` and the proofs are
timed). The roots and a sample of proofs must be equal. Medians over `--runs` runs; ratio = OZ / ours.

OZ needs about 1.7 minutes per run for 100,000 records and 23 minutes (one run: 521 s `of`, 849 s proofs)
for 1,000,000 on the dev container, so OZ runs on the first `--oz-leaves` records (default:
min(--leaves, 100,000)) and ours runs on both sizes. `--oz-leaves 0` skips OZ.

    .venv/bin/python -m benchmarks.merkle_tree --leaves 1000000 --runs 3
"""

from __future__ import annotations

import argparse
import gc
import json
import random
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from edgeledger.ledger.delivery_leaf import (
    KECCAK_IMPLEMENTATION,
    LEAF_TYPES,
    LeafValues,
    encode_leaf_values,
    keccak256,
    leaf_hashes_encoded,
)
from edgeledger.ledger.merkle import MerkleTree

ROOT = Path(__file__).resolve().parents[1]
OZ_SCRIPT = ROOT / "benchmarks" / "merkle_tree_oz.mjs"
OZ_PACKAGE = ROOT / "node_modules" / "@openzeppelin" / "merkle-tree" / "package.json"
FIELD_SIZES = (32, 32, 8, 16, 2, 32, 32, 8, 2, 1, 32)  # raw record layout read by merkle_tree_oz.mjs
STAGES = ("encode", "leaf hash", "tree", "proofs")


def make_records(count: int, seed: int) -> list[LeafValues]:
    """Plausible CDN log records: a few sources, edge locations, merchants; random ids and commitments."""
    rng = random.Random(seed)
    sources = [keccak256(f"edgeledger:source:{i}".encode()) for i in range(4)]
    edges = [
        code.encode().ljust(16, b"\0") for code in ("FRA56-P1", "IAD89-C3", "NRT57-P2", "LHR61-P5", "fra-01")
    ]
    countries = [b"DE", b"US", b"JP", b"GB", b"FR", b"\0\0"]
    merchants = [keccak256(f"host{i}.example.com".encode()) for i in range(50)]
    start = 1_719_835_200_000
    return [
        LeafValues(
            rng.choice(sources),
            rng.randbytes(32),
            start + i * 7 + rng.randrange(5),
            rng.choice(edges),
            rng.choice(countries),
            rng.randrange(100_000),
            rng.choice(merchants),
            rng.randrange(1 << 31),
            rng.choice((200, 200, 200, 206, 304, 404)),
            rng.randrange(6),
            rng.randbytes(32),
        )
        for i in range(count)
    ]


def run_ours(records: list[LeafValues], runs: int) -> tuple[list[dict[str, float]], MerkleTree]:
    times = []
    tree = None
    for _ in range(runs):
        tree = None
        gc.collect()
        t0 = time.perf_counter()
        encoded = list(map(encode_leaf_values, records))
        t1 = time.perf_counter()
        leaves = leaf_hashes_encoded(encoded)
        t2 = time.perf_counter()
        tree = MerkleTree.build(leaves)
        t3 = time.perf_counter()
        proofs = tree.all_proofs()
        t4 = time.perf_counter()
        assert len(proofs) == len(records)
        times.append({"encode": t1 - t0, "leaf hash": t2 - t1, "tree": t3 - t2, "proofs": t4 - t3})
        del encoded, leaves, proofs
    assert tree is not None
    return times, tree


def run_oz(records: list[LeafValues], runs: int, sample: list[int]) -> dict:
    node = shutil.which("node")
    if node is None:
        raise SystemExit("node is not on PATH")
    with tempfile.NamedTemporaryFile(prefix="merkle-records-", suffix=".bin") as file:
        file.write(
            b"".join(
                field if isinstance(field, bytes) else field.to_bytes(size)
                for record in records
                for field, size in zip(record, FIELD_SIZES, strict=True)
            )
        )
        file.flush()
        done = subprocess.run(
            [node, "--max-old-space-size=12288", str(OZ_SCRIPT), file.name, str(runs), *map(str, sample)],
            capture_output=True,
            text=True,
            cwd=ROOT,
            check=False,
        )
    if done.returncode != 0:
        raise SystemExit(f"merkle_tree_oz.mjs failed:\n{done.stderr}")
    return json.loads(done.stdout)


def median_row(times: list[dict[str, float]]) -> dict[str, float]:
    row = {stage: statistics.median(t[stage] for t in times) for stage in times[0]}
    row["total"] = statistics.median(sum(t.values()) for t in times)
    return row


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--leaves", type=int, default=1_000_000, help="records in the batch (ours)")
    parser.add_argument("--runs", type=int, default=3, help="runs per measurement (medians are printed)")
    parser.add_argument(
        "--oz-leaves",
        type=int,
        default=None,
        help="records for the OZ comparison (default min(--leaves, 100000))",
    )
    parser.add_argument("--seed", type=int, default=2024)
    args = parser.parse_args(argv)
    oz_leaves = min(args.leaves, 100_000) if args.oz_leaves is None else min(args.oz_leaves, args.leaves)
    oz_version = json.loads(OZ_PACKAGE.read_text())["version"] if OZ_PACKAGE.exists() else "not installed"

    print(
        f"Merkle tree + every proof, {len(LEAF_TYPES)}-field StandardMerkleTree leaves; "
        f"keccak: {KECCAK_IMPLEMENTATION}; @openzeppelin/merkle-tree {oz_version}; "
        f"Python {sys.version.split()[0]}; median of {args.runs} runs, seconds",
        flush=True,
    )
    records = make_records(args.leaves, args.seed)
    sizes = sorted({args.leaves, oz_leaves} - {0}, reverse=True)
    ours: dict[int, dict[str, float]] = {}
    roots: dict[int, MerkleTree] = {}
    for size in sizes:
        times, tree = run_ours(records[:size], args.runs)
        ours[size], roots[size] = median_row(times), tree
        print(f"  ours, {size:,} leaves: {ours[size]['total']:.2f} s", flush=True)
    peak_mib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024

    oz_row = None
    if oz_leaves:
        tree = roots[oz_leaves]
        rng = random.Random(args.seed)
        sample = sorted({0, oz_leaves - 1, *rng.sample(range(oz_leaves), min(oz_leaves, 8))})
        print(f"  OpenZeppelin, {oz_leaves:,} leaves ({args.runs} runs) ...", flush=True)
        oz = run_oz(records[:oz_leaves], args.runs, sample)
        if oz["root"] != "0x" + tree.root.hex():
            raise SystemExit(f"roots differ: OZ {oz['root']}, ours 0x{tree.root.hex()}")
        for i in sample:
            if oz["sampleProofs"][str(i)] != ["0x" + node.hex() for node in tree.proof(i)]:
                raise SystemExit(f"proof {i} differs")
        oz_row = {
            "of": statistics.median(r["of_ms"] / 1000 for r in oz["runs"]),
            "proofs": statistics.median(r["proofs_ms"] / 1000 for r in oz["runs"]),
            "total": statistics.median((r["of_ms"] + r["proofs_ms"]) / 1000 for r in oz["runs"]),
        }
        print(f"  roots equal ({oz['root']}), {len(sample)} sampled proofs equal", flush=True)

    print()
    head = ["leaves", *STAGES, "ours total", "OZ of", "OZ proofs", "OZ total", "OZ / ours"]
    print(" | ".join(f"{h:>10}" for h in head))
    print("-|-".join("-" * 10 for _ in head))
    for size in sizes:
        row = ours[size]
        cells = [f"{size:,}", *(f"{row[s]:.3f}" for s in STAGES), f"{row['total']:.3f}"]
        if oz_row is not None and size == oz_leaves:
            ratio = oz_row["total"] / row["total"]
            cells += [
                f"{oz_row['of']:.2f}",
                f"{oz_row['proofs']:.2f}",
                f"{oz_row['total']:.2f}",
                f"{ratio:.0f}x",
            ]
        else:
            cells += ["-"] * 4
        print(" | ".join(f"{c:>10}" for c in cells))
    print(f"\npeak RSS of this process (records, encodings, tree, proofs): {peak_mib:,.0f} MiB")
    if oz_row is None or oz_leaves != args.leaves:
        print(f"OZ not run at {args.leaves:,} leaves (too slow: see the docstring; --oz-leaves forces it)")


if __name__ == "__main__":
    main()
