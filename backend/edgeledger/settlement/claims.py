"""What a payee can claim, with proofs and ready-to-send ``claimMany`` calldata (docs/settlement.md).

Claims are pulled by the payee from SettlementVault: ``claimMany(claims, recipient)`` from its own
wallet. The claimed flag is read from the vault at request time, never from the database.
"""

from __future__ import annotations

from eth_utils import is_address, to_checksum_address
from hexbytes import HexBytes
from pydantic import BaseModel
from sqlalchemy import select
from sqlalchemy.orm import Session

from edgeledger.chain.client import ChainClient
from edgeledger.settlement import SettlementError
from edgeledger.settlement.flows import VAULT, payout_tree
from edgeledger.settlement.models import Settlement, SettlementPayout, SettlementState

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


def claim_items(session: Session, chain: ChainClient, payee: str) -> list[ClaimItem]:
    """Every on-chain payout of ``payee``, oldest period first, with its proof and claimed flag."""
    payee = _payee(payee)
    rows = session.execute(
        select(Settlement, SettlementPayout.amount)
        .join(SettlementPayout, SettlementPayout.settlement_pk == Settlement.id)
        .where(SettlementPayout.payee == payee.lower(), Settlement.state.in_(list(ON_CHAIN_STATES)))
        .order_by(Settlement.period_start, Settlement.id)
    ).all()
    vault = chain.contract(VAULT)
    items: list[ClaimItem] = []
    for settlement, amount in rows:
        proof = payout_tree(session, settlement).proof(payee)
        assert proof.amount == amount
        merchant = to_checksum_address(settlement.merchant_address)
        claimed = bool(chain.call(vault.functions.isClaimed(settlement.period_id, merchant, payee)))
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
