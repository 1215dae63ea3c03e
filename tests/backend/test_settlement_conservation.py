"""Conservation, proven by a randomised multi-period scenario over the real chain and database.

A hypothesis state machine (``RuleBasedStateMachine``: its programs generated, and a failing one shrunk
and printed, by hypothesis) drives two merchants (one on a card with volume tiers, the other licence-only,
so a disputed period of it pays nobody and holds every royalty), an authorised source and a rogue one,
three contents (two registered on chain by their creators' own wallets, one a derivative of the other,
and unregistered content), and their users through random sequences of: deliveries, late deliveries of
a closed period (correction batches), days passing (batches anchored, or a node going silent),
settlement runs, split changes, token transfers, disputes, clearings, takedowns and reassignments,
challenges and cancellations (then recomputation), abandoned batches, time passing and claims. After
every step it checks, against the vault's own books and the database:

* per token, the vault's balance = escrow + reserved, and reserved = every settlement's unclaimed
  remainder + every period's and correction's held reserve (each read from the vault): every token in
  the vault belongs to an escrow, a reserve or a claim;
* per period and correction: charged = paid + held, and held = still held in the vault + released +
  refunded (releases not cancelled);
* per period, once the batches of its cancelled settlements are counted again: the delivery fees of its
  live settlements add up to the fee of all their usage at once (the volume tiers go on);
* no billable receipt in two live settlements (a period and its corrections), every one of them is a
  billable receipt of that merchant and period, and once a period is settled with no correction
  pending, every anchored receipt of an authorised source for it is in one of them.

CI runs a short version (CONSERVATION_EXAMPLES examples of at most CONSERVATION_STEPS steps); the long one
is ``CONSERVATION_EXAMPLES=40 CONSERVATION_STEPS=40 .venv/bin/pytest -s
tests/backend/test_settlement_conservation.py -k sqlite`` (README, "Headline figures").
"""

from __future__ import annotations

import gzip
import json
import os
import secrets
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
from eth_account import Account
from eth_account.signers.local import LocalAccount
from eth_utils import to_checksum_address
from hexbytes import HexBytes
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
from sqlalchemy import select
from sqlalchemy.orm import Session

from edgeledger.auth.models import Role, User
from edgeledger.chain.client import ChainClient
from edgeledger.config import Settings
from edgeledger.db import make_engine, migrate
from edgeledger.deliveries import batches as batch_service
from edgeledger.deliveries.models import BatchKind, BatchState, DeliveryBatch, DeliveryRecordRow
from edgeledger.ipfs.cid import cid_of_bytes
from edgeledger.settlement import flows, service
from edgeledger.settlement.corrections import SETTLED, UNPOSTED, latest_period
from edgeledger.settlement.models import Settlement, SettlementKind, SettlementState
from edgeledger.settlement.payouts import UNREGISTERED, PayoutInputs, Statement
from edgeledger.settlement.period_inputs import period_receipts
from edgeledger.settlement.rates import RegionPrice
from edgeledger.territories import territory_index
from tests.backend.support.deliveries import (
    add_merchant_host,
    add_records,
    anchor_batch,
    authorise_source,
    close_batch,
    register_source,
)
from tests.backend.support.settlement import delivery_records, deposit, send_as
from tests.backend.support.stack import rpc, self_register
from tests.backend.test_settlement_flow import CARD, DAY, DAY0, GB

pytestmark = pytest.mark.integration

EXAMPLES = int(os.environ.get("CONSERVATION_EXAMPLES", "12"))
STEPS = int(os.environ.get("CONSERVATION_STEPS", "30"))
NOTICE = "bafkreigh2akiscaildcqabsyg3dfr6chu3fgpregiymsck7e7aqa4s52zy"
LIVE = (
    SettlementState.computed,
    SettlementState.posting,
    SettlementState.posted,
    SettlementState.challenged,
    SettlementState.claimable,
)
ON_CHAIN = (SettlementState.posted, SettlementState.challenged, SettlementState.claimable)
STATUS = ("active", "disputed", "taken_down")
#: Settlements that count receipts and hold royalties: a period and its corrections.
COUNTING = (SettlementKind.period, SettlementKind.correction)
#: Shop 0: volume tiers a day's deliveries cross (so corrections price late records at the marginal
#: tier); shop 1: licence-only (nothing but royalties: a period whose assets are disputed pays nobody and
#: holds every royalty, a held-only post).
TIERED = {
    "tiers": [{"up_to_bytes": 5 * GB, "price_per_gb": 85_000}, {"up_to_bytes": None, "price_per_gb": 42_500}]
}
CARDS = (
    {**CARD, "delivery": {"EU": TIERED}},
    {
        **CARD,
        "delivery": {"EU": {"tiers": [{"up_to_bytes": None, "price_per_gb": 0}]}},
        "platform_fee_bps": 0,
    },
)
STATS: Counter[str] = Counter()


def _registration(creator: str, parent: int, recipients: list[str], shares: list[int]) -> tuple[Any, ...]:
    content = secrets.token_bytes(48)
    return (
        HexBytes(secrets.token_bytes(32)),
        cid_of_bytes(content),
        cid_of_bytes(b"meta" + content),
        creator,
        parent,
        False,
        ((1 << 249) - 1, 0, 0, 0, ""),
        recipients,
        shares,
        0,
    )


def _whole(key: str) -> str:
    """The receipt a key names: a part's key less its fifth, part-start field (docs/settlement.md)."""
    return ":".join(key.split(":")[:4])


def scenario_for(base: Settings, admin: LocalAccount, tmp: Path) -> type[Any]:
    class Conservation(RuleBasedStateMachine):
        """One example: a fresh SQLite database and a chain snapshot; actions are the rules below."""

        def __init__(self) -> None:
            super().__init__()
            STATS["examples"] += 1
            self.snapshot = rpc(base.eth_rpc_url, "evm_snapshot")
            folder = tmp / f"example-{STATS['examples']}"
            folder.mkdir()
            url = f"sqlite:///{folder / 'edgeledger.db'}"
            migrate(url)
            self.engine = make_engine(url)
            self.session = Session(self.engine)
            self.settings = base.model_copy(
                update={"database_url": url, "data_dir": folder, "settlement_platform_address": None}
            )
            self.chain = ChainClient.from_settings(self.settings)
            self.registry = self.chain.contract("ContentRegistry")
            self.vault = self.chain.contract("SettlementVault")
            self.token = self.chain.contract("TestStablecoin")
            self.wallets: dict[str, LocalAccount] = {}
            self.day = 0
            self.stuck: list[int] = []
            node, rogue_node = Account.create(), Account.create()
            self.node_keys = {}
            self.sources = []
            for name, signer in (("edge-fra", node), ("edge-rogue", rogue_node)):
                source = register_source(
                    self.session, self.chain, name, provider="edgeledger", signer=signer.address
                )
                self.sources.append(source)
                self.node_keys[source.id] = signer
            self.silent: set[int] = set()
            self.shops: list[tuple[User, LocalAccount, str]] = []
            for i in range(2):
                key = self._wallet()
                user = User(role=Role.merchant, name=f"Shop {i}", address=key.address)
                self.session.add(user)
                self.session.commit()
                host = f"s{i}.shop.example"
                add_merchant_host(self.session, host, user.id)
                authorise_source(self.session, user.id, self.sources[0])
                params = service.AccountParams(
                    token=self.token.address, token_symbol="tUSDC", token_decimals=6, settle_from=DAY0
                )
                account = service.upsert_account(self.session, self.settings, user, params, now=DAY0)
                service.add_rate_card(self.session, account, CARDS[i], created_by=None)
                self.session.commit()
                deposit(self.chain, admin, key, 40_000_000)
                self.shops.append((user, key, host))
            # An original work and a derivative of it, registered by their creators' own wallets.
            self.assets: list[int] = []
            for parent in (0, 1):
                creator, co = self._wallet(), self._wallet()
                reg = _registration(creator.address, parent, [creator.address, co.address], [6_000, 4_000])
                self_register(lambda call, who=creator: self._send(who, call), self.registry, reg)
                self.assets.append(int(self.chain.call(self.registry.functions.totalAssets())))
            self.deliveries = 0
            self.royalties_checked: set[tuple[int, str | None]] = set()
            self.licence_answers: dict[tuple[int, str, int, int], bool] = {}
            #: right after a run: every late batch anchored before it is in a correction by now
            self.settled_all = False

        def _changed(self) -> None:
            self.settled_all = False

        def teardown(self) -> None:
            self.session.close()
            self.engine.dispose()
            rpc(base.eth_rpc_url, "evm_revert", self.snapshot)

        # --- helpers ------------------------------------------------------------------------------

        def _wallet(self) -> LocalAccount:
            account = Account.create()
            rpc(base.eth_rpc_url, "anvil_setBalance", account.address, hex(10**20))
            self.wallets[account.address.lower()] = account
            return account

        def _send(self, account: LocalAccount, fn: Any) -> None:
            send_as(self.chain, account, fn)

        def _status(self, asset_id: int) -> str:
            return STATUS[int(self.chain.call(self.registry.functions.getAsset(asset_id))[3])]

        def _holder(self, asset_id: int) -> str:
            return str(self.chain.call(self.registry.functions.ownerOf(asset_id)))

        def _now(self) -> int:
            return DAY0 + (self.day + 1) * DAY  # every period before yesterday is past its late window

        def _rows(self) -> list[Settlement]:
            self.session.expire_all()
            return list(self.session.scalars(select(Settlement).order_by(Settlement.id)))

        # --- rules --------------------------------------------------------------------------------

        @initialize(
            counts=st.lists(st.integers(1, 4), min_size=6, max_size=6),
            disputed=st.booleans(),
            late=st.booleans(),
            outcome=st.sampled_from(["clear", "reassign", "take down", "still disputed"]),
            window=st.sampled_from(["from", "both"]),
            edge=st.integers(0, 3),
        )
        def two_settled_days(
            self, counts: list[int], disputed: bool, late: bool, outcome: str, window: str, edge: int
        ) -> None:
            """Every example starts from two days of deliveries of every content to both shops, settled
            (``disputed``: the derivative's royalties held back; ``late``: late records of the first day
            anchored after it settled): the rules then act on posted settlements, held royalties, pending
            corrections and open periods alike; ``outcome`` decides the dispute before a second run). The
            original work's licence is moved to start (``window``) among the second day's deliveries of it
            first, so every example settles a receipt split at a licence boundary."""
            for day in range(2):
                if day == 1:  # the licence starts at one of the day's records of the original work
                    self.relicense(0, window, edge % counts[day * 3 + 1])
                for asset in range(3):
                    self.deliver(day % 2, asset, counts[day * 3 + asset], rogue=False)
                self.deliver((day + 1) % 2, 2, 1, rogue=True)
                self.next_day(silent=False)
            if disputed:
                self.arbitrate(1, "dispute")
            self.next_day(silent=False)
            self.run()
            if late:
                self.deliver_late(0, 2, counts[0], back=3)
                self.next_day(silent=False)
            if disputed:
                self.arbitrate(1, outcome)
                self.time_passes()  # held royalties are released once their period is final
                self.run()
            if late or disputed:
                self.run()

        @rule(
            shop=st.integers(0, 1),
            asset=st.integers(0, 2),
            count=st.integers(1, 4),
            rogue=st.sampled_from([False, False, False, True]),
        )
        def deliver(self, shop: int, asset: int, count: int, rogue: bool) -> None:
            source = self.sources[1 if rogue else 0]
            start = DAY0 + self.day * DAY
            batch = self.session.scalar(
                select(DeliveryBatch).where(
                    DeliveryBatch.source_pk == source.id, DeliveryBatch.period_start == start
                )
            )
            if batch is not None and batch.state != BatchState.open:
                return
            asset_id = 0 if asset == 0 else self.assets[asset - 1]
            records = delivery_records(start, count, GB, self.shops[shop][2])
            add_records(self.session, self.settings, source, records, asset_id=asset_id, region="EU")
            self.deliveries += count
            STATS["deliveries"] += count

        @rule(
            shop=st.integers(0, 1), asset=st.integers(0, 2), count=st.integers(1, 3), back=st.integers(1, 3)
        )
        def deliver_late(self, shop: int, asset: int, count: int, back: int) -> None:
            """Records of a closed day reach the node late: a correction batch of that day's period."""
            if self.day < back:
                return
            start = DAY0 + (self.day - back) * DAY
            regular = self.session.scalar(
                select(DeliveryBatch).where(
                    DeliveryBatch.source_pk == self.sources[0].id,
                    DeliveryBatch.period_start == start,
                    DeliveryBatch.kind == BatchKind.regular,
                )
            )
            if regular is None or regular.state not in (BatchState.anchored, BatchState.final):
                return  # a correction corrects an anchored batch
            asset_id = 0 if asset == 0 else self.assets[asset - 1]
            records = delivery_records(start, count, GB, self.shops[shop][2])
            add_records(
                self.session,
                self.settings,
                self.sources[0],
                records,
                asset_id=asset_id,
                region="EU",
                late=True,
            )
            STATS["late deliveries"] += count

        @rule(silent=st.sampled_from([False, False, False, False, True]))
        def next_day(self, silent: bool) -> None:
            """The day's batches (and open corrections of earlier days) close and anchor; the authorised
            node sometimes goes silent."""
            start = DAY0 + self.day * DAY
            for batch in self.session.scalars(
                select(DeliveryBatch)
                .where(DeliveryBatch.period_start <= start, DeliveryBatch.state == BatchState.open)
                .order_by(DeliveryBatch.period_start, DeliveryBatch.kind.desc(), DeliveryBatch.correction_seq)
            ):
                close_batch(self.session, self.settings, batch)
                if silent and batch.source_pk == self.sources[0].id:
                    batch.state = BatchState.awaiting_signature
                    self.session.commit()
                    self.stuck.append(batch.id)
                    STATS["silent batches"] += 1
                else:
                    anchor_batch(self.session, self.chain, batch, self.node_keys[batch.source_pk])
            self.day += 1
            self.settled_all = False  # batches anchored since the last run wait for its corrections

        @rule()
        def run(self) -> None:
            STATS["runs"] += 1
            report = flows.run_once(self.session, self.chain, self.settings, self._now())
            self.settled_all = not report.retryable
            STATS["releases"] += len(report.released)
            STATS["corrections"] += len(report.corrections)
            STATS["posted"] += len(report.posted)
            for settlement_id in report.posted:
                row = self.session.get(Settlement, settlement_id)
                if row is not None and row.total == 0 and row.held_total:
                    STATS["held-only posts"] += 1

        @rule(asset=st.integers(0, 1), shares=st.integers(1, 9_999))
        def change_split(self, asset: int, shares: int) -> None:
            asset_id = self.assets[asset]
            holder = self.wallets.get(self._holder(asset_id).lower())
            if holder is None or self._status(asset_id) != "active":
                return
            other = self._wallet()
            self._send(
                holder,
                self.registry.functions.updateSplit(
                    asset_id, [holder.address, other.address], [shares, 10_000 - shares]
                ),
            )
            STATS["split changes"] += 1

        @rule(
            asset=st.integers(0, 1),
            window=st.sampled_from(["open", "from", "until", "both"]),
            edge=st.integers(0, 4),
        )
        def relicense(self, asset: int, window: str, edge: int) -> None:
            """The rights holder moves the licence so it starts or ends (or both) among today's deliveries
            (a delivery's records are one a second from an hour into the day): a period whose terms block
            sees it splits the asset's receipts there, and only the records inside the window earn a
            royalty (:meth:`royalties_are_paid_for_exactly_the_licensed_records`)."""
            asset_id = self.assets[asset]
            holder = self.wallets.get(self._holder(asset_id).lower())
            if holder is None or self._status(asset_id) != "active":
                return
            first = DAY0 + self.day * DAY + 3_600 + edge
            valid_from = first if window in ("from", "both") else 0
            valid_until = {"open": 0, "from": 0, "until": first, "both": first + 1}[window]
            licence = ((1 << 249) - 1, valid_from, valid_until, 0, "")
            self._send(holder, self.registry.functions.updateLicence(asset_id, licence))
            STATS[f"licence changes ({window})"] += 1

        @rule(asset=st.integers(0, 1))
        def transfer(self, asset: int) -> None:
            asset_id = self.assets[asset]
            holder = self.wallets.get(self._holder(asset_id).lower())
            if holder is None:
                return
            buyer = self._wallet()
            self._send(holder, self.registry.functions.transferFrom(holder.address, buyer.address, asset_id))
            STATS["transfers"] += 1

        @rule(asset=st.integers(0, 1), action=st.sampled_from(["dispute", "clear", "take down", "reassign"]))
        def arbitrate(self, asset: int, action: str) -> None:
            asset_id = self.assets[asset]
            status = self._status(asset_id)
            functions = self.registry.functions
            if action == "dispute" and status == "active":
                fn = functions.markDisputed(asset_id, NOTICE)
            elif action == "take down" and status != "taken_down":
                fn = functions.takeDown(asset_id, NOTICE)
            elif action == "clear" and status != "active":
                fn = functions.clearDispute(asset_id, NOTICE)
            elif action == "reassign" and status != "active":
                # The arbiter may move rights only once the asset was contested for REASSIGN_DELAY.
                not_before = int(self.chain.call(functions.reassignableAt(asset_id)))
                latest = int(self.chain.w3.eth.get_block("latest")["timestamp"])
                if latest < not_before:
                    rpc(base.eth_rpc_url, "evm_increaseTime", not_before - latest)
                    rpc(base.eth_rpc_url, "evm_mine")
                fn = functions.reassignRights(asset_id, self._wallet().address, NOTICE)
            else:
                return
            self._send(admin, fn)
            STATS[action] += 1

        @rule(pick=st.integers(0, 100))
        def challenge_and_cancel(self, pick: int) -> None:
            posted = [r for r in self._rows() if r.state == SettlementState.posted]
            if not posted:
                return
            row = posted[pick % len(posted)]
            merchant = self.wallets[row.merchant_address.lower()]
            on_chain = self.chain.call(self.vault.functions.settlementOf(row.period_id, merchant.address))
            latest = int(self.chain.w3.eth.get_block("latest")["timestamp"])
            if latest + 5 >= int(on_chain[2]):
                return  # its window is closing: nothing to challenge
            self._send(
                merchant, self.vault.functions.challenge(row.period_id, merchant.address, b"\x01" * 32)
            )
            self._send(admin, self.vault.functions.resolve(row.period_id, merchant.address, False))
            self.settled_all = False
            flows.run_once(self.session, self.chain, self.settings, self._now())
            row = self.session.get(Settlement, row.id)
            assert row is not None and row.state == SettlementState.cancelled
            if row.kind == SettlementKind.period:
                flows.recompute(self.session, self.settings, row)
            STATS["cancelled"] += 1

        @rule()
        def abandon(self) -> None:
            if not self.stuck:
                return
            batch_service.abandon_batch(self.session, self.stuck.pop(), "user:0:admin", "node lost its key")
            STATS["abandoned"] += 1

        @rule()
        def time_passes(self) -> None:
            rpc(base.eth_rpc_url, "evm_increaseTime", DAY + 1)
            rpc(base.eth_rpc_url, "evm_mine")

        @rule(pick=st.integers(0, 1000))
        def claim(self, pick: int) -> None:
            # a held-only post (total 0: every royalty held) is claimable but pays nobody: no tree
            claimable = [r for r in self._rows() if r.state == SettlementState.claimable and r.total > 0]
            if not claimable:
                return
            row = claimable[pick % len(claimable)]
            tree = flows.payout_tree(self.session, row)
            payees = [p for p in sorted(tree.payouts) if p.lower() in self.wallets]
            if not payees:
                return
            payee = to_checksum_address(payees[pick % len(payees)])
            merchant = to_checksum_address(row.merchant_address)
            if self.chain.call(self.vault.functions.isClaimed(row.period_id, merchant, payee)):
                return
            proof = tree.proof(payee)
            claim = (row.period_id, merchant, proof.amount, [HexBytes(p) for p in proof.proof])
            account = self.wallets[payee.lower()]
            self._send(account, self.vault.functions.claim(claim, account.address))
            STATS["claims"] += 1

        # --- invariants ---------------------------------------------------------------------------

        @invariant()
        def check(self) -> None:
            """Every invariant, after every action."""
            STATS["checks"] += 1
            self.every_token_is_in_escrow_a_reserve_or_a_claim()
            self.charged_is_paid_plus_held_and_held_is_reserved_released_or_refunded()
            self.every_billable_receipt_is_in_exactly_one_settlement()
            self.a_period_and_its_corrections_charge_the_whole_periods_fee()
            self.royalties_are_paid_for_exactly_the_licensed_records()

        def every_token_is_in_escrow_a_reserve_or_a_claim(self) -> None:
            deposited, withdrawn, reserved, claimed, escrow, _ = self.chain.call(
                self.vault.functions.totalsOf(self.token.address)
            )
            balance = int(self.chain.call(self.token.functions.balanceOf(self.vault.address)))
            assert balance == escrow + reserved
            assert deposited == escrow + reserved + claimed + withdrawn
            escrows = sum(
                int(self.chain.call(self.vault.functions.escrowOf(key.address, self.token.address)))
                for _, key, _ in self.shops
            )
            assert escrows == escrow
            reserves = 0
            for row in self._rows():
                if row.state not in ON_CHAIN:
                    continue
                merchant = to_checksum_address(row.merchant_address)
                on_chain = self.chain.call(self.vault.functions.settlementOf(row.period_id, merchant))
                reserves += int(on_chain[5])
                if row.kind in COUNTING:
                    reserves += int(self.chain.call(self.vault.functions.heldOf(row.period_id, merchant)))
            assert reserves == reserved

        def charged_is_paid_plus_held_and_held_is_reserved_released_or_refunded(self) -> None:
            rows = self._rows()
            for row in rows:
                if row.kind not in COUNTING or row.state not in LIVE or row.statement_json is None:
                    continue
                statement = Statement.model_validate_json(row.statement_json)
                assert statement.charge == row.total + row.held_total
                assert sum(statement.payees.values()) == row.total
                if row.state not in ON_CHAIN:
                    continue
                merchant = to_checksum_address(row.merchant_address)
                still_held = int(self.chain.call(self.vault.functions.heldOf(row.period_id, merchant)))
                moved = sum(
                    r.total
                    for r in rows
                    if r.funded_by_pk == row.id and r.state in ON_CHAIN and r.kind == SettlementKind.release
                )
                assert row.held_total == still_held + moved, (row.id, row.held_total, still_held, moved)

        def every_billable_receipt_is_in_exactly_one_settlement(self) -> None:
            rows = self._rows()
            seen: set[tuple[int, str]] = set()
            counted: dict[tuple[int, int], set[str]] = {}
            requests: dict[tuple[int, str], int] = {}
            for row in rows:
                # an empty settlement counts receipts too (a licence-only card, unregistered content)
                counts = (*LIVE, SettlementState.empty)
                if row.kind not in COUNTING or row.state not in counts or row.inputs_gz is None:
                    continue
                inputs = PayoutInputs.model_validate_json(gzip.decompress(row.inputs_gz))
                # a receipt key names (batch, asset, region, country): unique within one merchant's receipts;
                # a receipt split at a licence boundary is counted by its parts, all in one settlement
                parts: Counter[str] = Counter()
                for r in inputs.receipts:
                    parts[_whole(r.key)] += r.requests
                keys = set(parts)
                mine = {(row.merchant_user_id, key) for key in keys}
                assert not mine & seen, f"receipts in two settlements: {sorted(mine & seen)[:3]}"
                seen |= mine
                counted.setdefault((row.merchant_user_id, row.period_start), set()).update(keys)
                requests.update({(row.merchant_user_id, k): n for k, n in parts.items()})
            periods = {(r.merchant_user_id, r.period_start) for r in rows if r.kind == SettlementKind.period}
            for merchant_user_id, period_start in sorted(periods):
                account = service.get_account(self.session, merchant_user_id)
                whole = {
                    r.key: r.requests for r in period_receipts(self.session, account, period_start).receipts
                }
                expected = set(whole)
                keys = counted.get((merchant_user_id, period_start), set())
                assert keys <= expected, (merchant_user_id, period_start, sorted(keys - expected)[:3])
                # the parts of a split receipt add up to it
                for key in keys:
                    assert requests[(merchant_user_id, key)] == whole[key], (key, whole[key])
                siblings = [
                    r
                    for r in rows
                    if (r.merchant_user_id, r.period_start) == (merchant_user_id, period_start)
                ]
                period = latest_period(siblings)
                assert period is not None
                pending = any(r.kind == SettlementKind.correction and r.state in UNPOSTED for r in siblings)
                if self.settled_all and period.state in SETTLED and not pending:
                    # in none: a settled period and its corrections count every billable receipt
                    assert keys == expected, (period.id, sorted(expected - keys)[:3])

        def royalties_are_paid_for_exactly_the_licensed_records(self) -> None:
            """Each settlement's royalties are the card's royalty per delivery times the records behind its
            receipts that the registry itself says were licensed when delivered (``isLicensedFor`` at the
            settlement's terms block, for each record's second): counted from the records, not from the
            receipts or their parts. Every asset here is licensed worldwide, so only the window decides."""
            for row in self._rows():
                counts = (*LIVE, SettlementState.empty)
                if row.kind not in COUNTING or row.state not in counts or row.inputs_gz is None:
                    continue
                if row.terms_block is None or (row.id, row.inputs_digest) in self.royalties_checked:
                    continue
                inputs = PayoutInputs.model_validate_json(gzip.decompress(row.inputs_gz))
                host = next(h for user, _, h in self.shops if user.id == row.merchant_user_id)
                wholes = {_whole(r.key) for r in inputs.receipts if r.asset_id != UNREGISTERED}
                licensed = 0
                for key in sorted(wholes):
                    batch_id, asset_id, region, country = key.split(":")
                    for (stamp,) in self.session.execute(
                        select(DeliveryRecordRow.timestamp_ms)
                        .join(DeliveryBatch, DeliveryBatch.id == DeliveryRecordRow.batch_pk)
                        .where(
                            DeliveryBatch.batch_id == batch_id,
                            DeliveryRecordRow.asset_id == int(asset_id),
                            DeliveryRecordRow.host == host,
                            DeliveryRecordRow.region == region,
                            DeliveryRecordRow.country == country,
                            DeliveryRecordRow.excluded.is_(False),
                        )
                    ):
                        licensed += self._licensed(int(asset_id), country, stamp // 1000, row.terms_block)
                royalties = (
                    Statement.model_validate_json(row.statement_json).royalties if row.statement_json else {}
                )
                per_delivery = int(CARD["default_royalty"]["amount"])
                assert sum(royalties.values()) == per_delivery * licensed, (row.id, royalties, licensed)
                self.royalties_checked.add((row.id, row.inputs_digest))
                STATS["receipt parts checked"] += sum(1 for r in inputs.receipts if r.key.count(":") == 4)
                STATS["royalty checks against isLicensedFor"] += 1

        def _licensed(self, asset_id: int, country: str, second: int, block: int) -> bool:
            key = (asset_id, country, second, block)
            if key not in self.licence_answers:
                fn = self.registry.functions.isLicensedFor(asset_id, territory_index(country), second)
                self.licence_answers[key] = bool(self.chain.call(fn, block))
            return self.licence_answers[key]

        def a_period_and_its_corrections_charge_the_whole_periods_fee(self) -> None:
            """Each settlement of a period is priced against what its live siblings counted and charged:
            once the batches of any cancelled one are counted again by a live one, the live settlements'
            delivery fees add up to the fee of all their usage at once."""
            groups: dict[tuple[int, int], list[Settlement]] = {}
            for row in self._rows():
                if row.kind in COUNTING:
                    groups.setdefault((row.merchant_user_id, row.period_start), []).append(row)
            for (merchant_user_id, _start), siblings in sorted(groups.items()):
                live = [r for r in siblings if r.state != SettlementState.cancelled]
                recounted = {b for r in live for b in json.loads(r.batch_ids_json or "[]")}
                cancelled = [r for r in siblings if r.state == SettlementState.cancelled]
                if any(set(json.loads(r.batch_ids_json or "[]")) - recounted for r in cancelled):
                    continue  # a cancelled settlement's batches wait for their next one
                priced = [r for r in live if r.statement_json is not None]
                nbytes = requests = fees = 0
                for row in priced:
                    fees += Statement.model_validate_json(row.statement_json).delivery_fees.get("EU", 0)
                    for _region, _day, b, q in json.loads(row.usage_json or "[]"):
                        nbytes, requests = nbytes + int(b), requests + int(q)
                shop = next(i for i, (user, _, _) in enumerate(self.shops) if user.id == merchant_user_id)
                price = RegionPrice.model_validate_json(json.dumps(CARDS[shop]["delivery"]["EU"]))
                assert fees == price.fee(nbytes, requests), (merchant_user_id, _start, fees, nbytes)
                if len(priced) > 1 and fees:
                    STATS["tier checks of a period with corrections"] += 1

    return Conservation


def test_money_is_conserved_across_random_periods(
    settings: Settings, chain_snapshot: Any, tmp_path: Path, database_url: str
) -> None:
    """The state machine: up to EXAMPLES random programs of at most STEPS rules each (hypothesis draws
    them, and shrinks and prints a failing one), every invariant after each rule."""
    if not database_url.startswith("sqlite"):
        pytest.skip("each example gets its own SQLite database; the flows are the same on PostgreSQL")
    STATS.clear()
    run_state_machine_as_test(
        scenario_for(settings, chain_snapshot.admin, tmp_path),
        settings=hypothesis_settings(
            max_examples=EXAMPLES,
            stateful_step_count=STEPS,
            deadline=None,
            database=None,  # every run explores afresh; a failure prints its shrunk program
            suppress_health_check=list(HealthCheck),
        ),
    )
    print("conservation:", json.dumps(dict(sorted(STATS.items()))))
    assert STATS["examples"] >= EXAMPLES and STATS["checks"] > STATS["examples"]
    # the royalty invariant saw receipts split at licence boundaries (every example settles one)
    assert STATS["receipt parts checked"] >= STATS["examples"], dict(STATS)
