"""What every chain-only verifier answers, and how every ``edgeledger verify`` command exits.

A verification is a list of :class:`Check` (something checked, whether it held, and why); a
:class:`Report` keeps them (or only counts them, for a million-record export) and prints each as one line,
then a summary line that starts with neither PASS nor FAIL (``verified: …`` / ``not verified: …``)::

    PASS <name>: <detail>
    FAIL <name>: <detail>

Exit codes, the same for every command:

    0  verified: every check passed
    1  a check failed (the document, file or archive is not what the chain says)
    2  unusable input: not a readable document of the expected kind
    3  the chain (or the API) could not be asked: unreachable, timed out, or an RPC error

Errors are one line on standard error, never a traceback.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from typing import IO, Any

EXIT_VERIFIED = 0
EXIT_FAILED = 1
EXIT_UNUSABLE = 2
EXIT_UNREACHABLE = 3


class UnusableInput(Exception):
    """The input cannot be read as what the verifier checks (exit code 2)."""


class Unreachable(Exception):
    """The chain's JSON-RPC (or the API) could not be asked (exit code 3)."""


@dataclass(frozen=True, slots=True)
class Check:
    """One thing checked: ``name`` says what kind of check (``leaf 17``, ``vault root``, ``batch``),
    ``subject`` on what where it is not in the name (an archive member's path), ``detail`` why."""

    name: str
    ok: bool
    detail: str = ""
    subject: str = ""

    def line(self) -> str:
        what = f"{self.name} {self.subject}" if self.subject else self.name
        return f"{'PASS' if self.ok else 'FAIL'} {what}" + (f": {self.detail}" if self.detail else "")


@dataclass
class Report:
    """The checks of one verification. ``emit`` sees each check as it is made (to print it at once);
    with ``keep=False`` only the counts are kept (exports of millions of records)."""

    emit: Callable[[Check], None] | None = None
    keep: bool = True
    checks: list[Check] = field(default_factory=list)
    passed: int = 0
    failed: int = 0
    #: on-chain calls made beyond reading the batch (``verifyRecord``, ``verifyLeaf``)
    onchain_calls: int = 0

    def add(self, name: str, ok: bool, detail: str = "", subject: str = "") -> Check:
        check = Check(name, ok, detail, subject)
        if ok:
            self.passed += 1
        else:
            self.failed += 1
        if self.keep:
            self.checks.append(check)
        if self.emit is not None:
            self.emit(check)
        return check

    def extend(self, checks: list[Check]) -> None:
        for check in checks:
            self.add(check.name, check.ok, check.detail, check.subject)

    @property
    def ok(self) -> bool:
        return self.failed == 0 and self.passed > 0

    @property
    def failures(self) -> list[Check]:
        return [c for c in self.checks if not c.ok]

    @property
    def exit_code(self) -> int:
        return EXIT_VERIFIED if self.ok else EXIT_FAILED

    def as_json(self) -> dict[str, Any]:
        return {
            "ok": self.ok,
            "passed": self.passed,
            "failed": self.failed,
            "checks": [asdict(c) for c in self.checks],
        }


def print_check(out: IO[str] | None = None) -> Callable[[Check], None]:
    """An ``emit`` that prints each check's line (to ``out``, default standard output)."""

    def _emit(check: Check) -> None:
        print(check.line(), file=out or sys.stdout, flush=False)

    return _emit


def summary_line(report: Report, verified: str = "verified") -> str:
    calls = f", {report.onchain_calls} on-chain verify calls" if report.onchain_calls else ""
    if report.ok:
        return f"{verified}: {report.passed} checks passed{calls}"
    if report.passed + report.failed == 0:
        return "not verified: nothing to check"
    return f"not verified: {report.failed} of {report.passed + report.failed} checks failed{calls}"


@contextmanager
def exit_codes(err: IO[str] | None = None) -> Iterator[list[int]]:
    """Runs a verification command body: :class:`UnusableInput` becomes exit code 2 and
    :class:`Unreachable` exit code 3, each with one line on standard error. The body appends its own
    exit code (from :attr:`Report.exit_code`) to the yielded list."""
    code: list[int] = []
    try:
        yield code
    except UnusableInput as exc:
        print(f"error: {exc}", file=err or sys.stderr)
        code[:] = [EXIT_UNUSABLE]
    except Unreachable as exc:
        print(f"error: {exc}", file=err or sys.stderr)
        code[:] = [EXIT_UNREACHABLE]


def dump_json(report: Report, out: IO[str] | None = None) -> None:
    print(json.dumps(report.as_json(), indent=1), file=out or sys.stdout)
