"""How a settlement divides a split receipt's records between its parts, against the records an audit
package proves (no database: the package's proofs and the settlements' published inputs).

A receipt of an asset whose licence starts or stops during the period is split at those seconds into
parts, each judged at its own first second (docs/settlement.md, "Licences"): the part keyed
``<receipt key>`` counts the records delivered before the first boundary, the part keyed
``<receipt key>:<b>`` those from ``b`` to the next boundary. ``verify settlement`` checks each part's time
(verify/settlement.py ``receipt_times_check``) but not how many records each part counts: a server could
move deliveries into the licensed part. A merchant's package proves the records behind each split
receipt (``proofs/<batch id>.json``, up to the package's cap), and here each part is held against them:

* the records counted are the proven leaves (a proof that passed, ``verifyRecord`` on chain) of the
  receipt's batch and asset, in its country (region derived from it, as ingest does) and, when the
  package's index names the merchant's hosts (``merchant_hosts``), under one of their merchant ids
  (keccak of the host); only committed leaf fields are read: timestamp_ms, asset id, country, merchant id,
  bytes delivered;
* a part's range is from its first second (the first part: from any time) to the next boundary (the
  parts' first seconds and the boundaries the asset's published terms give inside the period,
  ``payouts.licence_boundaries``; the last part: to any time), a record's time counted in whole seconds as
  settlement splits them;
* each part's ``requests`` must be at most the proven records in its range and its ``bytes`` at most
  their bytes. Only an upper bound is sound: fraud-flagged (excluded) records are in the tree but not in
  any receipt, and the proofs cannot tell them apart.

Which split receipts a package proves follows from the published inputs alone
(:func:`receipts_to_prove`, up to :data:`PROOF_CAP` stated records), so the builder and the verifier make
the same choice: a receipt within the cap that the package does not prove fails the check (a server
cannot dodge it by leaving proofs out); one beyond it is not checked, and the detail says so (``not
checked: N split receipt(s)``). The merchant's hosts come from the package's index (``merchant_hosts``),
which the server writes: the check names them so the merchant can confirm they are its own, and a
package that names none fails where it would have to count by them.
"""

from __future__ import annotations

from bisect import bisect_right
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from edgeledger.deliveries.regions import region_of
from edgeledger.ledger.delivery_leaf import leaf_hash, leaf_values_from_json
from edgeledger.ledger.ids import merchant_id_for
from edgeledger.settlement import SettlementError
from edgeledger.settlement.payouts import PayoutInputs, licence_boundaries
from edgeledger.settlement.statements import parse_receipt_key
from edgeledger.verify.result import Check

NAME = "settlement receipt parts"

#: The most records a merchant's audit package proves for split receipts (audit/packages.py); the
#: verifier replays the same choice (:func:`receipts_to_prove`).
PROOF_CAP = 1_000

#: (batch id, asset id, region, country): the receipt a part belongs to
Group = tuple[str, int, str, str]


@dataclass(frozen=True, slots=True)
class Leaf:
    """The committed fields of one proven record that place it in a receipt part."""

    batch_id: str  # 0x hex, lower case
    asset_id: int
    country: str  # alpha-2, upper case, or "" (unknown)
    merchant_id: bytes
    timestamp_ms: int
    bytes_delivered: int

    @property
    def group(self) -> Group:
        return (self.batch_id, self.asset_id, region_of(self.country), self.country)


def proven_leaves(document: Mapping[str, Any], checks: Sequence[Check]) -> dict[tuple[Any, ...], Leaf]:
    """The records of an ``edgeledger-proofs/v1`` document whose proof passed (``checks``: the proof
    checks of verify/delivery.py ``verify_document``, one per proof in order), keyed by batch, leaf and
    Merkle path so a record proven twice counts once."""
    proofs = document.get("proofs")
    if document.get("format") != "edgeledger-proofs/v1" or not isinstance(proofs, list):
        return {}
    if len(proofs) != len(checks):
        return {}
    found: dict[tuple[Any, ...], Leaf] = {}
    for item, check in zip(proofs, checks, strict=True):
        if not check.ok:
            continue
        try:
            values = leaf_values_from_json(item["leaf_values"])
            batch_id = str(item["batch"]["batch_id"]).lower()
            path = tuple(str(node).lower() for node in item["proof"])
        except (KeyError, TypeError, ValueError):
            continue
        country = "" if values.country == b"\0\0" else values.country.decode("ascii", "replace").upper()
        found[(batch_id, leaf_hash(values), path)] = Leaf(
            batch_id,
            values.asset_id,
            country,
            bytes(values.merchant_id),
            values.timestamp_ms,
            values.bytes_delivered,
        )
    return found


def _split_receipts(inputs: PayoutInputs) -> dict[Group, dict[int | None, list[int]]]:
    """The receipts split at a licence boundary: receipt -> part's first second (None: the first part)
    -> [requests, bytes] (a key stated twice adds up)."""
    groups: dict[Group, dict[int | None, list[int]]] = {}
    for receipt in inputs.receipts:
        key = parse_receipt_key(receipt.key)
        if not key.asset_id.isdigit():
            continue  # an asset without a number has no terms, hence no boundary
        group = (key.batch_id, int(key.asset_id), key.region, key.country)
        counts = groups.setdefault(group, {}).setdefault(key.part_from, [0, 0])
        counts[0] += receipt.requests
        counts[1] += receipt.bytes
    return {g: parts for g, parts in groups.items() if any(p is not None for p in parts)}


def receipts_to_prove(inputs_list: Iterable[PayoutInputs], cap: int | None = None) -> set[Group]:
    """The split receipts whose records a merchant's package proves: in receipt order (batch id, asset,
    region, country), whole receipts while the records they state fit in ``cap`` (a receipt stated by
    two settlements, a cancelled attempt and the one after it, counts once, at the most either states);
    a receipt over what is left is skipped and the next ones tried. Made from the published inputs
    alone, so the package's builder and its verifier choose the same receipts (``cap``: PROOF_CAP)."""
    cap = PROOF_CAP if cap is None else cap
    stated: dict[Group, int] = {}
    for inputs in inputs_list:
        try:
            split = _split_receipts(inputs)
        except SettlementError:
            continue  # an unreadable key: the settlement's own checks fail it
        for group, parts in split.items():
            stated[group] = max(stated.get(group, 0), sum(p[0] for p in parts.values()))
    chosen: set[Group] = set()
    used = 0
    for group in sorted(stated):
        if stated[group] and used + stated[group] <= cap:
            chosen.add(group)
            used += stated[group]
    return chosen


def _edges(inputs: PayoutInputs, asset_id: int, parts: Iterable[int | None]) -> list[int]:
    terms = {t.asset_id: t for t in inputs.assets}.get(str(asset_id))
    inclusive = inputs.licence_end == "inclusive"
    edges = {p for p in parts if p is not None}
    if terms is not None:
        edges |= set(licence_boundaries(terms, inputs.period_start, inputs.period_end, inclusive=inclusive))
    return sorted(edges)


def receipt_parts_check(
    subject: str,
    inputs: PayoutInputs,
    leaves: Iterable[Leaf],
    hosts: Sequence[str] | None,
    to_prove: set[Group],
) -> Check | None:
    """The check of one settlement's split receipts against the proven ``leaves`` of the merchant's
    ``hosts`` (the package index's ``merchant_hosts``; None: it names none, a failure), every receipt in
    ``to_prove`` (:func:`receipts_to_prove`) proven; None when it splits no receipt."""
    try:
        split = _split_receipts(inputs)
    except SettlementError as exc:
        return Check(NAME, False, exc.message, subject)
    if not split:
        return None
    if hosts is None:
        return Check(NAME, False, "the package's index names no merchant hosts to count records by", subject)
    merchant_ids = {merchant_id_for(h) for h in hosts}
    by_group: dict[Group, list[Leaf]] = {}
    for leaf in leaves:
        if leaf.group in split and leaf.merchant_id in merchant_ids:
            by_group.setdefault(leaf.group, []).append(leaf)
    problems: list[str] = []
    unproven = unproven_parts = checked_parts = records = 0
    for group, parts in sorted(split.items()):
        proven = by_group.get(group, [])
        if not proven and group in to_prove:
            base = ":".join((group[0], str(group[1]), group[2], group[3]))
            problems.append(f"{base}: within the package's cap, but no record of it is proven")
            continue
        if not proven:
            unproven += 1
            unproven_parts += len(parts)
            continue
        edges = _edges(inputs, group[1], parts)
        bounds = [edge * 1000 for edge in edges]
        counted = [[0, 0] for _ in range(len(edges) + 1)]
        for leaf in proven:
            bucket = counted[bisect_right(bounds, leaf.timestamp_ms)]
            bucket[0] += 1
            bucket[1] += leaf.bytes_delivered
        records += len(proven)
        base = ":".join((group[0], str(group[1]), group[2], group[3]))
        for start, (requests, nbytes) in sorted(parts.items(), key=lambda p: -1 if p[0] is None else p[0]):
            index = 0 if start is None else edges.index(start) + 1
            have, have_bytes = counted[index]
            checked_parts += 1
            if requests > have or nbytes > have_bytes:
                low = "the start" if index == 0 else str(edges[index - 1])
                high = str(edges[index]) if index < len(edges) else "the end"
                key = base if start is None else f"{base}:{start}"
                problems.append(
                    f"{key} counts {requests} requests and {nbytes} bytes; the package proves {have} "
                    f"records of {have_bytes} bytes delivered from {low} to {high}"
                )
    skipped = (
        f"; not checked: {unproven} split receipt(s) ({unproven_parts} parts) beyond the package's cap of "
        f"{PROOF_CAP:,} proven records"
        if unproven
        else ""
    )
    skipped += f"; records of the hosts {', '.join(sorted(hosts)) or '(none)'}"
    if problems:
        return Check(NAME, False, ("; ".join(problems[:5]) + skipped)[:800], subject)
    detail = (
        f"{checked_parts} part(s) of {len(split) - unproven} split receipt(s), each within the "
        f"{records} proven record(s) of its receipt delivered in its time range"
        if checked_parts
        else "no split receipt checked"
    )
    return Check(NAME, True, detail + skipped, subject)
