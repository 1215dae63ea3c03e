"""The creators' pages (/app/assets, /app/upload, /app/earnings) and the JSON endpoints their script uses.

Every change is signed in the creator's wallet; the server only prepares and relays:

* upload: the page posts the file (multipart, with upload progress) once the session is checked (no
  form parameters, so nothing of the body is read before the creator is known); the answer is the
  registration's EIP-712 typed data, which the wallet signs (``eth_signTypedData_v4``), and the
  signature goes to ``assets.flows.submit_signature`` (the chain only takes the creator's own);
* licence and split: ``assets.updates`` answers the typed data for the holder to sign, then relays it;
* claims: ``settlement.claims`` prepares one ``claimMany`` over every claimable period (``to``/``data``
  for the wallet to send) or the authorization typed data for a gas-free ``claimManyFor``.
"""

from __future__ import annotations

import json
from typing import Annotated, Any

import anyio
from eth_utils import to_checksum_address
from fastapi import APIRouter, Depends, Request
from fastapi.responses import HTMLResponse, JSONResponse
from pydantic import BaseModel, Field, ValidationError
from sqlalchemy.orm import Session
from starlette.datastructures import UploadFile
from web3.exceptions import Web3Exception

from edgeledger.assets import flows, updates
from edgeledger.assets.models import Asset, RegistrationParams
from edgeledger.auth.models import Role
from edgeledger.chain.client import ChainClient, ChainError
from edgeledger.config import Settings
from edgeledger.db import get_session
from edgeledger.deps import get_app_settings, get_chain, get_ipfs
from edgeledger.ipfs import IpfsClient
from edgeledger.settlement import claims
from edgeledger.settlement.charts import BytesChartText
from edgeledger.webapp import creator, i18n, prepared
from edgeledger.webapp.session import AppUser, WebAppError, api_user, page_user
from edgeledger.webapp.views import language, render

router = APIRouter()
NAV = {
    Role.creator: [
        ("/app/assets", "creator.nav.assets"),
        ("/app/upload", "creator.nav.upload"),
        ("/app/earnings", "creator.nav.earnings"),
    ]
}
STATIC = {"creator.js": "text/javascript"}
SCRIPT_MESSAGES = ("js.", "creator.js.")
RELAY_VALIDITY_SECONDS = 3600

SessionDep = Annotated[Session, Depends(get_session)]
ChainDep = Annotated[ChainClient, Depends(get_chain)]
IpfsDep = Annotated[IpfsClient, Depends(get_ipfs)]
SettingsDep = Annotated[Settings, Depends(get_app_settings)]
CreatorPage = Annotated[AppUser, Depends(page_user(Role.creator))]
CreatorApi = Annotated[AppUser, Depends(api_user(Role.creator))]


def _t(request: Request) -> i18n.Translator:
    return i18n.Translator(language(request))


def _not_found(request: Request, user: AppUser, message: str) -> HTMLResponse:
    return render(request, "error.html", {"message": message}, user=user, status=404)


# --- assets ------------------------------------------------------------------------------------------


@router.get("/assets", response_class=HTMLResponse)
def assets_page(request: Request, session: SessionDep, user: CreatorPage) -> HTMLResponse:
    return render(request, "creator_assets.html", {"assets": creator.my_assets(session, user)}, user=user)


def _asset_for(session: Session, chain: ChainClient, user: AppUser, asset_id: int, t: i18n.Translator) -> Any:
    asset = session.get(Asset, asset_id)
    if asset is None or not creator.may_see(user, asset):
        return None
    words = BytesChartText(
        no_data=t("creator.chart.no_data"),
        gb_axis=t("creator.chart.gb_axis"),
        day_axis=t("creator.chart.day_axis"),
        day_axis_year=t("creator.chart.day_axis_year", year="{year}"),
        bar=t(
            "creator.chart.bar",
            region="{region}",
            day="{day}",
            gb="{gb}",
            bytes="{bytes}",
            requests="{requests}",
        ),
    )
    return creator.asset_detail(session, chain, asset, t("creator.asset.chart_title"), words)


@router.get("/assets/{asset_id}", response_class=HTMLResponse)
def asset_page(
    request: Request, asset_id: int, session: SessionDep, chain: ChainDep, user: CreatorPage
) -> HTMLResponse:
    t = _t(request)
    detail = _asset_for(session, chain, user, asset_id, t)
    if detail is None:
        return _not_found(request, user, t("creator.asset.not_found", id=asset_id))
    is_holder = user.address is not None and user.address.lower() == detail.holder.lower()
    terms = {
        "asset_id": asset_id,
        "holder": detail.holder,
        "licence": {
            "territories": ["*"] if detail.licence.worldwide else detail.licence.territories,
            "valid_from": detail.licence.valid_from,
            "valid_until": detail.licence.valid_until,
            "royalty_bps": detail.licence.royalty_bps,
            "terms_cid": detail.licence.terms_cid,
        },
    }
    return render(
        request,
        "creator_asset.html",
        {"d": detail, "is_holder": is_holder, "terms": terms, "updated": request.query_params.get("updated")},
        user=user,
        script_messages=SCRIPT_MESSAGES,
    )


@router.post("/assets/{asset_id}/licence")
def update_licence(
    asset_id: int, body: updates.LicenceUpdateRequest, session: SessionDep, chain: ChainDep, user: CreatorApi
) -> dict[str, Any]:
    """Without a signature: the typed data for the holder's wallet; with it: relayed to the registry."""
    _check_holder(session, chain, user, asset_id)
    return _safe_answer(updates.licence_update(chain, asset_id, body))


@router.post("/assets/{asset_id}/split")
def update_split(
    asset_id: int, body: updates.SplitUpdateRequest, session: SessionDep, chain: ChainDep, user: CreatorApi
) -> dict[str, Any]:
    _check_holder(session, chain, user, asset_id)
    return _safe_answer(updates.split_update(chain, asset_id, body))


def _safe_answer(answer: updates.UpdateAnswer) -> dict[str, Any]:
    return prepared.js_safe(answer.model_dump(mode="json"))


def _check_holder(session: Session, chain: ChainClient, user: AppUser, asset_id: int) -> None:
    """The page offers updates to the rights holder only (the registry checks the signature anyway)."""
    asset = session.get(Asset, asset_id)
    if asset is None or not creator.may_see(user, asset):
        raise WebAppError(f"no asset {asset_id} of yours", code="not_found", status=404)


# --- upload and registration -------------------------------------------------------------------------


@router.get("/upload", response_class=HTMLResponse)
def upload_page(request: Request, settings: SettingsDep, user: CreatorPage) -> HTMLResponse:
    return render(
        request,
        "creator_upload.html",
        {"max_bytes": settings.max_upload_bytes},
        user=user,
        script_messages=SCRIPT_MESSAGES,
    )


def _params(raw: str) -> RegistrationParams:
    try:
        return RegistrationParams.model_validate(json.loads(raw or "{}"))
    except (json.JSONDecodeError, RecursionError):  # RecursionError: nested too deeply
        raise WebAppError(
            "the registration details are not JSON", code="validation_error", status=422
        ) from None
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"]) or "metadata"
        raise WebAppError(
            f"{where}: {first['msg']}", code="validation_error", status=422, field=where
        ) from None


@router.post("/upload")
async def upload(
    request: Request,
    session: SessionDep,
    chain: ChainDep,
    ipfs: IpfsDep,
    settings: SettingsDep,
    user: CreatorApi,
) -> JSONResponse:
    """The file and its details (multipart ``file`` and ``metadata``), read only now that the creator is
    known; answers the registration's typed data for the creator's wallet to sign."""
    form = await request.form(max_files=1, max_fields=1)
    try:
        upload_file = form.get("file")
        metadata = form.get("metadata")
        if not isinstance(upload_file, UploadFile):
            raise WebAppError("choose a file to upload", code="file_missing", status=422)
        params = _params(metadata if isinstance(metadata, str) else "{}")
        if params.creator is not None and params.creator.lower() != (user.address or "").lower():
            raise WebAppError("you can only register your own work here", code="creator_mismatch", status=422)
        actor = flows.Actor(user.user_id, user.address, user.role == Role.admin)

        def register() -> dict[str, Any]:
            outcome = flows.register_upload(
                session,
                chain,
                ipfs,
                settings,
                actor=actor,
                params=params,
                upload=upload_file.file,
                filename=upload_file.filename or "",
            )
            read = flows.registration_read(chain, outcome.registration)
            return {
                "registration_id": read.id,
                "creator": read.creator,
                "typed_data": prepared.js_safe(read.typed_data),
            }

        return JSONResponse(await anyio.to_thread.run_sync(register), status_code=202)
    finally:
        await form.close()


class SignatureBody(BaseModel):
    signature: str = Field(pattern=r"^0x[0-9a-fA-F]{130}$")


@router.post("/registrations/{registration_id}/signature")
def registration_signature(
    registration_id: int,
    body: SignatureBody,
    session: SessionDep,
    chain: ChainDep,
    ipfs: IpfsDep,
    user: CreatorApi,
) -> dict[str, Any]:
    """The creator's signature: the platform registers the asset on chain, then it is published."""
    reg = creator.own_registration(session, user, registration_id)
    asset = flows.submit_signature(session, chain, ipfs, reg, body.signature)
    return {"asset_id": asset.id, "url": f"/app/assets/{asset.id}", "tx_hash": asset.tx_hash}


# --- earnings and claims -----------------------------------------------------------------------------


def _balance(chain: ChainClient, token: str, holder: str) -> int | None:
    """ERC-20 ``balanceOf(holder)`` read from the chain now (None when unreachable)."""
    data = "0x70a08231" + "00" * 12 + holder.lower().removeprefix("0x")
    try:
        raw = chain.w3.eth.call({"to": to_checksum_address(token), "data": data})  # type: ignore[typeddict-item]
    except (ChainError, Web3Exception, ValueError, OSError):  # unreachable or not an ERC-20
        return None
    return int.from_bytes(bytes(raw), "big") if raw else None


@router.get("/earnings", response_class=HTMLResponse)
def earnings_page(request: Request, session: SessionDep, chain: ChainDep, user: CreatorPage) -> HTMLResponse:
    rows = creator.earnings(session, chain, user)
    balances = {e.token.address: _balance(chain, e.token.address, user.address or "") for e in rows}
    claimable = sum(e.totals.claimable for e in rows)
    return render(
        request,
        "creator_earnings.html",
        {
            "earnings": rows,
            "balances": balances,
            "claimable": claimable,
            "claimed": request.query_params.get("claimed", "")[:4],
        },
        user=user,
        script_messages=SCRIPT_MESSAGES,
    )


def _payee(user: AppUser) -> str:
    if user.address is None:
        raise WebAppError("your account has no wallet address", code="no_address", status=409)
    return user.address


@router.post("/claims/prepare")
def prepare_claim(session: SessionDep, chain: ChainDep, user: CreatorApi) -> dict[str, Any]:
    """One ``claimMany`` over every claimable period, for the wallet to send as it is."""
    read = claims.claims_of(session, chain, _payee(user))
    if read.call is None:
        raise WebAppError("nothing is claimable now", code="nothing_to_claim", status=409)
    return {"to": read.call.to, "data": read.call.data, "claims": read.call.claims}


@router.post("/claims/authorization")
def claim_authorization(session: SessionDep, chain: ChainDep, user: CreatorApi) -> dict[str, Any]:
    """The typed data authorizing the platform to relay every claimable period (it pays the gas)."""
    found = claims.authorization(session, chain, _payee(user), None, RELAY_VALIDITY_SECONDS)
    return prepared.js_safe(found.model_dump(mode="json"))


@router.post("/claims/relay")
def claim_relay(
    body: claims.RelayRequest, session: SessionDep, chain: ChainDep, user: CreatorApi
) -> claims.RelayResult:
    return claims.relay(session, chain, _payee(user), body)
