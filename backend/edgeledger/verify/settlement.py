"""Recompute a settlement from its published inputs and check it against the vault (no database needed).

A settlement's inputs document (``GET /settlement/settlements/{id}/inputs``) holds the exact
:class:`PayoutInputs` the statement was computed from: receipts (each naming its anchored batch), the
assets' on-chain terms, the rate card versions, the FX table, the recorded reconciliation decisions and
the platform address. Anyone can recompute the statement and the payout tree from it and compare the
root with the one the SettlementVault holds; the assets' terms are read again from the ContentRegistry at
the block the inputs name (``terms_block``, document version 2) and must be the published ones::

    edgeledger verify settlement inputs.json --rpc-url http://127.0.0.1:8545
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from eth_utils.address import to_checksum_address

from edgeledger.ledger.payout_leaf import PayoutTree, held_only_root
from edgeledger.ledger.vault import SettlementStatus
from edgeledger.settlement import SettlementError
from edgeledger.settlement.held import ReleaseInputs, compute_release, release_digest, release_statement
from edgeledger.settlement.payouts import (
    UNREGISTERED,
    AssetTerms,
    PayoutInputs,
    Statement,
    compute_payouts,
    inputs_digest,
    licence_boundaries,
)
from edgeledger.settlement.statements import parse_receipt_key
from edgeledger.settlement.terms import read_terms, unknown_at
from edgeledger.verify.result import Check, UnusableInput
from edgeledger.verify.rpc import Chain, VaultSettlement, registry


def recompute(
    document: Mapping[str, Any],
) -> tuple[PayoutInputs | ReleaseInputs, Statement, PayoutTree | None]:
    """The statement and payout tree the document's inputs give (UnusableInput when they give neither).
    A release of held royalties (``kind: release``) is recomputed from its held items and terms. A
    settlement that pays nobody (held-only: every royalty held back; or empty: nothing charged) has no
    tree: None."""
    try:
        period_id, merchant, token = int(document["period_id"]), document["merchant"], document["token"]
        if document.get("kind") == "release":
            release_inputs = ReleaseInputs.model_validate_json(json.dumps(document["inputs"]))
            release = compute_release(release_inputs)
            statement = release_statement(release_inputs, release)
            return release_inputs, statement, PayoutTree(period_id, merchant, token, release.payees)
        inputs = PayoutInputs.model_validate_json(json.dumps(document["inputs"]))
        statement = compute_payouts(inputs)
        if not statement.payees:
            return inputs, statement, None
        return inputs, statement, PayoutTree(period_id, merchant, token, statement.payees)
    except (KeyError, TypeError, ValueError) as exc:  # pydantic's ValidationError and FormatError too
        raise UnusableInput(f"not a settlement inputs document: {exc}") from None
    except SettlementError as exc:
        raise UnusableInput(f"the inputs cannot be settled: {exc.message}") from None


def chain_terms(
    chain: Chain, registry_address: str, inputs: PayoutInputs | ReleaseInputs
) -> list[AssetTerms]:
    """The terms of every asset the inputs name (receipts or held items, and published terms), read
    from the registry at the inputs' ``terms_block``, as the settlement worker read them."""
    contract = registry(chain, registry_address)
    block = inputs.terms_block
    named = (
        [i.holder_asset for i in inputs.items]
        if isinstance(inputs, ReleaseInputs)
        else [r.asset_id for r in inputs.receipts]
    )
    ids = {int(a.asset_id) for a in inputs.assets} | {int(a) for a in named}
    ids.discard(int(UNREGISTERED))
    at = chain.block_number() if block is None else block

    def call(fn: Any) -> Any:
        return chain.ask("settlementTerms", lambda: fn.call(block_identifier=block))

    try:
        if isinstance(inputs, PayoutInputs):
            # A receipt priced as unregistered whose key names an asset: that asset must be unknown at the
            # block (a correction's late records of content registered since). One the registry knew is
            # read too, so the terms check finds it missing from the published terms.
            keyed = {parse_receipt_key(r.key).asset_id for r in inputs.receipts if r.asset_id == UNREGISTERED}
            if not all(a.isdigit() for a in keyed):
                raise UnusableInput("a receipt key names an asset id that is not a number")
            relabelled = {int(a) for a in keyed} - {int(UNREGISTERED)}
            ids |= relabelled - unknown_at(contract, call, relabelled)
        return read_terms(
            contract,
            call,
            ids,
            get_logs=chain.get_logs,
            block=at,
            # Splits are searched from the registry's deployment, found on chain (no deployment file needed).
            from_block=chain.deployment_block(contract.address, at),
        )
    except SettlementError as exc:
        raise UnusableInput(f"terms at block {block}: {exc.message}") from None


def terms_block_check(
    chain: Chain, document: Mapping[str, Any], inputs: PayoutInputs | ReleaseInputs
) -> Check:
    """The recorded terms block is one a settlement may read at: at or after the period's end (the
    terms then are final for the period: a block before it could predate a dispute, a transfer or a
    split change) and no later than the posting (``posted_block``), which carried terms read before."""
    block = inputs.terms_block
    if block is None:
        return Check("terms block", True, "no terms read (nothing registered was delivered)")
    if block > chain.block_number():
        return Check("terms block", False, f"block {block} is not on the chain yet")
    problems = []
    if isinstance(inputs, PayoutInputs):
        at = chain.block_timestamp(block)
        if at < inputs.period_end:
            problems.append(f"block {block} ({at}) is before the period's end ({inputs.period_end})")
    posted = document.get("posted_block")
    if isinstance(posted, int) and block > posted:
        problems.append(f"block {block} is after the posting's block {posted}")
    detail = "; ".join(problems) or f"block {block}: after the period's end, not after the posting"
    return Check("terms block", not problems, detail)


def _terms_check(published: tuple[AssetTerms, ...], read: list[AssetTerms], block: int) -> Check:
    ours = {t.asset_id: t for t in published}
    theirs = {t.asset_id: t for t in read}
    differ = sorted(
        (a for a in set(ours) | set(theirs) if ours.get(a) != theirs.get(a)), key=lambda a: int(a)
    )
    if not differ:
        return Check("terms at the recorded block", True, f"{len(theirs)} asset(s) as read at block {block}")
    first = differ[0]
    said = ours[first].model_dump(exclude_none=True) if first in ours else "absent"
    chain_says = theirs[first].model_dump(exclude_none=True) if first in theirs else "absent"
    return Check(
        "terms at the recorded block",
        False,
        f"{len(differ)} asset(s) differ at block {block}; asset {first}: "
        f"published {said}, chain {chain_says}",
    )


def posted_root(document: Mapping[str, Any], statement: Statement, tree: PayoutTree | None) -> str | None:
    """The root the vault must hold for a recomputed settlement: its payout tree's, or for a held-only
    one (no tree) the commitment to what it holds (``ledger.payout_leaf.held_only_root``); None for one
    that pays and holds nothing (``empty``: never posted)."""
    if tree is not None:
        return tree.root_hex
    if not statement.held_back:
        return None
    try:
        period_id, merchant, token = int(document["period_id"]), document["merchant"], document["token"]
        return held_only_root(period_id, merchant, token, statement.held_items())
    except (KeyError, TypeError, ValueError) as exc:  # FormatError too
        raise UnusableInput(f"not a settlement inputs document: {exc}") from None


def check_document(
    document: Mapping[str, Any],
    on_chain: VaultSettlement | None,
    terms: list[AssetTerms] | None = None,
) -> list[Check]:
    """Checks of the document against itself, against the vault's ``settlementOf`` (None: not checked
    on chain) and against the assets' terms read at the recorded block (``terms``, from
    :func:`chain_terms`; None: not checked)."""
    inputs, statement, tree = recompute(document)
    digest = release_digest(inputs) if isinstance(inputs, ReleaseInputs) else inputs_digest(inputs)
    held = sum(h.amount for h in statement.held_back)
    root, total = posted_root(document, statement, tree), tree.total if tree is not None else 0
    checks = [
        Check(
            "inputs digest",
            digest == document.get("inputs_digest"),
            f"sha256 of the canonical inputs {digest}",
        ),
        Check("root recomputed", root == document.get("root"), f"recomputed {root}"),
        Check("total recomputed", total == document.get("total"), f"recomputed {total}"),
    ]
    if on_chain is not None and root is None:
        checks.append(
            # none, or an earlier attempt of the period the vault cancelled: nothing reserved for it
            Check(
                "nothing in the vault",
                on_chain.status in (SettlementStatus.NONE, SettlementStatus.CANCELLED),
                f"status {on_chain.status}: nothing to post",
            )
        )
    elif on_chain is not None:
        chain_root = "0x" + on_chain.root.hex()
        try:
            same_token = to_checksum_address(on_chain.token) == to_checksum_address(document["token"])
        except (ValueError, TypeError):
            same_token = False
        checks += [
            Check(
                "posted in the vault",
                on_chain.status != SettlementStatus.NONE,
                f"status {on_chain.status}"
                if on_chain.superseded_by is None
                else f"cancelled: the vault holds a later attempt's root 0x{on_chain.superseded_by.hex()}",
            ),
            Check("vault root", chain_root == root, f"vault holds {chain_root}"),
            Check("vault total", on_chain.total == total, f"vault total {on_chain.total}"),
            Check("vault token", same_token, f"vault token {on_chain.token}"),
        ]
        if on_chain.held is not None:  # read at the document's posted_block
            checks.append(
                Check(
                    "vault held reserve",
                    on_chain.held == held,
                    f"the posting reserved {on_chain.held} held royalties, the statement holds back {held}",
                )
            )
    if isinstance(inputs, PayoutInputs):
        checks.append(receipt_times_check(inputs))
    if terms is not None and inputs.terms_block is not None:
        checks.append(_terms_check(inputs.assets, terms, inputs.terms_block))
    return checks


def receipt_times_check(inputs: PayoutInputs) -> Check:
    """Each receipt is judged against its asset's licence at the time its key gives: the period's start,
    or for the part of a receipt split at a licence boundary (key ``<receipt key>:<b>``) that boundary,
    which must be one of the asset's published terms' boundaries inside the period
    (``payouts.licence_boundaries``). So no receipt states a time of its own choosing. How the records
    are divided between the parts is not checked here: an audit package proves the records behind them
    and ``verify package`` holds each part to them (verify/receipt_parts.py); whether a receipt was
    split that should have been is taken as stated."""
    terms = {t.asset_id: t for t in inputs.assets}
    start, end = inputs.period_start, inputs.period_end
    problems: list[str] = []
    for receipt in inputs.receipts:
        try:
            part = parse_receipt_key(receipt.key).part_from
        except SettlementError as exc:
            problems.append(exc.message)
            continue
        if part is None:
            if receipt.at != start:
                problems.append(f"{receipt.key} is judged at {receipt.at}, not the period's start {start}")
            continue
        asset = terms.get(receipt.asset_id)
        inclusive = inputs.licence_end == "inclusive"
        edges = licence_boundaries(asset, start, end, inclusive=inclusive) if asset is not None else ()
        if receipt.at != part or part not in edges:
            problems.append(
                f"{receipt.key} is judged at {receipt.at}: a part must start at one of its asset's licence "
                f"boundaries inside the period {list(edges)}"
            )
    detail = (
        "; ".join(problems[:5])[:800]
        if problems
        else f"{len(inputs.receipts)} receipt(s), judged at the period's start or their part's"
    )
    return Check("receipt times", not problems, detail)
