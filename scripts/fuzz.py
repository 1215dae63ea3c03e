"""Coverage-guided fuzzing of the parsers of untrusted input with atheris (libFuzzer for Python).

Targets (``tests/backend/support/fuzzing.py`` says what each one checks): ``logs`` (every log parser
of ``edgeledger.deliveries.parsers``, each format in ``FORMATS``), ``billing`` (the billing CSV
importer), ``siwe`` (Sign-In with Ethereum message parsing and signature recovery). Each target runs in
its own process for ``--seconds``, starting from the seed corpus in ``tests/backend/fuzz_corpus/<target>``
(cut from ``tests/backend/samples``) plus ``--corpus DIR/<target>`` if given (libFuzzer adds the inputs
that reach new code there, so a later run continues where this one stopped). An input that raises anything
but the target's documented error, breaks an invariant, or runs longer than ``--timeout`` seconds stops its
target and is saved under ``--artifacts`` (``crash-…`` or ``timeout-…``; replay it with ``--replay FILE``).

    .venv/bin/python -m scripts.fuzz --seconds 600 --corpus reports/fuzz-corpus   # make fuzz-long
    .venv/bin/python -m scripts.fuzz --seconds 5 logs                            # one short run

atheris comes from ``.toolchain/atheris`` (scripts/bootstrap.sh, ``requirements-atheris.lock``). Prints one
line per target: runs, seconds, coverage (libFuzzer's ``cov``/``ft`` counters), corpus size, the slowest
input (whole seconds), peak memory, findings; exits non-zero if any target found something.
"""

from __future__ import annotations

import argparse
import re
import subprocess
import sys
import tempfile
import time
import warnings
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
ATHERIS = ROOT / ".toolchain" / "atheris"
SEEDS = ROOT / "tests" / "backend" / "fuzz_corpus"
TARGETS = ("logs", "billing", "siwe")
#: Longest generated input per target: a few KiB reach every branch of a line parser; a SIWE message is
#: refused past 2,048 characters (UTF-8: up to 4 bytes each).
MAX_LEN = {"logs": 16_384, "billing": 16_384, "siwe": 8_192}
#: Modules whose code is instrumented for coverage (the parsers and what they call; instrumenting all of
#: edgeledger only slows the start).
INSTRUMENT = [
    "edgeledger.deliveries.parsers",
    "edgeledger.deliveries.records",
    "edgeledger.settlement.billing",
    "edgeledger.auth.service",
    "siwe",
    "abnf",
]


def _worker(target: str, libfuzzer_args: list[str]) -> None:
    sys.path[:0] = [str(ATHERIS), str(ROOT / "backend"), str(ROOT)]
    warnings.simplefilter("ignore")  # the siwe grammar's GrammarWarnings, once per process
    import atheris

    with atheris.instrument_imports(include=INSTRUMENT):
        import siwe  # noqa: F401  (imported lazily by the SIWE parser: instrument it now)

        from tests.backend.support import fuzzing

    atheris.Setup([sys.argv[0], *libfuzzer_args], fuzzing.TARGETS[target])
    atheris.Fuzz()


def _stat(pattern: str, text: str) -> str:
    found = re.findall(pattern, text)
    return found[-1] if found else "?"


def _run(target: str, args: argparse.Namespace, workdir: Path) -> tuple[bool, str]:
    corpus = (args.corpus / target) if args.corpus else workdir / f"corpus-{target}"
    corpus.mkdir(parents=True, exist_ok=True)
    args.artifacts.mkdir(parents=True, exist_ok=True)
    before = set(args.artifacts.glob(f"{target}-*"))
    command = [
        sys.executable, "-m", "scripts.fuzz", "--worker", target, "--",
        f"-max_total_time={args.seconds}", f"-seed={args.seed}", f"-timeout={args.timeout}",
        f"-max_len={MAX_LEN[target]}", "-rss_limit_mb=2048", "-print_final_stats=1",
        f"-artifact_prefix={args.artifacts}/{target}-", str(corpus), str(SEEDS / target),
    ]  # fmt: skip
    started = time.monotonic()
    done = subprocess.run(
        command, cwd=ROOT, capture_output=True, text=True, errors="replace", check=False,
        timeout=args.seconds * 3 + 120,
    )  # fmt: skip
    seconds = time.monotonic() - started
    log = done.stderr + done.stdout
    (args.artifacts / f"{target}.log").write_text(log[-200_000:])
    found = sorted(set(args.artifacts.glob(f"{target}-*")) - before)
    runs = _stat(r"stat::number_of_executed_units: (\d+)", log)
    cov = _stat(r"cov: (\d+) ft: (\d+) corp: (\d+)", log)
    coverage = f"cov {cov[0]} ft {cov[1]} corpus {cov[2]}" if isinstance(cov, tuple) else "cov ?"
    slowest = _stat(r"stat::slowest_unit_time_sec: +(\d+)", log)
    rss = _stat(r"stat::peak_rss_mb: +(\d+)", log)
    ok = done.returncode == 0 and not found
    summary = (
        f"{target}: {runs} runs in {seconds:.0f} s, {coverage}, slowest input {slowest} s, "
        f"peak RSS {rss} MB, "
        f"{'no findings' if ok else f'FOUND (exit {done.returncode}): ' + ', '.join(map(str, found))}"
    )
    if not ok:
        summary += "\n" + "\n".join(log.splitlines()[-40:])
    return ok, summary


def _replay(path: Path) -> None:
    sys.path[:0] = [str(ROOT / "backend"), str(ROOT)]
    from tests.backend.support import fuzzing

    target = path.name.split("-", 1)[0]
    started = time.monotonic()
    fuzzing.TARGETS[target](path.read_bytes())
    print(f"{path}: {target} passed in {time.monotonic() - started:.2f} s")


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["--worker"]:
        _worker(argv[1], argv[3:] if argv[2:3] == ["--"] else argv[2:])
        return 0
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("targets", nargs="*", help=f"any of {', '.join(TARGETS)} (default: all)")
    parser.add_argument("--seconds", type=int, default=60, help="per target (default 60)")
    parser.add_argument("--seed", type=int, default=20261205)
    parser.add_argument("--timeout", type=int, default=10, help="seconds one input may take (default 10)")
    parser.add_argument("--corpus", type=Path, help="keep the grown corpus here (one folder per target)")
    parser.add_argument("--artifacts", type=Path, default=ROOT / "reports" / "fuzz-findings")
    parser.add_argument("--replay", type=Path, help="run one saved input (named <target>-…) and exit")
    args = parser.parse_args(argv)
    unknown = sorted(set(args.targets) - set(TARGETS))
    if unknown:
        parser.error(f"unknown target(s) {', '.join(unknown)}; choose from {', '.join(TARGETS)}")
    if args.replay:
        _replay(args.replay)
        return 0
    if not (ATHERIS / "atheris").is_dir():
        print(f"atheris is not installed in {ATHERIS} (make bootstrap installs it)", file=sys.stderr)
        return 2
    args.artifacts = args.artifacts.resolve()
    args.corpus = args.corpus.resolve() if args.corpus else None
    failed = False
    with tempfile.TemporaryDirectory(prefix="fuzz-") as workdir:
        for target in args.targets or TARGETS:
            ok, summary = _run(target, args, Path(workdir))
            print(summary, flush=True)
            failed |= not ok
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
