"""Languages of the web app: which one a request gets, its messages, and locale formatting.

* Negotiation: the ``edgeledger_lang`` cookie (set by the page's language switch) wins, else the
  browser's ``Accept-Language`` (q-values honoured, ``zh``/``zh-Hans``/``zh-SG`` map to Simplified
  Chinese), else English. Only :data:`LANGUAGES` can come out, so nothing a client sends reaches a page.
* Catalogs are data: every ``catalogs/*.json`` file is ``{"en": {key: text}, "zh-CN": {key: text}}`` for
  one area of the app (``base.json``, ``creator.json``, ...). Files are merged at import; a key defined by
  two files is an error, so areas can be added without touching each other's files.
  :func:`missing_keys` lists keys one language lacks (a test keeps it empty). Texts may use
  ``{name}`` placeholders filled by :meth:`Translator.__call__`.
* Formatting never uses floats: token amounts are integer minor units split with ``divmod`` by
  ``10**decimals``; dates are UTC, in the locale's order (``6 Dec 2026`` / ``2026年12月6日``).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

LANGUAGES = ("en", "zh-CN")
DEFAULT = "en"
COOKIE = "edgeledger_lang"
CATALOG_DIR = Path(__file__).parent / "catalogs"
#: Display names in the switch: each language in itself.
NATIVE_NAMES = {"en": "English", "zh-CN": "简体中文"}
_MONTHS_EN = ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec")


def load_catalogs(directory: Path = CATALOG_DIR) -> dict[str, dict[str, str]]:
    """``{language: {key: text}}`` merged from every JSON file in ``directory``."""
    merged: dict[str, dict[str, str]] = {lang: {} for lang in LANGUAGES}
    owner: dict[str, str] = {}
    for path in sorted(directory.glob("*.json")):
        data = json.loads(path.read_text(encoding="utf-8"))
        for lang, texts in data.items():
            if lang not in merged:
                raise ValueError(f"{path.name}: unknown language {lang!r}")
            for key, text in texts.items():
                if key in merged[lang]:
                    raise ValueError(f"{path.name}: key {key!r} already defined in {owner[lang + key]}")
                merged[lang][key] = str(text)
                owner[lang + key] = path.name
    return merged


CATALOGS = load_catalogs()


def missing_keys(catalogs: dict[str, dict[str, str]] | None = None) -> dict[str, list[str]]:
    """Per language, the keys another language has and it lacks."""
    catalogs = catalogs if catalogs is not None else CATALOGS
    every = set().union(*(set(texts) for texts in catalogs.values()))
    return {lang: sorted(every - set(texts)) for lang, texts in catalogs.items() if every - set(texts)}


def _normalise(tag: str) -> str | None:
    tag = tag.strip().lower().replace("_", "-")
    if tag == "zh" or tag.startswith(("zh-cn", "zh-hans", "zh-sg")):
        return "zh-CN"
    if tag == "en" or tag.startswith("en-"):
        return "en"
    return None


def parse_accept_language(header: str) -> str | None:
    """The best supported language of an ``Accept-Language`` header, or None (bounded: first 32 tags)."""
    choices: list[tuple[float, int, str]] = []
    for index, part in enumerate(header[:1000].split(",")[:32]):
        tag, _, params = part.partition(";")
        q = 1.0
        params = params.strip()
        if params.startswith("q="):
            try:
                q = float(params[2:])  # a preference weight, never money
            except ValueError:
                q = 0.0
        lang = _normalise(tag)
        if lang is not None and q > 0:
            choices.append((-q, index, lang))
    return min(choices)[2] if choices else None


def negotiate(cookie: str | None, accept_language: str | None) -> str:
    if cookie in LANGUAGES:
        return str(cookie)
    return parse_accept_language(accept_language or "") or DEFAULT


# --- formatting ------------------------------------------------------------------------------------


def format_int(value: int) -> str:
    """Grouped by thousands (both languages group by three with a comma)."""
    return f"{int(value):,}"


def format_amount(minor: int, decimals: int, symbol: str = "") -> str:
    """``minor`` units of a token with ``decimals`` as a grouped decimal (trailing zeros kept to two
    places at least), e.g. ``12,345.60 tUSDC``. Integer arithmetic only."""
    minor = int(minor)
    sign = "-" if minor < 0 else ""
    whole, frac = divmod(abs(minor), 10**decimals) if decimals > 0 else (abs(minor), 0)
    text = f"{sign}{whole:,}"
    if decimals > 0:
        digits = str(frac).rjust(decimals, "0").rstrip("0")
        digits = digits.ljust(min(2, decimals), "0")
        text += "." + digits
    return f"{text} {symbol}".strip()


def _dt(ts: int | float | datetime) -> datetime:
    if isinstance(ts, datetime):
        return ts.astimezone(UTC) if ts.tzinfo else ts.replace(tzinfo=UTC)
    return datetime.fromtimestamp(int(ts), UTC)


def format_date(ts: int | float | datetime | None, lang: str) -> str:
    if ts is None:
        return "-"
    d = _dt(ts)
    if lang == "zh-CN":
        return f"{d.year}年{d.month}月{d.day}日"
    return f"{d.day} {_MONTHS_EN[d.month - 1]} {d.year}"


def format_datetime(ts: int | float | datetime | None, lang: str) -> str:
    if ts is None:
        return "-"
    d = _dt(ts)
    return f"{format_date(d, lang)} {d.hour:02d}:{d.minute:02d} UTC"


@dataclass(frozen=True)
class Translator:
    """The messages and formatters of one language, handed to every template as ``_`` and ``fmt``."""

    lang: str

    def __call__(self, key: str, **values: Any) -> str:
        text = CATALOGS[self.lang].get(key) or CATALOGS[DEFAULT].get(key) or key
        return text.format(**values) if values else text

    def has(self, key: str) -> bool:
        return key in CATALOGS[self.lang]

    def number(self, value: int) -> str:
        return format_int(value)

    def amount(self, minor: int, decimals: int, symbol: str = "") -> str:
        return format_amount(minor, decimals, symbol)

    def date(self, ts: int | float | datetime | None) -> str:
        return format_date(ts, self.lang)

    def when(self, ts: int | float | datetime | None) -> str:
        """Date and time (UTC)."""
        return format_datetime(ts, self.lang)

    def messages(self, prefix: str) -> dict[str, str]:
        """Every message under ``prefix`` (for a page script's JSON data block)."""
        return {k: v for k, v in CATALOGS[self.lang].items() if k.startswith(prefix)}
