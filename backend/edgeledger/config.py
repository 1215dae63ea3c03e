"""The one settings object.

Values come from the process environment, then from a ``.env`` file in the working directory, then from
the defaults below (embedded defaults: SQLite, a local anvil, a local IPFS node, a broker that needs no
server). Field ``foo_bar`` is read from ``FOO_BAR``.

pydantic-settings cannot be installed beside eth-brownie (it needs python-dotenv >= 0.21, brownie pins
0.16), so this is a plain pydantic model filled from the environment with the python-dotenv brownie ships.
"""

from __future__ import annotations

import ipaddress
import os
from functools import lru_cache
from pathlib import Path
from typing import Any, Literal

from dotenv import dotenv_values
from pydantic import BaseModel, ConfigDict, Field, SecretStr, field_validator

from edgeledger.chain.fees import DEFAULT_MAX_FEE_PER_GAS_WEI
from edgeledger.ledger.log_ranges import DEFAULT_MAX_BLOCKS as DEFAULT_LOGS_MAX_BLOCKS

PROJECT_ROOT = Path(__file__).resolve().parents[2]


def proxy_networks(value: str) -> tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...]:
    """``"10.0.0.0/8, 2001:db8::/64"`` -> networks; ValueError names a malformed entry."""
    networks = []
    for part in value.replace(";", ",").split(","):
        if part.strip():
            try:
                networks.append(ipaddress.ip_network(part.strip(), strict=False))
            except ValueError:
                raise ValueError(f"trusted_proxies: {part.strip()!r} is not an address or CIDR") from None
    return tuple(networks)


#: settings read under an earlier name too: earlier name -> field
RENAMED = {"post_replace_after_seconds": "tx_replace_after_seconds"}


def _renamed(values: dict[str, Any]) -> dict[str, Any]:
    """One source's values (the .env file, the environment, overrides), an earlier name read as the
    setting's name unless that one is set too: the environment still beats the .env file, whichever
    name either uses."""
    for old, new in RENAMED.items():
        if old in values:
            values.setdefault(new, values.pop(old))
    return values


class Settings(BaseModel):
    model_config = ConfigDict(frozen=True, extra="ignore")

    data_dir: Path = Field(PROJECT_ROOT / "var", description="Runtime state of the local stack")
    database_url: str = Field("", description="SQLAlchemy URL; default SQLite in DATA_DIR")
    eth_rpc_url: str = "http://127.0.0.1:8545"
    chain_confirmations: int = Field(1, ge=0, description="Blocks on top of a receipt before it is final")
    eth_logs_max_blocks: int = Field(
        DEFAULT_LOGS_MAX_BLOCKS,
        ge=0,
        description="Blocks per eth_getLogs query of a longer search (halved when the provider refuses "
        "a piece as too large); 0: no limit",
    )
    tx_timeout_seconds: float = Field(120.0, gt=0)
    tx_max_fee_per_gas_wei: int = Field(
        DEFAULT_MAX_FEE_PER_GAS_WEI,
        gt=0,
        description="The most the server signer bids per gas for any transaction, replacements included "
        "(chain/fees.py): a fee spike never costs more than this",
    )
    tx_replace_after_seconds: int = Field(
        300,
        ge=0,
        description="A settlement post, an anchor or a relayed registration or catalogue left unmined "
        "this long is sent again at its nonce with fees 25 % higher (never twice: one transaction per "
        "nonce is mined; chain/stuck_tx.py). "
        "POST_REPLACE_AFTER_SECONDS, its earlier name, is still read",
    )
    signer_private_key: SecretStr | None = Field(None, description="Server signer (REGISTRAR_ROLE)")
    deployment_file: Path | None = Field(
        None, description="Deployed addresses; default DATA_DIR/deployment.json"
    )
    ipfs_api: str = "/ip4/127.0.0.1/tcp/5001/http"
    ipfs_timeout_seconds: float = Field(600.0, gt=0)
    ipfs_import_profile: Literal["legacy-cidv1", "unixfs-v1-2025"] = Field(
        "legacy-cidv1",
        description="How new uploads are chunked into CIDs (edgeledger.ipfs.cid.PROFILES); the IPFS node "
        "is told the same parameters on every add, and each asset records the profile it was added with",
    )
    celery_broker_url: str = Field("", description="Default: SQLite-backed broker in DATA_DIR")
    api_host: str = "127.0.0.1"
    api_port: int = 8000
    public_base_url: str = Field("", description="Default http://API_HOST:API_PORT")
    max_upload_bytes: int = Field(2 * 1024**3, gt=0)
    max_json_bytes: int = Field(
        1024**2,
        gt=0,
        description="Request body of any route but the upload routes (JSON, forms; read whole into "
        "memory); 413 body_too_large past it",
    )
    siwe_domain: str = Field("", description="Domain SIWE messages must name; default host:port of the API")
    siwe_chain_id: int | None = Field(
        None, gt=0, description="Chain id SIWE messages must name; default the deployment file's"
    )
    siwe_nonce_ttl_seconds: int = Field(600, gt=0)
    session_ttl_seconds: int = Field(12 * 3600, gt=0)
    pending_registration_max_age_seconds: int = Field(
        24 * 3600, gt=0, description="Pins whose registration has not landed by then are released"
    )
    pending_registrations_per_creator: int = Field(
        1000, gt=0, description="Open registrations a creator may have (429 pending_registrations_limit)"
    )
    upload_spool_max_bytes: int = Field(
        50 * 1024**3,
        gt=0,
        description="Disk for uploads waiting for their creators' signatures (507 upload_spool_full)",
    )
    # Deliveries (docs/deliveries.md)
    delivery_period_seconds: int = Field(
        86400, ge=60, le=86400, description="Length of a settlement/anchoring period; must divide a day"
    )
    delivery_late_window_seconds: int = Field(
        24 * 3600, ge=0, description="How long after its end a period still takes late logs before closing"
    )
    # Upload limits of log ingestion (docs/ingestion.md, "Upload limits")
    ingest_max_decompressed_bytes: int = Field(
        16 * 1024**3,
        gt=0,
        description="Bytes one log upload may decompress to (plain: its size); 413 past it",
    )
    ingest_max_compression_ratio: int = Field(
        100,
        ge=1,
        description="Decompressed / received bytes of a gzip upload, judged past its first MiB; 413",
    )
    ingest_max_line_chars: int = Field(
        65_536,
        gt=0,
        le=1_000_000,
        description="Characters of one log line (terminator excluded); 422 past it",
    )
    ingest_max_lines: int = Field(50_000_000, gt=0, description="Lines of one log upload; 413 past it")
    ingest_max_quarantined_lines: int = Field(
        10_000, ge=0, description="Quarantined lines of one upload (residency ones not counted); 422 past it"
    )
    # Queued ingestion (docs/ingestion.md, "Queued ingestion"): the endpoints store the upload and
    # answer 202; `edgeledger ingest-worker` processes run it from NATS JetStream.
    ingest_mode: Literal["inline", "queue"] = Field(
        "inline", description="inline: the upload request parses the log; queue: it stores it and enqueues"
    )
    nats_url: str = Field(
        "nats://127.0.0.1:4222", description="NATS server(s) with JetStream, comma-separated"
    )
    ingest_stream: str = Field("EDGELEDGER_INGEST", description="JetStream stream of queued ingests")
    ingest_partitions: int = Field(
        8, ge=1, le=1024, description="Subjects ingest.<p>; a source always maps to the same partition"
    )
    ingest_ack_wait_seconds: float = Field(
        60.0, gt=0, description="A message unacknowledged this long (no progress) is delivered again"
    )
    ingest_signer_private_key: SecretStr | None = Field(
        None, description="Platform ingest key: signs CDN providers' manifests; default the server signer"
    )
    node_keys_file: Path | None = Field(
        None, description="JSON {source name: private key} of edge nodes whose manifests the platform signs"
    )
    pseudonym_master_key: SecretStr | None = Field(
        None, description="Wraps the daily client-pseudonym keys; default a 0600 file in DATA_DIR"
    )
    fraud_max_requests_per_client: int = Field(10_000, gt=0)
    fraud_max_bytes_per_client: int = Field(50 * 1024**3, gt=0)
    fraud_dominance_min_requests: int = Field(1_000, gt=0)
    fraud_dominance_share_bps: int = Field(5_000, gt=0, le=10_000)
    fraud_max_client_bytes_per_second: int = Field(
        1_250_000_000, gt=0, description="Above this (10 Gbit/s) sustained over a minute is impossible"
    )
    fraud_review_due_seconds: int = Field(
        3 * 86_400,
        gt=0,
        description="An open fraud flag older than this is overdue: it still holds its batch's pay for the "
        "merchant whose records it covers (no settlement counts the batch until the flag is decided)",
    )
    settlement_platform_address: str = Field(
        "", description="Receives the platform fee and delivery margin; default the server signer's address"
    )
    settlement_tolerance_bps: int = Field(
        50, ge=0, le=10_000, description="Default reconciliation tolerance of new settlement accounts"
    )
    settlement_max_payees: int = Field(100_000, gt=0, description="Refuse to compute larger payout trees")
    rate_limit_auth_per_minute: int = Field(60, gt=0, description="Sign-in and API-key requests per caller")
    rate_limit_audit_per_minute: int = Field(300, gt=0, description="Portal and audit requests per caller")
    rate_limit_write_per_minute: int = Field(600, gt=0, description="State-changing requests per caller")
    rate_limit_app_per_minute: int = Field(
        120, gt=0, description="Web app pages (GET under /app, static files aside) per caller"
    )
    rate_limit_anonymous_per_minute: int = Field(
        300,
        gt=0,
        description="Global budget, all callers together, of each route anyone may call without a "
        "credential (sign-in nonce, sign-in, file verification upload)",
    )
    rate_limit_strategy: Literal["fixed-window", "moving-window", "sliding-window-counter"] = Field(
        "fixed-window", description="How the limits library counts a minute"
    )
    rate_limit_redis_url: str = Field("", description="Share rate-limit counters across API processes")
    trusted_proxies: str = Field(
        "",
        description="Comma-separated CIDRs of reverse proxies whose X-Forwarded-For names the client; "
        "default none (the TCP peer is the client)",
    )
    data_storage_zone: str = Field(
        "EU", description="Data zone this deployment stores raw logs in (EU or ISO code)"
    )
    raw_retention_days: int = Field(90, gt=0, description="Raw log fields are redacted after this many days")
    compliance_batch_seconds: int = Field(
        300, gt=0, description="Compliance events are batched and anchored at least this often"
    )
    indexer_confirmations: int = Field(
        1, ge=0, description="Blocks on top before the indexer applies a block"
    )
    indexer_log_chunk: int = Field(2_000, gt=0, description="Blocks per eth_getLogs range of the indexer")
    indexer_metadata_max_bytes: int = Field(
        65_536, gt=0, description="Largest asset metadata document the indexer reads from IPFS"
    )
    indexer_metadata_timeout_seconds: float = Field(
        10.0, gt=0, description="Time the indexer gives one asset metadata read from IPFS"
    )
    indexer_metadata_attempts: int = Field(
        3, ge=1, description="Reads of an asset's metadata that timed out or found IPFS down, at most"
    )
    public_rpc_url: str = Field(
        "", description="RPC URL the portal gives browsers to check proofs; default ETH_RPC_URL"
    )
    read_max_age_seconds: float = Field(
        1.0,
        ge=0,
        le=60,
        description="How stale a read path's view may be: the shared chain head, authenticated "
        "credentials and asset provenance are reused for this long per API process",
    )
    api_threads: int = Field(
        40, gt=0, le=1000, description="Worker threads per API process for blocking request work"
    )
    db_pool_size: int = Field(
        5,
        ge=1,
        le=1000,
        description="PostgreSQL connections each process keeps open (SQLAlchemy pool_size)",
    )
    db_max_overflow: int = Field(
        10,
        ge=0,
        le=1000,
        description="Connections a process may open beyond DB_POOL_SIZE under load; each is closed "
        "when returned to a full pool (SQLAlchemy max_overflow)",
    )
    log_level: str = "INFO"

    @field_validator("delivery_period_seconds")
    @classmethod
    def _period_divides_a_day(cls, value: int) -> int:
        if 86400 % value:
            raise ValueError("delivery_period_seconds must divide 86400 (periods align with UTC days)")
        return value

    @field_validator("trusted_proxies")
    @classmethod
    def _cidrs(cls, value: str) -> str:
        proxy_networks(value)
        return value

    @property
    def trusted_proxy_networks(self) -> tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...]:
        return proxy_networks(self.trusted_proxies)

    @property
    def resolved_database_url(self) -> str:
        return self.database_url or f"sqlite:///{self.data_dir / 'edgeledger.db'}"

    @property
    def resolved_broker_url(self) -> str:
        return self.celery_broker_url or f"sqla+sqlite:///{self.data_dir / 'celery-broker.db'}"

    @property
    def resolved_deployment_file(self) -> Path:
        return self.deployment_file or self.data_dir / "deployment.json"

    @property
    def resolved_ingest_signer_key(self) -> SecretStr | None:
        return self.ingest_signer_private_key or self.signer_private_key

    @property
    def resolved_public_base_url(self) -> str:
        return self.public_base_url or f"http://{self.api_host}:{self.api_port}"

    @property
    def resolved_siwe_domain(self) -> str:
        return self.siwe_domain or f"{self.api_host}:{self.api_port}"

    @classmethod
    def from_env(cls, env_file: Path | None = Path(".env"), **overrides: Any) -> Settings:
        values: dict[str, Any] = {}
        if env_file is not None and env_file.is_file():
            values.update(
                _renamed({k.lower(): v for k, v in dotenv_values(env_file).items() if v is not None})
            )
        fields = set(cls.model_fields) | set(RENAMED)
        values.update(_renamed({k.lower(): v for k, v in os.environ.items() if k.lower() in fields}))
        values.update(_renamed(dict(overrides)))
        return cls(**values)


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    return Settings.from_env()
