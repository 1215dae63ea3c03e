"""Auth domain against real databases (SQLite and PostgreSQL) and through HTTP."""

from __future__ import annotations

import hashlib
import json
import threading
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from eth_account import Account
from eth_account.messages import encode_defunct
from eth_account.signers.local import LocalAccount
from eth_keys.constants import SECPK1_N
from fastapi import APIRouter, Depends, FastAPI
from fastapi.testclient import TestClient
from httpx import Response
from sqlalchemy import Engine, select, text
from sqlalchemy.orm import Session

from edgeledger.api_errors import install_error_handlers
from edgeledger.auth import service
from edgeledger.auth.dependencies import (
    CurrentPrincipal,
    Principal,
    WriterPrincipal,
    ensure_owner_or_admin,
    require_roles,
)
from edgeledger.auth.models import ApiKey, AuditorScopeEntry, AuthSession, Role, SiweNonce, User
from edgeledger.auth.views import admin_router, router
from edgeledger.compliance.models import ComplianceEvent
from edgeledger.config import Settings
from edgeledger.db import get_session

DOMAIN = "edgeledger.test"
CHAIN_ID = 31337


# --- helpers ---------------------------------------------------------------------------------------


def iso(moment: datetime) -> str:
    return moment.astimezone(UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


def siwe_message(
    address: str,
    nonce: str,
    *,
    domain: str = DOMAIN,
    chain_id: int = CHAIN_ID,
    expiration_time: datetime | None = None,
    not_before: datetime | None = None,
    scheme: str | None = None,
) -> str:
    """An EIP-4361 message as a wallet would show and sign it (with ``scheme``: ``scheme://domain``)."""
    lines = [
        f"{scheme + '://' if scheme else ''}{domain} wants you to sign in with your Ethereum account:",
        address,
        "",
        "Sign in to EdgeLedger.",
        "",
        f"URI: https://{domain}/login",
        "Version: 1",
        f"Chain ID: {chain_id}",
        f"Nonce: {nonce}",
        f"Issued At: {iso(datetime.now(UTC))}",
    ]
    if expiration_time is not None:
        lines.append(f"Expiration Time: {iso(expiration_time)}")
    if not_before is not None:
        lines.append(f"Not Before: {iso(not_before)}")
    return "\n".join(lines)


def sign(account: LocalAccount, message: str) -> str:
    return "0x" + bytes(account.sign_message(encode_defunct(text=message)).signature).hex()


def high_s_twin(signature: str) -> str:
    """The other valid (r, n - s) signature for the same key and message (signature malleability)."""
    raw = bytes.fromhex(signature.removeprefix("0x"))
    s = int.from_bytes(raw[32:64], "big")
    flipped_v = 27 if raw[64] == 28 else 28
    return "0x" + (raw[:32] + (SECPK1_N - s).to_bytes(32, "big") + bytes([flipped_v])).hex()


def assert_error(response: Response, status: int, code: str) -> dict[str, Any]:
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert error["code"] == code
    assert isinstance(error["message"], str) and error["message"]
    return error


def make_user(session: Session, role: Role, *, address: str | None = None) -> tuple[User, str]:
    user = service.create_user(session, role=role, address=address, name=f"{role} user")
    key, _ = service.create_api_key(session, user, "tests")
    return user, key


def api_key_header(key: str) -> dict[str, str]:
    return {"X-API-Key": key}


# --- app -------------------------------------------------------------------------------------------


probe = APIRouter(prefix="/probe")


@probe.post("/write")
def _write(principal: WriterPrincipal) -> dict[str, str]:
    return {"via": principal.via}


@probe.get("/operators-only", dependencies=[Depends(require_roles(Role.operator))])
def _operators_only() -> dict[str, bool]:
    return {"ok": True}


@probe.put("/owned/{address}")
def _owned(address: str, principal: CurrentPrincipal) -> dict[str, bool]:
    ensure_owner_or_admin(principal, address)
    return {"ok": True}


def build_app(engine: Engine, *, chain_id: int | None = CHAIN_ID) -> FastAPI:
    app = FastAPI()
    app.include_router(router)
    app.include_router(admin_router)
    app.include_router(probe)
    install_error_handlers(app)
    if chain_id is not None:
        app.state.chain_id = chain_id
    settings = Settings(siwe_domain=DOMAIN)

    def session_override() -> Iterator[Session]:
        with Session(engine, expire_on_commit=False) as session:
            yield session

    app.dependency_overrides[get_session] = session_override
    app.state.settings = settings
    return app


@pytest.fixture
def client(db_engine: Engine) -> Iterator[TestClient]:
    with TestClient(build_app(db_engine)) as test_client:
        yield test_client


@pytest.fixture
def wallet() -> LocalAccount:
    return Account.create()


def fresh_nonce(client: TestClient) -> str:
    response = client.post("/auth/siwe/nonce")
    assert response.status_code == 201, response.text
    return response.json()["nonce"]


def sign_in(client: TestClient, message: str, signature: str) -> Response:
    return client.post("/auth/siwe/verify", json={"message": message, "signature": signature})


# --- SIWE ------------------------------------------------------------------------------------------


def test_nonce_response_names_domain_chain_and_a_long_alphanumeric_nonce(client: TestClient) -> None:
    body = client.post("/auth/siwe/nonce").json()
    assert body["domain"] == DOMAIN
    assert body["chain_id"] == CHAIN_ID
    assert len(body["nonce"]) >= 16 and body["nonce"].isalnum()
    assert datetime.fromisoformat(body["expires_at"]) > datetime.now(UTC)


def test_nonce_response_omits_chain_id_when_the_app_has_no_chain(db_engine: Engine) -> None:
    with TestClient(build_app(db_engine, chain_id=None)) as client:
        assert "chain_id" not in client.post("/auth/siwe/nonce").json()


def test_without_a_known_chain_sign_in_is_refused_not_accepted_for_any_chain(
    db_engine: Engine, wallet: LocalAccount
) -> None:
    """No SIWE_CHAIN_ID and no deployment file: a message signed for any chain is refused (503)."""
    with TestClient(build_app(db_engine, chain_id=None)) as client:
        for chain_id in (1, CHAIN_ID):
            message = siwe_message(
                wallet.address,
                fresh_nonce(client),
                chain_id=chain_id,
                expiration_time=datetime.now(UTC) + timedelta(minutes=5),
            )
            response = sign_in(client, message, sign(wallet, message))
            assert response.status_code == 503, response.text
            assert response.json()["error"]["code"] == "siwe_chain_unknown"


def test_siwe_chain_id_comes_from_configuration_before_the_deployment(tmp_path: Path) -> None:
    from edgeledger.main import create_app

    missing = tmp_path / "no-deployment.json"
    settings = Settings(data_dir=tmp_path, deployment_file=missing, siwe_chain_id=8453)
    assert create_app(settings).state.chain_id == 8453
    without = Settings(data_dir=tmp_path, deployment_file=missing)
    assert create_app(without).state.chain_id is None


def test_siwe_sign_in_creates_a_creator_and_a_working_session(
    client: TestClient, wallet: LocalAccount
) -> None:
    message = siwe_message(
        wallet.address, fresh_nonce(client), expiration_time=datetime.now(UTC) + timedelta(minutes=5)
    )
    response = sign_in(client, message, sign(wallet, message))

    assert response.status_code == 200, response.text
    body = response.json()
    assert body["user"]["address"] == wallet.address
    assert body["user"]["role"] == "creator"
    me = client.get("/auth/me", headers={"Authorization": f"Bearer {body['token']}"})
    assert me.status_code == 200, me.text
    assert me.json()["id"] == body["user"]["id"]


def test_second_sign_in_of_a_wallet_reuses_its_account(client: TestClient, wallet: LocalAccount) -> None:
    user_ids = []
    for _ in range(2):
        message = siwe_message(wallet.address, fresh_nonce(client))
        user_ids.append(sign_in(client, message, sign(wallet, message)).json()["user"]["id"])
    assert user_ids[0] == user_ids[1]


def test_replayed_nonce_is_rejected(client: TestClient, wallet: LocalAccount) -> None:
    message = siwe_message(wallet.address, fresh_nonce(client))
    signature = sign(wallet, message)
    assert sign_in(client, message, signature).status_code == 200

    assert_error(sign_in(client, message, signature), 401, "siwe_nonce_replayed")


def test_unknown_nonce_is_rejected(client: TestClient, wallet: LocalAccount) -> None:
    message = siwe_message(wallet.address, "NeverIssuedByTheServer123")
    assert_error(sign_in(client, message, sign(wallet, message)), 401, "siwe_nonce_unknown")


def test_expired_nonce_is_rejected(db_session: Session, wallet: LocalAccount) -> None:
    nonce = service.issue_nonce(db_session, timedelta(seconds=60))
    message = siwe_message(wallet.address, nonce.nonce)
    with pytest.raises(service.AuthError) as caught:
        service.verify_siwe(
            db_session,
            message=message,
            signature=sign(wallet, message),
            expected_domain=DOMAIN,
            expected_chain_id=CHAIN_ID,
            now=nonce.expires_at + timedelta(seconds=1),
        )
    assert caught.value.code == "siwe_expired"


MessageFactory = Callable[[LocalAccount, str], tuple[str, str]]


def _signed(account: LocalAccount, nonce: str, **fields: Any) -> tuple[str, str]:
    message = siwe_message(account.address, nonce, **fields)
    return message, sign(account, message)


def _signed_by_another_key(account: LocalAccount, nonce: str) -> tuple[str, str]:
    message = siwe_message(account.address, nonce)
    return message, sign(Account.create(), message)


def _high_s(account: LocalAccount, nonce: str) -> tuple[str, str]:
    message, signature = _signed(account, nonce)
    return message, high_s_twin(signature)


def _signature_for_another_message(account: LocalAccount, nonce: str) -> tuple[str, str]:
    message, _ = _signed(account, nonce)
    return message, sign(account, message + " ")


REJECTIONS: dict[str, tuple[MessageFactory, int, str]] = {
    "expired": (
        lambda a, n: _signed(a, n, expiration_time=datetime.now(UTC) - timedelta(seconds=5)),
        401,
        "siwe_expired",
    ),
    "not-before-in-future": (
        lambda a, n: _signed(a, n, not_before=datetime.now(UTC) + timedelta(minutes=5)),
        401,
        "siwe_not_yet_valid",
    ),
    "wrong-domain": (lambda a, n: _signed(a, n, domain="evil.example"), 401, "siwe_domain_mismatch"),
    "wrong-chain": (lambda a, n: _signed(a, n, chain_id=1), 401, "siwe_chain_mismatch"),
    # A page served over plain http (anyone on the path could have written it) is not our origin.
    "http-scheme": (lambda a, n: _signed(a, n, scheme="http"), 401, "siwe_scheme_mismatch"),
    "other-signer": (_signed_by_another_key, 401, "siwe_bad_signature"),
    "high-s-malleated": (_high_s, 401, "siwe_bad_signature"),
    "signature-of-other-text": (_signature_for_another_message, 401, "siwe_bad_signature"),
    "signature-not-hex": (lambda a, n: (_signed(a, n)[0], "0xnothex"), 401, "siwe_bad_signature"),
    "signature-too-short": (lambda a, n: (_signed(a, n)[0], "0x" + "11" * 64), 401, "siwe_bad_signature"),
    "not-siwe": (lambda a, n: ("please let me in", sign(a, "please let me in")), 400, "siwe_invalid_message"),
    # An EIP-55 test vector with upper-case letters: a random wallet's address lower-cased can happen to
    # be its own checksum form (no letter to upper-case), and then the case would not test anything.
    "lowercase-address": (
        lambda a, n: (siwe_message("0x52908400098527886e0f7030069857d2e4169ee7", n), "0x" + "11" * 65),
        400,
        "siwe_invalid_message",
    ),
}


def test_siwe_scheme_https_is_accepted_and_http_only_on_loopback(db_session: Session) -> None:
    wallet = Account.create()
    for domain, scheme, accepted in (
        (DOMAIN, "https", True),
        (DOMAIN, "http", False),
        ("127.0.0.1:8000", "http", True),
        ("localhost:8000", "http", True),
        ("localhost:8000", "ftp", False),
    ):
        nonce = service.issue_nonce(db_session, timedelta(minutes=5))
        message = siwe_message(wallet.address, nonce.nonce, domain=domain, scheme=scheme)
        try:
            service.verify_siwe(
                db_session,
                message=message,
                signature=sign(wallet, message),
                expected_domain=domain,
                expected_chain_id=CHAIN_ID,
            )
            outcome = True
        except service.AuthError as refused:
            assert refused.code == "siwe_scheme_mismatch", refused.code
            outcome = False
        assert outcome is accepted, (domain, scheme)


@pytest.mark.parametrize("case", REJECTIONS)
def test_siwe_rejections_leave_the_nonce_usable(client: TestClient, wallet: LocalAccount, case: str) -> None:
    factory, status, code = REJECTIONS[case]
    nonce = fresh_nonce(client)
    message, signature = factory(wallet, nonce)

    assert_error(sign_in(client, message, signature), status, code)
    # A rejected attempt must not burn the nonce, or anyone could void other people's sign-ins.
    good_message = siwe_message(wallet.address, nonce)
    assert sign_in(client, good_message, sign(wallet, good_message)).status_code == 200


def test_concurrent_verifications_of_one_nonce_admit_exactly_one(db_engine: Engine) -> None:
    wallet: LocalAccount = Account.create()
    for _ in range(5):
        with Session(db_engine) as session:
            nonce = service.issue_nonce(session, timedelta(minutes=5)).nonce
        message = siwe_message(wallet.address, nonce)
        outcomes = _verify_concurrently(db_engine, message, sign(wallet, message), attempts=2)
        assert sorted(outcomes) == ["ok", "siwe_nonce_replayed"]


def _verify_concurrently(engine: Engine, message: str, signature: str, *, attempts: int) -> list[str]:
    barrier = threading.Barrier(attempts)
    outcomes: list[str] = []

    def attempt() -> None:
        with Session(engine, expire_on_commit=False) as session:
            barrier.wait()
            try:
                service.verify_siwe(
                    session,
                    message=message,
                    signature=signature,
                    expected_domain=DOMAIN,
                    expected_chain_id=CHAIN_ID,
                )
                outcomes.append("ok")
            except service.AuthError as exc:
                outcomes.append(exc.code)

    threads = [threading.Thread(target=attempt) for _ in range(attempts)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    return outcomes


# --- sessions --------------------------------------------------------------------------------------


def test_expired_session_is_rejected(client: TestClient, db_session: Session) -> None:
    user, _ = make_user(db_session, Role.creator)
    token, _ = service.create_session(db_session, user, timedelta(seconds=-1))
    response = client.get("/auth/me", headers={"Authorization": f"Bearer {token}"})
    assert_error(response, 401, "session_expired")


def test_unknown_bearer_token_is_rejected(client: TestClient) -> None:
    response = client.get("/auth/me", headers={"Authorization": "Bearer not-a-session"})
    assert_error(response, 401, "unauthenticated")


def test_missing_credentials_say_which_header_to_send(client: TestClient) -> None:
    error = assert_error(client.get("/auth/me"), 401, "unauthenticated")
    assert "Authorization: Bearer" in error["message"]
    assert "X-API-Key" in error["message"]


def test_disabled_account_is_locked_out(client: TestClient, db_session: Session) -> None:
    user, key = make_user(db_session, Role.merchant)
    user.disabled_at = datetime.now(UTC)
    db_session.commit()
    assert_error(client.get("/auth/me", headers=api_key_header(key)), 403, "forbidden")


# --- API keys --------------------------------------------------------------------------------------


def test_api_key_lifecycle(client: TestClient, db_session: Session) -> None:
    _, admin_key = make_user(db_session, Role.admin)
    merchant, _ = make_user(db_session, Role.merchant)

    created = client.post(
        "/auth/api-keys",
        json={"label": "cdn edge", "user_id": merchant.id},
        headers=api_key_header(admin_key),
    )
    assert created.status_code == 201, created.text
    key = created.json()["key"]
    assert key.startswith("el_") and created.json()["prefix"] == key[:8]

    me = client.get("/auth/me", headers=api_key_header(key))
    assert me.status_code == 200 and me.json()["id"] == merchant.id

    revoked = client.delete(f"/auth/api-keys/{created.json()['id']}", headers=api_key_header(key))
    assert revoked.status_code == 204, revoked.text
    assert_error(client.get("/auth/me", headers=api_key_header(key)), 401, "api_key_invalid")


def test_api_key_use_is_recorded(db_session: Session) -> None:
    user, key = make_user(db_session, Role.operator)
    assert service.authenticate_api_key(db_session, key).id == user.id
    stored = db_session.scalars(select(ApiKey).where(ApiKey.user_id == user.id)).one()
    assert stored.last_used_at is not None


def test_unknown_api_key_is_rejected(client: TestClient) -> None:
    assert_error(client.get("/auth/me", headers=api_key_header("el_guessed")), 401, "api_key_invalid")


def test_non_admin_cannot_issue_keys_for_others(client: TestClient, db_session: Session) -> None:
    _, creator_key = make_user(db_session, Role.creator)
    other, _ = make_user(db_session, Role.creator)
    response = client.post(
        "/auth/api-keys", json={"label": "x", "user_id": other.id}, headers=api_key_header(creator_key)
    )
    assert_error(response, 403, "forbidden")


def test_non_owner_cannot_revoke_a_key(client: TestClient, db_session: Session) -> None:
    _, creator_key = make_user(db_session, Role.creator)
    other, _ = make_user(db_session, Role.creator)
    _, other_key = service.create_api_key(db_session, other, "theirs")
    response = client.delete(f"/auth/api-keys/{other_key.id}", headers=api_key_header(creator_key))
    assert_error(response, 403, "forbidden")


def test_revoking_a_missing_key_is_404(client: TestClient, db_session: Session) -> None:
    _, admin_key = make_user(db_session, Role.admin)
    assert_error(
        client.delete("/auth/api-keys/999999", headers=api_key_header(admin_key)), 404, "api_key_not_found"
    )


def test_keys_and_tokens_are_stored_only_as_hashes(db_session: Session, db_engine: Engine) -> None:
    user, key = make_user(db_session, Role.creator)
    token, _ = service.create_session(db_session, user, timedelta(hours=1))

    with db_engine.connect() as conn:
        key_rows = conn.execute(text("SELECT * FROM auth_api_keys")).all()
        session_rows = conn.execute(text("SELECT * FROM auth_sessions")).all()
    stored = " ".join(str(value) for row in [*key_rows, *session_rows] for value in row)
    assert key not in stored and key[8:] not in stored
    assert token not in stored
    assert hashlib.sha256(key.encode()).hexdigest() in stored
    assert db_session.get(AuthSession, hashlib.sha256(token.encode()).hexdigest()) is not None


def test_used_nonce_is_marked(db_session: Session, wallet: LocalAccount) -> None:
    nonce = service.issue_nonce(db_session, timedelta(minutes=5)).nonce
    message = siwe_message(wallet.address, nonce)
    service.verify_siwe(
        db_session,
        message=message,
        signature=sign(wallet, message),
        expected_domain=DOMAIN,
        expected_chain_id=CHAIN_ID,
    )
    assert db_session.get(SiweNonce, nonce, populate_existing=True).used_at is not None


# --- roles -----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("role", "status"),
    [(Role.creator, 200), (Role.merchant, 200), (Role.operator, 200), (Role.admin, 200), (Role.auditor, 403)],
)
def test_auditors_are_read_only(client: TestClient, db_session: Session, role: Role, status: int) -> None:
    _, key = make_user(db_session, role)
    response = client.post("/probe/write", headers=api_key_header(key))
    if status == 200:
        assert response.status_code == 200 and response.json() == {"via": "api_key"}
    else:
        assert_error(response, 403, "forbidden")


@pytest.mark.parametrize(
    ("role", "status"),
    [(Role.operator, 200), (Role.admin, 200), (Role.creator, 403), (Role.auditor, 403)],
)
def test_require_roles(client: TestClient, db_session: Session, role: Role, status: int) -> None:
    _, key = make_user(db_session, role)
    response = client.get("/probe/operators-only", headers=api_key_header(key))
    if status == 200:
        assert response.status_code == 200
    else:
        error = assert_error(response, 403, "forbidden")
        assert "operator" in error["message"] and "admin" in error["message"]


def test_owner_or_admin(client: TestClient, db_session: Session) -> None:
    owner, owner_key = make_user(db_session, Role.creator, address=Account.create().address)
    _, stranger_key = make_user(db_session, Role.creator, address=Account.create().address)
    _, admin_key = make_user(db_session, Role.admin)
    path = f"/probe/owned/{owner.address}"

    assert client.put(path, headers=api_key_header(owner_key)).status_code == 200
    assert client.put(path, headers=api_key_header(admin_key)).status_code == 200
    assert_error(client.put(path, headers=api_key_header(stranger_key)), 403, "forbidden")


def test_ensure_owner_rejects_accounts_without_address() -> None:
    service_account = Principal(user_id=1, role=Role.operator, address=None, via="api_key")
    with pytest.raises(service.AuthError) as caught:
        ensure_owner_or_admin(service_account, Account.create().address)
    assert caught.value.status == 403


# --- user admin ------------------------------------------------------------------------------------


def test_admin_creates_and_lists_users(client: TestClient, db_session: Session) -> None:
    _, admin_key = make_user(db_session, Role.admin)
    address = Account.create().address
    created = client.post(
        "/admin/users",
        json={"role": "merchant", "name": "Acme CDN", "address": address.lower()},
        headers=api_key_header(admin_key),
    )
    assert created.status_code == 201, created.text
    assert created.json()["address"] == address  # stored checksummed

    duplicate = client.post(
        "/admin/users",
        json={"role": "creator", "name": "again", "address": address},
        headers=api_key_header(admin_key),
    )
    assert_error(duplicate, 409, "user_exists")

    listed = client.get("/admin/users", headers=api_key_header(admin_key))
    assert {user["name"] for user in listed.json()} >= {"Acme CDN"}


def test_admin_routes_need_admin(client: TestClient, db_session: Session) -> None:
    _, operator_key = make_user(db_session, Role.operator)
    assert_error(client.get("/admin/users", headers=api_key_header(operator_key)), 403, "forbidden")
    response = client.post(
        "/admin/users", json={"role": "admin", "name": "me again"}, headers=api_key_header(operator_key)
    )
    assert_error(response, 403, "forbidden")


def test_admin_issuing_a_key_for_a_missing_user_is_404(client: TestClient, db_session: Session) -> None:
    _, admin_key = make_user(db_session, Role.admin)
    response = client.post(
        "/auth/api-keys", json={"label": "x", "user_id": 999999}, headers=api_key_header(admin_key)
    )
    assert_error(response, 404, "user_not_found")


def test_invalid_address_is_a_validation_error(client: TestClient, db_session: Session) -> None:
    _, admin_key = make_user(db_session, Role.admin)
    response = client.post(
        "/admin/users",
        json={"role": "creator", "name": "x", "address": "0x1234"},
        headers=api_key_header(admin_key),
    )
    assert_error(response, 422, "validation_error")


# --- auditor scopes --------------------------------------------------------------------------------

SOURCE_A = "0x" + "aa" * 32
SOURCE_B = "0x" + "bb" * 32


def test_auditor_scopes_fail_closed_and_only_an_explicit_grant_is_global(
    client: TestClient, db_session: Session
) -> None:
    admin, admin_key = make_user(db_session, Role.admin)
    auditor, auditor_key = make_user(db_session, Role.auditor)
    merchant, _ = make_user(db_session, Role.merchant, address=Account.create().address)

    # Nobody scoped this auditor: it reads nothing.
    mine = client.get("/auth/me/scope", headers=api_key_header(auditor_key))
    assert mine.status_code == 200, mine.text
    assert mine.json() == {"user_id": auditor.id, "is_global": False, "merchants": [], "sources": []}
    assert service.audit_scope(db_session, auditor.id, Role.auditor).is_empty

    scoped = client.put(
        f"/admin/users/{auditor.id}/scope",
        json={"merchants": [merchant.id], "sources": [SOURCE_A.upper().replace("0X", "0x")]},
        headers=api_key_header(admin_key),
    )
    assert scoped.status_code == 200, scoped.text
    assert scoped.json() == {
        "user_id": auditor.id,
        "is_global": False,
        "merchants": [merchant.id],
        "sources": [SOURCE_A],
    }

    scope = service.audit_scope(db_session, auditor.id, Role.auditor)
    assert scope.allows_merchant(merchant.id) and not scope.allows_merchant(merchant.id + 1000)
    assert scope.allows_source(SOURCE_A) and not scope.allows_source(SOURCE_B)

    cleared = client.put(f"/admin/users/{auditor.id}/scope", json={}, headers=api_key_header(admin_key))
    assert cleared.json() == {"user_id": auditor.id, "is_global": False, "merchants": [], "sources": []}

    granted = client.put(
        f"/admin/users/{auditor.id}/scope", json={"is_global": True}, headers=api_key_header(admin_key)
    )
    assert granted.json() == {"user_id": auditor.id, "is_global": True, "merchants": [], "sources": []}
    assert client.get("/auth/me/scope", headers=api_key_header(auditor_key)).json()["is_global"] is True
    entry = db_session.scalar(select(AuditorScopeEntry).where(AuditorScopeEntry.user_id == auditor.id))
    assert entry is not None and (entry.kind, entry.ref, entry.granted_by) == ("global", "*", admin.id)

    # Every change is in the compliance log, with who made it.
    events = db_session.scalars(
        select(ComplianceEvent)
        .where(ComplianceEvent.subject == f"auditor-scope:{auditor.id}")
        .order_by(ComplianceEvent.id)
    ).all()
    assert [e.action for e in events] == ["policy_change"] * 3
    assert {e.actor for e in events} == {f"user:{admin.id}:admin"}
    assert [json.loads(e.detail_json)["is_global"] for e in events] == [False, False, True]


@pytest.mark.parametrize(
    ("body", "status", "code"),
    [
        ({"sources": ["0x1234"]}, 422, "invalid_scope"),
        ({"merchants": [999_999]}, 422, "invalid_scope"),
        ({"is_global": True, "sources": [SOURCE_A]}, 422, "invalid_scope"),
    ],
)
def test_bad_scopes_are_refused(
    client: TestClient, db_session: Session, body: dict[str, Any], status: int, code: str
) -> None:
    _, admin_key = make_user(db_session, Role.admin)
    auditor, _ = make_user(db_session, Role.auditor)
    assert_error(
        client.put(f"/admin/users/{auditor.id}/scope", json=body, headers=api_key_header(admin_key)),
        status,
        code,
    )
    assert service.audit_scope(db_session, auditor.id, Role.auditor).is_empty  # nothing half-written


def test_only_auditors_have_scopes_and_only_admins_set_them(client: TestClient, db_session: Session) -> None:
    _, admin_key = make_user(db_session, Role.admin)
    merchant, merchant_key = make_user(db_session, Role.merchant)
    auditor, auditor_key = make_user(db_session, Role.auditor)
    refused = client.put(f"/admin/users/{merchant.id}/scope", json={}, headers=api_key_header(admin_key))
    assert_error(refused, 409, "not_an_auditor")
    own = client.put(f"/admin/users/{auditor.id}/scope", json={}, headers=api_key_header(auditor_key))
    assert_error(own, 403, "forbidden")
    # Roles other than auditor and admin read nothing on the audit paths.
    assert client.get("/auth/me/scope", headers=api_key_header(merchant_key)).json()["is_global"] is False
    assert not service.audit_scope(db_session, merchant.id, Role.merchant).allows_merchant(merchant.id)


# --- hostile SIWE input -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "message",
    [
        "x" * 2048,
        "x" * 300 + " wants you to sign in with your Ethereum account:\n" + "y" * 600,
        siwe_message("0x71C7656EC7ab88b098defB751B7401B5f6d8976F", "NonceNonce12345678")
        + "\nResources:\n- https://e.example/"
        + "a" * 600,
    ],
    ids=["garbage", "long-line", "long-resource"],
)
def test_siwe_text_the_parser_would_chew_on_is_refused_at_once(message: str) -> None:
    """Found by fuzzing: the siwe package's ABNF parser took ~15 s of CPU for 8 KiB of text, which the API
    accepted; such text is now refused before it reaches the parser."""
    started = time.monotonic()
    with pytest.raises(service.AuthError) as caught:
        service.parse_siwe_message(message)
    assert caught.value.code == "siwe_invalid_message" and caught.value.status == 400
    assert time.monotonic() - started < 0.5


def test_siwe_messages_longer_than_the_limit_are_refused_by_the_api_model() -> None:
    from pydantic import ValidationError

    from edgeledger.auth.models import MAX_SIWE_MESSAGE_CHARS, SiweVerifyRequest

    SiweVerifyRequest(message="m" * MAX_SIWE_MESSAGE_CHARS, signature="0x")
    with pytest.raises(ValidationError):
        SiweVerifyRequest(message="m" * (MAX_SIWE_MESSAGE_CHARS + 1), signature="0x")
