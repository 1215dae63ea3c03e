"""Assets API: register (upload), list/search, provenance, verify."""

from __future__ import annotations

import json
from typing import Annotated, Any, TypeVar

import anyio
from fastapi import APIRouter, Depends, File, Form, Query, Request, UploadFile
from fastapi.responses import JSONResponse, Response
from pydantic import BaseModel, ValidationError
from sqlalchemy.orm import Session

from edgeledger.assets import catalogues, flows, service, updates
from edgeledger.assets.models import (
    AssetRead,
    AssetStatus,
    Catalogue,
    CatalogueParams,
    CatalogueRead,
    CatalogueRegistered,
    ProvenanceRead,
    Registration,
    RegistrationParams,
    RegistrationRead,
    RegistrationSignature,
    Verification,
)
from edgeledger.assets.service import AssetError
from edgeledger.auth.dependencies import Principal, get_principal, require_roles
from edgeledger.auth.models import Role
from edgeledger.cache import SingleFlight, TtlCache
from edgeledger.chain.client import ChainClient
from edgeledger.config import Settings
from edgeledger.db import get_session, release_connection
from edgeledger.deps import get_app_settings, get_chain, get_ipfs
from edgeledger.ipfs import IpfsClient

router = APIRouter(prefix="/assets", tags=["assets"])
verify_router = APIRouter(prefix="/verify", tags=["verify"])

SessionDep = Annotated[Session, Depends(get_session)]
ChainDep = Annotated[ChainClient, Depends(get_chain)]
IpfsDep = Annotated[IpfsClient, Depends(get_ipfs)]
SettingsDep = Annotated[Settings, Depends(get_app_settings)]
Registrant = Annotated[Principal, Depends(require_roles(Role.creator, Role.admin))]
Reader = Annotated[Principal, Depends(get_principal)]
P = TypeVar("P", bound=BaseModel)


def _parse_params(raw: str, model: type[P]) -> P:
    try:
        return model.model_validate(json.loads(raw or "{}"))
    except json.JSONDecodeError as exc:
        raise AssetError(f"the metadata field is not JSON: {exc}", code="validation_error") from None
    except RecursionError:
        raise AssetError("the metadata field is JSON nested too deeply", code="validation_error") from None
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"]) or "metadata"
        field_codes = {"split": "invalid_split", "terms_cid": "invalid_cid"}
        code = field_codes.get(where.split(".")[0], "validation_error")
        if "split" in first["msg"]:
            code = "invalid_split"
        raise AssetError(
            f"invalid metadata: {where}: {first['msg']}",
            code=code,
            problems=json.loads(exc.json(include_url=False)),
        ) from None


@router.post(
    "",
    status_code=201,
    response_model=AssetRead,
    responses={202: {"model": RegistrationRead, "description": "The creator signs its typed_data"}},
    summary="Upload and register an asset",
)
def register_asset(
    session: SessionDep,
    chain: ChainDep,
    ipfs: IpfsDep,
    settings: SettingsDep,
    principal: Registrant,
    file: Annotated[UploadFile, File(description="The content bytes")],
    metadata: Annotated[str, Form(description="RegistrationParams as JSON")] = "{}",
) -> AssetRead | JSONResponse:
    """Streams the upload to disk computing sha-256 and the CID, pins content and metadata to IPFS
    (rejecting the pin if the node's CID differs) and answers 202 with the registration: the creator
    signs its ``typed_data`` and submits the signature (``POST /assets/registrations/{id}/signature``),
    then the platform registers it on chain and answers the asset."""
    params = _parse_params(metadata, RegistrationParams)
    actor = flows.Actor(principal.user_id, principal.address, principal.role == Role.admin)
    outcome = flows.register_upload(
        session,
        chain,
        ipfs,
        settings,
        actor=actor,
        params=params,
        upload=file.file,
        filename=file.filename or "",
    )
    if outcome.asset is None:
        body = flows.registration_read(chain, outcome.registration).model_dump(mode="json")
        return JSONResponse(body, status_code=202)
    return service.to_read(outcome.asset, chain.confirmations_of(outcome.asset.block_number))


@router.get("", response_model=list[AssetRead], summary="List and search assets")
def list_assets(
    session: SessionDep,
    _: Reader,
    creator: Annotated[str | None, Query(pattern=r"^0x[0-9a-fA-F]{40}$")] = None,
    content_hash: str | None = None,
    cid: str | None = None,
    territory: Annotated[str | None, Query(min_length=2, max_length=2)] = None,
    status: AssetStatus | None = None,
    limit: Annotated[int, Query(ge=1, le=500)] = 50,
    offset: Annotated[int, Query(ge=0)] = 0,
) -> list[AssetRead]:
    assets = service.list_assets(
        session,
        creator=creator,
        content_hash=content_hash,
        cid=cid,
        territory=territory,
        status=status,
        limit=limit,
        offset=offset,
    )
    return [service.to_read(a) for a in assets]


@router.get("/registrations/{registration_id}", response_model=RegistrationRead)
def get_registration(
    registration_id: int, session: SessionDep, chain: ChainDep, principal: Reader
) -> RegistrationRead:
    return flows.registration_read(chain, _own_registration(session, principal, registration_id))


@router.post(
    "/registrations/{registration_id}/signature",
    response_model=AssetRead,
    status_code=201,
    summary="Submit the creator's signature of the registration; the platform registers it on chain",
)
def submit_signature(
    registration_id: int,
    body: RegistrationSignature,
    session: SessionDep,
    chain: ChainDep,
    ipfs: IpfsDep,
    principal: Registrant,
) -> AssetRead:
    reg = _own_registration(session, principal, registration_id)
    asset = flows.submit_signature(session, chain, ipfs, reg, body.signature)
    return service.to_read(asset, chain.confirmations_of(asset.block_number))


@router.post(
    "/catalogues",
    status_code=202,
    response_model=CatalogueRead,
    summary="Upload a catalogue of up to 100 files, registered in one transaction once the creator signs",
)
def register_catalogue(
    session: SessionDep,
    chain: ChainDep,
    settings: SettingsDep,
    principal: Registrant,
    files: Annotated[
        list[UploadFile] | None, File(description="The items' bytes, in catalogue order (1 to 100)")
    ] = None,
    metadata: Annotated[str, Form(description="CatalogueParams as JSON")] = "{}",
) -> JSONResponse:
    """Streams every file to the spool computing sha-256 and the CID (limits as for one upload), refuses
    duplicates (within the catalogue or already registered: 409 ``duplicate_content`` naming the file)
    and answers 202 with the catalogue: the creator signs its ``typed_data`` (EIP-712 ``Catalogue``) and
    submits the signature (``POST /assets/catalogues/{id}/signature``); the platform registers it with
    ``registerBatchFor``, each item its own asset. Nothing is pinned before it lands."""
    params = _parse_params(metadata, CatalogueParams)
    actor = flows.Actor(principal.user_id, principal.address, principal.role == Role.admin)
    cat = catalogues.register_catalogue(
        session,
        chain,
        settings,
        actor=actor,
        params=params,
        uploads=[(f.file, f.filename or "") for f in files or []],
    )
    return JSONResponse(catalogues.catalogue_read(chain, cat).model_dump(mode="json"), status_code=202)


@router.get("/catalogues/{catalogue_id}", response_model=CatalogueRead, summary="A catalogue's journal")
def get_catalogue(
    catalogue_id: int, session: SessionDep, chain: ChainDep, principal: Reader
) -> CatalogueRead:
    return catalogues.catalogue_read(chain, _own_catalogue(session, principal, catalogue_id))


@router.post(
    "/catalogues/{catalogue_id}/signature",
    response_model=CatalogueRegistered,
    status_code=201,
    summary="Submit the creator's signature of the catalogue; the platform registers it in one transaction",
)
def submit_catalogue_signature(
    catalogue_id: int,
    body: RegistrationSignature,
    session: SessionDep,
    chain: ChainDep,
    ipfs: IpfsDep,
    principal: Registrant,
) -> CatalogueRegistered:
    cat = _own_catalogue(session, principal, catalogue_id)
    assets = catalogues.submit_signature(session, chain, ipfs, cat, body.signature)
    confirmations = chain.confirmations_of(assets[0].block_number)
    return CatalogueRegistered(
        catalogue=catalogues.catalogue_read(chain, cat),
        assets=[service.to_read(a, confirmations) for a in assets],
    )


@router.post(
    "/{asset_id}/licence",
    response_model=updates.UpdateAnswer,
    summary="Gas-free licence update: the typed data for the holder to sign, or relay its signature",
)
def update_licence(
    asset_id: int, body: updates.LicenceUpdateRequest, chain: ChainDep, _: Registrant
) -> updates.UpdateAnswer:
    """Without ``signature``: the EIP-712 ``LicenceUpdate`` the rights holder signs (its current nonce,
    ``deadline``). With it (and the same ``deadline``): the platform sends ``updateLicenceFor``."""
    return updates.licence_update(chain, asset_id, body)


@router.post(
    "/{asset_id}/split",
    response_model=updates.UpdateAnswer,
    summary="Gas-free split update: the typed data for the holder to sign, or relay its signature",
)
def update_split(
    asset_id: int, body: updates.SplitUpdateRequest, chain: ChainDep, _: Registrant
) -> updates.UpdateAnswer:
    """Without ``signature``: the EIP-712 ``SplitUpdate`` the rights holder signs. With it (and the same
    ``deadline``): the platform sends ``updateSplitFor``."""
    return updates.split_update(chain, asset_id, body)


@router.get("/{asset_id}", response_model=ProvenanceRead, summary="Provenance: chain record, lineage, status")
async def provenance(
    asset_id: int, request: Request, session: SessionDep, chain: ChainDep, _: Reader
) -> Response:
    """The asset with its on-chain record read at the shared chain head, and its lineage.

    Answers are kept per (asset, head block hash) for ``READ_MAX_AGE_SECONDS`` (docs/operations.md, "Read
    paths"): a popular asset is served from memory, without a thread hand-off, the database or the chain,
    while the head is fresh; a new block (a new hash) or an older answer is computed afresh."""
    cache: TtlCache[bytes] = request.app.state.provenance_cache
    flights: SingleFlight[Any] = request.app.state.read_flights
    head = chain.fresh_head()
    if head is None:  # one head refresh per process at a time, however many requests find it stale
        head = await flights.run("head", lambda: anyio.to_thread.run_sync(chain.head))
    key = (asset_id, head[1])
    body = cache.get(key)
    if body is None:
        body = await flights.run(key, lambda: _compute(session, chain, cache, asset_id))
    return Response(body, media_type="application/json")


async def _compute(session: Session, chain: ChainClient, cache: TtlCache[bytes], asset_id: int) -> bytes:
    head_hash, body = await anyio.to_thread.run_sync(_provenance_json, session, chain, asset_id)
    cache.put((asset_id, head_hash), body)
    return body


def _provenance_json(session: Session, chain: ChainClient, asset_id: int) -> tuple[str, bytes]:
    asset = service.get_asset(session, asset_id)
    head, head_hash = chain.head()
    if head < asset.block_number:  # registered after the shared head was taken: read at the newest
        head, head_hash = chain.head(max_age=0)
    record = service.read_on_chain_at(chain, asset_id, head_hash)
    if (asset.owner, asset.status) != (record.rights_holder, record.status):
        service.sync_from_chain(asset, record)
        session.commit()
    read = ProvenanceRead(
        asset=service.to_read(asset, max(0, head - asset.block_number + 1)),
        on_chain=record,
        matches_chain=service.matches_chain(asset, record),
        ancestors=[service.to_lineage(a) for a in service.ancestors(session, asset)],
        derivatives=[service.to_lineage(a) for a in service.derivatives(session, asset)],
    )
    release_connection(session)
    return head_hash, read.model_dump_json().encode()


def _may_read(principal: Principal, creator: str) -> bool:
    """A journal row (registration or catalogue) is its creator's to read, and admins' and auditors'."""
    mine = principal.address is not None and principal.address.lower() == creator.lower()
    return mine or principal.role in (Role.admin, Role.auditor)


def _own_registration(session: Session, principal: Principal, registration_id: int) -> Registration:
    reg = session.get(Registration, registration_id)
    if reg is None or not _may_read(principal, reg.creator):
        raise AssetError(
            f"registration {registration_id} not found", code="registration_not_found", status=404
        )
    return reg


def _own_catalogue(session: Session, principal: Principal, catalogue_id: int) -> Catalogue:
    cat = session.get(Catalogue, catalogue_id)
    if cat is None or not _may_read(principal, cat.creator):
        raise AssetError(f"catalogue {catalogue_id} not found", code="catalogue_not_found", status=404)
    return cat


@verify_router.post("", response_model=Verification, summary="Verify a file against the chain")
def verify_file(
    chain: ChainDep, file: Annotated[UploadFile, File(description="The file to check")]
) -> Verification:
    """Public: hashes the file and answers from the chain alone (registry record and registration log)."""
    sha = service.sha256_of_stream(file.file)
    return service.verify_content_hash(chain, sha)


@verify_router.get(
    "/{content_hash}", response_model=Verification, summary="Verify a sha-256 against the chain"
)
def verify_hash(content_hash: str, chain: ChainDep) -> Verification:
    return service.verify_content_hash(chain, content_hash)
