"""``edgeledger verify asset|delivery|settlement|event|package``: every chain-only verifier behind one
command family, one output and one exit-code convention (verify/result.py):

    0 verified   1 a check failed   2 unusable input   3 the chain could not be asked

Each prints one ``PASS``/``FAIL`` line per check and a summary line (``--json``: one JSON document
instead); errors are one line on standard error. The ``run_*`` functions are what the commands (and the
older command names kept as aliases) call.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Annotated, Any

import typer

from edgeledger.ledger.abis import CONTENT_REGISTRY, DELIVERY_LEDGER, SETTLEMENT_VAULT
from edgeledger.ledger.log_ranges import DEFAULT_MAX_BLOCKS
from edgeledger.verify.result import (
    Check,
    Report,
    UnusableInput,
    dump_json,
    exit_codes,
    print_check,
    summary_line,
)
from edgeledger.verify.rpc import Chain, Deployment, LedgerReader, vault_settlement

app = typer.Typer(
    help="Verify files, proofs, exports, settlements, compliance events and audit packages against the "
    "chain alone (no API, no database). Exit codes: 0 verified, 1 a check failed, 2 unusable input, "
    "3 chain unreachable.",
    no_args_is_help=True,
)

RpcUrl = Annotated[str, typer.Option("--rpc-url", envvar="ETH_RPC_URL", help="Chain JSON-RPC endpoint")]
LogsMaxBlocks = Annotated[
    int,
    typer.Option(
        "--logs-max-blocks",
        envvar="ETH_LOGS_MAX_BLOCKS",
        min=0,
        help="Blocks per eth_getLogs query of a longer search, halved while the RPC refuses a query as "
        "too large (providers cap the range); 0: no limit",
    ),
]
AsJson = Annotated[bool, typer.Option("--json", help="One JSON document instead of PASS/FAIL lines")]
LedgerAddress = Annotated[str | None, typer.Option(help="DeliveryLedger address; default the document's")]

#: Exports with at least this many records get a progress bar on standard error.
PROGRESS_FROM = 10_000


def _report(as_json: bool, *, keep: bool = True) -> Report:
    return Report(emit=None if as_json else print_check(), keep=keep or as_json)


def _finish(report: Report, as_json: bool, verified: str, extra: dict[str, Any] | None = None) -> int:
    if as_json:
        if extra:
            print(json.dumps({**report.as_json(), **extra}, indent=1))
        else:
            dump_json(report)
    else:
        print(summary_line(report, verified))
    return report.exit_code


def _read_json(path: Path) -> Any:
    try:
        return json.loads(Path(path).read_text())
    except OSError as exc:
        raise UnusableInput(f"{path}: cannot read the file ({exc.strerror or exc})") from None
    except ValueError as exc:
        raise UnusableInput(f"{path}: not JSON ({exc})") from None


def _address(explicit: str | None, deployment: Path | None, name: str, fallback: str | None = None) -> str:
    if explicit:
        return explicit
    if deployment is not None:
        return Deployment.load(deployment).address_of(name)
    if fallback:
        return fallback
    raise UnusableInput(f"no {name} address: pass --deployment or the contract's address")


# --- runners ---------------------------------------------------------------------------------------


def run_asset(
    file: Path | None,
    sha256: str | None,
    rpc_url: str,
    *,
    deployment: Path | None = None,
    registry: str | None = None,
    import_profile: str | None = None,
    as_json: bool = False,
    logs_max_blocks: int = DEFAULT_MAX_BLOCKS,
) -> int:
    from edgeledger.ipfs.cid import PROFILES
    from edgeledger.verify.asset import check_content_cid, digests_of_file, normalize_sha256, verify_content

    with exit_codes() as code:
        if (file is None) == (sha256 is None):
            raise UnusableInput("give a file or --sha256")
        if import_profile is not None and import_profile not in PROFILES:
            raise UnusableInput(f"unknown import profile {import_profile!r}: one of {', '.join(PROFILES)}")
        if import_profile is not None and file is None:
            raise UnusableInput("--import-profile needs a file (a sha-256 has no CID)")
        cids: dict[str, str] = {}
        if file is not None:
            digest, cids = digests_of_file(file, None if import_profile is None else (import_profile,))
        else:
            digest = normalize_sha256(sha256 or "")
        address = _address(registry, deployment, CONTENT_REGISTRY)
        first = (
            Deployment.load(deployment).blocks.get(CONTENT_REGISTRY, 0) if deployment and not registry else 0
        )
        chain = Chain(rpc_url, logs_max_blocks=logs_max_blocks)
        checks, verdict = verify_content(chain, address, digest, from_block=first)
        report = _report(as_json)
        report.extend(checks.checks)
        if cids and verdict["registered"]:
            check_content_cid(report, verdict, cids)
        code.append(_finish(report, as_json, "registered", {"verdict": verdict}))
    return code[0]


def run_delivery(
    input_file: Path,
    rpc_url: str,
    *,
    deployment: Path | None = None,
    contract: str | None = None,
    onchain_sample: int = 16,
    as_json: bool = False,
    logs_max_blocks: int = DEFAULT_MAX_BLOCKS,
) -> int:
    from edgeledger.verify import delivery

    with exit_codes() as code:
        if deployment is not None and contract is not None:
            raise UnusableInput("give at most one of --deployment and --contract")
        doc = delivery.load_document(input_file)
        address = _address(contract, deployment, DELIVERY_LEDGER, doc.get("contract"))
        ledger = LedgerReader(Chain(rpc_url, logs_max_blocks=logs_max_blocks), address)
        total = delivery.count_items(doc)
        report = _report(as_json, keep=total < PROGRESS_FROM)
        if total >= PROGRESS_FROM and not as_json:
            with typer.progressbar(length=total, label="verifying", file=sys.stderr) as bar:
                delivery.verify_document(
                    doc, ledger, onchain_sample=onchain_sample, report=report, progress=bar.update
                )
        else:
            delivery.verify_document(doc, ledger, onchain_sample=onchain_sample, report=report)
        code.append(_finish(report, as_json, "proven on chain"))
    return code[0]


def run_settlement(
    input_file: Path,
    rpc_url: str,
    *,
    vault: str | None = None,
    registry: str | None = None,
    as_json: bool = False,
    logs_max_blocks: int = DEFAULT_MAX_BLOCKS,
    deployment: Path | None = None,
) -> int:
    from edgeledger.verify.settlement import chain_terms, check_document, recompute, terms_block_check

    with exit_codes() as code:
        document = _read_json(input_file)
        if not isinstance(document, dict):
            raise UnusableInput(f"{input_file}: not a settlement inputs document")
        pinned = Deployment.load(deployment) if deployment is not None else None
        if pinned is not None and (vault or registry):
            raise UnusableInput("give --deployment or --vault/--registry, not both")
        chain = Chain(rpc_url, logs_max_blocks=logs_max_blocks)
        stated_chain = document.get("chain_id")
        if stated_chain is not None and stated_chain != chain.chain_id():
            raise UnusableInput(
                f"the document is for chain {stated_chain}, the RPC serves {chain.chain_id()}"
            )
        contracts: list[Check] = []
        if pinned is not None:
            contracts = _pinned_settlement_contracts(chain, pinned, document)
            # only the deployment's contracts: never the document's, even where the file names none
            vault = pinned.address_of(SETTLEMENT_VAULT)
            registry = pinned.addresses.get(CONTENT_REGISTRY)
        address = vault or document.get("vault")
        if not address:
            raise UnusableInput("the document names no vault: pass --vault or --deployment")
        try:
            period_id, merchant = int(document["period_id"]), str(document["merchant"])
        except (KeyError, TypeError, ValueError) as exc:
            raise UnusableInput(f"not a settlement inputs document: {exc!r}") from None
        on_chain = vault_settlement(
            chain, address, period_id, merchant, document.get("posted_block"), document.get("root")
        )
        inputs = recompute(document)[0]
        terms = None
        if inputs.terms_block is not None:
            registry_address = registry or (document.get("registry") if pinned is None else None)
            if not registry_address:
                raise UnusableInput(
                    "the deployment file names no ContentRegistry"
                    if pinned is not None
                    else "the document names no registry: pass --registry or --deployment"
                )
            terms = chain_terms(chain, registry_address, inputs)
        report = _report(as_json)
        report.extend(
            [
                *contracts,
                *check_document(document, on_chain, terms),
                terms_block_check(chain, document, inputs),
            ]
        )
        code.append(_finish(report, as_json, "payouts as in the vault"))
    return code[0]


def _pinned_settlement_contracts(chain: Chain, pinned: Deployment, document: dict[str, Any]) -> list[Check]:
    """With the auditor's own deployment file, only its contracts are read: the document's ``vault``
    and ``registry`` must be those (a document naming look-alike contracts fails ``contracts``), and the
    file's deployment blocks spare the searches for them."""
    pinned.pin(chain)
    checks = []
    for key, name in (("vault", SETTLEMENT_VAULT), ("registry", CONTENT_REGISTRY)):
        said = document.get(key)
        if name in pinned.addresses and said is not None:
            ok, detail = pinned.names(name, said, "the document")
            checks.append(Check("contracts", ok, detail, subject=name))
    return checks


def run_event(
    proof_file: Path,
    rpc_url: str,
    *,
    contract: str | None = None,
    as_json: bool = False,
    logs_max_blocks: int = DEFAULT_MAX_BLOCKS,
) -> int:
    from edgeledger.verify.event import verify_event_proof

    with exit_codes() as code:
        document = _read_json(proof_file)
        if not isinstance(document, dict):
            raise UnusableInput(f"{proof_file}: not a compliance event proof")
        address = contract or document.get("contract")
        if not address:
            raise UnusableInput("no contract address: pass --contract")
        report = _report(as_json)
        ledger = LedgerReader(Chain(rpc_url, logs_max_blocks=logs_max_blocks), address)
        report.extend(verify_event_proof(document, ledger))
        code.append(_finish(report, as_json, "event proven on chain"))
    return code[0]


def run_package(
    archive: Path,
    rpc_url: str,
    *,
    as_json: bool = False,
    logs_max_blocks: int = DEFAULT_MAX_BLOCKS,
    deployment: Path | None = None,
) -> int:
    from edgeledger.verify.package import verify_archive

    with exit_codes() as code:
        pinned = Deployment.load(deployment) if deployment is not None else None
        report = verify_archive(
            archive, rpc_url, _report(as_json), logs_max_blocks=logs_max_blocks, deployment=pinned
        )
        code.append(_finish(report, as_json, "package verified"))
    return code[0]


# --- commands --------------------------------------------------------------------------------------


@app.command("asset")
def verify_asset(
    file: Annotated[Path | None, typer.Argument(help="The file to check", show_default=False)] = None,
    sha256: Annotated[str | None, typer.Option(help="Check a sha-256 instead of a file")] = None,
    rpc_url: RpcUrl = "http://127.0.0.1:8545",
    deployment: Annotated[Path | None, typer.Option(help="Deployment JSON (contract addresses)")] = None,
    registry: Annotated[str | None, typer.Option(help="ContentRegistry address")] = None,
    import_profile: Annotated[
        str | None,
        typer.Option(
            help="Compute the file's CID under this IPFS import profile only (legacy-cidv1 or "
            "unixfs-v1-2025); default: both, so a registration naming the wrong profile is reported"
        ),
    ] = None,
    as_json: AsJson = False,
    logs_max_blocks: LogsMaxBlocks = DEFAULT_MAX_BLOCKS,
) -> None:
    """Whether, when and by whom content was registered, and whether the file's CID under the import
    profile the registry records is the registered one (exit 1: not registered, or it is not)."""
    raise typer.Exit(
        run_asset(
            file,
            sha256,
            rpc_url,
            deployment=deployment,
            registry=registry,
            import_profile=import_profile,
            as_json=as_json,
            logs_max_blocks=logs_max_blocks,
        )
    )


@app.command("delivery")
def verify_delivery(
    input_file: Annotated[Path, typer.Argument(help="Proof, proofs or batch export JSON")],
    rpc_url: RpcUrl = "http://127.0.0.1:8545",
    deployment: Annotated[Path | None, typer.Option(help="Deployment JSON naming the DeliveryLedger")] = None,
    contract: Annotated[
        str | None, typer.Option(help="DeliveryLedger address; default the document's")
    ] = None,
    onchain_sample: Annotated[
        int,
        typer.Option(min=0, help="Batch exports: records also checked with an on-chain verifyRecord call"),
    ] = 16,
    as_json: AsJson = False,
    logs_max_blocks: LogsMaxBlocks = DEFAULT_MAX_BLOCKS,
) -> None:
    """Delivery proofs or a batch export, record by record (docs/proofs.md)."""
    raise typer.Exit(
        run_delivery(
            input_file,
            rpc_url,
            deployment=deployment,
            contract=contract,
            onchain_sample=onchain_sample,
            as_json=as_json,
            logs_max_blocks=logs_max_blocks,
        )
    )


@app.command("settlement")
def verify_settlement(
    input_file: Annotated[Path, typer.Argument(help="Settlement inputs document JSON")],
    rpc_url: RpcUrl = "http://127.0.0.1:8545",
    vault: Annotated[str | None, typer.Option(help="SettlementVault address; default the document's")] = None,
    registry: Annotated[
        str | None, typer.Option(help="ContentRegistry address; default the document's")
    ] = None,
    as_json: AsJson = False,
    logs_max_blocks: LogsMaxBlocks = DEFAULT_MAX_BLOCKS,
    deployment: Annotated[
        Path | None,
        typer.Option(
            help="The deployment file you trust: its SettlementVault and ContentRegistry are the ones read, "
            "and a document naming others fails 'contracts' (not with --vault/--registry)"
        ),
    ] = None,
) -> None:
    """Recompute a settlement's payouts from its published inputs, compare them with the vault, and
    read the assets' terms again at the block the inputs name."""
    raise typer.Exit(
        run_settlement(
            input_file,
            rpc_url,
            vault=vault,
            registry=registry,
            as_json=as_json,
            logs_max_blocks=logs_max_blocks,
            deployment=deployment,
        )
    )


@app.command("event")
def verify_event(
    proof_file: Annotated[Path, typer.Argument(help="Compliance event proof JSON")],
    rpc_url: RpcUrl = "http://127.0.0.1:8545",
    contract: Annotated[
        str | None, typer.Option(help="DeliveryLedger address; default the document's")
    ] = None,
    as_json: AsJson = False,
    logs_max_blocks: LogsMaxBlocks = DEFAULT_MAX_BLOCKS,
) -> None:
    """One compliance event: leaf, Merkle path, anchored root, verifyLeaf on chain."""
    raise typer.Exit(
        run_event(proof_file, rpc_url, contract=contract, as_json=as_json, logs_max_blocks=logs_max_blocks)
    )


@app.command("package")
def verify_package(
    archive: Annotated[Path, typer.Argument(help="Audit package (tar.gz)")],
    rpc_url: RpcUrl = "http://127.0.0.1:8545",
    as_json: AsJson = False,
    logs_max_blocks: LogsMaxBlocks = DEFAULT_MAX_BLOCKS,
    deployment: Annotated[
        Path | None,
        typer.Option(
            help="The deployment file you trust: its contracts are the ones read, and a package naming "
            "others fails"
        ),
    ] = None,
) -> None:
    """An audit package: each file against its index, each item against the chain (docs/audit-package.md)."""
    raise typer.Exit(
        run_package(archive, rpc_url, as_json=as_json, logs_max_blocks=logs_max_blocks, deployment=deployment)
    )


def package_main(argv: list[str] | None = None) -> int:
    """``edgeledger-verify-package ARCHIVE --rpc-url URL [--json]``: ``edgeledger verify package`` as a
    command of its own, for auditors who install nothing else."""
    import argparse

    parser = argparse.ArgumentParser(
        prog="edgeledger-verify-package", description="Verify an EdgeLedger audit package against the chain."
    )
    parser.add_argument("archive", type=Path)
    parser.add_argument("--rpc-url", required=True)
    parser.add_argument("--json", action="store_true", help="print the results as JSON")
    parser.add_argument(
        "--deployment",
        type=Path,
        default=None,
        help="the deployment file you trust: its contracts are the ones read, a package naming others fails",
    )
    parser.add_argument(
        "--logs-max-blocks",
        type=int,
        default=None,
        help="blocks per eth_getLogs query, halved while the RPC refuses one as too large "
        f"(default ETH_LOGS_MAX_BLOCKS or {DEFAULT_MAX_BLOCKS}; 0: no limit)",
    )
    args = parser.parse_args(argv)
    logs_max_blocks = args.logs_max_blocks
    if logs_max_blocks is None:
        raw = os.environ.get("ETH_LOGS_MAX_BLOCKS", "").strip() or str(DEFAULT_MAX_BLOCKS)
        if not (raw.isascii() and raw.isdigit()):
            parser.error(f"ETH_LOGS_MAX_BLOCKS={raw!r} is not a whole number")
        logs_max_blocks = int(raw)
    if logs_max_blocks < 0:
        parser.error("--logs-max-blocks must be 0 or more")
    return run_package(
        args.archive,
        args.rpc_url,
        as_json=args.json,
        logs_max_blocks=logs_max_blocks,
        deployment=args.deployment,
    )
