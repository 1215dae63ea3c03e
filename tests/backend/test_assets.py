"""Asset registration and verification against real anvil, the real IPFS node and real databases."""

from __future__ import annotations

import hashlib
import json
import os
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from eth_account import Account
from fastapi.testclient import TestClient
from sqlalchemy import func, select
from sqlalchemy.orm import Session
from typer.testing import CliRunner

from edgeledger.assets import flows, service, updates
from edgeledger.assets.models import Asset, Registration, RegistrationState
from edgeledger.auth.models import Role
from edgeledger.chain.client import ChainClient
from edgeledger.cli import app as cli_app
from edgeledger.config import Settings
from edgeledger.devtools.samples import demo_png
from edgeledger.ipfs import IpfsClient, cid_of_bytes
from edgeledger.ledger import registration as formats
from edgeledger.ledger.splits import split_hash, splits_at
from edgeledger.main import create_app
from tests.backend.support.stack import Caller, free_port, make_caller, post_asset, rpc, thief_registers

pytestmark = pytest.mark.integration


def png(label: str | None = None) -> bytes:
    return demo_png(label or os.urandom(8).hex())


def upload(client: TestClient, caller: Caller, data: bytes, **params: Any) -> Any:
    params.setdefault("title", "Product shot")
    return post_asset(
        client,
        caller,
        files={"file": ("shot.png", data, "image/png")},
        data={"metadata": json.dumps(params)},
    )


def sha(data: bytes) -> str:
    return "0x" + hashlib.sha256(data).hexdigest()


def registrations(client: TestClient) -> list[Registration]:
    with Session(client.app.state.engine) as session:  # type: ignore[attr-defined]
        return list(session.scalars(select(Registration).order_by(Registration.id)))


def asset_count(client: TestClient) -> int:
    with Session(client.app.state.engine) as session:  # type: ignore[attr-defined]
        return session.scalar(select(func.count()).select_from(Asset)) or 0


def assert_error(response: Any, status: int, code: str) -> dict[str, Any]:
    assert response.status_code == status, response.text
    body = response.json()["error"]
    assert body["code"] == code
    assert body["message"]
    return body


# ----------------------------------------------------------------------------------------------
# Happy path
# ----------------------------------------------------------------------------------------------


def test_register_end_to_end_and_verify_from_file(
    app_client: TestClient, creator: Caller, ipfs_client: IpfsClient
) -> None:
    data = png()
    response = upload(
        app_client,
        creator,
        data,
        title="Sneaker",
        territories=["DE", "us"],
        royalty_bps=250,
        valid_until=4102444800,
    )
    assert response.status_code == 201, response.text
    asset = response.json()

    assert asset["content_hash"] == sha(data)
    assert asset["creator"] == creator.account.address == asset["owner"]
    assert asset["territories"] == ["DE", "US"]
    assert asset["split"] == [{"recipient": creator.account.address, "bps": 10_000}]
    assert asset["media_type"] == "image/png"
    assert asset["token_uri"] == f"ipfs://{asset['metadata_cid']}"
    assert asset["chain"]["block_number"] > 0 and asset["chain"]["confirmations"] >= 1

    # Both pins exist and hold what we say they hold.
    assert ipfs_client.is_pinned(asset["content_cid"]) and ipfs_client.is_pinned(asset["metadata_cid"])
    assert ipfs_client.cat(asset["content_cid"]) == data
    metadata = json.loads(ipfs_client.cat(asset["metadata_cid"]))
    assert metadata["image"] == f"ipfs://{asset['content_cid']}"
    assert metadata["properties"]["content_sha256"] == sha(data)

    # The journal is closed and points at the asset.
    (reg,) = registrations(app_client)
    assert (reg.state, reg.asset_id) == (RegistrationState.registered, asset["id"])

    # Verification from the file alone reads the chain: block, tx and log index of the registration.
    verdict = app_client.post(
        "/verify", files={"file": ("any-name.bin", data, "application/octet-stream")}
    ).json()
    assert verdict["registered"] is True
    assert verdict["asset_id"] == asset["id"] and verdict["creator"] == creator.account.address
    assert verdict["chain"]["tx_hash"] == asset["chain"]["tx_hash"]
    assert verdict["chain"]["block_number"] == asset["chain"]["block_number"]
    assert verdict["chain"]["log_index"] == asset["chain"]["log_index"]
    receipt = rpc(
        app_client.app.state.settings.eth_rpc_url, "eth_getTransactionReceipt", asset["chain"]["tx_hash"]
    )  # type: ignore[attr-defined]
    assert int(receipt["blockNumber"], 16) == verdict["chain"]["block_number"]  # type: ignore[index]

    unknown = app_client.get(f"/verify/{sha(b'never registered')}").json()
    assert unknown["registered"] is False and unknown["asset_id"] is None


def test_search_lineage_and_provenance(app_client: TestClient, creator: Caller) -> None:
    parent = upload(app_client, creator, png(), title="Original", territories=["FR"]).json()
    child = upload(
        app_client,
        creator,
        png(),
        title="AI variant",
        parent_asset_id=parent["id"],
        aigc=True,
        territories=["DE"],
    ).json()
    grandchild = upload(
        app_client, creator, png(), title="Re-edit", parent_asset_id=child["id"], territories=["US"]
    ).json()

    provenance = app_client.get(f"/assets/{child['id']}", headers=creator.headers).json()
    assert provenance["matches_chain"] is True
    assert provenance["on_chain"]["parent_id"] == parent["id"] and provenance["on_chain"]["aigc"] is True
    assert [a["id"] for a in provenance["ancestors"]] == [parent["id"]]
    assert [a["id"] for a in provenance["derivatives"]] == [grandchild["id"]]
    assert provenance["on_chain"]["status"] == "active"

    def ids(**query: str) -> list[int]:
        return [a["id"] for a in app_client.get("/assets", params=query, headers=creator.headers).json()]

    assert ids(creator=creator.account.address) == [parent["id"], child["id"], grandchild["id"]]
    assert ids(territory="FR") == [parent["id"]]
    assert ids(content_hash=child["content_hash"]) == [child["id"]]
    assert ids(cid=grandchild["content_cid"]) == [grandchild["id"]]
    bad = app_client.get("/assets", params={"cid": "bafy-not-a-cid"}, headers=creator.headers)
    assert_error(bad, 422, "invalid_cid")


def test_provenance_follows_the_chain_after_transfer_and_dispute(
    app_client: TestClient, creator: Caller, chain_snapshot: Any
) -> None:
    asset = upload(app_client, creator, png()).json()
    chain = app_client.app.state.chain  # type: ignore[attr-defined]
    registry = chain.contract("ContentRegistry")
    new_owner = make_caller(app_client, Role.creator, "buyer").account.address
    rpc(chain.rpc_url, "anvil_setBalance", creator.account.address, hex(10**20))
    rpc(chain.rpc_url, "anvil_impersonateAccount", creator.account.address)
    registry.functions.transferFrom(creator.account.address, new_owner, asset["id"]).transact(
        {"from": creator.account.address}
    )
    rpc(chain.rpc_url, "anvil_impersonateAccount", chain_snapshot.admin.address)
    registry.functions.markDisputed(asset["id"], "bafkreidispute").transact(
        {"from": chain_snapshot.admin.address}
    )

    provenance = app_client.get(f"/assets/{asset['id']}", headers=creator.headers).json()
    assert provenance["on_chain"]["rights_holder"] == new_owner == provenance["asset"]["owner"]
    assert provenance["on_chain"]["status"] == "disputed" == provenance["asset"]["status"]
    assert provenance["on_chain"]["status_reason_cid"] == "bafkreidispute"


# ----------------------------------------------------------------------------------------------
# Bad input: clear 4xx, nothing half-written
# ----------------------------------------------------------------------------------------------


def test_duplicate_content_is_refused_without_new_pins(app_client: TestClient, creator: Caller) -> None:
    data = png()
    first = upload(app_client, creator, data).json()
    other = make_caller(app_client, Role.creator, "copycat")
    body = assert_error(upload(app_client, other, data, title="Copy"), 409, "duplicate_content")
    assert body["details"]["asset_id"] == first["id"]
    assert len(registrations(app_client)) == 1 and asset_count(app_client) == 1


@pytest.mark.parametrize(
    ("params", "status", "code"),
    [
        (
            {
                "split": [
                    {"recipient": "0x" + "11" * 20, "bps": 6000},
                    {"recipient": "0x" + "22" * 20, "bps": 3000},
                ]
            },
            422,
            "invalid_split",
        ),
        (
            {
                "split": [
                    {"recipient": "0x" + "11" * 20, "bps": 10_000},
                    {"recipient": "0x" + "11" * 20, "bps": 0},
                ]
            },
            422,
            "invalid_split",
        ),
        (
            {"split": [{"recipient": "0x" + f"{i:040x}", "bps": 1} for i in range(1, 52)]},
            422,
            "invalid_split",
        ),
        ({"territories": ["DE", "XX"]}, 422, "unknown_territory"),
        ({"parent_asset_id": 999}, 422, "unknown_parent"),
        ({"valid_from": 2_000_000_000, "valid_until": 1_900_000_000}, 422, "invalid_licence"),
        ({"royalty_bps": 10_001}, 422, "validation_error"),
        ({"creator": "0x" + "33" * 20}, 403, "forbidden"),
        ({"surprise": True}, 422, "validation_error"),
        ({"terms_cid": "not-a-cid"}, 422, "invalid_cid"),
        ({"terms_cid": "QmYwAPJzv5CZsnA625s3Xf2nemtYgPpHdWEz79ojWnPbdG"}, 422, "invalid_cid"),
    ],
    ids=[
        "split-sum",
        "split-zero-share",
        "split-too-many",
        "territory",
        "parent",
        "window",
        "royalty",
        "foreign-creator",
        "unknown-field",
        "malformed-cid",
        "cidv0",
    ],
)
def test_bad_registration_input(
    app_client: TestClient, creator: Caller, params: dict[str, Any], status: int, code: str
) -> None:
    assert_error(upload(app_client, creator, png(), **params), status, code)
    assert registrations(app_client) == [] and asset_count(app_client) == 0


def test_bad_uploads(app_client: TestClient, creator: Caller, settings: Settings) -> None:
    assert_error(upload(app_client, creator, b"#!/bin/sh\necho not media\n"), 415, "unsupported_media_type")
    assert_error(upload(app_client, creator, b""), 400, "empty_upload")
    response = post_asset(
        app_client,
        creator,
        data={"metadata": "{not json"},
        files={"file": ("a.png", png(), "image/png")},
    )
    assert_error(response, 422, "validation_error")
    assert registrations(app_client) == []


def test_oversized_upload_is_refused(settings: Settings, creator_factory: Any) -> None:
    small = settings.model_copy(update={"max_upload_bytes": 4096})
    app = create_app(small)
    with TestClient(app) as client:
        caller = creator_factory(client)
        big = demo_png("big", size=256) + os.urandom(10_000)
        body = assert_error(upload(client, caller, big), 413, "upload_too_large")
        assert "4096" in body["message"] or "bytes" in body["message"]
        assert registrations(client) == []
    app.state.engine.dispose()


def test_uploads_waiting_for_signatures_are_bounded_per_creator_and_in_all(
    settings: Settings, creator_factory: Any
) -> None:
    """Every upload waits on disk for its creator's signature: a creator holds at most
    PENDING_REGISTRATIONS_PER_CREATOR of them (429), and the spool at most UPLOAD_SPOOL_MAX_BYTES,
    whoever uploads (507). A refused upload leaves nothing behind."""
    bounded = settings.model_copy(
        update={"pending_registrations_per_creator": 2, "upload_spool_max_bytes": 60_000}
    )
    app = create_app(bounded)
    spool = bounded.data_dir / "uploads"

    def wait(client: TestClient, caller: Caller, data: bytes) -> Any:
        return client.post(
            "/assets",
            headers=caller.headers,
            files={"file": ("shot.png", data, "image/png")},
            data={"metadata": json.dumps({"title": "Waiting", "mode": "wallet"})},
        )

    with TestClient(app) as client:
        first, second = creator_factory(client), creator_factory(client)
        files = [demo_png(f"quota-{i}", size=64) + os.urandom(10_000) for i in range(4)]
        assert wait(client, first, files[0]).status_code == 202
        assert wait(client, first, files[1]).status_code == 202
        kept = sorted(p.name for p in spool.iterdir())
        body = assert_error(wait(client, first, files[2]), 429, "pending_registrations_limit")
        assert body["details"] == {"pending": 2, "limit": 2}
        assert sorted(p.name for p in spool.iterdir()) == kept  # the refused upload's spool is gone
        # The content of an open registration again: not a new one, so the answer says what it is.
        assert_error(wait(client, first, files[1]), 409, "registration_in_progress")
        # Another creator has its own count, but not its own disk: 2 x ~10 kB waits, the spool is at
        # 60,000 bytes with ~40 kB of others' uploads and metadata.
        assert wait(client, second, files[2]).status_code == 202
        used = flows.spool_bytes(spool)
        assert 30_000 < used < 60_000, used
        big = demo_png("quota-big", size=64) + os.urandom(60_000 - used)
        assert_error(wait(client, second, big), 507, "upload_spool_full")
        assert flows.spool_bytes(spool) == used
        # A catalogue's items count one by one: three more would take the second creator past 2.
        items = [
            ("files", (f"item-{n}.png", demo_png(f"quota-item-{n}", size=64), "image/png")) for n in range(3)
        ]
        catalogue = client.post(
            "/assets/catalogues",
            headers=second.headers,
            files=items,
            data={"metadata": json.dumps({"title": "Items", "mode": "wallet"})},
        )
        assert_error(catalogue, 429, "pending_registrations_limit")
        assert flows.spool_bytes(spool) == used
    app.state.engine.dispose()


def test_roles_and_authentication(app_client: TestClient) -> None:
    assert_error(
        app_client.post("/assets", files={"file": ("a.png", png(), "image/png")}), 401, "unauthenticated"
    )
    auditor = make_caller(app_client, Role.auditor, "auditor")
    assert_error(upload(app_client, auditor, png()), 403, "forbidden")
    assert app_client.get("/assets", headers=auditor.headers).status_code == 200
    merchant = make_caller(app_client, Role.merchant, "merchant")
    assert_error(upload(app_client, merchant, png()), 403, "forbidden")


# ----------------------------------------------------------------------------------------------
# Faults: IPFS or chain unreachable, crashes mid-registration
# ----------------------------------------------------------------------------------------------


def test_ipfs_down_delays_publishing_and_loses_nothing(
    settings: Settings, creator_factory: Any, ipfs_client: IpfsClient
) -> None:
    """IPFS is only needed once the registration landed: with the node down the upload waits for its
    signature and lands on chain as usual; the content stays in the spool (`pinning` with the asset id)
    and the reconciler publishes it when the node is back."""
    dead = settings.model_copy(update={"ipfs_api": f"/ip4/127.0.0.1/tcp/{free_port()}/http"})
    app = create_app(dead)
    with TestClient(app) as client:
        caller = creator_factory(client)
        data = png()
        response = upload(client, caller, data)
        assert response.status_code == 201, response.text
        asset = response.json()
        (reg,) = registrations(client)
        assert reg.state == RegistrationState.pinning and reg.asset_id == asset["id"]
        assert reg.error_code == "ipfs_unavailable"
        assert not ipfs_client.is_pinned(asset["content_cid"])
    app.state.engine.dispose()

    # With IPFS back, the reconciler publishes the spooled content.
    later = datetime.now(UTC) + timedelta(minutes=5)
    app = create_app(settings)
    with TestClient(app) as client, Session(app.state.engine) as session:
        counts = flows.reconcile_registrations(
            session,
            ChainClient.from_settings(settings),
            IpfsClient.from_settings(settings),
            settings,
            now=later,
        )
        assert counts["registered"] == 1
        (reg,) = registrations(client)
        assert reg.state == RegistrationState.registered and reg.error_code is None
        assert ipfs_client.is_pinned(asset["content_cid"]) and ipfs_client.cat(asset["content_cid"]) == data
        assert ipfs_client.is_pinned(asset["metadata_cid"])
    app.state.engine.dispose()


def test_chain_down_gives_503_before_anything_is_pinned(settings: Settings, creator_factory: Any) -> None:
    dead = settings.model_copy(update={"eth_rpc_url": f"http://127.0.0.1:{free_port()}"})
    app = create_app(dead)
    with TestClient(app) as client:
        body = assert_error(upload(client, creator_factory(client), png()), 503, "chain_unavailable")
        assert "unreachable" in body["message"]
        assert registrations(client) == []
    app.state.engine.dispose()


def _crashed_registration(app_client: TestClient, caller: Caller, *, submit: bool) -> Registration:
    """Leaves a registration exactly as a process killed after pinning (or after sending) leaves it."""
    app = app_client.app
    data = png()
    with Session(app.state.engine, expire_on_commit=False) as session:  # type: ignore[attr-defined]
        params = flows.RegistrationParams(title="Crash test")
        actor = flows.Actor(caller.user_id, caller.account.address, False)
        import io
        import tempfile

        from edgeledger.assets import service

        creator = flows.creator_for(actor, params)
        with tempfile.NamedTemporaryFile() as spool:
            facts = service.digest_to_file(io.BytesIO(data), spool, 10**9)
            metadata = service.metadata_document(params, facts, creator, 1_700_000_000)
            deadline = int(datetime.now(UTC).timestamp()) + 3600
            reg = flows._open_journal(
                session, actor, params, facts, creator, 1_700_000_000, "c.png", metadata, deadline
            )
            flows.keep_spool(
                session,
                app.state.settings.data_dir / "uploads",
                reg,
                spool.name,
                metadata,
                facts.import_profile,
            )  # type: ignore[attr-defined]
        # The creator's signature arrived and was kept; the process dies before (or after) sending.
        typed = flows.registration_typed_data(app.state.chain, reg)  # type: ignore[attr-defined]
        reg.params_json = json.dumps(
            {**json.loads(reg.params_json), "signature": formats.sign(typed, caller.account.key)}
        )
        reg.state = RegistrationState.pinned
        session.commit()
        if submit:
            reg.tx_hash = app.state.chain.send(flows.registration_call(app.state.chain, reg))  # type: ignore[attr-defined]
            reg.state = RegistrationState.submitted
            session.commit()
        session.expunge(reg)
        return reg


@pytest.mark.parametrize("stage", ["after-pinning", "after-sending"])
def test_reconciler_finishes_registrations_left_by_a_crash(
    app_client: TestClient, creator: Caller, settings: Settings, stage: str
) -> None:
    reg = _crashed_registration(app_client, creator, submit=stage == "after-sending")
    later = datetime.now(UTC) + timedelta(minutes=5)
    with Session(app_client.app.state.engine) as session:  # type: ignore[attr-defined]
        counts = flows.reconcile_registrations(
            session,
            ChainClient.from_settings(settings),
            IpfsClient.from_settings(settings),
            settings,
            now=later,
        )
    assert counts["registered" if stage == "after-sending" else "retried"] == 1
    (row,) = registrations(app_client)
    assert row.id == reg.id and row.state == RegistrationState.registered and row.asset_id == 1
    assert asset_count(app_client) == 1
    ipfs = IpfsClient.from_settings(settings)
    assert ipfs.is_pinned(reg.content_cid) and ipfs.is_pinned(reg.metadata_cid or "")  # published on landing
    # Exactly one registration on chain, and a second reconcile changes nothing.
    chain = ChainClient.from_settings(settings)
    assert chain.call(chain.contract("ContentRegistry").functions.totalAssets()) == 1
    with Session(app_client.app.state.engine) as session:  # type: ignore[attr-defined]
        again = flows.reconcile_registrations(
            session, chain, IpfsClient.from_settings(settings), settings, now=later + timedelta(minutes=5)
        )
    assert sum(again.values()) == 0


def test_reconciler_releases_abandoned_registrations(
    app_client: TestClient, creator: Caller, settings: Settings, ipfs_client: IpfsClient
) -> None:
    reg = _crashed_registration(app_client, creator, submit=False)
    spool = json.loads(reg.params_json)["spool"]
    assert os.path.exists(spool["content"]) and not ipfs_client.is_pinned(reg.content_cid)
    too_late = datetime.now(UTC) + timedelta(seconds=settings.pending_registration_max_age_seconds + 60)
    with Session(app_client.app.state.engine) as session:  # type: ignore[attr-defined]
        counts = flows.reconcile_registrations(
            session,
            ChainClient.from_settings(settings),
            IpfsClient.from_settings(settings),
            settings,
            now=too_late,
        )
    assert counts["released"] == 1
    (row,) = registrations(app_client)
    assert row.state == RegistrationState.released and row.error_code == "registration_expired"
    assert not ipfs_client.is_pinned(reg.content_cid) and not ipfs_client.is_pinned(reg.metadata_cid or "")
    assert not os.path.exists(spool["content"]) and not os.path.exists(spool["metadata"])


# ----------------------------------------------------------------------------------------------
# Wallet mode: the creator signs
# ----------------------------------------------------------------------------------------------


def test_the_platform_registers_only_what_the_creator_signed(app_client: TestClient, creator: Caller) -> None:
    """Every upload waits for the creator's EIP-712 signature of its registration (typed data in the
    read model); someone else's signature is refused before any gas is spent, and the platform's signer
    relays the creator's own with registerFor."""
    chain = app_client.app.state.chain  # type: ignore[attr-defined]
    pending = app_client.post(
        "/assets",
        headers=creator.headers,
        files={"file": ("shot.png", png(), "image/png")},
        data={"metadata": json.dumps({"title": "Signed", "mode": "wallet"})},
    )
    assert pending.status_code == 202, pending.text
    reg = pending.json()
    assert reg["state"] == "awaiting_signature" and reg["tx_hash"] is None
    typed = reg["typed_data"]
    assert typed["primaryType"] == "Registration"
    assert typed["message"]["creator"] == creator.account.address
    assert typed["message"]["contentHash"] == reg["content_hash"]
    assert typed["domain"]["verifyingContract"] == chain.contract("ContentRegistry").address
    path = f"/assets/registrations/{reg['id']}/signature"

    stranger = make_caller(app_client, Role.creator, "stranger").account
    wrong = app_client.post(
        path, headers=creator.headers, json={"signature": formats.sign(typed, stranger.key)}
    )
    body = assert_error(wrong, 422, "invalid_signature")
    assert body["details"]["recovered_signer"] == stranger.address
    assert app_client.get(f"/assets/registrations/{reg['id']}", headers=creator.headers).json()["state"] == (
        "awaiting_signature"
    )
    done = app_client.post(
        path, headers=creator.headers, json={"signature": formats.sign(typed, creator.account.key)}
    )
    assert done.status_code == 201, done.text
    asset = done.json()
    tx = rpc(chain.rpc_url, "eth_getTransactionByHash", asset["chain"]["tx_hash"])
    assert tx["from"].lower() == chain.signer_address.lower()  # type: ignore[index]  # the platform pays
    assert asset["creator"] == creator.account.address
    again = app_client.post(
        path, headers=creator.headers, json={"signature": formats.sign(typed, creator.account.key)}
    )
    assert_error(again, 409, "registration_not_awaiting_signature")


def test_nothing_is_published_before_the_registration_lands(
    app_client: TestClient, creator: Caller, ipfs_client: IpfsClient
) -> None:
    """While a registration waits for the creator's signature its bytes are only in the journal's spool:
    the node has neither the content nor the metadata, so a copied pin cannot exist. Once it lands on
    chain both are pinned with the CIDs the chain records, and the spool is gone."""
    data = png()
    pending = app_client.post(
        "/assets",
        headers=creator.headers,
        files={"file": ("shot.png", data, "image/png")},
        data={"metadata": json.dumps({"title": "Unpublished"})},
    )
    assert pending.status_code == 202, pending.text
    reg = pending.json()
    assert not ipfs_client.is_pinned(reg["content_cid"]) and not ipfs_client.is_pinned(reg["metadata_cid"])
    (row,) = [r for r in registrations(app_client) if r.id == reg["id"]]
    spool = json.loads(row.params_json)["spool"]
    with open(spool["content"], "rb") as kept:
        assert kept.read() == data
    signature = formats.sign(reg["typed_data"], creator.account.key)
    done = app_client.post(
        f"/assets/registrations/{reg['id']}/signature", headers=creator.headers, json={"signature": signature}
    )
    assert done.status_code == 201, done.text
    asset = done.json()
    assert ipfs_client.is_pinned(asset["content_cid"]) and ipfs_client.cat(asset["content_cid"]) == data
    assert ipfs_client.is_pinned(asset["metadata_cid"])
    assert not os.path.exists(spool["content"]) and not os.path.exists(spool["metadata"])


def test_a_registration_front_run_on_chain_is_reported_as_such(
    app_client: TestClient, creator: Caller
) -> None:
    """Someone registers the same bytes on chain (commit-reveal from its own wallet) while the creator's
    registration waits for its signature: the creator's submission answers 409 front_run with the
    other asset and holder (the arbiter may then reassign the rights), and the pins are released."""
    chain = app_client.app.state.chain  # type: ignore[attr-defined]
    data = png()
    pending = app_client.post(
        "/assets",
        headers=creator.headers,
        files={"file": ("shot.png", data, "image/png")},
        data={"metadata": json.dumps({"title": "Mine"})},
    )
    assert pending.status_code == 202, pending.text
    reg = pending.json()
    thief = thief_registers(chain, sha(data))
    signature = formats.sign(reg["typed_data"], creator.account.key)
    late = app_client.post(
        f"/assets/registrations/{reg['id']}/signature", headers=creator.headers, json={"signature": signature}
    )
    body = assert_error(late, 409, "front_run")
    assert body["details"]["holder"] == thief.address
    row = next(r for r in registrations(app_client) if r.id == reg["id"])
    assert row.state == RegistrationState.released and row.error_code == "front_run"


# ----------------------------------------------------------------------------------------------
# CLI
# ----------------------------------------------------------------------------------------------


def test_cli_verify_reads_the_chain_only(
    app_client: TestClient, creator: Caller, settings: Settings, tmp_path: Any
) -> None:
    data = png()
    asset = upload(app_client, creator, data).json()
    file = tmp_path / "downloaded.png"
    file.write_bytes(data)
    rpc = ["--rpc-url", settings.eth_rpc_url, "--deployment", str(settings.deployment_file)]
    result = CliRunner().invoke(cli_app, ["verify", "asset", str(file), *rpc, "--json"])
    assert result.exit_code == 0, result.output
    verdict = json.loads(result.stdout)["verdict"]
    assert verdict["asset_id"] == asset["id"] and verdict["chain"]["tx_hash"] == asset["chain"]["tx_hash"]
    assert (verdict["content_cid"], verdict["import_profile"]) == (asset["content_cid"], "legacy-cidv1")
    lines = CliRunner().invoke(cli_app, ["verify", "asset", str(file), *rpc])
    assert lines.exit_code == 0 and lines.stdout.startswith("PASS registered: asset #"), lines.output
    assert (
        f"PASS content CID: {asset['content_cid']} (import profile legacy-cidv1, as registered)"
        in lines.stdout
    )
    bad = CliRunner().invoke(cli_app, ["verify", "asset", str(file), *rpc, "--import-profile", "v0"])
    assert bad.exit_code == 2 and "unknown import profile 'v0'" in bad.output, bad.output

    # Exit codes: 1 not registered (a failed check), 2 no such file, 3 the chain unreachable.
    file.write_bytes(data + b"tampered")
    tampered = CliRunner().invoke(cli_app, ["verify", "asset", str(file), *rpc])
    assert tampered.exit_code == 1 and "FAIL registered" in tampered.stdout, tampered.output
    missing = CliRunner().invoke(cli_app, ["verify", "asset", str(tmp_path / "nope.png"), *rpc])
    assert missing.exit_code == 2 and missing.output.count("\n") == 1, missing.output
    down = ["--rpc-url", "http://127.0.0.1:9", "--deployment", str(settings.deployment_file)]
    unreachable = CliRunner().invoke(cli_app, ["verify", "asset", str(file), *down])
    assert unreachable.exit_code == 3 and unreachable.output.startswith("error: the chain RPC"), (
        unreachable.output
    )


def test_unixfs_v1_2025_uploads_record_their_profile_and_verify_under_it(
    settings: Settings, creator_factory: Any, ipfs_client: IpfsClient, tmp_path: Any
) -> None:
    """IPFS_IMPORT_PROFILE=unixfs-v1-2025: a 400 kB file is one 1 MiB-chunk raw leaf (legacy-cidv1 makes
    a dag-pb node of two leaves); the node pins that CID, the registry records the profile, the asset
    and its metadata name it, and `verify asset` checks the file's CID under the registered profile."""
    modern = settings.model_copy(update={"ipfs_import_profile": "unixfs-v1-2025"})
    data = demo_png("v1-2025") + os.urandom(400_000)
    expected = cid_of_bytes(data, "unixfs-v1-2025")
    assert expected.startswith("bafk") and expected != cid_of_bytes(data, "legacy-cidv1")
    app = create_app(modern)
    with TestClient(app) as client:
        caller = creator_factory(client)
        response = upload(client, caller, data)
        assert response.status_code == 201, response.text
        asset = response.json()
        assert (asset["content_cid"], asset["import_profile"]) == (expected, "unixfs-v1-2025")
        again = client.get(f"/assets/{asset['id']}", headers=caller.headers).json()
        assert again["asset"]["import_profile"] == "unixfs-v1-2025" and again["matches_chain"] is True
        assert again["on_chain"]["import_profile"] == "unixfs-v1-2025"
        assert ipfs_client.is_pinned(expected) and ipfs_client.cat(expected) == data
        properties = json.loads(ipfs_client.cat(asset["metadata_cid"]))["properties"]
        assert (properties["content_cid"], properties["content_import_profile"]) == (
            expected,
            "unixfs-v1-2025",
        )
    app.state.engine.dispose()

    file = tmp_path / "modern.png"
    file.write_bytes(data)
    rpc = ["--rpc-url", settings.eth_rpc_url, "--deployment", str(settings.deployment_file)]
    result = CliRunner().invoke(cli_app, ["verify", "asset", str(file), *rpc, "--json"])
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["verdict"]["import_profile"] == "unixfs-v1-2025"
    legacy_only = ["verify", "asset", str(file), *rpc, "--import-profile", "legacy-cidv1"]
    refused = CliRunner().invoke(cli_app, legacy_only)
    assert refused.exit_code == 1, refused.output
    assert (
        "FAIL content CID: the chain records import profile unixfs-v1-2025; the file's CID was computed "
        "under legacy-cidv1 only"
    ) in refused.stdout


def test_verify_refuses_a_registration_that_names_the_wrong_import_profile(
    app_client: TestClient, settings: Settings, tmp_path: Any
) -> None:
    """The registry records the profile the CIDs were cut with, and `verify asset` computes the file's
    CID under it: a registration whose legacy-cidv1 CID claims unixfs-v1-2025 fails the check and says
    which profile the CID really is; the registry refuses a profile code it does not know."""
    chain = app_client.app.state.chain  # type: ignore[attr-defined]
    data = demo_png("wrong profile") + os.urandom(400_000)  # two legacy chunks, one 2025 chunk
    legacy = cid_of_bytes(data, "legacy-cidv1")
    assert legacy != cid_of_bytes(data, "unixfs-v1-2025")
    owner = Account.create()
    rpc(chain.rpc_url, "anvil_setBalance", owner.address, hex(10**20))
    registry = chain.contract("ContentRegistry")

    def registration(profile: int) -> tuple[Any, ...]:
        return formats.registration_tuple(
            formats.registration_message(
                (
                    sha(data),
                    legacy,
                    cid_of_bytes(b"meta"),
                    owner.address,
                    0,
                    False,
                    (1, 0, 0, 0, ""),
                    [owner.address],
                    [10_000],
                    profile,
                )
            )
        )

    def send(call: Any) -> int:
        tx = call.build_transaction(
            {
                "from": owner.address,
                "nonce": chain.w3.eth.get_transaction_count(owner.address),
                "gas": 900_000,
            }
        )
        raw = owner.sign_transaction(tx).raw_transaction
        return int(
            chain.w3.eth.wait_for_transaction_receipt(chain.w3.eth.send_raw_transaction(raw))["status"]
        )

    salt = os.urandom(32)
    assert (
        send(registry.functions.commitRegistration(formats.commitment(sha(data), owner.address, salt))) == 1
    )
    assert send(registry.functions.registerAsset(registration(2), salt)) == 0  # UnknownImportProfile(2)
    assert send(registry.functions.registerAsset(registration(1), salt)) == 1

    file = tmp_path / "mislabelled.png"
    file.write_bytes(data)
    rpc_args = ["--rpc-url", settings.eth_rpc_url, "--deployment", str(settings.deployment_file)]
    result = CliRunner().invoke(cli_app, ["verify", "asset", str(file), *rpc_args, "--json"])
    assert result.exit_code == 1, result.output
    assert json.loads(result.stdout)["verdict"]["import_profile"] == "unixfs-v1-2025"
    lines = CliRunner().invoke(cli_app, ["verify", "asset", str(file), *rpc_args]).stdout
    assert f"FAIL content CID: the chain records {legacy}, cut as unixfs-v1-2025" in lines, lines
    assert "under legacy-cidv1 it is: the registration names the wrong profile" in lines, lines


@pytest.fixture
def creator_factory() -> Any:
    return lambda client: make_caller(client, Role.creator, "creator")


def test_licence_and_split_updates_are_relayed_with_the_holders_signature(
    app_client: TestClient, creator: Caller
) -> None:
    """The holder signs, the platform pays: the API answers the typed data, then relays the signature
    (updateLicenceFor / updateSplitFor). A replayed or someone else's signature is refused on chain."""
    asset = upload(app_client, creator, png()).json()
    chain = app_client.app.state.chain  # type: ignore[attr-defined]
    registry = chain.contract("ContentRegistry")
    path = f"/assets/{asset['id']}/licence"
    ask = {"territories": ["DE", "FR"], "royalty_bps": 250, "deadline": 2**40}
    typed = app_client.post(path, headers=creator.headers, json=ask).json()["typed_data"]
    assert typed["primaryType"] == "LicenceUpdate" and typed["message"]["assetId"] == asset["id"]
    signature = formats.sign(typed, creator.account.key)
    done = app_client.post(path, headers=creator.headers, json={**ask, "signature": signature})
    assert done.status_code == 200, done.text
    licence = chain.call(registry.functions.getLicence(asset["id"]))
    assert licence[3] == 250 and licence[0] == service.territories_bitmap(["DE", "FR"])
    replay = app_client.post(path, headers=creator.headers, json={**ask, "signature": signature})
    assert_error(replay, 422, "invalid_signature")
    no_deadline = app_client.post(
        path, headers=creator.headers, json={"territories": ["DE"], "signature": signature}
    )
    assert_error(no_deadline, 422, "deadline_required")

    split_path = f"/assets/{asset['id']}/split"
    co = Account.create()
    ask_split = {
        "split": [
            {"recipient": creator.account.address, "bps": 6000},
            {"recipient": co.address, "bps": 4000},
        ],
        "deadline": 2**40,
    }
    typed = app_client.post(split_path, headers=creator.headers, json=ask_split).json()["typed_data"]
    stranger = formats.sign(typed, co.key)
    assert_error(
        app_client.post(split_path, headers=creator.headers, json={**ask_split, "signature": stranger}),
        422,
        "invalid_signature",
    )
    signed = formats.sign(typed, creator.account.key)
    assert (
        app_client.post(
            split_path, headers=creator.headers, json={**ask_split, "signature": signed}
        ).status_code
        == 200
    )
    # The registry commits to the split; the split itself is in the asset's latest SplitUpdated event.
    block = chain.w3.eth.block_number
    committed = bytes(chain.call(registry.functions.splitHashOf(asset["id"]), block))
    assert committed == split_hash([creator.account.address, co.address], [6000, 4000])
    asset_id = int(asset["id"])
    key = int(chain.call(registry.functions.splitKeyOf(asset_id), block))
    split = splits_at(chain.get_logs, registry.address, {asset_id: (key, committed)}, block)[asset_id]
    assert split == ((creator.account.address.lower(), co.address.lower()), (6000, 4000))
    assert_error(
        app_client.post("/assets/99999/split", headers=creator.headers, json=ask_split), 404, "not_found"
    )


def test_signature_deadlines_follow_the_chains_clock_when_it_runs_ahead(
    app_client: TestClient, creator: Caller, settings: Settings
) -> None:
    """The registry checks ``block.timestamp > deadline``: with the chain's clock two days ahead of this
    host's (beyond both default windows: a day for a registration, an hour for an update), typed data
    made on the host's clock would be expired before it is signed. Counted on the chain's clock, the
    registration and a licence update each land; a deadline already past by the chain's clock is
    refused with a code before any transaction is sent."""
    ahead = 2 * 86_400
    assert ahead > settings.pending_registration_max_age_seconds + 3600
    rpc(settings.eth_rpc_url, "evm_increaseTime", ahead)
    rpc(settings.eth_rpc_url, "evm_mine")
    chain = app_client.app.state.chain  # type: ignore[attr-defined]

    def chain_now() -> int:
        return int(chain.w3.eth.get_block("latest")["timestamp"])

    # Registration: upload, sign the typed data, submit (post_asset); registerFor lands.
    asset = upload(app_client, creator, png())
    assert asset.status_code == 201, asset.text
    asset_id = asset.json()["id"]
    (reg,) = [r for r in registrations(app_client) if r.content_hash == asset.json()["content_hash"]]
    deadline = json.loads(reg.params_json)["deadline"]
    assert deadline > int(datetime.now(UTC).timestamp()) + ahead  # the chain's clock, not the host's

    # A licence update with the default deadline: an hour ahead of the chain's clock.
    path = f"/assets/{asset_id}/licence"
    ask = {"territories": ["DE"], "royalty_bps": 125}
    typed = app_client.post(path, headers=creator.headers, json=ask).json()["typed_data"]
    deadline, now = typed["message"]["deadline"], chain_now()
    assert now - 5 <= deadline - updates.DEFAULT_VALIDITY_SECONDS <= now
    signature = formats.sign(typed, creator.account.key)
    done = app_client.post(
        path, headers=creator.headers, json={**ask, "deadline": deadline, "signature": signature}
    )
    assert done.status_code == 200, done.text
    registry = chain.contract("ContentRegistry")
    assert chain.call(registry.functions.getLicence(asset_id))[3] == 125

    # "An hour from now" by the host's clock is two days past by the chain's: refused, nothing sent.
    host_hour = int(datetime.now(UTC).timestamp()) + 3600
    sent_before = chain.w3.eth.get_transaction_count(chain.signer_address)
    body = assert_error(
        app_client.post(path, headers=creator.headers, json={**ask, "deadline": host_hour}),
        422,
        "deadline_past",
    )
    assert body["details"]["deadline"] == host_hour and body["details"]["chain_time"] > host_hour
    late = {**ask, "royalty_bps": 50, "deadline": host_hour, "signature": signature}
    assert_error(app_client.post(path, headers=creator.headers, json=late), 422, "signature_expired")
    assert chain.w3.eth.get_transaction_count(chain.signer_address) == sent_before
    assert chain.call(registry.functions.getLicence(asset_id))[3] == 125
