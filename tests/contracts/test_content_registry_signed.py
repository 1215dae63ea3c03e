"""ContentRegistry: registrations nobody can steal, and licence/split updates relayed with the holder's
signature (docs/registration.md).

Front-running is tested as it happens: with anvil's automine off, the victim's transaction waits in the
mempool while the attacker, who has read it, sends its own transactions with a higher fee, and both land
in the same block."""

from __future__ import annotations

import brownie
import pytest
from brownie import TestClaimWallet, chain, web3
from eth_account import Account
from eth_account.messages import encode_typed_data
from web3.exceptions import TransactionNotFound

from edgeledger.ledger import registration as formats

from .conftest import (
    TOTAL_BPS,
    ZERO_ADDRESS,
    Status,
    assert_event,
    assert_same,
    catalogue_item,
    custom_error,
    event_names,
    licence,
    private_key_of,
    random_cid,
    random_hash,
    register_for,
    registration,
    sign_registration,
    split_of,
    territories,
)

GWEI = 10**9


def _sign(typed: dict, account) -> bytes:
    return Account.sign_message(encode_typed_data(full_message=typed), private_key_of(account)).signature


class _Mempool:
    """hold() turns anvil's automine off, so transactions wait in the mempool; mine() puts everything
    pending in one block (anvil orders it by fee) and turns automine back on."""

    def hold(self):
        web3.provider.make_request("evm_setAutomine", [False])

    def mine(self):
        web3.provider.make_request("evm_mine", [])
        web3.provider.make_request("evm_setAutomine", [True])


@pytest.fixture
def mempool():
    yield _Mempool()
    web3.provider.make_request("evm_setAutomine", [True])


class _Pending:
    """A transaction sent straight through web3 (brownie's own sending waits on its confirmations)."""

    def __init__(self, txid):
        self.txid = txid

    @property
    def receipt(self):
        try:
            return web3.eth.get_transaction_receipt(self.txid)
        except TransactionNotFound:
            return None

    @property
    def status(self):
        return self.receipt["status"]

    @property
    def block_number(self):
        return self.receipt["blockNumber"]


def _pending(contract_fn, *args, sender, fee):
    """Sends without mining: the transaction waits in the mempool until the test mines."""
    txid = web3.eth.send_transaction(
        {
            "from": str(sender),
            "to": str(contract_fn._address),
            "data": contract_fn.encode_input(*args),
            "gasPrice": fee,
            "gas": 1_500_000,
        }
    )
    return _Pending(txid)


# ---------------------------------------------------------------------------------------------
# Commit-reveal (a creator's own wallet)
# ---------------------------------------------------------------------------------------------


def test_commit_then_reveal_a_block_later(registry, creator):
    reg = registration(creator)
    salt = random_hash()
    commitment = formats.commitment(reg[0], str(creator), salt)
    assert bytes(registry.registrationCommitment(reg[0], creator, salt)) == commitment
    tx = registry.commitRegistration(commitment, {"from": creator})
    assert_event(tx, "RegistrationCommitted", commitment=commitment, committer=creator)
    assert registry.commitmentBlock(commitment) == tx.block_number
    with brownie.reverts(custom_error("AlreadyCommitted", commitment, tx.block_number)):
        registry.commitRegistration(commitment, {"from": creator})
    reveal = registry.registerAsset(reg, salt, {"from": creator})
    assert reveal.events["AssetRegistered"]["creator"] == creator
    assert registry.commitmentBlock(commitment) == 0  # spent: the same reveal cannot run twice
    with brownie.reverts(custom_error("NoCommitment", commitment)):
        registry.registerAsset(reg, salt, {"from": creator})


def test_reveal_needs_the_commitment_of_an_earlier_block(registry, creator, mempool):
    reg = registration(creator)
    salt = random_hash()
    commitment = formats.commitment(reg[0], str(creator), salt)
    with brownie.reverts(custom_error("NoCommitment", commitment)):
        registry.registerAsset.call(reg, salt, {"from": creator})
    mempool.hold()
    commit = _pending(registry.commitRegistration, commitment, sender=creator, fee=2 * GWEI)
    reveal = _pending(registry.registerAsset, reg, salt, sender=creator, fee=GWEI)
    mempool.mine()
    assert commit.status == 1 and reveal.status == 0
    assert reveal.block_number == commit.block_number  # revealed in its commitment's block: refused
    assert registry.totalAssets() == 0
    mempool.hold()
    again = _pending(registry.registerAsset, reg, salt, sender=creator, fee=GWEI)
    mempool.mine()
    assert again.status == 1
    assert registry.totalAssets() == 1 and registry.ownerOf(1) == creator


def test_a_copied_reveal_cannot_register_first(registry, creator, other, mempool):
    """The attacker reads the creator's pending reveal (content hash, CIDs, salt). Sent as is, it names
    the creator; with the attacker as creator it has no commitment. The attacker's own commitment, sent
    with a higher fee the moment it sees the reveal, lands in the reveal's block at the earliest, so the
    reveal wins and the attacker's reveal finds the hash taken (a reveal in its commitment's block is
    refused: test_reveal_needs_the_commitment_of_an_earlier_block)."""
    reg = registration(creator)
    salt = random_hash()
    registry.commitRegistration(formats.commitment(reg[0], str(creator), salt), {"from": creator})
    stolen = registration(other, content_hash=reg[0], content_cid=reg[1], metadata_cid=reg[2])
    with brownie.reverts(custom_error("NotCreator", other, creator)):
        registry.registerAsset(reg, salt, {"from": other})
    with brownie.reverts(custom_error("NoCommitment", formats.commitment(reg[0], str(other), salt))):
        registry.registerAsset(stolen, salt, {"from": other})
    mempool.hold()
    victim = _pending(registry.registerAsset, reg, salt, sender=creator, fee=GWEI)
    attacker_commit = _pending(
        registry.commitRegistration, formats.commitment(reg[0], str(other), salt), sender=other, fee=60 * GWEI
    )
    mempool.mine()
    assert victim.status == 1 and attacker_commit.status == 1
    assert attacker_commit.block_number == victim.block_number
    with brownie.reverts(custom_error("AlreadyRegistered", reg[0], 1)):
        registry.registerAsset(stolen, salt, {"from": other})
    assert registry.ownerOf(1) == creator and registry.totalAssets() == 1


# ---------------------------------------------------------------------------------------------
# registerFor (the registrar, with the creator's signature)
# ---------------------------------------------------------------------------------------------


def test_registration_digest_matches_the_shared_definition(registry, creator):
    reg = registration(creator, aigc=True)
    typed = formats.registration_typed_data(
        reg, nonce=7, deadline=2**40, chain_id=web3.eth.chain_id, contract=str(registry.address)
    )
    assert bytes(registry.registrationDigest(reg, 7, 2**40)) == formats.digest(typed)
    assert bytes(registry.REGISTRATION_TYPEHASH()) == web3.keccak(
        text="Registration(bytes32 contentHash,string contentCid,string metadataCid,address creator,"
        "uint256 parentId,bool aigc,Licence licence,address[] recipients,uint16[] shares,uint8 importProfile,"
        "uint256 nonce,uint256 deadline)Licence(uint256 territories,uint64 validFrom,uint64 validUntil,"
        "uint16 royaltyBps,string termsCid)"
    )
    message = formats.registration_message(reg)
    assert formats.registration_message(formats.registration_tuple(message)) == message


def test_register_for_uses_the_signature_once(registry, registrar, creator):
    reg = registration(creator)
    signature, deadline = sign_registration(registry, reg, creator)
    tx = registry.registerFor(reg, deadline, signature, {"from": registrar})
    registered = tx.events["AssetRegistered"]
    assert (registered["assetId"], registered["creator"], registered["registrar"]) == (1, creator, registrar)
    assert registry.nonces(creator) == 1
    # The same signed registration again (say, replayed after a reorg) is refused: its nonce is spent.
    with brownie.reverts(custom_error("InvalidSignature", creator)):
        registry.registerFor(reg, deadline, signature, {"from": registrar})


def test_register_for_refuses_what_the_creator_did_not_sign(registry, registrar, creator, other):
    reg = registration(creator)
    signature, deadline = sign_registration(registry, reg, creator)
    changed = [
        registration(other, content_hash=reg[0], content_cid=reg[1], metadata_cid=reg[2]),  # another creator
        (*reg[:7], [str(registrar)], [10_000], reg[9]),  # the split paid to the registrar
        (*reg[:9], 1),  # CIDs claimed to be cut with another import profile
        (*reg[:6], licence(territories(1), 0, 0, 10_000, reg[6][4]), *reg[7:]),  # other terms
        (*reg[:2], random_cid(), *reg[3:]),  # other metadata
    ]
    for tampered in changed:
        with brownie.reverts(custom_error("InvalidSignature", tampered[3])):
            registry.registerFor(tampered, deadline, signature, {"from": registrar})
    # Signed by someone else, for another chain, for a nonce not yet due, or past its deadline.
    bad, _ = sign_registration(registry, reg, other, nonce=0, deadline=deadline)
    with brownie.reverts(custom_error("InvalidSignature", creator)):
        registry.registerFor(reg, deadline, bad, {"from": registrar})
    typed = formats.registration_typed_data(
        reg, nonce=0, deadline=deadline, chain_id=web3.eth.chain_id + 1, contract=str(registry.address)
    )
    with brownie.reverts(custom_error("InvalidSignature", creator)):
        registry.registerFor(reg, deadline, _sign(typed, creator), {"from": registrar})
    ahead, _ = sign_registration(registry, reg, creator, nonce=1, deadline=deadline)
    with brownie.reverts(custom_error("InvalidSignature", creator)):
        registry.registerFor(reg, deadline, ahead, {"from": registrar})
    past = chain.time() - 1
    expired, _ = sign_registration(registry, reg, creator, deadline=past)
    with brownie.reverts(custom_error("SignatureExpired", past)):
        registry.registerFor(reg, past, expired, {"from": registrar})
    assert registry.totalAssets() == 0
    # The untouched registration still goes through.
    assert registry.registerFor(reg, deadline, signature, {"from": registrar}).return_value == 1


def test_a_copied_register_for_cannot_register_for_anyone_else(registry, registrar, creator, other, mempool):
    """The attacker copies the registrar's pending registerFor: it holds no REGISTRAR_ROLE, and with the
    creator swapped for itself the signature no longer verifies (even sent by a stolen registrar key)."""
    reg = registration(creator)
    signature, deadline = sign_registration(registry, reg, creator)
    mempool.hold()
    victim = _pending(registry.registerFor, reg, deadline, signature, sender=registrar, fee=GWEI)
    stolen = registration(other, content_hash=reg[0], content_cid=reg[1], metadata_cid=reg[2])
    copy = _pending(registry.registerFor, reg, deadline, signature, sender=other, fee=50 * GWEI)
    mempool.mine()
    assert copy.block_number == victim.block_number  # ran first, with the higher fee
    assert copy.status == 0 and victim.status == 1
    assert registry.ownerOf(1) == creator
    # The registrar key itself cannot point a creator's signature at someone else either.
    with brownie.reverts(custom_error("InvalidSignature", other)):
        registry.registerFor(stolen, deadline, signature, {"from": registrar})


def test_register_for_a_contract_wallet_by_erc1271(registry, registrar, creator):
    wallet = TestClaimWallet.deploy(creator, {"from": creator})
    tx = register_for(registry, registration(wallet.address), registrar, signer=creator)
    assert registry.ownerOf(tx.return_value) == wallet.address
    assert registry.nonces(wallet.address) == 1


# ---------------------------------------------------------------------------------------------
# registerBatchFor (a catalogue, with the creator's signature)
# ---------------------------------------------------------------------------------------------


def _sign_catalogue(
    registry, creator, items, lic, recipients, shares, signer=None, *, nonce=None, deadline=None
):
    """(signature, deadline): the creator's (or `signer`'s) EIP-712 `Catalogue` signature."""
    nonce = registry.nonces(creator) if nonce is None else nonce
    deadline = chain.time() + 3600 if deadline is None else deadline
    typed = formats.catalogue_typed_data(
        str(creator),
        items,
        lic,
        [str(r) for r in recipients],
        shares,
        nonce=nonce,
        deadline=deadline,
        chain_id=web3.eth.chain_id,
        contract=str(registry.address),
    )
    return _sign(typed, signer or creator), deadline


def test_catalogue_type_matches_the_shared_definition(registry):
    assert bytes(registry.CATALOGUE_ITEM_TYPEHASH()) == web3.keccak(
        text="CatalogueItem(bytes32 contentHash,string contentCid,string metadataCid,uint256 parentId,"
        "bool aigc,uint8 importProfile)"
    )
    assert bytes(registry.CATALOGUE_TYPEHASH()) == web3.keccak(
        text="Catalogue(address creator,CatalogueItem[] items,Licence licence,address[] recipients,"
        "uint16[] shares,uint256 nonce,uint256 deadline)CatalogueItem(bytes32 contentHash,string contentCid,"
        "string metadataCid,uint256 parentId,bool aigc,uint8 importProfile)Licence(uint256 territories,"
        "uint64 validFrom,uint64 validUntil,uint16 royaltyBps,string termsCid)"
    )


def test_register_batch_for_registers_the_signed_catalogue_once(registry, registrar, creator, other):
    """The registrar relays a creator's signed catalogue: every item its own token of the creator (the
    registrar named as such), one licence and split, the creator's nonce spent; the same signature again
    is refused. Gas is printed beside the creator's own registerBatch."""
    first_expected = registry.totalAssets() + 1
    items = [catalogue_item(import_profile=i % 2) for i in range(99)]
    items.append(catalogue_item(parent_id=first_expected, aigc=True))
    lic, recipients, shares = licence(territories(1, 2)), [creator, other], [9_000, 1_000]
    signature, deadline = _sign_catalogue(registry, creator, items, lic, recipients, shares)
    tx = registry.registerBatchFor(
        items, lic, recipients, shares, creator, deadline, signature, {"from": registrar}
    )
    first_id = tx.return_value
    assert first_id == first_expected and registry.totalAssets() == first_id + 99
    assert registry.nonces(creator) == 1 and registry.balanceOf(creator) == 100
    assert registry.balanceOf(registrar) == 0
    assert_event(
        tx,
        "ConsecutiveTransfer",
        fromTokenId=first_id,
        toTokenId=first_id + 99,
        fromAddress=ZERO_ADDRESS,
        toAddress=creator,
    )
    assert_event(tx, "BatchRegistered", firstId=first_id, count=100, creator=creator)
    assert {e["registrar"] for e in tx.events["AssetRegistered"]} == {registrar}
    assert event_names(tx).count("ImportProfileRecorded") == sum(item[5] for item in items) == 49
    for offset in (0, 1, 99):
        record = registry.getAsset(first_id + offset)
        assert_same((record["contentHash"], record["creator"]), (items[offset][0], creator))
        assert registry.importProfileOf(first_id + offset) == items[offset][5]
        assert registry.ownerOf(first_id + offset) == creator
        assert_same(split_of(registry, first_id + offset), (recipients, shares))
    assert registry.getAsset(first_id + 99)["parentId"] == first_id
    print(
        f"[gas] registerBatchFor of 100: {tx.gas_used:,} in all, {tx.gas_used // 100:,} per asset"
        " (an ERC721A mint: about 73,000)"
    )
    assert tx.gas_used < 2**24
    with brownie.reverts(custom_error("InvalidSignature", creator)):
        registry.registerBatchFor(
            items, lic, recipients, shares, creator, deadline, signature, {"from": registrar}
        )


def test_register_batch_for_refuses_what_the_creator_did_not_sign(registry, registrar, creator, other):
    items = [catalogue_item() for _ in range(3)]
    lic, recipients, shares = licence(), [creator], [TOTAL_BPS]
    signature, deadline = _sign_catalogue(registry, creator, items, lic, recipients, shares)
    changed_item = list(items[1])
    changed_item[5] = 1  # another import profile
    tampered = [
        ([*items[:1], tuple(changed_item), *items[2:]], lic, recipients, shares, creator),
        (items[:2], lic, recipients, shares, creator),  # an item left out
        ([*items, catalogue_item()], lic, recipients, shares, creator),  # one added
        (items[::-1], lic, recipients, shares, creator),  # reordered
        (items, licence(territories(1), 0, 0, TOTAL_BPS), recipients, shares, creator),  # other terms
        (items, lic, [registrar], [TOTAL_BPS], creator),  # the split paid to the registrar
        (items, lic, recipients, shares, other),  # for someone else
    ]
    for args in tampered:
        with brownie.reverts(custom_error("InvalidSignature", args[4])):
            registry.registerBatchFor(*args, deadline, signature, {"from": registrar})
    # Not the registrar; signed by someone else; past its deadline; for a nonce not yet due.
    with brownie.reverts():
        registry.registerBatchFor(
            items, lic, recipients, shares, creator, deadline, signature, {"from": other}
        )
    forged, _ = _sign_catalogue(
        registry, creator, items, lic, recipients, shares, signer=other, deadline=deadline
    )
    with brownie.reverts(custom_error("InvalidSignature", creator)):
        registry.registerBatchFor(
            items, lic, recipients, shares, creator, deadline, forged, {"from": registrar}
        )
    past = chain.time() - 1
    expired, _ = _sign_catalogue(registry, creator, items, lic, recipients, shares, deadline=past)
    with brownie.reverts(custom_error("SignatureExpired", past)):
        registry.registerBatchFor(items, lic, recipients, shares, creator, past, expired, {"from": registrar})
    ahead, _ = _sign_catalogue(registry, creator, items, lic, recipients, shares, nonce=1, deadline=deadline)
    with brownie.reverts(custom_error("InvalidSignature", creator)):
        registry.registerBatchFor(
            items, lic, recipients, shares, creator, deadline, ahead, {"from": registrar}
        )
    with brownie.reverts(custom_error("EmptyBatch")):
        registry.registerBatchFor(
            [], lic, recipients, shares, creator, deadline, signature, {"from": registrar}
        )
    with brownie.reverts(custom_error("ZeroCreator")):
        registry.registerBatchFor(
            items, lic, recipients, shares, ZERO_ADDRESS, deadline, signature, {"from": registrar}
        )
    assert registry.totalAssets() == 0 and registry.nonces(creator) == 0
    # The signed catalogue itself still registers.
    registry.registerBatchFor(
        items, lic, recipients, shares, creator, deadline, signature, {"from": registrar}
    )
    assert registry.totalAssets() == 3


def test_register_batch_for_a_contract_wallet_by_erc1271(registry, registrar, creator):
    wallet = TestClaimWallet.deploy(creator, {"from": creator})
    items = [catalogue_item(), catalogue_item()]
    lic, recipients, shares = licence(), [wallet.address], [TOTAL_BPS]
    signature, deadline = _sign_catalogue(
        registry, wallet.address, items, lic, recipients, shares, signer=creator
    )
    tx = registry.registerBatchFor(
        items, lic, recipients, shares, wallet.address, deadline, signature, {"from": registrar}
    )
    assert registry.ownerOf(tx.return_value + 1) == wallet.address
    assert registry.nonces(wallet.address) == 1


# ---------------------------------------------------------------------------------------------
# Relayed licence and split updates
# ---------------------------------------------------------------------------------------------


def _licence_update(registry, asset_id, lic, holder, *, nonce=None, deadline=None):
    nonce = registry.nonces(holder) if nonce is None else nonce
    deadline = chain.time() + 600 if deadline is None else deadline
    typed = formats.licence_update_typed_data(
        asset_id,
        lic,
        nonce=nonce,
        deadline=deadline,
        chain_id=web3.eth.chain_id,
        contract=str(registry.address),
    )
    return typed, deadline


def _split_update(registry, asset_id, recipients, shares, holder):
    deadline = chain.time() + 600
    typed = formats.split_update_typed_data(
        asset_id,
        [str(r) for r in recipients],
        shares,
        nonce=registry.nonces(holder),
        deadline=deadline,
        chain_id=web3.eth.chain_id,
        contract=str(registry.address),
    )
    return typed, deadline


def test_relayed_licence_update(registry, register, creator, other, third, arbiter):
    asset_id, _, _ = register(creator)
    lic = licence(territories(5, 7), 0, 0, 500, random_cid())
    typed, deadline = _licence_update(registry, asset_id, lic, creator)
    signature = _sign(typed, creator)
    # Only what was signed: another licence with this signature is refused.
    other_lic = licence(territories(5), 0, 0, 500, lic[4])
    with brownie.reverts(custom_error("InvalidSignature", creator)):
        registry.updateLicenceFor(asset_id, other_lic, deadline, signature, {"from": third})
    tx = registry.updateLicenceFor(asset_id, lic, deadline, signature, {"from": third})  # anyone relays
    assert_event(
        tx,
        "LicenceUpdated",
        assetId=asset_id,
        territories=lic[0],
        validFrom=lic[1],
        validUntil=lic[2],
        royaltyBps=lic[3],
        termsCid=lic[4],
    )
    assert tuple(registry.getLicence(asset_id)) == lic
    with brownie.reverts(custom_error("InvalidSignature", creator)):  # replay: nonce spent
        registry.updateLicenceFor(asset_id, lic, deadline, signature, {"from": third})
    # Someone who is not the holder signs: refused.
    typed, deadline = _licence_update(registry, asset_id, lic, other, nonce=registry.nonces(creator))
    with brownie.reverts(custom_error("InvalidSignature", creator)):
        registry.updateLicenceFor(asset_id, lic, deadline, _sign(typed, other), {"from": third})
    # Past the deadline.
    typed, past = _licence_update(registry, asset_id, lic, creator, deadline=chain.time() - 1)
    with brownie.reverts(custom_error("SignatureExpired", past)):
        registry.updateLicenceFor(asset_id, lic, past, _sign(typed, creator), {"from": third})
    # While disputed nothing changes, signed or not.
    registry.markDisputed(asset_id, random_cid(), {"from": arbiter})
    typed, deadline = _licence_update(registry, asset_id, lic, creator)
    with brownie.reverts(custom_error("AssetNotActive", asset_id, Status.Disputed)):
        registry.updateLicenceFor(asset_id, lic, deadline, _sign(typed, creator), {"from": third})


def test_relayed_split_update_follows_the_token(registry, register, creator, other, third):
    asset_id, _, _ = register(creator)
    typed, deadline = _split_update(registry, asset_id, [creator, third], [6_000, 4_000], creator)
    signed_before_sale = _sign(typed, creator)
    registry.transferFrom(creator, other, asset_id, {"from": creator})
    # The former holder's signature is void once the token moved.
    with brownie.reverts(custom_error("InvalidSignature", other)):
        registry.updateSplitFor(
            asset_id, [creator, third], [6_000, 4_000], deadline, signed_before_sale, {"from": third}
        )
    typed, deadline = _split_update(registry, asset_id, [other, third], [9_000, 1_000], other)
    tx = registry.updateSplitFor(
        asset_id, [other, third], [9_000, 1_000], deadline, _sign(typed, other), {"from": third}
    )
    assert_event(tx, "SplitUpdated", assetId=asset_id, recipients=[other, third], shares=[9_000, 1_000])
    assert_same(split_of(registry, asset_id), ([other, third], [9_000, 1_000]))
    # Invalid splits are refused as in updateSplit, even when signed.
    typed, deadline = _split_update(registry, asset_id, [other], [9_999], other)
    with brownie.reverts(custom_error("SharesNotWhole", 9_999)):
        registry.updateSplitFor(asset_id, [other], [9_999], deadline, _sign(typed, other), {"from": third})
