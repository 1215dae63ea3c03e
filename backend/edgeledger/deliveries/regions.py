"""CDN pricing regions of countries, in the style of CloudFront's price classes.

Every ISO 3166-1 alpha-2 code of :data:`edgeledger.territories.TERRITORY_CODES` maps to exactly one
region (tests/backend/test_ingest.py checks the table is complete and has no other codes):

====  =========================================================================================
NA    United States, Canada, Mexico, Central America, the Caribbean, Bermuda, Greenland
SA    South America (with the Falklands and South Georgia)
EU    Europe (EU, EFTA, the Balkans, Ukraine, Belarus, Russia, Turkey, the Caucasus) and Israel
ME    Middle East (the Gulf, the Levant except Israel, Iran, Iraq, Yemen)
AF    Africa (with its Atlantic and Indian Ocean islands, and Bouvet Island)
JP    Japan
AU    Australia and New Zealand (with their external territories and the Cook Islands, Niue, Tokelau,
      and Antarctica, which is served through them)
IN    India
AP    the rest of Asia-Pacific (East, South-East, South and Central Asia, the Pacific islands)
ZZ    unknown country (a record's country is ``""`` when neither the log nor the edge location says)
====  =========================================================================================

Providers price by the edge that served a request, we price by the client's country; the two agree for
almost all traffic because CDNs route clients to nearby edges.
"""

from __future__ import annotations

from edgeledger.territories import TERRITORY_CODES

UNKNOWN_REGION = "ZZ"

_TABLE: dict[str, str] = {
    "NA": """
        US CA MX PR VI UM BM PM GL
        BZ GT SV HN NI CR PA
        AG AI AW BB BL BQ BS CU CW DM DO GD GP HT JM KN KY LC MF MQ MS SX TC TT VC VG
    """,
    "SA": "AR BO BR CL CO EC FK GF GS GY PE PY SR UY VE",
    "EU": """
        AD AL AT AX BA BE BG BY CH CY CZ DE DK EE ES FI FO FR GB GG GI GR HR HU IE IM IS IT JE LI LT LU
        LV MC MD ME MK MT NL NO PL PT RO RS RU SE SI SJ SK SM UA VA TR AM AZ GE IL
    """,
    "ME": "AE BH IQ IR JO KW LB OM PS QA SA SY YE",
    "AF": """
        AO BF BI BJ BV BW CD CF CG CI CM CV DJ DZ EG EH ER ET GA GH GM GN GQ GW KE KM LR LS LY MA MG ML
        MR MU MW MZ NA NE NG RE RW SC SD SH SL SN SO SS ST SZ TD TF TG TN TZ UG YT ZA ZM ZW
    """,
    "JP": "JP",
    "AU": "AU NZ CX CC NF HM CK NU TK AQ",
    "IN": "IN",
    "AP": """
        AF AS BD BN BT CN FJ FM GU HK ID IO KG KH KI KP KR KZ LA LK MH MM MN MO MP MV MY NC NP NR PF PG
        PH PK PN PW SB SG TH TJ TL TM TO TV TW UZ VN VU WF WS
    """,
}

#: Country code -> region code.
REGIONS: dict[str, str] = {code: region for region, codes in _TABLE.items() for code in codes.split()}
#: Every region code, the unknown one last.
REGION_CODES: tuple[str, ...] = (*_TABLE, UNKNOWN_REGION)

# Fail at import rather than price a country as unknown: the table must cover the territory table exactly.
_missing = set(TERRITORY_CODES) - set(REGIONS)
_extra = set(REGIONS) - set(TERRITORY_CODES)
if _missing or _extra or sum(len(c.split()) for c in _TABLE.values()) != len(REGIONS):
    raise RuntimeError(f"region table out of step with TERRITORY_CODES: missing {_missing}, extra {_extra}")
del _missing, _extra


def region_of(country: str) -> str:
    """Pricing region of an alpha-2 country code (any case); ``"ZZ"`` for ``""`` or an unknown code."""
    return REGIONS.get(country.upper(), UNKNOWN_REGION) if country else UNKNOWN_REGION
