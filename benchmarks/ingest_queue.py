"""Queued ingestion: one ``edgeledger ingest-worker`` process against two, on the same files.

``--sources`` sources (spread over distinct partitions) get ``--files`` CloudFront gzip logs of ``--lines``
lines each (benchmarks/ingest.py's generator, a seed per file). Each run gets a scratch PostgreSQL
database (``--database-url``, default the local server; ``sqlite`` runs a fresh SQLite file instead) and
its own ``nats-server -js`` on a free loopback port; every upload is stored as the endpoint stores it
(``ingest_queue.store_upload``), then the worker processes are started and, once each says it is ready,
all messages are published at once. Timed: from the first publish to the last ingest row final (polled
every 0.1 s). Runs alternate one worker / two workers, ``--runs`` of each; printed: per-run seconds, the
medians, lines per second and the ratio, with the workers' CPU seconds and how many of the machine's
cores were busy during each run (all of them: the machine, not the queue, is the limit).

    .venv/bin/python -m benchmarks.ingest_queue --sources 8 --files 2 --lines 50000 --runs 3
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from benchmarks.ingest import generate, scratch_postgres
from edgeledger.ledger.ids import source_id_for


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def nats_binary() -> str:
    for candidate in (shutil.which("nats-server"), "/usr/sbin/nats-server", "/usr/bin/nats-server"):
        if candidate and Path(candidate).exists():
            return candidate
    sys.exit("nats-server is not installed")


def start_nats(directory: Path) -> tuple[str, subprocess.Popen[bytes]]:
    port = free_port()
    proc = subprocess.Popen(
        [nats_binary(), "-js", "-a", "127.0.0.1", "-p", str(port), "-sd", str(directory)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 20
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
            return f"nats://127.0.0.1:{port}", proc
        except OSError:
            if time.monotonic() > deadline:
                sys.exit("nats-server did not start")
            time.sleep(0.05)


def cpu_ticks() -> tuple[int, int]:
    """(busy, total) jiffies of the whole machine, from /proc/stat."""
    fields = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    idle = fields[3] + fields[4]  # idle + iowait
    return sum(fields) - idle, sum(fields)


def process_cpu_seconds(pid: int) -> float:
    """utime + stime of one process so far."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def postgres_cpu_seconds() -> float:
    """utime + stime of every PostgreSQL process on the machine so far (the server's share of a run)."""
    total = 0.0
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            text = stat.read_text()
        except OSError:  # gone meanwhile
            continue
        if text.split("(", 1)[1].startswith("postgres)"):
            total += process_cpu_seconds(int(stat.parent.name))
    return total


def source_names(count: int, partitions: int) -> list[str]:
    """``count`` source names on distinct partitions (as many as there are)."""
    from edgeledger.deliveries.ingest_queue import partition_of

    names: list[str] = []
    taken: set[int] = set()
    n = 0
    while len(names) < count:
        name = f"bench-{n}"
        p = partition_of(source_id_for(name), partitions)
        if p not in taken or len(taken) == partitions:
            names.append(name)
            taken.add(p)
        n += 1
    return names


def one_run(
    args: argparse.Namespace, files: list[tuple[str, Path]], workers: int, work: Path
) -> tuple[float, int, float, float]:
    """Seconds from the first publish to the last final ingest, the lines ingested, the workers' CPU
    seconds and the cores the whole machine kept busy meanwhile (PostgreSQL, NATS, anything else)."""
    from sqlalchemy import func, select
    from sqlalchemy.orm import Session

    from edgeledger.config import Settings
    from edgeledger.db import make_engine, migrate
    from edgeledger.deliveries import ingest_queue, service
    from edgeledger.deliveries.models import DeliverySource, IngestFile

    if args.database_url == "sqlite":
        url, drop = f"sqlite:///{work / 'bench.db'}", (lambda: None)
    else:
        url, drop = scratch_postgres(args.database_url)
    nats_url, nats = start_nats(work / "js")
    procs: list[subprocess.Popen[bytes]] = []
    engine = make_engine(url)
    try:
        migrate(url)
        settings = Settings(
            data_dir=work,
            database_url=url,
            pseudonym_master_key="11" * 32,
            ingest_mode="queue",
            nats_url=nats_url,
            ingest_partitions=args.partitions,
        )
        ids: list[tuple[int, int]] = []
        with Session(engine, expire_on_commit=False) as session:
            sources: dict[str, DeliverySource] = {}
            for name in sorted({n for n, _ in files}):
                sources[name] = DeliverySource(
                    source_id=source_id_for(name),
                    name=name,
                    kind="cdn_provider",
                    provider="cloudfront",
                    operator="0x" + "00" * 20,
                    signer="0x" + "00" * 20,
                    regions_bitmap="0x0",
                    jurisdiction="DE",
                    status="active",
                )
                session.add(sources[name])
            session.commit()
            service.pseudonymiser_for(session, settings, service.pseudonym_key_id())
            for name, path in files:
                with path.open("rb") as handle:
                    row = ingest_queue.store_upload(
                        session, settings, sources[name], handle, name=path.name, created_by=None
                    )
                p = ingest_queue.partition_of(sources[name].source_id, args.partitions)
                ids.append((row.id, p))
        env = {
            **os.environ,
            "DATA_DIR": str(work),
            "DATABASE_URL": url,
            "NATS_URL": nats_url,
            "INGEST_PARTITIONS": str(args.partitions),
            "PSEUDONYM_MASTER_KEY": "11" * 32,
        }
        executable = str(Path(sys.executable).with_name("edgeledger"))
        for _ in range(workers):
            procs.append(
                subprocess.Popen(
                    [executable, "ingest-worker"],
                    env=env,
                    cwd=work,
                    stdout=subprocess.DEVNULL,
                    stderr=subprocess.PIPE,
                )
            )
        for proc in procs:
            assert proc.stderr is not None
            seen = b""
            while b"ingest worker ready" not in seen:
                line = proc.stderr.readline()
                if not line:
                    sys.exit(f"worker did not start: {seen[-2000:]!r}")
                seen += line

        async def publish_all() -> None:
            import nats as client

            nc = await client.connect(nats_url)
            js = nc.jetstream()
            for ingest_id, p in ids:
                await js.publish(ingest_queue.subject_of(p), f'{{"ingest_id": {ingest_id}}}'.encode())
            await nc.close()

        cpu_before = [process_cpu_seconds(proc.pid) for proc in procs]
        postgres_before = postgres_cpu_seconds() if args.database_url != "sqlite" else 0.0
        busy_before, total_before = cpu_ticks()
        started = time.perf_counter()
        asyncio.run(publish_all())
        wanted = [i for i, _ in ids]
        final = select(func.count()).where(
            IngestFile.id.in_(wanted), IngestFile.state.in_(("done", "failed", "rejected"))
        )
        while True:
            with engine.connect() as connection:
                if connection.execute(final).scalar() == len(wanted):
                    break
            time.sleep(0.1)
        seconds = time.perf_counter() - started
        busy_after, total_after = cpu_ticks()
        worker_cpu = sum(process_cpu_seconds(p.pid) for p in procs) - sum(cpu_before)
        if args.database_url != "sqlite":
            postgres = postgres_cpu_seconds() - postgres_before
            print(f"  PostgreSQL CPU {postgres:.1f} s", flush=True)
        cores = (os.cpu_count() or 1) * (busy_after - busy_before) / max(total_after - total_before, 1)
        with Session(engine) as session:
            rows = session.scalars(select(IngestFile).where(IngestFile.id.in_(wanted))).all()
            bad = [(r.name, r.state, r.error_code) for r in rows if r.state != "done"]
            if bad:
                sys.exit(f"ingests did not finish: {bad}")
            lines = sum(r.lines for r in rows)
        return seconds, lines, worker_cpu, cores
    finally:
        for proc in procs:
            proc.terminate()
        for proc in procs:
            proc.wait(30)
        nats.terminate()
        nats.wait(30)
        engine.dispose()
        drop()


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--sources", type=int, default=8)
    parser.add_argument("--files", type=int, default=2, help="files per source")
    parser.add_argument("--lines", type=int, default=50_000, help="lines per file")
    parser.add_argument("--runs", type=int, default=3, help="runs of each worker count")
    parser.add_argument("--partitions", type=int, default=8)
    parser.add_argument("--database-url", default="postgresql://postgres@127.0.0.1:5432/test")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="edgeledger-queue-bench-") as tmp:
        root = Path(tmp)
        files: list[tuple[str, Path]] = []
        seed = 0
        for name in source_names(args.sources, args.partitions):
            for k in range(args.files):
                path = root / f"{name}-{k}.log.gz"
                generate(path, args.lines, seed)
                seed += 1
                files.append((name, path))
        results: dict[int, list[float]] = {1: [], 2: []}
        total = 0
        for run in range(args.runs):
            for workers in (1, 2):
                work = root / f"run-{run}-{workers}"
                work.mkdir()
                seconds, total, cpu, cores = one_run(args, files, workers, work)
                results[workers].append(seconds)
                print(
                    f"run {run + 1}: {workers} worker(s): {total:,} lines in {seconds:.2f} s; workers' CPU "
                    f"{cpu:.1f} s; machine busy {cores:.2f} of {os.cpu_count()} cores",
                    flush=True,
                )
                shutil.rmtree(work)
        one, two = statistics.median(results[1]), statistics.median(results[2])
        summary: dict[str, Any] = {
            "files": len(files),
            "lines": total,
            "one_worker_s": round(one, 2),
            "two_workers_s": round(two, 2),
            "one_worker_lines_per_s": round(total / one),
            "two_workers_lines_per_s": round(total / two),
            "ratio": round(one / two, 2),
        }
        print(
            f"median of {args.runs}: 1 worker {one:.2f} s ({total / one:,.0f} lines/s), "
            f"2 workers {two:.2f} s ({total / two:,.0f} lines/s): {one / two:.2f}x"
        )
        print(summary)


if __name__ == "__main__":
    main()
