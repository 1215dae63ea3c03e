"""Registration, end to end: journal + spool -> creator's signature -> chain -> asset row -> IPFS pins,
resumable at every step.

The platform's signer registers only what the creator signed: every registration waits in
``awaiting_signature`` for the creator's EIP-712 ``Registration`` signature over exactly this content,
CIDs, terms, its next nonce and a deadline (``PENDING_REGISTRATION_MAX_AGE_SECONDS`` ahead of the chain's
clock, the latest block's timestamp; edgeledger.ledger.registration; the typed data is in the
registration's read model), then relays it with ``ContentRegistry.registerFor`` (docs/registration.md).
Neither a stolen registrar key nor a copied transaction can register anything for anyone else. The
signature is kept with the journal row, so a dropped transaction is sent again without asking again.

Nothing is published before the registration lands: the upload and its metadata document wait in the
journal's spool (``DATA_DIR/uploads/registration-<id>.*``, next to the row that names them), so nobody
can read the bytes from IPFS and register them first. Once the chain has the registration, the content
and metadata are pinned from the spool (the node's CID must equal ours) and the spool is dropped.

Order matters for "nothing lost": the journal row (with the CIDs computed locally) and its spool are
committed before anything is sent, the transaction hash is committed before its receipt is awaited, the
asset row is written only from the chain's own log, and the spool is dropped only after both pins.
Whatever dies in between, :func:`reconcile_registrations` finds the journal row and finishes the
registration, publishes a landed one whose pins are missing (``pinning`` with an asset id), or releases
an abandoned one (its spool, and any pin only it used).
"""

from __future__ import annotations

import json
import logging
import os
import stat
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import IO, Any, Protocol, TypeVar

from eth_account import Account
from eth_account.messages import encode_typed_data
from eth_utils import to_checksum_address
from hexbytes import HexBytes
from sqlalchemy import func, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from edgeledger.assets import service
from edgeledger.assets.models import (
    OPEN_STATES,
    Asset,
    Registration,
    RegistrationMode,
    RegistrationParams,
    RegistrationRead,
    RegistrationState,
)
from edgeledger.assets.service import REGISTRY, AssetError, FileFacts
from edgeledger.chain import stuck_tx
from edgeledger.chain.client import ChainClient, ChainError, ContractRevert
from edgeledger.chain.stuck_tx import TxSlot
from edgeledger.config import Settings
from edgeledger.db import exclusive_work
from edgeledger.ipfs import DEFAULT_PROFILE, IpfsClient, IpfsError, cid_of_bytes
from edgeledger.ledger import registration as formats

log = logging.getLogger(__name__)

#: the registrations' noun in their waiting reasons (``registration_fee_capped``: chain/stuck_tx.py)
WHAT = "registration"

# Contract errors a creator can cause, as API errors.
REVERT_CODES: dict[str, tuple[str, int]] = {
    "AlreadyRegistered": ("duplicate_content", 409),
    "UnknownParent": ("unknown_parent", 422),
    **service.TERMS_REVERT_CODES,
    "AccessControlUnauthorizedAccount": ("registrar_role_missing", 503),
}
#: Reverts that only a new signature from the creator can cure: the registration waits for one again.
SIGNATURE_REVERTS: dict[str, str] = {
    "InvalidSignature": "invalid_signature",
    "SignatureExpired": "signature_expired",
}


@dataclass(frozen=True)
class Actor:
    """Who asks: their wallet address (None for service accounts) and whether they are an admin."""

    user_id: int | None
    address: str | None
    is_admin: bool


@dataclass(frozen=True)
class RegistrationOutcome:
    registration: Registration
    asset: Asset | None


# ----------------------------------------------------------------------------------------------
# Upload -> registration
# ----------------------------------------------------------------------------------------------


def register_upload(
    session: Session,
    chain: ChainClient,
    ipfs: IpfsClient,
    settings: Settings,
    *,
    actor: Actor,
    params: RegistrationParams,
    upload: IO[bytes],
    filename: str,
) -> RegistrationOutcome:
    creator = creator_for(actor, params)
    valid_from = params.valid_from if params.valid_from is not None else int(datetime.now(UTC).timestamp())
    validate_before_pinning(chain, params, valid_from)

    uploads = settings.data_dir / "uploads"
    uploads.mkdir(parents=True, exist_ok=True)
    with tempfile.NamedTemporaryFile(dir=uploads, prefix="upload-", suffix=".part") as spool:
        facts = service.digest_to_file(upload, spool, settings.max_upload_bytes, settings.ipfs_import_profile)
        ensure_upload_room(session, settings, uploads, creator, [facts.sha256])
        reject_duplicate(session, chain, facts.sha256)
        metadata = service.metadata_document(params, facts, creator, valid_from)
        # On the chain's clock, which registerFor's `block.timestamp > deadline` check reads (not ours).
        deadline = chain.latest_timestamp() + settings.pending_registration_max_age_seconds
        reg = _open_journal(session, actor, params, facts, creator, valid_from, filename, metadata, deadline)
        # Nothing goes to IPFS before the registration lands: the bytes wait in the journal's spool.
        keep_spool(session, uploads, reg, spool.name, metadata, facts.import_profile)
    # Whoever uploaded (the creator's wallet session, or an admin for a named creator), the chain only
    # takes the registration with the creator's own signature.
    reg.state = RegistrationState.awaiting_signature
    session.commit()
    return RegistrationOutcome(reg, None)


def ensure_upload_room(
    session: Session, settings: Settings, uploads: Path, creator: str, content_hashes: Sequence[str]
) -> None:
    """Bounds the disk that uploads waiting for their creator's signature take (docs/limits.md). Checked
    once the upload is spooled, as its size is known only then (a refusal drops the spooled files):

    * a creator has at most ``PENDING_REGISTRATIONS_PER_CREATOR`` open registrations, these included (429
      ``pending_registrations_limit``; uploading again the content of an open one is not a new one);
    * the spool folder holds at most ``UPLOAD_SPOOL_MAX_BYTES``, these uploads included (507
      ``upload_spool_full``): whatever number of wallets signs in, the spool's disk is bounded.
    """
    others = int(
        session.scalar(
            select(func.count())
            .select_from(Registration)
            .where(
                func.lower(Registration.creator) == creator.lower(),
                Registration.state.in_(list(OPEN_STATES)),
                Registration.content_hash.not_in(list(content_hashes)),
            )
        )
        or 0
    )
    limit = settings.pending_registrations_per_creator
    if others + len(content_hashes) > limit:
        raise AssetError(
            f"{creator} already has {others} registration(s) waiting for a signature or the chain (at most "
            f"{limit}): sign them, or wait until they expire",
            code="pending_registrations_limit",
            status=429,
            pending=others,
            limit=limit,
        )
    used = spool_bytes(uploads)
    if used > settings.upload_spool_max_bytes:
        raise AssetError(
            "the server's spool of uploads waiting for signatures is full; try again later",
            code="upload_spool_full",
            status=507,
        )


def spool_bytes(folder: Path) -> int:
    """Bytes of the regular files in ``folder``, each file once (a kept upload is a hard link to its
    spooled file while both names exist)."""
    inodes: set[int] = set()
    total = 0
    with os.scandir(folder) as entries:
        for entry in entries:
            try:
                info = entry.stat(follow_symlinks=False)
            except FileNotFoundError:  # dropped meanwhile
                continue
            if stat.S_ISREG(info.st_mode) and info.st_ino not in inodes:
                inodes.add(info.st_ino)
                total += info.st_size
    return total


def keep_spool(
    session: Session, uploads: Path, reg: Registration, path: str, metadata: bytes, profile: str
) -> None:
    """Keeps the upload (a hard link to the spooled file, same folder) and its metadata document beside
    the journal row until the registration lands, and records where (committed with the row)."""
    uploads.mkdir(parents=True, exist_ok=True)
    content = uploads / f"registration-{reg.id}.content"
    meta = uploads / f"registration-{reg.id}.metadata.json"
    meta.write_bytes(metadata)
    content.unlink(missing_ok=True)  # a resumed upload replaces what an earlier attempt left
    os.link(path, content)
    payload = _payload(reg)
    payload["spool"] = {"content": str(content), "metadata": str(meta), "profile": profile}
    reg.params_json = json.dumps(payload)
    session.commit()


def drop_spool(reg: Registration) -> None:
    spool = _payload(reg).get("spool") or {}
    for kind in ("content", "metadata"):
        if kind in spool:
            Path(spool[kind]).unlink(missing_ok=True)


def publish_registration(session: Session, ipfs: IpfsClient, reg: Registration) -> None:
    """Pins the landed registration's content and metadata from the spool (with the import profile the
    CIDs were computed with, refusing a node CID other than ours), then drops the spool. Until it
    succeeds the row stays `pinning` with its asset id, and the reconciler tries again."""
    spool = _payload(reg).get("spool")
    if spool is None:  # registered before registrations waited in a spool: pinned at upload
        reg.state = RegistrationState.registered
        session.commit()
        return
    profile = spool["profile"]
    try:
        _pin_expecting(ipfs, lambda: ipfs.add_file(spool["content"], profile), reg.content_cid, profile)
        metadata = Path(spool["metadata"]).read_bytes()
        _pin_expecting(ipfs, lambda: ipfs.add_bytes(metadata, profile), reg.metadata_cid or "", profile)
    except (IpfsError, AssetError, OSError) as exc:
        reg.state = RegistrationState.pinning
        record_error(session, reg, exc)
        log.warning("registration %s: on chain, content not yet published to IPFS: %s", reg.id, exc)
        return
    reg.state = RegistrationState.registered
    reg.error_code = reg.error_message = None
    session.commit()
    drop_spool(reg)


def creator_for(actor: Actor, params: RegistrationParams) -> str:
    creator = params.creator or actor.address
    if creator is None:
        raise AssetError("name the creator's address (this account has no wallet)", code="creator_required")
    creator = to_checksum_address(creator)
    if not actor.is_admin and (actor.address is None or creator != to_checksum_address(actor.address)):
        raise AssetError("creators register assets for themselves only", code="forbidden", status=403)
    if params.mode == RegistrationMode.wallet and actor.address is None:
        raise AssetError("wallet mode needs a wallet-signed-in creator", code="creator_required")
    return creator


def validate_before_pinning(chain: ChainClient, params: RegistrationParams, valid_from: int) -> None:
    """Everything the contract would reject, checked before a byte is pinned."""
    service.territories_bitmap(params.territories)
    service.check_licence_window(valid_from, params.valid_until)
    if params.parent_asset_id is not None and not service.chain_asset_exists(chain, params.parent_asset_id):
        raise AssetError(
            f"parent asset {params.parent_asset_id} is not registered",
            code="unknown_parent",
            parent_asset_id=params.parent_asset_id,
        )


def reject_duplicate(session: Session, chain: ChainClient, content_hash: str) -> None:
    existing = service.find_asset_by_hash(session, content_hash)
    asset_id = existing.id if existing else service.registered_asset_id(chain, content_hash)
    if asset_id:
        raise AssetError(
            f"this content is already registered as asset {asset_id}",
            code="duplicate_content",
            status=409,
            asset_id=asset_id,
            content_hash=content_hash,
        )


def _open_journal(
    session: Session,
    actor: Actor,
    params: RegistrationParams,
    facts: FileFacts,
    creator: str,
    valid_from: int,
    filename: str,
    metadata: bytes,
    deadline: int,
) -> Registration:
    """Creates the journal row, or resumes the creator's own unfinished attempt for the same bytes."""
    payload = json.dumps(
        {
            "params": params.model_dump(mode="json"),
            "valid_from": valid_from,
            "deadline": deadline,
            "file": {
                "media_type": facts.media_type,
                "size": facts.size,
                "filename": filename[:255],
                "import_profile": facts.import_profile,
            },
        }
    )
    reg = session.scalar(
        select(Registration).where(
            Registration.content_hash == facts.sha256, Registration.state.in_(list(OPEN_STATES))
        )
    )
    if reg is not None:
        resumable = (
            reg.state in (RegistrationState.pinning, RegistrationState.pinned)
            and reg.creator == creator
            and reg.catalogue_id is None  # an item of a catalogue goes with its catalogue
        )
        if not resumable:
            where = f" (item of catalogue {reg.catalogue_id})" if reg.catalogue_id is not None else ""
            raise AssetError(
                f"registration {reg.id}{where} for this content is already {reg.state}",
                code="registration_in_progress",
                status=409,
                registration_id=reg.id,
            )
        reg.attempts += 1
    else:
        reg = Registration(content_hash=facts.sha256, creator=creator, requested_by=actor.user_id, attempts=1)
        session.add(reg)
    reg.content_cid = facts.cid
    reg.metadata_cid = cid_of_bytes(metadata, facts.import_profile)
    reg.mode = params.mode
    reg.state = RegistrationState.pinning
    reg.params_json = payload
    reg.error_code = reg.error_message = None
    try:
        session.commit()
    except IntegrityError:
        session.rollback()
        raise AssetError(
            "another registration of this content started at the same moment",
            code="registration_in_progress",
            status=409,
        ) from None
    return reg


def _pin_expecting(ipfs: IpfsClient, add: Callable[[], str], expected: str, profile: str) -> None:
    """Runs `add`; a CID other than ours is unpinned and refused, never recorded.

    The refusal says whether the node can build the profile's layout at all (a node that ignores
    `max-file-links`, such as js-ipfs, cannot build unixfs-v1-2025 files over 174 chunks)."""
    got = add()
    if got != expected:
        ipfs.pin_rm(got)
        try:
            builds_width: bool | None = ipfs.builds_file_width()
        except IpfsError:
            builds_width = None
        hint = (
            "; the node ignores max-file-links, so it cannot build this profile's layout (kubo >= 0.35 can)"
            if builds_width is False
            else ""
        )
        raise AssetError(
            f"the IPFS node computed CID {got}, we computed {expected} (import profile {profile}); "
            f"pin rejected{hint}",
            code="ipfs_cid_mismatch",
            status=502,
            node_cid=got,
            expected_cid=expected,
            import_profile=profile,
            node_honours_max_file_links=builds_width,
        )


# ----------------------------------------------------------------------------------------------
# Chain submission
# ----------------------------------------------------------------------------------------------


def params_of(reg: Registration) -> tuple[RegistrationParams, int]:
    payload = json.loads(reg.params_json)
    return RegistrationParams.model_validate(payload["params"]), int(payload["valid_from"])


def _payload(reg: Registration) -> dict[str, Any]:
    payload: dict[str, Any] = json.loads(reg.params_json)
    return payload


def import_profile_of(reg: Registration) -> str:
    """The import profile the registration's CIDs were computed with (journal rows written before
    profiles were recorded name none: they were all legacy-cidv1)."""
    return str(_payload(reg)["file"].get("import_profile", DEFAULT_PROFILE.name))


def registration_typed_data(chain: ChainClient, reg: Registration) -> dict[str, Any]:
    """The EIP-712 typed data the creator signs (``eth_signTypedData_v4``): this registration, the
    creator's next nonce on chain and the registration's deadline."""
    params, valid_from = params_of(reg)
    registry = chain.contract(REGISTRY)
    nonce = int(chain.call(registry.functions.nonces(to_checksum_address(reg.creator))))
    return formats.registration_typed_data(
        service.registration_tuple(reg, params, valid_from, import_profile_of(reg)),
        nonce=nonce,
        deadline=int(_payload(reg)["deadline"]),
        chain_id=chain.deployment.chain_id,
        contract=registry.address,
    )


def registration_call(chain: ChainClient, reg: Registration) -> Any:
    """``registerFor`` with the creator's signature kept on the journal row."""
    params, valid_from = params_of(reg)
    payload = _payload(reg)
    registry = chain.contract(REGISTRY)
    return registry.functions.registerFor(
        service.registration_tuple(reg, params, valid_from, import_profile_of(reg)),
        int(payload["deadline"]),
        HexBytes(payload["signature"]),
    )


def submit_signature(
    session: Session, chain: ChainClient, ipfs: IpfsClient, reg: Registration, signature: str
) -> Asset:
    """The creator's signature arrived: keep it with the journal row, then relay the registration."""
    if reg.catalogue_id is not None:
        raise AssetError(
            f"registration {reg.id} is an item of catalogue {reg.catalogue_id}: the creator signs the "
            f"catalogue (POST /assets/catalogues/{reg.catalogue_id}/signature)",
            code="registration_in_catalogue",
            status=409,
            catalogue_id=reg.catalogue_id,
        )
    if reg.state != RegistrationState.awaiting_signature:
        raise AssetError(
            f"registration {reg.id} is {reg.state}", code="registration_not_awaiting_signature", status=409
        )
    _check_signature(chain, reg, signature)
    payload = _payload(reg)
    payload["signature"] = signature
    reg.params_json = json.dumps(payload)
    reg.state = RegistrationState.pinned
    reg.error_code = reg.error_message = None
    session.commit()
    return submit_registration(session, chain, ipfs, reg)


def _check_signature(chain: ChainClient, reg: Registration, signature: str) -> None:
    require_creator_signature(
        chain,
        reg.creator,
        registration_typed_data(chain, reg),
        signature,
        again=f"GET /assets/registrations/{reg.id}",
    )


def require_creator_signature(
    chain: ChainClient, creator: str, typed: dict[str, Any], signature: str, *, again: str
) -> None:
    """The contract's own rule (OpenZeppelin ``SignatureChecker.isValidSignatureNow``), applied before any
    gas is spent: a creator without code must have signed ``typed`` with its key (ECDSA); a contract
    creator's ERC-1271 ``isValidSignature`` must accept the typed data's digest. Anything else is 422
    ``invalid_signature``; the registration or catalogue keeps waiting for a valid signature."""
    creator = to_checksum_address(creator)
    signer: str | None = None
    with chain.rpc("eth_getCode"):
        code = chain.w3.eth.get_code(creator)
    if code:
        if chain.accepts_signature(creator, formats.digest(typed), signature):
            return
        refusal = "the creator's wallet contract (ERC-1271) does not accept this signature"
    else:
        try:
            signer = Account.recover_message(
                encode_typed_data(full_message=typed), signature=HexBytes(signature)
            )
        except Exception:
            signer = None
        if signer == creator:
            return
        refusal = "the signature is not the creator's"
    raise AssetError(
        f"{refusal} over this typed data (sign the typed data of {again} again: it carries the creator's "
        "current nonce)",
        code="invalid_signature",
        status=422,
        expected_signer=creator,
        recovered_signer=signer,
    )


def submit_registration(session: Session, chain: ChainClient, ipfs: IpfsClient, reg: Registration) -> Asset:
    """The platform signer relays the creator-signed registration (``registerFor``): one transaction at
    one nonce, recorded before it leaves (:func:`send_journalled`)."""
    call = registration_call(chain, reg)
    return _submit(
        session,
        chain,
        ipfs,
        reg,
        lambda: send_journalled(session, chain, reg, call, WHAT),
        sender=chain.signer_address,
    )


class SentJournal(TxSlot, Protocol):
    """A journal row (registration, catalogue) naming its transaction (chain/stuck_tx.py) and its error."""

    error_code: Any
    error_message: Any


def send_journalled(session: Session, chain: ChainClient, row: SentJournal, call: Any, what: str) -> str:
    """The row's transaction as the node knows it (a worker died after sending it), else ``call`` sent
    at the row's recorded nonce while that is free, nonce and hash committed before it leaves
    (chain/stuck_tx.py): never a second transaction while the first may still be mined. A send that
    waits (``<what>_fee_capped``, ``<what>_nonce_taken``, a node's refusal) is a 503 naming the reason;
    the row keeps its state for the reconciler."""
    current = stuck_tx.current_tx(row, chain, session.commit)
    if current is not None:
        receipt = chain.receipt_if_mined(current)
        if receipt is None or receipt["status"] == 1:
            return current  # waiting, or landed: its receipt is read, never a second
        # mined and reverted: its nonce is spent; a new transaction (a new signature, say) is sent
        row.tx_hash = row.tx_prev_hash = None
        session.commit()
    try:
        return stuck_tx.send_once(
            row, chain, call, what=what, max_fee_per_gas=chain.max_fee_per_gas, save=session.commit
        )
    except stuck_tx.NotSent as exc:
        raise ChainError(exc.detail, code=exc.reason, status=503) from exc


def tx_waiting(session: Session, chain: ChainClient, row: SentJournal) -> bool:
    """Whether the row's transaction waits in the mempool (it may still land)."""
    current = stuck_tx.current_tx(row, chain, session.commit)
    return current is not None and chain.receipt_if_mined(current) is None


def follow_journalled(
    session: Session,
    chain: ChainClient,
    settings: Settings,
    row: SentJournal,
    call: Callable[[], Any],
    what: str,
) -> str | None:
    """The reconciler's step for a row whose transaction may wait in the mempool: while it does, it is
    followed and, once it has waited TX_REPLACE_AFTER_SECONDS at the head of the signer's queue, sent
    again at its nonce bidding more ("retried"), else left as it is ("deferred", a wait's reason on the
    row). None when it is mined or gone: the caller sends again (:func:`send_journalled`, at the
    recorded nonce while that is free)."""
    current = stuck_tx.current_tx(row, chain, session.commit)
    if current is None or chain.receipt_if_mined(current) is not None:
        return None
    try:
        replaced = stuck_tx.replace_if_stuck(
            row,
            chain,
            call,
            what=what,
            max_fee_per_gas=settings.tx_max_fee_per_gas_wei,
            replace_after_seconds=settings.tx_replace_after_seconds,
            save=session.commit,
        )
    except stuck_tx.NotSent as exc:
        row.error_code, row.error_message = exc.reason[:64], exc.detail
        session.commit()
        return "deferred"
    return "retried" if replaced is not None else "deferred"


def _submit(
    session: Session,
    chain: ChainClient,
    ipfs: IpfsClient,
    reg: Registration,
    broadcast: Callable[[], str],
    *,
    sender: str,
) -> Asset:
    """Broadcasts, commits the tx hash before waiting for the receipt, then records the asset from the
    chain. A revert closes the journal row (or recognises our own earlier landing); an outage keeps it
    open for the reconciler."""
    try:
        tx_hash = broadcast()
        reg.state = RegistrationState.submitted
        reg.tx_hash = tx_hash
        session.commit()
        chain.wait_for_receipt(tx_hash, replay=registration_call(chain, reg), sender=sender)
    except ContractRevert as exc:
        return _settle_revert(session, chain, ipfs, reg, exc)
    except ChainError as exc:
        record_error(session, reg, exc)
        raise ChainError(
            f"{exc.message}; registration {reg.id} is kept ({reg.state}) and finished once the chain answers",
            code=exc.code,
            status=exc.status,
            registration_id=reg.id,
            state=reg.state,
        ) from exc
    return finish_from_chain(session, chain, ipfs, reg)


def finish_from_chain(session: Session, chain: ChainClient, ipfs: IpfsClient, reg: Registration) -> Asset:
    """Writes the asset row from the chain's AssetRegistered log, then publishes the content to IPFS
    and closes the journal row (or leaves it `pinning` for the reconciler when IPFS is down)."""
    existing = service.find_asset_by_hash(session, reg.content_hash)
    if existing is None:
        event = service.registration_event(chain, reg.content_hash)
        if event is None:
            raise ChainError("registration not found on chain yet", code="chain_timeout", status=504)
        params, _ = params_of(reg)
        existing = service.record_asset(session, chain, reg, params, event)
    reg.asset_id = existing.id
    reg.error_code = reg.error_message = None
    session.commit()
    publish_registration(session, ipfs, reg)
    return existing


def _settle_revert(
    session: Session, chain: ChainClient, ipfs: IpfsClient, reg: Registration, exc: ContractRevert
) -> Asset:
    if exc.error == "AlreadyRegistered" and chain_record_is_ours(chain, reg):
        # An earlier submission of this very registration landed first (retry after a crash).
        return finish_from_chain(session, chain, ipfs, reg)
    if exc.error in SIGNATURE_REVERTS:
        reg.state = RegistrationState.awaiting_signature
        raise ask_signature_again(session, reg, exc, "registration") from exc
    if exc.error == "AlreadyRegistered":
        raise _registered_by_someone_else(session, chain, ipfs, reg) from exc
    code, status = REVERT_CODES.get(exc.error, ("contract_revert", 422))
    error = AssetError(exc.message, code=code, status=status, error=exc.error, args=exc.error_args)
    if status < 500:
        release_registration(session, ipfs, reg, error)
    else:
        record_error(session, reg, error)
    raise error from exc


def _registered_by_someone_else(
    session: Session, chain: ChainClient, ipfs: IpfsClient, reg: Registration
) -> AssetError:
    """The content hash went to someone else's registration after this upload passed the duplicate
    check (which reads the chain before anything is pinned): a front-run. It is reported as such, with
    the other asset and its holder; the creator files a dispute and the arbiter may reassign the rights
    (ContentRegistry.reassignRights), which the indexer then follows. The pins are released: the other
    asset names its own CIDs."""
    asset_id = service.registered_asset_id(chain, reg.content_hash)
    record = service.read_on_chain(chain, asset_id)
    error = AssetError(
        f"asset {asset_id} registered this content for {record.creator} after this upload began: "
        "reported as front-run; dispute it with the arbiter",
        code="front_run",
        status=409,
        asset_id=asset_id,
        holder=record.creator,
        registered_at=record.registered_at,
    )
    release_registration(session, ipfs, reg, error)
    return error


def chain_record_is_ours(chain: ChainClient, reg: Registration) -> bool:
    """Whether the registry's record of this content is this registration's: its creator, its metadata."""
    asset_id = service.registered_asset_id(chain, reg.content_hash)
    if asset_id == 0:
        return False
    record = service.read_on_chain(chain, asset_id)
    return record.creator == reg.creator and record.metadata_cid == reg.metadata_cid


def registration_read(chain: ChainClient | None, reg: Registration) -> RegistrationRead:
    typed = None  # an item of a catalogue is signed with its catalogue (GET /assets/catalogues/{id})
    if chain is not None and reg.state == RegistrationState.awaiting_signature and reg.catalogue_id is None:
        typed = registration_typed_data(chain, reg)
    read = RegistrationRead.model_validate(reg, from_attributes=True)
    return read.model_copy(update={"typed_data": typed})


# ----------------------------------------------------------------------------------------------
# Releasing and reconciling
# ----------------------------------------------------------------------------------------------


def release_registration(session: Session, ipfs: IpfsClient, reg: Registration, reason: Exception) -> None:
    """Unpins what only this registration uses, then closes it with the reason. IPFS errors propagate:
    the row then stays open and the reconciler tries again."""
    for cid in {reg.content_cid, reg.metadata_cid} - {None}:
        used = session.scalar(
            select(Asset.id).where((Asset.content_cid == cid) | (Asset.metadata_cid == cid)).limit(1)
        )
        if used is None:
            ipfs.pin_rm(cid)  # type: ignore[arg-type]
    record_error(session, reg, reason, commit=False)
    reg.state = RegistrationState.released
    session.commit()
    drop_spool(reg)


J = TypeVar("J", bound="Journalled")


class Journalled(Protocol):
    """A journal row (a registration or a catalogue) that records its last error."""

    id: Any
    params_json: Any
    error_code: Any
    error_message: Any


def record_error(session: Session, row: Journalled, exc: Exception, *, commit: bool = True) -> None:
    """The row's last error: the exception's machine-readable code (else its type) and message."""
    row.error_code = getattr(exc, "code", type(exc).__name__)
    row.error_message = str(getattr(exc, "message", exc))[:2000]
    if commit:
        session.commit()


def ask_signature_again(session: Session, row: Journalled, exc: ContractRevert, what: str) -> AssetError:
    """A revert only a new signature cures (``SIGNATURE_REVERTS``): the kept signature is forgotten and
    the reason recorded on the row, which the caller has put back to awaiting its signature; the error
    to raise."""
    payload = json.loads(row.params_json)
    payload.pop("signature", None)
    row.params_json = json.dumps(payload)
    error = AssetError(
        f"{exc.message}: the creator signs this {what} again", code=SIGNATURE_REVERTS[exc.error]
    )
    record_error(session, row, error)
    return error


def reconcile_rows(
    session: Session,
    settings: Settings,
    kind: str,
    rows: Sequence[J],
    reconcile_one: Callable[[J], str],
    still_open: Callable[[J], bool],
) -> dict[str, int]:
    """Runs ``reconcile_one`` on each stale journal row and counts its outcomes ("registered",
    "released", "retried", "deferred", "busy"). A chain or IPFS outage defers the row to the next run
    (its transaction rolled back, nothing lost); an AssetError means the submission reverted for good
    and the row was released inside. One row's failure never stops the others.

    One reconciler at a time per row, across workers and hosts (``db.exclusive_work``): two runs that
    overlap (a run waits up to TX_TIMEOUT_SECONDS per receipt, the beat starts one a minute) would both
    read a row naming no transaction and relay it twice, at two nonces, the second only to revert. A
    row another run holds is left to it ("busy"); a held one is read again first, and left alone if the
    run before closed it."""
    counts = {"registered": 0, "released": 0, "retried": 0, "deferred": 0, "busy": 0}
    lock_dir = Path(settings.data_dir) / "locks"
    for row in rows:
        with exclusive_work(session, lock_dir, f"reconcile-{kind}", int(row.id)) as locked:
            if not locked:
                counts["busy"] += 1
                continue
            session.refresh(row)  # what a run before this one left
            if not still_open(row):
                continue
            try:
                counts[reconcile_one(row)] += 1
            except (ChainError, IpfsError) as exc:
                session.rollback()
                log.info("%s %s deferred: %s", kind, row.id, exc)
                counts["deferred"] += 1
            except AssetError:
                counts["released"] += 1
    return counts


def reconcile_registrations(
    session: Session,
    chain: ChainClient,
    ipfs: IpfsClient,
    settings: Settings,
    *,
    now: datetime | None = None,
    grace_seconds: float = 60.0,
) -> dict[str, int]:
    """Finishes or releases every open registration left behind (crash, outage, abandoned wallet flow).

    Rows touched within `grace_seconds` are left to the request that is working on them. Items of a
    catalogue go with their catalogue (edgeledger.assets.catalogues.reconcile_catalogues).
    """
    now = now or datetime.now(UTC)
    stale = now - timedelta(seconds=grace_seconds)
    rows = session.scalars(
        select(Registration)
        .where(
            Registration.state.in_(list(OPEN_STATES)),
            Registration.updated_at <= stale,
            Registration.catalogue_id.is_(None),
        )
        .order_by(Registration.id)
    ).all()
    return reconcile_rows(
        session,
        settings,
        "registration",
        rows,
        lambda reg: _reconcile_one(session, chain, ipfs, settings, reg, now),
        lambda reg: reg.state in OPEN_STATES,
    )


def _reconcile_one(
    session: Session,
    chain: ChainClient,
    ipfs: IpfsClient,
    settings: Settings,
    reg: Registration,
    now: datetime,
) -> str:
    if service.registered_asset_id(chain, reg.content_hash):
        if chain_record_is_ours(chain, reg):
            finish_from_chain(session, chain, ipfs, reg)
            return "registered"
        _registered_by_someone_else(session, chain, ipfs, reg)
        return "released"
    age = (now - reg.created_at).total_seconds()
    if age > settings.pending_registration_max_age_seconds:
        if reg.tx_hash and tx_waiting(session, chain, reg):
            return "deferred"  # it may still land (past its deadline, it reverts): released after
        release_registration(
            session,
            ipfs,
            reg,
            AssetError("not registered in time; pins released", code="registration_expired"),
        )
        return "released"
    if reg.state == RegistrationState.submitted and reg.tx_hash:
        waiting = follow_journalled(
            session, chain, settings, reg, lambda: registration_call(chain, reg), WHAT
        )
        if waiting is not None:  # in the mempool: never a second; the same one bidding more once stuck
            return waiting
        # Reverted, or dropped: sent again with the signature kept (at its nonce while that is free), or
        # the creator is asked again.
        signed = "signature" in _payload(reg)
        reg.state = RegistrationState.pinned if signed else RegistrationState.awaiting_signature
        reg.tx_hash = reg.tx_prev_hash = None
        session.commit()
    if reg.state == RegistrationState.pinned and "signature" in _payload(reg):
        reg.attempts += 1
        session.commit()
        submit_registration(session, chain, ipfs, reg)
        return "retried"
    if reg.state == RegistrationState.pinning and reg.asset_id is not None:
        publish_registration(session, ipfs, reg)  # on chain already: publish the spooled content
        return "registered" if reg.state == RegistrationState.registered else "deferred"
    if reg.state == RegistrationState.pinning:
        # The upload's bytes are gone with its request: only the creator re-uploading can resume it.
        release_registration(
            session,
            ipfs,
            reg,
            AssetError("upload interrupted before pinning finished", code="upload_interrupted"),
        )
        return "released"
    return "deferred"
