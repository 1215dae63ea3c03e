"""Shared fixtures and helpers for the ContentRegistry tests (run by brownie: `make test-contracts`).

Accounts: accounts[0] is the admin (DEFAULT_ADMIN_ROLE), accounts[1] holds REGISTRAR_ROLE, accounts[2]
holds ARBITER_ROLE; accounts[3:] are plain creators / users without any role.
"""

import secrets
from enum import IntEnum

import pytest
from brownie import ContentRegistry, web3
from brownie.exceptions import decode_typed_error
from eth_abi import encode

TOTAL_BPS = 10_000
MAX_RECIPIENTS = 50
TERRITORY_COUNT = 249
ZERO_ADDRESS = "0x0000000000000000000000000000000000000000"
ZERO_HASH = b"\x00" * 32
# Arbitrary but fixed instants (unix seconds) for licence windows.
T0 = 1_700_000_000
T1 = 1_800_000_000

_BASE32 = "abcdefghijklmnopqrstuvwxyz234567"


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


def random_cid() -> str:
    """A CIDv1-looking string (base32, raw codec, sha2-256: 'bafkrei' + 52 characters)."""
    return "bafkrei" + "".join(secrets.choice(_BASE32) for _ in range(52))


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
    contract = ContentRegistry.deploy(admin, {"from": admin})
    contract.grantRole(contract.REGISTRAR_ROLE(), registrar, {"from": admin})
    contract.grantRole(contract.ARBITER_ROLE(), arbiter, {"from": admin})
    return contract


@pytest.fixture
def register(registry):
    """register(creator, sender=None, **overrides) -> (assetId, tx, registration tuple)."""

    def _register(creator, sender=None, **overrides):
        reg = registration(creator, **overrides)
        tx = registry.registerAsset(reg, {"from": sender or creator})
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
