"""Sustained ingestion: CloudFront lines streamed into one ingest for ``--minutes`` minutes, RSS sampled
after every stored chunk, to show memory stays flat however long the ingest runs.

The lines come from a generator (the same shape as benchmarks/ingest.py's log: 33 fields, many clients,
hosts and assets, fresh request ids, time moving forward so batches roll over by period) straight into
``ingest_log`` - no file, so the run is bounded by time, not size. Printed: lines ingested and lines/s, RSS
at 10 %, 50 % and 100 % of the run and its peak; written: ``rss.csv`` (seconds, lines, RSS MiB) and
``rss.svg`` (the RSS over time) in ``--out``.

    .venv/bin/python -m benchmarks.ingest_sustained --minutes 10 --out reports/ingest-sustained
"""

from __future__ import annotations

import argparse
import random
import resource
import secrets
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

from benchmarks.ingest import rss_kib
from benchmarks.ingest_formats import AGENTS, CLOUDFRONT_FIELDS, EDGES, PERIOD_START, RESULTS, population
from edgeledger.ledger.ids import source_id_for


def lines_for(deadline: float, seed: int) -> Iterator[str]:
    """CloudFront lines until ``deadline`` (monotonic seconds), 20 ms of log time apart."""
    rng = random.Random(seed)
    hosts, assets, clients = population(rng)
    yield "#Version: 1.0\n"
    yield "#Fields: " + CLOUDFRONT_FIELDS + "\n"
    n = 0
    while True:
        if n % 1000 == 0 and time.monotonic() >= deadline:
            return
        t = PERIOD_START + n // 50
        day, sec = divmod(t, 86_400)
        date = time.strftime("%Y-%m-%d", time.gmtime(day * 86_400))
        clock = f"{sec // 3600:02d}:{sec // 60 % 60:02d}:{sec % 60:02d}"
        asset = assets[int(rng.paretovariate(1.2)) % len(assets)]
        size = rng.randrange(200_000, 4_000_000)
        result = rng.choice(RESULTS)
        status = "502" if result == "Error" else "200"
        yield (
            f"{date}\t{clock}\t{rng.choice(EDGES)}\t{size}\t{rng.choice(clients)}\tGET\t"
            f"d111111abcdef8.cloudfront.net\t/ipfs/{asset}/seg-{rng.randrange(1, 600):05d}.ts\t{status}\t-\t"
            f"{rng.choice(AGENTS)}\t-\t-\t{result}\t{secrets.token_urlsafe(42)[:56]}\t{rng.choice(hosts)}\t"
            f"https\t180\t0.042\t-\tTLSv1.3\tTLS_AES_128_GCM_SHA256\t{result}\tHTTP/2.0\t-\t-\t"
            f"{rng.randrange(1024, 65535)}\t0.011\t{result}\tvideo/MP2T\t{size}\t-\t-\n"
        )
        n += 1


def svg_plot(samples: list[tuple[float, int, float]], title: str) -> str:
    width, height, left, bottom = 720.0, 300.0, 60.0, 40.0
    t_max = max(s[0] for s in samples) or 1.0
    r_max = max(s[2] for s in samples) * 1.2 or 1.0

    def x(t: float) -> float:
        return left + (width - left - 10) * t / t_max

    def y(r: float) -> float:
        return height - bottom - (height - bottom - 20) * r / r_max

    points = " ".join(f"{x(t):.1f},{y(r):.1f}" for t, _, r in samples)
    ticks = "".join(
        f'<text x="{left - 6}" y="{height - bottom - (height - bottom - 20) * f + 4:.1f}" text-anchor="end">'
        f"{r_max * f:.0f}</text>"
        for f in (0, 0.25, 0.5, 0.75, 1.0)
    )
    return (
        f'<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {width} {height}" font-family="sans-serif" '
        f'font-size="11"><title>{title}</title>'
        f'<text x="{width / 2}" y="14" text-anchor="middle">{title}</text>'
        f'<line x1="{left}" y1="{height - bottom}" x2="{width - 10}" y2="{height - bottom}" stroke="#333"/>'
        f'<line x1="{left}" y1="20" x2="{left}" y2="{height - bottom}" stroke="#333"/>{ticks}'
        f'<text x="{width / 2}" y="{height - 8}" text-anchor="middle">seconds (0 - {t_max:.0f})</text>'
        f'<text x="14" y="{height / 2}" transform="rotate(-90 14 {height / 2})" '
        'text-anchor="middle">RSS MiB</text>'
        f'<polyline fill="none" stroke="#1f77b4" stroke-width="1.5" points="{points}"/></svg>'
    )


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--minutes", type=float, default=10.0)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--database-url", default="", help="default: a fresh SQLite file")
    parser.add_argument("--out", type=Path, default=Path("reports/ingest-sustained"))
    args = parser.parse_args()

    from sqlalchemy.orm import Session

    from edgeledger.config import Settings
    from edgeledger.db import make_engine, migrate
    from edgeledger.deliveries.ingest import ingest_log
    from edgeledger.deliveries.models import DeliverySource

    work = Path(tempfile.mkdtemp(prefix="edgeledger-sustained-"))
    database_url = args.database_url or f"sqlite:///{work / 'sustained.db'}"
    migrate(database_url)
    settings = Settings(data_dir=work, database_url=database_url, pseudonym_master_key="11" * 32)
    engine = make_engine(database_url)
    samples: list[tuple[float, int, float]] = []
    started = time.monotonic()
    with Session(engine, expire_on_commit=False) as session:
        source = DeliverySource(
            source_id=source_id_for("sustained"),
            name="sustained",
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
        deadline = started + args.minutes * 60
        ingest = ingest_log(
            session,
            settings,
            source,
            lines_for(deadline, args.seed),
            name="sustained.log",
            created_by=None,
            progress=lambda n: samples.append((time.monotonic() - started, n, rss_kib() / 1024)),
        )
    engine.dispose()
    elapsed = time.monotonic() - started
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "rss.csv").write_text(
        "seconds,lines,rss_mib\n" + "".join(f"{t:.1f},{n},{r:.1f}\n" for t, n, r in samples)
    )
    title = f"RSS during {args.minutes:g} minutes of ingestion ({ingest.records_new:,} lines)"
    (args.out / "rss.svg").write_text(svg_plot(samples, title))

    def at(fraction: float) -> float:
        return next(r for t, _, r in samples if t >= elapsed * fraction)

    print(f"{ingest.records_new:,} lines in {elapsed:.0f} s: {ingest.records_new / elapsed:,.0f} lines/s")
    print(
        f"RSS at 10 % / 50 % / 100 % of the run: {at(0.1):.0f} / {at(0.5):.0f} / {samples[-1][2]:.0f} MiB; "
        f"peak {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f} MiB"
    )
    print(f"wrote {args.out / 'rss.csv'} and {args.out / 'rss.svg'}")


if __name__ == "__main__":
    main()
