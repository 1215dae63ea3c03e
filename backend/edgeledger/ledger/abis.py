"""The contracts' ABIs, as package data generated from the compiled contracts (``scripts/export_abis.py``,
run by ``make compile``; a test fails when they differ from what the contracts compile to). The API, the
worker and the chain-only verifiers all read them from here: no ABI is written by hand, and nothing at run
time needs the build folder.
"""

from __future__ import annotations

import json
from functools import cache
from importlib.resources import files
from typing import Any

from edgeledger.ledger.hashing import keccak256

CONTENT_REGISTRY = "ContentRegistry"
DELIVERY_LEDGER = "DeliveryLedger"
SETTLEMENT_VAULT = "SettlementVault"
TEST_STABLECOIN = "TestStablecoin"


@cache
def _text(name: str) -> str:
    resource = files("edgeledger.ledger").joinpath("abi", f"{name}.json")
    if not resource.is_file():
        raise KeyError(f"no packaged ABI for {name!r}")
    return resource.read_text()


def contract_abi(name: str) -> list[dict[str, Any]]:
    """A fresh copy of the contract's ABI (a list of JSON items); KeyError for an unknown contract."""
    abi: list[dict[str, Any]] = json.loads(_text(name))
    return abi


def names() -> list[str]:
    """The contracts whose ABIs are packaged."""
    return sorted(p.name.removesuffix(".json") for p in files("edgeledger.ledger").joinpath("abi").iterdir())


def event_topic(contract: str, event: str) -> bytes:
    """topic0 of ``event`` as the ABI declares it: keccak256 of its canonical signature."""
    for item in contract_abi(contract):
        if item.get("type") == "event" and item.get("name") == event:
            return keccak256(f"{event}({','.join(abi_type(i) for i in item['inputs'])})".encode())
    raise KeyError(f"{contract} has no event {event!r}")


def abi_type(param: dict[str, Any]) -> str:
    """The canonical type of an ABI parameter (tuples spelled out), as in selectors and topics."""
    if param["type"].startswith("tuple"):
        inner = ",".join(abi_type(c) for c in param["components"])
        return f"({inner}){param['type'][5:]}"
    return str(param["type"])
