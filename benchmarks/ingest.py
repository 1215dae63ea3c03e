"""End-to-end log ingestion: CloudFront standard log (gzip) -> records with leaves in the database -> every
batch's tree built and stored. Lines per second, peak RSS and RSS along the way, against `sha256sum` over
the same uncompressed file as a floor for "reading the bytes once".

The log (``--lines`` lines, default 1,000,000; 33 CloudFront fields, deterministic ``--seed``, many clients,
hosts and assets, one source, two daily periods) is generated once. Each repeat runs in a fresh child
process (`--child`) against a fresh SQLite database (``--database-url`` also runs PostgreSQL: a scratch
database per repeat on that server), so its ``ru_maxrss`` is the peak of that run alone. The child
samples its RSS after every chunk; printed: RSS when 25 % and 100 % of the lines were read (flat memory
means about equal) and the peak. Medians over ``--runs`` repeats. ``--profile`` prints a cProfile
breakdown of one extra run instead of timing.

    .venv/bin/python -m benchmarks.ingest --lines 1000000 --runs 3
"""

from __future__ import annotations

import argparse
import gzip
import json
import random
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

from edgeledger.ledger.ids import source_id_for

FIELDS = (
    "date time x-edge-location sc-bytes c-ip cs-method cs(Host) cs-uri-stem sc-status cs(Referer) "
    "cs(User-Agent) cs-uri-query cs(Cookie) x-edge-result-type x-edge-request-id x-host-header cs-protocol "
    "cs-bytes time-taken x-forwarded-for ssl-protocol ssl-cipher x-edge-response-result-type "
    "cs-protocol-version fle-status fle-encrypted-fields c-port time-to-first-byte "
    "x-edge-detailed-result-type sc-content-type sc-content-len sc-range-start sc-range-end"
)
EDGES = (
    "FRA56-P7",
    "IAD89-C3",
    "NRT57-P2",
    "LHR61-C1",
    "CDG52-P1",
    "GRU3-P4",
    "SIN2-C1",
    "SYD1-C1",
    "BOM78-P1",
)
RESULTS = ("Hit", "Hit", "Hit", "Miss", "RefreshHit", "Error")
AGENTS = (
    "Mozilla/5.0%20(Windows%20NT%2010.0;%20Win64;%20x64)%20AppleWebKit/537.36%20Chrome/124.0",
    "Mozilla/5.0%20(iPhone;%20CPU%20iPhone%20OS%2017_4%20like%20Mac%20OS%20X)",
    "VLC/3.0.20%20LibVLC/3.0.20",
)
PERIOD_START = 1_714_521_600  # 2024-05-01T00:00:00Z; the lines cover 2024-05-01 and 2024-05-02


def fake_cid(rng: random.Random) -> str:
    """A CIDv1-shaped base32 string (the resolver only looks it up; these are not registered)."""
    return "bafkrei" + "".join(rng.choice("abcdefghijklmnopqrstuvwxyz234567") for _ in range(52))


def generate(path: Path, lines: int, seed: int) -> None:
    """Write ``lines`` CloudFront lines (gzip) to ``path``."""
    rng = random.Random(seed)
    hosts = [f"cdn{i}.merchant{i % 97}.example" for i in range(400)]
    assets = [fake_cid(rng) for _ in range(2_000)]
    clients = [
        f"{rng.randrange(1, 224)}.{rng.randrange(256)}.{rng.randrange(256)}.{rng.randrange(1, 255)}"
        for _ in range(50_000)
    ]
    step = 2 * 86_400 / lines
    with gzip.open(path, "wt", compresslevel=6, encoding="utf-8", newline="\n") as out:
        out.write("#Version: 1.0\n#Fields: " + FIELDS + "\n")
        for n in range(lines):
            t = PERIOD_START + int(n * step)
            day, sec = divmod(t, 86_400)
            date = time.strftime("%Y-%m-%d", time.gmtime(day * 86_400))
            clock = f"{sec // 3600:02d}:{sec // 60 % 60:02d}:{sec % 60:02d}"
            asset = assets[int(rng.paretovariate(1.2)) % len(assets)]
            segment = rng.randrange(1, 600)
            size = rng.randrange(200_000, 4_000_000)
            result = rng.choice(RESULTS)
            status = "502" if result == "Error" else "200"
            rid = secrets.token_urlsafe(42)[:56]
            host = rng.choice(hosts)
            out.write(
                f"{date}\t{clock}\t{rng.choice(EDGES)}\t{size}\t{rng.choice(clients)}\tGET\t"
                f"d111111abcdef8.cloudfront.net\t/ipfs/{asset}/seg-{segment:05d}.ts\t{status}\t-\t"
                f"{rng.choice(AGENTS)}\t-\t-\t{result}\t{rid}\t{host}\thttps\t180\t0.042\t-\tTLSv1.3\t"
                f"TLS_AES_128_GCM_SHA256\t{result}\tHTTP/2.0\t-\t-\t{rng.randrange(1024, 65535)}\t0.011\t"
                f"{result}\tvideo/MP2T\t{size}\t-\t-\n"
            )


# --------------------------------------------------------------------------------------------------------
# Child: one end-to-end run
# --------------------------------------------------------------------------------------------------------


def rss_kib() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise RuntimeError("VmRSS missing")


def child(log: Path, database_url: str, work: Path, total_lines: int, profile: bool) -> dict[str, Any]:
    from sqlalchemy import select
    from sqlalchemy.orm import Session

    from edgeledger.config import Settings
    from edgeledger.db import make_engine, migrate
    from edgeledger.deliveries import service, trees
    from edgeledger.deliveries.ingest import ingest_log
    from edgeledger.deliveries.models import DeliveryBatch, DeliverySource

    migrate(database_url)
    settings = Settings(data_dir=work, database_url=database_url, pseudonym_master_key="11" * 32)
    engine = make_engine(database_url)
    samples: list[tuple[int, int]] = []
    with Session(engine, expire_on_commit=False) as session:
        source = DeliverySource(
            source_id=source_id_for("bench"),
            name="bench",
            kind="cdn_provider",
            provider="cloudfront",
            operator="0x" + "00" * 20,
            signer="0x" + "00" * 20,
            regions_bitmap="0x0",
            jurisdiction="DE",
            status="active",
        )
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
    assert ingest.records_new == total_lines, (ingest.records_new, total_lines)
    quarter = next((rss for n, rss in samples if n >= total_lines // 4), samples[0][1] if samples else 0)
    return {
        "ingest_s": ingest_s,
        "trees_s": trees_s,
        "cpu_s": cpu_s,
        "rss_25_mib": quarter / 1024,
        "rss_100_mib": (samples[-1][1] if samples else rss_kib()) / 1024,
        "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
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


def run_child(log: Path, database_url: str, work: Path, lines: int, profile: bool = False) -> dict[str, Any]:
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
    parser.add_argument("--database-url", default="", help="also run on this PostgreSQL server (scratch dbs)")
    parser.add_argument("--profile", action="store_true", help="print a cProfile breakdown of one run")
    parser.add_argument("--child", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--child-db", help=argparse.SUPPRESS)
    parser.add_argument("--child-work", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()

    if args.child:
        result = child(args.child, args.child_db, args.child_work, args.lines, args.profile)
        print(json.dumps(result))
        return

    work = Path(tempfile.mkdtemp(prefix="edgeledger-ingest-bench-"))
    try:
        measure(args, work)
    finally:
        shutil.rmtree(work, ignore_errors=True)  # the logs and a million-record database: ~1.5 GB


def measure(args: argparse.Namespace, work: Path) -> None:
    """Generate the log in ``work``, then time the repeats and print the table and the JSON line."""
    log = work / "cloudfront.log.gz"
    started = time.perf_counter()
    generate(log, args.lines, args.seed)
    plain = work / "cloudfront.log"
    with gzip.open(log, "rb") as src, plain.open("wb") as dst:
        while block := src.read(1 << 20):
            dst.write(block)
    print(
        f"generated {args.lines:,} lines in {time.perf_counter() - started:.0f} s: "
        f"{log.stat().st_size / 2**20:.1f} MiB gzip, {plain.stat().st_size / 2**20:.1f} MiB plain",
        file=sys.stderr,
    )

    if args.profile:
        run_child(log, f"sqlite:///{work / 'profile.db'}", work, args.lines, profile=True)
        return

    backends = [("sqlite", "")] + ([("postgresql", args.database_url)] if args.database_url else [])
    sha = statistics.median(sha256sum_seconds(plain) for _ in range(args.runs))
    summary: dict[str, Any] = {
        "lines": args.lines,
        "runs": args.runs,
        "gzip_bytes": log.stat().st_size,
        "plain_bytes": plain.stat().st_size,
        "sha256sum_s": round(sha, 3),
    }
    print(
        f"{'backend':<11} {'ingest s':>9} {'trees s':>8} {'total s':>8} {'lines/s':>9} {'CPU s':>7} "
        f"{'lines/CPU s':>11} {'RSS@25%':>8} {'RSS@100%':>9} {'peak MiB':>9} {'x sha256sum':>11}"
    )
    for backend, server in backends:
        results = []
        for repeat in range(args.runs):
            run_work = work / f"{backend}-{repeat}"
            run_work.mkdir()
            if backend == "sqlite":
                results.append(run_child(log, f"sqlite:///{run_work / 'bench.db'}", run_work, args.lines))
            else:
                url, drop = scratch_postgres(server)
                try:
                    results.append(run_child(log, url, run_work, args.lines))
                finally:
                    drop()
            shutil.rmtree(run_work)  # a million-record SQLite file is ~0.5 GB
        med = {key: statistics.median(r[key] for r in results) for key in results[0]}
        total = med["ingest_s"] + med["trees_s"]
        rate = args.lines / total
        print(
            f"{backend:<11} {med['ingest_s']:>9.2f} {med['trees_s']:>8.2f} {total:>8.2f} {rate:>9,.0f} "
            f"{med['cpu_s']:>7.2f} {args.lines / med['cpu_s']:>11,.0f} "
            f"{med['rss_25_mib']:>8.0f} {med['rss_100_mib']:>9.0f} {med['peak_rss_mib']:>9.0f} "
            f"{total / sha:>11.0f}"
        )
        summary[backend] = {
            **{k: round(v, 3) for k, v in med.items()},
            "lines_per_s": round(rate),
            "lines_per_cpu_s": round(args.lines / med["cpu_s"]),
        }
    print(
        f"sha256sum over the {plain.stat().st_size / 2**20:.0f} MiB uncompressed file: {sha:.3f} s (median)"
    )
    print(json.dumps(summary))


if __name__ == "__main__":
    main()
