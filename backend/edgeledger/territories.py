"""Territory code table shared by the contracts, the API and the CLI.

A licence's territories are a ``uint256`` bitmap: bit ``i`` set means the asset may be delivered in
``TERRITORY_CODES[i]``. The table is ISO 3166-1 alpha-2 (249 officially assigned codes), sorted
alphabetically. It is append-only: a code assigned in future takes the next free bit (249..255), so an
existing bitmap never changes meaning. ``ContentRegistry.TERRITORY_COUNT`` must equal
``len(TERRITORY_CODES)``.
"""

from __future__ import annotations

from collections.abc import Iterable

TERRITORY_CODES: tuple[str, ...] = tuple(
    """
    AD AE AF AG AI AL AM AO AQ AR AS AT AU AW AX AZ BA BB BD BE BF BG BH BI BJ BL BM BN BO BQ BR BS BT BV BW
    BY BZ CA CC CD CF CG CH CI CK CL CM CN CO CR CU CV CW CX CY CZ DE DJ DK DM DO DZ EC EE EG EH ER ES ET FI
    FJ FK FM FO FR GA GB GD GE GF GG GH GI GL GM GN GP GQ GR GS GT GU GW GY HK HM HN HR HT HU ID IE IL IM IN
    IO IQ IR IS IT JE JM JO JP KE KG KH KI KM KN KP KR KW KY KZ LA LB LC LI LK LR LS LT LU LV LY MA MC MD ME
    MF MG MH MK ML MM MN MO MP MQ MR MS MT MU MV MW MX MY MZ NA NC NE NF NG NI NL NO NP NR NU NZ OM PA PE PF
    PG PH PK PL PM PN PR PS PT PW PY QA RE RO RS RU RW SA SB SC SD SE SG SH SI SJ SK SL SM SN SO SR SS ST SV
    SX SY SZ TC TD TF TG TH TJ TK TL TM TN TO TR TT TV TW TZ UA UG UM US UY UZ VA VC VE VG VI VN VU WF WS YE
    YT ZA ZM ZW
    """.split()
)
TERRITORY_COUNT = len(TERRITORY_CODES)
_INDEX = {code: i for i, code in enumerate(TERRITORY_CODES)}
WORLDWIDE = "*"
ALL_TERRITORIES_BITMAP = (1 << TERRITORY_COUNT) - 1


class UnknownTerritoryError(ValueError):
    """A code that is not in the table (raised with the offending codes)."""

    def __init__(self, codes: list[str]) -> None:
        super().__init__(f"unknown ISO 3166-1 alpha-2 territory code(s): {', '.join(codes)}")
        self.codes = codes


def territory_index(code: str) -> int:
    """Bit index of one alpha-2 code (case-insensitive)."""
    try:
        return _INDEX[code.strip().upper()]
    except KeyError:
        raise UnknownTerritoryError([code]) from None


def encode_territories(codes: Iterable[str]) -> int:
    """Bitmap for a list of codes; ``"*"`` means every territory in the table."""
    bitmap = 0
    unknown: list[str] = []
    for raw in codes:
        code = raw.strip().upper()
        if code == WORLDWIDE:
            bitmap |= ALL_TERRITORIES_BITMAP
        elif code in _INDEX:
            bitmap |= 1 << _INDEX[code]
        else:
            unknown.append(raw)
    if unknown:
        raise UnknownTerritoryError(unknown)
    return bitmap


def decode_territories(bitmap: int) -> list[str]:
    """Codes whose bits are set, in table order."""
    if bitmap < 0 or bitmap >> TERRITORY_COUNT:
        raise ValueError("bitmap has bits outside the territory table")
    return [code for i, code in enumerate(TERRITORY_CODES) if bitmap >> i & 1]
