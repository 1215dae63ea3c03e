"""Unit tests for contracts/DeliveryLedger.sol: every external function, role, custom error and event.

Manifests are EIP-712 typed data signed from Python with eth_account (full domain: name, version, chain id,
verifying contract); Merkle trees are built with the minimal StandardMerkleTree in conftest, checked here
against a root computed by OpenZeppelin's @openzeppelin/merkle-tree. Custom errors are asserted exactly
(name and every argument) with `brownie.reverts(ledger_error(...))`.

Gas: test_anchor_gas_* and test_verify_record_gas_* print the confirmed gas of `anchor` (leafCount 1,000
and 1,000,000) and of `verifyRecord` with a 20-deep proof to the terminal (also under `make
test-contracts`, which captures output).
"""

import brownie
import pytest
from brownie import DeliveryLedger, web3
from eth_account import Account
from eth_utils import keccak

from edgeledger.ledger.manifest import MANIFEST_TYPE

from .conftest import (
    KIND_CORRECTION,
    KIND_REGULAR,
    LEDGER_NAME,
    LEDGER_VERSION,
    MANIFEST_FIELDS,
    MANIFEST_TYPEHASH,
    PERIOD_END,
    PERIOD_START,
    RECORD_FIELDS,
    TERRITORY_COUNT,
    ZERO_ADDRESS,
    ZERO_HASH,
    MerkleTree,
    SourceKind,
    SourceStatus,
    assert_event,
    assert_same,
    custom_error,
    delivery_record,
    event_names,
    hash_pair,
    ledger_error,
    malleate,
    manifest,
    manifest_digest,
    manifest_hash,
    process_proof,
    random_hash,
    record_leaf,
    recover_address,
    sign_manifest,
    signer_account,
    territories,
)

DEFAULT_ADMIN_ROLE = b"\x00" * 32
NODE_ADMIN_ROLE = keccak(text="NODE_ADMIN_ROLE")
ANCHORER_ROLE = keccak(text="ANCHORER_ROLE")
MAX_UINT64 = 2**64 - 1
MAX_UINT128 = 2**128 - 1
GAS_GOAL = 80_000  # the anchoring gas goal for a (non-first) anchor, asserted in test_anchor_gas_*

M = {name: i for i, (name, _) in enumerate(MANIFEST_FIELDS)}  # manifest field -> tuple index
R = {name: i for i, (name, _) in enumerate(RECORD_FIELDS)}  # record field -> tuple index


def replace(values: tuple, index: int, value) -> tuple:
    return (*values[:index], value, *values[index + 1 :])


def calldata_gas(data) -> int:
    """Intrinsic calldata gas (EIP-2028): 4 per zero byte, 16 per non-zero byte."""
    raw = bytes.fromhex(str(data).removeprefix("0x"))
    return sum(16 if byte else 4 for byte in raw)


def report(capsys, line: str) -> None:
    """Prints to the terminal even though pytest captures output (gas figures belong in the test log)."""
    with capsys.disabled():
        print(f"\n[gas] {line}")


def assert_batch(ledger, batch_id, source_id, root) -> None:
    """The batch is anchored for `source_id` with exactly `root` (a different root does not match)."""
    assert ledger.isAnchored(batch_id)
    assert_same(ledger.batchSource(batch_id), source_id)
    assert ledger.isBatchRoot(batch_id, root)
    assert not ledger.isBatchRoot(batch_id, random_hash())


# ---------------------------------------------------------------------------------------------
# Error helper self-check: the ABI carries exactly the custom errors asserted here.
# ---------------------------------------------------------------------------------------------

EXPECTED_ERRORS = (
    "ZeroSourceId()",
    "SourceAlreadyRegistered(bytes32)",
    "UnknownSource(bytes32)",
    "ZeroOperator()",
    "ZeroSigner()",
    "EmptyRegions()",
    "UnknownRegion(uint256)",
    "InvalidJurisdiction(bytes2)",
    "InvalidSourceStatusTransition(bytes32,uint8,uint8)",
    "RotationNotAuthorized(bytes32,address)",
    "SignerUnchanged(bytes32,address)",
    "SourceNotActive(bytes32)",
    "ZeroBatchId()",
    "ZeroRoot()",
    "EmptyBatch()",
    "InvalidPeriod(uint64,uint64)",
    "UnknownManifestKind(uint8)",
    "UnexpectedCorrects(bytes32)",
    "WrongSigner(bytes32,address,address)",
    "BatchAlreadyAnchored(bytes32)",
    "PrevManifestMismatch(bytes32,bytes32,bytes32)",
    "UnknownBatch(bytes32)",
    "CorrectionOfOtherSource(bytes32,bytes32,bytes32)",
)
INHERITED_ERRORS = {
    "AccessControlBadConfirmation",
    "AccessControlUnauthorizedAccount",
    "ECDSAInvalidSignature",
    "ECDSAInvalidSignatureLength",
    "ECDSAInvalidSignatureS",
    "InvalidShortString",
    "SafeCastOverflowedUintDowncast",
    "StringTooLong",
}


def _abi_type(item) -> str:
    if item["type"].startswith("tuple"):
        return "(" + ",".join(_abi_type(c) for c in item["components"]) + ")" + item["type"][5:]
    return item["type"]


def test_custom_error_signatures():
    errors = {
        f"{i['name']}({','.join(_abi_type(x) for x in i['inputs'])})"
        for i in DeliveryLedger.abi
        if i["type"] == "error"
    }
    assert {e for e in errors if e.split("(")[0] not in INHERITED_ERRORS} == set(EXPECTED_ERRORS)
    assert ledger_error("ZeroRoot") == "ZeroRoot: "
    assert ledger_error("EmptyBatch") == "EmptyBatch: "
    # Same-named errors of other project contracts do not leak in: the lookup is by this ABI.
    assert ledger_error("UnknownBatch", ZERO_HASH) != custom_error("EmptyReason")


# ---------------------------------------------------------------------------------------------
# Deployment, constants, roles, EIP-712 domain
# ---------------------------------------------------------------------------------------------


def test_deployment_state(ledger, admin, node_admin, anchorer):
    assert_same(ledger.NODE_ADMIN_ROLE(), NODE_ADMIN_ROLE)
    assert_same(ledger.ANCHORER_ROLE(), ANCHORER_ROLE)
    assert_same(ledger.DEFAULT_ADMIN_ROLE(), DEFAULT_ADMIN_ROLE)
    assert ledger.TERRITORY_COUNT() == TERRITORY_COUNT
    assert ledger.KIND_REGULAR() == KIND_REGULAR
    assert ledger.KIND_CORRECTION() == KIND_CORRECTION
    assert_same(ledger.MANIFEST_TYPEHASH(), MANIFEST_TYPEHASH)
    assert MANIFEST_TYPE == (
        "Manifest(bytes32 sourceId,bytes32 batchId,uint64 periodStart,uint64 periodEnd,bytes32 root,"
        "uint64 leafCount,uint128 totalBytes,uint64 totalRequests,bytes32 prevManifestHash,uint8 kind,"
        "bytes32 corrects)"
    )
    assert ledger.sourceCount() == 0
    assert ledger.hasRole(DEFAULT_ADMIN_ROLE, admin)
    assert ledger.hasRole(NODE_ADMIN_ROLE, node_admin)
    assert ledger.hasRole(ANCHORER_ROLE, anchorer)
    assert not ledger.hasRole(NODE_ADMIN_ROLE, admin)
    assert not ledger.hasRole(ANCHORER_ROLE, admin)
    assert not ledger.hasRole(ANCHORER_ROLE, node_admin)
    assert not ledger.hasRole(NODE_ADMIN_ROLE, anchorer)
    for role in (DEFAULT_ADMIN_ROLE, NODE_ADMIN_ROLE, ANCHORER_ROLE):
        assert_same(ledger.getRoleAdmin(role), DEFAULT_ADMIN_ROLE)
    assert ledger.supportsInterface("0x7965db0b")  # IAccessControl
    assert ledger.supportsInterface("0x01ffc9a7")  # IERC165
    assert not ledger.supportsInterface("0xffffffff")


def test_eip712_domain(ledger):
    """ERC-5267: the domain eth_account signs with is exactly the contract's."""
    fields, name, version, chain_id, verifying_contract, salt, extensions = ledger.eip712Domain()
    assert_same(fields, b"\x0f")  # name, version, chainId, verifyingContract
    assert (name, version) == (LEDGER_NAME, LEDGER_VERSION)
    assert chain_id == web3.eth.chain_id
    assert verifying_contract == ledger.address
    assert_same(salt, ZERO_HASH)
    assert list(extensions) == []


def test_constructor_grants_admin_role_to_the_argument_not_the_deployer(admin, outsider):
    contract = DeliveryLedger.deploy(outsider, {"from": admin})
    assert contract.hasRole(DEFAULT_ADMIN_ROLE, outsider)
    assert not contract.hasRole(DEFAULT_ADMIN_ROLE, admin)
    assert event_names(contract.tx) == ["RoleGranted"]
    assert_event(contract.tx, "RoleGranted", role=DEFAULT_ADMIN_ROLE, account=outsider, sender=admin)


def test_admin_grants_and_revokes_node_admin_role(ledger, admin, outsider):
    tx = ledger.grantRole(NODE_ADMIN_ROLE, outsider, {"from": admin})
    assert_event(tx, "RoleGranted", role=NODE_ADMIN_ROLE, account=outsider, sender=admin)
    ledger.registerSource(
        random_hash(), SourceKind.EdgeNode, outsider, outsider, 1, b"FR", {"from": outsider}
    )
    assert ledger.sourceCount() == 1

    tx = ledger.revokeRole(NODE_ADMIN_ROLE, outsider, {"from": admin})
    assert_event(tx, "RoleRevoked", role=NODE_ADMIN_ROLE, account=outsider, sender=admin)
    with brownie.reverts(ledger_error("AccessControlUnauthorizedAccount", outsider, NODE_ADMIN_ROLE)):
        ledger.registerSource(
            random_hash(), SourceKind.EdgeNode, outsider, outsider, 1, b"FR", {"from": outsider}
        )


def test_admin_grants_and_revokes_anchorer_role(ledger, admin, outsider, edge_source):
    ledger.grantRole(ANCHORER_ROLE, outsider, {"from": admin})
    m = manifest(edge_source.source_id)
    ledger.anchor(m, sign_manifest(edge_source.signer, m, ledger), {"from": outsider})
    assert ledger.isAnchored(m[M["batchId"]])

    ledger.revokeRole(ANCHORER_ROLE, outsider, {"from": admin})
    m2 = manifest(edge_source.source_id, manifest_hash(m))
    with brownie.reverts(ledger_error("AccessControlUnauthorizedAccount", outsider, ANCHORER_ROLE)):
        ledger.anchor(m2, sign_manifest(edge_source.signer, m2, ledger), {"from": outsider})


@pytest.mark.parametrize("role", [NODE_ADMIN_ROLE, ANCHORER_ROLE, DEFAULT_ADMIN_ROLE])
def test_only_admin_grants_and_revokes_roles(ledger, node_admin, anchorer, node_operator, outsider, role):
    for caller in (node_admin, anchorer, node_operator):
        with brownie.reverts(ledger_error("AccessControlUnauthorizedAccount", caller, DEFAULT_ADMIN_ROLE)):
            ledger.grantRole(role, outsider, {"from": caller})
        with brownie.reverts(ledger_error("AccessControlUnauthorizedAccount", caller, DEFAULT_ADMIN_ROLE)):
            ledger.revokeRole(role, anchorer, {"from": caller})
    assert not ledger.hasRole(role, outsider)


def test_renounce_role(ledger, anchorer, outsider, edge_source):
    with brownie.reverts(ledger_error("AccessControlBadConfirmation")):
        ledger.renounceRole(ANCHORER_ROLE, outsider, {"from": anchorer})
    tx = ledger.renounceRole(ANCHORER_ROLE, anchorer, {"from": anchorer})
    assert_event(tx, "RoleRevoked", role=ANCHORER_ROLE, account=anchorer, sender=anchorer)
    m = manifest(edge_source.source_id)
    with brownie.reverts(ledger_error("AccessControlUnauthorizedAccount", anchorer, ANCHORER_ROLE)):
        ledger.anchor(m, sign_manifest(edge_source.signer, m, ledger), {"from": anchorer})


# ---------------------------------------------------------------------------------------------
# registerSource
# ---------------------------------------------------------------------------------------------


def expected_source(
    source, *, index, status=SourceStatus.Active, batch_count=0, last_hash=ZERO_HASH, signer=None
):
    """getSource's tuple: (signer, index, batchCount, kind, status, lastManifestHash, operator,
    jurisdiction, regions)."""
    return (
        signer or source.signer.address,
        index,
        batch_count,
        source.kind,
        status,
        last_hash,
        source.operator,
        source.jurisdiction,
        source.regions,
    )


def test_register_edge_node(ledger, register_source, node_admin, node_operator):
    signer = signer_account(7)
    source, tx = register_source(SourceKind.EdgeNode, node_operator, signer, territories(0, 56, 248), b"NL")
    assert event_names(tx) == ["SourceRegistered"]
    assert_event(
        tx,
        "SourceRegistered",
        sourceId=source.source_id,
        kind=SourceKind.EdgeNode,
        operator=node_operator,
        signer=signer.address,
        regions=territories(0, 56, 248),
        jurisdiction=b"NL",
        admin=node_admin,
    )
    assert_same(ledger.getSource(source.source_id), expected_source(source, index=1))
    assert ledger.getSource(source.source_id)["signer"] == signer.address
    assert ledger.sourceCount() == 1


def test_register_cdn_provider_and_indices(ledger, register_source, admin):
    first, _ = register_source(SourceKind.EdgeNode)
    cdn, tx = register_source(SourceKind.CdnProvider, admin, signer_account(2), 1, b"US")
    assert_event(
        tx,
        "SourceRegistered",
        sourceId=cdn.source_id,
        kind=SourceKind.CdnProvider,
        operator=admin,
        signer=signer_account(2).address,
        regions=1,
        jurisdiction=b"US",
        admin=tx.sender,
    )
    assert_same(ledger.getSource(cdn.source_id), expected_source(cdn, index=2))
    assert ledger.getSource(first.source_id)["index"] == 1
    assert ledger.sourceCount() == 2


def test_operator_and_signer_may_coincide_and_be_shared(ledger, register_source, node_operator):
    """One operator may run several nodes, and a node may sign with its payout key."""
    key = signer_account(9)
    a, _ = register_source(SourceKind.EdgeNode, key.address, key)
    b, _ = register_source(SourceKind.EdgeNode, key.address, key)
    assert ledger.getSource(a.source_id)["operator"] == ledger.getSource(b.source_id)["signer"]


def test_only_node_admin_registers(ledger, admin, anchorer, node_operator, outsider):
    for caller in (admin, anchorer, node_operator, outsider):
        with brownie.reverts(ledger_error("AccessControlUnauthorizedAccount", caller, NODE_ADMIN_ROLE)):
            ledger.registerSource(
                random_hash(), SourceKind.EdgeNode, caller, caller, 1, b"DE", {"from": caller}
            )


def test_register_zero_source_id(register_source):
    with brownie.reverts(ledger_error("ZeroSourceId")):
        register_source(source_id=ZERO_HASH)


def test_register_duplicate_source_id(ledger, register_source, edge_source):
    for kind in SourceKind:
        with brownie.reverts(ledger_error("SourceAlreadyRegistered", edge_source.source_id)):
            register_source(kind, source_id=edge_source.source_id)
    assert ledger.sourceCount() == 1


def test_register_zero_operator(register_source):
    with brownie.reverts(ledger_error("ZeroOperator")):
        register_source(operator=ZERO_ADDRESS)


def test_register_zero_signer(ledger, node_admin, node_operator):
    with brownie.reverts(ledger_error("ZeroSigner")):
        ledger.registerSource(
            random_hash(), SourceKind.EdgeNode, node_operator, ZERO_ADDRESS, 1, b"DE", {"from": node_admin}
        )


def test_register_empty_regions(register_source):
    with brownie.reverts(ledger_error("EmptyRegions")):
        register_source(regions=0)


def test_register_unknown_region(register_source):
    for bitmap in (1 << TERRITORY_COUNT, (1 << 255) | 1, 2**256 - 1):
        with brownie.reverts(ledger_error("UnknownRegion", bitmap)):
            register_source(regions=bitmap)


def test_register_regions_within_table(ledger, register_source):
    for bitmap in (1, 1 << (TERRITORY_COUNT - 1), (1 << TERRITORY_COUNT) - 1):
        source, _ = register_source(regions=bitmap)
        assert ledger.getSource(source.source_id)["regions"] == bitmap


def test_register_invalid_jurisdiction(register_source):
    """Two ASCII capitals: lower case, NUL, digits, non-ASCII and the neighbours of A and Z are refused."""
    for code in (b"de", b"De", b"D\x00", b"\x00\x00", b"1A", b"A1", b"@A", b"[A", b"A@", b"A[", b"\xc4A"):
        with brownie.reverts(ledger_error("InvalidJurisdiction", code)):
            register_source(jurisdiction=code)


def test_register_valid_jurisdictions(ledger, register_source):
    for code in (b"AA", b"AZ", b"ZA", b"ZZ", b"GB"):
        source, _ = register_source(jurisdiction=code)
        assert_same(ledger.getSource(source.source_id)["jurisdiction"], code)


def test_register_rejects_unknown_kind(ledger, node_admin, node_operator):
    """SourceKind is an enum: the ABI decoder rejects values outside it (a plain revert, no error data)."""
    with brownie.reverts():
        ledger.registerSource(random_hash(), 2, node_operator, node_operator, 1, b"DE", {"from": node_admin})


# ---------------------------------------------------------------------------------------------
# suspendSource / reactivateSource
# ---------------------------------------------------------------------------------------------


def test_suspend_and_reactivate(ledger, node_admin, edge_source):
    sid = edge_source.source_id
    tx = ledger.suspendSource(sid, {"from": node_admin})
    assert event_names(tx) == ["SourceStatusChanged"]
    assert_event(
        tx,
        "SourceStatusChanged",
        sourceId=sid,
        previous=SourceStatus.Active,
        current=SourceStatus.Suspended,
        admin=node_admin,
    )
    assert_same(ledger.getSource(sid), expected_source(edge_source, index=1, status=SourceStatus.Suspended))

    tx = ledger.reactivateSource(sid, {"from": node_admin})
    assert_event(
        tx,
        "SourceStatusChanged",
        sourceId=sid,
        previous=SourceStatus.Suspended,
        current=SourceStatus.Active,
        admin=node_admin,
    )
    assert_same(ledger.getSource(sid), expected_source(edge_source, index=1))


def test_invalid_status_transitions(ledger, node_admin, edge_source):
    sid = edge_source.source_id
    with brownie.reverts(
        ledger_error("InvalidSourceStatusTransition", sid, SourceStatus.Active, SourceStatus.Active)
    ):
        ledger.reactivateSource(sid, {"from": node_admin})
    ledger.suspendSource(sid, {"from": node_admin})
    with brownie.reverts(
        ledger_error("InvalidSourceStatusTransition", sid, SourceStatus.Suspended, SourceStatus.Suspended)
    ):
        ledger.suspendSource(sid, {"from": node_admin})


def test_status_changes_of_unknown_source(ledger, node_admin):
    unknown = random_hash()
    for method in (ledger.suspendSource, ledger.reactivateSource):
        with brownie.reverts(ledger_error("UnknownSource", unknown)):
            method(unknown, {"from": node_admin})


def test_only_node_admin_suspends_and_reactivates(ledger, admin, node_admin, anchorer, outsider, edge_source):
    sid = edge_source.source_id
    callers = (admin, anchorer, edge_source.operator, outsider)
    for caller in callers:
        with brownie.reverts(ledger_error("AccessControlUnauthorizedAccount", caller, NODE_ADMIN_ROLE)):
            ledger.suspendSource(sid, {"from": caller})
    ledger.suspendSource(sid, {"from": node_admin})
    for caller in callers:
        with brownie.reverts(ledger_error("AccessControlUnauthorizedAccount", caller, NODE_ADMIN_ROLE)):
            ledger.reactivateSource(sid, {"from": caller})


def test_suspended_source_cannot_anchor_and_resumes_its_chain(
    ledger, node_admin, anchorer, edge_source, anchor_next
):
    sid = edge_source.source_id
    _, first = anchor_next(edge_source)
    ledger.suspendSource(sid, {"from": node_admin})
    m = manifest(sid, manifest_hash(first))
    signature = sign_manifest(edge_source.signer, m, ledger)
    with brownie.reverts(ledger_error("SourceNotActive", sid)):
        ledger.anchor(m, signature, {"from": anchorer})
    # Anchored batches stay readable and provable while suspended.
    assert_batch(ledger, first[M["batchId"]], sid, first[M["root"]])

    ledger.reactivateSource(sid, {"from": node_admin})
    ledger.anchor(m, signature, {"from": anchorer})
    assert_same(ledger.getSource(sid)["lastManifestHash"], manifest_hash(m))
    assert ledger.getSource(sid)["batchCount"] == 2


def test_suspension_is_per_source(ledger, node_admin, edge_source, cdn_source, anchor_next):
    ledger.suspendSource(edge_source.source_id, {"from": node_admin})
    anchor_next(cdn_source)
    assert ledger.getSource(cdn_source.source_id)["batchCount"] == 1


# ---------------------------------------------------------------------------------------------
# rotateSigner
# ---------------------------------------------------------------------------------------------


def test_edge_node_operator_rotates_signer(ledger, anchorer, node_operator, edge_source, anchor_next):
    sid = edge_source.source_id
    old, new = edge_source.signer, signer_account(11)
    _, first = anchor_next(edge_source)
    tx = ledger.rotateSigner(sid, new.address, {"from": node_operator})
    assert event_names(tx) == ["SignerRotated"]
    assert_event(
        tx,
        "SignerRotated",
        sourceId=sid,
        previousSigner=old.address,
        newSigner=new.address,
        rotatedBy=node_operator,
    )
    assert ledger.getSource(sid)["signer"] == new.address

    # The rotated-out key no longer signs for the source; the chain continues under the new key.
    m = manifest(sid, manifest_hash(first))
    with brownie.reverts(ledger_error("WrongSigner", sid, new.address, old.address)):
        ledger.anchor(m, sign_manifest(old, m, ledger), {"from": anchorer})
    ledger.anchor(m, sign_manifest(new, m, ledger), {"from": anchorer})
    assert_same(ledger.getSource(sid)["lastManifestHash"], manifest_hash(m))


def test_manifest_signed_before_rotation_is_rejected_after_it(ledger, anchorer, node_operator, edge_source):
    sid = edge_source.source_id
    m = manifest(sid)
    signed_earlier = sign_manifest(edge_source.signer, m, ledger)
    new = signer_account(12)
    ledger.rotateSigner(sid, new.address, {"from": node_operator})
    with brownie.reverts(ledger_error("WrongSigner", sid, new.address, edge_source.signer.address)):
        ledger.anchor(m, signed_earlier, {"from": anchorer})
    # Rotating back re-enables the old key (rotation changes the key, it does not blacklist).
    ledger.rotateSigner(sid, edge_source.signer.address, {"from": node_operator})
    ledger.anchor(m, signed_earlier, {"from": anchorer})


def test_only_operator_rotates_edge_node_signer(ledger, node_admin, admin, anchorer, outsider, edge_source):
    """Not even NODE_ADMIN: the platform must not be able to move a node's receipts to its own key."""
    for caller in (node_admin, admin, anchorer, outsider):
        with brownie.reverts(ledger_error("RotationNotAuthorized", edge_source.source_id, caller)):
            ledger.rotateSigner(edge_source.source_id, signer_account(13).address, {"from": caller})


def test_node_admin_rotates_cdn_provider_signer(ledger, node_admin, anchorer, cdn_source):
    sid = cdn_source.source_id
    new = signer_account(14)
    tx = ledger.rotateSigner(sid, new.address, {"from": node_admin})
    assert_event(
        tx,
        "SignerRotated",
        sourceId=sid,
        previousSigner=cdn_source.signer.address,
        newSigner=new.address,
        rotatedBy=node_admin,
    )
    m = manifest(sid)
    ledger.anchor(m, sign_manifest(new, m, ledger), {"from": anchorer})


def test_only_node_admin_rotates_cdn_provider_signer(
    ledger, admin, anchorer, node_operator, outsider, cdn_source
):
    """Including the CDN source's operator (the admin account in the fixture)."""
    for caller in (admin, anchorer, node_operator, outsider):
        with brownie.reverts(ledger_error("RotationNotAuthorized", cdn_source.source_id, caller)):
            ledger.rotateSigner(cdn_source.source_id, signer_account(15).address, {"from": caller})


def test_rotate_to_zero_or_same_signer(ledger, node_operator, edge_source):
    sid = edge_source.source_id
    with brownie.reverts(ledger_error("ZeroSigner")):
        ledger.rotateSigner(sid, ZERO_ADDRESS, {"from": node_operator})
    with brownie.reverts(ledger_error("SignerUnchanged", sid, edge_source.signer.address)):
        ledger.rotateSigner(sid, edge_source.signer.address, {"from": node_operator})


def test_rotate_unknown_source(ledger, node_admin):
    unknown = random_hash()
    with brownie.reverts(ledger_error("UnknownSource", unknown)):
        ledger.rotateSigner(unknown, signer_account(16).address, {"from": node_admin})


def test_rotate_while_suspended(ledger, node_admin, anchorer, node_operator, edge_source):
    """Compromised node key: suspend, rotate, reactivate."""
    sid = edge_source.source_id
    ledger.suspendSource(sid, {"from": node_admin})
    new = signer_account(17)
    ledger.rotateSigner(sid, new.address, {"from": node_operator})
    ledger.reactivateSource(sid, {"from": node_admin})
    m = manifest(sid)
    with brownie.reverts(ledger_error("WrongSigner", sid, new.address, edge_source.signer.address)):
        ledger.anchor(m, sign_manifest(edge_source.signer, m, ledger), {"from": anchorer})
    ledger.anchor(m, sign_manifest(new, m, ledger), {"from": anchorer})


# ---------------------------------------------------------------------------------------------
# anchor: the happy path
# ---------------------------------------------------------------------------------------------


def test_anchor_first_and_second_manifest(ledger, anchorer, edge_source):
    sid = edge_source.source_id
    m1 = manifest(sid, leaf_count=1_000, total_bytes=987_654_321, total_requests=1_000)
    tx = ledger.anchor(m1, sign_manifest(edge_source.signer, m1, ledger), {"from": anchorer})
    h1 = manifest_hash(m1)
    assert event_names(tx) == ["BatchAnchored"]
    assert_event(
        tx,
        "BatchAnchored",
        sourceId=sid,
        batchId=m1[M["batchId"]],
        root=m1[M["root"]],
        periodStart=PERIOD_START,
        periodEnd=PERIOD_END,
        leafCount=1_000,
        totalBytes=987_654_321,
        totalRequests=1_000,
        manifestHash=h1,
        prevManifestHash=ZERO_HASH,
        kind=KIND_REGULAR,
        corrects=ZERO_HASH,
    )
    assert_batch(ledger, m1[M["batchId"]], sid, m1[M["root"]])
    assert ledger.isAnchored(m1[M["batchId"]])
    assert_same(ledger.getSource(sid), expected_source(edge_source, index=1, batch_count=1, last_hash=h1))

    m2 = manifest(sid, h1, period_start=PERIOD_END, period_end=PERIOD_END + 60, leaf_count=7)
    tx = ledger.anchor(m2, sign_manifest(edge_source.signer, m2, ledger), {"from": anchorer})
    h2 = manifest_hash(m2)
    assert tx.events["BatchAnchored"]["prevManifestHash"] == "0x" + h1.hex()
    assert tx.events["BatchAnchored"]["manifestHash"] == "0x" + h2.hex()
    assert_same(ledger.getSource(sid), expected_source(edge_source, index=1, batch_count=2, last_hash=h2))
    assert_batch(ledger, m2[M["batchId"]], sid, m2[M["root"]])
    event = tx.events["BatchAnchored"]
    assert (event["periodStart"], event["periodEnd"], event["leafCount"]) == (PERIOD_END, PERIOD_END + 60, 7)
    # The first batch is untouched.
    assert_batch(ledger, m1[M["batchId"]], sid, m1[M["root"]])


def test_cdn_provider_anchors_with_platform_ingest_key(ledger, cdn_source, anchor_next):
    tx, m = anchor_next(cdn_source)
    assert_same(tx.events["BatchAnchored"]["sourceId"], cdn_source.source_id)
    assert_batch(ledger, m[M["batchId"]], cdn_source.source_id, m[M["root"]])


def test_chains_are_per_source(ledger, edge_source, cdn_source, anchor_next):
    for _ in range(3):
        anchor_next(edge_source)
        anchor_next(cdn_source)
    anchor_next(edge_source)
    for source, count in ((edge_source, 4), (cdn_source, 3)):
        record = ledger.getSource(source.source_id)
        assert record["batchCount"] == count
        assert_same(record["lastManifestHash"], source.last_hash)
        for m in source.anchored:
            assert_batch(ledger, m[M["batchId"]], source.source_id, m[M["root"]])


def test_anchor_extreme_values(ledger, edge_source, anchor_next):
    tx, _ = anchor_next(
        edge_source,
        period_start=0,
        period_end=MAX_UINT64,
        leaf_count=MAX_UINT64,
        total_bytes=MAX_UINT128,
        total_requests=MAX_UINT64,
        root=b"\xff" * 32,
        batch_id=b"\xff" * 32,
    )
    event = tx.events["BatchAnchored"]
    assert (event["leafCount"], event["totalBytes"], event["totalRequests"]) == (
        MAX_UINT64,
        MAX_UINT128,
        MAX_UINT64,
    )
    assert (event["periodStart"], event["periodEnd"], event["kind"]) == (0, MAX_UINT64, KIND_REGULAR)
    assert_batch(ledger, b"\xff" * 32, edge_source.source_id, b"\xff" * 32)


def test_shortest_period_and_single_leaf(ledger, edge_source, anchor_next):
    tx, m = anchor_next(edge_source, period_start=PERIOD_START, period_end=PERIOD_START + 1, leaf_count=1)
    assert tx.events["BatchAnchored"]["leafCount"] == 1
    assert_batch(ledger, m[M["batchId"]], edge_source.source_id, m[M["root"]])


def test_totals_are_not_checked_against_leaf_count(edge_source, anchor_next):
    """Totals are informational (event only): zero bytes (e.g. only HEAD requests) is a valid batch."""
    tx, _ = anchor_next(edge_source, total_bytes=0, total_requests=0)
    assert tx.events["BatchAnchored"]["totalBytes"] == 0


# ---------------------------------------------------------------------------------------------
# anchor: corrections
# ---------------------------------------------------------------------------------------------


def test_correction_of_an_earlier_batch(ledger, edge_source, anchor_next):
    _, first = anchor_next(edge_source)
    anchor_next(edge_source)
    target = first[M["batchId"]]
    tx, fix = anchor_next(edge_source, kind=KIND_CORRECTION, corrects=target, leaf_count=999)
    event = tx.events["BatchAnchored"]
    assert event["kind"] == KIND_CORRECTION
    assert_same(event["corrects"], target)
    assert event["leafCount"] == 999
    assert_batch(ledger, fix[M["batchId"]], edge_source.source_id, fix[M["root"]])
    # A correction is a link of the chain like any other, and may itself be corrected.
    assert_same(ledger.getSource(edge_source.source_id)["lastManifestHash"], manifest_hash(fix))
    tx, _ = anchor_next(edge_source, kind=KIND_CORRECTION, corrects=fix[M["batchId"]])
    assert_same(tx.events["BatchAnchored"]["corrects"], fix[M["batchId"]])
    assert ledger.getSource(edge_source.source_id)["batchCount"] == 4


def test_correction_of_unknown_batch(ledger, anchorer, edge_source, anchor_next):
    anchor_next(edge_source)
    for target in (random_hash(), ZERO_HASH):
        m = manifest(edge_source.source_id, edge_source.last_hash, kind=KIND_CORRECTION, corrects=target)
        with brownie.reverts(ledger_error("UnknownBatch", target)):
            ledger.anchor(m, sign_manifest(edge_source.signer, m, ledger), {"from": anchorer})


def test_correction_of_another_sources_batch(ledger, anchorer, edge_source, cdn_source, anchor_next):
    _, foreign = anchor_next(cdn_source)
    target = foreign[M["batchId"]]
    m = manifest(edge_source.source_id, kind=KIND_CORRECTION, corrects=target)
    with brownie.reverts(
        ledger_error("CorrectionOfOtherSource", target, edge_source.source_id, cdn_source.source_id)
    ):
        ledger.anchor(m, sign_manifest(edge_source.signer, m, ledger), {"from": anchorer})


def test_regular_manifest_must_not_name_a_corrected_batch(ledger, anchorer, edge_source, anchor_next):
    _, first = anchor_next(edge_source)
    target = first[M["batchId"]]
    m = manifest(edge_source.source_id, edge_source.last_hash, corrects=target)
    with brownie.reverts(ledger_error("UnexpectedCorrects", target)):
        ledger.anchor(m, sign_manifest(edge_source.signer, m, ledger), {"from": anchorer})


def test_unknown_manifest_kind(ledger, anchorer, edge_source):
    for kind in (2, 7, 255):
        m = manifest(edge_source.source_id, kind=kind)
        with brownie.reverts(ledger_error("UnknownManifestKind", kind)):
            ledger.anchor(m, sign_manifest(edge_source.signer, m, ledger), {"from": anchorer})


# ---------------------------------------------------------------------------------------------
# anchor: malformed manifests, unknown or suspended sources, callers
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "overrides, error",
    [
        ({"batch_id": ZERO_HASH}, ("ZeroBatchId",)),
        ({"root": ZERO_HASH}, ("ZeroRoot",)),
        ({"leaf_count": 0}, ("EmptyBatch",)),
        ({"period_start": PERIOD_END, "period_end": PERIOD_END}, ("InvalidPeriod", PERIOD_END, PERIOD_END)),
        (
            {"period_start": PERIOD_END, "period_end": PERIOD_START},
            ("InvalidPeriod", PERIOD_END, PERIOD_START),
        ),
        ({"period_start": 1, "period_end": 0}, ("InvalidPeriod", 1, 0)),
    ],
)
def test_malformed_manifest(ledger, anchorer, edge_source, overrides, error):
    m = manifest(edge_source.source_id, **overrides)
    with brownie.reverts(ledger_error(*error)):
        ledger.anchor(m, sign_manifest(edge_source.signer, m, ledger), {"from": anchorer})


def test_anchor_for_unknown_source(ledger, anchorer):
    unknown = random_hash()
    m = manifest(unknown)
    with brownie.reverts(ledger_error("UnknownSource", unknown)):
        ledger.anchor(m, sign_manifest(signer_account(1), m, ledger), {"from": anchorer})


def test_only_anchorer_anchors_even_validly_signed_manifests(
    ledger, admin, node_admin, outsider, edge_source
):
    m = manifest(edge_source.source_id)
    signature = sign_manifest(edge_source.signer, m, ledger)
    for caller in (admin, node_admin, edge_source.operator, outsider):
        with brownie.reverts(ledger_error("AccessControlUnauthorizedAccount", caller, ANCHORER_ROLE)):
            ledger.anchor(m, signature, {"from": caller})


# ---------------------------------------------------------------------------------------------
# anchor: signatures (wrong key, tampering, cross-chain / cross-contract replay, malleability)
# ---------------------------------------------------------------------------------------------


def test_wrong_key(ledger, anchorer, edge_source, cdn_source):
    sid = edge_source.source_id
    m = manifest(sid)
    for key in (signer_account(99), cdn_source.signer, Account.create()):
        with brownie.reverts(ledger_error("WrongSigner", sid, edge_source.signer.address, key.address)):
            ledger.anchor(m, sign_manifest(key, m, ledger), {"from": anchorer})


def test_signature_of_another_sources_manifest(ledger, anchorer, edge_source, cdn_source):
    """A valid signature by the CDN's key over its own manifest does not anchor the same fields under
    the edge node's id (sourceId is signed)."""
    cdn_manifest = manifest(cdn_source.source_id)
    signature = sign_manifest(cdn_source.signer, cdn_manifest, ledger)
    moved = replace(cdn_manifest, M["sourceId"], edge_source.source_id)
    recovered = recover_address(manifest_digest(moved, web3.eth.chain_id, ledger), signature)
    with brownie.reverts(
        ledger_error("WrongSigner", edge_source.source_id, edge_source.signer.address, recovered)
    ):
        ledger.anchor(moved, signature, {"from": anchorer})


TAMPERED = {
    "batchId": lambda v: random_hash(),
    "periodStart": lambda v: v - 1,
    "periodEnd": lambda v: v + 1,
    "root": lambda v: random_hash(),
    "leafCount": lambda v: v + 1,
    "totalBytes": lambda v: v + 1,
    "totalRequests": lambda v: v - 1,
    "prevManifestHash": lambda v: random_hash(),
    "kind": lambda v: KIND_CORRECTION,
}


def test_every_signed_field_is_covered(ledger, anchorer, edge_source):
    """Changing any field after signing fails the signature check (which precedes the chain and
    correction checks), so the anchorer cannot alter what the source signed."""
    sid = edge_source.source_id
    m = manifest(sid)
    signature = sign_manifest(edge_source.signer, m, ledger)
    assert set(TAMPERED) == {name for name, _ in MANIFEST_FIELDS} - {"sourceId", "corrects"}
    for name, change in TAMPERED.items():
        tampered = replace(m, M[name], change(m[M[name]]))
        if name == "kind":  # keep it well-formed: a correction needs a target (checked after the signature)
            tampered = replace(tampered, M["corrects"], random_hash())
        recovered = recover_address(manifest_digest(tampered, web3.eth.chain_id, ledger), signature)
        assert recovered != edge_source.signer.address
        with brownie.reverts(ledger_error("WrongSigner", sid, edge_source.signer.address, recovered)):
            ledger.anchor(tampered, signature, {"from": anchorer})
    # corrects: only meaningful for corrections; tamper with a signed correction's target.
    ledger.anchor(m, signature, {"from": anchorer})  # the original still anchors
    fix = manifest(sid, manifest_hash(m), kind=KIND_CORRECTION, corrects=m[M["batchId"]])
    fix_signature = sign_manifest(edge_source.signer, fix, ledger)
    moved = replace(fix, M["corrects"], random_hash())
    recovered = recover_address(manifest_digest(moved, web3.eth.chain_id, ledger), fix_signature)
    with brownie.reverts(ledger_error("WrongSigner", sid, edge_source.signer.address, recovered)):
        ledger.anchor(moved, fix_signature, {"from": anchorer})
    ledger.anchor(fix, fix_signature, {"from": anchorer})


def test_sourceid_tampering_to_unknown_source(ledger, anchorer, edge_source):
    m = manifest(edge_source.source_id)
    signature = sign_manifest(edge_source.signer, m, ledger)
    unknown = random_hash()
    with brownie.reverts(ledger_error("UnknownSource", unknown)):
        ledger.anchor(replace(m, M["sourceId"], unknown), signature, {"from": anchorer})


def test_signature_for_another_chain_id(ledger, anchorer, edge_source):
    sid = edge_source.source_id
    m = manifest(sid)
    own = web3.eth.chain_id
    for chain_id in (1, 137, own + 1, own - 1):
        foreign = sign_manifest(edge_source.signer, m, ledger, chain_id=chain_id)
        recovered = recover_address(manifest_digest(m, own, ledger), foreign)
        with brownie.reverts(ledger_error("WrongSigner", sid, edge_source.signer.address, recovered)):
            ledger.anchor(m, foreign, {"from": anchorer})
        assert manifest_digest(m, chain_id, ledger) != manifest_digest(m, own, ledger)
    # The contract's digest is that of its own chain id; signed for it, the manifest anchors.
    assert_same(ledger.manifestDigest(m), manifest_digest(m, own, ledger))
    ledger.anchor(m, sign_manifest(edge_source.signer, m, ledger, chain_id=own), {"from": anchorer})


def test_signature_for_another_verifying_contract(ledger, admin, node_admin, anchorer, edge_source):
    """The same source (id and key) registered on two ledgers: a manifest signed for one cannot be
    replayed on the other, in either direction."""
    other = DeliveryLedger.deploy(admin, {"from": admin})
    other.grantRole(NODE_ADMIN_ROLE, node_admin, {"from": admin})
    other.grantRole(ANCHORER_ROLE, anchorer, {"from": admin})
    sid = edge_source.source_id
    other.registerSource(
        sid,
        SourceKind.EdgeNode,
        edge_source.operator,
        edge_source.signer.address,
        1,
        b"DE",
        {"from": node_admin},
    )
    m = manifest(sid)
    for target, wrong in ((ledger, other), (other, ledger)):
        signature = sign_manifest(edge_source.signer, m, target, verifying_contract=wrong)
        recovered = recover_address(manifest_digest(m, web3.eth.chain_id, target), signature)
        with brownie.reverts(ledger_error("WrongSigner", sid, edge_source.signer.address, recovered)):
            target.anchor(m, signature, {"from": anchorer})
    for target in (ledger, other):
        target.anchor(m, sign_manifest(edge_source.signer, m, target), {"from": anchorer})
        assert target.isAnchored(m[M["batchId"]])


def test_signature_for_another_domain_name_or_version(ledger, anchorer, edge_source):
    sid = edge_source.source_id
    m = manifest(sid)
    for domain in ({"name": "EdgeLedger ContentRegistry"}, {"version": "2"}, {"name": "", "version": ""}):
        signature = sign_manifest(edge_source.signer, m, ledger, **domain)
        recovered = recover_address(manifest_digest(m, web3.eth.chain_id, ledger), signature)
        with brownie.reverts(ledger_error("WrongSigner", sid, edge_source.signer.address, recovered)):
            ledger.anchor(m, signature, {"from": anchorer})


def test_malleated_high_s_signature(ledger, anchorer, edge_source):
    """(r, n - s, v ^ 1) is a second valid secp256k1 signature of the same digest by the same key;
    ecrecover accepts it, OpenZeppelin's ECDSA rejects s in the upper half."""
    m = manifest(edge_source.source_id)
    signature = sign_manifest(edge_source.signer, m, ledger)
    high_s = malleate(signature)
    assert high_s != signature
    assert (
        recover_address(manifest_digest(m, web3.eth.chain_id, ledger), high_s) == edge_source.signer.address
    )
    with brownie.reverts(ledger_error("ECDSAInvalidSignatureS", high_s[32:64])):
        ledger.anchor(m, high_s, {"from": anchorer})
    ledger.anchor(m, signature, {"from": anchorer})


def test_signature_of_wrong_length(ledger, anchorer, edge_source):
    m = manifest(edge_source.source_id)
    signature = sign_manifest(edge_source.signer, m, ledger)
    for length in (0, 64, 66, 96):
        bad = (signature + b"\x00" * 64)[:length]
        with brownie.reverts(ledger_error("ECDSAInvalidSignatureLength", length)):
            ledger.anchor(m, bad, {"from": anchorer})


def test_signature_with_invalid_v(ledger, anchorer, edge_source):
    m = manifest(edge_source.source_id)
    signature = sign_manifest(edge_source.signer, m, ledger)
    for v in (0, 1, 26, 29):
        with brownie.reverts(ledger_error("ECDSAInvalidSignature")):
            ledger.anchor(m, signature[:64] + bytes([v]), {"from": anchorer})


def test_zero_signature(ledger, anchorer, edge_source):
    m = manifest(edge_source.source_id)
    with brownie.reverts(ledger_error("ECDSAInvalidSignature")):
        ledger.anchor(m, b"\x00" * 64 + b"\x1b", {"from": anchorer})


# ---------------------------------------------------------------------------------------------
# anchor: replays, gaps, rewrites
# ---------------------------------------------------------------------------------------------


def test_replay_of_the_same_signed_manifest(ledger, anchorer, edge_source):
    m = manifest(edge_source.source_id)
    signature = sign_manifest(edge_source.signer, m, ledger)
    ledger.anchor(m, signature, {"from": anchorer})
    with brownie.reverts(ledger_error("BatchAlreadyAnchored", m[M["batchId"]])):
        ledger.anchor(m, signature, {"from": anchorer})
    assert ledger.getSource(edge_source.source_id)["batchCount"] == 1


def test_replayed_batch_id_in_a_correctly_linked_manifest(ledger, anchorer, edge_source, anchor_next):
    _, first = anchor_next(edge_source)
    reused = first[M["batchId"]]
    m = manifest(edge_source.source_id, manifest_hash(first), batch_id=reused)
    with brownie.reverts(ledger_error("BatchAlreadyAnchored", reused)):
        ledger.anchor(m, sign_manifest(edge_source.signer, m, ledger), {"from": anchorer})


def test_batch_ids_are_unique_across_sources(ledger, anchorer, edge_source, cdn_source, anchor_next):
    _, foreign = anchor_next(cdn_source)
    reused = foreign[M["batchId"]]
    m = manifest(edge_source.source_id, batch_id=reused)
    with brownie.reverts(ledger_error("BatchAlreadyAnchored", reused)):
        ledger.anchor(m, sign_manifest(edge_source.signer, m, ledger), {"from": anchorer})
    assert_batch(ledger, reused, cdn_source.source_id, foreign[M["root"]])


def test_first_manifest_must_have_zero_prev_hash(ledger, anchorer, edge_source):
    sid = edge_source.source_id
    prev = random_hash()
    m = manifest(sid, prev)
    with brownie.reverts(ledger_error("PrevManifestMismatch", sid, ZERO_HASH, prev)):
        ledger.anchor(m, sign_manifest(edge_source.signer, m, ledger), {"from": anchorer})


def test_gap_in_the_chain(ledger, anchorer, edge_source, anchor_next):
    """A manifest linking to one never anchored (a skipped batch) or to garbage is rejected."""
    sid = edge_source.source_id
    _, m1 = anchor_next(edge_source)
    h1 = manifest_hash(m1)
    skipped = manifest(sid, h1)  # signed, never anchored
    m3 = manifest(sid, manifest_hash(skipped))
    with brownie.reverts(ledger_error("PrevManifestMismatch", sid, h1, manifest_hash(skipped))):
        ledger.anchor(m3, sign_manifest(edge_source.signer, m3, ledger), {"from": anchorer})
    garbage = random_hash()
    m4 = manifest(sid, garbage)
    with brownie.reverts(ledger_error("PrevManifestMismatch", sid, h1, garbage)):
        ledger.anchor(m4, sign_manifest(edge_source.signer, m4, ledger), {"from": anchorer})
    # Anchoring the skipped batch first closes the gap.
    ledger.anchor(skipped, sign_manifest(edge_source.signer, skipped, ledger), {"from": anchorer})
    ledger.anchor(m3, sign_manifest(edge_source.signer, m3, ledger), {"from": anchorer})
    assert ledger.getSource(sid)["batchCount"] == 3


def test_rewrite_of_history(ledger, anchorer, edge_source, anchor_next):
    """A second manifest with an already used prev hash (a fork of the chain) is rejected, at any depth."""
    sid = edge_source.source_id
    _, m1 = anchor_next(edge_source)
    _, m2 = anchor_next(edge_source)
    head = manifest_hash(m2)
    for prev in (manifest_hash(m1), ZERO_HASH):
        fork = manifest(sid, prev, root=random_hash())
        with brownie.reverts(ledger_error("PrevManifestMismatch", sid, head, prev)):
            ledger.anchor(fork, sign_manifest(edge_source.signer, fork, ledger), {"from": anchorer})
    assert_same(ledger.getSource(sid)["lastManifestHash"], head)


def test_chain_link_is_the_struct_hash_not_the_digest(ledger, anchorer, edge_source, anchor_next):
    sid = edge_source.source_id
    _, m1 = anchor_next(edge_source)
    digest = manifest_digest(m1, web3.eth.chain_id, ledger)
    m2 = manifest(sid, digest)
    with brownie.reverts(ledger_error("PrevManifestMismatch", sid, manifest_hash(m1), digest)):
        ledger.anchor(m2, sign_manifest(edge_source.signer, m2, ledger), {"from": anchorer})


def test_cannot_link_to_another_sources_chain(ledger, anchorer, edge_source, cdn_source, anchor_next):
    _, foreign = anchor_next(cdn_source)
    sid = edge_source.source_id
    m = manifest(sid, manifest_hash(foreign))
    with brownie.reverts(ledger_error("PrevManifestMismatch", sid, ZERO_HASH, manifest_hash(foreign))):
        ledger.anchor(m, sign_manifest(edge_source.signer, m, ledger), {"from": anchorer})


def test_check_order(ledger, node_admin, anchorer, edge_source, anchor_next):
    """The documented order: source, status, shape, signature, batch id, chain, correction target."""
    sid = edge_source.source_id
    _, first = anchor_next(edge_source)
    used = first[M["batchId"]]
    wrong_key = signer_account(98)
    # Replayed batch id + wrong prev + wrong key: the signature is checked first.
    m = manifest(sid, random_hash(), batch_id=used)
    with brownie.reverts(ledger_error("WrongSigner", sid, edge_source.signer.address, wrong_key.address)):
        ledger.anchor(m, sign_manifest(wrong_key, m, ledger), {"from": anchorer})
    # Replayed batch id + wrong prev + unknown correction target, correctly signed: the batch id.
    m = manifest(sid, random_hash(), batch_id=used, kind=KIND_CORRECTION, corrects=random_hash())
    with brownie.reverts(ledger_error("BatchAlreadyAnchored", used)):
        ledger.anchor(m, sign_manifest(edge_source.signer, m, ledger), {"from": anchorer})
    # Wrong prev + unknown correction target: the chain.
    target = random_hash()
    m = manifest(sid, ZERO_HASH, kind=KIND_CORRECTION, corrects=target)
    with brownie.reverts(ledger_error("PrevManifestMismatch", sid, manifest_hash(first), ZERO_HASH)):
        ledger.anchor(m, sign_manifest(edge_source.signer, m, ledger), {"from": anchorer})
    # Malformed + wrong key: the shape.
    m = manifest(sid, leaf_count=0)
    with brownie.reverts(ledger_error("EmptyBatch")):
        ledger.anchor(m, sign_manifest(wrong_key, m, ledger), {"from": anchorer})
    # Suspended + malformed: the status.
    ledger.suspendSource(sid, {"from": node_admin})
    with brownie.reverts(ledger_error("SourceNotActive", sid)):
        ledger.anchor(m, sign_manifest(wrong_key, m, ledger), {"from": anchorer})


# ---------------------------------------------------------------------------------------------
# Views: getSource, batchSource, isBatchRoot, isAnchored, manifestHash, manifestDigest
# ---------------------------------------------------------------------------------------------


def test_unknown_source_and_batch_views(ledger, edge_source):
    unknown = random_hash()
    with brownie.reverts(ledger_error("UnknownSource", unknown)):
        ledger.getSource(unknown)
    with brownie.reverts(ledger_error("UnknownBatch", unknown)):
        ledger.batchSource(unknown)
    with brownie.reverts(ledger_error("UnknownBatch", unknown)):
        ledger.isBatchRoot(unknown, random_hash())
    assert not ledger.isAnchored(unknown)
    assert not ledger.isAnchored(ZERO_HASH)


def test_manifest_hash_and_digest_match_eth_account(ledger):
    for m in (
        manifest(random_hash()),
        manifest(random_hash(), random_hash(), kind=KIND_CORRECTION, corrects=random_hash()),
        manifest(ZERO_HASH, leaf_count=0, period_end=0, total_bytes=MAX_UINT128, kind=255),
    ):
        assert_same(ledger.manifestHash(m), manifest_hash(m))
        assert_same(ledger.manifestDigest(m), manifest_digest(m, web3.eth.chain_id, ledger))


# ---------------------------------------------------------------------------------------------
# Views: recordLeaf, verifyRecord, verifyLeaf
# ---------------------------------------------------------------------------------------------

# Five fixed records and the root OpenZeppelin's StandardMerkleTree.of(records, leafTypes) computes for
# them (@openzeppelin/merkle-tree 1.0.8, leaf types of docs/delivery-leaf.md), with the proof of record 0.
GOLDEN_ROOT = bytes.fromhex("45736be5508970fd9613a8458d2611150cdcea6089143ab8b2444fc014395347")
GOLDEN_LEAF_0 = bytes.fromhex("e81dcc49b165268a3faf0bd4b098b6ea0b06d9488e87d4f3b61c8aae9c91d589")
GOLDEN_PROOF_0 = [
    bytes.fromhex("d03414dedeb391c06cf5c2f796ce4a68db8e184175f7082d889b711c2a19e66d"),
    bytes.fromhex("66f4eb60955349bff30c1f4fa7a0d378118276239cb25a1ed52437333144ae56"),
]


def golden_record(i: int) -> tuple:
    return (
        keccak(text=f"src{i % 2}"),
        keccak(text=f"req{i}"),
        1_750_000_000_000 + i,
        b"FRA56-P3".ljust(16, b"\x00"),
        b"DE",
        i,
        keccak(text="media.example.com"),
        1000 * i + 7,
        200 if i % 3 else 404,
        i % 6,
        keccak(text=f"cc{i}"),
    )


def test_tree_helper_matches_openzeppelin_standard_merkle_tree(ledger):
    records = [golden_record(i) for i in range(5)]
    tree = MerkleTree.of_records(records)
    assert tree.root == GOLDEN_ROOT
    assert record_leaf(records[0]) == GOLDEN_LEAF_0
    assert tree.proof(GOLDEN_LEAF_0) == GOLDEN_PROOF_0
    assert_same(ledger.recordLeaf(records[0]), GOLDEN_LEAF_0)
    for record in records:
        leaf = record_leaf(record)
        assert process_proof(leaf, tree.proof(leaf)) == GOLDEN_ROOT
    assert hash_pair(GOLDEN_LEAF_0, GOLDEN_ROOT) == hash_pair(GOLDEN_ROOT, GOLDEN_LEAF_0)


def test_record_leaf_matches_python(ledger, edge_source):
    for record in (
        delivery_record(edge_source.source_id),
        delivery_record(ZERO_HASH, country=b"\x00\x00", assetId=0, status=0, cacheResult=0),
        delivery_record(
            random_hash(), assetId=2**256 - 1, bytesDelivered=MAX_UINT64, status=65535, cacheResult=255
        ),
    ):
        assert_same(ledger.recordLeaf(record), record_leaf(record))


@pytest.fixture
def anchored_tree(edge_source, anchor_next):
    """A 7-record batch of the edge node: (batchId, records, tree)."""
    records = [delivery_record(edge_source.source_id) for _ in range(7)]
    tree = MerkleTree.of_records(records)
    _, m = anchor_next(edge_source, root=tree.root, leaf_count=len(records))
    return m[M["batchId"]], records, tree


def test_verify_record_true_for_every_record(ledger, anchored_tree):
    batch_id, records, tree = anchored_tree
    for record in records:
        proof = tree.proof(record_leaf(record))
        assert ledger.verifyRecord(batch_id, record, proof)
        assert ledger.verifyLeaf(batch_id, record_leaf(record), proof)


ALTERED = {
    "sourceId": lambda v: random_hash(),
    "requestId": lambda v: random_hash(),
    "timestampMs": lambda v: v + 1,
    "edgeLocation": lambda v: b"FRA56-P4".ljust(16, b"\x00"),
    "country": lambda v: b"FR",
    "assetId": lambda v: v + 1,
    "merchantId": lambda v: keccak(text="other.example.com"),
    "bytesDelivered": lambda v: v - 1,
    "status": lambda v: 206,
    "cacheResult": lambda v: 2,
    "clientCommitment": lambda v: random_hash(),
}


def test_verify_record_false_for_any_altered_field(ledger, anchored_tree):
    batch_id, records, tree = anchored_tree
    assert set(ALTERED) == {name for name, _ in RECORD_FIELDS}
    for record in (records[0], records[3]):
        proof = tree.proof(record_leaf(record))
        assert ledger.verifyRecord(batch_id, record, proof)
        for name, change in ALTERED.items():
            altered = replace(record, R[name], change(record[R[name]]))
            assert altered != record
            assert not ledger.verifyRecord(batch_id, altered, proof), name
            assert not ledger.verifyLeaf(batch_id, record_leaf(altered), proof), name


def test_verify_record_false_for_wrong_proofs(ledger, anchored_tree, edge_source, anchor_next):
    batch_id, records, tree = anchored_tree
    record, other = records[0], records[1]
    proof = tree.proof(record_leaf(record))
    assert not ledger.verifyRecord(batch_id, record, tree.proof(record_leaf(other)))
    assert not ledger.verifyRecord(batch_id, record, [])
    assert not ledger.verifyRecord(batch_id, record, proof[:-1])
    assert not ledger.verifyRecord(batch_id, record, [*proof, random_hash()])
    assert not ledger.verifyRecord(batch_id, record, [random_hash(), *proof[1:]])
    # Inner nodes are not records: the root's own children do not verify as leaves.
    assert not ledger.verifyLeaf(batch_id, tree.nodes[1], [])
    # The same record and proof against another batch of the same source.
    _, m = anchor_next(edge_source)
    assert not ledger.verifyRecord(m[M["batchId"]], record, proof)


def test_verify_record_requires_the_batch_source(ledger, edge_source, cdn_source, anchor_next):
    """A batch containing a record that names another source: the leaf is in the tree (verifyLeaf true)
    but verifyRecord refuses it, so a source cannot vouch for another source's deliveries."""
    own = delivery_record(edge_source.source_id)
    foreign = delivery_record(cdn_source.source_id)
    tree = MerkleTree.of_records([own, foreign])
    _, m = anchor_next(edge_source, root=tree.root, leaf_count=2)
    batch_id = m[M["batchId"]]
    assert ledger.verifyRecord(batch_id, own, tree.proof(record_leaf(own)))
    assert ledger.verifyLeaf(batch_id, record_leaf(foreign), tree.proof(record_leaf(foreign)))
    assert not ledger.verifyRecord(batch_id, foreign, tree.proof(record_leaf(foreign)))


def test_single_record_batch(ledger, edge_source, anchor_next):
    record = delivery_record(edge_source.source_id)
    tree = MerkleTree.of_records([record])
    assert tree.root == record_leaf(record)
    assert tree.proof(tree.root) == []
    _, m = anchor_next(edge_source, root=tree.root, leaf_count=1)
    assert ledger.verifyRecord(m[M["batchId"]], record, [])


def test_verify_against_unknown_batch(ledger, edge_source):
    unknown = random_hash()
    record = delivery_record(edge_source.source_id)
    with brownie.reverts(ledger_error("UnknownBatch", unknown)):
        ledger.verifyRecord(unknown, record, [])
    with brownie.reverts(ledger_error("UnknownBatch", unknown)):
        ledger.verifyLeaf(unknown, record_leaf(record), [])


def test_verify_while_source_suspended(ledger, node_admin, anchored_tree, edge_source):
    batch_id, records, tree = anchored_tree
    ledger.suspendSource(edge_source.source_id, {"from": node_admin})
    assert ledger.verifyRecord(batch_id, records[0], tree.proof(record_leaf(records[0])))


# ---------------------------------------------------------------------------------------------
# Gas
# ---------------------------------------------------------------------------------------------


def test_anchor_gas_is_independent_of_leaf_count(ledger, edge_source, anchor_next, capsys):
    """Anchoring a 1,000-leaf and a 1,000,000-leaf batch costs the same: storage is one new slot per batch
    whatever the size. Raw gas differs only through calldata bytes (16 gas per non-zero byte vs 4 per
    zero byte of the random ids, root, signature and of leafCount itself), so the assertion compares gas
    net of intrinsic cost (21,000 + calldata) exactly, and the raw gas within a small calldata bound."""
    first_tx, _ = anchor_next(edge_source, leaf_count=1_000)
    results = {}
    for leaf_count in (1_000, 1_000_000, 1_000, 1_000_000):
        tx, _ = anchor_next(edge_source, leaf_count=leaf_count)
        assert tx.status == 1
        net = tx.gas_used - 21_000 - calldata_gas(tx.input)
        results.setdefault(leaf_count, []).append((tx.gas_used, net))
    nets = {net for runs in results.values() for _, net in runs}
    assert len(nets) == 1, results
    raws = [gas for runs in results.values() for gas, _ in runs]
    assert max(raws) - min(raws) <= 16 * 40, raws  # calldata noise only
    assert max(raws) <= GAS_GOAL, raws
    correction_tx, _ = anchor_next(
        edge_source, kind=KIND_CORRECTION, corrects=edge_source.anchored[0][M["batchId"]]
    )
    report(
        capsys,
        f"anchor: leafCount 1,000 -> {results[1_000][0][0]:,} gas, leafCount 1,000,000 -> "
        f"{results[1_000_000][0][0]:,} gas (net of 21,000 + calldata: {nets.pop():,} for both); first "
        f"anchor of a source {first_tx.gas_used:,}; correction {correction_tx.gas_used:,}; goal "
        f"{GAS_GOAL:,}: met",
    )


def test_verify_record_gas_with_20_deep_proof(ledger, edge_source, anchor_next, capsys):
    """A 2^20-leaf batch: the record's path to the root with 20 (random) sibling hashes is a valid proof
    in a tree of that size; verifyRecord's cost depends only on the proof length."""
    record = delivery_record(edge_source.source_id)
    proof = [random_hash() for _ in range(20)]
    root = process_proof(record_leaf(record), proof)
    _, m = anchor_next(edge_source, root=root, leaf_count=2**20)
    batch_id = m[M["batchId"]]
    assert ledger.verifyRecord(batch_id, record, proof)
    tx = ledger.verifyRecord.transact(batch_id, record, proof, {"from": edge_source.operator})
    assert tx.return_value is True
    leaf_tx = ledger.verifyLeaf.transact(batch_id, record_leaf(record), proof, {"from": edge_source.operator})
    assert leaf_tx.return_value is True
    call_gas = ledger.verifyRecord.estimate_gas(batch_id, record, proof)
    report(
        capsys,
        f"verifyRecord, 20-deep proof: {tx.gas_used:,} gas as a transaction "
        f"({tx.gas_used - 21_000 - calldata_gas(tx.input):,} net of intrinsic; estimate {call_gas:,}); "
        f"verifyLeaf: {leaf_tx.gas_used:,}",
    )


# ---------------------------------------------------------------------------------------------
# ABI surface and view functions as transactions (gas report)
# ---------------------------------------------------------------------------------------------

MANIFEST_TUPLE = "(bytes32,bytes32,uint64,uint64,bytes32,uint64,uint128,uint64,bytes32,uint8,bytes32)"
RECORD_TUPLE = "(bytes32,bytes32,uint64,bytes16,bytes2,uint256,bytes32,uint64,uint16,uint8,bytes32)"
MUTATING_FUNCTIONS = {
    f"anchor({MANIFEST_TUPLE},bytes)",
    "grantRole(bytes32,address)",
    "reactivateSource(bytes32)",
    "registerSource(bytes32,uint8,address,address,uint256,bytes2)",
    "renounceRole(bytes32,address)",
    "revokeRole(bytes32,address)",
    "rotateSigner(bytes32,address)",
    "suspendSource(bytes32)",
}

VIEW_CALLS = {
    "ANCHORER_ROLE": lambda ctx: (),
    "DEFAULT_ADMIN_ROLE": lambda ctx: (),
    "KIND_CORRECTION": lambda ctx: (),
    "KIND_REGULAR": lambda ctx: (),
    "MANIFEST_TYPEHASH": lambda ctx: (),
    "NODE_ADMIN_ROLE": lambda ctx: (),
    "TERRITORY_COUNT": lambda ctx: (),
    "eip712Domain": lambda ctx: (),
    "batchSource": lambda ctx: (ctx["batch"],),
    "getRoleAdmin": lambda ctx: (ANCHORER_ROLE,),
    "getSource": lambda ctx: (ctx["source"],),
    "hasRole": lambda ctx: (ANCHORER_ROLE, ctx["anchorer"]),
    "isAnchored": lambda ctx: (ctx["batch"],),
    "isBatchRoot": lambda ctx: (ctx["batch"], random_hash()),
    "manifestDigest": lambda ctx: (ctx["manifest"],),
    "manifestHash": lambda ctx: (ctx["manifest"],),
    "recordLeaf": lambda ctx: (ctx["record"],),
    "sourceCount": lambda ctx: (),
    "supportsInterface": lambda ctx: ("0x7965db0b",),
    "verifyLeaf": lambda ctx: (ctx["batch"], record_leaf(ctx["record"]), ctx["proof"]),
    "verifyRecord": lambda ctx: (ctx["batch"], ctx["record"], ctx["proof"]),
}


def test_abi_surface():
    """The external functions are exactly those these tests exercise (update the tests with the ABI)."""
    functions = {
        f"{i['name']}({','.join(_abi_type(x) for x in i['inputs'])})": i["stateMutability"]
        for i in DeliveryLedger.abi
        if i["type"] == "function"
    }
    assert {sig for sig, mutability in functions.items() if mutability not in ("view", "pure")} == (
        MUTATING_FUNCTIONS
    )
    assert {
        sig.split("(")[0] for sig, mutability in functions.items() if mutability in ("view", "pure")
    } == set(VIEW_CALLS)
    assert f"verifyRecord(bytes32,{RECORD_TUPLE},bytes32[])" in functions


def test_view_functions_as_transactions(ledger, anchorer, anchored_tree, edge_source):
    """Runs every view as a transaction (gas report) and checks it returns what eth_call returns."""
    batch_id, records, tree = anchored_tree
    ctx = {
        "batch": batch_id,
        "source": edge_source.source_id,
        "anchorer": anchorer,
        "manifest": edge_source.anchored[-1],
        "record": records[0],
        "proof": tree.proof(record_leaf(records[0])),
    }
    for name, make_args in VIEW_CALLS.items():
        method = getattr(ledger, name)
        args = make_args(ctx)
        tx = method.transact(*args, {"from": anchorer})
        assert tx.status == 1, name
        assert_same(tx.return_value, method(*args))
