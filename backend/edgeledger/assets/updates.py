"""Gas-free licence and split updates: the rights holder signs, the platform relays.

``ContentRegistry.updateLicenceFor`` / ``updateSplitFor`` take the current rights holder's EIP-712
``LicenceUpdate`` / ``SplitUpdate`` signature (edgeledger.ledger.registration; docs/registration.md).
Without a signature the API answers the typed data to sign (the holder's current nonce on chain and the
deadline asked for, default an hour ahead of the chain's clock); with one it sends the update from the
platform's signer and answers the receipt. Deadlines are counted on the chain's clock (the latest
block's timestamp), which the registry's ``block.timestamp > deadline`` check uses, never this host's:
on a chain whose time runs ahead, a deadline from the host's clock would be past before it is signed.
The signature decides everything, and the rights holder pays no gas. Nothing is stored here: the chain is the
record, and the indexer follows its ``LicenceUpdated`` / ``SplitUpdated`` events.
"""

from __future__ import annotations

from typing import Any

from eth_utils import to_checksum_address
from hexbytes import HexBytes
from pydantic import BaseModel, Field

from edgeledger.assets import service
from edgeledger.assets.models import SplitShare
from edgeledger.assets.service import REGISTRY, AssetError
from edgeledger.chain.client import ChainClient, ContractRevert
from edgeledger.ledger import registration as formats

#: Contract errors of a relayed update, as API errors.
UPDATE_REVERTS: dict[str, tuple[str, int]] = {
    "InvalidSignature": ("invalid_signature", 422),
    "SignatureExpired": ("signature_expired", 422),
    "AssetNotActive": ("asset_not_active", 409),
    "ERC721NonexistentToken": ("not_found", 404),
    **service.TERMS_REVERT_CODES,
}
DEFAULT_VALIDITY_SECONDS = 3600


class _Signed(BaseModel):
    deadline: int | None = Field(
        None,
        ge=0,
        description="Unix seconds (the chain's clock) the signature is valid until (default: an hour ahead "
        "of the latest block's timestamp)",
    )
    signature: str | None = Field(
        None,
        pattern=r"^0x[0-9a-fA-F]{2,2048}$",
        description="The holder's signature of the typed data; without it the typed data is answered",
    )


class LicenceUpdateRequest(_Signed):
    territories: list[str] = Field(min_length=1, description="ISO 3166-1 alpha-2 codes, or ['*']")
    valid_from: int = Field(0, ge=0)
    valid_until: int = Field(0, ge=0, description="0 = open-ended")
    royalty_bps: int = Field(0, ge=0, le=10_000)
    terms_cid: str = Field("", max_length=128)


class SplitUpdateRequest(_Signed):
    split: list[SplitShare] = Field(min_length=1, max_length=50)


class UpdateAnswer(BaseModel):
    typed_data: dict[str, Any] | None = None
    tx_hash: str | None = None
    block_number: int | None = None


def _deadline(chain: ChainClient, request: _Signed) -> int:
    """The deadline asked for, or an hour ahead of the chain's clock; refuses one already past by it."""
    if request.signature is None and not request.deadline:
        return chain.latest_timestamp() + DEFAULT_VALIDITY_SECONDS
    if request.deadline is None:
        raise AssetError(
            "send the deadline of the typed data that was signed", code="deadline_required", status=422
        )
    now = chain.latest_timestamp()
    if request.deadline <= now:
        signed = request.signature is not None
        raise AssetError(
            f"the deadline {request.deadline} is past: the chain's clock reads {now}"
            + ("; sign the update again with a later deadline" if signed else ""),
            code="signature_expired" if signed else "deadline_past",
            status=422,
            deadline=request.deadline,
            chain_time=now,
        )
    return request.deadline


def _holder_nonce(chain: ChainClient, asset_id: int) -> int:
    registry = chain.contract(REGISTRY)
    try:
        holder = chain.call(registry.functions.ownerOf(asset_id))
    except ContractRevert as exc:
        raise AssetError(f"asset {asset_id} is not registered", code="not_found", status=404) from exc
    return int(chain.call(registry.functions.nonces(to_checksum_address(holder))))


def _relay(chain: ChainClient, call: Any) -> UpdateAnswer:
    try:
        result = chain.transact(call)
    except ContractRevert as exc:
        code, status = UPDATE_REVERTS.get(exc.error, ("contract_revert", 422))
        raise AssetError(exc.message, code=code, status=status, error=exc.error) from exc
    return UpdateAnswer(tx_hash=result.tx_hash, block_number=result.block_number)


def licence_update(chain: ChainClient, asset_id: int, request: LicenceUpdateRequest) -> UpdateAnswer:
    licence = (
        service.territories_bitmap(request.territories),
        request.valid_from,
        request.valid_until,
        request.royalty_bps,
        request.terms_cid,
    )
    deadline = _deadline(chain, request)
    registry = chain.contract(REGISTRY)
    if request.signature is None:
        typed = formats.licence_update_typed_data(
            asset_id,
            licence,
            nonce=_holder_nonce(chain, asset_id),
            deadline=deadline,
            chain_id=chain.deployment.chain_id,
            contract=registry.address,
        )
        return UpdateAnswer(typed_data=typed)
    call = registry.functions.updateLicenceFor(asset_id, licence, deadline, HexBytes(request.signature))
    return _relay(chain, call)


def split_update(chain: ChainClient, asset_id: int, request: SplitUpdateRequest) -> UpdateAnswer:
    recipients = [to_checksum_address(s.recipient) for s in request.split]
    shares = [s.bps for s in request.split]
    deadline = _deadline(chain, request)
    registry = chain.contract(REGISTRY)
    if request.signature is None:
        typed = formats.split_update_typed_data(
            asset_id,
            recipients,
            shares,
            nonce=_holder_nonce(chain, asset_id),
            deadline=deadline,
            chain_id=chain.deployment.chain_id,
            contract=registry.address,
        )
        return UpdateAnswer(typed_data=typed)
    call = registry.functions.updateSplitFor(
        asset_id, recipients, shares, deadline, HexBytes(request.signature)
    )
    return _relay(chain, call)
