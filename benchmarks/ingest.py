"""End-to-end log ingestion: a CDN log (gzip) -> records with leaves in the database -> every batch's
tree built and stored. Lines per second, CPU time, peak RSS and RSS along the way, against `sha256sum`
over the same uncompressed file as a floor for "reading the bytes once".

The log (``--lines`` lines, default 1,000,000) is generated once per format by ``ingest_formats``: one
population of requests (deterministic ``--seed``; 50,000 clients, 400 hosts, 2,000 assets, two daily
periods) written as ``--format`` lines: ``cloudfront`` (default; 33 fields), ``alibaba`` (Alibaba Cloud
CDN), ``tencent`` (Tencent Cloud CDN), ``nginx`` (nginx ``combined`` of one edge node), or ``all`` of
them in one invocation. The benchmark's source declares the format (and, for nginx, its host and edge
location). Each repeat runs in a fresh child process (`--child`) against a fresh SQLite database
(``--database-url`` also runs PostgreSQL: a scratch database per repeat on that server), so its
``ru_maxrss`` is the peak of that run alone. The child samples its RSS after every chunk; printed: RSS
when 25 % and 100 % of the lines were read (flat memory means about equal) and the peak. Every run must
turn every line into a new record (nothing quarantined, no duplicate): the child fails otherwise, so a
generator bug cannot pass for a fast run. Medians over ``--runs`` repeats, interleaved (repeat 1 of every
format and database, then repeat 2, ...: load from other work on the machine falls on every format
alike); one table for every format and database, then the JSON. ``--profile`` prints a cProfile
breakdown of one extra run per format instead of timing.

    .venv/bin/python -m benchmarks.ingest --lines 1000000 --runs 3 --format all \\
        --database-url postgresql://postgres@127.0.0.1:5432/test
"""

from __future__ import annotations

import argparse
import gzip
import json
import resource
import secrets
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from benchmarks.ingest_formats import BENCH_FORMATS, BenchFormat, generate
from edgeledger.ledger.ids import source_id_for

# --------------------------------------------------------------------------------------------------------
# Child: one end-to-end run
# --------------------------------------------------------------------------------------------------------


def rss_kib() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise RuntimeError("VmRSS missing")


def bench_source(fmt: BenchFormat, name: str = "bench") -> Any:
    """The benchmark's source: it declares the log's format (and what the format's lines do not say)."""
    from edgeledger.deliveries.models import DeliverySource

    return DeliverySource(
        source_id=source_id_for(name),
        name=name,
        kind=fmt.kind,
        provider=fmt.provider,
        operator="0x" + "00" * 20,
        signer="0x" + "00" * 20,
        regions_bitmap="0x0",
        jurisdiction="DE",
        status="active",
        log_format=fmt.log_format,
        site_host=fmt.site_host,
        site_edge_location=fmt.site_edge_location,
    )


def check_complete(ingest: Any, fmt: BenchFormat, total_lines: int) -> None:
    """Every generated line became a new record: nothing quarantined, no duplicate (a derived request id
    shared by two lines would be one), only the format's header lines skipped."""
    counts = {
        "state": ingest.state,
        "log_format": ingest.log_format,
        "lines": ingest.lines,
        "records_new": ingest.records_new,
        "duplicates": ingest.duplicates,
        "quarantined": ingest.quarantined,
        "skipped": ingest.skipped,
    }
    expected = {
        "state": "done",
        "log_format": fmt.log_format,
        "lines": total_lines + fmt.header_lines,
        "records_new": total_lines,
        "duplicates": 0,
        "quarantined": 0,
        "skipped": fmt.header_lines,
    }
    if counts != expected:
        raise AssertionError(f"{fmt.name}: the ingest report is {counts}, expected {expected}")


def child(
    log: Path, database_url: str, work: Path, total_lines: int, fmt: BenchFormat, profile: bool
) -> dict[str, Any]:
    from sqlalchemy import select
    from sqlalchemy.orm import Session

    from edgeledger.config import Settings
    from edgeledger.db import make_engine, migrate
    from edgeledger.deliveries import service, trees
    from edgeledger.deliveries.ingest import ingest_log
    from edgeledger.deliveries.models import DeliveryBatch

    migrate(database_url)
    settings = Settings(data_dir=work, database_url=database_url, pseudonym_master_key="11" * 32)
    engine = make_engine(database_url)
    samples: list[tuple[int, int]] = []
    with Session(engine, expire_on_commit=False) as session:
        source = bench_source(fmt)
        session.add(source)
        session.commit()
        service.pseudonymiser_for(session, settings, service.pseudonym_key_id())

        def run() -> tuple[float, float, Any]:
            started = time.perf_counter()
            with log.open("rb") as handle:
                ingest = ingest_log(
                    session,
                    settings,
                    source,
                    handle,
                    name=log.name,
                    created_by=None,
                    progress=lambda n: samples.append((n, rss_kib())),
                )
            ingested = time.perf_counter()
            batches = session.scalars(select(DeliveryBatch).where(DeliveryBatch.source_pk == source.id)).all()
            for batch in batches:
                trees.build_batch_tree(session, settings, batch)
            return ingested - started, time.perf_counter() - ingested, ingest

        if profile:
            import cProfile
            import pstats

            profiler = cProfile.Profile()
            profiler.enable()
            run()
            profiler.disable()
            pstats.Stats(profiler, stream=sys.stderr).sort_stats("tottime").print_stats(30)
            return {}
        cpu_before = time.process_time()
        ingest_s, trees_s, ingest = run()
        cpu_s = time.process_time() - cpu_before
    engine.dispose()
    check_complete(ingest, fmt, total_lines)
    quarter = next((rss for n, rss in samples if n >= total_lines // 4), samples[0][1] if samples else 0)
    return {
        "ingest_s": ingest_s,
        "trees_s": trees_s,
        "cpu_s": cpu_s,
        "rss_25_mib": quarter / 1024,
        "rss_100_mib": (samples[-1][1] if samples else rss_kib()) / 1024,
        "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "records": ingest.records_new,
        "quarantined": ingest.quarantined,
    }


# --------------------------------------------------------------------------------------------------------
# Parent
# --------------------------------------------------------------------------------------------------------


def scratch_postgres(server_url: str) -> tuple[str, Any]:
    from sqlalchemy import create_engine, text
    from sqlalchemy.engine import make_url

    from edgeledger.db import normalize_url

    url = make_url(normalize_url(server_url))
    name = f"edgeledger_bench_{secrets.token_hex(4)}"
    admin = create_engine(url, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"'))

    def drop() -> None:
        with admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()

    return url.set(database=name).render_as_string(hide_password=False), drop


def run_child(
    log: Path, database_url: str, work: Path, lines: int, fmt: str, profile: bool = False
) -> dict[str, Any]:
    args = [
        sys.executable,
        "-m",
        "benchmarks.ingest",
        "--child",
        str(log),
        "--child-db",
        database_url,
        "--child-work",
        str(work),
        "--lines",
        str(lines),
        "--format",
        fmt,
    ]
    if profile:
        args.append("--profile")
    done = subprocess.run(args, check=True, stdout=subprocess.PIPE, text=True)
    return json.loads(done.stdout.strip().splitlines()[-1])


def sha256sum_seconds(plain: Path) -> float:
    started = time.perf_counter()
    subprocess.run(["sha256sum", str(plain)], check=True, stdout=subprocess.DEVNULL)
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--lines", type=int, default=1_000_000)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument(
        "--format",
        default="cloudfront",
        choices=[*BENCH_FORMATS, "all"],
        help="the log format to ingest, or all of them, repeats interleaved (default: cloudfront)",
    )
    parser.add_argument("--database-url", default="", help="also run on this PostgreSQL server (scratch dbs)")
    parser.add_argument("--profile", action="store_true", help="cProfile breakdown of one run per format")
    parser.add_argument("--child", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--child-db", help=argparse.SUPPRESS)
    parser.add_argument("--child-work", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()

    if args.child:
        fmt = BENCH_FORMATS[args.format]
        result = child(args.child, args.child_db, args.child_work, args.lines, fmt, args.profile)
        print(json.dumps(result))
        return

    work = Path(tempfile.mkdtemp(prefix="edgeledger-ingest-bench-"))
    try:
        measure(args, work)
    finally:
        shutil.rmtree(work, ignore_errors=True)  # the logs (all formats: ~1.3 GB) and a database


HEADER = (
    f"{'format':<11} {'database':<10} {'records':>9} {'quar.':>5} {'ingest s':>9} {'trees s':>8} "
    f"{'total s':>8} {'lines/s':>9} {'CPU s':>7} {'lines/CPU s':>11} {'RSS@25%':>8} {'RSS@100%':>9} "
    f"{'peak MiB':>9} {'x sha256sum':>11}"
)


def measure(args: argparse.Namespace, work: Path) -> None:
    """Generate every format's log in ``work``, time the repeats, then print the table (one row per format
    and database, medians) and the JSON line.

    The repeats are interleaved: repeat 1 of every format on every database, then repeat 2, ... So when
    other work shares the machine, its load falls on all formats alike instead of on whichever format
    happened to run at the time."""
    names = list(BENCH_FORMATS) if args.format == "all" else [args.format]
    logs = {name: generate_log(args, work, name) for name in names}
    if args.profile:
        for name, (log, _) in logs.items():
            run_child(log, f"sqlite:///{work / f'profile-{name}.db'}", work, args.lines, name, profile=True)
        return
    backends = [("sqlite", "")] + ([("postgresql", args.database_url)] if args.database_url else [])
    shas: dict[str, list[float]] = {name: [] for name in names}
    results: dict[tuple[str, str], list[dict[str, Any]]] = {(n, b): [] for n in names for b, _ in backends}
    for repeat in range(args.runs):
        for name, (log, plain) in logs.items():
            shas[name].append(sha256sum_seconds(plain))
            for backend, server in backends:
                result = one_run(args, work / f"{name}-{backend}-{repeat}", log, name, backend, server)
                results[(name, backend)].append(result)
                print(
                    f"run {repeat + 1}/{args.runs} {name} {backend}: "
                    f"{args.lines / (result['ingest_s'] + result['trees_s']):,.0f} lines/s, "
                    f"{result['cpu_s']:.1f} CPU s",
                    file=sys.stderr,
                    flush=True,
                )
    summary: dict[str, Any] = {"lines": args.lines, "runs": args.runs, "seed": args.seed, "formats": {}}
    print(HEADER)
    floors = []
    for name, (log, plain) in logs.items():
        sha = statistics.median(shas[name])
        entry: dict[str, Any] = {
            "log_format": BENCH_FORMATS[name].log_format,
            "gzip_bytes": log.stat().st_size,
            "plain_bytes": plain.stat().st_size,
            "sha256sum_s": round(sha, 3),
        }
        summary["formats"][name] = entry
        for backend, _ in backends:
            row, entry[backend] = summarise(name, backend, results[(name, backend)], args.lines, sha)
            print(row)
        floors.append(
            f"{name}: sha256sum over the {plain.stat().st_size / 2**20:.0f} MiB uncompressed file "
            f"({log.stat().st_size / 2**20:.1f} MiB gzip): {sha:.3f} s (median)"
        )
    for floor in floors:
        print(floor)
    print(json.dumps(summary))


def generate_log(args: argparse.Namespace, work: Path, name: str) -> tuple[Path, Path]:
    """The gzip log of format ``name`` and its uncompressed copy (for ``sha256sum``), in ``work``."""
    log = work / f"{name}.log.gz"
    started = time.perf_counter()
    generate(log, args.lines, args.seed, name)
    plain = work / f"{name}.log"
    with gzip.open(log, "rb") as src, plain.open("wb") as dst:
        while block := src.read(1 << 20):
            dst.write(block)
    print(
        f"{name}: generated {args.lines:,} lines in {time.perf_counter() - started:.0f} s: "
        f"{log.stat().st_size / 2**20:.1f} MiB gzip, {plain.stat().st_size / 2**20:.1f} MiB plain",
        file=sys.stderr,
    )
    return log, plain


def one_run(
    args: argparse.Namespace, run_work: Path, log: Path, name: str, backend: str, server: str
) -> dict[str, Any]:
    """One child run of ``log`` on a fresh database (SQLite file, or a scratch PostgreSQL database)."""
    run_work.mkdir()
    try:
        if backend == "sqlite":
            return run_child(log, f"sqlite:///{run_work / 'bench.db'}", run_work, args.lines, name)
        url, drop = scratch_postgres(server)
        try:
            return run_child(log, url, run_work, args.lines, name)
        finally:
            drop()
    finally:
        shutil.rmtree(run_work)  # a million-record SQLite file is ~0.5 GB


def summarise(
    name: str, backend: str, results: list[dict[str, Any]], lines: int, sha: float
) -> tuple[str, dict[str, Any]]:
    """The table row and the JSON entry of one format on one database (medians of the repeats)."""
    counts = {(r.pop("records"), r.pop("quarantined")) for r in results}
    assert counts == {(lines, 0)}, counts  # every repeat stored every line (the child checked it too)
    ((records, quarantined),) = counts
    med = {key: statistics.median(r[key] for r in results) for key in results[0]}
    total = med["ingest_s"] + med["trees_s"]
    rate = lines / total
    row = (
        f"{name:<11} {backend:<10} {records:>9,} {quarantined:>5} "
        f"{med['ingest_s']:>9.2f} {med['trees_s']:>8.2f} {total:>8.2f} {rate:>9,.0f} "
        f"{med['cpu_s']:>7.2f} {lines / med['cpu_s']:>11,.0f} "
        f"{med['rss_25_mib']:>8.0f} {med['rss_100_mib']:>9.0f} {med['peak_rss_mib']:>9.0f} "
        f"{total / sha:>11.0f}"
    )
    entry = {
        "records": records,
        "quarantined": quarantined,
        **{k: round(v, 3) for k, v in med.items()},
        "lines_per_s": round(rate),
        "lines_per_cpu_s": round(lines / med["cpu_s"]),
        "x_sha256sum": round(total / sha, 1),
        "runs_lines_per_s": [round(lines / (r["ingest_s"] + r["trees_s"])) for r in results],
    }
    return row, entry


if __name__ == "__main__":
    main()
