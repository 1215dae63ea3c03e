"""What a payee can claim, with proofs and ready-to-send ``claimMany`` calldata (docs/settlement.md).

Claims are pulled by the payee from SettlementVault: ``claimMany(claims, recipient)`` from its own
wallet, or ``claimManyFor`` sent by the platform's relayer (which pays the gas) with the payee's EIP-712
authorization of exactly those claims. The claimed flag is read from the vault at request time, never
from the database.
"""

from __future__ import annotations

from typing import Any

from eth_utils import is_address, to_checksum_address
from hexbytes import HexBytes
from pydantic import BaseModel, Field
from sqlalchemy import select
from sqlalchemy.orm import Session

from edgeledger.chain.client import ChainClient
from edgeledger.ledger.hashing import keccak256
from edgeledger.settlement import SettlementError
from edgeledger.settlement.flows import VAULT, payout_tree
from edgeledger.settlement.models import Settlement, SettlementKind, SettlementPayout, SettlementState
from edgeledger.settlement.schemas import EarningItem, EarningsRead, EarningTotals

#: settlements whose leaves are on chain (claimable now, or after the window / a challenge)
ON_CHAIN_STATES = (SettlementState.posted, SettlementState.challenged, SettlementState.claimable)


class ClaimItem(BaseModel):
    settlement_id: int
    period_id: int
    period_start: int
    merchant: str
    token: str
    amount: int
    proof: list[str]
    state: str
    claims_open_at: int | None
    claimed: bool


class ClaimCall(BaseModel):
    """A transaction for the payee's wallet: send ``data`` to ``to`` from the payee's address."""

    to: str
    data: str
    function: str
    claims: int
    total_by_token: dict[str, int]


class ClaimsRead(BaseModel):
    payee: str
    items: list[ClaimItem]
    #: claimable now and not yet claimed, in one claimMany; null when there is nothing
    call: ClaimCall | None


def _payee(address: str) -> str:
    if not is_address(address):
        raise SettlementError(f"{address!r} is not an address", code="address_invalid")
    return to_checksum_address(address)


def payouts_of(
    session: Session, payee: str, states: tuple[str, ...] | None = None
) -> list[tuple[Settlement, int]]:
    """``(settlement, amount)`` of every payout to ``payee`` (in ``states``), oldest period first."""
    query = (
        select(Settlement, SettlementPayout.amount)
        .join(SettlementPayout, SettlementPayout.settlement_pk == Settlement.id)
        .where(SettlementPayout.payee == payee.lower())
        .order_by(Settlement.period_start, Settlement.id)
    )
    if states is not None:
        query = query.where(Settlement.state.in_(list(states)))
    return [(settlement, int(amount)) for settlement, amount in session.execute(query).all()]


def claim_items(session: Session, chain: ChainClient, payee: str) -> list[ClaimItem]:
    """Every on-chain payout of ``payee``, oldest period first, with its proof and claimed flag."""
    payee = _payee(payee)
    rows = payouts_of(session, payee, ON_CHAIN_STATES)
    flags = _claimed_flags(chain, [settlement for settlement, _ in rows], payee)
    items: list[ClaimItem] = []
    for (settlement, amount), claimed in zip(rows, flags, strict=True):
        proof = payout_tree(session, settlement).proof(payee)
        assert proof.amount == amount
        merchant = to_checksum_address(settlement.merchant_address)
        items.append(
            ClaimItem(
                settlement_id=settlement.id,
                period_id=settlement.period_id,
                period_start=settlement.period_start,
                merchant=merchant,
                token=to_checksum_address(settlement.token),
                amount=amount,
                proof=["0x" + p.hex() for p in proof.proof],
                state=settlement.state,
                claims_open_at=settlement.claims_open_at,
                claimed=claimed,
            )
        )
    return items


def _claimed_flags(chain: ChainClient, settlements: list[Settlement], payee: str) -> list[bool]:
    """``SettlementVault.isClaimed`` of ``payee`` for each settlement, read at one block in batched calls
    (a year of daily periods is a few round trips, not one per period)."""
    if not settlements:
        return []
    vault = chain.contract(VAULT)
    reads = [
        vault.functions.isClaimed(s.period_id, to_checksum_address(s.merchant_address), payee)
        for s in settlements
    ]
    return [bool(flag) for flag in chain.call_many(reads)]


def open_claims(items: list[ClaimItem]) -> list[ClaimItem]:
    """Claimable now, not claimed, sorted by token so claimMany pays each token in one transfer."""
    ready = [i for i in items if i.state == SettlementState.claimable and not i.claimed]
    return sorted(ready, key=lambda i: (i.token.lower(), i.period_id, i.merchant.lower()))


def claim_args(items: list[ClaimItem]) -> list[tuple[int, str, int, list[HexBytes]]]:
    return [(i.period_id, i.merchant, i.amount, [HexBytes(p) for p in i.proof]) for i in items]


def claim_call(chain: ChainClient, items: list[ClaimItem], recipient: str | None = None) -> ClaimCall | None:
    """``claimMany`` calldata over ``items`` (already filtered by :func:`open_claims`)."""
    if not items:
        return None
    to = _payee(recipient) if recipient else "0x" + "00" * 20
    vault = chain.contract(VAULT)
    data = vault.encode_abi("claimMany", args=[claim_args(items), to])
    totals: dict[str, int] = {}
    for item in items:
        totals[item.token] = totals.get(item.token, 0) + item.amount
    return ClaimCall(
        to=vault.address,
        data=data if isinstance(data, str) else "0x" + bytes(data).hex(),
        function="claimMany((uint64,address,uint256,bytes32[])[],address)",
        claims=len(items),
        total_by_token=totals,
    )


def claims_of(session: Session, chain: ChainClient, payee: str, recipient: str | None = None) -> ClaimsRead:
    items = claim_items(session, chain, payee)
    return ClaimsRead(payee=_payee(payee), items=items, call=claim_call(chain, open_claims(items), recipient))


# ----------------------------------------------------------------------------------------------
# Relayed claims (SettlementVault.claimManyFor, docs/settlement-leaf.md "Relayed claims")
# ----------------------------------------------------------------------------------------------

AUTHORIZATION_TYPES = {
    "EIP712Domain": [
        {"name": "name", "type": "string"},
        {"name": "version", "type": "string"},
        {"name": "chainId", "type": "uint256"},
        {"name": "verifyingContract", "type": "address"},
    ],
    "ClaimAuthorization": [
        {"name": "payee", "type": "address"},
        {"name": "claimsHash", "type": "bytes32"},
        {"name": "recipient", "type": "address"},
        {"name": "nonce", "type": "uint256"},
        {"name": "deadline", "type": "uint256"},
    ],
}
VAULT_DOMAIN = {"name": "EdgeLedger SettlementVault", "version": "1"}
ZERO_ADDRESS = "0x" + "00" * 20


class ClaimRef(BaseModel):
    period_id: int
    merchant: str
    amount: int


class Authorization(BaseModel):
    """What the payee signs (EIP-712 typed data, e.g. with eth_signTypedData_v4) to have the platform
    relay exactly ``claims`` and pay the gas."""

    claims: list[ClaimRef]
    typed_data: dict[str, Any]


class RelayRequest(BaseModel):
    claims: list[ClaimRef] = Field(min_length=1, max_length=200)
    recipient: str | None = None
    deadline: int = Field(gt=0)
    signature: str = Field(pattern=r"^0x[0-9a-fA-F]+$")


class RelayResult(BaseModel):
    tx_hash: str
    block_number: int
    claims: int
    total_by_token: dict[str, int]


def claims_hash(refs: list[ClaimRef]) -> bytes:
    encoded = b"".join(
        r.period_id.to_bytes(32, "big")
        + bytes(12)
        + bytes.fromhex(_payee(r.merchant)[2:])
        + r.amount.to_bytes(32, "big")
        for r in refs
    )
    return keccak256(encoded)


def authorization(
    session: Session, chain: ChainClient, payee: str, recipient: str | None, valid_for: int
) -> Authorization:
    """The typed data authorizing the relay of everything claimable now (see :func:`open_claims`), valid
    for ``valid_for`` seconds by the chain's clock (the vault compares the deadline with its
    ``block.timestamp``, not with this server's time)."""
    payee = _payee(payee)
    deadline = chain.latest_timestamp() + valid_for
    ready = open_claims(claim_items(session, chain, payee))
    if not ready:
        raise SettlementError(f"{payee} has nothing claimable now", code="nothing_to_claim", status=409)
    refs = [ClaimRef(period_id=i.period_id, merchant=i.merchant, amount=i.amount) for i in ready]
    vault = chain.contract(VAULT)
    nonce = int(chain.call(vault.functions.nonces(payee)))
    typed = {
        "types": AUTHORIZATION_TYPES,
        "primaryType": "ClaimAuthorization",
        "domain": {**VAULT_DOMAIN, "chainId": chain.chain_id, "verifyingContract": vault.address},
        "message": {
            "payee": payee,
            "claimsHash": "0x" + claims_hash(refs).hex(),
            "recipient": _payee(recipient) if recipient else ZERO_ADDRESS,
            "nonce": nonce,
            "deadline": deadline,
        },
    }
    return Authorization(claims=refs, typed_data=typed)


def relay(session: Session, chain: ChainClient, payee: str, request: RelayRequest) -> RelayResult:
    """Submits the payee's signed claims with the server signer (which pays the gas). The vault checks
    the signature, the proofs and everything else; the proofs come from the stored payout trees. A
    deadline already past by the chain's clock is refused before anything is sent (422
    ``authorization_expired``: the vault would revert with ``AuthorizationExpired``)."""
    payee = _payee(payee)
    now = chain.latest_timestamp()
    if request.deadline <= now:
        raise SettlementError(
            f"the authorization expired at {request.deadline}; the chain's clock reads {now}: sign a new one",
            code="authorization_expired",
            status=422,
            deadline=request.deadline,
            chain_time=now,
        )
    by_key = {(i.period_id, i.merchant.lower()): i for i in claim_items(session, chain, payee)}
    args = []
    totals: dict[str, int] = {}
    for ref in request.claims:
        item = by_key.get((ref.period_id, ref.merchant.lower()))
        if item is None or item.amount != ref.amount:
            raise SettlementError(
                f"no payout of {ref.amount} to {payee} from {ref.merchant} in period {ref.period_id}",
                code="claim_unknown",
                status=404,
            )
        if item.claimed or item.state != SettlementState.claimable:
            raise SettlementError(
                f"period {ref.period_id} of {ref.merchant} is {'claimed' if item.claimed else item.state}",
                code="claim_not_open",
                status=409,
            )
        args.append((item.period_id, item.merchant, item.amount, [HexBytes(p) for p in item.proof]))
        totals[item.token] = totals.get(item.token, 0) + item.amount
    recipient = _payee(request.recipient) if request.recipient else ZERO_ADDRESS
    fn = chain.contract(VAULT).functions.claimManyFor(
        payee, args, recipient, request.deadline, HexBytes(request.signature)
    )
    result = chain.transact(fn)
    return RelayResult(
        tx_hash=result.tx_hash, block_number=result.block_number, claims=len(args), total_by_token=totals
    )


def earnings_of(session: Session, chain: ChainClient, payee: str) -> EarningsRead:
    """Every settlement that pays ``payee`` (periods, corrections, releases) with the vault's claimed flag
    read now, and per token the running ledger across periods (schemas.EarningTotals)."""
    rows = payouts_of(session, payee)
    on_chain = [settlement for settlement, _ in rows if settlement.state in ON_CHAIN_STATES]
    flags = dict(zip((s.id for s in on_chain), _claimed_flags(chain, on_chain, payee), strict=True))
    items: list[EarningItem] = []
    totals: dict[str, EarningTotals] = {}
    for settlement, amount in rows:
        merchant = to_checksum_address(settlement.merchant_address)
        token = to_checksum_address(settlement.token)
        claimed = flags.get(settlement.id, False)
        items.append(
            EarningItem(
                settlement_id=settlement.id,
                period_id=settlement.period_id,
                period_start=settlement.period_start,
                attempt=settlement.attempt,
                merchant=merchant,
                token=token,
                amount=int(amount),
                state=settlement.state,
                claims_open_at=settlement.claims_open_at,
                claimed=claimed,
                kind=settlement.kind,
            )
        )
        if settlement.state == SettlementState.cancelled:
            continue
        bucket = totals.setdefault(token, EarningTotals())
        bucket.earned += int(amount)
        if settlement.kind == SettlementKind.release:
            bucket.released += int(amount)
        if not claimed:
            bucket.unclaimed += int(amount)
        if claimed:
            bucket.claimed += int(amount)
        elif settlement.state == SettlementState.claimable:
            bucket.claimable += int(amount)
        elif settlement.state in ON_CHAIN_STATES:
            bucket.pending += int(amount)
        else:
            bucket.not_posted += int(amount)
    return EarningsRead(payee=payee, items=items, totals=totals)
