"""Writes the ABI of every project contract (contracts/**.sol) from brownie's build artifacts into the
package data of ``edgeledger.ledger`` (``backend/edgeledger/ledger/abi/<Contract>.json``), so the API, the
worker and the chain-only verifiers share one ABI and none is written by hand. Run by ``make compile``;
``--check`` exits 1 when the packaged ABIs differ from what the contracts compile to (used by the tests).

    python scripts/export_abis.py [--check] [BUILD_DIR]
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PACKAGE_ABI_DIR = ROOT / "backend" / "edgeledger" / "ledger" / "abi"


def compiled_abis(build_dir: Path) -> dict[str, str]:
    """{contract name: canonical ABI JSON} of the deployable contracts whose source is in contracts/."""
    abis = {}
    for artifact in sorted(build_dir.glob("*.json")):
        data = json.loads(artifact.read_text())
        if not str(data.get("sourcePath", "")).startswith("contracts/") or data.get("type") != "contract":
            continue
        if not data.get("bytecode"):  # abstract building blocks (contracts/vault/) are part of a contract
            continue
        abis[data["contractName"]] = json.dumps(data["abi"], indent=1, sort_keys=True) + "\n"
    return abis


def packaged_abis() -> dict[str, str]:
    return {path.stem: path.read_text() for path in sorted(PACKAGE_ABI_DIR.glob("*.json"))}


def main(argv: list[str]) -> int:
    check = "--check" in argv
    args = [a for a in argv if a != "--check"]
    build_dir = Path(args[0]) if args else ROOT / "build" / "contracts"
    compiled = compiled_abis(build_dir)
    if not compiled:
        print(f"no project contracts in {build_dir}: run `make compile` first", file=sys.stderr)
        return 2
    if check:
        packaged = packaged_abis()
        differing = sorted(n for n in compiled.keys() | packaged.keys() if compiled.get(n) != packaged.get(n))
        if differing:
            print(
                f"packaged ABIs differ from the compiled contracts: {', '.join(differing)}", file=sys.stderr
            )
            print(
                "run `make compile` (it rewrites backend/edgeledger/ledger/abi/) and commit", file=sys.stderr
            )
            return 1
        return 0
    PACKAGE_ABI_DIR.mkdir(parents=True, exist_ok=True)
    for stale in set(packaged_abis()) - set(compiled):
        (PACKAGE_ABI_DIR / f"{stale}.json").unlink()
    for name, text in compiled.items():
        target = PACKAGE_ABI_DIR / f"{name}.json"
        if not target.is_file() or target.read_text() != text:
            target.write_text(text)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
