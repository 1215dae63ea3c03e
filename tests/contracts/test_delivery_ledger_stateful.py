"""Stateful property test of DeliveryLedger: random sequences of source registrations, signer rotations,
suspensions, reactivations and anchors (valid ones, and attacks: wrong prev hash, rewrite of history,
replayed batch id, wrong or rotated-out signer, suspended source, correction of another source's batch),
run against a Python model of the ledger.

Every rule predicts the outcome from the model (success, or the exact custom error, following the
documented check order of `anchor`) before sending the transaction. After every step the invariants
compare the contract with the model and with the chain of BatchAnchored events it emitted:
  * per source, the anchored manifests link without gaps: the first event's prevManifestHash is zero and
    every later one equals the previous event's manifestHash; every manifestHash is the EIP-712 struct
    hash of the manifest the model signed; the last one is the source's lastManifestHash;
  * each source's lastManifestHash, batchCount, signer and status equal the model's;
  * no batch id appears twice (across all sources), and the number of batch ids equals the sum of the
    batch counts;
  * every anchored batch's stored source, root, period, leaf count and kind equal the model's.

Each example starts with an edge node and a CDN provider, one batch each. Unauthorised callers (one in
eight) are part of the register / rotate / suspend / reactivate rules, and rule_anchor_by_non_anchorer
sends validly signed manifests from accounts without ANCHORER_ROLE.

Runner: brownie's compiled `state_machine` fixture cannot run machines (see
test_content_registry_stateful.py), so this is a plain hypothesis RuleBasedStateMachine fed with
`brownie.test.strategy` strategies, isolated the same way: one chain snapshot before the run, reverted to
at the start of every example. Integer strategies are wide (uint32) and used modulo the number of
choices: hypothesis favours small values, and narrow ranges would mostly pick the first key or source.
"""

from dataclasses import dataclass, field

import brownie
from brownie.test import strategy
from hypothesis import settings
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    invariant,
    precondition,
    rule,
    run_state_machine_as_test,
)

from .conftest import (
    KIND_CORRECTION,
    KIND_REGULAR,
    PERIOD_START,
    ZERO_HASH,
    Revert,
    SourceKind,
    SourceStatus,
    assert_same,
    batch_call,
    ledger_error,
    manifest,
    manifest_hash,
    random_hash,
    sign_manifest,
    signer_account,
    territories,
)

N_KEYS = 5  # manifest signer keys shared by all sources (so rotations and wrong keys collide often)
MAX_SOURCES = 6
# Fewer examples than brownie's profile (50): every step signs EIP-712 data in Python and the invariants
# read every batch; 30 x 25 steps keeps the run around half a minute.
MAX_EXAMPLES = 30

st_pick = strategy("uint32")
st_key = strategy("uint32")  # used modulo N_KEYS (a wide range spreads the keys evenly)
st_sender = strategy("uint32")  # one in eight (value % 8 == 5): an unauthorised caller
st_seed = strategy("uint32")
st_flag = strategy("bool")


@dataclass
class SourceModel:
    source_id: bytes
    kind: SourceKind
    operator: object
    signer: object  # eth_account LocalAccount
    index: int
    status: SourceStatus = SourceStatus.Active
    manifests: list[tuple] = field(default_factory=list)  # anchored, in chain order
    former_signers: list = field(default_factory=list)

    @property
    def last_hash(self) -> bytes:
        return manifest_hash(self.manifests[-1]) if self.manifests else ZERO_HASH


class LedgerMachine(RuleBasedStateMachine):
    @classmethod
    def configure(cls, ledger, accounts):
        cls.ledger = ledger
        cls.admin = accounts[0]
        cls.node_admin = accounts[6]
        cls.anchorer = accounts[7]
        cls.operators = [accounts[3], accounts[4], accounts[8]]
        cls.outsider = accounts[9]
        cls.keys = [signer_account(100 + i) for i in range(N_KEYS)]
        cls.node_admin_role = ledger.NODE_ADMIN_ROLE()
        cls.anchorer_role = ledger.ANCHORER_ROLE()

    def __init__(self):
        brownie.chain.revert()  # every example starts from the snapshot taken in the test
        super().__init__()
        self.sources: dict[bytes, SourceModel] = {}
        self.order: list[bytes] = []  # source ids by registration
        self.batches: dict[bytes, tuple[bytes, tuple]] = {}  # batchId -> (sourceId, manifest)
        # What the contract said: per source, (batchId, manifestHash, prevManifestHash) of each BatchAnchored.
        self.events: dict[bytes, list[tuple[bytes, bytes, bytes]]] = {}

    # -----------------------------------------------------------------------------------------
    # Helpers
    # -----------------------------------------------------------------------------------------

    def _pick(self, pick: int, prefer: SourceStatus | None = None) -> bytes:
        """A source id: one time in 16 (or when there are none) an unknown id; else, three times in four,
        one with status `prefer` if there is any; else any registered one."""
        if not self.order or pick % 16 == 7:
            return random_hash()
        if prefer is not None and pick % 4 != 1:
            candidates = [sid for sid in self.order if self.sources[sid].status == prefer]
            if candidates:
                return candidates[(pick // 16) % len(candidates)]
        return self.order[(pick // 16) % len(self.order)]

    def _send(self, expected_error: str | None, method, *args):
        """Sends the transaction; expects it to revert with exactly `expected_error`, or to succeed."""
        if expected_error is None:
            return method(*args)
        with brownie.reverts(expected_error):
            method(*args)
        return None

    def _node_admin_or_intruder(self, sender: int, salt: int):
        if sender % 8 != 5:
            return self.node_admin, None
        caller = [self.admin, self.anchorer, self.outsider, *self.operators][salt % 6]
        return caller, ledger_error("AccessControlUnauthorizedAccount", caller, self.node_admin_role)

    def _expected_anchor_error(self, m: tuple, key) -> str | None:
        """The outcome of anchoring `m` signed by `key`, in the contract's check order."""
        sid, batch_id, prev, kind, corrects = m[0], m[1], m[8], m[9], m[10]
        model = self.sources.get(sid)
        if model is None:
            return ledger_error("UnknownSource", sid)
        if model.status != SourceStatus.Active:
            return ledger_error("SourceNotActive", sid)
        if key.address != model.signer.address:
            return ledger_error("WrongSigner", sid, model.signer.address, key.address)
        if batch_id in self.batches:
            return ledger_error("BatchAlreadyAnchored", batch_id)
        if prev != model.last_hash:
            return ledger_error("PrevManifestMismatch", sid, model.last_hash, prev)
        if kind == KIND_CORRECTION:
            if corrects not in self.batches:
                return ledger_error("UnknownBatch", corrects)
            owner = self.batches[corrects][0]
            if owner != sid:
                return ledger_error("CorrectionOfOtherSource", corrects, sid, owner)
        return None

    def _anchor(self, m: tuple, key) -> None:
        expected = self._expected_anchor_error(m, key)
        tx = self._send(
            expected, self.ledger.anchor, m, sign_manifest(key, m, self.ledger), {"from": self.anchorer}
        )
        if tx is None:
            return
        sid = m[0]
        event = tx.events["BatchAnchored"]
        assert_same(event["sourceId"], sid)
        assert_same(event["batchId"], m[1])
        self.events[sid].append(
            (bytes(event["batchId"]), bytes(event["manifestHash"]), bytes(event["prevManifestHash"]))
        )
        self.sources[sid].manifests.append(m)
        self.batches[m[1]] = (sid, m)

    def _next_manifest(self, sid: bytes, seed: int, **overrides) -> tuple:
        model = self.sources.get(sid)
        height = len(model.manifests) if model else 0
        start = PERIOD_START + 3_600 * height
        values = {
            "period_start": start,
            "period_end": start + 1 + seed % 3_600,
            "leaf_count": 1 + seed % 2_000_000,
            "total_bytes": seed * 1_000,
            "total_requests": 1 + seed % 2_000_000,
        }
        values.update(overrides)
        prev = values.pop("prev_hash", model.last_hash if model else ZERO_HASH)
        return manifest(sid, prev, **values)

    # -----------------------------------------------------------------------------------------
    # Rules: sources
    # -----------------------------------------------------------------------------------------

    def _register(self, kind: SourceKind, key_ix: int, op_ix: int, sender, expected: str | None, sid: bytes):
        operator = (
            self.admin if kind == SourceKind.CdnProvider else self.operators[op_ix % len(self.operators)]
        )
        key = self.keys[key_ix % N_KEYS]
        regions = territories(key_ix % 100, 100 + op_ix % 100, 248)
        tx = self._send(
            expected,
            self.ledger.registerSource,
            sid,
            kind,
            operator,
            key.address,
            regions,
            b"DE",
            {"from": sender},
        )
        if tx is None:
            return
        self.order.append(sid)
        self.sources[sid] = SourceModel(sid, kind, operator, key, len(self.order))
        self.events[sid] = []

    @initialize(key_ix=st_key, op_ix=st_pick, seed=st_seed)
    def initialize_edge_node(self, key_ix, op_ix, seed):
        """An edge node with its first batch (so that attacks have material from the first step)."""
        sid = random_hash()
        self._register(SourceKind.EdgeNode, key_ix, op_ix, self.node_admin, None, sid)
        self._anchor(self._next_manifest(sid, seed), self.sources[sid].signer)

    @initialize(key_ix=st_key, seed=st_seed)
    def initialize_cdn_provider(self, key_ix, seed):
        """A CDN provider with its first batch."""
        sid = random_hash()
        self._register(SourceKind.CdnProvider, key_ix, 0, self.node_admin, None, sid)
        self._anchor(self._next_manifest(sid, seed), self.sources[sid].signer)

    @rule(flag=st_flag, key_ix=st_key, op_ix=st_pick, sender_kind=st_sender, pick=st_pick)
    def rule_register(self, flag, key_ix, op_ix, sender_kind, pick):
        """A new source by the node admin; sometimes an already registered id (always once there are
        MAX_SOURCES), sometimes a caller without NODE_ADMIN_ROLE."""
        kind = SourceKind.CdnProvider if flag else SourceKind.EdgeNode
        sender, expected = self._node_admin_or_intruder(sender_kind, pick)
        if pick % 8 == 3 or len(self.order) >= MAX_SOURCES:
            sid = self.order[pick % len(self.order)]
            expected = expected or ledger_error("SourceAlreadyRegistered", sid)
        else:
            sid = random_hash()
        self._register(kind, key_ix, op_ix, sender, expected, sid)

    @rule(pick=st_pick, key_ix=st_key, sender_kind=st_sender)
    def rule_rotate_signer(self, pick, key_ix, sender_kind):
        """The operator (edge node) or the node admin (CDN provider) rotates; one time in eight the other
        one tries (the node admin for an edge node: refused); the new key may be the current one."""
        sid = self._pick(pick)
        model = self.sources.get(sid)
        new = self.keys[key_ix % N_KEYS]
        if model is None:
            caller, expected = self.node_admin, ledger_error("UnknownSource", sid)
        else:
            authorised = model.operator if model.kind == SourceKind.EdgeNode else self.node_admin
            intruder = self.node_admin if model.kind == SourceKind.EdgeNode else self.outsider
            caller = intruder if sender_kind % 8 == 5 else authorised
            if caller != authorised:
                expected = ledger_error("RotationNotAuthorized", sid, caller)
            elif new.address == model.signer.address:
                expected = ledger_error("SignerUnchanged", sid, new.address)
            else:
                expected = None
        tx = self._send(expected, self.ledger.rotateSigner, sid, new.address, {"from": caller})
        if tx is not None:
            assert tx.events["SignerRotated"]["previousSigner"] == model.signer.address
            model.former_signers.append(model.signer)
            model.signer = new

    def _status_change(self, method, pick, sender_kind, source_status, target):
        sid = self._pick(pick, source_status)
        caller, expected = self._node_admin_or_intruder(sender_kind, pick // 16)
        model = self.sources.get(sid)
        if expected is None and model is None:
            expected = ledger_error("UnknownSource", sid)
        if expected is None and model.status != source_status:
            expected = ledger_error("InvalidSourceStatusTransition", sid, model.status, target)
        tx = self._send(expected, method, sid, {"from": caller})
        if tx is not None:
            assert tx.events["SourceStatusChanged"]["current"] == target
            model.status = target

    @rule(pick=st_pick, sender_kind=st_sender)
    def rule_suspend(self, pick, sender_kind):
        self._status_change(
            self.ledger.suspendSource, pick, sender_kind, SourceStatus.Active, SourceStatus.Suspended
        )

    @rule(pick=st_pick, sender_kind=st_sender)
    def rule_reactivate(self, pick, sender_kind):
        self._status_change(
            self.ledger.reactivateSource, pick, sender_kind, SourceStatus.Suspended, SourceStatus.Active
        )

    # -----------------------------------------------------------------------------------------
    # Rules: anchoring
    # -----------------------------------------------------------------------------------------

    @rule(pick=st_pick, seed=st_seed, flag=st_flag)
    def rule_anchor_valid(self, pick, seed, flag):
        """The source's next one to three manifests signed by its current signer; the first is sometimes
        a correction of one of its own batches. Succeeds unless the source is suspended (or unknown)."""
        sid = self._pick(pick, SourceStatus.Active)
        model = self.sources.get(sid)
        key = model.signer if model is not None else self.keys[seed % N_KEYS]
        for i in range(1 + seed % 3):
            overrides = {}
            if i == 0 and flag and model is not None and model.manifests:
                target = model.manifests[seed % len(model.manifests)][1]
                overrides = {"kind": KIND_CORRECTION, "corrects": target}
            self._anchor(self._next_manifest(sid, seed + i, **overrides), key)

    def _attack(self, pick: int, seed: int, prefer=SourceStatus.Active):
        """(sid, model, key) for an attack on a source (by default an active one) with its current key."""
        sid = self._pick(pick, prefer)
        model = self.sources.get(sid)
        key = model.signer if model is not None else self.keys[seed % N_KEYS]
        return sid, model, key

    @rule(pick=st_pick, seed=st_seed)
    def rule_attack_gap(self, pick, seed):
        """A manifest linking to something that is not the source's head (a skipped batch)."""
        sid, _, key = self._attack(pick, seed)
        self._anchor(self._next_manifest(sid, seed, prev_hash=random_hash()), key)

    @precondition(lambda self: self.batches)
    @rule(pick=st_pick, seed=st_seed)
    def rule_attack_rewrite(self, pick, seed):
        """A fork: a new manifest whose prev hash an anchored manifest already used (zero = a second
        first manifest)."""
        sid, model, key = self._attack(pick, seed)
        if model is not None and model.manifests:
            depth = seed % len(model.manifests)  # 0 -> zero, k -> the hash of the (k-1)-th manifest
            prev = manifest_hash(model.manifests[depth - 1]) if depth else ZERO_HASH
        else:
            prev = ZERO_HASH  # (a source without batches: this is its valid first manifest)
        self._anchor(self._next_manifest(sid, seed, prev_hash=prev), key)

    @precondition(lambda self: self.batches)
    @rule(pick=st_pick, seed=st_seed)
    def rule_attack_replay(self, pick, seed):
        """A correctly linked manifest reusing an anchored batch id (of this or another source)."""
        sid, _, key = self._attack(pick, seed)
        batch_id = list(self.batches)[seed % len(self.batches)]
        self._anchor(self._next_manifest(sid, seed, batch_id=batch_id), key)

    @rule(pick=st_pick, seed=st_seed)
    def rule_attack_wrong_signer(self, pick, seed):
        """A correctly linked manifest signed by a rotated-out key of the source when it has one, else by
        another key (another source's, or nobody's)."""
        sid, model, key = self._attack(pick, seed)
        former = [k for k in (model.former_signers if model else []) if k.address != key.address]
        if former and seed % 4:
            wrong = former[seed % len(former)]
        else:
            wrong = self.keys[(self.keys.index(key) + 1 + seed % (N_KEYS - 1)) % N_KEYS]
        self._anchor(self._next_manifest(sid, seed), wrong)

    @rule(pick=st_pick, seed=st_seed)
    def rule_attack_suspended(self, pick, seed):
        """A valid next manifest for a suspended source (one is suspended first if none is); half the
        time the source is reactivated afterwards, so that suspensions do not pile up."""
        if not any(m.status == SourceStatus.Suspended for m in self.sources.values()):
            victim = self.order[seed % len(self.order)]
            self.ledger.suspendSource(victim, {"from": self.node_admin})
            self.sources[victim].status = SourceStatus.Suspended
        sid, model, key = self._attack(pick, seed, SourceStatus.Suspended)
        self._anchor(self._next_manifest(sid, seed), key)
        if model is not None and model.status == SourceStatus.Suspended and seed % 2:
            self.ledger.reactivateSource(sid, {"from": self.node_admin})
            model.status = SourceStatus.Active

    @rule(pick=st_pick, seed=st_seed)
    def rule_attack_foreign_correction(self, pick, seed):
        """A correction of another source's batch, or of a batch id never anchored."""
        sid, _, key = self._attack(pick, seed)
        foreign = [b for b, (owner, _) in self.batches.items() if owner != sid]
        target = foreign[seed % len(foreign)] if foreign and seed % 4 else random_hash()
        self._anchor(self._next_manifest(sid, seed, kind=KIND_CORRECTION, corrects=target), key)

    @rule(pick=st_pick, seed=st_seed)
    def rule_anchor_by_non_anchorer(self, pick, seed):
        """A validly signed next manifest sent by an account without ANCHORER_ROLE."""
        sid = self._pick(pick, SourceStatus.Active)
        model = self.sources.get(sid)
        key = model.signer if model is not None else self.keys[0]
        m = self._next_manifest(sid, seed)
        caller = [self.admin, self.node_admin, self.outsider, *self.operators][seed % 6]
        with brownie.reverts(ledger_error("AccessControlUnauthorizedAccount", caller, self.anchorer_role)):
            self.ledger.anchor(m, sign_manifest(key, m, self.ledger), {"from": caller})

    # -----------------------------------------------------------------------------------------
    # Invariants (after every step)
    # -----------------------------------------------------------------------------------------

    @invariant()
    def invariant_ledger_matches_model(self):
        ledger = self.ledger
        calls = [
            (ledger.sourceCount, (), self.outsider),
            (ledger.isAnchored, (random_hash(),), self.outsider),
        ]
        calls += [(ledger.getSource, (sid,), self.outsider) for sid in self.order]
        for batch_id, (_, m) in self.batches.items():
            calls += [
                (ledger.batchSource, (batch_id,), self.outsider),
                (ledger.isBatchRoot, (batch_id, m[4]), self.outsider),
                (ledger.isBatchRoot, (batch_id, random_hash()), self.outsider),
            ]
        results = iter(batch_call(ledger, calls))

        assert next(results) == len(self.order)
        assert next(results) is False
        total = 0
        for sid in self.order:
            model = self.sources[sid]
            record = next(results)
            assert not isinstance(record, Revert), record
            assert record["signer"] == model.signer.address
            assert record["index"] == model.index
            assert SourceKind(record["kind"]) == model.kind
            assert SourceStatus(record["status"]) == model.status
            assert record["operator"] == model.operator
            assert record["batchCount"] == len(model.manifests)
            assert_same(record["lastManifestHash"], model.last_hash)
            total += record["batchCount"]

            # The chain the contract emitted links without gaps and is the model's.
            events = self.events[sid]
            assert len(events) == len(model.manifests)
            prev = ZERO_HASH
            for (batch_id, emitted_hash, emitted_prev), m in zip(events, model.manifests, strict=True):
                assert emitted_prev == prev
                assert emitted_hash == manifest_hash(m)
                assert batch_id == m[1]
                prev = emitted_hash
            assert_same(record["lastManifestHash"], prev)

        # No batch id twice, across all sources.
        emitted_ids = [batch_id for events in self.events.values() for batch_id, _, _ in events]
        assert len(emitted_ids) == len(set(emitted_ids)) == len(self.batches) == total

        for sid, m in self.batches.values():
            source, root_matches, other_root_matches = next(results), next(results), next(results)
            assert not isinstance(source, Revert), source
            assert_same(source, sid)
            assert root_matches is True
            assert other_root_matches is False
            assert m[9] in (KIND_REGULAR, KIND_CORRECTION)


def test_ledger_state_machine(ledger, accounts):
    LedgerMachine.configure(ledger, accounts)
    brownie.chain.snapshot()
    run_state_machine_as_test(LedgerMachine, settings=settings(deadline=None, max_examples=MAX_EXAMPLES))
