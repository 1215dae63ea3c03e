"""Reading documents for ``edgeledger verify delivery`` in bounded memory: a batch export's tree nodes and
values are never held as JSON objects.

A batch export (``edgeledger-batch-export/v1``, docs/proofs.md) is one JSON object whose ``tree`` member is
an OpenZeppelin ``standard-v1`` dump: ``tree.tree`` holds the ``2n - 1`` node hashes, ``tree.values`` the
``n`` leaf values (about 540 bytes of JSON each, some 2 kB once decoded). :func:`read_document` walks the
file in chunks with the standard library's JSON decoder, one JSON value at a time:

* every top-level member except ``tree`` is decoded whole (the header, or a proof document's members,
  as ``json.load`` would);
* ``tree.tree`` is packed into one ``bytearray`` of 32 bytes per node (:class:`PackedNodes`);
* ``tree.values`` is only counted; :class:`StreamedValues` reads the file again, one value at a time,
  when the verifier iterates over it (and refuses a file that changed in between).

So memory is 32 bytes per tree node (64 per record) plus one chunk and one value, whatever the export's
size. A single value or node larger than :data:`MAX_ITEM` is unusable input, not a reason to buffer more.
Duplicate keys in the document or its ``tree`` member are refused (``json.load`` would silently keep the
last one; a streaming reader and a second pass must not disagree on which one counts).
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TextIO

from edgeledger.verify.result import UnusableInput

__all__ = ["CHUNK", "MAX_ITEM", "PackedNodes", "StreamedValues", "read_document"]

#: Characters read from the file at a time.
CHUNK = 1 << 16
#: Largest single tree node or value, in characters of JSON (a value is about 540).
MAX_ITEM = 1 << 20

_DECODER = json.JSONDecoder()
_WS = re.compile(r"[ \t\n\r]*")


class PackedNodes:
    """Tree node hashes, 32 bytes each, in one buffer (``nodes[i]`` is node ``i`` as ``bytes``)."""

    __slots__ = ("_data",)

    def __init__(self, data: bytearray | None = None) -> None:
        self._data = data if data is not None else bytearray()

    def append(self, node: bytes) -> None:
        assert len(node) == 32
        self._data += node

    def __len__(self) -> int:
        return len(self._data) >> 5

    def __getitem__(self, index: int) -> bytes:
        if not 0 <= index < len(self):
            raise IndexError(index)
        return bytes(self._data[index << 5 : (index + 1) << 5])


class _Cursor:
    """A position in a text file, with just enough of the file buffered to decode the next value."""

    def __init__(self, handle: TextIO, where: str) -> None:
        self.handle, self.where = handle, where
        self.buf, self.pos, self.base, self.eof = "", 0, 0, False

    def _fill(self, at_least: int = CHUNK) -> bool:
        if self.eof:
            return False
        chunk = self.handle.read(max(CHUNK, at_least))
        if not chunk:
            self.eof = True
            return False
        self.base += self.pos
        self.buf = self.buf[self.pos :] + chunk
        self.pos = 0
        return True

    def fail(self, what: str) -> UnusableInput:
        return UnusableInput(
            f"{self.where}: not a readable JSON document ({what} at character {self.base + self.pos})"
        )

    def peek(self) -> str:
        """The next character that is not white space ('' at the end of the file)."""
        while True:
            match = _WS.match(self.buf, self.pos)
            assert match is not None
            self.pos = match.end()
            if self.pos < len(self.buf):
                return self.buf[self.pos]
            if not self._fill():
                return ""

    def expect(self, char: str) -> None:
        if self.peek() != char:
            raise self.fail(f"expected {char!r}")
        self.pos += 1

    def value(self, limit: int | None = MAX_ITEM) -> Any:
        """Decode the next JSON value; with ``limit``, refuse one longer than that many characters."""
        if not self.peek():
            raise self.fail("unexpected end of file")
        while True:
            pending = len(self.buf) - self.pos
            try:
                obj, end = _DECODER.raw_decode(self.buf, self.pos)
            except json.JSONDecodeError as exc:
                if limit is not None and pending > limit:
                    raise self.fail(f"a value longer than {limit:,} characters") from None
                if not self._fill(pending):  # doubling: a long value is decoded O(log) times, not O(n)
                    self.pos = exc.pos
                    raise self.fail(exc.msg) from None
                continue
            except RecursionError:
                raise self.fail("a value nested too deeply") from None
            # A number or literal that ends at the buffer's end may continue in the next chunk.
            if end == len(self.buf) and self._fill(pending):
                continue
            if limit is not None and end - self.pos > limit:
                raise self.fail(f"a value longer than {limit:,} characters")
            self.pos = end
            return obj

    def members(self, what: str) -> Iterator[str]:
        """The keys of the object at the cursor; the caller reads each member's value before the next."""
        self.expect("{")
        seen: set[str] = set()
        if self.peek() == "}":
            self.pos += 1
            return
        while True:
            key = self.value()
            if not isinstance(key, str):
                raise self.fail("an object key that is not a string")
            if key in seen:
                raise UnusableInput(f"{self.where}: {what} has the key {key!r} twice")
            seen.add(key)
            self.expect(":")
            yield key
            char = self.peek()
            if char != "," and char != "}":
                raise self.fail("expected ',' or '}'")
            self.pos += 1
            if char == "}":
                return

    def elements(self) -> Iterator[Any]:
        """The decoded elements of the array at the cursor, one at a time."""
        self.expect("[")
        if self.peek() == "]":
            self.pos += 1
            return
        while True:
            yield self.value()
            char = self.peek()
            if char != "," and char != "]":
                raise self.fail("expected ',' or ']'")
            self.pos += 1
            if char == "]":
                return

    def end(self) -> None:
        if self.peek():
            raise self.fail("extra data after the document")


_NODE, _VALUE = 0, 1
#: Placeholder in the head for an array that is streamed rather than decoded.
_STREAMED: Any = object()


def _walk(cursor: _Cursor, head: dict[str, Any]) -> Iterator[tuple[int, Any]]:
    """Yield ``(_NODE, node)`` for each element of ``tree.tree`` and ``(_VALUE, value)`` for each of
    ``tree.values`` (when they are arrays); every other member goes into ``head``, decoded whole."""
    for key in cursor.members("the document"):
        if key != "tree" or cursor.peek() != "{":
            head[key] = cursor.value(limit=None)
            continue
        tree: dict[str, Any] = {}
        head[key] = tree
        for member in cursor.members("tree"):
            if member in ("tree", "values") and cursor.peek() == "[":
                tree[member] = _STREAMED
                kind = _NODE if member == "tree" else _VALUE
                for element in cursor.elements():
                    yield kind, element
            else:
                tree[member] = cursor.value(limit=None)
    cursor.end()


def _node_bytes(value: Any, pos: int) -> bytes:
    if isinstance(value, str) and value.startswith("0x") and len(value) == 66:
        try:
            return bytes.fromhex(value[2:])
        except ValueError:
            pass
    raise UnusableInput(f"tree.tree[{pos}] must be 0x-hex of 32 bytes, got {value!r}")


def _open(path: Path) -> TextIO:
    try:
        return open(path, encoding="utf-8")
    except OSError as exc:
        raise UnusableInput(f"{path}: not a readable JSON document ({exc})") from None


@dataclass(frozen=True, slots=True)
class _Stamp:
    size: int
    mtime_ns: int
    inode: int

    @classmethod
    def of(cls, path: Path) -> _Stamp:
        st = os.stat(path)
        return cls(st.st_size, st.st_mtime_ns, st.st_ino)


class StreamedValues:
    """``tree.values`` of an export file: its length, and its elements read again from the file."""

    def __init__(self, path: Path, count: int, stamp: _Stamp) -> None:
        self.path, self.count, self._stamp = path, count, stamp

    def __len__(self) -> int:
        return self.count

    def _unchanged(self) -> None:
        try:
            same = _Stamp.of(self.path) == self._stamp
        except OSError:
            same = False
        if not same:
            raise UnusableInput(f"{self.path}: the file changed while it was being verified")

    def __iter__(self) -> Iterator[Any]:
        self._unchanged()
        seen = 0
        try:
            with _open(self.path) as handle:
                for kind, element in _walk(_Cursor(handle, str(self.path)), {}):
                    if kind == _VALUE:
                        seen += 1
                        yield element
        except (OSError, UnicodeDecodeError) as exc:
            raise UnusableInput(f"{self.path}: not a readable JSON document ({exc})") from None
        if seen != self.count:
            raise UnusableInput(f"{self.path}: the file changed while it was being verified")
        self._unchanged()


def read_document(path: Path) -> Any:
    """The JSON object in ``path``, read in chunks. When it has a ``tree`` object whose ``tree`` and
    ``values`` members are arrays, those become a :class:`PackedNodes` and a :class:`StreamedValues`
    (``tree.tree`` elements must be 0x-hex of 32 bytes). A file that is not an object gives
    that value, decoded whole; a file that is not JSON raises :class:`UnusableInput`."""
    try:
        stamp = _Stamp.of(path)
        with _open(path) as handle:
            cursor = _Cursor(handle, str(path))
            if cursor.peek() != "{":
                other = cursor.value(limit=None)
                cursor.end()
                return other
            head: dict[str, Any] = {}
            nodes, count = PackedNodes(), 0
            for kind, element in _walk(cursor, head):
                if kind == _NODE:
                    nodes.append(_node_bytes(element, len(nodes)))
                else:
                    count += 1
    except (OSError, UnicodeDecodeError) as exc:
        raise UnusableInput(f"{path}: not a readable JSON document ({exc})") from None
    tree = head.get("tree")
    if isinstance(tree, dict):
        if tree.get("tree") is _STREAMED:
            tree["tree"] = nodes
        if tree.get("values") is _STREAMED:
            tree["values"] = StreamedValues(path, count, stamp)
    return head
