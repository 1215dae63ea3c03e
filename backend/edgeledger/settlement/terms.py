"""Asset terms as the chain states them at one recorded block: what settlement prices deliveries with.

Who is paid for an asset's deliveries is read from ContentRegistry (``settlementTerms``) by ``eth_call`` at
a block recorded with the settlement, each split from the asset's latest ``SplitUpdated`` event up to that
block checked against the split hash ``settlementTerms`` returns, never from the copy the database keeps
for the API: a rights holder's ``updateSplit`` or ``updateLicence``, a token transfer (which resets the
split to the new holder), an arbiter's ``markDisputed``, ``takeDown``, ``clearDispute`` or
``reassignRights`` all reach the next settlement, whether or not anyone read the asset through the API,
and an asset registered on chain directly settles like any other.

The block is the latest one final by the configured confirmations, and only once that block is past the
period's end (:func:`terms_block`); the published inputs carry it, so ``edgeledger verify settlement``
reads the same terms again over RPC (:func:`read_terms` is shared by both, DB-free) and fails when the
published ones differ.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from typing import Any, Literal

from edgeledger.ledger.hashing import FormatError
from edgeledger.ledger.splits import Split, read_split_blocks, splits_at
from edgeledger.settlement import SettlementError
from edgeledger.settlement.payouts import AssetTerms, Recipient
from edgeledger.territories import ALL_TERRITORIES_BITMAP

#: ContentRegistry.Status, by its index
STATUSES: tuple[Literal["active", "disputed", "taken_down"], ...] = ("active", "disputed", "taken_down")
#: assets per ``settlementTerms`` call (288 bytes of return data each, whatever the split's size)
CHUNK = 100


def terms_of(asset_id: int, raw: Any, split: Split) -> AssetTerms | None:
    """AssetTerms from one ``ContentRegistry.Terms`` value and the split it commits to (None when the id
    was never registered)."""
    exists, status, holder, parent_id, territories, valid_from, valid_until, _split_hash, _split_key = raw
    if not exists:
        return None
    status_name = STATUSES[int(status)]
    recipients, shares = split
    return AssetTerms(
        asset_id=str(asset_id),
        recipients=tuple(
            Recipient(address=str(r).lower(), bps=int(b)) for r, b in zip(recipients, shares, strict=True)
        ),
        parent=str(parent_id) if parent_id else None,
        territories=int(territories) & ALL_TERRITORIES_BITMAP,
        valid_from=int(valid_from),
        valid_until=int(valid_until) or None,
        # A taken-down asset's royalties are held back like a disputed one's.
        disputed=status_name != "active",
        holder=str(holder).lower(),
        status=status_name,
    )


def read_terms(
    registry: Any,
    call: Callable[[Any], Any],
    asset_ids: Iterable[int],
    *,
    get_logs: Callable[[dict[str, Any]], Iterable[Mapping[str, Any]]],
    block: int,
    from_block: int = 0,
) -> list[AssetTerms]:
    """Terms of the assets and all their ancestors, sorted by id. ``call`` runs a contract function at
    the recorded ``block`` (``lambda fn: fn.call(block_identifier=block)`` or the worker's client);
    ``get_logs`` runs one ``eth_getLogs`` query (searched from ``from_block``, the registry's deployment
    block when known). Each split is the latest ``SplitUpdated`` event of the asset's
    ``splitKey`` up to ``block`` that hashes to the ``splitHash`` read at ``block``
    (:func:`edgeledger.ledger.splits.splits_at`), fetched from the block ``splitBlocks`` names
    (:func:`edgeledger.ledger.splits.read_split_blocks`): a settlement's log queries grow with its
    assets, not with the chain's age.

    Raises ``asset_unknown`` for an id the registry does not know at that block, ``terms_unreadable``
    when the events the node returns do not match the committed split."""
    rows: dict[int, Any] = {}
    pending = sorted({int(a) for a in asset_ids})
    while pending:
        found = _registered(registry, call, pending)
        rows.update(found)
        missing = [asset_id for asset_id in pending if asset_id not in found]
        if missing:
            raise SettlementError(
                f"asset(s) {', '.join(map(str, missing))} not registered on chain at the terms block",
                code="asset_unknown",
            )
        pending = sorted({int(raw[3]) for raw in rows.values() if int(raw[3]) and int(raw[3]) not in rows})
    try:
        wanted = {a: (int(raw[8]), bytes(raw[7])) for a, raw in rows.items()}
        located = read_split_blocks(registry, call, sorted(rows))
        splits = splits_at(get_logs, str(registry.address), wanted, block, from_block, split_blocks=located)
    except FormatError as exc:  # SplitMismatch among them
        raise SettlementError(str(exc), code="terms_unreadable") from None
    terms = [terms_of(asset_id, rows[asset_id], splits[asset_id]) for asset_id in sorted(rows)]
    return [t for t in terms if t is not None]


def unknown_at(registry: Any, call: Callable[[Any], Any], asset_ids: Iterable[int]) -> set[int]:
    """The ids among ``asset_ids`` the registry does not know at the block ``call`` reads at."""
    wanted = {int(a) for a in asset_ids}
    return wanted - set(_registered(registry, call, sorted(wanted)))


def _registered(registry: Any, call: Callable[[Any], Any], asset_ids: list[int]) -> dict[int, Any]:
    """``settlementTerms`` of the ids the registry knows at the block ``call`` reads at, asked ``CHUNK``
    ids at a time; an id it does not know is left out."""
    rows: dict[int, Any] = {}
    for start in range(0, len(asset_ids), CHUNK):
        chunk = asset_ids[start : start + CHUNK]
        answered = call(registry.functions.settlementTerms(chunk))
        if len(answered) != len(chunk):
            raise SettlementError("the registry answered for other assets", code="terms_unreadable")
        rows.update((asset_id, raw) for asset_id, raw in zip(chunk, answered, strict=True) if raw[0])
    return rows


def terms_block(latest: int, confirmations: int, timestamp_of: Callable[[int], int], period_end: int) -> int:
    """The block settlement reads terms at: the latest final one (``confirmations`` below the head),
    once its timestamp is at or past the period's end (``terms_block_pending`` until then)."""
    block = latest - confirmations
    if block < 0 or timestamp_of(block) < period_end:
        raise SettlementError(
            f"no block final by {confirmations} confirmation(s) after the period's end yet",
            code="terms_block_pending",
        )
    return block
