"""Standalone verifier of audit packages: the archive and a JSON-RPC URL, nothing else.

No database, API, settings or build artifacts: the few contract views it calls are declared in the
chain-only verifiers it reuses (deliveries/verify.py, settlement/verify.py, compliance/verify.py).
Every item gets a line ``PASS``/``FAIL kind path: detail``; any failure means exit code 1, an unusable
archive or RPC exit code 2.

Checks:

* every file's sha256 is the index's, and no file is missing from or added to the index;
* batches: anchored on chain with the same root; the manifest's fields hash to the anchored manifest
  hash and its EIP-712 signature recovers to the stated signer; per source, each batch's prev-hash is
  the manifest hash of the source's previous batch in the package (the package holds an unbroken
  segment of the chain);
* proofs: every line's leaf, Merkle path, anchored root and ``verifyRecord`` on chain;
* settlements: the published inputs recompute to the payouts, root and total the vault holds;
* compliance events (erasures, retention purges): leaf, path, anchored root, ``verifyLeaf`` on chain.
"""

from __future__ import annotations

import hashlib
import io
import json
import sys
import tarfile
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass
from itertools import pairwise
from pathlib import Path
from typing import Any

from edgeledger.compliance.verify import verify_event_proof
from edgeledger.deliveries.verify import Ledger, UnusableInput, manifest_problems, verify_document

FORMAT = "edgeledger-audit-package/v1"
ZERO32 = "0x" + "00" * 32


@dataclass(frozen=True)
class ItemResult:
    kind: str
    path: str
    ok: bool
    detail: str


def read_archive(path: Path) -> dict[str, bytes]:
    try:
        with tarfile.open(path, mode="r:gz") as tar:
            files = {}
            for member in tar.getmembers():
                if not member.isfile():
                    raise UnusableInput(f"{member.name}: only regular files belong in a package")
                handle = tar.extractfile(member)
                assert handle is not None
                files[member.name] = handle.read()
            return files
    except (OSError, tarfile.TarError) as exc:
        raise UnusableInput(f"{path}: not a readable tar.gz archive ({exc})") from None


def _json(data: bytes, path: str) -> Any:
    try:
        return json.loads(data)
    except ValueError as exc:
        raise UnusableInput(f"{path}: not JSON ({exc})") from None


class Verifier:
    def __init__(self, files: dict[str, bytes], rpc_url: str) -> None:
        if "package.json" not in files:
            raise UnusableInput("the archive has no package.json index")
        self.files = files
        self.index = _json(files["package.json"], "package.json")
        if self.index.get("format") != FORMAT:
            raise UnusableInput(f"package.json is not {FORMAT}")
        self.rpc_url = rpc_url
        contracts = self.index.get("contracts") or {}
        if "DeliveryLedger" not in contracts:
            raise UnusableInput("package.json names no DeliveryLedger contract")
        self.ledger = Ledger(rpc_url, contracts["DeliveryLedger"])
        self.vault = contracts.get("SettlementVault")
        self.results: list[ItemResult] = []

    def _record(self, kind: str, path: str, ok: bool, detail: str) -> None:
        self.results.append(ItemResult(kind, path, ok, detail))

    def run(self) -> list[ItemResult]:
        self.ledger.check_code()
        stated_chain = self.index.get("chain_id")
        if stated_chain is not None and stated_chain != self.ledger.chain_id():
            raise UnusableInput(
                f"the package is for chain {stated_chain}, the RPC serves {self.ledger.chain_id()}"
            )
        items = self.index.get("items") or []
        listed = {item["path"] for item in items}
        for path in sorted(set(self.files) - listed - {"package.json"}):
            self._record("file", path, False, "in the archive but not in the index")
        intact: list[Mapping[str, Any]] = []
        for item in items:
            data = self.files.get(item["path"])
            if data is None:
                self._record("file", item["path"], False, "listed in the index but missing")
            elif hashlib.sha256(data).hexdigest() != item["sha256"]:
                self._record("file", item["path"], False, "sha256 differs from the index")
            else:
                intact.append(item)
        checks: dict[str, Callable[[str, Any], None]] = {
            "batch": self._batch,
            "proofs": self._proofs,
            "settlement_inputs": self._settlement,
            "compliance_event": self._compliance_event,
        }
        batches: list[tuple[str, Any]] = []
        for item in intact:
            path, kind = item["path"], item["kind"]
            document = _json(self.files[path], path)
            if kind == "batch":
                batches.append((path, document))
            check = checks.get(kind)
            if check is not None:
                check(path, document)
            else:
                self._record(kind, path, True, "sha256 matches the index")
        self._chain_links(batches)
        return self.results

    # --- items ---------------------------------------------------------------------------------

    def _batch(self, path: str, document: Any) -> None:
        header = document["batch"]
        manifest = header["manifest"]
        batch_id = bytes.fromhex(manifest["batchId"][2:])
        onchain = self.ledger.batch(batch_id, header.get("block_number"))
        if onchain is None:
            self._record("batch", path, False, "not anchored on chain")
            return
        problems = manifest_problems(header, self.ledger, onchain)
        if "0x" + onchain.root.hex() != manifest["root"]:
            problems.append("the chain anchors another root")
        detail = (
            "; ".join(problems) or f"anchored in block {onchain.block_number}, manifest and signature match"
        )
        self._record("batch", path, not problems, detail)

    def _chain_links(self, batches: list[tuple[str, Any]]) -> None:
        by_source: dict[str, list[tuple[int, str, Any]]] = {}
        for path, document in batches:
            header = document["batch"]
            by_source.setdefault(header["manifest"]["sourceId"], []).append(
                (header.get("block_number") or 0, path, header)
            )
        for source_id, chain in by_source.items():
            chain.sort(key=lambda item: item[0])
            broken = [
                path
                for (_, _, previous), (_, path, current) in pairwise(chain)
                if current["manifest"]["prevManifestHash"] != previous["manifest_hash"]
            ]
            detail = f"{len(chain)} batches, {len(chain) - 1} prev-hash links"
            if broken:
                detail = "prev-hash link broken at " + ", ".join(broken)
            self._record("manifest chain", source_id, not broken, detail)

    def _proofs(self, path: str, document: Any) -> None:
        lines: list[str] = []
        summary = verify_document(document, self.ledger, emit=lines.append)
        failures = [line for line in lines if line.startswith("FAIL")]
        detail = f"{summary.passed} lines proven on chain" if summary.ok else "; ".join(failures)[:500]
        self._record("proofs", path, summary.ok, detail)

    def _settlement(self, path: str, document: Any) -> None:
        from edgeledger.settlement import SettlementError
        from edgeledger.settlement.verify import check_document, vault_settlement

        vault = document.get("vault") or self.vault
        try:
            on_chain = vault_settlement(self.rpc_url, vault, int(document["period_id"]), document["merchant"])
            checks = check_document(document, on_chain)
        except SettlementError as exc:
            self._record("settlement", path, False, exc.message)
            return
        failed = [f"{c.name}: {c.detail}" for c in checks if not c.ok]
        detail = "; ".join(failed) or f"{len(checks)} checks: payouts, root and total as in the vault"
        self._record("settlement", path, not failed, detail)

    def _compliance_event(self, path: str, document: Any) -> None:
        checks = verify_event_proof(document, self.ledger)
        failed = [f"{c.name}: {c.detail}" for c in checks if not c.ok]
        action = document.get("event", {}).get("action", "event")
        detail = "; ".join(failed) or f"{action} event proven on chain"
        self._record(f"compliance {action}", path, not failed, detail)


def verify_archive(path: Path, rpc_url: str) -> list[ItemResult]:
    return Verifier(read_archive(path), rpc_url).run()


def main(argv: list[str] | None = None) -> int:
    """``edgeledger-verify-package ARCHIVE --rpc-url URL [--json]``."""
    import argparse

    parser = argparse.ArgumentParser(
        prog="edgeledger-verify-package", description="Verify an EdgeLedger audit package against the chain."
    )
    parser.add_argument("archive", type=Path)
    parser.add_argument("--rpc-url", required=True)
    parser.add_argument("--json", action="store_true", help="print the results as JSON")
    args = parser.parse_args(argv)
    return report(args.archive, args.rpc_url, as_json=args.json, out=sys.stdout)


def report(archive: Path, rpc_url: str, *, as_json: bool, out: io.TextIOBase | Any) -> int:
    try:
        results = verify_archive(archive, rpc_url)
    except UnusableInput as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except Exception as exc:  # the RPC transport's own errors
        print(f"error: cannot verify: {type(exc).__name__}: {exc}", file=sys.stderr)
        return 2
    ok = bool(results) and all(r.ok for r in results)
    if as_json:
        print(json.dumps({"ok": ok, "items": [asdict(r) for r in results]}, indent=1), file=out)
    else:
        for r in results:
            print(f"{'PASS' if r.ok else 'FAIL'}  {r.kind:<22} {r.path}: {r.detail}", file=out)
        passed = sum(r.ok for r in results)
        print(f"{passed} of {len(results)} items pass" + ("" if ok else " - FAILED"), file=out)
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
