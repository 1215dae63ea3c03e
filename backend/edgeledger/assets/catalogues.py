"""Catalogues: up to ``MAX_BATCH`` = 100 uploads registered in ONE transaction, each its own asset.

A merchant's or creator's catalogue is streamed, hashed and checked file by file as a single upload is
(same helpers, same limits), kept in the spool, and waits in ``awaiting_signature`` for the creator's
EIP-712 ``Catalogue`` signature over every item, the shared licence and split, its next nonce and a
deadline on the chain's clock (edgeledger.ledger.registration.catalogue_typed_data). The platform's
signer relays it with ``ContentRegistry.registerBatchFor``; the chain writes one asset per item, in
order, under one licence and split. Nothing is pinned before the catalogue lands; then every item's
content and metadata document are pinned from the spool (the node's CID must equal ours), and each
item's spool is dropped once both of its pins are made.

The journal: one :class:`~edgeledger.assets.models.Catalogue` row (the state of the one transaction:
shared terms, deadline, signature, transaction hash, first asset id) over one ordinary
:class:`~edgeledger.assets.models.Registration` row per item (``catalogue_id``, ``position``). Reusing
the registration journal for the items keeps crash safety simple:

- the partial unique index of open registrations holds across single registrations and catalogues, so
  the same bytes cannot be in flight twice, whichever route carries them;
- an item row has exactly a single registration's shape (CIDs, file facts, spool paths, asset id), so
  asset rows are written and spools pinned and dropped by the very code single registrations use
  (``service.record_asset``, ``flows.publish_registration``), per item, each step committed on its own;
- what is shared by the transaction (signature, tx hash, its state) is in one row, so the catalogue
  moves from one state to the next in one commit, its items' states with it.

Order, as for one asset: the journal (CIDs computed locally) is committed before any file is linked
into the spool, the spool before the typed data is answered, the signature before anything is sent,
the transaction's nonce and hash before it leaves (chain/stuck_tx.py: one stuck in the mempool goes
again at that nonce bidding more, never as a second catalogue at another nonce); asset rows are written
only from the chain's own ``AssetRegistered`` logs (all of a catalogue's in one commit), and an item's
spool is dropped only after both of its pins. Whatever dies in between, :func:`reconcile_catalogues`
finds the catalogue and finishes it (sends a signed one again, follows a sent one's receipt, publishes a
landed one's pending items) or releases an abandoned one (drops its spools; nothing of it was ever
pinned). Items of a catalogue are left alone by ``flows.reconcile_registrations``.

A per-item parent must be an asset already registered: an earlier item of the same catalogue has no id
until the catalogue lands, so it cannot be named in what the creator signs.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import tempfile
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import IO, Any

from eth_utils import to_checksum_address
from hexbytes import HexBytes
from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session
from web3.logs import DISCARD
from web3.types import TxReceipt

from edgeledger.assets import flows, service
from edgeledger.assets.flows import SIGNATURE_REVERTS, Actor
from edgeledger.assets.models import (
    CATALOGUE_OPEN_STATES,
    OPEN_STATES,
    Asset,
    Catalogue,
    CatalogueItemRead,
    CatalogueParams,
    CatalogueRead,
    CatalogueState,
    OnChainRecord,
    Registration,
    RegistrationState,
    SplitShare,
)
from edgeledger.assets.service import REGISTRY, AssetError, FileFacts
from edgeledger.chain.client import ChainClient, ChainError, ContractRevert
from edgeledger.config import Settings
from edgeledger.ipfs import IpfsClient, cid_of_bytes
from edgeledger.ledger import registration as formats

log = logging.getLogger(__name__)

#: the catalogues' noun in their waiting reasons (``catalogue_fee_capped``: chain/stuck_tx.py)
WHAT = "catalogue"

#: ContentRegistry.MAX_BATCH: the most items one registerBatchFor takes.
MAX_BATCH = 100
#: Contract errors a catalogue can cause, as API errors.
REVERT_CODES: dict[str, tuple[str, int]] = {
    **flows.REVERT_CODES,
    "EmptyBatch": ("empty_catalogue", 400),
    "BatchTooLarge": ("catalogue_too_large", 413),
}
#: An item's journal state while its catalogue is in one of the states before it lands.
ITEM_STATES: dict[str, RegistrationState] = {
    CatalogueState.spooling: RegistrationState.pinning,
    CatalogueState.awaiting_signature: RegistrationState.awaiting_signature,
    CatalogueState.signed: RegistrationState.pinned,
    CatalogueState.submitted: RegistrationState.submitted,
}


# ----------------------------------------------------------------------------------------------
# Uploads -> catalogue
# ----------------------------------------------------------------------------------------------


def register_catalogue(
    session: Session,
    chain: ChainClient,
    settings: Settings,
    *,
    actor: Actor,
    params: CatalogueParams,
    uploads: Sequence[tuple[IO[bytes], str]],
) -> Catalogue:
    """Streams every file to the spool (sha-256 and CID in one pass), refuses a catalogue the chain
    would refuse, opens the journal and leaves the catalogue awaiting the creator's signature."""
    count = len(uploads)
    if count == 0:
        raise AssetError(
            "a catalogue has at least one file (form field `files`)", code="empty_catalogue", status=400
        )
    if count > MAX_BATCH:
        raise AssetError(
            f"a catalogue has at most {MAX_BATCH} files; this one has {count}",
            code="catalogue_too_large",
            status=413,
            count=count,
            max_items=MAX_BATCH,
        )
    if params.items is not None and len(params.items) != count:
        raise AssetError(
            f"metadata.items describes {len(params.items)} files, {count} were uploaded",
            code="validation_error",
        )
    names = [filename[:255] for _, filename in uploads]
    items = [params.item(i, name) for i, name in enumerate(names)]
    creator = flows.creator_for(actor, items[0])
    valid_from = params.valid_from if params.valid_from is not None else int(datetime.now(UTC).timestamp())
    for item in items:
        flows.validate_before_pinning(chain, item, valid_from)

    spool_dir = settings.data_dir / "uploads"
    spool_dir.mkdir(parents=True, exist_ok=True)
    with contextlib.ExitStack() as stack:
        facts: list[FileFacts] = []
        spools: list[str] = []
        seen: dict[str, int] = {}
        for index, (upload, _) in enumerate(uploads):
            spool = stack.enter_context(
                tempfile.NamedTemporaryFile(dir=spool_dir, prefix="upload-", suffix=".part")
            )
            try:
                fact = service.digest_to_file(
                    upload, spool, settings.max_upload_bytes, settings.ipfs_import_profile
                )
                if fact.sha256 in seen:
                    first = seen[fact.sha256]
                    raise AssetError(
                        f"{names[index]!r} (file {index + 1}) has the same content as {names[first]!r} "
                        f"(file {first + 1})",
                        code="duplicate_content",
                        status=409,
                        content_hash=fact.sha256,
                        same_as=names[first],
                    )
                seen[fact.sha256] = index
                flows.reject_duplicate(session, chain, fact.sha256)
                _reject_in_flight(session, fact.sha256)
            except AssetError as exc:
                raise _naming(exc, names[index], index) from None
            facts.append(fact)
            spools.append(spool.name)
        flows.ensure_upload_room(session, settings, spool_dir, creator, [fact.sha256 for fact in facts])
        metadata = [
            service.metadata_document(item, fact, creator, valid_from)
            for item, fact in zip(items, facts, strict=True)
        ]
        # On the chain's clock, which registerBatchFor's `block.timestamp > deadline` check reads.
        deadline = chain.latest_timestamp() + settings.pending_registration_max_age_seconds
        cat = _open_journal(
            session, actor, params, items, facts, names, metadata, creator, valid_from, deadline
        )
        # Nothing goes to IPFS before the catalogue lands: the bytes wait in the items' spools.
        _keep_spools(session, spool_dir, cat, spools, metadata)
    return cat


def _naming(exc: AssetError, filename: str, index: int) -> AssetError:
    """The same refusal, naming the file it is about."""
    return AssetError(
        f"{filename!r} (file {index + 1}): {exc.message}",
        code=exc.code,
        status=exc.status,
        **{**exc.details, "filename": filename, "position": index},
    )


def _reject_in_flight(session: Session, content_hash: str) -> None:
    reg = session.scalar(
        select(Registration).where(
            Registration.content_hash == content_hash, Registration.state.in_(list(OPEN_STATES))
        )
    )
    if reg is not None:
        where = f" in catalogue {reg.catalogue_id}" if reg.catalogue_id is not None else ""
        raise AssetError(
            f"registration {reg.id}{where} of this content is already {reg.state}",
            code="registration_in_progress",
            status=409,
            registration_id=reg.id,
            catalogue_id=reg.catalogue_id,
        )


def _open_journal(
    session: Session,
    actor: Actor,
    params: CatalogueParams,
    items: list[Any],
    facts: list[FileFacts],
    names: list[str],
    metadata: list[bytes],
    creator: str,
    valid_from: int,
    deadline: int,
) -> Catalogue:
    """The catalogue row and its items' rows, with the CIDs computed locally, in one commit."""
    cat = Catalogue(
        creator=creator,
        mode=params.mode,
        state=CatalogueState.spooling,
        item_count=len(items),
        params_json=json.dumps(
            {"params": params.model_dump(mode="json"), "valid_from": valid_from, "deadline": deadline}
        ),
        attempts=1,
        requested_by=actor.user_id,
    )
    session.add(cat)
    session.flush()
    for position, (item, fact, name, doc) in enumerate(zip(items, facts, names, metadata, strict=True)):
        payload = {
            "params": item.model_dump(mode="json"),
            "valid_from": valid_from,
            "deadline": deadline,
            "file": {
                "media_type": fact.media_type,
                "size": fact.size,
                "filename": name,
                "import_profile": fact.import_profile,
            },
        }
        session.add(
            Registration(
                content_hash=fact.sha256,
                content_cid=fact.cid,
                metadata_cid=cid_of_bytes(doc, fact.import_profile),
                creator=creator,
                mode=params.mode,
                state=RegistrationState.pinning,
                params_json=json.dumps(payload),
                attempts=1,
                requested_by=actor.user_id,
                catalogue_id=cat.id,
                position=position,
            )
        )
    try:
        session.commit()
    except IntegrityError:
        session.rollback()
        raise AssetError(
            "another registration of content in this catalogue started at the same moment",
            code="registration_in_progress",
            status=409,
        ) from None
    session.refresh(cat)
    return cat


def _keep_spools(
    session: Session, spool_dir: Path, cat: Catalogue, spools: list[str], metadata: list[bytes]
) -> None:
    """Links every upload (hard links to the spooled files) and writes its metadata document beside its
    item's row, records where, and opens the catalogue for the creator's signature (one commit)."""
    for item, path, doc in zip(cat.items, spools, metadata, strict=True):
        content = spool_dir / f"registration-{item.id}.content"
        meta = spool_dir / f"registration-{item.id}.metadata.json"
        meta.write_bytes(doc)
        content.unlink(missing_ok=True)
        os.link(path, content)
        payload = json.loads(item.params_json)
        payload["spool"] = {
            "content": str(content),
            "metadata": str(meta),
            "profile": payload["file"]["import_profile"],
        }
        item.params_json = json.dumps(payload)
    _set_state(cat, CatalogueState.awaiting_signature)
    session.commit()


def _set_state(cat: Catalogue, state: CatalogueState) -> None:
    """Moves the catalogue, and every item not yet on chain with it."""
    cat.state = state
    item_state = ITEM_STATES.get(state)
    if item_state is not None:
        for item in cat.items:
            if item.asset_id is None and item.state in OPEN_STATES:
                item.state = item_state


# ----------------------------------------------------------------------------------------------
# The creator's signature -> registerBatchFor -> assets -> pins
# ----------------------------------------------------------------------------------------------


def _payload(cat: Catalogue) -> dict[str, Any]:
    payload: dict[str, Any] = json.loads(cat.params_json)
    return payload


def _arguments(cat: Catalogue) -> tuple[list[tuple[Any, ...]], tuple[Any, ...], list[str], list[int]]:
    """``registerBatchFor``'s items, licence, recipients and shares: what the creator signs."""
    payload = _payload(cat)
    params = CatalogueParams.model_validate(payload["params"])
    items = []
    for item in cat.items:
        own, _ = flows.params_of(item)
        assert item.metadata_cid is not None
        items.append(
            (
                bytes.fromhex(item.content_hash[2:]),
                item.content_cid,
                item.metadata_cid,
                own.parent_asset_id or 0,
                own.aigc,
                formats.import_profile_code(flows.import_profile_of(item)),
            )
        )
    licence = (
        service.territories_bitmap(params.territories),
        int(payload["valid_from"]),
        params.valid_until,
        params.royalty_bps,
        params.terms_cid,
    )
    split = params.split or [SplitShare(recipient=cat.creator, bps=10_000)]
    return items, licence, [to_checksum_address(s.recipient) for s in split], [s.bps for s in split]


def catalogue_typed_data(chain: ChainClient, cat: Catalogue) -> dict[str, Any]:
    """The EIP-712 ``Catalogue`` typed data the creator signs (``eth_signTypedData_v4``): every item,
    the licence and split, the creator's next nonce on chain and the catalogue's deadline."""
    registry = chain.contract(REGISTRY)
    nonce = int(chain.call(registry.functions.nonces(to_checksum_address(cat.creator))))
    items, licence, recipients, shares = _arguments(cat)
    return formats.catalogue_typed_data(
        cat.creator,
        items,
        licence,
        recipients,
        shares,
        nonce=nonce,
        deadline=int(_payload(cat)["deadline"]),
        chain_id=chain.deployment.chain_id,
        contract=registry.address,
    )


def catalogue_call(chain: ChainClient, cat: Catalogue) -> Any:
    """``registerBatchFor`` with the creator's signature kept on the catalogue row."""
    payload = _payload(cat)
    items, licence, recipients, shares = _arguments(cat)
    return chain.contract(REGISTRY).functions.registerBatchFor(
        items,
        licence,
        recipients,
        shares,
        to_checksum_address(cat.creator),
        int(payload["deadline"]),
        HexBytes(payload["signature"]),
    )


def submit_signature(
    session: Session, chain: ChainClient, ipfs: IpfsClient, cat: Catalogue, signature: str
) -> list[Asset]:
    """The creator's signature arrived: keep it with the catalogue, then relay the catalogue."""
    if cat.state != CatalogueState.awaiting_signature:
        raise AssetError(
            f"catalogue {cat.id} is {cat.state}", code="catalogue_not_awaiting_signature", status=409
        )
    _check_signature(chain, cat, signature)
    payload = _payload(cat)
    payload["signature"] = signature
    cat.params_json = json.dumps(payload)
    _set_state(cat, CatalogueState.signed)
    cat.error_code = cat.error_message = None
    session.commit()
    return submit_catalogue(session, chain, ipfs, cat)


def _check_signature(chain: ChainClient, cat: Catalogue, signature: str) -> None:
    typed = catalogue_typed_data(chain, cat)
    flows.require_creator_signature(
        chain, cat.creator, typed, signature, again=f"GET /assets/catalogues/{cat.id}"
    )


def submit_catalogue(session: Session, chain: ChainClient, ipfs: IpfsClient, cat: Catalogue) -> list[Asset]:
    """Broadcasts ``registerBatchFor``, commits the tx hash before waiting for the receipt, then records
    the assets from the chain. A revert closes the catalogue (or recognises our own earlier landing); an
    outage keeps it open for the reconciler."""
    call = catalogue_call(chain, cat)
    try:
        tx_hash = flows.send_journalled(session, chain, cat, call, WHAT)  # recorded before it leaves
        _set_state(cat, CatalogueState.submitted)
        session.commit()
        result = chain.wait_for_receipt(tx_hash, replay=call, sender=chain.signer_address)
    except ContractRevert as exc:
        return _settle_revert(session, chain, ipfs, cat, exc)
    except ChainError as exc:
        flows.record_error(session, cat, exc)
        raise ChainError(
            f"{exc.message}; catalogue {cat.id} is kept ({cat.state}) and finished once the chain answers",
            code=exc.code,
            status=exc.status,
            catalogue_id=cat.id,
            state=cat.state,
        ) from exc
    return finish_from_chain(session, chain, ipfs, cat, result.receipt)


def finish_from_chain(
    session: Session, chain: ChainClient, ipfs: IpfsClient, cat: Catalogue, receipt: TxReceipt | None = None
) -> list[Asset]:
    """Writes every item's asset row from its ``AssetRegistered`` log, all in one commit, then publishes
    the items to IPFS. The logs come from the landing receipt (given, or :func:`_landing_receipt`); an
    item missing from it is searched by its content hash."""
    events: dict[str, Any] = {}
    shared: dict[int, OnChainRecord] = {}
    if receipt is None and any(
        service.find_asset_by_hash(session, i.content_hash) is None for i in cat.items
    ):
        receipt = _landing_receipt(chain, cat)
    if receipt is not None:
        events, shared = _landing(chain, receipt)
    assets = []
    for item in cat.items:
        asset = service.find_asset_by_hash(session, item.content_hash)
        if asset is None:
            event = events.get(item.content_hash) or service.registration_event(chain, item.content_hash)
            if event is None:
                raise ChainError("catalogue not found on chain yet", code="chain_timeout", status=504)
            params, _ = flows.params_of(item)
            record = shared.get(int(event["args"]["assetId"]))
            asset = service.record_asset(session, chain, item, params, event, record)
        item.asset_id = asset.id
        if item.state != RegistrationState.registered:
            item.state = RegistrationState.pinning
        assets.append(asset)
    cat.first_asset_id = min(a.id for a in assets)
    cat.state = CatalogueState.pinning
    cat.error_code = cat.error_message = None
    session.commit()
    publish(session, ipfs, cat)
    return assets


def _landing_receipt(chain: ChainClient, cat: Catalogue) -> TxReceipt | None:
    """The receipt of the transaction that registered the catalogue, for a caller without it (the
    reconciler, a retry that found the catalogue landed): the recorded transaction's, when it
    succeeded; else the one that logged the first item's ``AssetRegistered`` (one log search for the
    whole catalogue, not one per item: a catalogue lands whole, in one transaction)."""
    if cat.tx_hash:
        receipt = chain.receipt_if_mined(cat.tx_hash)
        if receipt is not None and receipt["status"] == 1:
            return receipt
    event = service.registration_event(chain, cat.items[0].content_hash)
    return None if event is None else chain.receipt_if_mined(event["transactionHash"].to_0x_hex())


def _landing(chain: ChainClient, receipt: TxReceipt) -> tuple[dict[str, Any], dict[int, OnChainRecord]]:
    """The catalogue's ``AssetRegistered`` logs by content hash, and every item's registry record as of
    the landing block: one read of the first item's (the licence, split, holder and time every item
    of a catalogue shares when it lands), with each item's import profile from its own
    ``ImportProfileRecorded`` log (none: ``legacy-cidv1``)."""
    registry = chain.contract(REGISTRY)
    registered = registry.events.AssetRegistered().process_receipt(receipt, errors=DISCARD)
    if not registered:
        return {}, {}
    events = {"0x" + bytes(e["args"]["contentHash"]).hex(): e for e in registered}
    profiles = {
        int(e["args"]["assetId"]): int(e["args"]["importProfile"])
        for e in registry.events.ImportProfileRecorded().process_receipt(receipt, errors=DISCARD)
    }
    first = min(int(e["args"]["assetId"]) for e in registered)
    record = service.read_on_chain(chain, first, int(receipt["blockNumber"]))
    shared = {
        int(e["args"]["assetId"]): record.model_copy(
            update={
                "asset_id": int(e["args"]["assetId"]),
                "import_profile": formats.import_profile_name(profiles.get(int(e["args"]["assetId"]), 0)),
            }
        )
        for e in registered
    }
    return events, shared


def publish(session: Session, ipfs: IpfsClient, cat: Catalogue) -> None:
    """Pins each landed item's content and metadata from its spool and drops the spool
    (``flows.publish_registration``, committed per item); the catalogue is `registered` once every item
    is. IPFS failing leaves the rest `pinning` for the reconciler (stopping at the first failure)."""
    for item in cat.items:
        if item.state == RegistrationState.pinning and item.asset_id is not None:
            flows.publish_registration(session, ipfs, item)
            if item.state != RegistrationState.registered:
                cat.error_code, cat.error_message = item.error_code, item.error_message
                session.commit()
                log.warning("catalogue %s: on chain, items not yet published to IPFS", cat.id)
                return
    cat.state = CatalogueState.registered
    cat.error_code = cat.error_message = None
    session.commit()


def _settle_revert(
    session: Session, chain: ChainClient, ipfs: IpfsClient, cat: Catalogue, exc: ContractRevert
) -> list[Asset]:
    if _landed_ours(chain, cat):
        # An earlier submission of this very catalogue landed first (a retry after a crash): the nonce
        # it used is spent, so the retry reverts, whichever error it names.
        return finish_from_chain(session, chain, ipfs, cat)
    if exc.error in SIGNATURE_REVERTS:
        _set_state(cat, CatalogueState.awaiting_signature)
        raise flows.ask_signature_again(session, cat, exc, "catalogue") from exc
    if exc.error == "AlreadyRegistered":
        raise _front_run(session, chain, cat, exc) from exc
    code, status = REVERT_CODES.get(exc.error, ("contract_revert", 422))
    error = AssetError(exc.message, code=code, status=status, error=exc.error, args=exc.error_args)
    if status < 500:
        release_catalogue(session, cat, error)
    else:
        flows.record_error(session, cat, error)
    raise error from exc


def _front_run(
    session: Session, chain: ChainClient, cat: Catalogue, exc: ContractRevert | None
) -> AssetError:
    """An item's content went to someone else's registration after the catalogue passed its duplicate
    checks: reported as front-run, naming the item and the other asset; the catalogue is released (its
    creator uploads it again without that item, and disputes the other asset with the arbiter)."""
    for item in cat.items:
        asset_id = service.registered_asset_id(chain, item.content_hash)
        if asset_id:
            record = service.read_on_chain(chain, asset_id)
            filename = json.loads(item.params_json)["file"]["filename"]
            error = AssetError(
                f"asset {asset_id} registered the content of {filename!r} (item {item.position}) for "
                f"{record.creator} after this catalogue was uploaded: reported as front-run; dispute it "
                "with the arbiter",
                code="front_run",
                status=409,
                asset_id=asset_id,
                holder=record.creator,
                filename=filename,
                position=item.position,
                content_hash=item.content_hash,
            )
            release_catalogue(session, cat, error)
            return error
    error = AssetError(
        str(exc.message if exc else "already registered"), code="duplicate_content", status=409
    )
    release_catalogue(session, cat, error)
    return error


def _landed_ours(chain: ChainClient, cat: Catalogue) -> bool:
    """Whether this catalogue is on chain: its first item registered for its creator with its metadata
    (a catalogue lands whole or not at all; every item carries the catalogue's creator)."""
    return flows.chain_record_is_ours(chain, cat.items[0])


def catalogue_read(chain: ChainClient | None, cat: Catalogue) -> CatalogueRead:
    typed = None
    if chain is not None and cat.state == CatalogueState.awaiting_signature:
        typed = catalogue_typed_data(chain, cat)
    items = []
    for item in cat.items:
        file = json.loads(item.params_json)["file"]
        items.append(
            CatalogueItemRead(
                position=item.position or 0,
                registration_id=item.id,
                state=RegistrationState(item.state),
                filename=file["filename"],
                content_hash=item.content_hash,
                content_cid=item.content_cid,
                metadata_cid=item.metadata_cid,
                import_profile=file["import_profile"],
                asset_id=item.asset_id,
            )
        )
    return CatalogueRead(
        id=cat.id,
        state=CatalogueState(cat.state),
        mode=cat.mode,  # type: ignore[arg-type]
        creator=cat.creator,
        item_count=cat.item_count,
        tx_hash=cat.tx_hash,
        first_asset_id=cat.first_asset_id,
        attempts=cat.attempts,
        error_code=cat.error_code,
        error_message=cat.error_message,
        items=items,
        typed_data=typed,
    )


# ----------------------------------------------------------------------------------------------
# Releasing and reconciling
# ----------------------------------------------------------------------------------------------


def release_catalogue(session: Session, cat: Catalogue, reason: Exception) -> None:
    """Closes a catalogue that did not land, and its items, with the reason. Nothing of it was pinned
    (pins follow the landing), so only the spools go: dropped first, so a crash before the commit
    leaves an open row that is released again, never a file no row names."""
    for item in cat.items:
        flows.drop_spool(item)
    for item in cat.items:
        if item.state in OPEN_STATES:
            flows.record_error(session, item, reason, commit=False)
            item.state = RegistrationState.released
    flows.record_error(session, cat, reason, commit=False)
    cat.state = CatalogueState.released
    session.commit()


def reconcile_catalogues(
    session: Session,
    chain: ChainClient,
    ipfs: IpfsClient,
    settings: Settings,
    *,
    now: datetime | None = None,
    grace_seconds: float = 60.0,
) -> dict[str, int]:
    """Finishes or releases every open catalogue left behind (crash, outage, abandoned signature).

    Catalogues touched within `grace_seconds` are left to the request that is working on them.
    """
    now = now or datetime.now(UTC)
    stale = now - timedelta(seconds=grace_seconds)
    rows = session.scalars(
        select(Catalogue)
        .where(Catalogue.state.in_(list(CATALOGUE_OPEN_STATES)), Catalogue.updated_at <= stale)
        .order_by(Catalogue.id)
    ).all()
    return flows.reconcile_rows(
        session,
        settings,
        "catalogue",
        rows,
        lambda cat: _reconcile_one(session, chain, ipfs, settings, cat, now),
        lambda cat: cat.state in CATALOGUE_OPEN_STATES,
    )


def _reconcile_one(
    session: Session,
    chain: ChainClient,
    ipfs: IpfsClient,
    settings: Settings,
    cat: Catalogue,
    now: datetime,
) -> str:
    if cat.state == CatalogueState.pinning:
        publish(session, ipfs, cat)  # on chain already: publish the spooled items
        return "registered" if cat.state == CatalogueState.registered else "deferred"
    if cat.state == CatalogueState.spooling:
        # The request died while keeping the files: only the creator uploading again can resume it.
        error = AssetError("upload interrupted before the catalogue was kept", code="upload_interrupted")
        release_catalogue(session, cat, error)
        return "released"
    if service.registered_asset_id(chain, cat.items[0].content_hash):
        if _landed_ours(chain, cat):
            finish_from_chain(session, chain, ipfs, cat)
            return "registered" if cat.state == CatalogueState.registered else "deferred"
        _front_run(session, chain, cat, None)
        return "released"
    if (now - cat.created_at).total_seconds() > settings.pending_registration_max_age_seconds:
        if cat.tx_hash and flows.tx_waiting(session, chain, cat):
            return "deferred"  # it may still land (past its deadline, it reverts): released after
        error = AssetError("not registered in time; spools dropped", code="registration_expired")
        release_catalogue(session, cat, error)
        return "released"
    if cat.state == CatalogueState.submitted and cat.tx_hash:
        waiting = flows.follow_journalled(
            session, chain, settings, cat, lambda: catalogue_call(chain, cat), WHAT
        )
        if waiting is not None:  # in the mempool: never a second; the same one bidding more once stuck
            return waiting
        # Reverted, or dropped: sent again with the signature kept (at its nonce while that is free), or
        # the creator is asked again.
        signed = "signature" in _payload(cat)
        _set_state(cat, CatalogueState.signed if signed else CatalogueState.awaiting_signature)
        cat.tx_hash = cat.tx_prev_hash = None
        session.commit()
    if cat.state == CatalogueState.signed and "signature" in _payload(cat):
        cat.attempts += 1
        session.commit()
        submit_catalogue(session, chain, ipfs, cat)
        return "retried"
    return "deferred"
