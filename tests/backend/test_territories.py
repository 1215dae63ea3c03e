"""Pure unit tests: the territory table, its bitmap encoding, and that docs and contract agree with it."""

from __future__ import annotations

import re

import pytest

from edgeledger.config import PROJECT_ROOT
from edgeledger.territories import (
    ALL_TERRITORIES_BITMAP,
    TERRITORY_CODES,
    UnknownTerritoryError,
    decode_territories,
    encode_territories,
    territory_index,
)
from scripts.territories_doc import DOC, render


def test_table_is_sorted_unique_alpha2() -> None:
    assert list(TERRITORY_CODES) == sorted(set(TERRITORY_CODES))
    assert all(re.fullmatch(r"[A-Z]{2}", code) for code in TERRITORY_CODES)
    assert len(TERRITORY_CODES) == 249 and TERRITORY_CODES[0] == "AD" and TERRITORY_CODES[-1] == "ZW"


def test_contract_and_docs_use_the_same_table() -> None:
    source = (PROJECT_ROOT / "contracts" / "ContentRegistry.sol").read_text()
    (count,) = re.findall(r"TERRITORY_COUNT = (\d+);", source)
    assert int(count) == len(TERRITORY_CODES)
    assert DOC.read_text() == render(), "docs/territories.md is stale: run scripts/territories_doc.py"


def test_encode_decode_round_trip() -> None:
    bitmap = encode_territories(["de", " FR", "US", "DE"])
    assert bitmap == (1 << territory_index("DE")) | (1 << territory_index("FR")) | (
        1 << territory_index("US")
    )
    assert decode_territories(bitmap) == ["DE", "FR", "US"]
    assert encode_territories(["*"]) == ALL_TERRITORIES_BITMAP
    assert decode_territories(ALL_TERRITORIES_BITMAP) == list(TERRITORY_CODES)


def test_unknown_codes_are_named() -> None:
    with pytest.raises(UnknownTerritoryError) as error:
        encode_territories(["DE", "XX", "EU", "USA"])
    assert error.value.codes == ["XX", "EU", "USA"]


def test_bits_outside_the_table_are_rejected() -> None:
    with pytest.raises(ValueError, match="outside"):
        decode_territories(1 << len(TERRITORY_CODES))
    with pytest.raises(ValueError, match="outside"):
        decode_territories(-1)
