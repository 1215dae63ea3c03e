"""Reading a log file as text lines, plain or gzip (detected from the magic bytes), in bounded pieces: the
part every format shares."""

from __future__ import annotations

import gzip
import io
import os
import zlib
from collections.abc import Callable, Iterator
from functools import partial
from typing import IO, Any

from edgeledger.deliveries.records import (
    LogFormatError,
)

#: Longest physical line read in one piece; a longer line is quarantined as ``line_too_long`` and the
#: rest of it is skipped without being held in memory.
MAX_LINE_CHARS = 1 << 20


#: Physical lines read to decide the format of a file.
DETECT_LINES = 20


_GZIP_MAGIC = b"\x1f\x8b"


_READ_CHUNK = 1 << 16


class _Prefixed(io.RawIOBase):
    """A non-seekable binary stream with its first bytes (already read for sniffing) put back."""

    def __init__(self, prefix: bytes, stream: IO[bytes]) -> None:
        self._prefix = prefix
        self._stream = stream

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        view = memoryview(buffer).cast("B")
        if self._prefix:
            n = min(len(view), len(self._prefix))
            view[:n] = self._prefix[:n]
            self._prefix = self._prefix[n:]
            return n
        data = self._stream.read(len(view))
        if not data:
            return 0
        view[: len(data)] = data
        return len(data)


def _source_name(source: Any) -> str:
    if isinstance(source, str | os.PathLike):
        return os.fspath(source)
    name = getattr(source, "name", None)
    return name if isinstance(name, str) else "<stream>"


def _open_text(source: Any, wrap: Callable[[Any, bool], Any] | None = None) -> tuple[Any, Callable[[], None]]:
    """A text stream (or an iterable of str lines) for ``source`` and the function that releases it.

    ``wrap(stream, compressed)``, when given, is put between the (decompressed) byte stream and the text
    decoder: ingestion counts and limits the decompressed bytes there (deliveries/limits.py).
    """
    if isinstance(source, str | os.PathLike):
        binary: Any = open(source, "rb")  # noqa: SIM115 (closed by the returned closer)
        owned = True
    elif isinstance(source, io.TextIOBase):
        return source, lambda: None
    elif hasattr(source, "read"):
        binary = source
        owned = False
    else:  # an iterable of str lines (already decoded), e.g. a list in tests
        return source, lambda: None

    if getattr(binary, "seekable", lambda: False)():
        position = binary.tell()
        magic = binary.read(2)
        binary.seek(position)
    elif hasattr(binary, "peek"):
        magic = binary.peek(2)[:2]
    else:
        magic = binary.read(2)
        binary = io.BufferedReader(_Prefixed(magic, binary), _READ_CHUNK)
    stream = gzip.GzipFile(fileobj=binary, mode="rb") if magic == _GZIP_MAGIC else binary
    decoded = stream if wrap is None else wrap(stream, stream is not binary)
    text = io.TextIOWrapper(decoded, encoding="utf-8-sig", errors="replace", newline="\n")
    text._CHUNK_SIZE = _READ_CHUNK  # type: ignore[attr-defined]  # fewer, larger reads

    def close() -> None:
        if owned:
            text.close()
        else:
            # Leave the caller's file object open: release the wrapper (and the gzip layer) only.
            text.detach()
            if stream is not binary:
                stream.close()

    return text, close


class LogLines:
    """Lines of a plain or gzip-compressed log, without line terminators (see :func:`open_log`)."""

    def __init__(self, source: Any) -> None:
        self.name = _source_name(source)
        self._text, self._close = _open_text(source)
        self._iter = iter(self._text)
        self._closed = False

    def __iter__(self) -> LogLines:
        return self

    def __next__(self) -> str:
        try:
            line: str = next(self._iter)
        except StopIteration:
            self.close()
            raise
        except (EOFError, OSError, zlib.error) as exc:
            self.close()
            raise LogFormatError(self.name, f"unreadable compressed data ({exc})") from exc
        return line.rstrip("\r\n")

    def close(self) -> None:
        if not self._closed:
            self._closed = True
            self._close()

    def __enter__(self) -> LogLines:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def open_log(path_or_fileobj: str | os.PathLike[str] | IO[bytes] | IO[str]) -> LogLines:
    """Stream the text lines of a log file, gzip or plain (told apart by the gzip magic bytes ``1f 8b``).

    Accepts a path, a binary file object (seekable or not; it is not closed) or a text file object. The
    file is decoded as UTF-8 (a BOM is dropped; undecodable bytes become U+FFFD) and read in 64 KiB
    chunks, never as a whole. Use it as a context manager or exhaust it to release the file.
    """
    return LogLines(path_or_fileobj)


def _line_reader(text: Any) -> Iterator[str]:
    readline = getattr(text, "readline", None)
    if readline is None:
        return iter(text)
    return iter(partial(readline, MAX_LINE_CHARS), "")
