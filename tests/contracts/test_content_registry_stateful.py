"""Stateful property test of ContentRegistry: random sequences of registrations, transfers, licence and
split updates and notice-and-takedown actions, run against a Python model of the registry.

Every rule predicts the outcome from the model (success, or the exact custom error) before sending the
transaction. After every step the invariants compare the whole contract state with the model:
  * totalAssets equals the model's count; assetIdOf(hash) maps each registered hash to exactly its asset
    and getAsset(id).contentHash maps back (no hash registered twice);
  * each split has 1..50 recipients and non-zero shares summing to exactly 10,000, and equals the model's;
    so does the licence;
  * the token owner equals the model's rights holder and is the only account that can update: an update
    (eth_call) by the owner succeeds while Active (else AssetNotActive), one by a former owner or another
    account reverts NotRightsHolder;
  * the status equals the model's.

Runner: brownie 1.22.2 ships `brownie.test.stateful` compiled with mypyc, and its `state_machine` fixture
cannot run any machine ("TypeError: brownie.test.stateful._BrownieStateMachine object expected; got
...BrownieStateMachine": the compiled @final base class rejects the subclass it generates). So the machine
below is a plain hypothesis RuleBasedStateMachine, fed with `brownie.test.strategy` strategies, run with
brownie's hypothesis profile (brownie-config.yaml: max_examples, stateful_step_count) and isolated exactly
as brownie's runner does: one chain snapshot before the run, reverted to at the start of every example.
"""

import random
from dataclasses import dataclass

import brownie
from brownie import chain, web3
from brownie.test import strategy
from hypothesis import settings
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, rule, run_state_machine_as_test

from edgeledger.ledger.splits import split_hash, splits_at

from .conftest import (
    MAX_RECIPIENTS,
    REASSIGN_DELAY,
    TERRITORY_COUNT,
    TOTAL_BPS,
    Revert,
    Status,
    assert_same,
    batch_call,
    catalogue_item,
    custom_error,
    random_cid,
    random_hash,
    register_batch,
    register_for,
    self_register,
)

N_USERS = 6  # accounts[3:9]; accounts[9] never holds anything and probes updates as an outsider


@dataclass
class AssetModel:
    content_hash: bytes
    owner: str
    status: Status
    recipients: list[str]
    shares: list[int]
    licence: tuple
    parent_id: int
    former_owners: list[str]
    contested_since: int = 0  # block time the asset left Active; 0 while active


st_user = strategy("uint8", max_value=N_USERS - 1)
st_sender = strategy("uint8", max_value=7)
st_pick = strategy("uint16")
st_seed = strategy("uint32")
st_count = strategy("uint8", min_value=1, max_value=MAX_RECIPIENTS)
st_flag = strategy("bool")
st_wait = strategy("uint8", max_value=3)  # 0: no wait, 1: 0.6 of the delay, 2 and 3: just past it


class RegistryMachine(RuleBasedStateMachine):
    @classmethod
    def configure(cls, registry, accounts):
        cls.registry = registry
        cls.admin = accounts[0]
        cls.registrar = accounts[1]
        cls.arbiter = accounts[2]
        cls.users = list(accounts[3 : 3 + N_USERS])
        cls.outsider = accounts[3 + N_USERS]
        cls.arbiter_role = registry.ARBITER_ROLE()
        cls.account_of = {str(a): a for a in accounts}
        # Split recipients: the users plus addresses without accounts (duplicates are allowed).
        cls.payees = [str(u) for u in cls.users] + [f"0x{0xBEEF00 + i:040x}" for i in range(8)]

    def __init__(self):
        brownie.chain.revert()  # every example starts from the snapshot taken in the test
        super().__init__()
        self.assets: dict[int, AssetModel] = {}
        self.ids_by_hash: dict[bytes, int] = {}
        self.steps = 0

    # -----------------------------------------------------------------------------------------
    # Helpers
    # -----------------------------------------------------------------------------------------

    def _pick(self, pick: int, prefer: set[Status] | None = None) -> int:
        """An asset id: one time in 16 (or when there are none) the next, unknown id; else, three times
        in four, one whose status is in `prefer` if there is any (so that rules mostly hit assets they
        apply to); else any existing one."""
        count = len(self.assets)
        if count == 0 or pick % 16 == 7:
            return count + 1
        if prefer is not None and pick % 4 != 1:
            candidates = [i for i, m in self.assets.items() if m.status in prefer]
            if candidates:
                return candidates[(pick // 16) % len(candidates)]
        return (pick // 16) % count + 1

    def _owner_or_other(self, model: AssetModel | None, sender_kind: int, user_ix: int):
        """The asset's owner, except one time in four (or for an unknown asset): a user, maybe the owner."""
        if model is None or sender_kind in (5, 6):
            return self.users[user_ix]
        return self.account_of[model.owner]

    def _split(self, seed: int, count: int) -> tuple[list[str], list[int]]:
        rnd = random.Random(seed)
        cuts = sorted(rnd.sample(range(1, TOTAL_BPS), count - 1))
        shares = [b - a for a, b in zip([0, *cuts], [*cuts, TOTAL_BPS], strict=True)]
        recipients = [rnd.choice(self.payees) for _ in range(count)]
        return recipients, shares

    @staticmethod
    def _licence(seed: int) -> tuple:
        rnd = random.Random(seed)
        bitmap = rnd.getrandbits(TERRITORY_COUNT) or 1
        valid_from = rnd.choice([0, rnd.randrange(1, 2**40)])
        valid_until = rnd.choice([0, valid_from + rnd.randrange(1, 2**32)])
        royalty = rnd.choice([0, TOTAL_BPS, rnd.randrange(TOTAL_BPS)])
        return (bitmap, valid_from, valid_until, royalty, random_cid())

    def _unknown_or_none(self, asset_id: int) -> str | None:
        return None if asset_id in self.assets else custom_error("ERC721NonexistentToken", asset_id)

    def _send(self, expected_error: str | None, method, *args):
        """Sends the transaction; expects it to revert with exactly `expected_error`, or to succeed."""
        if expected_error is None:
            return method(*args)
        with brownie.reverts(expected_error):
            method(*args)
        return None

    def _arbiter_or_intruder(self, sender: int, salt: int):
        """The arbiter, except for sender == 5 (one in eight): another account (expects AccessControl's
        error)."""
        if sender != 5:
            return self.arbiter, None
        caller = [self.admin, self.registrar, *self.users][salt % (2 + N_USERS)]
        return caller, custom_error("AccessControlUnauthorizedAccount", caller, self.arbiter_role)

    def _change_owner(self, model: AssetModel, to) -> None:
        if str(to) != model.owner:
            model.former_owners.append(model.owner)
            model.owner = str(to)
            # Moving the token resets the split to the new holder alone.
            model.recipients, model.shares = [str(to)], [10_000]

    # -----------------------------------------------------------------------------------------
    # Rules
    # -----------------------------------------------------------------------------------------

    def _register(self, creator, sender, content_hash, parent_id, seed, count, expected_error):
        recipients, shares = self._split(seed, count)
        lic = self._licence(seed)
        reg = (content_hash, random_cid(), random_cid(), str(creator), parent_id, bool(seed & 1), lic)
        reg = (*reg, recipients, shares, (seed >> 1) % 2)  # either import profile
        if sender == self.registrar:  # with the creator's EIP-712 signature
            tx = self._send(expected_error, lambda: register_for(self.registry, reg, sender, signer=creator))
        else:  # commit, then reveal a block later (a third party reveals a registration naming another)
            tx = self._send(expected_error, lambda: self_register(self.registry, reg, sender))
        if tx is None:
            return
        asset_id = len(self.assets) + 1
        assert tx.return_value == asset_id
        assert tx.events["AssetRegistered"]["registrar"] == sender
        assert self.registry.importProfileOf(asset_id) == reg[9]  # recorded as signed or revealed
        self.assets[asset_id] = AssetModel(
            content_hash, str(creator), Status.Active, recipients, shares, lic, parent_id, []
        )
        self.ids_by_hash[content_hash] = asset_id

    @initialize(user_ix=st_user, seed=st_seed, count=st_count)
    def initialize_first(self, user_ix, seed, count):
        creator = self.users[user_ix]
        self._register(creator, creator, random_hash(), 0, seed, count, None)

    @initialize(user_ix=st_user, seed=st_seed, count=st_count)
    def initialize_second(self, user_ix, seed, count):
        creator = self.users[user_ix]
        self._register(creator, self.registrar, random_hash(), 0, seed, count, None)

    @rule(user_ix=st_user, sender_kind=st_sender, pick=st_pick, seed=st_seed, count=st_count, flag=st_flag)
    def rule_register(self, user_ix, sender_kind, pick, seed, count, flag):
        """Self-registration, registration by the registrar, or by an unauthorised third party; a new or
        an already registered hash; an original, a derivative or an unknown parent."""
        creator = self.users[user_ix]
        if sender_kind == 6:  # one in eight: someone without REGISTRAR_ROLE, for another creator
            sender = self.users[(user_ix + 1) % N_USERS]
        elif sender_kind % 2:
            sender = self.registrar
        else:
            sender = creator
        duplicate_of = self._pick(pick) if flag else None
        if duplicate_of in self.assets:
            content_hash = self.assets[duplicate_of].content_hash
        else:
            duplicate_of = None
            content_hash = random_hash()
        parent_id = 0 if seed % 3 == 0 else self._pick(pick // 7 + seed)

        if sender != creator and sender != self.registrar:
            expected = custom_error("NotCreator", sender, creator)
        elif duplicate_of is not None:
            expected = custom_error("AlreadyRegistered", content_hash, duplicate_of)
        elif parent_id not in self.assets and parent_id != 0:
            expected = custom_error("UnknownParent", parent_id)
        else:
            expected = None
        self._register(creator, sender, content_hash, parent_id, seed, count, expected)

    @rule(user_ix=st_user, seed=st_seed, count=st_count, size=strategy("uint8", min_value=1, max_value=4))
    def rule_register_batch(self, user_ix, seed, count, size):
        """A creator registers a catalogue in one transaction: every asset its own token under one
        licence and split (stored once, copied when one asset changes its own, which the invariant's
        per-asset checks see); the last item is sometimes a derivative of the first."""
        creator = self.users[user_ix]
        first_id = len(self.assets) + 1
        items = [catalogue_item() for _ in range(size)]
        if size > 1 and seed % 2:
            items[-1] = catalogue_item(parent_id=first_id, aigc=True)
        recipients, shares = self._split(seed, count)
        lic = self._licence(seed)
        tx = register_batch(self.registry, items, creator, lic=lic, recipients=recipients, shares=shares)
        assert tx.return_value == first_id
        assert tx.events["BatchRegistered"]["count"] == size
        for offset, item in enumerate(items):
            content_hash = bytes(item[0])
            self.assets[first_id + offset] = AssetModel(
                content_hash, str(creator), Status.Active, list(recipients), list(shares), lic, item[3], []
            )
            self.ids_by_hash[content_hash] = first_id + offset

    @rule(pick=st_pick, sender_kind=st_sender, user_ix=st_user, to_ix=st_user)
    def rule_transfer(self, pick, sender_kind, user_ix, to_ix):
        """The owner (sometimes someone else) transfers the token, whatever its status, to a user."""
        asset_id = self._pick(pick)
        to = self.users[to_ix]
        model = self.assets.get(asset_id)
        caller = self._owner_or_other(model, sender_kind, user_ix)
        expected = self._unknown_or_none(asset_id)
        if expected is None and caller != model.owner:
            expected = custom_error("ERC721InsufficientApproval", caller, asset_id)
        owner = model.owner if model else caller
        tx = self._send(expected, self.registry.transferFrom, owner, to, asset_id, {"from": caller})
        if tx is not None:
            self._change_owner(model, to)

    @rule(pick=st_pick, sender_kind=st_sender, user_ix=st_user, seed=st_seed, count=st_count)
    def rule_update_split(self, pick, sender_kind, user_ix, seed, count):
        """An update by the owner (sometimes someone else); one in eight splits does not sum to 10,000."""
        asset_id = self._pick(pick, {Status.Active})
        model = self.assets.get(asset_id)
        caller = self._owner_or_other(model, sender_kind, user_ix)
        recipients, shares = self._split(seed, count)
        broken = seed % 8 == 0
        if broken:
            shares[-1] += 1
        expected = self._unknown_or_none(asset_id)
        if expected is None:
            if caller != model.owner:
                expected = custom_error("NotRightsHolder", asset_id, caller)
            elif model.status != Status.Active:
                expected = custom_error("AssetNotActive", asset_id, model.status)
            elif broken:
                expected = custom_error("SharesNotWhole", TOTAL_BPS + 1)
        tx = self._send(expected, self.registry.updateSplit, asset_id, recipients, shares, {"from": caller})
        if tx is not None:
            model.recipients, model.shares = recipients, shares

    @rule(pick=st_pick, sender_kind=st_sender, user_ix=st_user, seed=st_seed)
    def rule_update_licence(self, pick, sender_kind, user_ix, seed):
        """An update by the owner (sometimes someone else)."""
        asset_id = self._pick(pick, {Status.Active})
        model = self.assets.get(asset_id)
        caller = self._owner_or_other(model, sender_kind, user_ix)
        lic = self._licence(seed)
        expected = self._unknown_or_none(asset_id)
        if expected is None:
            if caller != model.owner:
                expected = custom_error("NotRightsHolder", asset_id, caller)
            elif model.status != Status.Active:
                expected = custom_error("AssetNotActive", asset_id, model.status)
        tx = self._send(expected, self.registry.updateLicence, asset_id, lic, {"from": caller})
        if tx is not None:
            model.licence = lic
            assert_same(self.registry.getLicence(asset_id), lic)

    def _status_change(self, method, pick, sender_kind, allowed_from, target, error_for):
        asset_id = self._pick(pick, allowed_from)
        caller, expected = self._arbiter_or_intruder(sender_kind, pick // 16)
        model = self.assets.get(asset_id)
        if expected is None:
            expected = self._unknown_or_none(asset_id)
        if expected is None and model.status not in allowed_from:
            expected = error_for(asset_id, model.status)
        tx = self._send(expected, method, asset_id, random_cid(), {"from": caller})
        if tx is not None:
            assert tx.events["AssetStatusChanged"]["previous"] == model.status
            assert tx.events["AssetStatusChanged"]["current"] == target
            if target == Status.Active:
                model.contested_since = 0
            elif model.status == Status.Active:
                model.contested_since = tx.timestamp
            model.status = target

    @rule(pick=st_pick, sender_kind=st_sender)
    def rule_mark_disputed(self, pick, sender_kind):
        self._status_change(
            self.registry.markDisputed,
            pick,
            sender_kind,
            {Status.Active},
            Status.Disputed,
            lambda i, s: custom_error("InvalidStatusTransition", i, s, Status.Disputed),
        )

    @rule(pick=st_pick, sender_kind=st_sender)
    def rule_take_down(self, pick, sender_kind):
        self._status_change(
            self.registry.takeDown,
            pick,
            sender_kind,
            {Status.Active, Status.Disputed},
            Status.TakenDown,
            lambda i, s: custom_error("InvalidStatusTransition", i, s, Status.TakenDown),
        )

    @rule(pick=st_pick, sender_kind=st_sender)
    def rule_clear_dispute(self, pick, sender_kind):
        self._status_change(
            self.registry.clearDispute,
            pick,
            sender_kind,
            {Status.Disputed, Status.TakenDown},
            Status.Active,
            lambda i, s: custom_error("InvalidStatusTransition", i, s, Status.Active),
        )

    @rule(pick=st_pick, sender_kind=st_sender, user_ix=st_user, wait=st_wait)
    def rule_reassign_rights(self, pick, sender_kind, user_ix, wait):
        self.rule_wait(wait)  # the arbiter waits (or not) before reassigning
        asset_id = self._pick(pick, {Status.Disputed, Status.TakenDown})
        to = self.users[user_ix]
        caller, expected = self._arbiter_or_intruder(sender_kind, user_ix)
        model = self.assets.get(asset_id)
        if expected is None:
            expected = self._unknown_or_none(asset_id)
        if expected is None and model.status == Status.Active:
            expected = custom_error("AssetNotActive", asset_id, Status.Active)
        if expected is None:
            # rule_wait's steps keep the chain's clock clear of the boundary: either well before it or past.
            not_before = model.contested_since + REASSIGN_DELAY
            if chain.time() < not_before:
                expected = custom_error("ReassignTooEarly", asset_id, not_before)
        tx = self._send(expected, self.registry.reassignRights, asset_id, to, random_cid(), {"from": caller})
        if tx is not None:
            assert tx.timestamp >= model.contested_since + REASSIGN_DELAY
            assert tx.events["RightsReassigned"]["from"] == model.owner
            assert tx.events["RightsReassigned"]["to"] == to
            self._change_owner(model, to)
            model.status = Status.Active
            model.contested_since = 0

    @rule(step=st_wait)
    def rule_wait(self, step):
        """Time passes: not at all, 0.6 or 1.001 of the reassignment delay (sums never land within a few
        seconds of the delay, so the model knows on which side of it the next transaction falls)."""
        seconds = (0, REASSIGN_DELAY * 3 // 5, REASSIGN_DELAY + 1, REASSIGN_DELAY + 1)[step]
        if seconds:
            chain.sleep(seconds)
            chain.mine()

    # -----------------------------------------------------------------------------------------
    # Invariants (after every step)
    # -----------------------------------------------------------------------------------------

    @invariant()
    def invariant_registry_matches_model(self):
        self.steps += 1
        registry = self.registry
        assert len(self.ids_by_hash) == len(self.assets)
        calls = [(registry.totalAssets, (), self.outsider)]
        intruders = {}
        for asset_id, model in self.assets.items():
            # Probe updates (eth_call: no state change) by the owner, and by the latest former owner if the
            # token has moved, else by a rotating non-owner.
            if model.former_owners and model.former_owners[-1] != model.owner:
                intruder = self.account_of[model.former_owners[-1]]
            else:
                intruder = [*self.users, self.outsider][(asset_id + self.steps) % (N_USERS + 1)]
                if intruder == model.owner:
                    intruder = self.outsider
            intruders[asset_id] = intruder
            owner = self.account_of[model.owner]
            calls += [
                (registry.getAsset, (asset_id,), self.outsider),
                (registry.assetIdOf, (model.content_hash,), self.outsider),
                (registry.splitHashOf, (asset_id,), self.outsider),
                (registry.splitKeyOf, (asset_id,), self.outsider),
                (registry.getLicence, (asset_id,), self.outsider),
                (registry.ownerOf, (asset_id,), self.outsider),
                (registry.reassignableAt, (asset_id,), self.outsider),
                (registry.updateSplit, (asset_id, [str(owner)], [TOTAL_BPS]), owner),
                (registry.updateSplit, (asset_id, [str(intruder)], [TOTAL_BPS]), intruder),
            ]
        calls.append((registry.splitBlocks, (list(self.assets),), self.outsider))
        answers = batch_call(registry, calls)
        # Every split as settlement reads it: the preimage of the asset's hash among its split key's
        # SplitUpdated events (the asset's own, or its catalogue's shared one).
        per_asset = 9
        wanted = {
            asset_id: (answers[1 + n * per_asset + 3], split_hash(m.recipients, m.shares))
            for n, (asset_id, m) in enumerate(self.assets.items())
        }
        head = web3.eth.block_number
        splits = splits_at(web3.eth.get_logs, registry.address, wanted, head)
        # ... and found again in the block splitBlocks names for each asset, each block fetched alone.
        located = dict(zip(self.assets, answers[-1], strict=True))
        assert all(0 < block <= head for block in located.values()), located
        again = splits_at(web3.eth.get_logs, registry.address, wanted, head, split_blocks=located, span=1)
        assert again == splits
        results = iter(answers)

        assert next(results) == len(self.assets)
        for asset_id, model in self.assets.items():
            (
                record,
                mapped_id,
                committed_split,
                _split_key,
                lic,
                owner,
                reassignable,
                owner_update,
                intruder_update,
            ) = (next(results) for _ in range(9))
            assert reassignable == (model.contested_since + REASSIGN_DELAY if model.contested_since else 0)
            # No hash registered twice: hash -> id -> hash round-trips for every asset.
            assert_same(record["contentHash"], model.content_hash)
            assert mapped_id == asset_id
            assert record["parentId"] == model.parent_id
            assert Status(record["status"]) == model.status
            # The split is whole and is the model's: the latest SplitUpdated event, checked against the
            # committed hash, as settlement reads it.
            assert_same(committed_split, split_hash(model.recipients, model.shares))
            recipients, shares = splits[asset_id]
            assert 1 <= len(recipients) == len(shares) <= MAX_RECIPIENTS
            assert sum(shares) == TOTAL_BPS
            assert all(share > 0 for share in shares)
            assert_same((recipients, shares), (model.recipients, model.shares))
            assert_same(lic, model.licence)
            # The token owner is the rights holder and the only account that may update.
            assert owner == model.owner
            if model.status == Status.Active:
                assert not isinstance(owner_update, Revert), owner_update
            else:
                assert owner_update == Revert(custom_error("AssetNotActive", asset_id, model.status))
            assert intruder_update == Revert(custom_error("NotRightsHolder", asset_id, intruders[asset_id]))


def test_registry_state_machine(registry, accounts):
    RegistryMachine.configure(registry, accounts)
    brownie.chain.snapshot()
    # settings() inherits the active profile, i.e. brownie's (max_examples, stateful_step_count).
    run_state_machine_as_test(RegistryMachine, settings=settings(deadline=None))
