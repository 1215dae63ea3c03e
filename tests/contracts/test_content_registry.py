"""Unit tests for contracts/ContentRegistry.sol: every external function, custom error and event.

Custom errors are asserted exactly (name and every argument) with `brownie.reverts(custom_error(...))`;
see conftest.custom_error.
"""

import brownie
import pytest
from brownie import ContentRegistry, chain, web3
from eth_utils import to_checksum_address

from edgeledger.ledger.registration import commitment as registration_commitment
from edgeledger.ledger.splits import split_hash

from .conftest import (
    MAX_RECIPIENTS,
    REASSIGN_DELAY,
    T0,
    T1,
    TERRITORY_COUNT,
    TOTAL_BPS,
    ZERO_ADDRESS,
    ZERO_HASH,
    Status,
    assert_event,
    assert_same,
    batch_commitment,
    catalogue_item,
    cid_text,
    custom_error,
    error_selector,
    even_split,
    event_names,
    licence,
    random_cid,
    random_hash,
    register_batch,
    register_for,
    registration,
    self_register,
    split_of,
    territories,
)

DEFAULT_ADMIN_ROLE = b"\x00" * 32
REGISTRAR_ROLE = web3.keccak(text="REGISTRAR_ROLE")
ARBITER_ROLE = web3.keccak(text="ARBITER_ROLE")
MAX_UINT64 = 2**64 - 1
MAX_UINT256 = 2**256 - 1


def addresses(count: int, start: int = 1) -> list[str]:
    """`count` distinct, non-zero, checksummed addresses (no accounts behind them)."""
    return [to_checksum_address(f"0x{0xE000 + start + i:040x}") for i in range(count)]


def status_of(registry, asset_id) -> Status:
    return Status(registry.getAsset(asset_id)["status"])


# ---------------------------------------------------------------------------------------------
# Error helper self-check: the ABI carries exactly the custom errors we assert on, with these
# signatures, so custom_error() cannot silently build a message for a different error.
# ---------------------------------------------------------------------------------------------

EXPECTED_ERRORS = (
    "ZeroContentHash()",
    "EmptyCid()",
    "InvalidCid(string)",
    "EmptyBatch()",
    "BatchTooLarge(uint256,uint256)",
    "ZeroCreator()",
    "AlreadyRegistered(bytes32,uint256)",
    "UnknownParent(uint256)",
    "NotRightsHolder(uint256,address)",
    "AssetNotActive(uint256,uint8)",
    "EmptySplit()",
    "SplitLengthMismatch(uint256,uint256)",
    "TooManyRecipients(uint256,uint256)",
    "ZeroRecipient(uint256)",
    "ZeroShare(uint256)",
    "SharesNotWhole(uint256)",
    "EmptyTerritories()",
    "UnknownTerritory(uint256)",
    "InvalidValidityWindow(uint64,uint64)",
    "RoyaltyTooHigh(uint16)",
    "InvalidStatusTransition(uint256,uint8,uint8)",
    "EmptyReason()",
    "NotCreator(address,address)",
    "AlreadyCommitted(bytes32,uint256)",
    "NoCommitment(bytes32)",
    "CommitmentTooRecent(bytes32,uint256)",
    "SignatureExpired(uint256)",
    "InvalidSignature(address)",
    "ReassignTooEarly(uint256,uint256)",
    "UnknownImportProfile(uint8)",
)
#: Errors of the OpenZeppelin building blocks (Nonces, EIP712's ShortStrings) besides ERC721/AccessControl.
INHERITED_ERRORS = {"InvalidAccountNonce", "InvalidShortString", "StringTooLong"}


def test_custom_error_signatures_and_selectors():
    for signature in EXPECTED_ERRORS:
        name = signature.split("(")[0]
        expected_selector = "0x" + web3.keccak(text=signature)[:4].hex().removeprefix("0x")
        assert error_selector(name) == expected_selector, signature
    # Every ContentRegistry error (besides the inherited OpenZeppelin ones) is listed above.
    own_errors = {
        item["name"]
        for item in ContentRegistry.abi
        if item["type"] == "error" and not item["name"].startswith(("ERC721", "AccessControl"))
    } - INHERITED_ERRORS
    assert own_errors == {signature.split("(")[0] for signature in EXPECTED_ERRORS}
    # Known selectors, independent of the ABI lookup.
    assert error_selector("AccessControlUnauthorizedAccount") == "0xe2517d3f"
    assert error_selector("ERC721NonexistentToken") == "0x7e273289"
    assert custom_error("EmptySplit") == "EmptySplit: "
    assert custom_error("ZeroShare", 3) == "ZeroShare: 3"


# ---------------------------------------------------------------------------------------------
# Deployment, constants, roles
# ---------------------------------------------------------------------------------------------


def test_deployment_state(registry, admin, registrar, arbiter):
    assert registry.name() == "EdgeLedger Content"
    assert registry.symbol() == "EDGE"
    assert registry.TOTAL_BPS() == TOTAL_BPS
    assert registry.MAX_RECIPIENTS() == MAX_RECIPIENTS
    assert registry.TERRITORY_COUNT() == TERRITORY_COUNT
    # (brownie's HexString does not compare equal to raw bytes: compare normalised values)
    assert_same(registry.REGISTRAR_ROLE(), REGISTRAR_ROLE)
    assert_same(registry.ARBITER_ROLE(), ARBITER_ROLE)
    assert_same(registry.DEFAULT_ADMIN_ROLE(), DEFAULT_ADMIN_ROLE)
    assert registry.totalAssets() == 0
    assert registry.hasRole(DEFAULT_ADMIN_ROLE, admin)
    assert registry.hasRole(REGISTRAR_ROLE, registrar)
    assert registry.hasRole(ARBITER_ROLE, arbiter)
    assert not registry.hasRole(REGISTRAR_ROLE, admin)
    assert not registry.hasRole(ARBITER_ROLE, admin)
    assert not registry.hasRole(ARBITER_ROLE, registrar)
    for role in (DEFAULT_ADMIN_ROLE, REGISTRAR_ROLE, ARBITER_ROLE):
        assert_same(registry.getRoleAdmin(role), DEFAULT_ADMIN_ROLE)


def test_constructor_grants_admin_role_to_the_argument_not_the_deployer(admin, other):
    contract = ContentRegistry.deploy(other, 7 * 86_400, {"from": admin})
    assert contract.REASSIGN_DELAY() == 7 * 86_400
    assert contract.hasRole(DEFAULT_ADMIN_ROLE, other)
    assert not contract.hasRole(DEFAULT_ADMIN_ROLE, admin)
    assert event_names(contract.tx) == ["RoleGranted"]
    assert_event(contract.tx, "RoleGranted", role=DEFAULT_ADMIN_ROLE, account=other, sender=admin)


def test_admin_grants_and_revokes_registrar_role(registry, admin, creator, other):
    tx = registry.grantRole(REGISTRAR_ROLE, other, {"from": admin})
    assert_event(tx, "RoleGranted", role=REGISTRAR_ROLE, account=other, sender=admin)
    assert registry.hasRole(REGISTRAR_ROLE, other)
    tx = register_for(registry, registration(creator), other)
    assert registry.ownerOf(tx.return_value) == creator

    tx = registry.revokeRole(REGISTRAR_ROLE, other, {"from": admin})
    assert_event(tx, "RoleRevoked", role=REGISTRAR_ROLE, account=other, sender=admin)
    assert not registry.hasRole(REGISTRAR_ROLE, other)
    with brownie.reverts(custom_error("AccessControlUnauthorizedAccount", other, REGISTRAR_ROLE)):
        register_for(registry, registration(creator), other)


@pytest.mark.parametrize("role", [REGISTRAR_ROLE, ARBITER_ROLE, DEFAULT_ADMIN_ROLE])
def test_only_admin_grants_and_revokes_roles(registry, registrar, arbiter, other, role):
    for caller in (registrar, arbiter, other):
        with brownie.reverts(custom_error("AccessControlUnauthorizedAccount", caller, DEFAULT_ADMIN_ROLE)):
            registry.grantRole(role, other, {"from": caller})
        with brownie.reverts(custom_error("AccessControlUnauthorizedAccount", caller, DEFAULT_ADMIN_ROLE)):
            registry.revokeRole(role, arbiter, {"from": caller})
    assert not registry.hasRole(role, other)


def test_renounce_role(registry, arbiter, other, asset):
    asset_id, _ = asset
    with brownie.reverts(custom_error("AccessControlBadConfirmation")):
        registry.renounceRole(ARBITER_ROLE, other, {"from": arbiter})
    tx = registry.renounceRole(ARBITER_ROLE, arbiter, {"from": arbiter})
    assert_event(tx, "RoleRevoked", role=ARBITER_ROLE, account=arbiter, sender=arbiter)
    assert not registry.hasRole(ARBITER_ROLE, arbiter)
    with brownie.reverts(custom_error("AccessControlUnauthorizedAccount", arbiter, ARBITER_ROLE)):
        registry.markDisputed(asset_id, random_cid(), {"from": arbiter})


# ---------------------------------------------------------------------------------------------
# registerAsset
# ---------------------------------------------------------------------------------------------


def test_self_registration(registry, creator):
    lic = licence(territories(3, 200), T0, T1, 750, random_cid())
    reg = registration(creator, aigc=True, licence_tuple=lic)
    tx = self_register(registry, reg, creator)

    assert tx.return_value == 1
    assert event_names(tx) == ["AssetRegistered", "LicenceUpdated", "SplitUpdated", "Transfer"]
    assert all(item.address == registry.address for item in tx.events)
    assert_event(
        tx,
        "AssetRegistered",
        assetId=1,
        contentHash=reg[0],
        creator=creator,
        registrar=creator,
        parentId=0,
        aigc=True,
        contentCid=reg[1],
        metadataCid=reg[2],
    )
    assert_event(
        tx,
        "LicenceUpdated",
        assetId=1,
        territories=lic[0],
        validFrom=lic[1],
        validUntil=lic[2],
        royaltyBps=lic[3],
        termsCid=lic[4],
    )
    assert_event(tx, "SplitUpdated", assetId=1, recipients=reg[7], shares=reg[8])
    assert_event(tx, "Transfer", **{"from": ZERO_ADDRESS, "to": creator, "tokenId": 1})

    record = registry.getAsset(1).dict()
    assert_same(
        record,
        {
            "contentHash": reg[0],
            "creator": creator,
            "registeredAt": tx.timestamp,
            "status": Status.Active,
            "aigc": True,
            "registeredBlock": tx.block_number,
            "parentId": 0,
            "contentCid": reg[1],
            "metadataCid": reg[2],
            "statusReasonCid": "",
        },
    )
    assert_same(registry.getLicence(1), lic)
    assert_same(split_of(registry, 1), (reg[7], reg[8]))
    assert registry.assetIdOf(reg[0]) == 1
    assert registry.totalAssets() == 1
    assert registry.ownerOf(1) == creator
    assert registry.rightsHolder(1) == creator
    assert registry.balanceOf(creator) == 1
    assert registry.isAccruing(1)


def test_asset_ids_are_sequential_from_one(registry, register, creator, other):
    ids = [register(account)[0] for account in (creator, other, creator)]
    assert ids == [1, 2, 3]
    assert registry.totalAssets() == 3
    assert registry.balanceOf(creator) == 2
    assert registry.balanceOf(other) == 1


def test_unregistered_hash_maps_to_zero(registry, asset):
    assert registry.assetIdOf(random_hash()) == 0
    assert registry.assetIdOf(ZERO_HASH) == 0


def test_registrar_registers_for_creator(registry, registrar, creator):
    reg = registration(creator)
    tx = register_for(registry, reg, registrar)
    asset_id = tx.return_value
    assert_event(
        tx,
        "AssetRegistered",
        assetId=asset_id,
        contentHash=reg[0],
        creator=creator,
        registrar=registrar,
        parentId=0,
        aigc=False,
        contentCid=reg[1],
        metadataCid=reg[2],
    )
    assert_event(tx, "Transfer", **{"from": ZERO_ADDRESS, "to": creator, "tokenId": asset_id})
    assert registry.ownerOf(asset_id) == creator
    assert registry.balanceOf(registrar) == 0
    assert registry.getAsset(asset_id)["creator"] == creator


def test_registrar_may_register_for_a_contract_wallet_without_erc721_receiver(registry, registrar, creator):
    # A smart-contract wallet signs by ERC-1271 and has no onERC721Received: plain _mint must still succeed.
    from brownie import TestClaimWallet

    wallet = TestClaimWallet.deploy(creator, {"from": creator})
    tx = register_for(registry, registration(wallet.address), registrar, signer=creator)
    assert registry.ownerOf(tx.return_value) == wallet.address
    # Anyone else's signature is not the wallet's.
    with brownie.reverts(custom_error("InvalidSignature", wallet.address)):
        register_for(registry, registration(wallet.address), registrar, signer=registrar)


@pytest.mark.parametrize("sender_name", ["other", "admin", "arbiter"])
def test_non_registrar_cannot_register_for_someone_else(registry, creator, request, sender_name):
    sender = request.getfixturevalue(sender_name)
    with brownie.reverts(custom_error("NotCreator", sender, creator)):
        self_register(registry, registration(creator), sender)
    # Even with the creator's own signature, only the registrar submits registerFor.
    with brownie.reverts(custom_error("AccessControlUnauthorizedAccount", sender, REGISTRAR_ROLE)):
        register_for(registry, registration(creator), sender)
    assert registry.totalAssets() == 0


@pytest.mark.parametrize("sender_name", ["creator", "registrar"])
def test_zero_creator(registry, request, sender_name):
    sender = request.getfixturevalue(sender_name)
    reg = registration(ZERO_ADDRESS, recipients=[sender])
    with brownie.reverts(
        custom_error(
            "ZeroCreator" if sender_name == "registrar" else "NotCreator",
            *([] if sender_name == "registrar" else [sender, ZERO_ADDRESS]),
        )
    ):
        if sender_name == "registrar":
            registry.registerFor(reg, chain.time() + 60, b"\x00" * 65, {"from": sender})
        else:
            self_register(registry, reg, sender)


def test_duplicate_hash_reverts_with_existing_id(registry, register, registrar, creator, other):
    register(creator)
    first_id, _, reg = register(other)
    # Same bytes, different creator, CIDs and sender: the first registrant wins.
    duplicate = registration(creator, content_hash=reg[0])
    with brownie.reverts(custom_error("AlreadyRegistered", reg[0], first_id)):
        self_register(registry, duplicate, creator)
    with brownie.reverts(custom_error("AlreadyRegistered", reg[0], first_id)):
        register_for(registry, duplicate, registrar)
    # Even the original registrant cannot register it again.
    with brownie.reverts(custom_error("AlreadyRegistered", reg[0], first_id)):
        self_register(registry, registration(other, content_hash=reg[0]), other)
    assert registry.totalAssets() == 2
    assert registry.assetIdOf(reg[0]) == first_id


def test_zero_content_hash(registry, creator):
    with brownie.reverts(custom_error("ZeroContentHash")):
        self_register(registry, registration(creator, content_hash=ZERO_HASH), creator)


@pytest.mark.parametrize("field", ["content_cid", "metadata_cid"])
def test_empty_cid(registry, creator, field):
    with brownie.reverts(custom_error("EmptyCid")):
        self_register(registry, registration(creator, **{field: ""}), creator)


def test_cids_read_back_exactly_as_registered(registry, creator):
    """CIDs are stored as (codec, digest) and their text rebuilt when read: raw and dag-pb, every
    digest byte value at both ends, read back character for character by getAsset, getLicence and
    tokenURI."""
    digests = [b"\x00" * 31 + b"\x01", b"\xff" * 32, bytes(range(32)), bytes(range(224, 256))]
    for digest in digests:
        content, metadata = cid_text(0x55, digest), cid_text(0x70, digest[::-1])
        terms = cid_text(0x70, digest)
        reg = registration(
            creator, content_cid=content, metadata_cid=metadata, licence_tuple=licence(terms_cid=terms)
        )
        tx = self_register(registry, reg, creator)
        asset_id = tx.return_value
        record = registry.getAsset(asset_id)
        assert (record["contentCid"], record["metadataCid"]) == (content, metadata)
        assert registry.getLicence(asset_id)["termsCid"] == terms
        assert registry.tokenURI(asset_id) == "ipfs://" + metadata
        event = tx.events["AssetRegistered"]
        assert (event["contentCid"], event["metadataCid"]) == (content, metadata)


@pytest.mark.parametrize(
    "cid",
    [
        "QmYwAPJzv5CZsnA625s3Xf2nemtYgPpHdWEz79ojWnPbdG",  # CIDv0
        "zb2rhe5P4gXftAwvA4eXQ5HJwsER2owDyS9sKaQRRVQPn93bA",  # base58btc
        "BAFKREI" + "A" * 52,  # upper case
        "b" + "a" * 58,  # version 0 byte, not CIDv1
        # the last character's two padding bits set: the same bytes, but not the canonical spelling
        cid_text(0x55, b"\x00" * 32)[:-1] + "b",
        "bafkrei" + "a" * 51 + "1",  # '1' is not base32
        "bafkrei" + "a" * 51,  # one character short
        "bafkrei" + "a" * 53,  # one character long
        "bafyreie" + "a" * 51,  # dag-cbor (0x71)
    ],
)
def test_registry_refuses_cids_it_cannot_store(registry, creator, cid):
    """Only canonical CIDv1 base32 sha2-256 raw / dag-pb CIDs are stored: anything else would not read
    back as the registered text."""
    for field in ("content_cid", "metadata_cid"):
        with brownie.reverts(custom_error("InvalidCid", cid)):
            self_register(registry, registration(creator, **{field: cid}), creator)
    with brownie.reverts(custom_error("InvalidCid", cid)):
        self_register(registry, registration(creator, licence_tuple=licence(terms_cid=cid)), creator)


def test_the_import_profile_is_recorded_and_only_known_ones_are(registry, registrar, creator):
    """Each registration records the IPFS import profile its CIDs were cut with (0 legacy-cidv1, 1
    unixfs-v1-2025), in every path: read back by importProfileOf, and announced by ImportProfileRecorded
    right after AssetRegistered when it is not 0; a code past the table (IMPORT_PROFILE_COUNT) is refused
    by the reveal, the registrar's path and a catalogue alike."""
    assert registry.IMPORT_PROFILE_COUNT() == 2
    for profile in (0, 1):
        for tx in (
            self_register(registry, registration(creator, import_profile=profile), creator),
            register_for(registry, registration(creator, import_profile=profile), registrar),
        ):
            asset_id = tx.return_value
            assert registry.importProfileOf(asset_id) == profile
            names = event_names(tx)
            if profile == 0:
                assert "ImportProfileRecorded" not in names
            else:
                assert names[names.index("AssetRegistered") + 1] == "ImportProfileRecorded"
                assert_event(tx, "ImportProfileRecorded", assetId=asset_id, importProfile=profile)
    items = [catalogue_item(import_profile=1), catalogue_item(import_profile=0)]
    tx = register_batch(registry, items, creator)
    first_id = tx.return_value
    assert [registry.importProfileOf(first_id + i) for i in (0, 1)] == [1, 0]
    assert event_names(tx)[:3] == ["AssetRegistered", "ImportProfileRecorded", "AssetRegistered"]
    with brownie.reverts(custom_error("ERC721NonexistentToken", first_id + 2)):
        registry.importProfileOf(first_id + 2)
    for unknown in (2, 255):
        with brownie.reverts(custom_error("UnknownImportProfile", unknown)):
            self_register(registry, registration(creator, import_profile=unknown), creator)
        with brownie.reverts(custom_error("UnknownImportProfile", unknown)):
            register_for(registry, registration(creator, import_profile=unknown), registrar)
        with brownie.reverts(custom_error("UnknownImportProfile", unknown)):
            register_batch(registry, [catalogue_item(), catalogue_item(import_profile=unknown)], creator)


def test_split_storage_is_flat_in_its_size(registry, creator):
    """The split is one committed word: a 50-recipient registration stores no more than a 1-recipient
    one (the difference is calldata and the event, about 1,900 gas per recipient)."""
    one = self_register(registry, registration(creator), creator)
    fifty = registration(creator, recipients=addresses(50), shares=[200] * 50)
    many = self_register(registry, fifty, creator)
    assert_same(split_of(registry, many.return_value), (addresses(50), [200] * 50))
    assert_same(registry.splitHashOf(many.return_value), split_hash(addresses(50), [200] * 50))
    per_recipient = (many.gas_used - one.gas_used) / 49
    print(
        f"[gas] registerAsset 1 recipient {one.gas_used:,}, 50 recipients {many.gas_used:,}"
        " (an ERC721A mint: about 73,000)"
    )
    assert per_recipient < 2_500, per_recipient


def test_unknown_parent(registry, register, creator):
    with brownie.reverts(custom_error("UnknownParent", 1)):
        self_register(registry, registration(creator, parent_id=1), creator)
    register(creator)
    # The id the new asset itself would get is not a valid parent either.
    with brownie.reverts(custom_error("UnknownParent", 2)):
        self_register(registry, registration(creator, parent_id=2), creator)
    with brownie.reverts(custom_error("UnknownParent", MAX_UINT256)):
        self_register(registry, registration(creator, parent_id=MAX_UINT256), creator)


def test_derivative_links_to_parent(registry, register, registrar, arbiter, creator, other):
    parent_id, _, _ = register(creator)
    child_id, tx, _ = register(other, parent_id=parent_id, aigc=True)
    assert tx.events["AssetRegistered"]["parentId"] == parent_id
    assert tx.events["AssetRegistered"]["aigc"] is True
    assert registry.getAsset(child_id)["parentId"] == parent_id
    assert registry.getAsset(child_id)["aigc"] is True
    assert registry.getAsset(parent_id)["parentId"] == 0

    # Chains of derivatives, registered through the registrar.
    grandchild_id, _, _ = register(creator, sender=registrar, parent_id=child_id)
    assert registry.getAsset(grandchild_id)["parentId"] == child_id

    # Provenance is recorded whatever the parent's status: a taken-down work can still have derivatives.
    registry.takeDown(parent_id, random_cid(), {"from": arbiter})
    sibling_id, _, _ = register(other, parent_id=parent_id)
    assert registry.getAsset(sibling_id)["parentId"] == parent_id


# ---------------------------------------------------------------------------------------------
# Split validation (at registration and in updateSplit)
# ---------------------------------------------------------------------------------------------


@pytest.fixture(params=["register", "update"])
def submit_split(request, registry, creator):
    """submit_split(recipients, shares): registers with, or updates an asset to, this split."""
    if request.param == "register":

        def _submit(recipients, shares):
            return self_register(
                registry, registration(creator, recipients=recipients, shares=shares), creator
            )

    else:
        asset_id = self_register(registry, registration(creator), creator).return_value

        def _submit(recipients, shares):
            return registry.updateSplit(asset_id, recipients, shares, {"from": creator})

    return _submit


def test_split_empty(submit_split):
    with brownie.reverts(custom_error("EmptySplit")):
        submit_split([], [])


def test_split_length_mismatch(submit_split):
    a, b, c = addresses(3)
    with brownie.reverts(custom_error("SplitLengthMismatch", 2, 1)):
        submit_split([a, b], [TOTAL_BPS])
    with brownie.reverts(custom_error("SplitLengthMismatch", 1, 2)):
        submit_split([a], [5_000, 5_000])
    with brownie.reverts(custom_error("SplitLengthMismatch", 3, 0)):
        submit_split([a, b, c], [])
    with brownie.reverts(custom_error("SplitLengthMismatch", 51, 50)):
        submit_split(addresses(51), [200] * 50)


def test_split_too_many_recipients(submit_split):
    recipients, shares = even_split(addresses(MAX_RECIPIENTS + 1))
    assert sum(shares) == TOTAL_BPS
    with brownie.reverts(custom_error("TooManyRecipients", MAX_RECIPIENTS + 1, MAX_RECIPIENTS)):
        submit_split(recipients, shares)


def test_split_exactly_max_recipients(registry, submit_split):
    recipients, shares = even_split(addresses(MAX_RECIPIENTS))
    tx = submit_split(recipients, shares)
    asset_id = tx.events["SplitUpdated"]["assetId"]
    assert_event(tx, "SplitUpdated", assetId=asset_id, recipients=recipients, shares=shares)
    assert_same(split_of(registry, asset_id), (recipients, shares))


def test_split_single_recipient(registry, submit_split):
    (a,) = addresses(1)
    tx = submit_split([a], [TOTAL_BPS])
    assert_same(split_of(registry, tx.events["SplitUpdated"]["assetId"]), ([a], [TOTAL_BPS]))


def test_split_zero_recipient(submit_split):
    a, b = addresses(2)
    with brownie.reverts(custom_error("ZeroRecipient", 0)):
        submit_split([ZERO_ADDRESS, a], [5_000, 5_000])
    with brownie.reverts(custom_error("ZeroRecipient", 2)):
        submit_split([a, b, ZERO_ADDRESS], [4_000, 4_000, 2_000])


def test_split_zero_share(submit_split):
    a, b, c = addresses(3)
    with brownie.reverts(custom_error("ZeroShare", 0)):
        submit_split([a, b], [0, TOTAL_BPS])
    with brownie.reverts(custom_error("ZeroShare", 2)):
        submit_split([a, b, c], [5_000, 5_000, 0])


@pytest.mark.parametrize(
    "shares",
    [[5_000, 4_999], [5_000, 5_001], [1, 1], [65_535, 65_535], [9_999]],
)
def test_split_shares_not_whole(submit_split, shares):
    with brownie.reverts(custom_error("SharesNotWhole", sum(shares))):
        submit_split(addresses(len(shares)), shares)


# ---------------------------------------------------------------------------------------------
# Licence validation (at registration and in updateLicence)
# ---------------------------------------------------------------------------------------------


@pytest.fixture(params=["register", "update"])
def submit_licence(request, registry, creator):
    """submit_licence(licence tuple): registers with, or updates an asset to, this licence."""
    if request.param == "register":

        def _submit(lic):
            return self_register(registry, registration(creator, licence_tuple=lic), creator)

    else:
        asset_id = self_register(registry, registration(creator), creator).return_value

        def _submit(lic):
            return registry.updateLicence(asset_id, lic, {"from": creator})

    return _submit


def test_licence_empty_territories(submit_licence):
    with brownie.reverts(custom_error("EmptyTerritories")):
        submit_licence(licence(0))


@pytest.mark.parametrize(
    "bitmap",
    [territories(249), territories(0, 249), territories(255), MAX_UINT256, territories(248, 250)],
    ids=["bit249", "bits0+249", "bit255", "all256bits", "bits248+250"],
)
def test_licence_unknown_territory(submit_licence, bitmap):
    with brownie.reverts(custom_error("UnknownTerritory", bitmap)):
        submit_licence(licence(bitmap))


@pytest.mark.parametrize(
    "bitmap", [territories(0), territories(248), (1 << TERRITORY_COUNT) - 1], ids=["bit0", "bit248", "all249"]
)
def test_licence_territories_within_table(registry, submit_licence, bitmap):
    tx = submit_licence(licence(bitmap))
    assert registry.getLicence(tx.events["LicenceUpdated"]["assetId"])["territories"] == bitmap


@pytest.mark.parametrize(("valid_from", "valid_until"), [(T0, T0), (T0, T0 - 1), (2, 1), (MAX_UINT64, 1)])
def test_licence_invalid_validity_window(submit_licence, valid_from, valid_until):
    with brownie.reverts(custom_error("InvalidValidityWindow", valid_from, valid_until)):
        submit_licence(licence(valid_from=valid_from, valid_until=valid_until))


@pytest.mark.parametrize(
    ("valid_from", "valid_until"), [(0, 0), (T0, 0), (T0, T0 + 1), (0, 1), (MAX_UINT64, 0), (T0, MAX_UINT64)]
)
def test_licence_valid_windows(registry, submit_licence, valid_from, valid_until):
    tx = submit_licence(licence(valid_from=valid_from, valid_until=valid_until))
    stored = registry.getLicence(tx.events["LicenceUpdated"]["assetId"])
    assert (stored["validFrom"], stored["validUntil"]) == (valid_from, valid_until)


@pytest.mark.parametrize("royalty_bps", [TOTAL_BPS + 1, 65_535])
def test_licence_royalty_too_high(submit_licence, royalty_bps):
    with brownie.reverts(custom_error("RoyaltyTooHigh", royalty_bps)):
        submit_licence(licence(royalty_bps=royalty_bps))


@pytest.mark.parametrize("royalty_bps", [0, 1, TOTAL_BPS])
def test_licence_royalty_bounds(registry, submit_licence, royalty_bps):
    tx = submit_licence(licence(royalty_bps=royalty_bps))
    assert registry.getLicence(tx.events["LicenceUpdated"]["assetId"])["royaltyBps"] == royalty_bps


# ---------------------------------------------------------------------------------------------
# updateLicence / updateSplit: rights holder only, active only
# ---------------------------------------------------------------------------------------------


def test_update_licence_by_owner(registry, creator, asset):
    asset_id, _ = asset
    new = licence(territories(1, 2, 3), T0, T1, 1_234, random_cid())
    tx = registry.updateLicence(asset_id, new, {"from": creator})
    assert event_names(tx) == ["LicenceUpdated"]
    assert_event(
        tx,
        "LicenceUpdated",
        assetId=asset_id,
        territories=new[0],
        validFrom=new[1],
        validUntil=new[2],
        royaltyBps=new[3],
        termsCid=new[4],
    )
    assert_same(registry.getLicence(asset_id), new)


def test_update_licence_with_empty_terms_cid(registry, creator, asset):
    # A licence may name no terms CID: "" is kept as "no terms", and a later CID replaces it.
    asset_id, _ = asset
    new = licence(territories(7), terms_cid="")
    registry.updateLicence(asset_id, new, {"from": creator})
    assert registry.getLicence(asset_id)["termsCid"] == ""
    terms = random_cid(0x70)
    registry.updateLicence(asset_id, licence(territories(7), terms_cid=terms), {"from": creator})
    assert registry.getLicence(asset_id)["termsCid"] == terms


def test_update_split_by_owner_replaces_whole_split(registry, creator, asset):
    asset_id, _ = asset
    recipients, shares = even_split(addresses(7))
    tx = registry.updateSplit(asset_id, recipients, shares, {"from": creator})
    assert event_names(tx) == ["SplitUpdated"]
    assert_event(tx, "SplitUpdated", assetId=asset_id, recipients=recipients, shares=shares)
    assert_same(split_of(registry, asset_id), (recipients, shares))

    # Shrinking leaves no stale entries behind.
    tx = registry.updateSplit(asset_id, [creator], [TOTAL_BPS], {"from": creator})
    assert_event(tx, "SplitUpdated", assetId=asset_id, recipients=[creator], shares=[TOTAL_BPS])
    assert_same(split_of(registry, asset_id), ([creator], [TOTAL_BPS]))


def test_split_blocks_name_the_block_of_each_split_event(registry, creator, other):
    """splitBlocks names the block of the SplitUpdated event that holds each asset's split: the
    registration's, a catalogue's shared one until an asset sets its own (a licence change copies the
    terms, not the split), the latest update's, a transfer's reset. 0 for an unknown id."""
    tx = register_batch(registry, [catalogue_item(), catalogue_item(), catalogue_item()], creator)
    first = tx.events["BatchRegistered"]["firstId"]
    ids = [first, first + 1, first + 2]
    assert list(registry.splitBlocks(ids)) == [tx.block_number] * 3
    chain.mine(5)
    registry.updateLicence(first + 1, licence(territories(9)), {"from": creator})
    assert list(registry.splitBlocks(ids)) == [tx.block_number] * 3
    moved = registry.updateSplit(first + 2, [other], [TOTAL_BPS], {"from": creator})
    assert list(registry.splitBlocks(ids)) == [tx.block_number] * 2 + [moved.block_number]
    sold = registry.transferFrom(creator, other, first, {"from": creator})
    assert list(registry.splitBlocks(ids)) == [sold.block_number, tx.block_number, moved.block_number]
    assert list(registry.splitBlocks([first + 3, 0])) == [0, 0]
    # What each block holds is the asset's split (split_of finds it there alone).
    assert_same(split_of(registry, first), ([other], [TOTAL_BPS]))
    assert_same(split_of(registry, first + 1), ([creator], [TOTAL_BPS]))
    assert_same(split_of(registry, first + 2), ([other], [TOTAL_BPS]))


def test_split_commits_cost_what_their_estimate_at_the_previous_block_says(registry, creator, other):
    """A gas estimate made at the block of an asset's previous split commit (a wallet estimating right
    after it) sees splitBlock unchanged; the transaction lands a block later. Every commit rewrites its
    word anyway (splitCommits), so the estimate is the cost: sent with exactly the estimate, each commit
    lands (without the counter, each would run out of gas by about 2,800)."""
    tx = register_batch(registry, [catalogue_item(), catalogue_item()], creator)
    first = tx.events["BatchRegistered"]["firstId"]
    for _ in range(2):
        fn = registry.updateSplit
        args = (first, [creator, other], [5_000, 5_000])
        sent = fn(*args, {"from": creator, "gas_limit": fn.estimate_gas(*args, {"from": creator})})
        assert sent.status == 1
    owner = creator
    for buyer in (other, creator, other):
        fn = registry.transferFrom
        args = (owner, buyer, first)
        sent = fn(*args, {"from": owner, "gas_limit": fn.estimate_gas(*args, {"from": owner})})
        assert sent.status == 1 and registry.ownerOf(first) == buyer
        owner = buyer
    assert list(registry.splitBlocks([first])) == [sent.block_number]
    assert_same(split_of(registry, first), ([other], [TOTAL_BPS]))


def test_updates_leave_other_assets_untouched(registry, register, creator):
    first_id, _, first = register(creator)
    second_id, _, _ = register(creator)
    registry.updateSplit(second_id, [creator], [TOTAL_BPS], {"from": creator})
    registry.updateLicence(second_id, licence(territories(9)), {"from": creator})
    assert_same(split_of(registry, first_id), (first[7], first[8]))
    assert_same(registry.getLicence(first_id), first[6])


@pytest.mark.parametrize("caller_name", ["other", "registrar", "arbiter", "admin"])
def test_only_rights_holder_updates(registry, request, asset, caller_name):
    caller = request.getfixturevalue(caller_name)
    asset_id, reg = asset
    with brownie.reverts(custom_error("NotRightsHolder", asset_id, caller)):
        registry.updateLicence(asset_id, licence(territories(1)), {"from": caller})
    with brownie.reverts(custom_error("NotRightsHolder", asset_id, caller)):
        registry.updateSplit(asset_id, [caller], [TOTAL_BPS], {"from": caller})
    assert_same(registry.getLicence(asset_id), reg[6])
    assert_same(split_of(registry, asset_id), (reg[7], reg[8]))


def test_approved_operators_cannot_update(registry, creator, other, third, asset):
    asset_id, _ = asset
    registry.approve(other, asset_id, {"from": creator})
    registry.setApprovalForAll(third, True, {"from": creator})
    assert registry.getApproved(asset_id) == other
    assert registry.isApprovedForAll(creator, third)
    for operator in (other, third):
        with brownie.reverts(custom_error("NotRightsHolder", asset_id, operator)):
            registry.updateSplit(asset_id, [operator], [TOTAL_BPS], {"from": operator})
        with brownie.reverts(custom_error("NotRightsHolder", asset_id, operator)):
            registry.updateLicence(asset_id, licence(), {"from": operator})


def test_updates_of_unknown_asset(registry, creator):
    with brownie.reverts(custom_error("ERC721NonexistentToken", 1)):
        registry.updateLicence(1, licence(), {"from": creator})
    with brownie.reverts(custom_error("ERC721NonexistentToken", 7)):
        registry.updateSplit(7, [creator], [TOTAL_BPS], {"from": creator})


@pytest.mark.parametrize("action", ["markDisputed", "takeDown"])
def test_updates_blocked_while_not_active(registry, arbiter, creator, other, asset, action):
    asset_id, _ = asset
    getattr(registry, action)(asset_id, random_cid(), {"from": arbiter})
    status = status_of(registry, asset_id)
    with brownie.reverts(custom_error("AssetNotActive", asset_id, status)):
        registry.updateLicence(asset_id, licence(), {"from": creator})
    with brownie.reverts(custom_error("AssetNotActive", asset_id, status)):
        registry.updateSplit(asset_id, [creator], [TOTAL_BPS], {"from": creator})
    # A non-holder is told it is not the holder first.
    with brownie.reverts(custom_error("NotRightsHolder", asset_id, other)):
        registry.updateSplit(asset_id, [other], [TOTAL_BPS], {"from": other})

    registry.clearDispute(asset_id, random_cid(), {"from": arbiter})
    registry.updateSplit(asset_id, [creator], [TOTAL_BPS], {"from": creator})
    registry.updateLicence(asset_id, licence(territories(4)), {"from": creator})
    assert_same(split_of(registry, asset_id), ([creator], [TOTAL_BPS]))
    assert registry.getLicence(asset_id)["territories"] == territories(4)


# ---------------------------------------------------------------------------------------------
# Token transfers move the rights
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("method", ["transferFrom", "safeTransferFrom3", "safeTransferFrom4"])
def test_transfer_moves_rights(registry, creator, other, asset, method):
    asset_id, _ = asset
    if method == "transferFrom":
        tx = registry.transferFrom(creator, other, asset_id, {"from": creator})
    elif method == "safeTransferFrom3":
        tx = registry.safeTransferFrom["address,address,uint256"](creator, other, asset_id, {"from": creator})
    else:
        tx = registry.safeTransferFrom["address,address,uint256,bytes"](
            creator, other, asset_id, b"edge", {"from": creator}
        )
    assert event_names(tx) == ["Transfer", "SplitUpdated"]
    assert_event(tx, "Transfer", **{"from": creator, "to": other, "tokenId": asset_id})
    # The revenue moves with the rights: the split is the new holder alone until it sets another.
    assert_event(tx, "SplitUpdated", assetId=asset_id, recipients=[other], shares=[TOTAL_BPS])
    assert_same(split_of(registry, asset_id), ([other], [TOTAL_BPS]))
    assert registry.ownerOf(asset_id) == other
    assert registry.rightsHolder(asset_id) == other
    assert registry.balanceOf(creator) == 0
    # The creator of record does not change.
    assert registry.getAsset(asset_id)["creator"] == creator

    with brownie.reverts(custom_error("NotRightsHolder", asset_id, creator)):
        registry.updateSplit(asset_id, [creator], [TOTAL_BPS], {"from": creator})
    with brownie.reverts(custom_error("NotRightsHolder", asset_id, creator)):
        registry.updateLicence(asset_id, licence(), {"from": creator})

    registry.updateSplit(asset_id, [other], [TOTAL_BPS], {"from": other})
    registry.updateLicence(asset_id, licence(territories(5)), {"from": other})
    assert_same(split_of(registry, asset_id), ([other], [TOTAL_BPS]))
    assert registry.getLicence(asset_id)["territories"] == territories(5)


def test_approved_operator_transfers_rights(registry, creator, other, third, asset):
    asset_id, _ = asset
    tx = registry.approve(other, asset_id, {"from": creator})
    assert_event(tx, "Approval", owner=creator, approved=other, tokenId=asset_id)
    tx = registry.setApprovalForAll(third, True, {"from": creator})
    assert_event(tx, "ApprovalForAll", owner=creator, operator=third, approved=True)

    registry.transferFrom(creator, third, asset_id, {"from": other})
    assert registry.rightsHolder(asset_id) == third
    assert registry.getApproved(asset_id) == ZERO_ADDRESS
    registry.updateSplit(asset_id, [third], [TOTAL_BPS], {"from": third})


def test_transfer_failures(registry, creator, other, third, asset):
    asset_id, _ = asset
    with brownie.reverts(custom_error("ERC721InsufficientApproval", other, asset_id)):
        registry.transferFrom(creator, other, asset_id, {"from": other})
    with brownie.reverts(custom_error("ERC721IncorrectOwner", other, asset_id, creator)):
        registry.transferFrom(other, third, asset_id, {"from": creator})
    with brownie.reverts(custom_error("ERC721InvalidReceiver", ZERO_ADDRESS)):
        registry.transferFrom(creator, ZERO_ADDRESS, asset_id, {"from": creator})
    with brownie.reverts(custom_error("ERC721InvalidReceiver", registry.address)):
        registry.safeTransferFrom["address,address,uint256"](
            creator, registry.address, asset_id, {"from": creator}
        )
    with brownie.reverts(custom_error("ERC721NonexistentToken", asset_id + 1)):
        registry.transferFrom(creator, other, asset_id + 1, {"from": creator})
    assert registry.ownerOf(asset_id) == creator


# ---------------------------------------------------------------------------------------------
# tokenURI, royaltyInfo, supportsInterface
# ---------------------------------------------------------------------------------------------


def test_token_uri(registry, register, creator):
    asset_id, _, reg = register(creator)
    assert registry.tokenURI(asset_id) == "ipfs://" + reg[2]
    with brownie.reverts(custom_error("ERC721NonexistentToken", asset_id + 1)):
        registry.tokenURI(asset_id + 1)


@pytest.mark.parametrize(
    ("shares", "lead"),
    [
        ([TOTAL_BPS], 0),
        ([2_000, 5_000, 3_000], 1),
        ([1_000, 2_000, 7_000], 2),
        ([4_000, 4_000, 2_000], 0),  # tie: the first wins
        ([2_000, 4_000, 4_000], 1),
        ([2_500, 2_500, 2_500, 2_500], 0),
    ],
)
def test_royalty_receiver_is_largest_share_first_on_tie(registry, register, creator, shares, lead):
    recipients = addresses(len(shares))
    asset_id, _, _ = register(creator, recipients=recipients, shares=shares)
    receiver, _ = registry.royaltyInfo(asset_id, 10**18)
    assert receiver == recipients[lead]


@pytest.mark.parametrize(
    ("royalty_bps", "price", "amount"),
    [
        (750, 10**18, 75 * 10**15),
        (0, 10**18, 0),
        (TOTAL_BPS, 12_345, 12_345),
        (333, 12_345, 411),  # 12,345 * 333 / 10,000 = 411.0885, rounded down
        (9_999, 1, 0),
        (1, 0, 0),
    ],
)
def test_royalty_amount(registry, register, creator, royalty_bps, price, amount):
    asset_id, _, _ = register(creator, licence_tuple=licence(royalty_bps=royalty_bps))
    _, royalty = registry.royaltyInfo(asset_id, price)
    assert royalty == amount == price * royalty_bps // TOTAL_BPS


def test_royalty_follows_updates(registry, register, creator):
    a, b = addresses(2)
    asset_id, _, _ = register(creator, recipients=[a, b], shares=[6_000, 4_000])
    assert_same(registry.royaltyInfo(asset_id, 10_000), (a, 500))
    registry.updateSplit(asset_id, [a, b], [3_000, 7_000], {"from": creator})
    registry.updateLicence(asset_id, licence(royalty_bps=1_000), {"from": creator})
    assert_same(registry.royaltyInfo(asset_id, 10_000), (b, 1_000))


def test_no_royalty_while_disputed_or_taken_down(registry, register, creator, arbiter):
    asset_id, _, _ = register(creator, licence_tuple=licence(royalty_bps=500))
    assert registry.royaltyInfo(asset_id, 10_000)[1] == 500
    registry.markDisputed(asset_id, random_cid(), {"from": arbiter})
    assert_same(registry.royaltyInfo(asset_id, 10_000), (creator, 0))
    registry.takeDown(asset_id, random_cid(), {"from": arbiter})
    assert_same(registry.royaltyInfo(asset_id, 10_000), (creator, 0))
    registry.clearDispute(asset_id, random_cid(), {"from": arbiter})
    assert registry.royaltyInfo(asset_id, 10_000)[1] == 500


def test_royalty_of_unknown_asset(registry):
    with brownie.reverts(custom_error("ERC721NonexistentToken", 1)):
        registry.royaltyInfo(1, 100)


@pytest.mark.parametrize(
    ("interface_id", "supported"),
    [
        ("0x80ac58cd", True),  # ERC-721
        ("0x5b5e139f", True),  # ERC-721 metadata
        ("0x2a55205a", True),  # ERC-2981
        ("0x7965db0b", True),  # AccessControl
        ("0x01ffc9a7", True),  # ERC-165
        ("0x780e9d63", False),  # ERC-721 enumerable: not implemented
        ("0xffffffff", False),  # must be false per ERC-165
        ("0x00000000", False),
    ],
)
def test_supports_interface(registry, interface_id, supported):
    assert registry.supportsInterface(interface_id) is supported


# ---------------------------------------------------------------------------------------------
# Notice and takedown
# ---------------------------------------------------------------------------------------------


def test_mark_disputed(registry, arbiter, asset):
    asset_id, _ = asset
    reason = random_cid()
    tx = registry.markDisputed(asset_id, reason, {"from": arbiter})
    assert event_names(tx) == ["AssetStatusChanged"]
    assert_event(
        tx,
        "AssetStatusChanged",
        assetId=asset_id,
        previous=Status.Active,
        current=Status.Disputed,
        arbiter=arbiter,
        reasonCid=reason,
    )
    assert status_of(registry, asset_id) == Status.Disputed
    assert registry.getAsset(asset_id)["statusReasonCid"] == reason
    assert not registry.isAccruing(asset_id)


@pytest.mark.parametrize("start", [Status.Active, Status.Disputed])
def test_take_down(registry, arbiter, asset, start):
    asset_id, _ = asset
    if start == Status.Disputed:
        registry.markDisputed(asset_id, random_cid(), {"from": arbiter})
    reason = random_cid()
    tx = registry.takeDown(asset_id, reason, {"from": arbiter})
    assert event_names(tx) == ["AssetStatusChanged"]
    assert_event(
        tx,
        "AssetStatusChanged",
        assetId=asset_id,
        previous=start,
        current=Status.TakenDown,
        arbiter=arbiter,
        reasonCid=reason,
    )
    assert status_of(registry, asset_id) == Status.TakenDown
    assert registry.getAsset(asset_id)["statusReasonCid"] == reason
    assert not registry.isAccruing(asset_id)


@pytest.mark.parametrize("start", [Status.Disputed, Status.TakenDown])
def test_clear_dispute(registry, arbiter, creator, asset, start):
    asset_id, _ = asset
    if start == Status.Disputed:
        registry.markDisputed(asset_id, random_cid(), {"from": arbiter})
    else:
        registry.takeDown(asset_id, random_cid(), {"from": arbiter})
    reason = random_cid()
    tx = registry.clearDispute(asset_id, reason, {"from": arbiter})
    assert event_names(tx) == ["AssetStatusChanged"]
    assert_event(
        tx,
        "AssetStatusChanged",
        assetId=asset_id,
        previous=start,
        current=Status.Active,
        arbiter=arbiter,
        reasonCid=reason,
    )
    assert status_of(registry, asset_id) == Status.Active
    assert registry.getAsset(asset_id)["statusReasonCid"] == reason
    assert registry.isAccruing(asset_id)
    assert registry.ownerOf(asset_id) == creator


def test_invalid_status_transitions(registry, arbiter, asset):
    asset_id, _ = asset
    reason = random_cid()
    with brownie.reverts(custom_error("InvalidStatusTransition", asset_id, Status.Active, Status.Active)):
        registry.clearDispute(asset_id, reason, {"from": arbiter})

    registry.markDisputed(asset_id, reason, {"from": arbiter})
    with brownie.reverts(custom_error("InvalidStatusTransition", asset_id, Status.Disputed, Status.Disputed)):
        registry.markDisputed(asset_id, reason, {"from": arbiter})

    registry.takeDown(asset_id, reason, {"from": arbiter})
    with brownie.reverts(
        custom_error("InvalidStatusTransition", asset_id, Status.TakenDown, Status.Disputed)
    ):
        registry.markDisputed(asset_id, reason, {"from": arbiter})
    with brownie.reverts(
        custom_error("InvalidStatusTransition", asset_id, Status.TakenDown, Status.TakenDown)
    ):
        registry.takeDown(asset_id, reason, {"from": arbiter})
    assert status_of(registry, asset_id) == Status.TakenDown


def test_empty_reason(registry, arbiter, other, asset):
    asset_id, _ = asset
    with brownie.reverts(custom_error("EmptyReason")):
        registry.markDisputed(asset_id, "", {"from": arbiter})
    with brownie.reverts(custom_error("EmptyReason")):
        registry.takeDown(asset_id, "", {"from": arbiter})
    registry.markDisputed(asset_id, random_cid(), {"from": arbiter})
    with brownie.reverts(custom_error("EmptyReason")):
        registry.takeDown(asset_id, "", {"from": arbiter})
    with brownie.reverts(custom_error("EmptyReason")):
        registry.clearDispute(asset_id, "", {"from": arbiter})
    _wait_reassign_delay()
    with brownie.reverts(custom_error("EmptyReason")):
        registry.reassignRights(asset_id, other, "", {"from": arbiter})
    assert status_of(registry, asset_id) == Status.Disputed


def _wait_reassign_delay() -> None:
    chain.sleep(REASSIGN_DELAY)
    chain.mine()


def test_a_rogue_arbiter_cannot_move_rights_before_the_asset_was_contested_for_the_delay(
    registry, admin, arbiter, creator, other, asset
):
    """The worst a stolen arbiter key does at once is freeze revenue (dispute, takedown): moving the
    rights (and with them every future payout and the held royalties) waits REASSIGN_DELAY seconds from
    the moment the asset left Active, in public, time for the admin to revoke the key and clear."""
    asset_id, _ = asset
    assert registry.reassignableAt(asset_id) == 0  # active: nothing to reassign
    tx = registry.markDisputed(asset_id, random_cid(), {"from": arbiter})
    not_before = tx.timestamp + REASSIGN_DELAY
    assert registry.reassignableAt(asset_id) == not_before
    with brownie.reverts(custom_error("ReassignTooEarly", asset_id, not_before)):
        registry.reassignRights(asset_id, other, random_cid(), {"from": arbiter})
    # A takedown after the dispute does not restart (or shorten) the clock.
    chain.sleep(REASSIGN_DELAY // 2)
    registry.takeDown(asset_id, random_cid(), {"from": arbiter})
    assert registry.reassignableAt(asset_id) == not_before
    with brownie.reverts(custom_error("ReassignTooEarly", asset_id, not_before)):
        registry.reassignRights(asset_id, other, random_cid(), {"from": arbiter})
    # Within the delay the admin revokes the key and a trustworthy arbiter clears the asset: the
    # creator keeps its rights and the rogue key can do nothing more.
    registry.revokeRole(ARBITER_ROLE, arbiter, {"from": admin})
    registry.grantRole(ARBITER_ROLE, other, {"from": admin})
    registry.clearDispute(asset_id, random_cid(), {"from": other})
    assert registry.reassignableAt(asset_id) == 0
    _wait_reassign_delay()
    with brownie.reverts(custom_error("AccessControlUnauthorizedAccount", arbiter, ARBITER_ROLE)):
        registry.reassignRights(asset_id, arbiter, random_cid(), {"from": arbiter})
    assert registry.ownerOf(asset_id) == creator


def test_a_new_dispute_starts_a_new_delay(registry, arbiter, creator, other, asset):
    """Clearing resets the clock: an old dispute's time never counts towards a new one."""
    asset_id, _ = asset
    registry.markDisputed(asset_id, random_cid(), {"from": arbiter})
    _wait_reassign_delay()
    registry.clearDispute(asset_id, random_cid(), {"from": arbiter})
    tx = registry.markDisputed(asset_id, random_cid(), {"from": arbiter})
    not_before = tx.timestamp + REASSIGN_DELAY
    with brownie.reverts(custom_error("ReassignTooEarly", asset_id, not_before)):
        registry.reassignRights(asset_id, other, random_cid(), {"from": arbiter})
    chain.sleep(not_before - chain.time())
    chain.mine()
    tx = registry.reassignRights(asset_id, other, random_cid(), {"from": arbiter})
    assert tx.timestamp >= not_before
    assert registry.ownerOf(asset_id) == other and registry.reassignableAt(asset_id) == 0


@pytest.mark.parametrize("start", [Status.Disputed, Status.TakenDown])
def test_reassign_rights(registry, arbiter, creator, other, third, asset, start):
    asset_id, reg = asset
    registry.approve(third, asset_id, {"from": creator})
    if start == Status.Disputed:
        registry.markDisputed(asset_id, random_cid(), {"from": arbiter})
    else:
        registry.takeDown(asset_id, random_cid(), {"from": arbiter})
    _wait_reassign_delay()
    reason = random_cid()
    tx = registry.reassignRights(asset_id, other, reason, {"from": arbiter})

    assert event_names(tx) == ["Transfer", "SplitUpdated", "RightsReassigned", "AssetStatusChanged"]
    assert_event(tx, "Transfer", **{"from": creator, "to": other, "tokenId": asset_id})
    assert_event(tx, "SplitUpdated", assetId=asset_id, recipients=[other], shares=[TOTAL_BPS])
    assert_event(
        tx,
        "RightsReassigned",
        assetId=asset_id,
        to=other,
        arbiter=arbiter,
        reasonCid=reason,
        **{"from": creator},
    )
    assert_event(
        tx,
        "AssetStatusChanged",
        assetId=asset_id,
        previous=start,
        current=Status.Active,
        arbiter=arbiter,
        reasonCid=reason,
    )
    assert registry.ownerOf(asset_id) == other
    assert registry.rightsHolder(asset_id) == other
    assert registry.getApproved(asset_id) == ZERO_ADDRESS
    assert status_of(registry, asset_id) == Status.Active
    assert registry.getAsset(asset_id)["statusReasonCid"] == reason
    assert registry.isAccruing(asset_id)
    # The infringer's split stops paying: the rightful holder alone until it sets another split; the
    # licence is left for the new holder to change.
    assert_same(split_of(registry, asset_id), ([other], [TOTAL_BPS]))
    assert registry.getLicence(asset_id)[0] == reg[6][0]

    with brownie.reverts(custom_error("NotRightsHolder", asset_id, creator)):
        registry.updateSplit(asset_id, [creator], [TOTAL_BPS], {"from": creator})
    registry.updateSplit(asset_id, [other], [TOTAL_BPS], {"from": other})
    assert_same(split_of(registry, asset_id), ([other], [TOTAL_BPS]))


def test_reassign_rights_to_a_contract(registry, arbiter, asset):
    # Like registration, reassignment does not require an ERC721 receiver.
    asset_id, _ = asset
    registry.markDisputed(asset_id, random_cid(), {"from": arbiter})
    _wait_reassign_delay()
    registry.reassignRights(asset_id, registry.address, random_cid(), {"from": arbiter})
    assert registry.ownerOf(asset_id) == registry.address


def test_reassign_rights_of_active_asset(registry, arbiter, creator, other, asset):
    asset_id, _ = asset
    with brownie.reverts(custom_error("AssetNotActive", asset_id, Status.Active)):
        registry.reassignRights(asset_id, other, random_cid(), {"from": arbiter})
    assert registry.ownerOf(asset_id) == creator


def test_reassign_rights_to_zero_address(registry, arbiter, creator, asset):
    asset_id, _ = asset
    registry.markDisputed(asset_id, random_cid(), {"from": arbiter})
    with brownie.reverts(custom_error("ZeroRecipient", 0)):
        registry.reassignRights(asset_id, ZERO_ADDRESS, random_cid(), {"from": arbiter})
    assert registry.ownerOf(asset_id) == creator
    assert status_of(registry, asset_id) == Status.Disputed


def test_arbiter_functions_on_unknown_asset(registry, arbiter, other):
    for call in (
        lambda: registry.markDisputed(1, "r", {"from": arbiter}),
        lambda: registry.takeDown(1, "r", {"from": arbiter}),
        lambda: registry.clearDispute(1, "r", {"from": arbiter}),
        lambda: registry.reassignRights(1, other, "r", {"from": arbiter}),
    ):
        with brownie.reverts(custom_error("ERC721NonexistentToken", 1)):
            call()


@pytest.mark.parametrize("caller_name", ["admin", "registrar", "creator", "other"])
def test_only_arbiter_calls_arbiter_functions(registry, arbiter, request, asset, caller_name):
    caller = request.getfixturevalue(caller_name)
    asset_id, _ = asset
    expected = custom_error("AccessControlUnauthorizedAccount", caller, ARBITER_ROLE)
    with brownie.reverts(expected):
        registry.markDisputed(asset_id, "r", {"from": caller})
    with brownie.reverts(expected):
        registry.takeDown(asset_id, "r", {"from": caller})
    registry.markDisputed(asset_id, "r", {"from": arbiter})
    with brownie.reverts(expected):
        registry.clearDispute(asset_id, "r", {"from": caller})
    with brownie.reverts(expected):
        registry.reassignRights(asset_id, caller, "r", {"from": caller})
    assert status_of(registry, asset_id) == Status.Disputed


# ---------------------------------------------------------------------------------------------
# Views: isAccruing, isLicensedFor, unknown assets
# ---------------------------------------------------------------------------------------------


def test_is_accruing_through_lifecycle(registry, arbiter, asset):
    asset_id, _ = asset
    assert registry.isAccruing(asset_id)
    registry.markDisputed(asset_id, "r", {"from": arbiter})
    assert not registry.isAccruing(asset_id)
    registry.clearDispute(asset_id, "r", {"from": arbiter})
    assert registry.isAccruing(asset_id)
    registry.takeDown(asset_id, "r", {"from": arbiter})
    assert not registry.isAccruing(asset_id)
    registry.clearDispute(asset_id, "r", {"from": arbiter})
    assert registry.isAccruing(asset_id)


@pytest.mark.parametrize(
    ("territory", "expected"),
    [(0, True), (17, True), (248, True), (1, False), (16, False), (247, False), (249, False), (255, False)],
)
def test_is_licensed_for_territory(registry, register, creator, territory, expected):
    asset_id, _, _ = register(creator, licence_tuple=licence(territories(0, 17, 248), T0, T1))
    assert registry.isLicensedFor(asset_id, territory, T0) is expected


def test_is_licensed_for_out_of_range_territory_indices(registry, register, creator):
    full = (1 << TERRITORY_COUNT) - 1
    asset_id, _, _ = register(creator, licence_tuple=licence(full))
    assert registry.isLicensedFor(asset_id, TERRITORY_COUNT - 1, T0)
    for index in (TERRITORY_COUNT, 256, 1_000, MAX_UINT256):
        assert not registry.isLicensedFor(asset_id, index, T0)


@pytest.mark.parametrize(
    ("timestamp", "expected"),
    [
        (0, False),
        (T0 - 1, False),
        (T0, True),
        (T0 + 1, True),
        (T1, True),
        (T1 + 1, False),
        (MAX_UINT64, False),
    ],
)
def test_is_licensed_for_validity_window(registry, register, creator, timestamp, expected):
    asset_id, _, _ = register(creator, licence_tuple=licence(territories(5), T0, T1))
    assert registry.isLicensedFor(asset_id, 5, timestamp) is expected
    assert registry.isLicensedFor(asset_id, 6, timestamp) is False


@pytest.mark.parametrize(("timestamp", "expected"), [(T0 - 1, False), (T0, True), (MAX_UINT64, True)])
def test_is_licensed_for_open_ended(registry, register, creator, timestamp, expected):
    asset_id, _, _ = register(creator, licence_tuple=licence(territories(5), T0, 0))
    assert registry.isLicensedFor(asset_id, 5, timestamp) is expected


def test_is_licensed_for_follows_licence_updates(registry, creator, asset):
    asset_id, _ = asset
    registry.updateLicence(asset_id, licence(territories(10), T0, T1), {"from": creator})
    assert registry.isLicensedFor(asset_id, 10, T1)
    assert not registry.isLicensedFor(asset_id, 0, T1)
    registry.updateLicence(asset_id, licence(territories(0), 0, T0), {"from": creator})
    assert not registry.isLicensedFor(asset_id, 10, T1)
    assert registry.isLicensedFor(asset_id, 0, 0)
    assert not registry.isLicensedFor(asset_id, 0, T1)


def test_settlement_terms_read_many_assets_at_once(registry, register, arbiter, creator, other, asset):
    """settlementTerms is getAsset + getLicence + splitHashOf + rightsHolder for each id, and says
    `exists = false` (never reverts) for an id never registered: settlement reads a period's assets in
    a few calls at one block, and each split from its latest event, checked against the hash."""
    asset_id, reg = asset
    a, b = addresses(2)
    child_id, _, child = register(other, parent_id=asset_id, recipients=[a, b], shares=[4_000, 6_000])
    registry.markDisputed(asset_id, random_cid(), {"from": arbiter})
    terms = registry.settlementTerms([child_id, 0, asset_id, child_id + 1])
    assert len(terms) == 4
    first, missing, parent, unknown = terms
    assert_same(
        first,
        (
            True,
            Status.Active,
            other,
            asset_id,
            child[6][0],
            child[6][1],
            child[6][2],
            split_hash([a, b], [4_000, 6_000]),
            child_id,
        ),
    )
    assert_same(parent[:4], (True, Status.Disputed, creator, 0))
    assert_same(parent[7:], (split_hash(reg[7], reg[8]), asset_id))
    assert_same(split_of(registry, child_id), ([a, b], [4_000, 6_000]))
    for nothing in (missing, unknown):
        assert_same(nothing, (False, 0, ZERO_ADDRESS, 0, 0, 0, 0, ZERO_HASH, 0))
    assert len(registry.settlementTerms([])) == 0


def test_views_of_unknown_asset(registry, asset):
    asset_id, _ = asset
    unknown = asset_id + 1
    expected = custom_error("ERC721NonexistentToken", unknown)
    for view in (
        registry.getAsset,
        registry.getLicence,
        registry.splitHashOf,
        registry.splitKeyOf,
        registry.isAccruing,
        registry.rightsHolder,
        registry.ownerOf,
        registry.tokenURI,
        registry.getApproved,
    ):
        with brownie.reverts(expected):
            view(unknown)
    with brownie.reverts(expected):
        registry.isLicensedFor(unknown, 0, T0)
    with brownie.reverts(custom_error("ERC721NonexistentToken", 0)):
        registry.getAsset(0)


# ---------------------------------------------------------------------------------------------
# ABI surface and gas profile of the view functions
# ---------------------------------------------------------------------------------------------

MUTATING_FUNCTIONS = {
    "approve(address,uint256)",
    "registerBatch((bytes32,string,string,uint256,bool,uint8)[],(uint256,uint64,uint64,uint16,string),address[],uint16[],bytes32)",
    "registerBatchFor((bytes32,string,string,uint256,bool,uint8)[],(uint256,uint64,uint64,uint16,string),address[],uint16[],address,uint256,bytes)",
    "clearDispute(uint256,string)",
    "grantRole(bytes32,address)",
    "markDisputed(uint256,string)",
    "reassignRights(uint256,address,string)",
    "commitRegistration(bytes32)",
    "registerAsset((bytes32,string,string,address,uint256,bool,(uint256,uint64,uint64,uint16,string),address[],uint16[],uint8),bytes32)",
    "registerFor((bytes32,string,string,address,uint256,bool,(uint256,uint64,uint64,uint16,string),address[],uint16[],uint8),uint256,bytes)",
    "renounceRole(bytes32,address)",
    "revokeRole(bytes32,address)",
    "safeTransferFrom(address,address,uint256)",
    "safeTransferFrom(address,address,uint256,bytes)",
    "setApprovalForAll(address,bool)",
    "takeDown(uint256,string)",
    "transferFrom(address,address,uint256)",
    "updateLicence(uint256,(uint256,uint64,uint64,uint16,string))",
    "updateLicenceFor(uint256,(uint256,uint64,uint64,uint16,string),uint256,bytes)",
    "updateSplit(uint256,address[],uint16[])",
    "updateSplitFor(uint256,address[],uint16[],uint256,bytes)",
}


def _abi_type(item) -> str:
    if item["type"].startswith("tuple"):
        return "(" + ",".join(_abi_type(c) for c in item["components"]) + ")" + item["type"][5:]
    return item["type"]


def test_abi_surface():
    """The external functions are exactly those these tests exercise (update the tests with the ABI)."""
    functions = {
        f"{i['name']}({','.join(_abi_type(x) for x in i['inputs'])})": i["stateMutability"]
        for i in ContentRegistry.abi
        if i["type"] == "function"
    }
    reads = ("view", "pure")
    assert {sig for sig, mutability in functions.items() if mutability not in reads} == MUTATING_FUNCTIONS
    assert {sig.split("(")[0] for sig, mutability in functions.items() if mutability in reads} == set(
        VIEW_CALLS
    )


VIEW_CALLS = {
    "ARBITER_ROLE": lambda ctx: (),
    "DEFAULT_ADMIN_ROLE": lambda ctx: (),
    "DOMAIN_SEPARATOR": lambda ctx: (),
    "LICENCE_TYPEHASH": lambda ctx: (),
    "LICENCE_UPDATE_TYPEHASH": lambda ctx: (),
    "REGISTRATION_TYPEHASH": lambda ctx: (),
    "REASSIGN_DELAY": lambda ctx: (),
    "reassignableAt": lambda ctx: (ctx["id"],),
    "SPLIT_UPDATE_TYPEHASH": lambda ctx: (),
    "commitmentBlock": lambda ctx: (ctx["hash"],),
    "eip712Domain": lambda ctx: (),
    "nonces": lambda ctx: (ctx["owner"],),
    "registrationCommitment": lambda ctx: (ctx["hash"], ctx["owner"], ctx["hash"]),
    "registrationDigest": lambda ctx: (ctx["reg"], 0, 2**40),
    "MAX_RECIPIENTS": lambda ctx: (),
    "REGISTRAR_ROLE": lambda ctx: (),
    "TERRITORY_COUNT": lambda ctx: (),
    "IMPORT_PROFILE_COUNT": lambda ctx: (),
    "CATALOGUE_TYPEHASH": lambda ctx: (),
    "CATALOGUE_ITEM_TYPEHASH": lambda ctx: (),
    "importProfileOf": lambda ctx: (ctx["id"],),
    "TOTAL_BPS": lambda ctx: (),
    "assetIdOf": lambda ctx: (ctx["hash"],),
    "balanceOf": lambda ctx: (ctx["owner"],),
    "getApproved": lambda ctx: (ctx["id"],),
    "getAsset": lambda ctx: (ctx["id"],),
    "getLicence": lambda ctx: (ctx["id"],),
    "getRoleAdmin": lambda ctx: (ARBITER_ROLE,),
    "splitHash": lambda ctx: (ctx["reg"][7], ctx["reg"][8]),
    "splitHashOf": lambda ctx: (ctx["id"],),
    "splitKeyOf": lambda ctx: (ctx["id"],),
    "batchHash": lambda ctx: ([catalogue_item(content_hash=ctx["hash"])],),
    "MAX_BATCH": lambda ctx: (),
    "hasRole": lambda ctx: (ARBITER_ROLE, ctx["arbiter"]),
    "isAccruing": lambda ctx: (ctx["id"],),
    "isApprovedForAll": lambda ctx: (ctx["owner"], ctx["arbiter"]),
    "isLicensedFor": lambda ctx: (ctx["id"], 248, T0),
    "name": lambda ctx: (),
    "ownerOf": lambda ctx: (ctx["id"],),
    "rightsHolder": lambda ctx: (ctx["id"],),
    "settlementTerms": lambda ctx: ([ctx["id"], ctx["id"] + 1, 0],),
    "splitBlocks": lambda ctx: ([ctx["id"], ctx["id"] + 1, 0],),
    "royaltyInfo": lambda ctx: (ctx["id"], 10**18),
    "supportsInterface": lambda ctx: ("0x2a55205a",),
    "symbol": lambda ctx: (),
    "tokenURI": lambda ctx: (ctx["id"],),
    "totalAssets": lambda ctx: (),
}


def test_view_functions_as_transactions(registry, register, arbiter, creator):
    """Runs every view as a transaction, so that the gas report shows what on-chain callers pay
    (marketplaces call royaltyInfo, settlement contracts isLicensedFor/isAccruing), and checks that
    the transaction's return value equals the eth_call result."""
    # A 50-recipient split: the views cost the same whatever its size (one committed word).
    recipients, shares = even_split(addresses(MAX_RECIPIENTS))
    asset_id, _, reg = register(creator, recipients=recipients, shares=shares)
    ctx = {"id": asset_id, "hash": reg[0], "owner": creator, "arbiter": arbiter, "reg": reg}
    for name, make_args in VIEW_CALLS.items():
        method = getattr(registry, name)
        args = make_args(ctx)
        tx = method.transact(*args, {"from": arbiter})
        assert tx.status == 1, name
        assert_same(tx.return_value, method(*args))


# ---------------------------------------------------------------------------------------------
# Catalogues: many assets in one transaction
# ---------------------------------------------------------------------------------------------


def test_a_catalogue_of_100_assets_in_one_transaction(registry, creator, other):
    """registerBatch: each item its own token with its own provenance, one ERC-2309 ConsecutiveTransfer,
    the licence and split stored once and read back per asset (the split from the first asset's event,
    checked against each asset's hash); the gas per asset is printed beside an ERC721A mint."""
    first_expected = registry.totalAssets() + 1
    items = [catalogue_item() for _ in range(99)]
    items.append(catalogue_item(parent_id=first_expected, aigc=True))  # a variant of the first image
    recipients, shares = [creator, other], [8_000, 2_000]
    lic = licence(territories(1, 2, 3), T0, T1, 500, random_cid())
    tx = register_batch(registry, items, creator, lic=lic, recipients=recipients, shares=shares)
    first_id = tx.return_value
    assert first_id == first_expected and registry.totalAssets() == first_id + 99
    names = event_names(tx)
    assert names.count("AssetRegistered") == 100 and "Transfer" not in names
    assert names[-4:] == ["LicenceUpdated", "SplitUpdated", "ConsecutiveTransfer", "BatchRegistered"]
    assert_event(
        tx,
        "ConsecutiveTransfer",
        fromTokenId=first_id,
        toTokenId=first_id + 99,
        fromAddress=ZERO_ADDRESS,
        toAddress=creator,
    )
    assert registry.balanceOf(creator) == 100
    for offset in (0, 57, 99):
        asset_id = first_id + offset
        record = registry.getAsset(asset_id)
        assert_same(
            (
                record["contentHash"],
                record["contentCid"],
                record["metadataCid"],
                record["parentId"],
                record["aigc"],
                registry.importProfileOf(asset_id),
            ),
            items[offset],
        )
        assert record["creator"] == creator and registry.ownerOf(asset_id) == creator
        assert registry.assetIdOf(items[offset][0]) == asset_id
        assert_same(registry.getLicence(asset_id), lic)
        assert registry.splitKeyOf(asset_id) == first_id
        assert_same(split_of(registry, asset_id), (recipients, shares))
        assert registry.tokenURI(asset_id) == "ipfs://" + items[offset][2]
    per_asset = tx.gas_used // 100
    print(
        f"[gas] registerBatch of 100: {tx.gas_used:,} in all, {per_asset:,} per asset"
        " (an ERC721A mint: about 73,000)"
    )
    assert tx.gas_used < 2**24  # a transaction's gas cap on chains since Osaka (EIP-7825)


def test_a_catalogue_asset_that_changes_its_terms_leaves_the_others_alone(registry, creator, other, arbiter):
    """Copy on write: a licence update, a split update, a transfer (split reset) or a reassignment of
    one asset gives it its own terms; every other asset of the catalogue keeps the shared ones, and each
    split still reads back from events and its hash."""
    items = [catalogue_item() for _ in range(4)]
    lic = licence(territories(5), T0, 0, 250, "")
    tx = register_batch(registry, items, creator, lic=lic, recipients=[creator], shares=[TOTAL_BPS])
    first = tx.return_value
    a, b = addresses(2)
    # The first asset (whose events hold the shared split) sets its own split.
    registry.updateSplit(first, [a, b], [5_000, 5_000], {"from": creator})
    # The second changes its licence only: its split is still the shared one.
    new_licence = licence(territories(9), T0, T1, 0, random_cid())
    registry.updateLicence(first + 1, new_licence, {"from": creator})
    # The third is sold.
    registry.transferFrom(creator, other, first + 2, {"from": creator})
    assert_same(split_of(registry, first), ([a, b], [5_000, 5_000]))
    assert registry.splitKeyOf(first) == first
    assert_same(split_of(registry, first + 1), ([creator], [TOTAL_BPS]))
    assert registry.splitKeyOf(first + 1) == first
    assert_same(registry.getLicence(first + 1), new_licence)
    assert_same(split_of(registry, first + 2), ([other], [TOTAL_BPS]))
    assert registry.ownerOf(first + 2) == other and registry.balanceOf(other) == 1
    assert_same(registry.royaltyInfo(first + 2, 10_000), (other, 250))
    # The fourth kept everything.
    assert_same(registry.getLicence(first + 3), lic)
    assert_same(split_of(registry, first + 3), ([creator], [TOTAL_BPS]))
    assert registry.ownerOf(first + 3) == creator and registry.balanceOf(creator) == 3
    for asset_id in (first, first + 1, first + 3):
        assert_same(registry.getLicence(asset_id), new_licence if asset_id == first + 1 else lic)
    # settlementTerms names, per asset, where the split's preimage is.
    terms = registry.settlementTerms([first, first + 1, first + 2, first + 3])
    assert [t[8] for t in terms] == [first, first, first + 2, first]
    # A dispute and reassignment of the last asset moves only it.
    registry.markDisputed(first + 3, random_cid(), {"from": arbiter})
    chain.sleep(REASSIGN_DELAY + 1)
    registry.reassignRights(first + 3, other, random_cid(), {"from": arbiter})
    assert_same(split_of(registry, first + 3), ([other], [TOTAL_BPS]))
    assert_same(split_of(registry, first + 1), ([creator], [TOTAL_BPS]))


def test_a_catalogue_needs_its_commitment_and_fair_contents(registry, creator, other):
    items = [catalogue_item() for _ in range(3)]
    salt = random_hash()
    # Without a commitment, or revealed in the commitment's own block: refused.
    commitment = registration_commitment(batch_commitment(items), str(creator), salt)
    with brownie.reverts(custom_error("NoCommitment", commitment)):
        registry.registerBatch(items, licence(), [creator], [TOTAL_BPS], salt, {"from": creator})
    # A copier revealing the catalogue under its own address has no commitment of its own.
    registry.commitRegistration(commitment, {"from": creator})
    copied = registration_commitment(batch_commitment(items), str(other), salt)
    with brownie.reverts(custom_error("NoCommitment", copied)):
        registry.registerBatch(items, licence(), [other], [TOTAL_BPS], salt, {"from": other})
    with brownie.reverts(custom_error("EmptyBatch")):
        registry.registerBatch([], licence(), [creator], [TOTAL_BPS], salt, {"from": creator})
    too_many = [catalogue_item() for _ in range(101)]
    with brownie.reverts(custom_error("BatchTooLarge", 101, 100)):
        register_batch(registry, too_many, creator)
    # A content hash twice in one catalogue, or one already registered: the whole catalogue is refused.
    twice = [items[0], catalogue_item(content_hash=items[0][0])]
    first_id = registry.totalAssets() + 1
    with brownie.reverts(custom_error("AlreadyRegistered", items[0][0], first_id)):
        register_batch(registry, twice, creator)
    # A parent later in the same catalogue does not exist yet.
    forward = [catalogue_item(parent_id=first_id + 1), catalogue_item()]
    with brownie.reverts(custom_error("UnknownParent", first_id + 1)):
        register_batch(registry, forward, creator)
    # The split and licence are checked as for one asset.
    with brownie.reverts(custom_error("SharesNotWhole", 9_999)):
        register_batch(registry, items, creator, recipients=[creator], shares=[9_999])
    assert registry.totalAssets() == first_id - 1
    tx = registry.registerBatch(items, licence(), [creator], [TOTAL_BPS], salt, {"from": creator})
    assert tx.return_value == first_id
