"""Accounts, API keys, Sign-In with Ethereum (EIP-4361) and bearer sessions.

Functions take the caller's :class:`~sqlalchemy.orm.Session` and commit their own changes, so each
credential change is durable as soon as the call returns.
"""

from __future__ import annotations

import hashlib
import secrets
import string
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, cast

from eth_account import Account
from eth_account.messages import encode_defunct
from eth_keys.constants import SECPK1_N
from eth_keys.exceptions import BadSignature
from eth_utils import ValidationError as EthValidationError
from eth_utils import is_address, to_checksum_address
from sqlalchemy import CursorResult, delete, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from edgeledger.auth.models import (
    MAX_SIWE_MESSAGE_CHARS,
    ApiKey,
    AuditorScopeEntry,
    AuthSession,
    Role,
    SiweNonce,
    User,
)
from edgeledger.db import utcnow
from edgeledger.errors import EdgeLedgerError

API_KEY_PREFIX = "el_"
API_KEY_DISPLAY_CHARS = 8
NONCE_ALPHABET = string.ascii_letters + string.digits
NONCE_LENGTH = 32  # ~190 bits; EIP-4361 demands at least 8 alphanumerics
# Writing last_used_at on every request would turn each read into a write; minute precision is plenty.
API_KEY_TOUCH_INTERVAL = timedelta(seconds=60)
_SECP256K1_HALF_N = SECPK1_N // 2
#: Longest line of an EIP-4361 message accepted for parsing (the whole message: MAX_SIWE_MESSAGE_CHARS).
#: Real messages are a few hundred characters; the siwe package's ABNF parser takes time that grows faster
#: than linearly with a line's length (8 KiB of text: ~15 s of CPU, docs/testing.md), so longer input is
#: refused before it reaches the parser.
MAX_SIWE_LINE_CHARS = 512
_SIWE_PREAMBLE = " wants you to sign in with your Ethereum account:"


class AuthError(EdgeLedgerError):
    status = 401
    code = "unauthenticated"


def hash_secret(secret: str) -> str:
    """SHA-256 hex digest: the only form in which API keys and session tokens are stored."""
    return hashlib.sha256(secret.encode()).hexdigest()


def checksum_address(address: str) -> str:
    if not is_address(address):
        raise AuthError(
            f"{address!r} is not an Ethereum address (0x + 40 hex digits, EIP-55 case if mixed)",
            code="validation_error",
            status=422,
        )
    return str(to_checksum_address(address))


def _ensure_enabled(user: User) -> None:
    if user.disabled_at is not None:
        raise AuthError(f"account {user.id} is disabled", code="forbidden", status=403)


# --- users -----------------------------------------------------------------------------------------


def create_user(session: Session, *, role: Role, address: str | None = None, name: str) -> User:
    checksummed = checksum_address(address) if address is not None else None
    user = User(role=role, address=checksummed, name=name)
    session.add(user)
    try:
        session.commit()
    except IntegrityError as exc:
        session.rollback()
        raise AuthError(
            f"a user with address {checksummed} already exists", code="user_exists", status=409
        ) from exc
    return user


def get_user(session: Session, user_id: int) -> User:
    user = session.get(User, user_id)
    if user is None:
        raise AuthError(f"user {user_id} not found", code="user_not_found", status=404)
    return user


def get_user_by_address(session: Session, address: str) -> User | None:
    return session.scalar(select(User).where(User.address == checksum_address(address)))


def list_users(session: Session, *, limit: int = 100, offset: int = 0) -> list[User]:
    return list(session.scalars(select(User).order_by(User.id).limit(limit).offset(offset)))


# --- auditor scopes --------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class AuditScope:
    """What one caller may read through the audit paths (portal, audit packages, auditors' reads).

    Scopes fail closed. Admins are global; an auditor reads only its merchants (by merchant user id)
    and sources (by DeliveryLedger source id), and nothing at all without scope entries, unless an admin
    granted it the global scope explicitly (a ``global`` entry); every other role reads nothing here
    (their own-resource rules apply in their domains).
    """

    is_global: bool
    merchants: frozenset[int] = frozenset()
    sources: frozenset[str] = frozenset()

    def allows_merchant(self, merchant_user_id: int | None) -> bool:
        return self.is_global or (merchant_user_id is not None and merchant_user_id in self.merchants)

    def allows_source(self, source_id: str | None) -> bool:
        return self.is_global or (source_id is not None and source_id.lower() in self.sources)

    @property
    def is_empty(self) -> bool:
        """Reads nothing at all (an auditor nobody has scoped yet)."""
        return not (self.is_global or self.merchants or self.sources)


NO_SCOPE = AuditScope(is_global=False)
GLOBAL_SCOPE = AuditScope(is_global=True)
GLOBAL_KIND, GLOBAL_REF = "global", "*"


def audit_scope(session: Session, user_id: int, role: Role) -> AuditScope:
    if role == Role.admin:
        return GLOBAL_SCOPE
    if role != Role.auditor:
        return NO_SCOPE
    entries = session.scalars(select(AuditorScopeEntry).where(AuditorScopeEntry.user_id == user_id)).all()
    if any(e.kind == GLOBAL_KIND for e in entries):
        return GLOBAL_SCOPE
    return AuditScope(
        is_global=False,
        merchants=frozenset(int(e.ref) for e in entries if e.kind == "merchant"),
        sources=frozenset(e.ref for e in entries if e.kind == "source"),
    )


def _source_ref(value: str) -> str:
    ref = value.lower()
    if len(ref) != 66 or not ref.startswith("0x") or any(c not in "0123456789abcdef" for c in ref[2:]):
        raise AuthError(f"source id {value!r} is not 0x + 64 hex digits", code="invalid_scope", status=422)
    return ref


def set_audit_scope(
    session: Session,
    user: User,
    merchants: list[int],
    sources: list[str],
    *,
    granted_by: User,
    is_global: bool = False,
) -> AuditScope:
    """Replaces an auditor's scope. Empty lists leave it reading nothing; ``is_global`` (with both lists
    empty) grants everything. Only an admin (``granted_by``) may write a scope; merchants must be
    merchant accounts. The caller records the change in the compliance log."""
    if granted_by.role != Role.admin:
        raise AuthError("only an admin may set an audit scope", code="forbidden", status=403)
    if user.role != Role.auditor:
        raise AuthError(f"user {user.id} is a {user.role}, not an auditor", code="not_an_auditor", status=409)
    if is_global and (merchants or sources):
        raise AuthError(
            "a global scope names no merchants or sources; send is_global alone",
            code="invalid_scope",
            status=422,
        )
    for merchant_id in merchants:
        merchant = session.get(User, merchant_id)
        if merchant is None or merchant.role != Role.merchant:
            raise AuthError(f"user {merchant_id} is not a merchant", code="invalid_scope", status=422)
    refs = {("merchant", str(m)) for m in merchants} | {("source", _source_ref(s)) for s in sources}
    if is_global:
        refs = {(GLOBAL_KIND, GLOBAL_REF)}
    session.execute(delete(AuditorScopeEntry).where(AuditorScopeEntry.user_id == user.id))
    session.add_all(
        AuditorScopeEntry(user_id=user.id, kind=kind, ref=ref, granted_by=granted_by.id)
        for kind, ref in sorted(refs)
    )
    session.flush()
    return audit_scope(session, user.id, user.role)


# --- API keys --------------------------------------------------------------------------------------


def create_api_key(session: Session, user: User, label: str) -> tuple[str, ApiKey]:
    """Returns the plaintext key, which exists nowhere else afterwards, and its stored record."""
    _ensure_enabled(user)
    key = API_KEY_PREFIX + secrets.token_urlsafe(32)
    api_key = ApiKey(
        user_id=user.id, prefix=key[:API_KEY_DISPLAY_CHARS], key_hash=hash_secret(key), label=label
    )
    session.add(api_key)
    session.commit()
    return key, api_key


def get_api_key(session: Session, key_id: int) -> ApiKey:
    api_key = session.get(ApiKey, key_id)
    if api_key is None:
        raise AuthError(f"API key {key_id} not found", code="api_key_not_found", status=404)
    return api_key


def authenticate_api_key(session: Session, key: str, *, now: datetime | None = None) -> User:
    return authenticate_api_key_row(session, key, now=now)[1]


def authenticate_api_key_row(
    session: Session, key: str, *, now: datetime | None = None
) -> tuple[ApiKey, User]:
    """The key's row and its user (a portal session remembers the key it was opened with)."""
    # Looking the key up by its hash is the constant-time comparison: the database compares digests
    # of attacker-chosen input, which leak nothing about the stored key through timing.
    row = session.execute(
        select(ApiKey, User).join(User, User.id == ApiKey.user_id).where(ApiKey.key_hash == hash_secret(key))
    ).one_or_none()
    if row is None or row.ApiKey.revoked_at is not None:
        raise AuthError("API key is unknown or revoked", code="api_key_invalid")
    api_key, user = row
    _ensure_enabled(user)
    now = now or utcnow()
    if api_key.last_used_at is None or now - api_key.last_used_at >= API_KEY_TOUCH_INTERVAL:
        api_key.last_used_at = now
        session.commit()
    return api_key, user


def revoke_api_key(session: Session, api_key: ApiKey, *, now: datetime | None = None) -> ApiKey:
    """Revokes the key and, in the same transaction, every session opened with it (portal sign-ins)."""
    if api_key.revoked_at is None:
        when = now or utcnow()
        api_key.revoked_at = when
        session.execute(
            update(AuthSession)
            .where(AuthSession.api_key_pk == api_key.id, AuthSession.revoked_at.is_(None))
            .values(revoked_at=when)
        )
        session.commit()
    return api_key


# --- sessions --------------------------------------------------------------------------------------


def create_session(
    session: Session,
    user: User,
    ttl: timedelta,
    *,
    now: datetime | None = None,
    api_key: ApiKey | None = None,
) -> tuple[str, AuthSession]:
    """Returns the plaintext bearer token, which exists nowhere else afterwards, and its record. A
    session opened with ``api_key`` ends when that key is revoked."""
    _ensure_enabled(user)
    now = now or utcnow()
    token = secrets.token_urlsafe(32)
    record = AuthSession(
        token_hash=hash_secret(token),
        user_id=user.id,
        created_at=now,
        expires_at=now + ttl,
        api_key_pk=api_key.id if api_key is not None else None,
    )
    session.add(record)
    session.commit()
    return token, record


def revoke_session_token(session: Session, token: str, *, now: datetime | None = None) -> None:
    """Ends a session (sign-out); unknown tokens are ignored."""
    session.execute(
        update(AuthSession)
        .where(AuthSession.token_hash == hash_secret(token), AuthSession.revoked_at.is_(None))
        .values(revoked_at=now or utcnow())
    )
    session.commit()


def authenticate_session_token(session: Session, token: str, *, now: datetime | None = None) -> User:
    row = session.execute(
        select(AuthSession, User)
        .join(User, User.id == AuthSession.user_id)
        .where(AuthSession.token_hash == hash_secret(token))
    ).one_or_none()
    if row is None or row.AuthSession.revoked_at is not None:
        raise AuthError("session token is unknown or revoked; sign in again", code="unauthenticated")
    record, user = row
    if record.expires_at <= (now or utcnow()):
        raise AuthError("session expired; sign in again", code="session_expired")
    _ensure_enabled(user)
    return user


# --- Sign-In with Ethereum -------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class SiweFields:
    """The parts of an EIP-4361 message the server checks."""

    domain: str
    address: str
    chain_id: int
    #: EIP-4361's optional URI scheme before the domain ("https://example.com wants you ..."), or None.
    scheme: str | None
    nonce: str
    expiration_time: datetime | None
    not_before: datetime | None


def issue_nonce(session: Session, ttl: timedelta, *, now: datetime | None = None) -> SiweNonce:
    now = now or utcnow()
    # Anyone may ask for nonces, so expired ones are swept here to keep the table bounded.
    session.execute(delete(SiweNonce).where(SiweNonce.expires_at < now))
    nonce = SiweNonce(
        nonce="".join(secrets.choice(NONCE_ALPHABET) for _ in range(NONCE_LENGTH)),
        issued_at=now,
        expires_at=now + ttl,
    )
    session.add(nonce)
    session.commit()
    return nonce


def verify_siwe(
    session: Session,
    *,
    message: str,
    signature: str,
    expected_domain: str,
    expected_chain_id: int | None,
    now: datetime | None = None,
) -> User:
    """Checks a signed EIP-4361 message, consumes its nonce and returns the signer's account.

    ``expected_chain_id=None`` (no chain configured: neither SIWE_CHAIN_ID nor a deployment file) refuses
    every sign-in with 503 ``siwe_chain_unknown``: a message signed for any chain must not be accepted.
    A wallet signing in for the first time gets a ``creator`` account.
    """
    now = now or utcnow()
    fields = parse_siwe_message(message)
    _check_siwe_audience(fields, expected_domain, expected_chain_id)
    _check_siwe_validity_window(fields, now)
    if _recover_signer(message, signature) != fields.address:
        raise AuthError("signature was not made by the message's address", code="siwe_bad_signature")
    _claim_nonce(session, fields.nonce, now)
    return _get_or_create_wallet_user(session, fields.address)


def parse_siwe_message(message: str) -> SiweFields:
    _check_siwe_shape(message)
    # Imported here, not at module level, so that a broken siwe install (siwe 4.4.0 does not import
    # with abnf >= 2.9) disables only SIWE sign-in, not the API-key and session checks every router uses.
    from siwe import SiweMessage

    try:
        parsed = SiweMessage.from_message(message)
        return SiweFields(
            domain=parsed.domain,
            scheme=parsed.scheme,
            address=parsed.address,
            chain_id=parsed.chain_id,
            nonce=parsed.nonce,
            expiration_time=_parse_timestamp(parsed.expiration_time),
            not_before=_parse_timestamp(parsed.not_before),
        )
    except ValueError as exc:  # also pydantic's ValidationError
        raise AuthError(
            f"not a valid EIP-4361 (Sign-In with Ethereum) message: {exc}",
            code="siwe_invalid_message",
            status=400,
        ) from exc


def _check_siwe_shape(message: str) -> None:
    """Refuses, in linear time, text the ABNF parser would spend long on: too long, an over-long line, or a
    first line that is not EIP-4361's ``<domain> wants you to sign in with your Ethereum account:``."""
    problem = ""
    if len(message) > MAX_SIWE_MESSAGE_CHARS:
        problem = f"over {MAX_SIWE_MESSAGE_CHARS} characters"
    elif any(len(line) > MAX_SIWE_LINE_CHARS for line in message.split("\n")):
        problem = f"a line is over {MAX_SIWE_LINE_CHARS} characters"
    elif not message.partition("\n")[0].endswith(_SIWE_PREAMBLE):
        problem = f"the first line does not end with {_SIWE_PREAMBLE.strip()!r}"
    if problem:
        raise AuthError(
            f"not a valid EIP-4361 (Sign-In with Ethereum) message: {problem}",
            code="siwe_invalid_message",
            status=400,
        )


def _parse_timestamp(value: str | None) -> datetime | None:
    if value is None:
        return None
    parsed = datetime.fromisoformat(value)
    if parsed.tzinfo is None:
        raise ValueError(f"timestamp {value!r} has no UTC offset")
    return parsed


#: Hosts for which a SIWE message may name the ``http`` scheme (a developer's own machine); elsewhere a
#: message that names a scheme must name ``https``.
_LOOPBACK_HOSTS = frozenset({"localhost", "127.0.0.1", "[::1]"})


def _check_siwe_audience(fields: SiweFields, expected_domain: str, expected_chain_id: int | None) -> None:
    if fields.domain != expected_domain:
        raise AuthError(
            f"message is for domain {fields.domain!r}, this service is {expected_domain!r}",
            code="siwe_domain_mismatch",
        )
    # EIP-4361: a scheme, when given, is the origin's; absent, https is meant. A message for
    # http://<our domain> was made for a page served without TLS, which anyone on the path could have
    # written: refused unless the domain is the loopback of a developer's machine.
    host = fields.domain.rsplit(":", 1)[0] if not fields.domain.endswith("]") else fields.domain
    allowed = {"https", "http"} if host in _LOOPBACK_HOSTS else {"https"}
    if fields.scheme is not None and fields.scheme not in allowed:
        raise AuthError(
            f"message is for scheme {fields.scheme!r}; this service signs in over "
            + " or ".join(sorted(allowed)),
            code="siwe_scheme_mismatch",
        )
    if expected_chain_id is None:
        raise AuthError(
            "sign-in is not available: this service knows no chain id (set SIWE_CHAIN_ID or deploy the "
            "contracts)",
            code="siwe_chain_unknown",
            status=503,
        )
    if fields.chain_id != expected_chain_id:
        raise AuthError(
            f"message is for chain {fields.chain_id}, this service uses chain {expected_chain_id}",
            code="siwe_chain_mismatch",
        )


def _check_siwe_validity_window(fields: SiweFields, now: datetime) -> None:
    if fields.expiration_time is not None and now >= fields.expiration_time:
        raise AuthError(f"message expired at {fields.expiration_time.isoformat()}", code="siwe_expired")
    if fields.not_before is not None and now < fields.not_before:
        raise AuthError(
            f"message is not valid before {fields.not_before.isoformat()}", code="siwe_not_yet_valid"
        )


def _recover_signer(message: str, signature: str) -> str:
    """The address whose key made an EIP-191 ``personal_sign`` signature over the message as sent.

    Recovering over the text received (not a re-serialisation of the parsed fields) means the fields
    checked are exactly the ones the wallet showed. Contract wallets (EIP-1271) are not supported.
    """
    bad = AuthError("signature is not a valid 65-byte secp256k1 signature", code="siwe_bad_signature")
    try:
        raw = bytes.fromhex(signature.removeprefix("0x"))
    except ValueError:
        raise bad from None
    if len(raw) != 65:
        raise bad
    # EIP-2: only low-s signatures are canonical; eth_account accepts both halves of the curve.
    if int.from_bytes(raw[32:64], "big") > _SECP256K1_HALF_N:
        raise AuthError("signature is not in canonical low-s form (EIP-2)", code="siwe_bad_signature")
    try:
        return str(Account.recover_message(encode_defunct(text=message), signature=raw))
    except (ValueError, BadSignature, EthValidationError):
        raise bad from None


def _claim_nonce(session: Session, nonce: str, now: datetime) -> None:
    stored = session.get(SiweNonce, nonce, populate_existing=True)
    if stored is None:
        raise AuthError(
            "nonce was not issued by this service (or has been purged)", code="siwe_nonce_unknown"
        )
    if stored.used_at is not None:
        raise AuthError("nonce has already been used; request a new one", code="siwe_nonce_replayed")
    if stored.expires_at <= now:
        raise AuthError("nonce expired; request a new one", code="siwe_expired")
    # The conditional UPDATE is the real check: of two concurrent verifications only one can flip
    # used_at from NULL, the checks above merely give precise errors.
    claimed = cast(
        "CursorResult[Any]",
        session.execute(
            update(SiweNonce)
            .where(SiweNonce.nonce == nonce, SiweNonce.used_at.is_(None))
            .values(used_at=now)
            .execution_options(synchronize_session=False)
        ),
    )
    if claimed.rowcount != 1:
        session.rollback()
        raise AuthError("nonce has already been used; request a new one", code="siwe_nonce_replayed")
    session.commit()


def _get_or_create_wallet_user(session: Session, address: str) -> User:
    user = get_user_by_address(session, address)
    if user is None:
        try:
            user = create_user(session, role=Role.creator, address=address, name=address)
        except AuthError as exc:
            # A concurrent first sign-in of the same wallet (another tab) created the account first.
            if exc.code != "user_exists":
                raise
            user = get_user_by_address(session, address)
            assert user is not None
    _ensure_enabled(user)
    return user
