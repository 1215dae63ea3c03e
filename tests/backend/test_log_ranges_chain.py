"""Split and event reads over a chain history longer than a provider's ``eth_getLogs`` cap: settlement's
terms read, the provenance view, the registration search and ``edgeledger verify settlement`` /
``verify asset`` all go through a JSON-RPC endpoint that refuses spans over ``CAP`` blocks (a proxy in
front of the test's anvil, tests/backend/support/capped_rpc.py), and read what an uncapped node gives.
"""

from __future__ import annotations

import json
import secrets
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy.orm import Session
from typer.testing import CliRunner
from web3 import Web3
from web3.exceptions import Web3RPCError

from edgeledger.assets import service as assets_service
from edgeledger.auth.models import Role
from edgeledger.chain.client import ChainClient, ContractRevert
from edgeledger.cli import app as cli_app
from edgeledger.config import Settings
from edgeledger.devtools.samples import demo_png
from edgeledger.indexer import flows
from edgeledger.indexer.service import projection_snapshot
from edgeledger.main import create_app
from edgeledger.settlement.terms import read_terms
from edgeledger.verify.rpc import Chain
from tests.backend.support.capped_rpc import RANGE_ERROR, RESULTS_ERROR, CappedRpc, capped_rpc
from tests.backend.support.scenes import settle_deliveries
from tests.backend.support.settlement import send_as
from tests.backend.support.stack import make_caller, post_asset, rpc

#: the proxy's cap on one eth_getLogs span, in blocks
CAP = 16


def _ok(response: Any) -> Any:
    assert response.status_code < 400, response.text
    return response.json()


def _assert_within_cap(proxy: CappedRpc) -> None:
    assert proxy.served, "no eth_getLogs reached the node"
    assert all(last - first + 1 <= CAP for first, last in proxy.served)
    assert proxy.tagged == 0, "a query named a block by tag instead of a resolved number"


def test_splits_and_registrations_are_read_through_a_provider_that_caps_log_ranges(
    settings: Settings, chain_snapshot: Any, tmp_path: Path
) -> None:
    direct = ChainClient(
        settings.eth_rpc_url, deployment_file=settings.resolved_deployment_file, logs_max_blocks=0
    )
    registry_block = direct.deployment.contracts["ContentRegistry"].block
    with capped_rpc(settings.eth_rpc_url, CAP) as proxy:
        # The cap is real: one query over the history, as every search used to be, is refused.
        rpc(settings.eth_rpc_url, "anvil_mine", hex(2 * CAP))
        with pytest.raises(Web3RPCError, match="exceed maximum block range"):
            Web3(Web3.HTTPProvider(proxy.url)).eth.get_logs(
                {"fromBlock": registry_block, "toBlock": "latest"}
            )

        capped = settings.model_copy(update={"eth_rpc_url": proxy.url, "eth_logs_max_blocks": CAP})
        app = create_app(capped)
        with TestClient(app) as client:
            admin = make_caller(client, Role.admin, "admin")
            creator = make_caller(client, Role.creator, "creator")
            operator = make_caller(client, Role.operator, "operator")
            merchant = make_caller(client, Role.merchant, "Shop")
            image = demo_png(secrets.token_hex(6))
            asset = _ok(
                post_asset(
                    client,
                    creator,
                    files={"file": ("shot.png", image, "image/png")},
                    data={"metadata": json.dumps({"title": "Sneaker", "valid_from": 0})},
                )
            )
            asset = asset.get("asset", asset)
            asset_id = int(asset["id"])

            # Weeks of chain history in miniature: the split changes many caps after the registration.
            rpc(settings.eth_rpc_url, "anvil_mine", hex(10 * CAP))
            co_holder = Web3.to_checksum_address("0x" + secrets.token_hex(20))
            rpc(settings.eth_rpc_url, "anvil_setBalance", creator.account.address, hex(10**21))
            chain = ChainClient.from_settings(capped)
            registry = chain.contract("ContentRegistry")
            send_as(
                chain,
                creator.account,
                registry.functions.updateSplit(
                    asset_id, [creator.account.address, co_holder], [6_000, 4_000]
                ),
            )
            rpc(settings.eth_rpc_url, "anvil_mine", hex(10 * CAP))
            split = [(creator.account.address.lower(), 6_000), (co_holder.lower(), 4_000)]

            # The provenance view reads the split from the registration block to the head, in pieces.
            proxy.reset()
            provenance = _ok(client.get(f"/assets/{asset_id}", headers=creator.headers))
            read = [(s["recipient"].lower(), s["bps"]) for s in provenance["on_chain"]["split"]]
            assert read == split
            assert read == [
                (s.recipient.lower(), s.bps) for s in assets_service.read_on_chain(direct, asset_id).split
            ]
            _assert_within_cap(proxy)
            assert not proxy.refused
            # ... from the one block splitBlocks names, not by a search of the 20 caps since registration.
            split_block = int(direct.call(registry.functions.splitBlocks([asset_id]))[0])
            assert (split_block, split_block) in proxy.served, proxy.served

            # The registration search (POST /verify, GET /verify/{hash}) from the deployment block.
            proxy.reset()
            verdict = _ok(client.get(f"/verify/{asset['content_hash']}"))
            assert verdict == json.loads(
                assets_service.verify_content_hash(direct, asset["content_hash"]).model_dump_json()
            )
            assert verdict["asset_id"] == asset_id
            _assert_within_cap(proxy)

            # Settlement reads the terms at its block through the capped endpoint; they pay the new split.
            proxy.reset()
            settle_deliveries(client, capped, chain_snapshot, asset, admin, merchant, operator)
            _assert_within_cap(proxy)
            assert not proxy.refused
            settlements = _ok(client.get("/settlement/settlements", headers=admin.headers))["items"]
            posted = [s for s in settlements if s["state"] == "posted"]
            assert len(posted) == 1, settlements
            document = _ok(
                client.get(f"/settlement/settlements/{posted[0]['id']}/inputs", headers=admin.headers)
            )
        app.state.engine.dispose()

        inputs = document["inputs"]
        terms_block = int(inputs["terms_block"])
        assert terms_block - registry_block > 20 * CAP
        published = {int(t["asset_id"]): t for t in inputs["assets"]}
        assert [(r["address"], r["bps"]) for r in published[asset_id]["recipients"]] == split
        uncapped = read_terms(
            direct.contract("ContentRegistry"),
            lambda fn: direct.call(fn, terms_block),
            [asset_id],
            get_logs=direct.get_logs,
            block=terms_block,
            from_block=registry_block,
        )
        assert [t.model_dump(mode="json", exclude_none=True) for t in uncapped] == [
            {k: v for k, v in published[asset_id].items() if v is not None}
        ]

        # Settlement's read fetched the split from its block alone: one query, whatever the history.
        halving = ChainClient(
            proxy.url, deployment_file=settings.resolved_deployment_file, logs_max_blocks=4 * CAP
        )
        proxy.reset()
        located = read_terms(
            halving.contract("ContentRegistry"),
            lambda fn: halving.call(fn, terms_block),
            [asset_id],
            get_logs=halving.get_logs,
            block=terms_block,
            from_block=registry_block,
        )
        assert located == uncapped
        assert proxy.served == [(split_block, split_block)] and not proxy.refused

        def before_split_blocks(fn: Any) -> Any:
            """A registry deployed before splitBlocks: the call reverts, the split is searched for."""
            if fn.fn_name == "splitBlocks":
                raise ContractRevert("Revert", {"reason": "execution reverted"})
            return halving.call(fn, terms_block)

        # Searched for instead, a span above the provider's cap is halved until accepted, here with a
        # result-count refusal.
        proxy.reset()
        proxy.error = RESULTS_ERROR
        again = read_terms(
            halving.contract("ContentRegistry"),
            before_split_blocks,
            [asset_id],
            get_logs=halving.get_logs,
            block=terms_block,
            from_block=registry_block,
        )
        assert again == uncapped
        assert len(proxy.served) > (terms_block - registry_block) // (4 * CAP)
        assert proxy.refused[:2] == [
            (registry_block, registry_block + 4 * CAP - 1),
            (registry_block, registry_block + 2 * CAP - 1),
        ]
        assert len(proxy.refused) == 2  # the rest of the range keeps the span that passed
        _assert_within_cap(proxy)

        # The chain-only verifiers, through the same endpoint, with a span the provider refuses at first
        # (verify settlement reads the split from its block, as settlement did).
        path = tmp_path / "inputs.json"
        path.write_text(json.dumps(document))
        proxy.reset()
        args = ["--rpc-url", proxy.url, "--logs-max-blocks", str(4 * CAP)]
        result = CliRunner().invoke(cli_app, ["verify", "settlement", str(path), *args])
        assert result.exit_code == 0, result.output
        assert "FAIL" not in result.output and "terms at the recorded block" in result.output
        # the block of the posting (its held royalties) and the split's block, one query each
        posted_block = document["posted_block"]
        assert proxy.served == [(posted_block, posted_block), (split_block, split_block)]
        assert not proxy.refused
        _assert_within_cap(proxy)

        proxy.reset()
        sha = asset["content_hash"]
        deployment = ["--deployment", str(settings.resolved_deployment_file)]
        result = CliRunner().invoke(
            cli_app, ["verify", "asset", "--sha256", sha, *deployment, *args, "--json"]
        )
        assert result.exit_code == 0, result.output
        chain_ref = json.loads(result.output)["verdict"]["chain"]
        assert chain_ref["block_number"] == verdict["chain"]["block_number"]
        assert chain_ref["tx_hash"] == verdict["chain"]["tx_hash"]
        assert proxy.refused
        _assert_within_cap(proxy)


def test_the_indexer_reads_a_step_over_the_cap_in_pieces_with_the_same_result(
    settings: Settings, app_client: TestClient, db_engine: Any
) -> None:
    creator = make_caller(app_client, Role.creator, "creator")
    response = post_asset(
        app_client,
        creator,
        files={"file": ("shot.png", demo_png(secrets.token_hex(6)), "image/png")},
        data={"metadata": json.dumps({"title": "Indexed"})},
    )
    assert response.status_code == 201, response.text
    asset_id = int(response.json()["id"])
    rpc(settings.eth_rpc_url, "anvil_mine", hex(3 * CAP))
    indexed = settings.model_copy(update={"indexer_confirmations": 0, "indexer_log_chunk": 4 * CAP})
    with Session(db_engine, expire_on_commit=False) as session:
        assert flows.rebuild(session, ChainClient.from_settings(indexed), indexed, None).caught_up
        expected = projection_snapshot(session)
        assert asset_id in {int(a["asset_id"]) for a in expected["indexed_assets"]}
        with capped_rpc(settings.eth_rpc_url, CAP) as proxy:
            capped = indexed.model_copy(update={"eth_rpc_url": proxy.url, "eth_logs_max_blocks": 4 * CAP})
            assert flows.rebuild(session, ChainClient.from_settings(capped), capped, None).caught_up
            # Each step asks its INDEXER_LOG_CHUNK range at once, is refused, and goes on in halves.
            assert any(last - first + 1 == 4 * CAP for first, last in proxy.refused)
            _assert_within_cap(proxy)
        assert projection_snapshot(session) == expected


def test_the_verifier_finds_the_registrys_deployment_block_on_chain(
    settings: Settings, chain_snapshot: Any
) -> None:
    """`verify settlement` searches splits from the registry's deployment block without a deployment file:
    a binary search of eth_getCode at past blocks finds the block the code appeared in."""
    direct = ChainClient(settings.eth_rpc_url, deployment_file=settings.resolved_deployment_file)
    contracts = direct.deployment.contracts
    rpc(settings.eth_rpc_url, "anvil_mine", hex(40))
    head = direct.block_number()
    chain = Chain(settings.eth_rpc_url)
    for name in ("ContentRegistry", "SettlementVault"):
        found = chain.deployment_block(contracts[name].address, head)
        assert found == contracts[name].block > 0
        code = chain.w3.eth.get_code
        assert code(contracts[name].address, found) and not code(contracts[name].address, found - 1)


@pytest.mark.parametrize("error", [RANGE_ERROR, RESULTS_ERROR], ids=["block span", "result count"])
def test_a_client_learns_its_providers_block_span_cap_once(
    chain_snapshot: Any, error: tuple[int, str]
) -> None:
    """A search over the history through a provider capping the span: the first search learns the cap
    with refused requests; the same client's next search asks within it and is refused nothing. A
    refusal for too many results is not learned (it depends on where the logs are), so every search
    learns it again."""
    rpc(chain_snapshot.rpc_url, "anvil_mine", hex(8 * CAP))
    with capped_rpc(chain_snapshot.rpc_url, CAP, error) as proxy:
        chain = ChainClient(proxy.url, deployment_file=chain_snapshot.deployment_file, logs_max_blocks=0)
        registry = chain.contract("ContentRegistry")
        query = {
            "address": registry.address,
            "fromBlock": chain.deployment.contracts["ContentRegistry"].block,
        }
        first = chain.get_logs({**query, "toBlock": "latest"})
        learned = len(proxy.refused)
        assert learned >= 3
        proxy.reset()
        assert chain.get_logs({**query, "toBlock": "latest"}) == first
        assert len(proxy.refused) == (0 if error == RANGE_ERROR else learned)
        _assert_within_cap(proxy)
