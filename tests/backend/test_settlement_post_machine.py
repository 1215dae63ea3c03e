"""One post, whatever the mempool does: a state machine over the real chain and database
(settlement/post_tx.py; docs/settlement.md, "A post stuck in the mempool").

A hypothesis ``RuleBasedStateMachine`` settles one fresh merchant's period per program while it
randomly pauses and resumes mining, mines blocks, raises the base fee (anvil then drops the post bidding
under it), drops every waiting transaction (a node losing its mempool), simulates a worker that died
between recording a replacement and broadcasting it, and runs the worker with its replacement due at
once or not, under the default fee ceiling or one just above the base fee. After every step:

* the vault holds at most one post of the merchant, and escrow + that post's total = the deposit;
* at most one transaction carrying the post is ever mined, and at most one waits in the mempool;
* no run raises: every refusal is a reason in its report.

Once mining resumes and the fee falls, the worker posts it: exactly one post, one mined transaction.

CI runs a short version (POST_MACHINE_EXAMPLES programs of at most POST_MACHINE_STEPS steps); the long one
is ``POST_MACHINE_EXAMPLES=30 POST_MACHINE_STEPS=30 TEST_DATABASE_URLS=sqlite .venv/bin/pytest -s
tests/backend/test_settlement_post_machine.py`` (docs/testing.md).
"""

from __future__ import annotations

import os
import secrets
from collections import Counter
from typing import Any

import pytest
from eth_utils import function_signature_to_4byte_selector
from hypothesis import HealthCheck
from hypothesis import settings as hypothesis_settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    invariant,
    rule,
    run_state_machine_as_test,
)

from edgeledger.chain.client import ChainClient
from edgeledger.settlement import flows
from edgeledger.settlement.models import Settlement, SettlementState
from tests.backend.support.deliveries import authorise_source, register_source
from tests.backend.support.money import NEXT, Money
from tests.backend.support.stack import rpc

pytestmark = pytest.mark.integration

EXAMPLES = int(os.environ.get("POST_MACHINE_EXAMPLES", "8"))
STEPS = int(os.environ.get("POST_MACHINE_STEPS", "12"))
DEPOSIT = 50_000_000  # Money.add_shop's
GWEI = 10**9
#: the highest base fee a rise sets: anvil keeps it in 64 bits and stops past 2^64 - 1 wei, and above
#: the signer's ceiling (500 gwei by default) every rise is alike
MAX_BASE_FEE = 100_000 * GWEI
TOTALS: Counter[str] = Counter()


def test_a_post_lands_once_whatever_the_mempool_does(money: Money) -> None:
    vault = money.chain.contract(flows.VAULT)
    token = money.chain.deployment.address_of("TestStablecoin")
    post_selector = (
        "0x"
        + function_signature_to_4byte_selector(
            "postWithHeld(uint64,address,address,bytes32,uint256,uint256)"
        ).hex()
    )

    class Machine(RuleBasedStateMachine):
        # hypothesis tries the first of each sampled list first: a post under the market, replaced at once
        @initialize(ceiling=st.sampled_from(["just above the base fee", "default"]))
        def a_fresh_merchant_whose_post_waits_in_the_mempool(self, ceiling: str) -> None:
            self.name = f"m{secrets.token_hex(3)}"
            self.shop = money.add_shop(self.name)
            # its own source: one batch per source and period, anchored once
            source = register_source(
                money.session,
                money.chain,
                f"edge-{self.name}",
                provider="edgeledger",
                signer=money.node.address,
            )
            authorise_source(money.session, self.shop.user.id, source)
            money.deliver(self.name, source=source)  # anchored while the chain still mines every transaction
            self.first_block = money.chain.block_number()  # no post of the merchant in it
            TOTALS["programs"] += 1
            self.world("pause mining")
            self.worker(replace="not yet", ceiling=ceiling)  # sent, and left in the mempool

        @rule(
            event=st.sampled_from(
                [
                    "nothing",
                    "pause mining",
                    "resume mining",
                    "mine a block",
                    "base fee x3",
                    "base fee x20",
                    "the node loses its mempool",
                    "a worker dies between recording a replacement and sending it",
                ]
            ),
            replace=st.sampled_from(["due", "not yet"]),
            ceiling=st.sampled_from(["default", "just above the base fee"]),
        )
        def something_happens_then_the_worker_runs(self, event: str, replace: str, ceiling: str) -> None:
            self.world(event)
            self.worker(replace=replace, ceiling=ceiling)

        def world(self, event: str) -> None:
            url = money.settings.eth_rpc_url
            if event == "pause mining":
                rpc(url, "evm_setAutomine", False)
            elif event == "resume mining":
                rpc(url, "evm_setAutomine", True)
                rpc(url, "evm_mine")
            elif event == "mine a block":
                rpc(url, "evm_mine")
            elif event.startswith("base fee x"):  # a post bidding under it leaves the mempool
                risen = min(money.chain.base_fee() * int(event[10:]), MAX_BASE_FEE)
                rpc(url, "anvil_setNextBlockBaseFeePerGas", hex(risen))
                rpc(url, "evm_mine")
            elif event == "the node loses its mempool":
                rpc(url, "anvil_dropAllTransactions")
            elif event.startswith("a worker dies"):
                row = self.row()
                if row is None or row.state != SettlementState.posting or row.tx_hash is None:
                    return
                row.tx_prev_hash, row.tx_hash = row.tx_hash, "0x" + secrets.token_hex(32)
                money.session.commit()
            TOTALS[event] += 1

        def worker(self, *, replace: str, ceiling: str) -> None:
            update: dict[str, Any] = {
                "tx_timeout_seconds": 0.3,
                "tx_replace_after_seconds": 0 if replace == "due" else 300,
            }
            if ceiling == "just above the base fee":  # under the market
                update["tx_max_fee_per_gas_wei"] = money.chain.base_fee() + 1
            settings = money.settings.model_copy(update=update)
            report = flows.run_once(money.session, ChainClient.from_settings(settings), settings, NEXT)
            row = self.row()
            if row is not None:
                TOTALS["replacements"] += row.id in report.replaced
                if row.id in report.waiting:
                    TOTALS[f"waiting {report.waiting[row.id].split(':')[0]}"] += 1
                assert row.id not in report.blocked, report.as_dict()
            TOTALS["runs"] += 1

        # -- what always holds --------------------------------------------------------------------------

        @invariant()
        def one_post_and_escrow_conserved(self) -> None:
            merchant = self.shop.key.address
            posts = vault.events.SettlementPosted().get_logs(
                from_block=self.first_block, argument_filters={"merchant": merchant}
            )
            assert len(posts) <= 1
            escrow = money.chain.call(vault.functions.escrowOf(merchant, token))
            row = self.row()
            reserved = 0
            if posts:
                assert row is not None
                on_chain = money.chain.call(vault.functions.settlementOf(row.period_id, merchant))
                assert "0x" + bytes(on_chain[0]).hex() == row.root and row.held_total == 0
                reserved = int(on_chain[4])
            assert escrow + reserved == DEPOSIT

        @invariant()
        def at_most_one_transaction_of_the_post_mined_and_one_waiting(self) -> None:
            assert len(self.mined_posts()) <= 1
            waiting = money.chain.pending_nonce() - money.chain.mined_nonce()
            assert waiting <= 1, waiting

        # -- helpers ------------------------------------------------------------------------------------

        def row(self) -> Settlement | None:
            money.session.expire_all()
            return money.settlement(self.name)

        def mined_posts(self) -> list[str]:
            merchant = self.shop.key.address.lower()[2:]
            found = []
            for number in range(self.first_block, money.chain.block_number() + 1):
                block = money.chain.w3.eth.get_block(number, full_transactions=True)
                for tx in block["transactions"]:
                    data = tx["input"].hex() if hasattr(tx["input"], "hex") else str(tx["input"])
                    data = data if data.startswith("0x") else "0x" + data
                    if data.startswith(post_selector) and merchant in data.lower():
                        found.append(tx["hash"].to_0x_hex())
            return found

        def teardown(self) -> None:
            rpc(money.settings.eth_rpc_url, "evm_setAutomine", True)
            rpc(money.settings.eth_rpc_url, "anvil_setNextBlockBaseFeePerGas", hex(GWEI))
            rpc(money.settings.eth_rpc_url, "evm_mine")
            settings = money.settings.model_copy(update={"tx_replace_after_seconds": 0})
            for _ in range(4):  # the worker finishes what the program left: posted, once
                row = self.row()
                if row is not None and row.state in (SettlementState.posted, SettlementState.claimable):
                    break
                flows.run_once(money.session, ChainClient.from_settings(settings), settings, NEXT)
            row = self.row()
            assert row is not None and row.state == SettlementState.posted, (
                row and row.state,
                row and row.error_code,
            )
            assert len(self.mined_posts()) == 1
            self.one_post_and_escrow_conserved()
            TOTALS["posted once"] += 1

    try:
        run_state_machine_as_test(
            Machine,
            settings=hypothesis_settings(
                max_examples=EXAMPLES,
                stateful_step_count=STEPS,
                deadline=None,
                database=None,
                suppress_health_check=list(HealthCheck),
            ),
        )
    finally:
        rpc(money.settings.eth_rpc_url, "evm_setAutomine", True)  # never leave the shared chain paused
    print("post machine:", dict(sorted(TOTALS.items())))
    assert TOTALS["posted once"] == TOTALS["programs"] >= EXAMPLES
    assert TOTALS["runs"] >= TOTALS["programs"]  # every program sent its post before anything happened
