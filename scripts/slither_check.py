"""Runs Slither on contracts/ and fails on any high or medium finding that contracts/slither-triage.json
does not accept (with its reason). Slither runs from its own virtualenv (.toolchain/slither) and drives the
project's solc through ``--standard-json``.

    python scripts/slither_check.py          # exit 0: no untriaged finding; 1: some; 2: Slither failed
"""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SLITHER = ROOT / ".toolchain" / "slither" / "bin" / "slither"
TRIAGE = ROOT / "contracts" / "slither-triage.json"


def _key(result: dict) -> tuple[str, str, str]:
    first = result["elements"][0]
    parent = first.get("type_specific_fields", {}).get("parent", {})
    contract = parent.get("name") if parent.get("type") == "contract" else None
    if contract is None:  # a local variable: its function's contract
        contract = parent.get("type_specific_fields", {}).get("parent", {}).get("name", "")
    return result["check"], contract, first["name"]


def main() -> int:
    with tempfile.TemporaryDirectory() as tmp:
        report = Path(tmp) / "slither.json"
        command = [
            str(SLITHER),
            "contracts/",
            "--solc-standard-json",
            "--solc-remaps",
            "@openzeppelin/=node_modules/@openzeppelin/",
            "--solc-args",
            "--evm-version cancun",
            "--filter-paths",
            "node_modules|contracts/test",
            "--exclude-informational",
            "--exclude-low",
            "--exclude-optimization",
            "--json",
            str(report),
        ]
        done = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, check=False)
        if not report.exists():
            print(done.stdout[-3000:], done.stderr[-3000:], sep="\n", file=sys.stderr)
            return 2
        output = json.loads(report.read_text())
    if not output.get("success"):
        print(f"slither failed: {output.get('error')}", file=sys.stderr)
        return 2
    accepted = {(a["check"], a["contract"], a["element"]) for a in json.loads(TRIAGE.read_text())["accepted"]}
    findings = output["results"].get("detectors", [])
    open_findings = []
    for result in findings:
        key = _key(result)
        status = "accepted" if key in accepted else "OPEN"
        print(f"{status:<8} {result['impact']:<6} {key[0]:<22} {key[1]}.{key[2]}")
        if key not in accepted:
            open_findings.append(result["description"].strip())
    triage = TRIAGE.relative_to(ROOT)
    print(f"slither: {len(findings)} high/medium findings, {len(open_findings)} not in {triage}")
    for description in open_findings:
        print(f"\n{description}")
    return 1 if open_findings else 0


if __name__ == "__main__":
    raise SystemExit(main())
