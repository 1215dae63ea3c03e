"""Shared fixtures and helpers for the ContentRegistry tests (run by brownie: `make test-contracts`).

Accounts: accounts[0] is the admin (DEFAULT_ADMIN_ROLE), accounts[1] holds REGISTRAR_ROLE, accounts[2]
holds ARBITER_ROLE; accounts[3:] are plain creators / users without any role.
"""

import base64
import functools
import secrets
from collections.abc import Sequence
from dataclasses import dataclass, field
from enum import IntEnum

import pytest
from brownie import ContentRegistry, DeliveryLedger, chain, web3
from brownie.exceptions import decode_typed_error
from eth_abi import encode
from eth_account import Account
from eth_account.messages import encode_typed_data
from eth_keys import keys
from eth_utils import keccak

from edgeledger.chain import brownie_receipts
from edgeledger.ledger.manifest import (
    DOMAIN_NAME,
    DOMAIN_VERSION,
    MANIFEST_FIELDS,
    MANIFEST_TYPEHASH,
)
from edgeledger.ledger.manifest import EIP712_DOMAIN_FIELDS as _LEDGER_DOMAIN_FIELDS
from edgeledger.ledger.registration import commitment as registration_commitment
from edgeledger.ledger.registration import registration_typed_data
from edgeledger.ledger.splits import splits_at

# anvil can show a sender's nonce before the receipt; brownie alone then calls a mined transaction dropped.
brownie_receipts.install()

#: ContentRegistry's REASSIGN_DELAY in the tests: seconds an asset stays contested before its rights move.
REASSIGN_DELAY = 1_000
TOTAL_BPS = 10_000
MAX_RECIPIENTS = 50
TERRITORY_COUNT = 249
ZERO_ADDRESS = "0x0000000000000000000000000000000000000000"
ZERO_HASH = b"\x00" * 32
# Arbitrary but fixed instants (unix seconds) for licence windows.
T0 = 1_700_000_000
T1 = 1_800_000_000


class Status(IntEnum):
    """Mirror of ContentRegistry.Status."""

    Active = 0
    Disputed = 1
    TakenDown = 2


# ---------------------------------------------------------------------------------------------
# Value builders
# ---------------------------------------------------------------------------------------------


def random_hash() -> bytes:
    """A random, non-zero 32-byte content hash."""
    while True:
        value = secrets.token_bytes(32)
        if any(value):
            return value


def cid_text(codec: int, digest: bytes) -> str:
    """The canonical CIDv1 text the registry accepts: "b" + base32(0x01, codec, 0x12, 0x20, digest)."""
    return "b" + base64.b32encode(bytes([1, codec, 0x12, 0x20]) + digest).decode().lower().rstrip("=")


def random_cid(codec: int = 0x55) -> str:
    """A random CIDv1 (base32, sha2-256; codec raw 'bafkrei...' by default, 0x70 for dag-pb 'bafybei...')."""
    return cid_text(codec, secrets.token_bytes(32))


def split_of(registry, asset_id: int, block: int | None = None) -> tuple[list[str], list[int]]:
    """An asset's split as settlement reads it: its latest SplitUpdated event up to `block`, checked
    against splitHashOf at that block (edgeledger.ledger.splits)."""
    block = web3.eth.block_number if block is None else block
    expected = bytes(registry.splitHashOf.call(asset_id, block_identifier=block))
    key = registry.splitKeyOf.call(asset_id, block_identifier=block)
    wanted = {asset_id: (key, expected)}
    split = splits_at(web3.eth.get_logs, registry.address, wanted, block)[asset_id]
    # The block splitBlocks names holds that event: found there alone (span 1), the same split.
    located = {asset_id: registry.splitBlocks.call([asset_id], block_identifier=block)[0]}
    assert 0 < located[asset_id] <= block
    assert splits_at(web3.eth.get_logs, registry.address, wanted, block, split_blocks=located, span=1) == {
        asset_id: split
    }
    return [web3.to_checksum_address(r) for r in split[0]], list(split[1])


def territories(*indices: int) -> int:
    """Territory bitmap with the given bit indices set."""
    bitmap = 0
    for index in indices:
        bitmap |= 1 << index
    return bitmap


def licence(
    territory_bits: int | None = None,
    valid_from: int = 0,
    valid_until: int = 0,
    royalty_bps: int = 500,
    terms_cid: str | None = None,
) -> tuple:
    """A Licence tuple: (territories, validFrom, validUntil, royaltyBps, termsCid)."""
    if territory_bits is None:
        territory_bits = territories(0, 17, 80, 248)
    return (
        territory_bits,
        valid_from,
        valid_until,
        royalty_bps,
        random_cid() if terms_cid is None else terms_cid,
    )


def even_split(recipients) -> tuple[list[str], list[int]]:
    """Split 10,000 bps as evenly as possible (the remainder goes to the first recipients)."""
    recipients = [str(r) for r in recipients]
    base, rest = divmod(TOTAL_BPS, len(recipients))
    shares = [base + (1 if i < rest else 0) for i in range(len(recipients))]
    return recipients, shares


def registration(
    creator,
    *,
    content_hash: bytes | None = None,
    content_cid: str | None = None,
    metadata_cid: str | None = None,
    parent_id: int = 0,
    aigc: bool = False,
    import_profile: int = 0,
    licence_tuple: tuple | None = None,
    recipients=None,
    shares=None,
) -> tuple:
    """A valid Registration tuple for `creator`; every field can be overridden.

    The default split gives 7,000 bps to the creator and 3,000 bps to a fixed co-holder.
    """
    if recipients is None:
        recipients = [creator, "0x00000000000000000000000000000000000C0DE5"]
    if shares is None:
        shares = [7_000, 3_000]
    return (
        random_hash() if content_hash is None else content_hash,
        random_cid() if content_cid is None else content_cid,
        random_cid() if metadata_cid is None else metadata_cid,
        str(creator),
        parent_id,
        aigc,
        licence() if licence_tuple is None else licence_tuple,
        [str(r) for r in recipients],
        list(shares),
        import_profile,
    )


# ---------------------------------------------------------------------------------------------
# Custom errors
# ---------------------------------------------------------------------------------------------


def _error_abi(name: str) -> dict:
    matches = [item for item in ContentRegistry.abi if item["type"] == "error" and item["name"] == name]
    assert len(matches) == 1, f"no (unique) custom error {name!r} in the ContentRegistry ABI"
    return matches[0]


def error_signature(name: str) -> str:
    item = _error_abi(name)
    return f"{name}({','.join(i['type'] for i in item['inputs'])})"


def error_selector(name: str) -> str:
    """The 4-byte selector of a custom error, 0x-prefixed."""
    return "0x" + web3.keccak(text=error_signature(name))[:4].hex().removeprefix("0x")


def _abi_value(value):
    if isinstance(value, IntEnum):
        return int(value)
    if hasattr(value, "address"):  # brownie Account / Contract
        return str(value.address)
    return value


def custom_error(name: str, *args) -> str:
    """The exact revert message brownie reports for custom error `name(args...)`.

    Brownie decodes custom errors from the project's ABIs into "Name: arg1, arg2"; this encodes the
    expected error (selector from keccak256 of the signature + ABI-encoded arguments) and runs it through
    the same decoder, so `brownie.reverts(custom_error(...))` compares error name and every argument
    exactly. An undecodable selector would be reported as "Unknown typed error: 0x...", never matching.
    """
    item = _error_abi(name)
    types = [i["type"] for i in item["inputs"]]
    assert len(types) == len(args), f"{name} takes {len(types)} arguments, got {len(args)}"
    data = error_selector(name) + encode(types, [_abi_value(a) for a in args]).hex()
    message = decode_typed_error(data)
    assert message.startswith(f"{name}: "), message
    return message


# ---------------------------------------------------------------------------------------------
# Fixtures
# ---------------------------------------------------------------------------------------------


@pytest.fixture(autouse=True)
def isolation(fn_isolation):
    """Every test starts from the chain state right after the module-scoped fixtures."""


@pytest.fixture(scope="module")
def admin(accounts):
    return accounts[0]


@pytest.fixture(scope="module")
def registrar(accounts):
    return accounts[1]


@pytest.fixture(scope="module")
def arbiter(accounts):
    return accounts[2]


@pytest.fixture(scope="module")
def creator(accounts):
    return accounts[3]


@pytest.fixture(scope="module")
def other(accounts):
    return accounts[4]


@pytest.fixture(scope="module")
def third(accounts):
    return accounts[5]


@pytest.fixture(scope="module")
def registry(module_isolation, admin, registrar, arbiter):
    contract = ContentRegistry.deploy(admin, REASSIGN_DELAY, {"from": admin})
    contract.grantRole(contract.REGISTRAR_ROLE(), registrar, {"from": admin})
    contract.grantRole(contract.ARBITER_ROLE(), arbiter, {"from": admin})
    return contract


def self_register(registry, reg, sender, *, salt=None):
    """A creator's own registration: commitRegistration in one block, registerAsset (the reveal) in the
    next. Returns the reveal's transaction."""
    salt = random_hash() if salt is None else salt
    registry.commitRegistration(registration_commitment(reg[0], reg[3], salt), {"from": sender})
    return registry.registerAsset(reg, salt, {"from": sender})


def catalogue_item(
    *, content_hash: bytes | None = None, parent_id: int = 0, aigc: bool = False, import_profile: int = 0
) -> tuple:
    """A CatalogueItem tuple: (contentHash, contentCid, metadataCid, parentId, aigc, importProfile)."""
    return (
        random_hash() if content_hash is None else content_hash,
        random_cid(),
        random_cid(0x70),
        parent_id,
        aigc,
        import_profile,
    )


def batch_commitment(items) -> bytes:
    """ContentRegistry.batchHash: keccak256 of the items' content hashes, in order."""
    return keccak(b"".join(bytes(item[0]) for item in items))


def register_batch(registry, items, sender, *, lic=None, recipients=None, shares=None, salt=None):
    """A creator's catalogue: commitRegistration(batch commitment) in one block, registerBatch in the
    next. Returns the reveal's transaction."""
    salt = random_hash() if salt is None else salt
    recipients = [str(sender)] if recipients is None else [str(r) for r in recipients]
    shares = [TOTAL_BPS] if shares is None else list(shares)
    lic = licence() if lic is None else lic
    commitment = registration_commitment(batch_commitment(items), str(sender), salt)
    registry.commitRegistration(commitment, {"from": sender})
    return registry.registerBatch(items, lic, recipients, shares, salt, {"from": sender})


def sign_registration(registry, reg, signer, *, nonce=None, deadline=None):
    """(signature, deadline): `signer`'s EIP-712 Registration signature of `reg` for `registry` (the
    creator's next nonce and a deadline an hour ahead unless given)."""
    nonce = registry.nonces(reg[3]) if nonce is None else nonce
    deadline = chain.time() + 3600 if deadline is None else deadline
    typed = registration_typed_data(
        reg, nonce=nonce, deadline=deadline, chain_id=web3.eth.chain_id, contract=str(registry.address)
    )
    signed = Account.sign_message(encode_typed_data(full_message=typed), private_key_of(signer))
    return signed.signature, deadline


def register_for(registry, reg, registrar, *, signer=None, nonce=None, deadline=None):
    """The registrar's registerFor with the creator's (or `signer`'s, for a contract creator) signature."""
    signer = _account_of(reg[3]) if signer is None else signer
    signature, deadline = sign_registration(registry, reg, signer, nonce=nonce, deadline=deadline)
    return registry.registerFor(reg, deadline, signature, {"from": registrar})


#: anvil's default accounts (brownie's `accounts`) come from this well-known test mnemonic.
ANVIL_MNEMONIC = "test test test test test test test test test test test junk"


@functools.cache
def _anvil_keys() -> dict[str, bytes]:
    Account.enable_unaudited_hdwallet_features()
    derived = (Account.from_mnemonic(ANVIL_MNEMONIC, account_path=f"m/44'/60'/0'/0/{i}") for i in range(10))
    return {a.address: a.key for a in derived}


def private_key_of(account) -> bytes:
    """The private key of a LocalAccount or of one of anvil's unlocked default accounts."""
    key = getattr(account, "key", None) or getattr(account, "private_key", None)
    return key if key is not None else _anvil_keys()[str(account)]


def _account_of(address):
    from brownie import accounts

    return next(a for a in accounts if a.address == str(address))


@pytest.fixture
def register(registry, registrar):
    """register(creator, sender=None, **overrides) -> (assetId, tx, registration tuple): the creator's
    own commit-reveal registration, or the registrar's registerFor with the creator's signature when
    `sender` is the registrar."""

    def _register(creator, sender=None, **overrides):
        reg = registration(creator, **overrides)
        if sender is not None and str(sender) != str(creator):
            tx = register_for(registry, reg, sender)
        else:
            tx = self_register(registry, reg, creator)
        return tx.return_value, tx, reg

    return _register


@pytest.fixture
def asset(register, creator):
    """An Active asset registered by `creator` for itself: (assetId, registration tuple)."""
    asset_id, _, reg = register(creator)
    return asset_id, reg


# ---------------------------------------------------------------------------------------------
# Events
# ---------------------------------------------------------------------------------------------


def _normalise(value):
    """Comparable form of an event / return value: lists for arrays, lowercase addresses, plain bytes."""
    if hasattr(value, "address"):
        return str(value.address).lower()
    if isinstance(value, dict):
        return {k: _normalise(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_normalise(v) for v in value]
    if isinstance(value, bytes):
        return bytes(value)
    if isinstance(value, str) and value.startswith("0x") and len(value) == 42:
        return value.lower()
    if isinstance(value, IntEnum):
        return int(value)
    return value


def event_names(tx) -> list[str]:
    """Names of all events the transaction emitted, in log order."""
    return [item.name for item in tx.events]


def assert_event(tx, name: str, index: int = 0, **expected) -> None:
    """Event `name` (the `index`-th of that name) was emitted with exactly these arguments, no others."""
    actual = tx.events[name][index]
    assert {k: _normalise(v) for k, v in actual.items()} == {k: _normalise(v) for k, v in expected.items()}


def assert_same(actual, expected) -> None:
    """Deep equality of contract return values and Python values (arrays as lists, case-blind addresses)."""
    assert _normalise(actual) == _normalise(expected)


# =============================================================================================
# DeliveryLedger
# =============================================================================================
#
# Accounts: accounts[0] is the admin (DEFAULT_ADMIN_ROLE), accounts[6] holds NODE_ADMIN_ROLE, accounts[7]
# holds ANCHORER_ROLE, accounts[8] operates the edge node of the `edge_source` fixture; accounts[9] holds
# nothing. Manifests are signed by plain eth_account keys (anvil's unlocked accounts cannot sign typed
# data for us): a source's signer is an address, not necessarily an account with ether.


LEDGER_NAME = DOMAIN_NAME
LEDGER_VERSION = DOMAIN_VERSION
KIND_REGULAR = 0
KIND_CORRECTION = 1
# Arbitrary but fixed batch period (unix seconds): one hour.
PERIOD_START = 1_750_000_000
PERIOD_END = PERIOD_START + 3_600


class SourceKind(IntEnum):
    """Mirror of DeliveryLedger.SourceKind."""

    EdgeNode = 0
    CdnProvider = 1


class SourceStatus(IntEnum):
    """Mirror of DeliveryLedger.SourceStatus."""

    Active = 0
    Suspended = 1


# EIP-712 struct `Manifest` (field order = the Solidity struct's order = the tuple order used here) and its
# domain: the one definition in edgeledger.ledger.manifest, which the API signs with and verifiers check.
EIP712_DOMAIN_FIELDS = [{"name": n, "type": t} for n, t in _LEDGER_DOMAIN_FIELDS]

# Delivery record (docs/delivery-leaf.md), in field order.
RECORD_FIELDS = (
    ("sourceId", "bytes32"),
    ("requestId", "bytes32"),
    ("timestampMs", "uint64"),
    ("edgeLocation", "bytes16"),
    ("country", "bytes2"),
    ("assetId", "uint256"),
    ("merchantId", "bytes32"),
    ("bytesDelivered", "uint64"),
    ("status", "uint16"),
    ("cacheResult", "uint8"),
    ("clientCommitment", "bytes32"),
)
RECORD_TYPES = [t for _, t in RECORD_FIELDS]


def signer_account(n: int):
    """A deterministic eth_account LocalAccount (the n-th test manifest signer)."""
    return Account.from_key(keccak(text=f"edgeledger test manifest signer {n}"))


def manifest(
    source_id: bytes,
    prev_hash: bytes = ZERO_HASH,
    *,
    batch_id: bytes | None = None,
    period_start: int = PERIOD_START,
    period_end: int = PERIOD_END,
    root: bytes | None = None,
    leaf_count: int = 1_000,
    total_bytes: int = 123_456_789,
    total_requests: int = 1_000,
    kind: int = KIND_REGULAR,
    corrects: bytes = ZERO_HASH,
) -> tuple:
    """A Manifest tuple (field order of MANIFEST_FIELDS); random batch id and root unless given."""
    return (
        source_id,
        random_hash() if batch_id is None else batch_id,
        period_start,
        period_end,
        random_hash() if root is None else root,
        leaf_count,
        total_bytes,
        total_requests,
        prev_hash,
        kind,
        corrects,
    )


def manifest_dict(m: Sequence) -> dict:
    return {name: value for (name, _), value in zip(MANIFEST_FIELDS, m, strict=True)}


def manifest_hash(m: Sequence) -> bytes:
    """EIP-712 hashStruct(Manifest): what the next manifest of the source puts in prevManifestHash."""
    return keccak(encode(["bytes32", *(t for _, t in MANIFEST_FIELDS)], [MANIFEST_TYPEHASH, *m]))


def manifest_typed_data(
    m: Sequence, chain_id: int, verifying_contract, *, name=LEDGER_NAME, version=LEDGER_VERSION
):
    """The full EIP-712 message (types, primary type, complete domain, message) for eth_account."""
    return {
        "types": {
            "EIP712Domain": EIP712_DOMAIN_FIELDS,
            "Manifest": [{"name": n, "type": t} for n, t in MANIFEST_FIELDS],
        },
        "primaryType": "Manifest",
        "domain": {
            "name": name,
            "version": version,
            "chainId": chain_id,
            "verifyingContract": str(_abi_value(verifying_contract)),
        },
        "message": manifest_dict(m),
    }


def manifest_digest(m: Sequence, chain_id: int, verifying_contract, **domain) -> bytes:
    """The EIP-712 digest keccak256(0x1901 ‖ domainSeparator ‖ hashStruct(m)), computed by eth_account."""
    signable = encode_typed_data(full_message=manifest_typed_data(m, chain_id, verifying_contract, **domain))
    return keccak(b"\x19" + signable.version + signable.header + signable.body)


def sign_manifest(
    signer, m: Sequence, ledger, *, chain_id: int | None = None, verifying_contract=None, **domain
):
    """`signer`'s 65-byte (r ‖ s ‖ v) EIP-712 signature of manifest `m` for `ledger` on this chain (or for
    another chain id / verifying contract / domain name or version, to test replays)."""
    full = manifest_typed_data(
        m,
        web3.eth.chain_id if chain_id is None else chain_id,
        ledger if verifying_contract is None else verifying_contract,
        **domain,
    )
    return bytes(Account.sign_typed_data(signer.key, full_message=full).signature)


def recover_address(digest: bytes, signature: bytes) -> str:
    """The address ecrecover returns for a 65-byte (r ‖ s ‖ v) signature of `digest`."""
    sig = keys.Signature(signature_bytes=signature[:64] + bytes([signature[64] - 27]))
    return sig.recover_public_key_from_msg_hash(digest).to_checksum_address()


SECP256K1_N = 0xFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFEBAAEDCE6AF48A03BBFD25E8CD0364141


def malleate(signature: bytes) -> bytes:
    """The other valid signature of the same digest and key: s' = n - s (high s), v flipped."""
    r, s, v = signature[:32], int.from_bytes(signature[32:64], "big"), signature[64]
    return r + (SECP256K1_N - s).to_bytes(32, "big") + bytes([55 - v])


# ---------------------------------------------------------------------------------------------
# Delivery records and Merkle trees (docs/delivery-leaf.md; OpenZeppelin StandardMerkleTree layout)
# ---------------------------------------------------------------------------------------------


def delivery_record(source_id: bytes, **overrides) -> tuple:
    """A DeliveryRecord tuple (field order of RECORD_FIELDS) with random ids; fields can be overridden."""
    values = {
        "sourceId": source_id,
        "requestId": random_hash(),
        "timestampMs": PERIOD_START * 1000 + secrets.randbelow(3_600_000),
        "edgeLocation": b"FRA56-P3".ljust(16, b"\x00"),
        "country": b"DE",
        "assetId": 1 + secrets.randbelow(1_000),
        "merchantId": keccak(text="media.example.com"),
        "bytesDelivered": 1 + secrets.randbelow(10**9),
        "status": 200,
        "cacheResult": 1,
        "clientCommitment": random_hash(),
    }
    unknown = set(overrides) - set(values)
    assert not unknown, f"unknown record fields {unknown}"
    values.update(overrides)
    return tuple(values[name] for name, _ in RECORD_FIELDS)


def record_leaf(record: Sequence) -> bytes:
    """keccak256(bytes.concat(keccak256(abi.encode(record fields)))), exactly as docs/delivery-leaf.md."""
    return keccak(keccak(encode(RECORD_TYPES, list(record))))


def hash_pair(a: bytes, b: bytes) -> bytes:
    """Inner node: keccak256 of the two children, sorted (OpenZeppelin's commutative pair hash)."""
    return keccak(min(a, b) + max(a, b))


def process_proof(leaf: bytes, proof: Sequence[bytes]) -> bytes:
    """The root a proof leads to (OpenZeppelin MerkleProof.processProof)."""
    node = leaf
    for sibling in proof:
        node = hash_pair(node, sibling)
    return node


class MerkleTree:
    """Minimal StandardMerkleTree over leaf hashes: leaves sorted ascending, stored at the end of a
    2n-1 array in reverse order, node i = hash_pair(node 2i+1, node 2i+2); root = node 0."""

    def __init__(self, leaves: Sequence[bytes]):
        assert leaves, "a tree needs at least one leaf"
        ordered = sorted(leaves)
        size = 2 * len(ordered) - 1
        self.nodes: list[bytes] = [b""] * size
        for i, leaf in enumerate(ordered):
            self.nodes[size - 1 - i] = leaf
        for i in range(size - 1 - len(ordered), -1, -1):
            self.nodes[i] = hash_pair(self.nodes[2 * i + 1], self.nodes[2 * i + 2])
        self._index = {leaf: size - 1 - i for i, leaf in enumerate(ordered)}

    @classmethod
    def of_records(cls, records: Sequence[Sequence]) -> "MerkleTree":
        return cls([record_leaf(r) for r in records])

    @property
    def root(self) -> bytes:
        return self.nodes[0]

    def proof(self, leaf: bytes) -> list[bytes]:
        index = self._index[leaf]
        proof = []
        while index > 0:
            proof.append(self.nodes[index - 1 if index % 2 == 0 else index + 1])
            index = (index - 1) // 2
        return proof


# ---------------------------------------------------------------------------------------------
# DeliveryLedger custom errors (the project ABIs share brownie's decoder; names looked up in this ABI)
# ---------------------------------------------------------------------------------------------


def ledger_error(name: str, *args) -> str:
    """custom_error() for DeliveryLedger: the exact revert message brownie reports for `name(args...)`."""
    matches = [item for item in DeliveryLedger.abi if item["type"] == "error" and item["name"] == name]
    assert len(matches) == 1, f"no (unique) custom error {name!r} in the DeliveryLedger ABI"
    types = [i["type"] for i in matches[0]["inputs"]]
    assert len(types) == len(args), f"{name} takes {len(types)} arguments, got {len(args)}"
    signature = f"{name}({','.join(types)})"
    selector = keccak(text=signature)[:4].hex()
    data = "0x" + selector + encode(types, [_abi_value(a) for a in args]).hex()
    message = decode_typed_error(data)
    assert message.startswith(f"{name}: "), message
    return message


# ---------------------------------------------------------------------------------------------
# DeliveryLedger fixtures
# ---------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def node_admin(accounts):
    return accounts[6]


@pytest.fixture(scope="module")
def anchorer(accounts):
    return accounts[7]


@pytest.fixture(scope="module")
def node_operator(accounts):
    return accounts[8]


@pytest.fixture(scope="module")
def outsider(accounts):
    return accounts[9]


@pytest.fixture(scope="module")
def ledger(module_isolation, admin, node_admin, anchorer):
    contract = DeliveryLedger.deploy(admin, {"from": admin})
    contract.grantRole(contract.NODE_ADMIN_ROLE(), node_admin, {"from": admin})
    contract.grantRole(contract.ANCHORER_ROLE(), anchorer, {"from": admin})
    return contract


@dataclass
class LedgerSource:
    """A registered source and its signer key, with the manifests anchored through `anchor_next`."""

    source_id: bytes
    kind: SourceKind
    operator: object
    signer: object  # eth_account LocalAccount
    regions: int
    jurisdiction: bytes
    anchored: list[tuple] = field(default_factory=list)

    @property
    def last_hash(self) -> bytes:
        return manifest_hash(self.anchored[-1]) if self.anchored else ZERO_HASH


@pytest.fixture
def register_source(ledger, node_admin):
    """register_source(kind=EdgeNode, operator=None, signer=None, ...) -> (LedgerSource, tx)."""

    def _register(
        kind=SourceKind.EdgeNode,
        operator=None,
        signer=None,
        regions: int | None = None,
        jurisdiction: bytes = b"DE",
        source_id: bytes | None = None,
    ):
        source = LedgerSource(
            random_hash() if source_id is None else source_id,
            kind,
            operator or "0x00000000000000000000000000000000000C0DE6",
            signer or Account.create(),
            territories(56, 74) if regions is None else regions,
            jurisdiction,
        )
        tx = ledger.registerSource(
            source.source_id,
            source.kind,
            source.operator,
            source.signer.address,
            source.regions,
            source.jurisdiction,
            {"from": node_admin},
        )
        return source, tx

    return _register


@pytest.fixture
def edge_source(register_source, node_operator):
    """An Active edge node operated by accounts[8], signing with signer_account(1)."""
    source, _ = register_source(SourceKind.EdgeNode, node_operator, signer_account(1))
    return source


@pytest.fixture
def cdn_source(register_source, admin):
    """An Active CDN provider account (operator: the platform admin), signing with signer_account(2)."""
    source, _ = register_source(SourceKind.CdnProvider, admin, signer_account(2), jurisdiction=b"US")
    return source


@pytest.fixture
def anchor_next(ledger, anchorer):
    """anchor_next(source, **manifest overrides) -> (tx, manifest): signs the source's next manifest with
    its signer (linked to its last anchored one) and anchors it; records it in source.anchored."""

    def _anchor(source: LedgerSource, **overrides):
        m = manifest(source.source_id, overrides.pop("prev_hash", source.last_hash), **overrides)
        tx = ledger.anchor(m, sign_manifest(source.signer, m, ledger), {"from": anchorer})
        source.anchored.append(m)
        return tx, m

    return _anchor


# --- shared by the stateful tests ---------------------------------------------------------------


@dataclass(frozen=True)
class Revert:
    """A reverted call, with the custom error as brownie reports it (e.g. "NotRightsHolder: 3, 0x...")."""

    message: str


def batch_call(contract, calls) -> list:
    """Runs [(method, args, sender), ...] as eth_calls in one JSON-RPC batch and returns, per call, the
    decoded result or a Revert with the decoded custom error. (Through brownie, every call costs about
    10 ms of client overhead, which would make the per-step invariants dominate the run time.)"""
    requests = [
        (
            "eth_call",
            [{"from": str(sender), "to": contract.address, "data": method.encode_input(*args)}, "latest"],
        )
        for method, args, sender in calls
    ]
    responses = web3.provider.make_batch_request(requests)
    assert isinstance(responses, list), responses
    results = []
    for (method, _, _), response in zip(calls, responses, strict=True):
        if "error" in response:
            results.append(Revert(decode_typed_error(response["error"]["data"])))
        else:
            results.append(method.decode_output(response["result"]))
    return results


# =============================================================================================
# SettlementVault
# =============================================================================================
#
# Accounts: accounts[0] is the admin (DEFAULT_ADMIN_ROLE, owner of the test stablecoins), accounts[1] holds
# SETTLER_ROLE, accounts[2] holds AUDITOR_ROLE, accounts[3] and accounts[4] are merchants, accounts[5:]
# are payees without any role. Payout leaves follow docs/settlement-leaf.md.

CHALLENGE_WINDOW = 86_400
#: The vault's settlement period length (the service's default DELIVERY_PERIOD_SECONDS).
PERIOD_SECONDS = 86_400
USDC_UNIT = 10**6
PAYOUT_TYPES = ["uint64", "address", "address", "address", "uint256"]


class SettlementStatus(IntEnum):
    """Mirror of SettlementVault.SettlementStatus."""

    Unposted = 0  # `None` in Solidity
    Posted = 1
    Challenged = 2
    Upheld = 3
    Cancelled = 4


def vault_error(name: str, *args) -> str:
    """custom_error() for SettlementVault and TestStablecoin (names looked up in their ABIs)."""
    from brownie import SettlementVault, TestStablecoin

    abi = SettlementVault.abi + [item for item in TestStablecoin.abi if item["type"] == "error"]
    matches = [item for item in abi if item["type"] == "error" and item["name"] == name]
    assert matches, f"no custom error {name!r} in the SettlementVault / TestStablecoin ABIs"
    types = [i["type"] for i in matches[0]["inputs"]]
    assert len(types) == len(args), f"{name} takes {len(types)} arguments, got {len(args)}"
    selector = keccak(text=f"{name}({','.join(types)})")[:4].hex()
    data = "0x" + selector + encode(types, [_abi_value(a) for a in args]).hex()
    message = decode_typed_error(data)
    assert message.startswith(f"{name}: ") or message == name, message
    return message


def payout_leaf(period_id: int, merchant, token, payee, amount: int) -> bytes:
    """keccak256(bytes.concat(keccak256(abi.encode(periodId, merchant, token, payee, amount))))."""
    values = [period_id, str(_abi_value(merchant)), str(_abi_value(token)), str(_abi_value(payee)), amount]
    return keccak(keccak(encode(PAYOUT_TYPES, values)))


@dataclass
class Payout:
    """A (period, merchant) payout tree: {payee address: amount}, its root, total and proofs."""

    period_id: int
    merchant: str
    token: str
    amounts: dict[str, int]
    tree: MerkleTree = field(init=False)

    def __post_init__(self):
        self.tree = MerkleTree([self.leaf(p) for p in self.amounts])

    def leaf(self, payee) -> bytes:
        payee = str(_abi_value(payee))
        return payout_leaf(self.period_id, self.merchant, self.token, payee, self.amounts[payee])

    @property
    def root(self) -> bytes:
        return self.tree.root

    @property
    def total(self) -> int:
        return sum(self.amounts.values())

    def claim(self, payee) -> tuple:
        """The Claim tuple (periodId, merchant, amount, proof) of `payee`."""
        payee = str(_abi_value(payee))
        return (self.period_id, self.merchant, self.amounts[payee], self.tree.proof(self.leaf(payee)))


@pytest.fixture(scope="module")
def settler(accounts):
    return accounts[1]


@pytest.fixture(scope="module")
def auditor(accounts):
    return accounts[2]


@pytest.fixture(scope="module")
def merchant(accounts):
    return accounts[3]


@pytest.fixture(scope="module")
def payees(accounts):
    return list(accounts[5:10])


@pytest.fixture(scope="module")
def usdc(module_isolation, admin):
    from brownie import TestStablecoin

    return TestStablecoin.deploy("Test USD Coin", "tUSDC", admin, {"from": admin})


@pytest.fixture(scope="module")
def eurc(module_isolation, admin):
    from brownie import TestStablecoin

    return TestStablecoin.deploy("Test Euro Coin", "tEURC", admin, {"from": admin})


@pytest.fixture(scope="module")
def vault(module_isolation, admin, settler, auditor, usdc, eurc):
    from brownie import SettlementVault

    contract = SettlementVault.deploy(admin, CHALLENGE_WINDOW, PERIOD_SECONDS, {"from": admin})
    contract.grantRole(contract.SETTLER_ROLE(), settler, {"from": admin})
    contract.grantRole(contract.AUDITOR_ROLE(), auditor, {"from": admin})
    contract.grantRole(contract.PAUSER_ROLE(), admin, {"from": admin})
    contract.grantRole(contract.RESOLVER_ROLE(), admin, {"from": admin})
    contract.setTokenAllowed(usdc, True, {"from": admin})
    contract.setTokenAllowed(eurc, True, {"from": admin})
    return contract


@pytest.fixture
def fund(vault, admin):
    """fund(merchant, token, amount): mints, approves and deposits into the merchant's escrow."""

    def _fund(who, token, amount):
        token.mint(who, amount, {"from": admin})
        token.approve(vault, amount, {"from": who})
        return vault.deposit(token, amount, {"from": who})

    return _fund


@pytest.fixture
def post_payout(vault, settler):
    """post_payout(period, merchant, token, {payee: amount}) -> Payout, posted by the settler."""

    def _post(period_id, who, token, amounts):
        payout = Payout(period_id, str(who), str(token), {str(p): a for p, a in amounts.items()})
        payout.tx = vault.post(period_id, who, token, payout.root, payout.total, {"from": settler})
        return payout

    return _post


# ---------------------------------------------------------------------------------------------
# Relayed claims (SettlementVault.claimManyFor; docs/settlement-leaf.md, "Relayed claims")
# ---------------------------------------------------------------------------------------------

VAULT_NAME = "EdgeLedger SettlementVault"
VAULT_VERSION = "1"
CLAIM_AUTHORIZATION_FIELDS = (
    ("payee", "address"),
    ("claimsHash", "bytes32"),
    ("recipient", "address"),
    ("nonce", "uint256"),
    ("deadline", "uint256"),
)
CLAIM_AUTHORIZATION_TYPEHASH = keccak(
    text="ClaimAuthorization(" + ",".join(f"{t} {n}" for n, t in CLAIM_AUTHORIZATION_FIELDS) + ")"
)
# anvil's default accounts (brownie's development network) come from this mnemonic.
ANVIL_MNEMONIC = "test test test test test test test test test test test junk"


@functools.cache
def _dev_keys() -> dict[str, str]:
    Account.enable_unaudited_hdwallet_features()
    keys_by_address = {}
    for i in range(10):
        local = Account.from_mnemonic(ANVIL_MNEMONIC, account_path=f"m/44'/60'/0'/0/{i}")
        keys_by_address[local.address] = local.key.hex()
    return keys_by_address


def dev_key(account) -> str:
    """The private key of one of anvil's default accounts (payees sign relayed claims off-chain)."""
    address = str(_abi_value(account))
    assert address in _dev_keys(), f"{address} is not one of anvil's default accounts"
    return _dev_keys()[address]


def claims_hash(claims: Sequence[Sequence]) -> bytes:
    """keccak256 of the concatenated abi.encode(periodId, merchant, amount) of the claims, in order."""
    return keccak(
        b"".join(
            encode(["uint64", "address", "uint256"], [c[0], str(_abi_value(c[1])), c[2]]) for c in claims
        )
    )


def claim_authorization_typed_data(
    payee,
    claims: Sequence[Sequence],
    recipient,
    nonce: int,
    deadline: int,
    chain_id: int,
    verifying_contract,
    *,
    name: str = VAULT_NAME,
    version: str = VAULT_VERSION,
) -> dict:
    """The full EIP-712 ClaimAuthorization message for eth_account."""
    return {
        "types": {
            "EIP712Domain": EIP712_DOMAIN_FIELDS,
            "ClaimAuthorization": [{"name": n, "type": t} for n, t in CLAIM_AUTHORIZATION_FIELDS],
        },
        "primaryType": "ClaimAuthorization",
        "domain": {
            "name": name,
            "version": version,
            "chainId": chain_id,
            "verifyingContract": str(_abi_value(verifying_contract)),
        },
        "message": {
            "payee": str(_abi_value(payee)),
            "claimsHash": claims_hash(claims),
            "recipient": str(_abi_value(recipient)),
            "nonce": nonce,
            "deadline": deadline,
        },
    }


def sign_claim_authorization(
    key: str,
    payee,
    claims: Sequence[Sequence],
    recipient,
    nonce: int,
    deadline: int,
    vault,
    *,
    chain_id: int | None = None,
    verifying_contract=None,
    **domain,
) -> bytes:
    """The 65-byte (r ‖ s ‖ v) signature by `key` of a ClaimAuthorization for `vault` on this chain (or for
    another chain id / verifying contract / domain name or version, to test replays)."""
    full = claim_authorization_typed_data(
        payee,
        claims,
        recipient,
        nonce,
        deadline,
        web3.eth.chain_id if chain_id is None else chain_id,
        vault if verifying_contract is None else verifying_contract,
        **domain,
    )
    return bytes(Account.sign_typed_data(key, full_message=full).signature)
