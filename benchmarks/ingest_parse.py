"""Where the log formats differ: parsing alone, per format, in CPU microseconds per line (no database).

For each ``--format`` (the generated logs of ``ingest_formats``, same population and seed as the
end-to-end benchmark ``benchmarks.ingest``), over ``--lines`` lines, medians of ``--runs``:

* ``gunzip + lines``: reading the gzip file into text lines (``parsers.open_log``), nothing else;
* ``parse``: ``parse_log`` over those lines already in memory, with the source's declared format: every
  record built, client pseudonymised (the same for every format);
* the format-specific steps inside ``parse``, each timed on its own with the parser's own functions:
  cutting the line into fields (CloudFront ``str.split`` on tabs; the space-separated formats one regular
  expression), converting the logged time to UTC (CloudFront caches it per distinct date and time
  string, so it is a dictionary lookup there; nginx and Alibaba parse ``[dd/Mon/yyyy:HH:MM:SS +hhmm]``
  and apply the offset, Tencent parses ``yyyyMMddHHmmss`` and takes off 8 hours, once per minute of the
  file: the parser's per-minute cache, emptied before it is timed), the
  derived request id (SHA-256 over the fields; CloudFront logs its id) and building the record object
  (both loops skip the frozen dataclass's ``__init__``: CloudFront's inline, the shared access-log loop
  through ``records.make_record``, timed here; CloudFront's is inside "parse").

    .venv/bin/python -m benchmarks.ingest_parse --lines 200000 --runs 3 --format all
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from benchmarks.ingest_formats import BENCH_FORMATS, BenchFormat, generate
from edgeledger.deliveries.parsers import ParseStats, SourceSite, clear_caches, open_log, parse_log
from edgeledger.deliveries.parsers.accesslog import _tokens, cached_local_time_ms, derived_request_id
from edgeledger.deliveries.parsers.cdnlogs import cached_tencent_time_ms
from edgeledger.deliveries.records import CacheResult, Pseudonymiser, make_record

# name -> (index of the time field, its conversion, derived request id prefix)
_ACCESS_LOG: dict[str, tuple[int, Callable[[str], int], str]] = {
    "alibaba": (0, cached_local_time_ms, "ali-"),
    "tencent": (0, cached_tencent_time_ms, "tc-"),
    "nginx": (3, cached_local_time_ms, "ngx-"),
}


def _per_line(step: Callable[[Any], object], items: list[Any]) -> float:
    """CPU microseconds per item of ``step`` applied to every item (results dropped as they come)."""
    started = time.process_time()
    for item in items:
        step(item)
    return (time.process_time() - started) / len(items) * 1e6


def measure_format(fmt: BenchFormat, log: Path, lines: int) -> dict[str, float]:
    """One run's figures for ``log`` (µs per line)."""
    figures: dict[str, float] = {}
    started = time.process_time()
    for _ in open_log(log):
        pass
    figures["gunzip + lines"] = (time.process_time() - started) / lines * 1e6
    text = list(open_log(log))
    data = text[fmt.header_lines :]
    assert len(data) == lines
    pseudonymiser = Pseudonymiser(b"\x11" * 32, "bench")
    site = SourceSite(fmt.site_host, fmt.site_edge_location)
    stats = ParseStats()
    clear_caches()  # every run parses the file as a fresh process would
    started = time.process_time()
    for _ in parse_log(text, pseudonymiser=pseudonymiser, log_format=fmt.log_format, site=site, stats=stats):
        pass
    figures["parse"] = (time.process_time() - started) / lines * 1e6
    if (stats.records, stats.quarantined) != (lines, 0):
        raise AssertionError(f"{fmt.name}: {stats.records} records, {stats.quarantined} quarantined")

    if fmt.name == "cloudfront":
        figures["split"] = _per_line(lambda line: line.split("\t"), data)
        figures["time to UTC"] = 0.0  # cached per distinct string: a dictionary lookup, inside "parse"
        figures["request id"] = 0.0  # logged
        figures["record object"] = 0.0  # built without the dataclass __init__
        return figures
    index, to_utc, prefix = _ACCESS_LOG[fmt.name]
    figures["split"] = _per_line(lambda line: _tokens(line.strip()), data)
    fields = [_tokens(line.strip()) for line in data]
    clear_caches()
    figures["time to UTC"] = _per_line(to_utc, [f[index] for f in fields])
    figures["request id"] = _per_line(lambda f: derived_request_id(prefix, f), fields)
    key = b"\x00" * 32
    figures["record object"] = _per_line(
        lambda n: make_record(
            fmt.log_format, prefix, 0, "EDGE", "", "host", "/", 1, 200, CacheResult.hit, key, n
        ),
        list(range(lines)),
    )
    return figures


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--lines", type=int, default=200_000)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--format", default="all", choices=[*BENCH_FORMATS, "all"])
    args = parser.parse_args()
    names = list(BENCH_FORMATS) if args.format == "all" else [args.format]
    summary: dict[str, Any] = {"lines": args.lines, "runs": args.runs, "seed": args.seed, "formats": {}}
    columns = ("gunzip + lines", "parse", "split", "time to UTC", "request id", "record object")
    print(f"{'format':<11} " + " ".join(f"{c:>14}" for c in columns) + "   (CPU µs per line, medians)")
    with tempfile.TemporaryDirectory(prefix="edgeledger-parse-bench-") as work:
        for name in names:
            fmt = BENCH_FORMATS[name]
            log = Path(work) / f"{name}.log.gz"
            generate(log, args.lines, args.seed, name)
            runs = [measure_format(fmt, log, args.lines) for _ in range(args.runs)]
            med = {c: round(statistics.median(r[c] for r in runs), 2) for c in columns}
            summary["formats"][name] = med
            print(f"{name:<11} " + " ".join(f"{med[c]:>14.2f}" for c in columns))
    print(json.dumps(summary))


if __name__ == "__main__":
    main()
