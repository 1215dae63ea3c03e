"""Decoding contract logs and projecting events into the indexer's tables.

The projection is a pure function of the canonical event sequence (block number, log index): applying
the events of a range to the tables as they were after the previous range gives the same rows as
applying every event from the first block. That is what makes a rollback (delete the orphaned events,
re-project) and a rebuild from an empty database correct.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

from eth_utils import event_abi_to_log_topic, to_checksum_address
from sqlalchemy import delete, select
from sqlalchemy.orm import Session
from web3._utils.events import get_event_data

from edgeledger.chain.client import ChainClient
from edgeledger.indexer.models import (
    ChainEventRow,
    IndexedAsset,
    IndexedBatch,
    IndexedSettlement,
    IndexedSource,
)
from edgeledger.ipfs import IpfsClient, IpfsError
from edgeledger.ipfs.cid import InvalidCidError
from edgeledger.ledger.registration import import_profile_name

log = logging.getLogger(__name__)

CONTRACTS = ("ContentRegistry", "DeliveryLedger", "SettlementVault")
PROJECTIONS = (IndexedAsset, IndexedSource, IndexedBatch, IndexedSettlement)
ZERO32 = "0x" + "00" * 32
ASSET_STATUS = ("active", "disputed", "taken_down")
SOURCE_STATUS = ("active", "suspended")
SOURCE_KIND = ("edge_node", "cdn_provider")


@dataclass(frozen=True)
class DecodedEvent:
    block_number: int
    block_hash: str
    tx_hash: str
    log_index: int
    contract: str
    event: str
    args: dict[str, Any]

    def row(self) -> ChainEventRow:
        return ChainEventRow(
            block_number=self.block_number,
            block_hash=self.block_hash,
            tx_hash=self.tx_hash,
            log_index=self.log_index,
            contract=self.contract,
            event=self.event,
            args_json=json.dumps(self.args, sort_keys=True, separators=(",", ":")),
        )

    @classmethod
    def of_row(cls, row: ChainEventRow) -> DecodedEvent:
        return cls(
            row.block_number,
            row.block_hash,
            row.tx_hash,
            row.log_index,
            row.contract,
            row.event,
            json.loads(row.args_json),
        )


def _jsonable(value: Any) -> Any:
    """Canonical JSON values: bytes as 0x-hex, every integer as decimal text (uint256 fits), addresses
    checksummed by web3 already."""
    if isinstance(value, bytes | bytearray):
        return "0x" + bytes(value).hex()
    if isinstance(value, bool):
        return value
    if isinstance(value, int):
        return str(value)
    if isinstance(value, list | tuple):
        return [_jsonable(v) for v in value]
    return value


class EventDecoder:
    """Decodes the logs of the three contracts with their build artifacts' ABIs."""

    def __init__(self, chain: ChainClient) -> None:
        self.codec = chain.w3.codec
        self.addresses: dict[str, str] = {}
        self.events: dict[tuple[str, bytes], dict[str, Any]] = {}
        for name in CONTRACTS:
            contract = chain.contract(name)
            address = contract.address.lower()
            self.addresses[address] = name
            for entry in contract.abi:
                if entry.get("type") == "event":
                    self.events[(address, event_abi_to_log_topic(entry))] = entry  # type: ignore[arg-type]

    @property
    def checksummed_addresses(self) -> list[str]:
        return [to_checksum_address(a) for a in self.addresses]

    def decode(self, entry: Any) -> DecodedEvent | None:
        address = str(entry["address"]).lower()
        topics = entry["topics"]
        if not topics:
            return None
        abi = self.events.get((address, bytes(topics[0])))
        if abi is None:
            return None
        data = get_event_data(self.codec, abi, entry)  # type: ignore[arg-type]
        return DecodedEvent(
            block_number=int(entry["blockNumber"]),
            block_hash="0x" + bytes(entry["blockHash"]).hex(),
            tx_hash="0x" + bytes(entry["transactionHash"]).hex(),
            log_index=int(entry["logIndex"]),
            contract=self.addresses[address],
            event=str(abi["name"]),
            args={k: _jsonable(v) for k, v in data["args"].items()},
        )


# --- projection ----------------------------------------------------------------------------------


class MetadataState:
    """What became of one asset's metadata read (``IndexedAsset.metadata_state``)."""

    ok = "ok"
    too_large = "too_large"  # over INDEXER_METADATA_MAX_BYTES: never read again
    invalid = "invalid"  # not a JSON document: never read again
    timeout = "timeout"  # not read within INDEXER_METADATA_TIMEOUT_SECONDS: tried again
    unavailable = "unavailable"  # IPFS down, refused, or not configured: tried again

    RETRIED = ("timeout", "unavailable")


@dataclass(frozen=True)
class MetadataRead:
    title: str | None
    state: str = MetadataState.ok
    error: str | None = None
    attempts: int = 1  # reads made so far (a remembered read keeps its count)


TitleOf = Callable[[str], MetadataRead]


def ipfs_title_reader(ipfs: IpfsClient | None, max_bytes: int = 65_536, seconds: float = 10.0) -> TitleOf:
    """Title of an asset from its metadata JSON on IPFS, best effort: the document is read with a cap
    in bytes and in time, and anything but a JSON document within both is recorded as a reason
    (:class:`MetadataState`), never raised, so one asset's metadata cannot stop the indexer."""

    def title_of(metadata_cid: str) -> MetadataRead:
        if ipfs is None:
            return MetadataRead(None, MetadataState.unavailable, "no IPFS node configured")
        try:
            raw = ipfs.cat_limited(metadata_cid, max_bytes, seconds)
        except IpfsError as exc:
            state = {"ipfs_too_large": MetadataState.too_large, "ipfs_timeout": MetadataState.timeout}.get(
                exc.code, MetadataState.unavailable
            )
            log.warning("metadata %s of an asset skipped (%s): %s", metadata_cid, state, exc.message)
            return MetadataRead(None, state, exc.message[:300])
        except InvalidCidError as exc:
            return MetadataRead(None, MetadataState.invalid, f"not a CID: {exc}"[:300])
        except Exception as exc:  # anything else from the read: recorded, tried again (bounded)
            log.warning("metadata %s of an asset not read: %r", metadata_cid, exc)
            return MetadataRead(None, MetadataState.unavailable, repr(exc)[:300])
        try:
            metadata = json.loads(raw)
        except (UnicodeDecodeError, json.JSONDecodeError) as exc:
            log.warning("metadata %s of an asset is not JSON: %s", metadata_cid, exc)
            return MetadataRead(None, MetadataState.invalid, f"not a JSON document: {exc}"[:300])
        except RecursionError:
            log.warning("metadata %s of an asset is JSON nested too deeply", metadata_cid)
            return MetadataRead(None, MetadataState.invalid, "not a JSON document: nested too deeply")
        title = metadata.get("name") if isinstance(metadata, dict) else None  # ERC-721 metadata "name"
        return MetadataRead(str(title) if title is not None else None)

    return title_of


def apply_events(session: Session, events: Iterable[DecodedEvent], title_of: TitleOf) -> None:
    """Applies events, in canonical order, to the projection tables (the caller commits)."""
    for event in events:
        handler = _HANDLERS.get((event.contract, event.event))
        if handler is not None:
            handler(session, event, title_of)
            session.flush()


def reproject(session: Session, title_of: TitleOf) -> None:
    """Empties the projections and applies every stored event again (after a rollback). Metadata
    already read (or given up on) is reused, not fetched again: a rollback costs no IPFS reads."""
    known = {
        a.metadata_cid: MetadataRead(a.title, a.metadata_state, a.metadata_error, a.metadata_attempts)
        for a in session.scalars(select(IndexedAsset))
    }
    for table in PROJECTIONS:
        session.execute(delete(table))
    rows = session.scalars(
        select(ChainEventRow).order_by(ChainEventRow.block_number, ChainEventRow.log_index)
    )
    apply_events(session, (DecodedEvent.of_row(r) for r in rows), _remembering(known, title_of))


def _remembering(known: dict[str, MetadataRead], title_of: TitleOf) -> TitleOf:
    def title(metadata_cid: str) -> MetadataRead:
        return known[metadata_cid] if metadata_cid in known else title_of(metadata_cid)

    return title


def retry_metadata(session: Session, title_of: TitleOf, max_attempts: int, limit: int = 10) -> int:
    """Reads again the metadata of up to ``limit`` assets whose last read timed out or found IPFS down,
    each at most ``max_attempts`` times in all; returns how many were tried (the caller commits)."""
    due = session.scalars(
        select(IndexedAsset)
        .where(
            IndexedAsset.metadata_state.in_(MetadataState.RETRIED),
            IndexedAsset.metadata_attempts < max_attempts,
        )
        .order_by(IndexedAsset.registered_block, IndexedAsset.asset_id)
        .limit(limit)
    ).all()
    for asset in due:
        read = title_of(asset.metadata_cid)
        asset.title, asset.metadata_state, asset.metadata_error = read.title, read.state, read.error
        asset.metadata_attempts += 1
    return len(due)


def _asset_registered(session: Session, e: DecodedEvent, title_of: TitleOf) -> None:
    a = e.args
    read = title_of(a["metadataCid"])
    session.merge(
        IndexedAsset(
            asset_id=a["assetId"],
            content_hash=a["contentHash"],
            creator=a["creator"],
            owner=a["creator"],
            parent_id=a["parentId"],
            aigc=bool(a["aigc"]),
            content_cid=a["contentCid"],
            # ImportProfileRecorded follows for any other profile.
            import_profile=import_profile_name(0),
            metadata_cid=a["metadataCid"],
            title=read.title,
            metadata_state=read.state,
            metadata_error=read.error,
            metadata_attempts=read.attempts,
            status="active",
            royalty_bps=0,
            split_json="[]",
            registered_block=e.block_number,
            registered_tx=e.tx_hash,
        )
    )


def _asset(session: Session, asset_id: str) -> IndexedAsset | None:
    return session.get(IndexedAsset, asset_id)


def _licence(session: Session, e: DecodedEvent, _: TitleOf) -> None:
    if (asset := _asset(session, e.args["assetId"])) is not None:
        asset.royalty_bps = int(e.args["royaltyBps"])


def _split(session: Session, e: DecodedEvent, _: TitleOf) -> None:
    if (asset := _asset(session, e.args["assetId"])) is not None:
        pairs = [[r, int(s)] for r, s in zip(e.args["recipients"], e.args["shares"], strict=True)]
        asset.split_json = json.dumps(pairs, separators=(",", ":"))


def _batch_registered(session: Session, e: DecodedEvent, _: TitleOf) -> None:
    """A catalogue's assets share the licence and split emitted under its first asset just before."""
    first = int(e.args["firstId"])
    if (template := _asset(session, str(first))) is None:
        return
    for asset_id in range(first + 1, first + int(e.args["count"])):
        if (asset := _asset(session, str(asset_id))) is not None:
            asset.royalty_bps, asset.split_json = template.royalty_bps, template.split_json


def _import_profile(session: Session, e: DecodedEvent, _: TitleOf) -> None:
    if (asset := _asset(session, e.args["assetId"])) is not None:
        asset.import_profile = import_profile_name(int(e.args["importProfile"]))


def _status(session: Session, e: DecodedEvent, _: TitleOf) -> None:
    if (asset := _asset(session, e.args["assetId"])) is not None:
        asset.status = ASSET_STATUS[int(e.args["current"])]


def _transfer(session: Session, e: DecodedEvent, _: TitleOf) -> None:
    if (asset := _asset(session, e.args["tokenId"])) is not None:
        asset.owner = e.args["to"]


def _source_registered(session: Session, e: DecodedEvent, _: TitleOf) -> None:
    a = e.args
    session.merge(
        IndexedSource(
            source_id=a["sourceId"],
            kind=SOURCE_KIND[int(a["kind"])],
            operator=a["operator"],
            signer=a["signer"],
            jurisdiction=bytes.fromhex(a["jurisdiction"][2:]).decode("ascii", "replace"),
            status="active",
            batch_count=0,
            last_manifest_hash=None,
            chain_broken=False,
            registered_block=e.block_number,
        )
    )


def _source_status(session: Session, e: DecodedEvent, _: TitleOf) -> None:
    if (source := session.get(IndexedSource, e.args["sourceId"])) is not None:
        source.status = SOURCE_STATUS[int(e.args["current"])]


def _signer_rotated(session: Session, e: DecodedEvent, _: TitleOf) -> None:
    if (source := session.get(IndexedSource, e.args["sourceId"])) is not None:
        source.signer = e.args["newSigner"]


def _batch_anchored(session: Session, e: DecodedEvent, _: TitleOf) -> None:
    a = e.args
    session.merge(
        IndexedBatch(
            batch_id=a["batchId"],
            source_id=a["sourceId"],
            root=a["root"],
            period_start=int(a["periodStart"]),
            period_end=int(a["periodEnd"]),
            leaf_count=int(a["leafCount"]),
            total_bytes=a["totalBytes"],
            manifest_hash=a["manifestHash"],
            prev_manifest_hash=a["prevManifestHash"],
            kind=int(a["kind"]),
            block_number=e.block_number,
            tx_hash=e.tx_hash,
        )
    )
    source = session.get(IndexedSource, a["sourceId"])
    if source is not None:
        expected = source.last_manifest_hash or ZERO32
        source.chain_broken = source.chain_broken or a["prevManifestHash"] != expected
        source.last_manifest_hash = a["manifestHash"]
        source.batch_count += 1


def _posted(session: Session, e: DecodedEvent, _: TitleOf) -> None:
    a = e.args
    session.merge(
        IndexedSettlement(
            period_id=int(a["periodId"]),
            merchant=a["merchant"],
            token=a["token"],
            root=a["root"],
            total=a["total"],
            claimed="0",
            claims=0,
            claims_open_at=int(a["claimsOpenAt"]),
            state="posted",
            block_number=e.block_number,
            tx_hash=e.tx_hash,
        )
    )


def _settlement(session: Session, e: DecodedEvent) -> IndexedSettlement | None:
    return session.get(IndexedSettlement, (int(e.args["periodId"]), e.args["merchant"]))


def _challenged(session: Session, e: DecodedEvent, _: TitleOf) -> None:
    if (settlement := _settlement(session, e)) is not None:
        settlement.state = "challenged"


def _resolved(session: Session, e: DecodedEvent, _: TitleOf) -> None:
    if (settlement := _settlement(session, e)) is not None:
        settlement.state = "upheld" if e.args["upheld"] else "cancelled"


def _claimed(session: Session, e: DecodedEvent, _: TitleOf) -> None:
    if (settlement := _settlement(session, e)) is not None:
        settlement.claimed = str(int(settlement.claimed) + int(e.args["amount"]))
        settlement.claims += 1


_HANDLERS: dict[tuple[str, str], Callable[[Session, DecodedEvent, TitleOf], None]] = {
    ("ContentRegistry", "AssetRegistered"): _asset_registered,
    ("ContentRegistry", "ImportProfileRecorded"): _import_profile,
    ("ContentRegistry", "LicenceUpdated"): _licence,
    ("ContentRegistry", "SplitUpdated"): _split,
    ("ContentRegistry", "BatchRegistered"): _batch_registered,
    ("ContentRegistry", "AssetStatusChanged"): _status,
    ("ContentRegistry", "Transfer"): _transfer,
    ("DeliveryLedger", "SourceRegistered"): _source_registered,
    ("DeliveryLedger", "SourceStatusChanged"): _source_status,
    ("DeliveryLedger", "SignerRotated"): _signer_rotated,
    ("DeliveryLedger", "BatchAnchored"): _batch_anchored,
    ("SettlementVault", "SettlementPosted"): _posted,
    ("SettlementVault", "SettlementChallenged"): _challenged,
    ("SettlementVault", "SettlementResolved"): _resolved,
    ("SettlementVault", "Claimed"): _claimed,
}


def projection_snapshot(session: Session) -> dict[str, list[dict[str, Any]]]:
    """Every projection row as plain dicts, in key order (what a rebuild must reproduce)."""
    snapshot: dict[str, list[dict[str, Any]]] = {}
    for table in PROJECTIONS:
        columns = [c.name for c in table.__table__.columns]
        keys = [getattr(table, c.name) for c in table.__table__.primary_key.columns]
        rows = session.scalars(select(table).order_by(*keys))
        snapshot[table.__tablename__] = [{c: getattr(r, c) for c in columns} for r in rows]
    return snapshot
