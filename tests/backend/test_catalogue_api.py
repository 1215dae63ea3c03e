"""Catalogues through the API (POST /assets/catalogues, registerBatchFor) against real anvil, the real IPFS
node and real databases: one creator signature, ONE transaction, one asset per item, pins only after the
landing; refusals before anything is kept or sent; the reconciler finishing or releasing what a crash
left."""

from __future__ import annotations

import hashlib
import json
import os
import time
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from eth_account import Account
from fastapi.testclient import TestClient
from sqlalchemy import select
from sqlalchemy.orm import Session

from edgeledger.assets import catalogues, flows
from edgeledger.assets.models import Asset, Catalogue, CatalogueState, Registration, RegistrationState
from edgeledger.auth.models import Role
from edgeledger.chain.client import ChainClient
from edgeledger.config import PROJECT_ROOT, Settings
from edgeledger.devtools.rpc_proxy import JsonRpcProxy
from edgeledger.devtools.samples import demo_png
from edgeledger.ipfs import IpfsClient, cid_of_bytes
from edgeledger.ledger import registration as formats
from edgeledger.ledger.abis import event_topic
from edgeledger.main import create_app
from tests.backend.support.stack import Caller, make_caller, post_asset, remember, rpc, thief_registers

pytestmark = pytest.mark.integration


def pngs(count: int, size: int = 16) -> list[bytes]:
    tag = os.urandom(6).hex()
    return [demo_png(f"catalogue {tag} #{n}", size=size) for n in range(count)]


def post_catalogue(
    client: TestClient, caller: Caller | dict[str, str], datas: list[bytes], **params: Any
) -> Any:
    headers = caller.headers if isinstance(caller, Caller) else caller
    files = [("files", (f"item-{n}.png", data, "image/png")) for n, data in enumerate(datas)]
    return client.post(
        "/assets/catalogues", headers=headers, files=files, data={"metadata": json.dumps(params)}
    )


def sign(client: TestClient, caller: Caller, cat: dict[str, Any], key: Any = None) -> Any:
    signature = formats.sign(cat["typed_data"], key if key is not None else caller.account.key)
    path = f"/assets/catalogues/{cat['id']}/signature"
    return client.post(path, headers=caller.headers, json={"signature": signature})


def sha(data: bytes) -> str:
    return "0x" + hashlib.sha256(data).hexdigest()


def journal(client: TestClient) -> tuple[list[Catalogue], list[Registration]]:
    with Session(client.app.state.engine) as session:  # type: ignore[attr-defined]
        cats = list(session.scalars(select(Catalogue).order_by(Catalogue.id)))
        regs = list(session.scalars(select(Registration).order_by(Registration.id)))
        return cats, regs


def assets(client: TestClient) -> list[Asset]:
    with Session(client.app.state.engine) as session:  # type: ignore[attr-defined]
        return list(session.scalars(select(Asset).order_by(Asset.id)))


def assert_error(response: Any, status: int, code: str) -> dict[str, Any]:
    assert response.status_code == status, response.text
    body = response.json()["error"]
    assert body["code"] == code and body["message"]
    return body


def spool_paths(regs: list[Registration]) -> list[str]:
    return [path for r in regs for path in json.loads(r.params_json).get("spool", {}).values() if "/" in path]


# ----------------------------------------------------------------------------------------------
# One signature, one transaction, one asset per item
# ----------------------------------------------------------------------------------------------


def test_a_signed_catalogue_lands_in_one_transaction_each_item_its_own_asset(
    settings: Settings, ipfs_client: IpfsClient
) -> None:
    """Four files under one licence and split, with per-item titles, AIGC flag and a parent: the 202
    carries the Catalogue typed data; nothing is pinned while it waits; someone else's signature is
    refused before gas is spent; the creator's lands in ONE registerBatchFor from the platform's signer,
    each item its own asset with its CIDs, import profile and the shared terms, pinned, spools gone."""
    modern = settings.model_copy(update={"ipfs_import_profile": "unixfs-v1-2025"})
    app = create_app(modern)
    with TestClient(app) as client:
        creator = make_caller(client, Role.creator, "merchant-creator")
        parent = post_asset(
            client,
            creator,
            files={"file": ("parent.png", demo_png(os.urandom(4).hex()), "image/png")},
            data={"metadata": json.dumps({"title": "Parent"})},
        ).json()
        co = Account.create().address
        datas = pngs(4)
        pending = post_catalogue(
            client,
            creator,
            datas,
            title="Spring shoes",
            territories=["DE", "FR"],
            royalty_bps=300,
            valid_until=4_102_444_800,
            split=[{"recipient": creator.account.address, "bps": 7000}, {"recipient": co, "bps": 3000}],
            items=[{"title": "Red"}, {"aigc": True}, {"parent_asset_id": parent["id"]}, {}],
        )
        assert pending.status_code == 202, pending.text
        cat = pending.json()
        assert cat["state"] == "awaiting_signature" and cat["item_count"] == 4
        typed = cat["typed_data"]
        assert typed["primaryType"] == "Catalogue" and typed["message"]["creator"] == creator.account.address
        assert [i["contentHash"] for i in typed["message"]["items"]] == [sha(d) for d in datas]
        assert [i["parentId"] for i in typed["message"]["items"]] == [0, 0, parent["id"], 0]
        assert [i["importProfile"] for i in typed["message"]["items"]] == [1] * 4
        for item, data in zip(cat["items"], datas, strict=True):
            assert item["content_cid"] == cid_of_bytes(data, "unixfs-v1-2025")
            assert not ipfs_client.is_pinned(item["content_cid"])
            assert not ipfs_client.is_pinned(item["metadata_cid"])
        # An item is signed with its catalogue, never on its own.
        item_path = f"/assets/registrations/{cat['items'][0]['registration_id']}/signature"
        lone = formats.sign(typed, creator.account.key)
        assert_error(
            client.post(item_path, headers=creator.headers, json={"signature": lone}),
            409,
            ("registration_in_catalogue"),
        )

        stranger = Account.create()
        body = assert_error(sign(client, creator, cat, stranger.key), 422, "invalid_signature")
        assert body["details"]["recovered_signer"] == stranger.address
        done = sign(client, creator, cat)
        assert done.status_code == 201, done.text
        answer = done.json()
        landed = answer["assets"]
        assert answer["catalogue"]["state"] == "registered"
        assert answer["catalogue"]["first_asset_id"] == landed[0]["id"] == parent["id"] + 1
        assert [a["id"] for a in landed] == list(range(parent["id"] + 1, parent["id"] + 5))
        assert len({a["chain"]["tx_hash"] for a in landed}) == 1  # ONE transaction
        tx = rpc(modern.eth_rpc_url, "eth_getTransactionByHash", landed[0]["chain"]["tx_hash"])
        chain = app.state.chain
        assert tx["from"].lower() == chain.signer_address.lower()  # type: ignore[index]
        assert [a["title"] for a in landed] == ["Red", "Spring shoes 2", "Spring shoes 3", "Spring shoes 4"]
        assert [a["aigc"] for a in landed] == [False, True, False, False]
        assert [a["parent_id"] for a in landed] == [None, None, parent["id"], None]
        for asset, item, data in zip(landed, cat["items"], datas, strict=True):
            assert asset["content_hash"] == sha(data) and asset["creator"] == creator.account.address
            assert (asset["content_cid"], asset["metadata_cid"]) == (
                item["content_cid"],
                item["metadata_cid"],
            )
            assert asset["import_profile"] == "unixfs-v1-2025" and asset["filename"] == item["filename"]
            assert asset["territories"] == ["DE", "FR"] and asset["royalty_bps"] == 300
            assert asset["split"] == [
                {"recipient": creator.account.address, "bps": 7000},
                {"recipient": co, "bps": 3000},
            ]
            assert (
                ipfs_client.is_pinned(asset["content_cid"]) and ipfs_client.cat(asset["content_cid"]) == data
            )
            meta = json.loads(ipfs_client.cat(asset["metadata_cid"]))
            assert meta["name"] == asset["title"] and meta["properties"]["content_import_profile"] == (
                "unixfs-v1-2025"
            )
            provenance = client.get(f"/assets/{asset['id']}", headers=creator.headers).json()
            assert provenance["matches_chain"] is True
            assert provenance["on_chain"]["import_profile"] == "unixfs-v1-2025"
        (row,), regs = journal(client)
        items = [r for r in regs if r.catalogue_id == row.id]
        assert [r.state for r in items] == [RegistrationState.registered] * 4
        assert [r.asset_id for r in items] == [a["id"] for a in landed]
        assert not any(os.path.exists(p) for p in spool_paths(items))
        read = client.get(f"/assets/catalogues/{cat['id']}", headers=creator.headers).json()
        assert read["state"] == "registered" and read["typed_data"] is None
        assert read["tx_hash"] == landed[0]["chain"]["tx_hash"]
        assert_error(sign(client, creator, cat), 409, "catalogue_not_awaiting_signature")
        # Another creator does not see it; an auditor does.
        other = make_caller(client, Role.creator, "other")
        assert_error(
            client.get(f"/assets/catalogues/{cat['id']}", headers=other.headers), 404, ("catalogue_not_found")
        )
    app.state.engine.dispose()


def test_an_admin_uploads_a_catalogue_for_a_named_creator_who_signs_it(
    app_client: TestClient, creator: Caller
) -> None:
    admin = make_caller(app_client, Role.admin, "admin")
    named = remember(Account.create())
    pending = post_catalogue(app_client, admin, pngs(2), creator=named.address)
    assert pending.status_code == 202, pending.text
    cat = pending.json()
    assert cat["creator"] == named.address and cat["mode"] == "server"
    assert [i["filename"] for i in cat["items"]] == ["item-0.png", "item-1.png"]
    assert sign(app_client, admin, cat, creator.account.key).status_code == 422  # the admin's key: no
    done = sign(app_client, admin, cat, named.key)
    assert done.status_code == 201, done.text
    assert [a["owner"] for a in done.json()["assets"]] == [named.address] * 2
    assert [a["title"] for a in done.json()["assets"]] == ["item-0", "item-1"]
    # A creator registers for itself only.
    assert_error(post_catalogue(app_client, creator, pngs(1), creator=named.address), 403, "forbidden")


def deploy_contract_wallet(chain: ChainClient, owner: str) -> str:
    """A TestClaimWallet (ERC-1271: accepts what ``owner``'s key signed) deployed by a fresh account."""
    artifact = json.loads((PROJECT_ROOT / "build" / "contracts" / "TestClaimWallet.json").read_text())
    deployer = Account.create()
    rpc(chain.rpc_url, "anvil_setBalance", deployer.address, hex(10**20))
    factory = chain.w3.eth.contract(abi=artifact["abi"], bytecode=artifact["bytecode"])
    tx = factory.constructor(owner).build_transaction(
        {"from": deployer.address, "nonce": 0, "chainId": chain.chain_id, "gasPrice": chain.w3.eth.gas_price}
    )
    tx_hash = chain.w3.eth.send_raw_transaction(deployer.sign_transaction(tx).raw_transaction)
    return str(chain.w3.eth.wait_for_transaction_receipt(tx_hash)["contractAddress"])


def test_a_contract_wallet_creator_signs_through_erc1271(app_client: TestClient) -> None:
    """A creator that is a contract (a multisig, a smart account; here a wallet accepting its owner key's
    signatures). The server asks the wallet's ERC-1271 ``isValidSignature`` itself, as the registry's
    SignatureChecker will: a signature the wallet refuses is 422 `invalid_signature` naming the wallet,
    no transaction is sent and the registration or catalogue keeps waiting; the owner's signature
    lands, the wallet the holder. Single registration and catalogue."""
    admin = make_caller(app_client, Role.admin, "admin")
    chain: ChainClient = app_client.app.state.chain  # type: ignore[attr-defined]
    owner, stranger = Account.create(), Account.create()
    wallet = deploy_contract_wallet(chain, owner.address)
    signer_nonce = chain.w3.eth.get_transaction_count(chain.signer_address)

    pending = app_client.post(
        "/assets",
        headers=admin.headers,
        files={"file": ("wallet.png", pngs(1)[0], "image/png")},
        data={"metadata": json.dumps({"title": "By a wallet", "creator": wallet})},
    )
    assert pending.status_code == 202, pending.text
    reg = pending.json()
    assert reg["typed_data"]["message"]["creator"] == wallet
    path = f"/assets/registrations/{reg['id']}/signature"
    refused = app_client.post(
        path, headers=admin.headers, json={"signature": formats.sign(reg["typed_data"], stranger.key)}
    )
    body = assert_error(refused, 422, "invalid_signature")
    assert "ERC-1271" in body["message"] and body["details"]["expected_signer"] == wallet
    assert app_client.get(f"/assets/registrations/{reg['id']}", headers=admin.headers).json()["state"] == (
        "awaiting_signature"
    )
    assert chain.w3.eth.get_transaction_count(chain.signer_address) == signer_nonce  # nothing sent
    landed = app_client.post(
        path, headers=admin.headers, json={"signature": formats.sign(reg["typed_data"], owner.key)}
    )
    assert landed.status_code == 201, landed.text
    asset_id = landed.json()["id"]
    assert chain.call(chain.contract("ContentRegistry").functions.ownerOf(asset_id)) == wallet

    cat = post_catalogue(app_client, admin, pngs(2), creator=wallet).json()
    signer_nonce = chain.w3.eth.get_transaction_count(chain.signer_address)
    body = assert_error(sign(app_client, admin, cat, stranger.key), 422, "invalid_signature")
    assert "ERC-1271" in body["message"]
    cats, _ = journal(app_client)
    assert cats[-1].id == cat["id"] and cats[-1].state == CatalogueState.awaiting_signature
    assert chain.w3.eth.get_transaction_count(chain.signer_address) == signer_nonce
    done = sign(app_client, admin, cat, owner.key)
    assert done.status_code == 201, done.text
    assert [a["owner"] for a in done.json()["assets"]] == [wallet, wallet]


def test_a_catalogue_of_100_lands_in_one_transaction(app_client: TestClient, creator: Caller) -> None:
    started = time.monotonic()
    datas = pngs(100, size=4)
    pending = post_catalogue(app_client, creator, datas, title="Product")
    assert pending.status_code == 202, pending.text
    done = sign(app_client, creator, pending.json())
    assert done.status_code == 201, done.text
    landed = done.json()["assets"]
    assert len(landed) == 100 and len({a["chain"]["tx_hash"] for a in landed}) == 1
    assert [a["content_hash"] for a in landed] == [sha(d) for d in datas]
    receipt = rpc(
        app_client.app.state.settings.eth_rpc_url, "eth_getTransactionReceipt", landed[0]["chain"]["tx_hash"]
    )  # type: ignore[attr-defined]
    print(f"[catalogue] 100 items: {int(receipt['gasUsed'], 16):,} gas, {time.monotonic() - started:.1f}s")  # type: ignore[index]
    assert len(assets(app_client)) == 100


# ----------------------------------------------------------------------------------------------
# Refusals: clear 4xx, nothing kept, nothing sent
# ----------------------------------------------------------------------------------------------


def test_catalogues_the_chain_would_refuse_are_refused_before_anything_is_kept(
    app_client: TestClient, creator: Caller
) -> None:
    body = assert_error(post_catalogue(app_client, creator, [b"x"] * 101), 413, "catalogue_too_large")
    assert body["details"] == {"count": 101, "max_items": 100}
    assert_error(post_catalogue(app_client, creator, []), 400, "empty_catalogue")
    same = pngs(3)
    body = assert_error(post_catalogue(app_client, creator, [*same, same[1]]), 409, "duplicate_content")
    assert body["details"]["filename"] == "item-3.png" and body["details"]["same_as"] == "item-1.png"
    body = assert_error(
        post_catalogue(app_client, creator, [same[0], b"#!/bin/sh\n"]), 415, ("unsupported_media_type")
    )
    assert body["details"]["filename"] == "item-1.png"
    body = assert_error(post_catalogue(app_client, creator, same, items=[{}]), 422, "validation_error")
    assert_error(post_catalogue(app_client, creator, same, territories=["XX"]), 422, "unknown_territory")
    assert_error(
        post_catalogue(app_client, creator, same, items=[{}, {"parent_asset_id": 99}, {}]),
        422,
        ("unknown_parent"),
    )
    assert journal(app_client) == ([], [])
    assert not list((app_client.app.state.settings.data_dir / "uploads").glob("*"))  # type: ignore[attr-defined]

    # Already registered (an asset), or in flight (a registration awaiting its signature).
    registered = post_asset(
        app_client,
        creator,
        files={"file": ("one.png", same[2], "image/png")},
        data={"metadata": json.dumps({"title": "One"})},
    ).json()
    body = assert_error(post_catalogue(app_client, creator, same), 409, "duplicate_content")
    assert body["details"]["filename"] == "item-2.png" and body["details"]["asset_id"] == registered["id"]
    first = post_catalogue(app_client, creator, same[:2])
    assert first.status_code == 202
    body = assert_error(post_catalogue(app_client, creator, same[1:2]), 409, "registration_in_progress")
    assert body["details"]["catalogue_id"] == first.json()["id"]
    # ... and a single upload of an item in flight is not taken over.
    alone = app_client.post(
        "/assets",
        headers=creator.headers,
        files={"file": ("x.png", same[0], "image/png")},
        data={"metadata": json.dumps({"title": "x"})},
    )
    assert_error(alone, 409, "registration_in_progress")


def test_an_expired_catalogue_signature_is_refused_and_asked_again(
    app_client: TestClient, creator: Caller, settings: Settings
) -> None:
    cat = post_catalogue(app_client, creator, pngs(2)).json()
    rpc(settings.eth_rpc_url, "evm_increaseTime", settings.pending_registration_max_age_seconds + 60)
    rpc(settings.eth_rpc_url, "evm_mine")
    assert_error(sign(app_client, creator, cat), 422, "signature_expired")
    read = app_client.get(f"/assets/catalogues/{cat['id']}", headers=creator.headers).json()
    assert read["state"] == "awaiting_signature" and read["error_code"] == "signature_expired"
    assert assets(app_client) == []


def test_an_item_registered_by_someone_else_meanwhile_is_reported_as_front_run(
    app_client: TestClient, creator: Caller
) -> None:
    """Between the upload (which passed the duplicate checks) and the creator's signature, someone
    registers the second item's bytes from its own wallet: registerBatchFor reverts, the answer is 409
    `front_run` naming that item and the other asset's holder, and the catalogue is released."""
    datas = pngs(3)
    cat = post_catalogue(app_client, creator, datas).json()
    chain = app_client.app.state.chain  # type: ignore[attr-defined]
    thief = thief_registers(chain, sha(datas[1]))
    body = assert_error(sign(app_client, creator, cat), 409, "front_run")
    assert body["details"]["filename"] == "item-1.png" and body["details"]["position"] == 1
    assert body["details"]["holder"] == thief.address
    (row,), regs = journal(app_client)
    assert row.state == CatalogueState.released and row.error_code == "front_run"
    assert [r.state for r in regs] == [RegistrationState.released] * 3
    assert not any(os.path.exists(p) for p in spool_paths(regs))
    assert assets(app_client) == []


# ----------------------------------------------------------------------------------------------
# Crashes: the reconciler finishes or releases
# ----------------------------------------------------------------------------------------------


def _crashed(client: TestClient, caller: Caller, *, stage: str) -> int:
    """A catalogue as a process killed at `stage` leaves it: `signed` (signature kept, nothing sent),
    `sent` (sent and landed, the transaction's hash never recorded), `submitted` (sent, receipt never
    read) or `pinning` (landed, nothing published)."""
    cat = post_catalogue(client, caller, pngs(3)).json()
    app = client.app
    with Session(app.state.engine) as session:  # type: ignore[attr-defined]
        row = session.get(Catalogue, cat["id"])
        assert row is not None
        payload = json.loads(row.params_json)
        payload["signature"] = formats.sign(cat["typed_data"], caller.account.key)
        row.params_json = json.dumps(payload)
        catalogues._set_state(row, CatalogueState.signed)
        session.commit()
        if stage == "sent":
            sent = app.state.chain.send(catalogues.catalogue_call(app.state.chain, row))  # type: ignore[attr-defined]
            app.state.chain.wait_for_receipt(sent)  # type: ignore[attr-defined]
        if stage in ("submitted", "pinning"):
            row.tx_hash = app.state.chain.send(catalogues.catalogue_call(app.state.chain, row))  # type: ignore[attr-defined]
            catalogues._set_state(row, CatalogueState.submitted)
            session.commit()
        if stage == "pinning":
            dead = IpfsClient.from_settings(
                app.state.settings.model_copy(update={"ipfs_api": "/ip4/127.0.0.1/tcp/9/http"})  # type: ignore[attr-defined]
            )
            app.state.chain.wait_for_receipt(row.tx_hash)  # type: ignore[attr-defined]
            catalogues.finish_from_chain(session, app.state.chain, dead, row)  # type: ignore[attr-defined]
            assert row.state == CatalogueState.pinning and row.error_code
    return int(cat["id"])


class _RegistrationSearches(JsonRpcProxy):
    """Counts the ``eth_getLogs`` searches for ``AssetRegistered`` logs passing through."""

    topic = "0x" + event_topic("ContentRegistry", "AssetRegistered").hex()
    searches = 0

    def answer(self, call: dict[str, Any]) -> dict[str, Any] | None:
        if call.get("method") == "eth_getLogs":
            topics = (call.get("params") or [{}])[0].get("topics") or []
            if topics and topics[0] == self.topic:
                self.searches += 1
        return None


#: AssetRegistered searches the reconciler makes per crash stage: none when the receipt is at hand
#: (its own transaction's hash, or a resend's receipt), one for the whole catalogue when the hash was
#: never recorded (before: one per item).
SEARCHES = {"signed": 0, "sent": 1, "submitted": 0, "pinning": 0}


@pytest.mark.parametrize("stage", ["signed", "sent", "submitted", "pinning"])
def test_the_reconciler_finishes_a_catalogue_left_by_a_crash(
    app_client: TestClient, creator: Caller, settings: Settings, ipfs_client: IpfsClient, stage: str
) -> None:
    cat_id = _crashed(app_client, creator, stage=stage)
    later = datetime.now(UTC) + timedelta(minutes=5)
    with _RegistrationSearches(settings.eth_rpc_url).serving() as proxy:
        chain = ChainClient.from_settings(settings.model_copy(update={"eth_rpc_url": proxy.url}))
        with Session(app_client.app.state.engine) as session:  # type: ignore[attr-defined]
            # Single registrations' reconciler leaves the items to their catalogue.
            reconciled = flows.reconcile_registrations(session, chain, ipfs_client, settings, now=later)
            assert sum(reconciled.values()) == 0
            counts = catalogues.reconcile_catalogues(session, chain, ipfs_client, settings, now=later)
    assert counts["retried" if stage == "signed" else "registered"] == 1, counts
    assert proxy.searches == SEARCHES[stage]
    chain = ChainClient.from_settings(settings)
    (row,), regs = journal(app_client)
    assert row.id == cat_id and row.state == CatalogueState.registered
    assert [r.state for r in regs] == [RegistrationState.registered] * 3
    landed = assets(app_client)
    assert [a.id for a in landed] == [r.asset_id for r in regs] == [1, 2, 3]
    assert len({a.tx_hash for a in landed}) == 1
    assert all(ipfs_client.is_pinned(a.content_cid) and ipfs_client.is_pinned(a.metadata_cid) for a in landed)
    assert not any(os.path.exists(p) for p in spool_paths(regs))
    registry = chain.contract("ContentRegistry")
    assert chain.call(registry.functions.totalAssets()) == 3  # registered exactly once
    with Session(app_client.app.state.engine) as session:  # type: ignore[attr-defined]
        again = catalogues.reconcile_catalogues(
            session, chain, ipfs_client, settings, now=later + timedelta(minutes=5)
        )
    assert sum(again.values()) == 0


def test_the_reconciler_releases_an_abandoned_catalogue(
    app_client: TestClient, creator: Caller, settings: Settings, ipfs_client: IpfsClient
) -> None:
    cat = post_catalogue(app_client, creator, pngs(2)).json()
    _, regs = journal(app_client)
    paths = spool_paths(regs)
    assert len(paths) == 4 and all(os.path.exists(p) for p in paths)
    too_late = datetime.now(UTC) + timedelta(seconds=settings.pending_registration_max_age_seconds + 60)
    with Session(app_client.app.state.engine) as session:  # type: ignore[attr-defined]
        counts = catalogues.reconcile_catalogues(
            session, ChainClient.from_settings(settings), ipfs_client, settings, now=too_late
        )
    assert counts["released"] == 1
    (row,), regs = journal(app_client)
    assert row.id == cat["id"] and row.state == CatalogueState.released
    assert row.error_code == "registration_expired"
    assert [r.state for r in regs] == [RegistrationState.released] * 2
    assert not any(os.path.exists(p) for p in paths)
    assert not any(ipfs_client.is_pinned(i["content_cid"]) for i in cat["items"])
    # The content may be uploaded again.
    assert post_catalogue(app_client, creator, [r for r in pngs(1)]).status_code == 202


def test_a_catalogue_is_bounded_by_the_upload_limit_as_a_whole(settings: Settings) -> None:
    """The request body limit (MAX_UPLOAD_BYTES plus multipart overhead) bounds a catalogue's files
    together, not each file: 100 files cannot take 100 times the disk one upload may."""
    limit = 200_000
    app = create_app(settings.model_copy(update={"max_upload_bytes": limit}))
    try:
        with TestClient(app) as client:
            creator = make_caller(client, Role.creator, "bounded")
            each = pngs(1, size=16)[0]
            assert len(each) < limit
            # Each file under the limit, together over it and the multipart allowance (1 MiB).
            padded = [each + os.urandom(limit - 10_000) for _ in range(8)]
            refused = post_catalogue(client, creator, padded)
            assert refused.status_code == 413, refused.text
            assert refused.json()["error"]["code"] == "upload_too_large"
            assert journal(client) == ([], [])
            assert post_catalogue(client, creator, pngs(2)).status_code == 202
    finally:
        app.state.engine.dispose()
