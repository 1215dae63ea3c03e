"""Where ingestion's CPU goes after parsing, per stage, for one or more checkouts side by side.

One generated CloudFront log (``ingest_formats``, the population and seed of ``benchmarks.ingest``) of
``--lines`` lines is ingested end to end on a fresh SQLite database, as ``benchmarks.ingest`` does
(``ingest_log``, then ``trees.build_batch_tree`` for every batch), in a fresh child process per run, with
the CPU time (``time.process_time``) of these stages added up per run:

* ``record values``: ``_Ingest._rows`` (request id, commitment and leaf hashes, leaf encoding, batch,
  asset, merchant, edge and country lookups, salts, the row tuples);
* ``insert``: ``_Ingest._insert_records`` (SQLite ``executemany``);
* ``dedupe lookup``: ``_Ingest._stored``;
* ``chunk write``: all of ``_Ingest._write`` (the three above, the in-file repeat check, quarantine rows,
  counters);
* ``commit``: ``Session.commit`` (every commit of the run: chunks and the ingest's own);
* ``ingest``: all of ``ingest_log`` (parsing, line keeping and the loop around it included);
* ``trees``: building and storing every batch's tree.

The stages are wrapped from outside (no change to the code measured), so ``--checkout NAME=DIR`` may
name any checkout whose ``backend`` has these functions (this file runs in each child against that
checkout's ``backend`` and ``benchmarks``): the runs alternate between checkouts (run 1 of
each, then run 2, ...) so that load from other work on the machine falls on all of them alike. Printed:
CPU microseconds per line, medians of ``--runs``, one column per checkout, and the JSON of every run.

    git worktree add ../before <commit>
    .venv/bin/python -m benchmarks.ingest_stages --lines 200000 --runs 3 \\
        --checkout before=../before --checkout after=.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

STAGES = (
    ("rows", "record values"),
    ("insert", "insert"),
    ("dedupe", "dedupe lookup"),
    ("write", "chunk write"),
    ("commit", "commit"),
    ("ingest", "ingest"),
    ("trees", "trees"),
)


def child(log: Path, lines: int) -> dict[str, float]:
    """One run in this process (the checkout on ``sys.path``): CPU seconds per stage."""
    from sqlalchemy import select
    from sqlalchemy.orm import Session

    from benchmarks.ingest import bench_source, check_complete
    from benchmarks.ingest_formats import BENCH_FORMATS
    from edgeledger.config import Settings
    from edgeledger.db import make_engine, migrate
    from edgeledger.deliveries import ingest, service, trees
    from edgeledger.deliveries.models import DeliveryBatch

    spent: dict[str, float] = dict.fromkeys((key for key, _ in STAGES), 0.0)

    def timed(owner: Any, name: str, key: str) -> None:
        function = getattr(owner, name)

        def wrapper(*args: Any, **kwargs: Any) -> Any:
            started = time.process_time()
            try:
                return function(*args, **kwargs)
            finally:
                spent[key] += time.process_time() - started

        setattr(owner, name, wrapper)

    timed(ingest._Ingest, "_rows", "rows")
    timed(ingest._Ingest, "_insert_records", "insert")
    timed(ingest._Ingest, "_stored", "dedupe")
    timed(ingest._Ingest, "_write", "write")
    timed(Session, "commit", "commit")
    fmt = BENCH_FORMATS["cloudfront"]
    work = Path(tempfile.mkdtemp(prefix="edgeledger-ingest-stages-"))
    try:
        url = f"sqlite:///{work / 'bench.db'}"
        migrate(url)
        settings = Settings(data_dir=work, database_url=url, pseudonym_master_key="11" * 32)
        engine = make_engine(url)
        with Session(engine, expire_on_commit=False) as session:
            source = bench_source(fmt)
            session.add(source)
            session.commit()
            service.pseudonymiser_for(session, settings, service.pseudonym_key_id())
            for key in spent:
                spent[key] = 0.0
            started = time.process_time()
            with log.open("rb") as handle:
                report = ingest.ingest_log(session, settings, source, handle, name=log.name, created_by=None)
            ingested = time.process_time()
            batches = session.scalars(select(DeliveryBatch).where(DeliveryBatch.source_pk == source.id))
            for batch in batches.all():
                trees.build_batch_tree(session, settings, batch)
            spent["ingest"] = ingested - started
            spent["trees"] = time.process_time() - ingested
        engine.dispose()
        check_complete(report, fmt, lines)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return spent


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--lines", type=int, default=200_000)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument(
        "--checkout", action="append", default=[], metavar="NAME=DIR", help="a checkout (default: this one)"
    )
    parser.add_argument("--child", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(child(args.child, args.lines)))
        return
    checkouts = [c.split("=", 1) for c in args.checkout] or [["this", "."]]
    work = Path(tempfile.mkdtemp(prefix="edgeledger-ingest-stages-"))
    try:
        from benchmarks.ingest_formats import generate

        log = work / "cloudfront.log.gz"
        generate(log, args.lines, args.seed, "cloudfront")
        runs: dict[str, list[dict[str, float]]] = {name: [] for name, _ in checkouts}
        for repeat in range(args.runs):
            for name, directory in checkouts:
                root = Path(directory).resolve()
                env = {**os.environ, "PYTHONPATH": f"{root / 'backend'}{os.pathsep}{root}"}
                # this file, run against that checkout's backend and benchmark helpers
                command = [sys.executable, str(Path(__file__).resolve()), "--child", str(log)]
                done = subprocess.run(
                    [*command, "--lines", str(args.lines)],
                    cwd=root,
                    env=env,
                    check=True,
                    stdout=subprocess.PIPE,
                    text=True,
                )
                runs[name].append(json.loads(done.stdout.strip().splitlines()[-1]))
                load = Path("/proc/loadavg").read_text().split()[0]
                print(f"run {repeat + 1}/{args.runs} {name}: load {load}", file=sys.stderr, flush=True)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    print(f"{'CPU us / line (median)':<24}" + "".join(f"{name:>12}" for name, _ in checkouts))
    for key, label in STAGES:
        cells = [statistics.median(r[key] for r in runs[name]) * 1e6 / args.lines for name, _ in checkouts]
        print(f"{label:<24}" + "".join(f"{cell:>12.2f}" for cell in cells))
    totals = [statistics.median(r["ingest"] + r["trees"] for r in runs[name]) for name, _ in checkouts]
    print(f"{'CPU s (ingest + trees)':<24}" + "".join(f"{total:>12.3f}" for total in totals))
    print(json.dumps({"lines": args.lines, "runs": runs}))


if __name__ == "__main__":
    main()
