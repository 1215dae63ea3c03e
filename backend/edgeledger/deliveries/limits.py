"""Upload limits of log ingestion: what one upload may cost before it is refused (docs/ingestion.md,
"Upload limits").

A log upload is read as a stream (:class:`UploadLines`): bytes as received (hashed and counted), gunzipped
when they are gzip, counted again as decompressed bytes, decoded, cut into lines of bounded length and
numbered. The limits are checked there, while the bytes flow: the byte limit within one 64 KiB read past
it, the line limits on the line that breaks them, the ratio once the bytes decompressed outrun the bytes
received (read ahead up to 64 KiB at a time) by the ratio:

==================================  ======  ==================================================
setting                             status  code
==================================  ======  ==================================================
``INGEST_MAX_DECOMPRESSED_BYTES``   413     ``upload_decompressed_too_large``
``INGEST_MAX_COMPRESSION_RATIO``    413     ``upload_ratio_too_high`` (judged past the first MiB)
``INGEST_MAX_LINES``                413     ``upload_too_many_lines``
``INGEST_MAX_LINE_CHARS``           422     ``upload_line_too_long``
``INGEST_MAX_QUARANTINED_LINES``    422     ``upload_too_many_quarantined`` (checked by ingest.py)
==================================  ======  ==================================================

Every refusal is an :class:`IngestLimitError` whose details name the setting (``limit``), its configured
value (``configured``), the line it tripped on (``line``: the lines read so far when a byte limit trips)
and the bytes read by then (``received_bytes``, ``decompressed_bytes``).

Memory: only the raw text of the last :data:`RAW_WINDOW` lines is kept (cut to :data:`RAW_KEEP`
characters), for the parsers' look-ahead of ``DETECT_LINES`` lines; ingestion copies the raw text of the
lines that became records into its chunk (a record may still be quarantined when its chunk is written)
and nothing else. Comment, blank and junk lines leave nothing behind however many arrive.
"""

from __future__ import annotations

import hashlib
import io
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from functools import partial
from typing import IO

from edgeledger.config import Settings
from edgeledger.deliveries.parsers.text import DETECT_LINES, _open_text
from edgeledger.deliveries.records import _IP_CHARS, _MASK_WINDOW
from edgeledger.deliveries.service import DeliveryError

__all__ = ["RAW_KEEP", "RAW_WINDOW", "IngestLimitError", "UploadLimits", "UploadLines"]

#: Raw characters kept per line: one more than IP masking examines, so a cut line is known to be cut.
RAW_KEEP = _MASK_WINDOW + 1
#: Lines whose raw text is kept (a power of two, more than the parsers read ahead).
RAW_WINDOW = 64
assert RAW_WINDOW > DETECT_LINES + 1 and RAW_WINDOW & (RAW_WINDOW - 1) == 0
#: Decompressed bytes read before the compression ratio is judged (small files have high ratios too).
RATIO_GRACE_BYTES = 1 << 20


class IngestLimitError(DeliveryError):
    """An upload broke one of the configured limits (details: ``limit``, ``configured``, ``line``,
    ``received_bytes``, ``decompressed_bytes``; ingest_log adds ``ingest_id``)."""


@dataclass(frozen=True, slots=True)
class UploadLimits:
    decompressed_bytes: int
    compression_ratio: int
    line_chars: int
    lines: int
    quarantined: int

    @classmethod
    def from_settings(cls, settings: Settings) -> UploadLimits:
        return cls(
            decompressed_bytes=settings.ingest_max_decompressed_bytes,
            compression_ratio=settings.ingest_max_compression_ratio,
            line_chars=settings.ingest_max_line_chars,
            lines=settings.ingest_max_lines,
            quarantined=settings.ingest_max_quarantined_lines,
        )


class _HashingReader:
    """Binary file wrapper: sha-256 and size of the bytes as received, computed as they are read."""

    def __init__(self, stream: IO[bytes]) -> None:
        self._stream = stream
        self.sha256 = hashlib.sha256()
        self.size = 0

    def readable(self) -> bool:
        return True

    def read(self, size: int = -1) -> bytes:
        data = self._stream.read(size)
        self.sha256.update(data)
        self.size += len(data)
        return data


class _Decompressed(io.BufferedIOBase):
    """The byte stream the text decoder reads (gunzipped when the upload is gzip), counted and checked."""

    def __init__(self, stream: IO[bytes], compressed: bool, lines: UploadLines) -> None:
        super().__init__()
        self._stream = stream
        self._compressed = compressed
        self._lines = lines

    def readable(self) -> bool:
        return True

    def read(self, size: int | None = -1) -> bytes:
        return self._count(self._stream.read(-1 if size is None else size))

    def read1(self, size: int = -1) -> bytes:
        read1 = getattr(self._stream, "read1", self._stream.read)
        return self._count(read1(size))

    def _count(self, data: bytes) -> bytes:
        lines = self._lines
        lines.decompressed += len(data)
        limits = lines.limits
        if lines.decompressed > limits.decompressed_bytes:
            raise lines.refused(
                "upload_decompressed_too_large",
                413,
                "INGEST_MAX_DECOMPRESSED_BYTES",
                limits.decompressed_bytes,
                f"the upload decompresses to more than {limits.decompressed_bytes:,} bytes",
            )
        if (
            self._compressed
            and lines.decompressed > RATIO_GRACE_BYTES
            and lines.decompressed > limits.compression_ratio * max(lines.received, 1)
        ):
            raise lines.refused(
                "upload_ratio_too_high",
                413,
                "INGEST_MAX_COMPRESSION_RATIO",
                limits.compression_ratio,
                f"the gzip data expands more than {limits.compression_ratio}-fold "
                f"({lines.decompressed:,} bytes from {lines.received:,})",
            )
        return data

    def close(self) -> None:
        self._stream.close()
        super().close()


class UploadLines:
    """The text lines of an upload, numbered as the parsers number them, within the limits.

    ``stream`` is a binary file object (plain or gzip) or an iterable of str lines (already decoded: no
    byte limits apply to it). ``raw_of(n)`` is the raw text of line ``n`` while it is among the last
    :data:`RAW_WINDOW` lines; ``held`` is what the lines read since the caller last reset it take in memory
    as Python strings (a character of a non-ASCII line counted as 4 bytes, its widest form).
    """

    def __init__(self, stream: IO[bytes] | Iterable[str], limits: UploadLimits, name: str) -> None:
        self.limits = limits
        self.name = name
        self.number = 0
        self.held = 0
        self.decompressed = 0
        self.raw: list[str] = [""] * RAW_WINDOW
        self.hashing: _HashingReader | None = None
        if hasattr(stream, "read"):
            self.hashing = _HashingReader(stream)  # type: ignore[arg-type]
            text, self._close = _open_text(self.hashing, partial(_Decompressed, lines=self))
            # one more character than a line may hold, plus its terminator: longer is refused unread
            self._lines: Iterable[str] = iter(partial(text.readline, limits.line_chars + 2), "")
        else:  # an iterable of str lines: hash their UTF-8 text
            self._close = lambda: None
            self._lines = stream
            self._sha = hashlib.sha256()
            self._size = 0

    @property
    def received(self) -> int:
        return self.hashing.size if self.hashing is not None else self._size

    def __iter__(self) -> Iterator[str]:
        raw = self.raw
        mask = RAW_WINDOW - 1
        keep = RAW_KEEP
        max_chars = self.limits.line_chars
        max_lines = self.limits.lines
        hashing = self.hashing is None
        for number, line in enumerate(self._lines, 1):
            if hashing:
                data = line.encode("utf-8", "surrogatepass")
                self._sha.update(data)
                self._size += len(data)
            self.number = number
            length = len(line)
            if length > max_chars and len(line.rstrip("\r\n")) > max_chars:
                raise self.refused(
                    "upload_line_too_long",
                    422,
                    "INGEST_MAX_LINE_CHARS",
                    max_chars,
                    f"line {number:,} is longer than {max_chars:,} characters",
                )
            if number > max_lines:
                what = f"more than {max_lines:,} lines"
                raise self.refused("upload_too_many_lines", 413, "INGEST_MAX_LINES", max_lines, what)
            self.held += length if line.isascii() else 4 * length
            raw[number & mask] = line if length < keep else line[:keep].rstrip(_IP_CHARS)
            yield line

    def raw_of(self, number: int) -> str:
        """The kept raw text of line ``number`` ("" once it has left the window)."""
        if self.number - RAW_WINDOW < number <= self.number:
            return self.raw[number & (RAW_WINDOW - 1)]
        return ""

    def refused(
        self, code: str, status: int, limit: str, configured: int, what: str, *, line: int | None = None
    ) -> IngestLimitError:
        """The error of a broken limit, saying which, its configured value and where it tripped (``line``,
        default the last line read)."""
        line = self.number if line is None else line
        where = f"line {line:,}, {self.received:,} bytes received"
        if self.hashing is not None:
            where += f", {self.decompressed:,} decompressed"
        return IngestLimitError(
            f"{self.name}: {what} ({limit} = {configured:,}; tripped at {where})",
            code=code,
            status=status,
            limit=limit,
            configured=configured,
            line=line,
            received_bytes=self.received,
            decompressed_bytes=self.decompressed if self.hashing is not None else None,
        )

    def digest(self) -> tuple[str, int]:
        if self.hashing is not None:
            return self.hashing.sha256.hexdigest(), self.hashing.size
        return self._sha.hexdigest(), self._size

    def close(self) -> None:
        self._close()
