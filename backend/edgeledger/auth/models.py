"""Users, API keys, SIWE nonces and sessions; plus the request/response schemas of the auth API.

Secrets are never stored: API keys and session tokens are kept as SHA-256 hex digests, so a leaked
database row cannot be replayed as a credential.
"""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum

from pydantic import BaseModel, ConfigDict, Field
from sqlalchemy import Enum, ForeignKey, String, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from edgeledger.db import Base, UTCDateTime, utcnow


class Role(StrEnum):
    creator = "creator"
    merchant = "merchant"
    operator = "operator"
    auditor = "auditor"
    admin = "admin"


# Stored as its value in a VARCHAR with a CHECK constraint rather than a native PostgreSQL ENUM, so that
# adding a role later is a one-line migration on every backend.
ROLE_TYPE = Enum(
    Role,
    name="role",
    native_enum=False,
    create_constraint=True,
    length=16,
    values_callable=lambda roles: [role.value for role in roles],
    validate_strings=True,
)


class User(Base):
    __tablename__ = "auth_users"

    id: Mapped[int] = mapped_column(primary_key=True)
    # EIP-55 checksummed, so the unique constraint also holds across differently-cased inputs.
    # NULL for service accounts that only ever use API keys.
    address: Mapped[str | None] = mapped_column(String(42), unique=True)
    name: Mapped[str] = mapped_column(String(200))
    role: Mapped[Role] = mapped_column(ROLE_TYPE)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    disabled_at: Mapped[datetime | None] = mapped_column(UTCDateTime)


class ApiKey(Base):
    __tablename__ = "auth_api_keys"

    id: Mapped[int] = mapped_column(primary_key=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("auth_users.id", ondelete="CASCADE"), index=True)
    prefix: Mapped[str] = mapped_column(String(8))
    key_hash: Mapped[str] = mapped_column(String(64), unique=True)
    label: Mapped[str] = mapped_column(String(200))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    last_used_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    revoked_at: Mapped[datetime | None] = mapped_column(UTCDateTime)


class SiweNonce(Base):
    __tablename__ = "auth_siwe_nonces"

    nonce: Mapped[str] = mapped_column(String(64), primary_key=True)
    issued_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    expires_at: Mapped[datetime] = mapped_column(UTCDateTime, index=True)
    used_at: Mapped[datetime | None] = mapped_column(UTCDateTime)


class AuthSession(Base):
    __tablename__ = "auth_sessions"

    token_hash: Mapped[str] = mapped_column(String(64), primary_key=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("auth_users.id", ondelete="CASCADE"), index=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    expires_at: Mapped[datetime] = mapped_column(UTCDateTime)
    revoked_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    # the API key a portal session was opened with: revoking the key ends the session
    api_key_pk: Mapped[int | None] = mapped_column(ForeignKey("auth_api_keys.id", ondelete="CASCADE"))


class AuditorScopeEntry(Base):
    """One merchant or delivery source an auditor may read, or the explicit grant of everything.

    Scopes fail closed: an auditor without entries reads nothing on the audit paths. Only a
    ``kind="global"`` row (``ref="*"``, written by an admin through ``PUT /admin/users/{id}/scope``
    with ``is_global: true``, recorded in the compliance log) makes an auditor global."""

    __tablename__ = "auth_auditor_scopes"
    __table_args__ = (UniqueConstraint("user_id", "kind", "ref"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("auth_users.id", ondelete="CASCADE"), index=True)
    # "merchant" (ref = user id) | "source" (ref = source id) | "global" (ref = "*")
    kind: Mapped[str] = mapped_column(String(16))
    ref: Mapped[str] = mapped_column(String(66))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    # the admin who wrote the entry (NULL for entries written before this was recorded)
    granted_by: Mapped[int | None] = mapped_column(ForeignKey("auth_users.id", ondelete="SET NULL"))


class UserRead(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: int
    address: str | None
    name: str
    role: Role
    created_at: datetime
    disabled_at: datetime | None


class UserCreate(BaseModel):
    role: Role
    name: str = Field(min_length=1, max_length=200)
    address: str | None = Field(None, description="0x address; omit for a service account")


class ApiKeyCreate(BaseModel):
    label: str = Field(min_length=1, max_length=200)
    user_id: int | None = Field(None, description="Admins only: issue the key for this user")


class ApiKeyRead(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: int
    user_id: int
    prefix: str
    label: str
    created_at: datetime
    last_used_at: datetime | None
    revoked_at: datetime | None


class ApiKeyCreated(ApiKeyRead):
    key: str = Field(description="The key itself; shown only in this response, store it now")


class NonceRead(BaseModel):
    nonce: str
    expires_at: datetime
    domain: str
    chain_id: int | None = None


#: Longest Sign-In with Ethereum message accepted (EIP-4361 messages are a few hundred characters; the
#: parser's time grows faster than linearly with length: auth/service.py ``_check_siwe_shape``).
MAX_SIWE_MESSAGE_CHARS = 2048


class SiweVerifyRequest(BaseModel):
    # Bounds keep the parser and signature recovery away from arbitrarily large inputs.
    message: str = Field(min_length=1, max_length=MAX_SIWE_MESSAGE_CHARS)
    signature: str = Field(min_length=1, max_length=200)


class SessionRead(BaseModel):
    token: str = Field(description="Send as 'Authorization: Bearer <token>'; shown only here")
    expires_at: datetime
    user: UserRead


class AuditorScopeSet(BaseModel):
    """What an auditor may read: only these merchants and sources; nothing when both lists are empty;
    everything only with ``is_global`` (then both lists must be empty)."""

    is_global: bool = Field(False, description="Grant every merchant and source (admins only; logged)")
    merchants: list[int] = Field(default_factory=list, max_length=1000, description="Merchant user ids")
    sources: list[str] = Field(
        default_factory=list, max_length=1000, description="DeliveryLedger source ids (0x + 64 hex)"
    )


class AuditorScopeRead(AuditorScopeSet):
    user_id: int
