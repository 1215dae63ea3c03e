"""Standalone verifier of audit packages: the archive and a JSON-RPC URL, nothing else
(``edgeledger verify package``, also installed as ``edgeledger-verify-package``, see verify/cli.py).

No database, API, settings or build artifacts: it reuses the other chain-only verifiers (verify/delivery.py,
verify/settlement.py, verify/event.py) and the packaged ABIs. Every item gets a line ``PASS``/``FAIL kind
path: detail``; exit codes as in verify/result.py (1 a check failed, 2 an unusable archive, 3 the chain
unreachable).

Checks:

* every file's sha256 is the index's, no file is missing from or added to the index, and what the index
  claims of each file (batch id, root, totals...) is what the file holds;
* batches: anchored on chain and ``isBatchRoot`` true for the manifest's root; the manifest's fields hash
  to the anchored manifest hash; its EIP-712 signature recovers to the stated signer, and that signer is
  the one the ledger had registered for the source when the batch was anchored; per source, each batch's
  prev-hash is the manifest hash of the source's previous batch in the package (the package holds an
  unbroken segment of the chain);
* proofs: every line's leaf, Merkle path, anchored root and ``verifyRecord`` on chain;
* settlements: the published inputs recompute to the payouts, root and total the vault holds (an
  attempt the vault cancelled and replaced by a later one: to its own posting, found in its block);
  each part of a receipt split at a licence boundary counts no more than the proven records delivered
  in its time range (verify/receipt_parts.py);
* releases: each held item is the royalty its period's statement held back, paid by one live release,
  at the period's shares, refunds to the period's merchant (verify/held_items.py);
* periods: the live settlements of a period together charge the card's fee of all their usage, which
  checks the ``prior_usage`` each states (verify/period_fees.py), and the package holds every settlement
  of the period the vault has (the merchant's ``SettlementPosted`` events);
* statements: the issued statement is the one its settlement's inputs give, amount for amount;
* compliance events (erasures, retention purges): leaf, path, anchored root, ``verifyLeaf`` on chain.
"""

from __future__ import annotations

import hashlib
import json
import tarfile
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from edgeledger.ledger.abis import SETTLEMENT_VAULT
from edgeledger.ledger.hashing import ZERO32, bytes32
from edgeledger.ledger.log_ranges import DEFAULT_MAX_BLOCKS
from edgeledger.ledger.vault import PERIOD_MASK, SettlementStatus
from edgeledger.settlement import SettlementError
from edgeledger.settlement.payouts import PayoutInputs
from edgeledger.settlement.statements import context_from_json, merchant_statement_json, parse_receipt_key
from edgeledger.verify.delivery import manifest_of, manifest_problems, verify_document
from edgeledger.verify.event import verify_event_proof
from edgeledger.verify.held_items import Release, Source, release_checks
from edgeledger.verify.period_fees import Member, period_fee_checks
from edgeledger.verify.receipt_parts import Leaf, proven_leaves, receipt_parts_check, receipts_to_prove
from edgeledger.verify.result import Report, UnusableInput
from edgeledger.verify.rpc import (
    Chain,
    Deployment,
    LedgerReader,
    root_bytes,
    topic_hex,
    vault_settlement,
)
from edgeledger.verify.settlement import (
    chain_terms,
    check_document,
    posted_root,
    recompute,
    terms_block_check,
)

FORMAT = "edgeledger-audit-package/v1"


def _claims_batch(document: Mapping[str, Any]) -> dict[str, Any]:
    header = document["batch"]
    manifest = header["manifest"]
    return {
        "batch_id": manifest["batchId"],
        "source_id": manifest["sourceId"],
        "root": manifest["root"],
        "prev_manifest_hash": manifest["prevManifestHash"],
        "manifest_hash": header["manifest_hash"],
        "signer": header["signer"],
        "tx_hash": header["tx_hash"],
        "block_number": header["block_number"],
    }


def _claims_proofs(document: Mapping[str, Any]) -> dict[str, Any]:
    manifest = document["batch"]["manifest"]
    return {
        "batch_id": manifest["batchId"],
        "root": manifest["root"],
        "request_ids": [p["record"]["request_id"] for p in document["proofs"]],
    }


def _claims_settlement(document: Mapping[str, Any]) -> dict[str, Any]:
    keys = ("settlement_id", "period_id", "merchant", "token", "root", "total", "inputs_digest")
    return {key: document[key] for key in keys}


def _claims_statement(document: Mapping[str, Any]) -> dict[str, Any]:
    return {
        "settlement_id": document["settlement_id"],
        "root": document["root"],
        "charge": document["charge"]["minor"],
        "paid_total": document["paid_total"]["minor"],
        "payees": {p["payee"]: p["amount"]["minor"] for p in document["payees"]},
    }


def _claims_cases(document: Any) -> dict[str, Any]:
    return {"cases": [{"id": c["id"], "state": c["state"], "adjustment": c["adjustment"]} for c in document]}


def _claims_event(document: Mapping[str, Any]) -> dict[str, Any]:
    event = document["event"]
    return {
        "event_id": event["event_id"],
        "action": event["action"],
        "batch_id": document["batch_id"],
        "root": document["root"],
    }


CLAIMS: dict[str, Callable[[Any], dict[str, Any]]] = {
    "batch": _claims_batch,
    "proofs": _claims_proofs,
    "settlement_inputs": _claims_settlement,
    "statement": _claims_statement,
    "cases": _claims_cases,
    "compliance_event": _claims_event,
}


def claims_of(kind: str, document: Any) -> dict[str, Any]:
    """What the index says a file of ``kind`` holds (the package builder writes it, the verifier checks
    it): the few facts an auditor reads in ``package.json`` before opening the file."""
    try:
        return CLAIMS[kind](document)
    except (KeyError, TypeError, IndexError) as exc:
        raise UnusableInput(f"a {kind} file without the fields its claims are made of ({exc!r})") from None


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
    def __init__(
        self,
        files: dict[str, bytes],
        rpc_url: str,
        report: Report | None = None,
        *,
        logs_max_blocks: int = DEFAULT_MAX_BLOCKS,
        deployment: Deployment | None = None,
    ) -> None:
        if "package.json" not in files:
            raise UnusableInput("the archive has no package.json index")
        self.files = files
        self.index = _json(files["package.json"], "package.json")
        if self.index.get("format") != FORMAT:
            raise UnusableInput(f"package.json is not {FORMAT}")
        contracts = dict(self.index.get("contracts") or {})
        self.report = report if report is not None else Report()
        #: the auditor's own deployment file: its addresses are the ones read, whatever the package says
        self.deployment = deployment
        if deployment is not None:
            self._pinned_contracts(contracts, deployment)
            contracts.update(deployment.addresses)
        if "DeliveryLedger" not in contracts:
            raise UnusableInput("package.json names no DeliveryLedger contract")
        self.chain = Chain(rpc_url, logs_max_blocks=logs_max_blocks)
        if deployment is not None:  # the RPC must serve its chain; its blocks spare searches
            deployment.pin(self.chain)
        self.ledger = LedgerReader(self.chain, contracts["DeliveryLedger"])
        self.vault = contracts.get("SettlementVault")
        self.registry = contracts.get("ContentRegistry")
        #: paths whose bytes match the index (only those are read)
        self.intact: set[str] = set()
        #: batch ids whose batch item passed; the settlements' receipts must name only these
        self.proven_batches: set[str] = set()
        self.settled_batches: dict[str, set[str]] = {}
        #: the periods' and corrections' settlements, for the period fee check
        self.period_members: list[Member] = []
        #: the manifests of the batches that passed, by batch id
        self.manifests: dict[str, Mapping[str, Any]] = {}
        #: periods' and corrections' settlements by id, and the releases of their held royalties
        self.sources: dict[str, Source] = {}
        self.releases: list[Release] = []
        #: (vault, merchant) -> vault id -> the roots of the package's settlement documents
        self.doc_roots: dict[tuple[str, str], dict[int, set[bytes]]] = {}
        self._posting_cache: dict[tuple[str, str], dict[int, list[tuple[bytes, int]]]] = {}
        #: the records of the proofs files whose proofs passed (verify/receipt_parts.py)
        self.leaves: dict[tuple[Any, ...], Leaf] = {}

    def _record(self, kind: str, path: str, ok: bool, detail: str) -> None:
        self.report.add(kind, ok, detail, subject=path)

    def _pinned_contracts(self, stated: Mapping[str, Any], deployment: Deployment) -> None:
        """The package's contract addresses against the auditor's deployment file: a package naming
        other contracts (look-alikes a dishonest operator deployed) fails here, and only the
        deployment's are read."""
        for name in ("DeliveryLedger", "SettlementVault", "ContentRegistry"):
            said = stated.get(name)
            if name in deployment.addresses and said is not None:
                self._record("contracts", name, *deployment.names(name, said, "the package"))

    def _pinned(self, document: Mapping[str, Any], key: str, name: str, fallback: str | None) -> str | None:
        """The address a settlement document names for ``key`` (``vault``, ``registry``); with a
        deployment file, the deployment's, and a document naming another raises UnusableInput."""
        said = document.get(key)
        if self.deployment is None:
            return said if isinstance(said, str) else fallback
        pinned = self.deployment.addresses.get(name)
        if pinned is None:  # only the deployment's contracts are read, never the document's
            raise UnusableInput(f"the deployment file names no {name}")
        if isinstance(said, str) and said.lower() != pinned.lower():
            raise UnusableInput(f"the document names {name} {said}, the deployment file {pinned}")
        return pinned

    def run(self) -> Report:
        stated_chain = self.index.get("chain_id")
        if stated_chain is not None and stated_chain != self.chain.chain_id():
            raise UnusableInput(
                f"the package is for chain {stated_chain}, the RPC serves {self.chain.chain_id()}"
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
            "statement": self._statement,
            "compliance_event": self._compliance_event,
        }
        self.intact = {item["path"] for item in intact}
        batches: list[tuple[str, Any]] = []
        for item in intact:
            path, kind = item["path"], item["kind"]
            document = _json(self.files[path], path)
            if kind in CLAIMS and item.get("claims") != claims_of(kind, document):
                differing = sorted(
                    k for k, v in claims_of(kind, document).items() if (item.get("claims") or {}).get(k) != v
                )
                detail = "the index claims other " + (", ".join(differing) or "fields") + " than the file"
                self._record("index", path, False, detail)
            if kind == "batch":
                batches.append((path, document))
            check = checks.get(kind)
            if check is not None:
                check(path, document)
            else:
                self._record(kind, path, True, "sha256 matches the index")
        self._chain_links(batches)
        self._settlement_receipts()
        self._receipt_parts()
        self._period_fees()
        for release in release_checks(self.releases, self.sources):
            self._record(release.name, release.subject, release.ok, release.detail)
        return self.report

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
        root = bytes.fromhex(str(manifest["root"]).removeprefix("0x"))
        if len(root) != 32 or not self.ledger.is_batch_root(batch_id, root):
            problems.append("isBatchRoot is false: the chain anchors another root")
        registered = self.ledger.signer_at(onchain.source_id, onchain.block_number, onchain.log_index)
        signer = header.get("signer")
        if not isinstance(header.get("signature"), str) or not isinstance(signer, str):
            problems.append("the manifest has no signature")
        elif registered is None or registered.lower() != signer.lower():
            problems.append(f"signed by {signer}, the ledger's signer of the source was {registered}")
        detail = (
            "; ".join(problems)
            or f"anchored in block {onchain.block_number}, root, manifest hash and the source's registered "
            f"signer {registered} match"
        )
        self._record("batch", path, not problems, detail)
        if not problems:
            self.proven_batches.add(str(manifest["batchId"]).lower())
            self.manifests[str(manifest["batchId"]).lower()] = manifest

    def _chain_links(self, batches: list[tuple[str, Any]]) -> None:
        """Per source, the batches must form one unbroken run of prev-hash links: each batch's
        ``prevManifestHash`` is the manifest hash (recomputed from the fields) of another batch in the
        package, except for the first one, and no two batches follow the same one."""
        by_source: dict[str, list[tuple[str, Mapping[str, Any]]]] = {}
        for path, document in batches:
            manifest = document["batch"]["manifest"]
            by_source.setdefault(str(manifest["sourceId"]).lower(), []).append((path, manifest))
        for source_id, members in sorted(by_source.items()):
            hashes = {_manifest_hash(manifest) for _, manifest in members}
            prevs = [str(manifest["prevManifestHash"]).lower() for _, manifest in members]
            starts = sorted(
                path for (path, _), prev in zip(members, prevs, strict=True) if prev not in hashes
            )
            forks = sorted({prev for prev in prevs if prevs.count(prev) > 1})
            problems = []
            if not starts:
                problems.append("no first batch: the links form a cycle")
            elif len(starts) > 1:
                problems.append(f"{len(starts)} runs instead of one: a gap before " + ", ".join(starts[1:]))
            if forks:
                problems.append("batches following the same manifest: " + ", ".join(forks))
            detail = "; ".join(problems) or f"{len(members)} batches, {len(members) - 1} prev-hash links"
            self._record("manifest chain", source_id, not problems, detail)

    def _proofs(self, path: str, document: Any) -> None:
        summary = verify_document(document, self.ledger)
        failures = [check.line() for check in summary.failures]
        detail = f"{summary.passed} lines proven on chain" if summary.ok else "; ".join(failures)[:500]
        self._record("proofs", path, summary.ok, detail)
        self.leaves.update(proven_leaves(document, summary.checks))

    def _settlement(self, path: str, document: Any) -> None:
        try:
            # A release of held royalties pays items of its period's statement, not receipts.
            receipts = [] if document.get("kind") == "release" else document["inputs"]["receipts"]
            keys = [receipt["key"] for receipt in receipts]
            self.settled_batches[path] = {parse_receipt_key(key).batch_id.lower() for key in keys}
        except (KeyError, TypeError, SettlementError) as exc:
            self._record("settlement", path, False, f"unreadable receipts: {exc!r}")
            return
        try:
            vault = self._pinned(document, "vault", "SettlementVault", self.vault)
        except UnusableInput as exc:
            self._record("settlement", path, False, str(exc))
            return
        if not isinstance(vault, str):
            self._record("settlement", path, False, "neither the document nor the index names a vault")
            return
        try:
            on_chain = vault_settlement(
                self.chain,
                vault,
                int(document["period_id"]),
                document["merchant"],
                self._posted_block(vault, document),
                document.get("root"),
            )
            inputs, statement, _ = recompute(document)
            terms = None
            if inputs.terms_block is not None:
                registry = self._pinned(document, "registry", "ContentRegistry", self.registry)
                if not isinstance(registry, str):
                    raise UnusableInput("the document names no registry to read its terms from")
                terms = chain_terms(self.chain, registry, inputs)
            checks = check_document(document, on_chain, terms)
            checks.append(terms_block_check(self.chain, document, inputs))
        except (UnusableInput, KeyError, TypeError, ValueError) as exc:
            self._record("settlement", path, False, str(exc))
            return
        failed = [f"{c.name}: {c.detail}" for c in checks if not c.ok]
        detail = "; ".join(failed) or f"{len(checks)} checks: payouts, root and total as in the vault"
        self._record("settlement", path, not failed, detail)
        merchant, period_id = str(document["merchant"]).lower(), int(document["period_id"])
        roots = self.doc_roots.setdefault((vault.lower(), merchant), {}).setdefault(period_id, set())
        root = root_bytes(document.get("root"))
        if root is not None:
            roots.add(root)
        if not isinstance(inputs, PayoutInputs):  # a release of held royalties
            self.releases.append(
                Release(path, merchant, on_chain.status != SettlementStatus.CANCELLED, inputs)
            )
        else:  # a period or a correction: it counts usage
            self.sources[str(document.get("settlement_id"))] = Source(merchant, inputs, statement)
            live = document.get("root") is None or on_chain.status != SettlementStatus.CANCELLED
            member = Member(
                path,
                merchant,
                period_id & PERIOD_MASK,
                live,
                inputs,
                statement,
                frozenset(self.settled_batches[path]),
            )
            self.period_members.append(member)

    def _period_fees(self) -> None:
        """The period's live settlements charge what all their usage costs (verify/period_fees.py), and
        the package holds every root the vault was given for its periods (:meth:`_left_out`)."""
        for check in period_fee_checks(self.period_members):
            self._record(check.name, check.subject, check.ok, check.detail)
        for (vault, merchant), roots in sorted(self.doc_roots.items()):
            try:
                postings = self._postings(vault, merchant)
                in_scope = self._in_scope(vault)
            except UnusableInput as exc:
                self._record("period settlements", merchant, False, str(exc))
                continue
            bases = {i & PERIOD_MASK for i in roots} | {i & PERIOD_MASK for i in postings if in_scope(i)}
            for base in sorted(bases):
                missing = self._left_out(postings, roots, base)
                known = sum(len(r) for i, r in roots.items() if i & PERIOD_MASK == base)
                detail = (
                    "the vault holds roots of the period the package leaves out: " + ", ".join(missing)
                    if missing
                    else f"the package holds each of the {known} root(s) the vault was given for the period"
                )
                self._record("period settlements", f"{merchant} period {base}", not missing, detail)

    @staticmethod
    def _left_out(
        postings: dict[int, list[tuple[bytes, int]]], roots: dict[int, set[bytes]], base: int
    ) -> list[str]:
        """Every root the vault was given under an id of the period (each attempt, correction and release,
        cancelled ones included) that no document of the package carries."""
        return [
            f"id {period_id} root 0x{root.hex()} (block {block})"
            for period_id, posted in sorted(postings.items())
            if period_id & PERIOD_MASK == base
            for root, block in posted
            if root not in roots.get(period_id, set())
        ]

    def _in_scope(self, vault: str) -> Callable[[int], bool]:
        """Whether a vault id's period starts within the package's scope (a merchant's package holds all
        of them); without a merchant scope, none is required."""
        scope = self.index.get("scope") or {}
        start, end = scope.get("period_start"), scope.get("period_end")
        if not isinstance(start, int) or not isinstance(end, int) or scope.get("merchant_user_id") is None:
            return lambda _period_id: False
        contract = self.chain.contract(SETTLEMENT_VAULT, vault)
        seconds = int(self.chain.ask("PERIOD_SECONDS", contract.functions.PERIOD_SECONDS().call))
        return lambda period_id: start <= (period_id & PERIOD_MASK) * seconds < end

    def _postings(self, vault: str, merchant: str) -> dict[int, list[tuple[bytes, int]]]:
        """Every root the vault was given for ``merchant``, per vault id, with its block: the merchant's
        ``SettlementPosted`` events (the merchant is an indexed topic) since the vault's deployment, read
        once per (vault, merchant)."""
        key = (vault.lower(), merchant.lower())
        if key not in self._posting_cache:
            contract = self.chain.contract(SETTLEMENT_VAULT, vault)
            latest = int(self.chain.ask("eth_blockNumber", lambda: self.chain.w3.eth.block_number))
            first = self.chain.deployment_block(vault, latest)
            topics = [
                topic_hex(contract, "SettlementPosted"),
                None,
                "0x" + merchant.lower().removeprefix("0x").rjust(64, "0"),
            ]
            posted = contract.events.SettlementPosted()
            found: dict[int, list[tuple[bytes, int]]] = {}
            for log in self.chain.logs(contract, topics, first, latest):
                args = posted.process_log(log)["args"]
                found.setdefault(int(args["periodId"]), []).append(
                    (bytes(args["root"]), int(log["blockNumber"]))
                )
            self._posting_cache[key] = found
        return self._posting_cache[key]

    def _posted_block(self, vault: str, document: Mapping[str, Any]) -> Any:
        """The document's ``posted_block``; when it names none (a posting the server adopted without
        recording its block), the block of the vault's posting of the document's root, if any."""
        stated = document.get("posted_block")
        wanted = root_bytes(document.get("root"))
        if stated is not None or wanted is None:
            return stated
        try:
            postings = self._postings(vault, str(document["merchant"]))
        except KeyError:
            return None
        blocks = [block for r, block in postings.get(int(document["period_id"]), []) if r == wanted]
        return max(blocks) if blocks else None

    def _receipts_against_batches(self, member: Member) -> list[str]:
        """What a settlement's receipts say of each proven batch they name, against the batch: its source's
        registered operator is paid, its period is the settlement's, and they count no more requests or
        bytes than its signed manifest's totals."""
        sums: dict[str, list[int]] = {}
        problems: list[str] = []
        for receipt in member.inputs.receipts:
            batch_id = parse_receipt_key(receipt.key).batch_id.lower()
            manifest = self.manifests.get(batch_id)
            if manifest is None:
                continue  # not proven: the settlement receipts line fails it
            counts = sums.setdefault(batch_id, [0, 0])
            counts[0] += receipt.requests
            counts[1] += receipt.bytes
            operator = self.ledger.operator_of(bytes32(str(manifest["sourceId"])))
            if receipt.operator.lower() != operator:
                problems.append(f"{receipt.key} pays {receipt.operator}, the source's operator is {operator}")
        for batch_id, (requests, nbytes) in sorted(sums.items()):
            manifest = self.manifests[batch_id]
            if int(manifest["periodStart"]) != member.inputs.period_start:
                problems.append(f"batch {batch_id} is of period {manifest['periodStart']}")
            if requests > int(manifest["totalRequests"]) or nbytes > int(manifest["totalBytes"]):
                problems.append(
                    f"batch {batch_id}: {requests} requests and {nbytes} bytes counted, its manifest signs "
                    f"{manifest['totalRequests']} and {manifest['totalBytes']}"
                )
        return problems

    def _settlement_receipts(self) -> None:
        """A settlement counts only anchored deliveries: every batch its receipts name must be in the
        package and pass its batch check, and the receipts must agree with the batch
        (:meth:`_receipts_against_batches`)."""
        checked = {member.subject: member for member in self.period_members}
        for path, batch_ids in sorted(self.settled_batches.items()):
            member = checked.get(path)
            if member is not None:
                try:
                    problems = self._receipts_against_batches(member)
                except (SettlementError, KeyError, TypeError, ValueError) as exc:
                    problems = [f"unreadable receipts or manifest: {exc!r}"]
                if problems:
                    self._record("settlement receipts", path, False, "; ".join(problems)[:800])
                    continue
            missing = sorted(batch_ids - self.proven_batches)
            detail = (
                f"receipts name batches not proven in this package: {', '.join(missing)}"
                if missing
                else f"receipts name {len(batch_ids)} batches, each anchored and in the package"
                + (
                    ", paying its source's operator, within its manifest's totals"
                    if member is not None
                    else ""
                )
            )
            self._record("settlement receipts", path, not missing, detail)

    def _receipt_parts(self) -> None:
        """Each settlement that splits a receipt at a licence boundary: every part within the proven
        records of its time range (verify/receipt_parts.py), of the hosts the index names as the
        merchant's (a package naming none fails), every split receipt within the package's cap proven."""
        named = self.index.get("merchant_hosts")
        hosts = [str(h) for h in named] if isinstance(named, list) else None
        to_prove = receipts_to_prove(member.inputs for member in self.period_members)
        for member in self.period_members:
            check = receipt_parts_check(member.subject, member.inputs, self.leaves.values(), hosts, to_prove)
            if check is not None:
                self._record(check.name, check.subject, check.ok, check.detail)

    def _statement(self, path: str, document: Any) -> None:
        """The issued statement must be the one its settlement's inputs give (rendered by the same code)."""
        inputs_path = path.rsplit("/", 1)[0] + "/inputs.json"
        if inputs_path not in self.intact:
            self._record("statement", path, False, f"no intact {inputs_path} to recompute it from")
            return
        inputs = _json(self.files[inputs_path], inputs_path)
        try:
            _, statement, tree = recompute(inputs)
            root = posted_root(inputs, statement, tree)
            expected = merchant_statement_json(statement, context_from_json(document))
        except UnusableInput as exc:
            self._record("statement", path, False, str(exc))
            return
        except SettlementError as exc:
            self._record("statement", path, False, exc.message)
            return
        differing = sorted(k for k in expected.keys() | document.keys() if expected.get(k) != document.get(k))
        if document.get("root") != root:
            differing.append("root (not the recomputed payout root)")
        detail = (
            "differs from the statement its inputs give in: " + ", ".join(differing)
            if differing
            else f"{len(statement.payees)} payees, charge {statement.charge}: as recomputed from the inputs"
        )
        self._record("statement", path, not differing, detail)

    def _compliance_event(self, path: str, document: Any) -> None:
        checks = verify_event_proof(document, self.ledger)
        failed = [f"{c.name}: {c.detail}" for c in checks if not c.ok]
        action = document.get("event", {}).get("action", "event")
        detail = "; ".join(failed) or f"{action} event proven on chain"
        self._record(f"compliance {action}", path, not failed, detail)


def _manifest_hash(manifest: Mapping[str, Any]) -> str:
    try:
        return manifest_of({"manifest": manifest}).struct_hash()
    except UnusableInput:
        return ZERO32  # an unreadable manifest links to nothing (its batch item says why)


def verify_archive(
    path: Path,
    rpc_url: str,
    report: Report | None = None,
    *,
    logs_max_blocks: int = DEFAULT_MAX_BLOCKS,
    deployment: Deployment | None = None,
) -> Report:
    """Every check of the archive at ``path`` against the chain at ``rpc_url`` (log searches in pieces of
    at most ``logs_max_blocks`` blocks); with the auditor's ``deployment`` file, against its contracts
    only (the package's are compared with them)."""
    files = read_archive(path)
    return Verifier(files, rpc_url, report, logs_max_blocks=logs_max_blocks, deployment=deployment).run()
