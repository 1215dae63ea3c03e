"""Assets: plain functions over a session, the chain client and the IPFS client."""

from __future__ import annotations

import functools
import hashlib
import json
import threading
from collections import OrderedDict
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import IO, Any

from eth_utils import to_checksum_address
from hexbytes import HexBytes
from sqlalchemy import select
from sqlalchemy.orm import Session
from web3.types import EventData

from edgeledger.assets.models import (
    CHAIN_STATUS,
    Asset,
    AssetRead,
    AssetSplitShare,
    AssetStatus,
    AssetTerritory,
    ChainRef,
    LineageEntry,
    OnChainRecord,
    Registration,
    RegistrationParams,
    SplitShare,
    Verification,
)
from edgeledger.chain.client import ChainClient, ContractRevert
from edgeledger.errors import EdgeLedgerError
from edgeledger.ipfs.cid import (
    DEFAULT_PROFILE,
    CidBuilder,
    ImportProfile,
    InvalidCidError,
    canonical_json_bytes,
    normalize_cid,
)
from edgeledger.ledger.abis import event_topic
from edgeledger.ledger.registration import import_profile_code, import_profile_name
from edgeledger.ledger.splits import SplitMismatch, splits_at
from edgeledger.territories import UnknownTerritoryError, decode_territories, encode_territories

REGISTRY = "ContentRegistry"
#: ContentRegistry's checks of a split and a licence (at registration and in updates), as API errors.
TERMS_REVERT_CODES: dict[str, tuple[str, int]] = {
    "EmptySplit": ("invalid_split", 422),
    "SplitLengthMismatch": ("invalid_split", 422),
    "TooManyRecipients": ("invalid_split", 422),
    "ZeroRecipient": ("invalid_split", 422),
    "ZeroShare": ("invalid_split", 422),
    "SharesNotWhole": ("invalid_split", 422),
    "EmptyTerritories": ("unknown_territory", 422),
    "UnknownTerritory": ("unknown_territory", 422),
    "InvalidValidityWindow": ("invalid_licence", 422),
    "RoyaltyTooHigh": ("invalid_licence", 422),
}
READ_CHUNK = 1024 * 1024
METADATA_SCHEMA = "edgeledger/asset-metadata/v1"


class AssetError(EdgeLedgerError):
    status = 422
    code = "asset_invalid"


# ----------------------------------------------------------------------------------------------
# Uploads: digest, media type
# ----------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class FileFacts:
    sha256: str  # 0x-prefixed hex
    cid: str  # CIDv1, raw leaves, base32
    size: int
    media_type: str
    import_profile: str = DEFAULT_PROFILE.name  # the IPFS import profile `cid` was computed with


def digest_to_file(
    source: IO[bytes], target: IO[bytes], max_bytes: int, profile: ImportProfile | str | None = None
) -> FileFacts:
    """Copies an upload to `target` while computing sha-256 and the IPFS CID (under `profile`, default
    legacy-cidv1) in one streaming pass."""
    sha = hashlib.sha256()
    cid = CidBuilder(profile)
    size = 0
    head = b""
    while chunk := source.read(READ_CHUNK):
        size += len(chunk)
        if size > max_bytes:
            raise AssetError(
                f"upload exceeds the limit of {max_bytes} bytes", code="upload_too_large", status=413
            )
        if len(head) < 64:
            head += chunk[: 64 - len(head)]
        sha.update(chunk)
        cid.update(chunk)
        target.write(chunk)
    if size == 0:
        raise AssetError("the uploaded file is empty", code="empty_upload", status=400)
    media_type = sniff_media_type(head)
    if media_type is None:
        raise AssetError(
            "unsupported media type: upload an image (PNG, JPEG, GIF, WebP, AVIF), a video (MP4, MOV, "
            "WebM, Matroska), audio (MP3, WAV) or a 3D model (glTF binary)",
            code="unsupported_media_type",
            status=415,
        )
    target.flush()
    return FileFacts(
        sha256="0x" + sha.hexdigest(),
        cid=cid.finalize(),
        size=size,
        media_type=media_type,
        import_profile=cid.profile.name,
    )


def sha256_of_stream(source: IO[bytes]) -> str:
    sha = hashlib.sha256()
    while chunk := source.read(READ_CHUNK):
        sha.update(chunk)
    return "0x" + sha.hexdigest()


def sha256_of_file(path: Path) -> str:
    with path.open("rb") as handle:
        return sha256_of_stream(handle)


_FTYP_BRANDS = {b"avif": "image/avif", b"avis": "image/avif", b"qt  ": "video/quicktime"}


def sniff_media_type(head: bytes) -> str | None:
    """Media type from the file's first bytes; the client's Content-Type is not trusted."""
    if head.startswith(b"\x89PNG\r\n\x1a\n"):
        return "image/png"
    if head.startswith(b"\xff\xd8\xff"):
        return "image/jpeg"
    if head[:6] in (b"GIF87a", b"GIF89a"):
        return "image/gif"
    if head[:4] == b"RIFF" and head[8:12] == b"WEBP":
        return "image/webp"
    if head[:4] == b"RIFF" and head[8:12] == b"WAVE":
        return "audio/wav"
    if head[4:8] == b"ftyp":
        return _FTYP_BRANDS.get(head[8:12], "video/mp4")
    if head.startswith(b"\x1a\x45\xdf\xa3"):
        return "video/webm" if b"webm" in head else "video/x-matroska"
    if head.startswith(b"ID3") or head[:2] in (b"\xff\xfb", b"\xff\xf3", b"\xff\xf2"):
        return "audio/mpeg"
    if head.startswith(b"glTF"):
        return "model/gltf-binary"
    return None


# ----------------------------------------------------------------------------------------------
# Registration inputs
# ----------------------------------------------------------------------------------------------


def territories_bitmap(codes: list[str]) -> int:
    try:
        return encode_territories(codes)
    except UnknownTerritoryError as exc:
        raise AssetError(str(exc), code="unknown_territory", codes=exc.codes) from None


def resolved_split(params: RegistrationParams, creator: str) -> list[SplitShare]:
    return params.split or [SplitShare(recipient=creator, bps=10_000)]


def check_licence_window(valid_from: int, valid_until: int) -> None:
    if valid_until and valid_until <= valid_from:
        raise AssetError(
            f"valid_until ({valid_until}) must be after valid_from ({valid_from}), or 0 for open-ended",
            code="invalid_licence",
        )


def metadata_document(params: RegistrationParams, facts: FileFacts, creator: str, valid_from: int) -> bytes:
    """ERC-721 metadata (tokenURI target), canonical JSON so its CID is reproducible."""
    media_field = "image" if facts.media_type.startswith("image/") else "animation_url"
    doc: dict[str, Any] = {
        "name": params.title,
        "description": params.description,
        media_field: f"ipfs://{facts.cid}",
        "properties": {
            "schema": METADATA_SCHEMA,
            "content_sha256": facts.sha256,
            "content_cid": facts.cid,
            "content_import_profile": facts.import_profile,
            "media_type": facts.media_type,
            "size_bytes": facts.size,
            "creator": creator,
            "aigc": params.aigc,
            "parent_asset_id": params.parent_asset_id,
            "licence": {
                "territories": params.territories,
                "valid_from": valid_from,
                "valid_until": params.valid_until,
                "royalty_bps": params.royalty_bps,
                "terms_cid": params.terms_cid,
            },
            "split": [s.model_dump() for s in resolved_split(params, creator)],
        },
    }
    return canonical_json_bytes(doc)


def registration_tuple(
    reg: Registration, params: RegistrationParams, valid_from: int, import_profile: str
) -> tuple[Any, ...]:
    """The `Registration` struct argument of ContentRegistry.registerAsset (`import_profile`: the
    profile both CIDs were computed with)."""
    assert reg.metadata_cid is not None
    split = resolved_split(params, reg.creator)
    licence = (
        territories_bitmap(params.territories),
        valid_from,
        params.valid_until,
        params.royalty_bps,
        params.terms_cid,
    )
    return (
        bytes.fromhex(reg.content_hash[2:]),
        reg.content_cid,
        reg.metadata_cid,
        to_checksum_address(reg.creator),
        params.parent_asset_id or 0,
        params.aigc,
        licence,
        [to_checksum_address(s.recipient) for s in split],
        [s.bps for s in split],
        import_profile_code(import_profile),
    )


# ----------------------------------------------------------------------------------------------
# Chain reads
# ----------------------------------------------------------------------------------------------


def registered_asset_id(chain: ChainClient, content_hash: str) -> int:
    registry = chain.contract(REGISTRY)
    return int(chain.call(registry.functions.assetIdOf(bytes.fromhex(content_hash[2:]))))


def chain_asset_exists(chain: ChainClient, asset_id: int) -> bool:
    registry = chain.contract(REGISTRY)
    return 0 < asset_id <= int(chain.call(registry.functions.totalAssets()))


#: Records read at a given block (by hash): a block's state never changes, so a record read at a block
#: serves every later request that finds the same latest block (popular assets between blocks). Keyed by
#: the block hash, so a reorg (or a reverted test chain) never serves a record of a vanished block.
_RECORDS_AT: OrderedDict[tuple[str, int, str], OnChainRecord] = OrderedDict()
_RECORDS_LOCK = threading.Lock()
_RECORDS_MAX = 10_000


def read_on_chain_at(chain: ChainClient, asset_id: int, block_hash: str) -> OnChainRecord:
    """The asset's record as of the block ``block_hash`` (all four reads pinned to it: consistent)."""
    key = (chain.rpc_url, asset_id, block_hash)
    with _RECORDS_LOCK:
        cached = _RECORDS_AT.get(key)
        if cached is not None:
            _RECORDS_AT.move_to_end(key)
            return cached
    record = read_on_chain(chain, asset_id, HexBytes(block_hash))
    with _RECORDS_LOCK:
        _RECORDS_AT[key] = record
        while len(_RECORDS_AT) > _RECORDS_MAX:
            _RECORDS_AT.popitem(last=False)
    return record


def read_on_chain(chain: ChainClient, asset_id: int, block: int | str | HexBytes = "latest") -> OnChainRecord:
    registry = chain.contract(REGISTRY)
    if not isinstance(block, int):
        # The split is read from events up to a block number: pin every read to that block.
        with chain.rpc("eth_getBlockByNumber"):
            block = int(chain.w3.eth.get_block(block)["number"])
    functions = registry.functions
    reads = [
        functions.getAsset(asset_id),
        functions.getLicence(asset_id),
        functions.splitHashOf(asset_id),
        functions.splitKeyOf(asset_id),
        functions.importProfileOf(asset_id),
        functions.ownerOf(asset_id),
    ]
    split_blocks: dict[int, int] | None = None
    try:
        # One round trip for every read (a JSON-RPC batch), all at the one block.
        try:
            *answers, located = chain.call_many([*reads, functions.splitBlocks([asset_id])], block)
            split_blocks = {asset_id: int(located[0])}
        except ContractRevert as exc:
            if exc.error == "ERC721NonexistentToken":
                raise
            answers = chain.call_many(reads, block)  # a registry without splitBlocks: searched for below
    except ContractRevert as exc:
        if exc.error == "ERC721NonexistentToken":
            raise AssetError(
                f"asset {asset_id} is not registered on chain", code="asset_not_found", status=404
            ) from None
        raise
    asset, licence, committed, key, profile, holder = answers
    committed_split, split_key, import_profile = bytes(committed), int(key), int(profile)
    (
        content_hash,
        creator,
        registered_at,
        status,
        aigc,
        registered_block,
        parent_id,
        content_cid,
        metadata_cid,
        reason_cid,
    ) = asset
    territories, valid_from, valid_until, royalty_bps, terms_cid = licence
    try:
        # The split's event is in the block splitBlocks names (on a registry that records it), else
        # searched for from the registration block (of the asset, or of its catalogue's first).
        recipients, shares = splits_at(
            chain.get_logs,
            registry.address,
            {asset_id: (split_key, committed_split)},
            block,
            from_block=registered_block,
            split_blocks=split_blocks,
        )[asset_id]
    except SplitMismatch as exc:
        raise AssetError(str(exc), code="chain_unreadable", status=502) from None
    return OnChainRecord(
        asset_id=asset_id,
        content_hash="0x" + bytes(content_hash).hex(),
        creator=creator,
        rights_holder=holder,
        status=CHAIN_STATUS[status],
        status_reason_cid=reason_cid,
        parent_id=parent_id,
        aigc=aigc,
        content_cid=content_cid,
        import_profile=import_profile_name(import_profile),
        metadata_cid=metadata_cid,
        registered_at=registered_at,
        registered_block=registered_block,
        territories=decode_territories(territories),
        valid_from=valid_from,
        valid_until=valid_until,
        royalty_bps=royalty_bps,
        terms_cid=terms_cid,
        split=[
            SplitShare(recipient=to_checksum_address(r), bps=b)
            for r, b in zip(recipients, shares, strict=True)
        ],
    )


def registration_event(chain: ChainClient, content_hash: str) -> EventData | None:
    """The AssetRegistered log for a content hash (indexed topic), searched from the deployment block."""
    registry = chain.contract(REGISTRY)
    event = registry.events.AssetRegistered()
    start = chain.deployment.contracts[REGISTRY].block
    # topics: the event, any asset id, this content hash (chunked over the range: ChainClient.get_logs)
    topics = ["0x" + event_topic(REGISTRY, "AssetRegistered").hex(), None, "0x" + content_hash[2:].lower()]
    logs = chain.get_logs(
        {"address": registry.address, "fromBlock": start, "toBlock": "latest", "topics": topics}
    )
    return event.process_log(logs[0]) if logs else None


def block_time(chain: ChainClient, block_number: int) -> datetime:
    with chain.rpc("eth_getBlockByNumber"):
        block = chain.w3.eth.get_block(block_number)
    return datetime.fromtimestamp(block["timestamp"], UTC)


def chain_ref(chain: ChainClient, event: EventData) -> ChainRef:
    return ChainRef(
        chain_id=chain.deployment.chain_id,
        contract_address=event["address"],
        tx_hash=event["transactionHash"].to_0x_hex(),
        block_number=event["blockNumber"],
        log_index=event["logIndex"],
        confirmations=chain.confirmations_of(event["blockNumber"]),
    )


def verify_content_hash(chain: ChainClient, content_hash: str) -> Verification:
    """Provenance of content from the chain alone: the registry's record and the registration log."""
    content_hash = normalize_hash(content_hash)
    asset_id = registered_asset_id(chain, content_hash)
    if asset_id == 0:
        return Verification(content_hash=content_hash, registered=False)
    record = read_on_chain(chain, asset_id)
    event = registration_event(chain, content_hash)
    if event is None:
        raise AssetError(
            f"asset {asset_id} has no AssetRegistered log on this node (pruned history?)",
            code="chain_history_missing",
            status=502,
        )
    return Verification(
        content_hash=content_hash,
        registered=True,
        asset_id=asset_id,
        creator=record.creator,
        rights_holder=record.rights_holder,
        status=record.status,
        registered_at=datetime.fromtimestamp(record.registered_at, UTC),
        content_cid=record.content_cid,
        metadata_cid=record.metadata_cid,
        parent_id=record.parent_id or None,
        aigc=record.aigc,
        chain=chain_ref(chain, event),
        registrar=event["args"]["registrar"],
    )


def checked_cid(value: str) -> str:
    """Canonical (CIDv1 base32) form of a CID from a caller; 422 `invalid_cid` when malformed."""
    try:
        return normalize_cid(value)
    except InvalidCidError as exc:
        raise AssetError(str(exc), code="invalid_cid", cid=value) from None


def normalize_hash(value: str) -> str:
    raw = value.lower().removeprefix("0x")
    if len(raw) != 64 or any(c not in "0123456789abcdef" for c in raw):
        raise AssetError("a content hash is 32 bytes of hex (sha-256)", code="invalid_content_hash")
    return "0x" + raw


# ----------------------------------------------------------------------------------------------
# Database
# ----------------------------------------------------------------------------------------------


def record_asset(
    session: Session,
    chain: ChainClient,
    reg: Registration,
    params: RegistrationParams,
    event: EventData,
    record: OnChainRecord | None = None,
) -> Asset:
    """Writes the asset row from its AssetRegistered log (the chain is the source of truth). `record`:
    its registry record when already read (a catalogue's items share one read of their landing block),
    else it is read here."""
    args = event["args"]
    facts = json.loads(reg.params_json)["file"]
    if record is None:
        record = read_on_chain(chain, args["assetId"])
    asset = Asset(
        id=args["assetId"],
        content_hash=reg.content_hash,
        content_cid=args["contentCid"],
        import_profile=record.import_profile,
        metadata_cid=args["metadataCid"],
        creator=args["creator"],
        owner=record.rights_holder,
        parent_id=args["parentId"] or None,
        aigc=args["aigc"],
        title=params.title,
        description=params.description,
        media_type=facts["media_type"],
        size_bytes=facts["size"],
        filename=facts["filename"],
        territories_bitmap=hex(territories_bitmap(record.territories)),
        valid_from=record.valid_from,
        valid_until=record.valid_until,
        royalty_bps=record.royalty_bps,
        terms_cid=record.terms_cid,
        status=record.status,
        chain_id=chain.deployment.chain_id,
        contract_address=event["address"],
        tx_hash=event["transactionHash"].to_0x_hex(),
        block_number=event["blockNumber"],
        log_index=event["logIndex"],
        registered_at=datetime.fromtimestamp(record.registered_at, UTC),
    )
    asset.territories = [AssetTerritory(code=c) for c in record.territories]
    asset.split = [
        AssetSplitShare(position=i, recipient=s.recipient, bps=s.bps) for i, s in enumerate(record.split)
    ]
    session.add(asset)
    return asset


def get_asset(session: Session, asset_id: int) -> Asset:
    asset = session.get(Asset, asset_id)
    if asset is None:
        raise AssetError(f"asset {asset_id} not found", code="asset_not_found", status=404)
    return asset


def find_asset_by_hash(session: Session, content_hash: str) -> Asset | None:
    return session.scalar(select(Asset).where(Asset.content_hash == content_hash))


def list_assets(
    session: Session,
    *,
    creator: str | None = None,
    content_hash: str | None = None,
    cid: str | None = None,
    territory: str | None = None,
    status: AssetStatus | None = None,
    limit: int = 50,
    offset: int = 0,
) -> list[Asset]:
    query = select(Asset).order_by(Asset.id)
    if creator:
        query = query.where(Asset.creator == to_checksum_address(creator))
    if content_hash:
        query = query.where(Asset.content_hash == normalize_hash(content_hash))
    if cid:
        cid = checked_cid(cid)
        query = query.where((Asset.content_cid == cid) | (Asset.metadata_cid == cid))
    if territory:
        query = query.join(AssetTerritory).where(AssetTerritory.code == territory.upper())
    if status:
        query = query.where(Asset.status == status)
    return list(session.scalars(query.limit(limit).offset(offset)))


def ancestors(session: Session, asset: Asset) -> list[Asset]:
    chain: list[Asset] = []
    seen = {asset.id}
    parent_id = asset.parent_id
    while parent_id is not None and parent_id not in seen:
        parent = session.get(Asset, parent_id)
        if parent is None:
            break
        chain.append(parent)
        seen.add(parent.id)
        parent_id = parent.parent_id
    return chain


def derivatives(session: Session, asset: Asset) -> list[Asset]:
    """All descendants, breadth first."""
    found: list[Asset] = []
    frontier = [asset.id]
    while frontier:
        children = list(
            session.scalars(select(Asset).where(Asset.parent_id.in_(frontier)).order_by(Asset.id))
        )
        found.extend(children)
        frontier = [c.id for c in children]
    return found


@functools.lru_cache(maxsize=1024)
def _territory_codes(bitmap_hex: str) -> tuple[str, ...]:
    return tuple(sorted(decode_territories(int(bitmap_hex, 16))))


def asset_territories(asset: Asset) -> list[str]:
    """The asset's licensed territories, sorted, from its bitmap column: no per-territory rows are loaded
    (a worldwide asset has 249; building them as ORM objects was most of a provenance read's CPU)."""
    return list(_territory_codes(asset.territories_bitmap))


def to_read(asset: Asset, confirmations: int | None = None) -> AssetRead:
    return AssetRead(
        id=asset.id,
        content_hash=asset.content_hash,
        content_cid=asset.content_cid,
        import_profile=asset.import_profile,
        metadata_cid=asset.metadata_cid,
        token_uri=f"ipfs://{asset.metadata_cid}",
        creator=asset.creator,
        owner=asset.owner,
        parent_id=asset.parent_id,
        aigc=asset.aigc,
        title=asset.title,
        description=asset.description,
        media_type=asset.media_type,
        size_bytes=asset.size_bytes,
        filename=asset.filename,
        territories=asset_territories(asset),
        valid_from=asset.valid_from,
        valid_until=asset.valid_until,
        royalty_bps=asset.royalty_bps,
        terms_cid=asset.terms_cid,
        split=[SplitShare(recipient=s.recipient, bps=s.bps) for s in asset.split],
        status=AssetStatus(asset.status),
        registered_at=asset.registered_at,
        chain=ChainRef(
            chain_id=asset.chain_id,
            contract_address=asset.contract_address,
            tx_hash=asset.tx_hash,
            block_number=asset.block_number,
            log_index=asset.log_index,
            confirmations=confirmations,
        ),
    )


def to_lineage(asset: Asset) -> LineageEntry:
    return LineageEntry(
        id=asset.id, title=asset.title, creator=asset.creator, aigc=asset.aigc, parent_id=asset.parent_id
    )


def matches_chain(asset: Asset, record: OnChainRecord) -> bool:
    return (
        asset.content_hash == record.content_hash
        and asset.creator == record.creator
        and asset.content_cid == record.content_cid
        and asset.import_profile == record.import_profile
        and asset.metadata_cid == record.metadata_cid
        and (asset.parent_id or 0) == record.parent_id
        and asset.aigc == record.aigc
        and asset_territories(asset) == sorted(record.territories)
        and asset.valid_from == record.valid_from
        and asset.valid_until == record.valid_until
        and asset.royalty_bps == record.royalty_bps
        and [(s.recipient, s.bps) for s in asset.split] == [(s.recipient, s.bps) for s in record.split]
    )


def sync_from_chain(asset: Asset, record: OnChainRecord) -> None:
    """Owner and status change on chain (transfers, arbiter decisions); the chain wins."""
    asset.owner = record.rights_holder
    asset.status = record.status
