"""The edge-location table: the country (hence pricing region and data zone) of a CDN edge location."""

from __future__ import annotations

from edgeledger.deliveries.parsers.fields import Reason, _Bad
from edgeledger.territories import TERRITORY_CODES

# IATA airport (or metro) code that starts a CloudFront edge location name (e.g. "FRA56-P7") -> ISO
# 3166-1 alpha-2 country of that airport. Compiled from the airport codes CloudFront uses in
# x-edge-location and AWS's published list of edge location cities; Cloudflare's EdgeColoCode and the
# edge-node format use the same IATA convention. Unknown codes map to "" (unknown country).
_EDGE_TABLE = """
    ATL US  BNA US  BOS US  CMH US  DEN US  DFW US  DTW US  EWR US  HIO US  HNL US  IAD US  IAH US
    IND US  JAX US  JFK US  LAS US  LAX US  MCI US  MIA US  MSP US  ORD US  PDX US  PHL US  PHX US
    PIT US  SEA US  SFO US  SJC US  SLC US  ANC US  BUF US  CLT US  MCO US  SAN US  STL US  TPA US
    YUL CA  YTO CA  YYZ CA  YVR CA  YYC CA  QRO MX  MEX MX  GDL MX
    GRU BR  GIG BR  FOR BR  POA BR  EZE AR  SCL CL  BOG CO  LIM PE
    AMS NL  ARN SE  ATH GR  BCN ES  BER DE  BRU BE  BUD HU  CDG FR  CPH DK  DUB IE  DUS DE  EDI GB
    FCO IT  FRA DE  HAM DE  HEL FI  IST TR  LHR GB  LIS PT  MAD ES  MAN GB  MRS FR  MUC DE  MXP IT
    OSL NO  OTP RO  PMO IT  PRG CZ  SOF BG  TXL DE  VIE AT  WAW PL  ZAG HR  ZRH CH
    BAH BH  DOH QA  DXB AE  FJR AE  JED SA  RUH SA  TLV IL
    CAI EG  CPT ZA  JNB ZA  LOS NG  NBO KE
    BLR IN  BOM IN  CCU IN  DEL IN  HYD IN  MAA IN  PNQ IN  CMB LK
    BKK TH  CGK ID  HAN VN  HKG HK  ICN KR  KIX JP  KUL MY  MNL PH  NRT JP  HND JP  SGN VN  SIN SG
    TPE TW  PEK CN  PVG CN  SZX CN  ZHY CN
    AKL NZ  BNE AU  MEL AU  PER AU  SYD AU
"""


_edge_tokens = _EDGE_TABLE.split()


EDGE_LOCATION_COUNTRIES: dict[str, str] = dict(zip(_edge_tokens[::2], _edge_tokens[1::2], strict=True))
del _edge_tokens


_COUNTRIES = frozenset(TERRITORY_CODES)


def edge_location_country(edge_location: str) -> str:
    """Country of an edge location from its leading IATA code (``"FRA56-P7"`` -> ``"DE"``), or ``""``."""
    return EDGE_LOCATION_COUNTRIES.get(edge_location[:3].upper(), "")


def _check_edge_location(loc: str, field_name: str) -> str:
    if not loc or loc == "-":
        raise _Bad(Reason.missing_field, f"{field_name} is empty")
    if len(loc) > 16 or not loc.isascii() or not loc.isprintable() or " " in loc:
        raise _Bad(Reason.bad_edge_location, f"{field_name} {loc[:40]!r} is not 1-16 printable ASCII chars")
    return loc


def _country_code(value: str, edge_location: str) -> str:
    """A logged client country: "" -> the edge location's; a valid alpha-2 code -> it; else "" (unknown)."""
    if not value:
        return edge_location_country(edge_location)
    code = value.upper()
    return code if code in _COUNTRIES else ""
