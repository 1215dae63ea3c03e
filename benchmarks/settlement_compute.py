"""Settlement of one busy period: 1,000,000 receipts of one merchant over one day, ~10,000 payees.

Deterministic synthetic inputs from ``--seed``: receipts per (batch, asset, region, country) as the
settlement flow aggregates them (``<batch id>:<asset id>:<region>:<country>`` keys, one edge operator per
batch), spread over the nine pricing regions plus ``ZZ`` (no country); assets with on-chain splits of 1-4
recipients, derivatives of earlier assets (up to three generations), partial-territory licences and
licences that start after the period's start (both producing violations), a few disputed assets;
popularity skewed (Zipf-like) so a few assets carry most receipts.

Three phases, timed separately, each reporting its peak RSS (the kernel's high-water mark, reset at the
start of the phase through ``/proc/self/clear_refs``) and the RSS left when it ends:

* ``inputs``: receipts from database-like rows (fresh ``str``/``int`` objects per row, streamed as a
  cursor would) and the ``PayoutInputs`` model. ``--builder rows`` (default) uses ``Receipt.from_rows``,
  ``--builder keyword`` one ``Receipt(key=..., ...)`` per row. Generating the rows is part of this
  phase; ``rows s`` is the time of generating them alone (same process, after the phases), for reference.
* ``compute``: ``compute_payouts``.
* ``tree``: the payout tree over the statement's payees (``edgeledger.ledger.payout_leaf.PayoutTree``: OZ
  StandardMerkleTree leaves of docs/settlement-leaf.md, one per payee).

Each run is a fresh child process (so its peak RSS is that run's alone); medians (and min, max of the
times) over ``--runs`` runs. The child also prints the sha256 of the statement's JSON and the tree's root
(outside the timed phases), so two versions of the code can be checked to give the same results.

    .venv/bin/python -m benchmarks.settlement_compute --receipts 1000000 --runs 3
"""

from __future__ import annotations

import argparse
import bisect
import gc
import hashlib
import itertools
import json
import random
import resource
import statistics
import subprocess
import sys
import time
from array import array
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from edgeledger.deliveries.regions import REGIONS
from edgeledger.ledger.payout_leaf import PayoutTree
from edgeledger.settlement.payouts import AssetTerms, PayoutInputs, Receipt, Recipient, compute_payouts
from edgeledger.settlement.rates import Currency, FxRate, FxTable, RateCard, RegionPrice, Royalty, Tier
from edgeledger.territories import ALL_TERRITORIES_BITMAP, encode_territories

PERIOD_START = 1_795_132_800  # 2026-11-20T00:00:00Z, one daily period
PERIOD_END = PERIOD_START + 86_400
PERIOD_ID = PERIOD_START // 86_400
MERCHANT = "0x" + "5e11e4" * 6 + "cafe"
TOKEN = "0x" + "70ce7" * 8
PLATFORM = "0x" + "f1a7f0" * 6 + "beef"
USD6 = Currency(code="USD", decimals=6)
TUSDC = Currency(code="TUSDC", decimals=6)
PHASES = ("inputs", "compute", "tree")
# Countries the synthetic traffic comes from, with weights; "" is "no country" (region ZZ).
COUNTRIES = (
    ("US", 30), ("CA", 4), ("MX", 3), ("BR", 5), ("AR", 1), ("CL", 1), ("DE", 8), ("GB", 7), ("FR", 6),
    ("IT", 3), ("ES", 3), ("NL", 2), ("PL", 2), ("SE", 1), ("TR", 2), ("RU", 2), ("AE", 1), ("SA", 1),
    ("EG", 1), ("NG", 1), ("ZA", 1), ("KE", 1), ("JP", 6), ("AU", 3), ("NZ", 1), ("IN", 6), ("CN", 3),
    ("KR", 2), ("SG", 1), ("ID", 2), ("PH", 1), ("VN", 1), ("", 2),
)  # fmt: skip


@dataclass
class Spec:
    """The synthetic period in compact arrays (one entry per receipt), plus the assets, cards and FX."""

    batch_ids: list[str]
    batch_operator: list[str]  # upper-case hex; rows carry it lower-cased, as the flow does
    asset_of: array
    country_of: array
    batch_of: array
    requests: array
    nbytes: array
    asset_ids: list[int]
    assets: list[AssetTerms]
    card: RateCard
    fx: FxTable


def address(rng: random.Random) -> str:
    return "0x" + rng.randbytes(20).hex()


def make_spec(receipts: int, assets: int, holders: int, operators: int, seed: int) -> Spec:
    rng = random.Random(seed)
    per_batch = 500
    batches = -(-receipts // per_batch)
    batch_ids = ["0x" + rng.randbytes(32).hex() for _ in range(batches)]
    operator_pool = [address(rng).upper().replace("0X", "0x") for _ in range(operators)]
    batch_operator = [operator_pool[i % operators] for i in range(batches)]
    asset_ids = rng.sample(range(1, 50 * assets), assets)

    # Splits: recipients taken in turn from a shuffled pool of rights holders so that (almost) every
    # holder is paid; about 2.5 recipients per asset.
    pool = [address(rng) for _ in range(holders)]
    rng.shuffle(pool)
    cycle = itertools.cycle(pool)
    terms: list[AssetTerms] = []
    partial = (
        encode_territories(["*"]) & ~encode_territories(["CN", "RU", "IN"]),
        encode_territories([c for c, r in REGIONS.items() if r in ("NA", "EU")]),
        encode_territories(["US", "CA", "GB", "DE", "FR", "JP", "AU"]),
    )
    for index, asset_id in enumerate(asset_ids):
        count = rng.choice((1, 1, 2, 2, 3, 4))
        cuts = sorted(rng.sample(range(1, 10_000), count - 1))
        shares = [b - a for a, b in itertools.pairwise([0, *cuts, 10_000])]
        recipients = tuple(Recipient(address=next(cycle), bps=bps) for bps in shares)
        parent = None
        if index >= 10 and rng.random() < 0.2:  # derivatives of earlier assets: chains up to 3 deep
            parent = str(asset_ids[rng.randrange(max(0, index - 50), index)])
        roll = rng.random()
        terms.append(
            AssetTerms(
                asset_id=str(asset_id),
                recipients=recipients,
                parent=parent,
                territories=rng.choice(partial) if roll < 0.10 else ALL_TERRITORIES_BITMAP,
                valid_from=PERIOD_START + 3_600 if 0.10 <= roll < 0.105 else 0,
                disputed=0.105 <= roll < 0.115,
            )
        )

    # Receipts: per batch, distinct (asset, country) pairs; skewed asset popularity.
    weights = list(itertools.accumulate(1 / (i + 1) ** 0.8 for i in range(assets)))
    country_weights = list(itertools.accumulate(w for _, w in COUNTRIES))
    asset_of, country_of, batch_of = array("l"), array("l"), array("l")
    requests, nbytes = array("q"), array("q")
    made = 0
    for batch in range(batches):
        seen: set[tuple[int, int]] = set()
        while len(seen) < min(per_batch, receipts - made):
            a = bisect.bisect(weights, rng.random() * weights[-1])
            c = bisect.bisect(country_weights, rng.random() * country_weights[-1])
            if (a, c) in seen:
                continue
            seen.add((a, c))
            asset_of.append(a)
            country_of.append(c)
            batch_of.append(batch)
            count = int(rng.paretovariate(1.3) * 20)
            requests.append(count)
            nbytes.append(count * rng.randrange(200_000, 4_000_000))
        made += len(seen)

    tiers = (Tier(up_to_bytes=10 * 10**12, price_per_gb=85_000), Tier(price_per_gb=60_000))
    prices = {
        region: RegionPrice(tiers=tiers, price_per_10k_requests=7_500) for region in set(REGIONS.values())
    }
    prices["ZZ"] = RegionPrice(tiers=(Tier(price_per_gb=120_000),), price_per_10k_requests=10_000)
    card = RateCard(
        merchant=MERCHANT,
        version=1,
        valid_from=PERIOD_START - 30 * 86_400,
        currency=USD6,
        delivery=prices,
        default_royalty=Royalty(mode="per_delivery", amount=100),
        asset_royalties={str(a): Royalty(mode="per_gb", amount=20_000) for a in asset_ids[::20]},
        platform_fee_bps=1_000,
        operator_share_bps=7_000,
        derivative_share_bps=2_000,
    )
    fx = FxTable(rates=(FxRate.of("fixed", PERIOD_START - 60, "USD", "TUSDC", "0.9998"),))
    return Spec(
        batch_ids,
        batch_operator,
        asset_of,
        country_of,
        batch_of,
        requests,
        nbytes,
        asset_ids,
        terms,
        card,
        fx,
    )


def rows(spec: Spec, order: list[int]) -> Iterator[tuple[str, str, str, str, str, int, int, str, int, int]]:
    """Receipt rows in ``Receipt`` field order, with fresh string and int objects like a database cursor."""
    countries = [c.encode() for c, _ in COUNTRIES]
    regions = [(REGIONS[c] if c else "ZZ").encode() for c, _ in COUNTRIES]
    for i in order:
        batch, asset, c = spec.batch_of[i], spec.asset_ids[spec.asset_of[i]], spec.country_of[i]
        region, country = regions[c].decode(), countries[c].decode()
        yield (
            f"{spec.batch_ids[batch]}:{asset}:{region}:{country}",
            str(asset),
            MERCHANT,
            region,
            country,
            PERIOD_START,
            PERIOD_START,
            spec.batch_operator[batch].lower(),
            int(spec.requests[i]),
            int(spec.nbytes[i]),
        )


def build_inputs(spec: Spec, order: list[int], builder: str) -> PayoutInputs:
    if builder == "rows":
        receipts = Receipt.from_rows(rows(spec, order))
    else:
        receipts = [
            Receipt(
                key=key,
                asset_id=asset_id,
                merchant=merchant,
                region=region,
                country=country,
                period=period,
                at=at,
                operator=operator,
                requests=requests,
                bytes=nbytes,
            )
            for key, asset_id, merchant, region, country, period, at, operator, requests, nbytes in rows(
                spec, order
            )
        ]
    return PayoutInputs(
        merchant=MERCHANT,
        period_start=PERIOD_START,
        period_end=PERIOD_END,
        receipts=tuple(receipts),
        assets=tuple(spec.assets),
        cards=(spec.card,),
        platform=PLATFORM,
        settlement_currency=TUSDC,
        fx=spec.fx,
    )


# --------------------------------------------------------------------------------------------------------
# Child: one run
# --------------------------------------------------------------------------------------------------------


def _status_kib(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise RuntimeError(f"{field} missing from /proc/self/status")


def _reset_peak() -> None:
    """Reset the kernel's RSS high-water mark (VmHWM) of this process to its current RSS."""
    Path("/proc/self/clear_refs").write_text("5")


def child(args: argparse.Namespace) -> dict[str, Any]:
    spec = make_spec(args.receipts, args.assets, args.holders, args.operators, args.seed)
    order = list(range(args.receipts))
    if args.order == "shuffled":
        random.Random(args.seed + 1).shuffle(order)
    gc.collect()
    result: dict[str, Any] = {}
    objects: dict[str, Any] = {}

    def phase(name: str, run: Any) -> Any:
        _reset_peak()
        start_kib = _status_kib("VmRSS")
        started, cpu = time.perf_counter(), time.process_time()
        value = run()
        result[f"{name}_s"] = time.perf_counter() - started
        result[f"{name}_cpu_s"] = time.process_time() - cpu
        result[f"{name}_peak_mib"] = _status_kib("VmHWM") / 1024
        result[f"{name}_start_mib"] = start_kib / 1024
        result[f"{name}_end_mib"] = _status_kib("VmRSS") / 1024
        objects[name] = value
        return value

    inputs = phase("inputs", lambda: build_inputs(spec, order, args.builder))
    statement = phase("compute", lambda: compute_payouts(inputs))
    tree = phase("tree", lambda: PayoutTree(PERIOD_ID, MERCHANT, TOKEN, statement.payees))
    result["peak_rss_mib"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024

    started = time.perf_counter()
    for _ in rows(spec, order):
        pass
    result["rows_s"] = time.perf_counter() - started
    result["receipts"] = len(inputs.receipts)
    result["payees"] = len(statement.payees)
    result["line_items"] = len(statement.line_items)
    result["violations"] = len(statement.violations)
    result["held_back"] = len(statement.held_back)
    result["charge"] = statement.charge
    result["statement_sha256"] = hashlib.sha256(statement.model_dump_json().encode()).hexdigest()
    result["root"] = tree.root_hex
    return result


# --------------------------------------------------------------------------------------------------------
# Parent
# --------------------------------------------------------------------------------------------------------


def run_child(args: argparse.Namespace) -> dict[str, Any]:
    argv = [sys.executable, "-m", "benchmarks.settlement_compute", "--child"]
    for name in ("receipts", "assets", "holders", "operators", "seed", "builder", "order"):
        argv += [f"--{name}", str(getattr(args, name))]
    done = subprocess.run(argv, check=True, stdout=subprocess.PIPE, text=True)
    return json.loads(done.stdout.strip().splitlines()[-1])


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--receipts", type=int, default=1_000_000)
    parser.add_argument("--assets", type=int, default=4_600)
    parser.add_argument("--holders", type=int, default=9_900, help="rights holders the splits draw from")
    parser.add_argument("--operators", type=int, default=200, help="edge operators (one per batch)")
    parser.add_argument("--runs", type=int, default=3, help="fresh processes (medians are printed)")
    parser.add_argument("--seed", type=int, default=11)
    parser.add_argument("--builder", choices=("rows", "keyword"), default="rows")
    parser.add_argument("--order", choices=("shuffled", "sorted"), default="shuffled", help="receipt order")
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)

    if args.child:
        print(json.dumps(child(args)))
        return

    print(
        f"settlement of {args.receipts:,} receipts, {args.assets:,} assets, builder {args.builder}, "
        f"{args.order} receipts; Python {sys.version.split()[0]}; {args.runs} runs",
        flush=True,
    )
    results = []
    for run in range(args.runs):
        results.append(run_child(args))
        r = results[-1]
        print(
            f"  run {run + 1}: " + ", ".join(f"{p} {r[p + '_s']:.2f} s" for p in PHASES) + f", peak "
            f"{r['peak_rss_mib']:,.0f} MiB",
            flush=True,
        )
    first = results[0]
    for key in ("statement_sha256", "root", "payees", "charge"):
        if any(r[key] != first[key] for r in results):
            raise SystemExit(f"runs disagree on {key}")
    print(
        f"\n{first['receipts']:,} receipts -> {first['payees']:,} payees, "
        f"{first['line_items']:,} line items, {first['violations']:,} violations, "
        f"{first['held_back']:,} held back; charge {first['charge']:,}"
    )
    print(f"statement sha256 {first['statement_sha256']}, root {first['root']}\n")

    def times(key: str) -> list[float]:
        return [r[key] for r in results]

    totals = [sum(r[p + "_s"] for p in PHASES) for r in results]
    cpu_totals = [sum(r[p + "_cpu_s"] for p in PHASES) for r in results]
    head = (
        f"{'phase':<8} {'median s':>9} {'min s':>7} {'max s':>7} {'CPU s':>6} {'peak MiB':>9} "
        f"{'start MiB':>10} {'end MiB':>8}"
    )
    print(head)
    print("-" * len(head))
    summary: dict[str, Any] = {
        "receipts": first["receipts"],
        "payees": first["payees"],
        "runs": args.runs,
        "builder": args.builder,
        "order": args.order,
        "statement_sha256": first["statement_sha256"],
        "root": first["root"],
    }
    for p in PHASES:
        t = times(p + "_s")
        row = {
            "median_s": statistics.median(t),
            "min_s": min(t),
            "max_s": max(t),
            "cpu_s": statistics.median(times(p + "_cpu_s")),
            "peak_mib": statistics.median(times(p + "_peak_mib")),
            "start_mib": statistics.median(times(p + "_start_mib")),
            "end_mib": statistics.median(times(p + "_end_mib")),
        }
        print(
            f"{p:<8} {row['median_s']:>9.2f} {row['min_s']:>7.2f} {row['max_s']:>7.2f} {row['cpu_s']:>6.2f} "
            f"{row['peak_mib']:>9,.0f} {row['start_mib']:>10,.0f} {row['end_mib']:>8,.0f}"
        )
        summary[p] = {k: round(v, 3) for k, v in row.items()}
    peak = statistics.median(times("peak_rss_mib"))
    print(
        f"{'total':<8} {statistics.median(totals):>9.2f} {min(totals):>7.2f} {max(totals):>7.2f} "
        f"{statistics.median(cpu_totals):>6.2f} {peak:>9,.0f}"
    )
    rows_s = statistics.median(times("rows_s"))
    print(f"(generating the rows alone, included in inputs: median {rows_s:.2f} s)")
    summary["total"] = {
        "median_s": round(statistics.median(totals), 3),
        "min_s": round(min(totals), 3),
        "max_s": round(max(totals), 3),
        "cpu_s": round(statistics.median(cpu_totals), 3),
        "peak_rss_mib": round(peak, 1),
    }
    summary["rows_s"] = round(rows_s, 3)
    print(json.dumps(summary))


if __name__ == "__main__":
    main()
