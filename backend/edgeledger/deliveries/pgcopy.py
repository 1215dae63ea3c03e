"""PostgreSQL's COPY text format for the records ingestion bulk-loads (``ingest._Ingest._insert_records``).

Pure functions: each value rendered as COPY's text input reads it back (backslash, tab, newline and
carriage return escaped; bytea as escaped hex; ``\\N`` for NULL; ``t``/``f`` for booleans).
"""

from __future__ import annotations

from typing import Any

__all__ = ["copy_field", "copy_text"]

_COPY_ESCAPES = str.maketrans({"\\": "\\\\", "\t": "\\t", "\n": "\\n", "\r": "\\r"})


def copy_field(value: Any) -> str:
    """One column in PostgreSQL's COPY text format."""
    if value.__class__ is str:
        return (
            value.translate(_COPY_ESCAPES)
            if ("\\" in value or "\t" in value or "\n" in value or "\r" in value)
            else value
        )
    if value.__class__ is bytes:
        return "\\\\x" + value.hex()  # bytea hex input, its backslash escaped for COPY
    if value is None:
        return "\\N"
    if value.__class__ is bool:
        return "t" if value else "f"
    return str(value)


def copy_text(rows: list[tuple[Any, ...]]) -> str:
    """The rows as one COPY text-format payload (tab-separated columns, one line per row)."""
    field = copy_field
    return "".join(["\t".join([field(v) for v in row]) + "\n" for row in rows])
