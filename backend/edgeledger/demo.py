"""The scripted demo `edgeledger up` runs: a creator registers an image and an AI-generated variant of
it through the API, and the original is then verified from the file alone against the chain."""

from __future__ import annotations

import io
import json
from typing import Any

import httpx
from eth_account import Account
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from edgeledger.assets import service as assets_service
from edgeledger.assets.models import Asset
from edgeledger.auth import service as auth_service
from edgeledger.auth.models import ApiKey, Role
from edgeledger.config import Settings
from edgeledger.db import make_engine
from edgeledger.devstack import demo_png, now_label, say
from edgeledger.main import make_chain_client


def _demo_api_key(settings: Settings, creator_address: str) -> str:
    """The demo creator's API key, made once and kept (0600) beside the dev keys in DATA_DIR."""
    path = settings.data_dir / "demo-api-key"
    engine = make_engine(settings.resolved_database_url)
    with Session(engine) as session:
        user = auth_service.get_user_by_address(session, creator_address)
        if user is None:
            user = auth_service.create_user(
                session, role=Role.creator, address=creator_address, name="Demo creator"
            )
        if path.exists():
            key = path.read_text().strip()
            if session.scalar(select(ApiKey).where(ApiKey.key_hash == auth_service.hash_secret(key))):
                return key
        key, _ = auth_service.create_api_key(session, user, "demo")
        session.commit()
    engine.dispose()
    path.touch(mode=0o600)
    path.write_text(key)
    return key


def _register(client: httpx.Client, name: str, data: bytes, params: dict[str, Any]) -> httpx.Response:
    return client.post(
        "/assets",
        files={"file": (name, data, "image/png")},
        data={"metadata": json.dumps(params)},
        timeout=120,
    )


def run_demo(settings: Settings, base_url: str, *, creator_key: str) -> None:
    creator = Account.from_key(creator_key).address
    key = _demo_api_key(settings, creator)
    label = now_label()
    original = demo_png(f"EdgeLedger demo original {label}")
    variant = demo_png(f"EdgeLedger demo AIGC variant {label}")

    with httpx.Client(base_url=base_url, headers={"X-API-Key": key}) as client:
        say(f"demo: creator {creator} uploads a product image ({len(original)} bytes)")
        first = _register(
            client,
            "sneaker.png",
            original,
            {
                "title": "Sneaker, studio shot",
                "territories": ["DE", "FR", "US", "JP"],
                "royalty_bps": 500,
                "split": [{"recipient": creator, "bps": 10_000}],
            },
        )
        first.raise_for_status()
        asset = first.json()
        say(
            f"  registered asset #{asset['id']}: sha-256 {asset['content_hash'][:18]}…, "
            f"CID {asset['content_cid']}"
        )
        say(f"  on chain in block {asset['chain']['block_number']}, tx {asset['chain']['tx_hash']}")

        second = _register(
            client,
            "sneaker-aigc.png",
            variant,
            {
                "title": "Sneaker, AI background variant",
                "territories": ["DE", "FR"],
                "parent_asset_id": asset["id"],
                "aigc": True,
            },
        )
        second.raise_for_status()
        child = second.json()
        say(f"  registered its AI-generated variant as asset #{child['id']} (parent #{child['parent_id']})")

        again = _register(client, "sneaker-copy.png", original, {"title": "Same bytes again"})
        error = again.json()["error"]
        say(
            f"  uploading the same bytes again is refused: HTTP {again.status_code} {error['code']}: "
            f"{error['message']}"
        )

    chain = make_chain_client(settings)
    sha = assets_service.sha256_of_stream(io.BytesIO(original))
    verdict = assets_service.verify_content_hash(chain, sha)
    assert verdict.chain is not None
    say(
        f"verify (file only, against the chain): registered={verdict.registered}, asset #{verdict.asset_id}, "
        f"creator {verdict.creator}, at {verdict.registered_at:%Y-%m-%d %H:%M:%S} UTC, block "
        f"{verdict.chain.block_number}, tx {verdict.chain.tx_hash[:18]}…, log index {verdict.chain.log_index}"
    )
    engine = make_engine(settings.resolved_database_url)
    with Session(engine) as session:
        total = session.scalar(select(func.count()).select_from(Asset))
    engine.dispose()
    say(f"the database now holds {total} registered assets (runs add to it; nothing is reset)")
