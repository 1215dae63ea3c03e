"""Local, streaming computation of the CID ``ipfs add`` gives a file, and CID parsing/normalisation.

Why compute it locally: an upload is digested once while it is written to disk, so the API knows the
content address before (and independently of) the IPFS node, and can check what the node reports.
The result must equal, byte for byte, what kubo prints for::

    ipfs add --cid-version=1 --raw-leaves --hash=sha2-256 --chunker=size-N --max-file-links=L   (balanced)

Two import profiles fix ``N`` and ``L`` (:data:`PROFILES`, IPIP-499 for the names):

* ``legacy-cidv1``: 262,144-byte chunks, 174 links per node. The file layout of IPIP-499's
  ``unixfs-v0-2015`` profile (kubo's implicit default) with CIDv1 and raw leaves, i.e. what kubo gives
  for ``ipfs add --cid-version=1`` without a profile. It is *not* ``unixfs-v0-2015`` itself, which is
  CIDv0 with dag-pb leaves; this service never produced those. Default, and every CID it stored before
  profiles existed;
* ``unixfs-v1-2025``: IPIP-499's profile of that name (kubo >= 0.40 ``--profile unixfs-v1-2025``):
  1,048,576-byte chunks, 1,024 links per node, CIDv1, raw leaves, sha2-256, balanced layout.

A file of at most one chunk is the same single raw block in both; every larger file (from 262,145 bytes)
gets a different CID in each profile.

How that DAG is built (go-unixfs / boxo ``importer/balanced``, mirrored by js-ipfs's unixfs importer),
with ``N`` bytes per chunk and ``L`` links per node:

* the stream is cut into fixed ``N``-byte chunks (the last one shorter); each chunk is a *raw* block
  (CIDv1, codec ``raw`` 0x55). An empty file is one empty raw block;
* a file of exactly one chunk *is* that raw block;
* otherwise leaves are grouped ``L`` per parent: each parent is a dag-pb (0x70) node holding a UnixFS
  ``File`` whose ``blocksizes`` are the file bytes under each link. When there are more than ``L`` such
  parents they are grouped ``L`` per grand-parent, and so on, until one root remains. Only the last node
  of each layer is partial. (Kubo builds this top-down, "fill the root, then wrap it in a deeper root",
  which yields the same tree as this bottom-up grouping; IPIP-499 calls it ``balanced``, as opposed to
  Singularity's ``balanced-packed``.)

dag-pb canonical encoding: ``PBNode`` = ``Links`` (field 2, repeated) *before* ``Data`` (field 1);
``PBLink`` = ``Hash`` (1, binary CID), ``Name`` (2, always present, the empty string for file chunks)
and ``Tsize`` (3, the cumulative size of the linked block plus everything below it). UnixFS ``Data`` =
``Type`` (1, File = 2), ``filesize`` (3), one ``blocksizes`` (4, proto2 repeated, not packed) per link;
internal nodes carry no ``Data`` bytes because the leaves are raw.

Only the current partial node of each layer is kept in memory (fewer than ``L`` child CIDs per layer,
and the layers grow as log_L of the size), plus the bytes of one unfinished chunk: the state does not
grow with the file (``test_builder_state_stays_small``).

Text form: CIDv1 in multibase base32, lower case, ``b`` prefix (``bafk...`` raw, ``bafy...`` dag-pb).
js-ipfs prints CIDv1 in base58btc (``z...``); :func:`normalize_cid` turns any accepted spelling into
the canonical one. CIDv0 (``Qm...``) is *rejected* by default: everything this service stores is CIDv1
with raw leaves, so a v0 CID never names an asset here and an early, explicit error beats a silent "not
found". Pass ``allow_v0=True`` to convert one to its CIDv1 (dag-pb) base32 spelling instead.

Multibase, base32, base58btc, unsigned varints and the few protobuf fields needed are implemented here
(each is a few lines) so the module needs nothing beyond the standard library.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any, Final

__all__ = [
    "CHUNKER_SIZE",
    "CODEC_DAG_PB",
    "CODEC_RAW",
    "DEFAULT_PROFILE",
    "LEGACY_CIDV1",
    "MAX_LINKS",
    "MULTIHASH_SHA2_256",
    "PROFILES",
    "UNIXFS_V1_2025",
    "Cid",
    "CidBuilder",
    "ImportProfile",
    "InvalidCidError",
    "base32_decode",
    "base32_encode",
    "base58btc_decode",
    "base58btc_encode",
    "canonical_json_bytes",
    "cid_multihash_digest",
    "cid_of_bytes",
    "cid_of_file",
    "cid_of_json",
    "cid_of_stream",
    "decode_varint",
    "encode_varint",
    "import_profile",
    "is_valid_cid",
    "normalize_cid",
    "parse_cid",
]

CHUNKER_SIZE: Final = 262_144
"""``--chunker=size-262144``: bytes per leaf of the ``legacy-cidv1`` profile."""
MAX_LINKS: Final = 174
"""Links per dag-pb node of the ``legacy-cidv1`` profile (go-unixfs ``helpers.DefaultLinksPerBlock``)."""


@dataclass(frozen=True, slots=True)
class ImportProfile:
    """The parameters of ``ipfs add`` that decide a file's CID, under one name.

    Everything else is fixed for every profile here: CIDv1, raw leaves, sha2-256, balanced layout,
    fixed-size chunker, no inlining, no wrapping directory, no mode/mtime.
    """

    name: str
    chunker_size: int
    max_links: int

    @property
    def chunker(self) -> str:
        """The value of ``ipfs add --chunker`` (kubo config ``Import.UnixFSChunker``)."""
        return f"size-{self.chunker_size}"

    def __str__(self) -> str:
        return self.name


LEGACY_CIDV1: Final = ImportProfile("legacy-cidv1", CHUNKER_SIZE, MAX_LINKS)
"""unixfs-v0-2015's file layout (256 KiB, 174 links) with CIDv1 raw leaves: every CID stored before
profiles existed."""
UNIXFS_V1_2025: Final = ImportProfile("unixfs-v1-2025", 1_048_576, 1_024)
"""IPIP-499 ``unixfs-v1-2025``: 1 MiB chunks, 1,024 links per node."""
PROFILES: Final[dict[str, ImportProfile]] = {p.name: p for p in (LEGACY_CIDV1, UNIXFS_V1_2025)}
"""Every import profile by name, the default first."""
DEFAULT_PROFILE: Final = LEGACY_CIDV1


def import_profile(profile: ImportProfile | str | None) -> ImportProfile:
    """The profile named ``profile`` (``None``: the default); :class:`ValueError` for an unknown name."""
    if profile is None:
        return DEFAULT_PROFILE
    if isinstance(profile, ImportProfile):
        return profile
    try:
        return PROFILES[profile]
    except KeyError:
        raise ValueError(
            f"unknown IPFS import profile {profile!r}: expected one of {', '.join(PROFILES)}"
        ) from None


CODEC_RAW: Final = 0x55
CODEC_DAG_PB: Final = 0x70
MULTIHASH_SHA2_256: Final = 0x12

# Codecs a CID handed to this service may plausibly carry; anything else is treated as garbage that
# happened to decode, since a typo in a CID more often than not still decodes to *some* bytes.
_KNOWN_CODECS: Final = frozenset({CODEC_RAW, CODEC_DAG_PB, 0x71, 0x0129, 0x0200, 0x72})
# Digest lengths of multihash functions with a fixed length (sha2-256, sha2-512, sha3-*, blake2b-256).
_DIGEST_LENGTHS: Final = {0x12: 32, 0x13: 64, 0x14: 64, 0x15: 48, 0x16: 32, 0x17: 28, 0xB220: 32}
_MAX_VARINT_BYTES: Final = 9  # multiformats unsigned-varint caps values at 63 bits / 9 bytes
_MAX_CID_TEXT: Final = 512  # far above any real CID, low enough to refuse pathological input cheaply
_UNIXFS_FILE: Final = 2


class InvalidCidError(ValueError):
    """Text that is not a CID this service accepts (malformed, unsupported base, or CIDv0)."""


# ----------------------------------------------------------------------------------------------
# Unsigned varints (multiformats flavour: little-endian base-128, minimal, at most 9 bytes)
# ----------------------------------------------------------------------------------------------


def encode_varint(value: int) -> bytes:
    """LEB128 encoding used by multiformats prefixes and by protobuf varint fields."""
    if value < 0:
        raise ValueError("varints are unsigned")
    out = bytearray()
    while True:
        byte = value & 0x7F
        value >>= 7
        if value:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)


def decode_varint(data: bytes, offset: int = 0) -> tuple[int, int]:
    """Decode one varint at ``offset``; returns ``(value, offset_after)``.

    Non-minimal encodings (trailing ``0x80 0x00``) are refused: multiformats requires minimal ones,
    and accepting them would give one CID several binary spellings.
    """
    value = 0
    for i in range(_MAX_VARINT_BYTES):
        pos = offset + i
        if pos >= len(data):
            raise ValueError("truncated varint")
        byte = data[pos]
        value |= (byte & 0x7F) << (7 * i)
        if not byte & 0x80:
            if byte == 0 and i > 0:
                raise ValueError("non-minimal varint")
            return value, pos + 1
    raise ValueError("varint longer than 9 bytes")


# ----------------------------------------------------------------------------------------------
# base32 (RFC 4648 alphabet, lower case, no padding) and base58btc
# ----------------------------------------------------------------------------------------------

_B32_ALPHABET: Final = "abcdefghijklmnopqrstuvwxyz234567"
_B32_INDEX: Final = {c: i for i, c in enumerate(_B32_ALPHABET)}
_B58_ALPHABET: Final = "123456789ABCDEFGHJKLMNPQRSTUVWXYZabcdefghijkmnopqrstuvwxyz"
_B58_INDEX: Final = {c: i for i, c in enumerate(_B58_ALPHABET)}


def base32_encode(data: bytes) -> str:
    """RFC 4648 base32, lower case, unpadded (multibase ``b``)."""
    bits = 0
    nbits = 0
    out: list[str] = []
    for byte in data:
        bits = (bits << 8) | byte
        nbits += 8
        while nbits >= 5:
            nbits -= 5
            out.append(_B32_ALPHABET[(bits >> nbits) & 31])
    if nbits:
        out.append(_B32_ALPHABET[(bits << (5 - nbits)) & 31])
    return "".join(out)


def base32_decode(text: str) -> bytes:
    """Inverse of :func:`base32_encode`; strict: lower case only, no padding, zero trailing bits.

    Strictness keeps the text form canonical: two different strings never decode to the same CID.
    """
    bits = 0
    nbits = 0
    out = bytearray()
    for char in text:
        try:
            bits = (bits << 5) | _B32_INDEX[char]
        except KeyError:
            raise ValueError(f"invalid base32 character {char!r}") from None
        nbits += 5
        if nbits >= 8:
            nbits -= 8
            out.append((bits >> nbits) & 0xFF)
        bits &= (1 << nbits) - 1
    if nbits >= 5 or bits:
        raise ValueError("invalid base32 length or non-zero padding bits")
    return bytes(out)


def base58btc_encode(data: bytes) -> str:
    """Bitcoin-alphabet base58 (multibase ``z``; also the bare CIDv0 form); leading zero bytes -> ``1``."""
    zeros = len(data) - len(data.lstrip(b"\0"))
    number = int.from_bytes(data, "big")
    out: list[str] = []
    while number:
        number, rem = divmod(number, 58)
        out.append(_B58_ALPHABET[rem])
    return "1" * zeros + "".join(reversed(out))


def base58btc_decode(text: str) -> bytes:
    """Inverse of :func:`base58btc_encode`."""
    number = 0
    for char in text:
        try:
            number = number * 58 + _B58_INDEX[char]
        except KeyError:
            raise ValueError(f"invalid base58 character {char!r}") from None
    zeros = len(text) - len(text.lstrip("1"))
    body = number.to_bytes((number.bit_length() + 7) // 8, "big") if number else b""
    return b"\0" * zeros + body


# ----------------------------------------------------------------------------------------------
# CIDs
# ----------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Cid:
    """A parsed CID. ``str()`` gives the canonical text: base32 for v1, base58btc for v0."""

    version: int
    codec: int
    multihash_code: int
    digest: bytes

    @property
    def multihash(self) -> bytes:
        return encode_varint(self.multihash_code) + encode_varint(len(self.digest)) + self.digest

    def to_bytes(self) -> bytes:
        """Binary CID, as it appears in a dag-pb link."""
        if self.version == 0:
            return self.multihash
        return encode_varint(1) + encode_varint(self.codec) + self.multihash

    def to_v1(self) -> Cid:
        return Cid(1, self.codec, self.multihash_code, self.digest)

    def __str__(self) -> str:
        if self.version == 0:
            return base58btc_encode(self.multihash)
        return "b" + base32_encode(self.to_bytes())

    @classmethod
    def from_bytes(cls, data: bytes) -> Cid:
        """Parse a binary CIDv1 (or a bare sha2-256 multihash, i.e. CIDv0)."""
        if len(data) == 34 and data[0] == MULTIHASH_SHA2_256 and data[1] == 32:
            return cls(0, CODEC_DAG_PB, MULTIHASH_SHA2_256, bytes(data[2:]))
        version, pos = decode_varint(data)
        if version != 1:
            raise ValueError(f"unsupported CID version {version}")
        codec, pos = decode_varint(data, pos)
        if codec not in _KNOWN_CODECS:
            raise ValueError(f"unknown multicodec 0x{codec:x}")
        code, pos = decode_varint(data, pos)
        length, pos = decode_varint(data, pos)
        digest = bytes(data[pos:])
        if len(digest) != length:
            raise ValueError(f"multihash declares {length} digest bytes but carries {len(digest)}")
        expected = _DIGEST_LENGTHS.get(code)
        if expected is not None and length != expected:
            raise ValueError(f"multihash 0x{code:x} needs a {expected}-byte digest, got {length}")
        if length == 0:
            raise ValueError("empty multihash digest")
        return cls(1, codec, code, digest)


def parse_cid(text: str, *, allow_v0: bool = False) -> Cid:
    """Parse the text form of a CID.

    Accepted: CIDv1 in base32 (``b``, lower case) or base58btc (``z``); CIDv0 (``Qm...``, 46 chars)
    only with ``allow_v0=True``. No surrounding whitespace is stripped: callers validate exact input.
    """
    if not isinstance(text, str):
        raise InvalidCidError(f"a CID must be a string, not {type(text).__name__}")
    if not text:
        raise InvalidCidError("empty CID")
    if len(text) > _MAX_CID_TEXT:
        raise InvalidCidError("CID text too long")
    if len(text) == 46 and text.startswith("Qm"):
        if not allow_v0:
            raise InvalidCidError(
                f"CIDv0 {text!r} is not accepted: use the CIDv1 base32 form (bafy.../bafk...), "
                "e.g. `ipfs cid format -v 1 -b base32 <cid>`"
            )
        try:
            cid = Cid.from_bytes(base58btc_decode(text))
        except ValueError as exc:
            raise InvalidCidError(f"invalid CIDv0 {text!r}: {exc}") from None
        if cid.version != 0:
            raise InvalidCidError(f"invalid CIDv0 {text!r}")
        return cid
    prefix, body = text[0], text[1:]
    try:
        if prefix == "b":
            raw = base32_decode(body)
        elif prefix == "z":
            raw = base58btc_decode(body)
        else:
            raise InvalidCidError(
                f"invalid CID {text!r}: expected CIDv1 in base32 ('b...') or base58btc ('z...')"
            )
        cid = Cid.from_bytes(raw)
    except InvalidCidError:
        raise
    except ValueError as exc:
        raise InvalidCidError(f"invalid CID {text!r}: {exc}") from None
    if cid.version != 1:  # a bare multihash spelled in a multibase is not a CID
        raise InvalidCidError(f"invalid CID {text!r}: not a CIDv1")
    return cid


def normalize_cid(text: str, *, allow_v0: bool = False) -> str:
    """Canonical text of a CID: CIDv1, base32, lower case. Raises :class:`InvalidCidError`."""
    return str(parse_cid(text, allow_v0=allow_v0).to_v1())


def is_valid_cid(text: str, *, allow_v0: bool = False) -> bool:
    """Whether :func:`normalize_cid` would accept ``text``."""
    try:
        parse_cid(text, allow_v0=allow_v0)
    except InvalidCidError:
        return False
    return True


def cid_multihash_digest(cid: str) -> bytes:
    """The raw digest inside a CID (32 bytes for sha2-256), e.g. to store it as a ``bytes32``."""
    return parse_cid(cid).digest


# ----------------------------------------------------------------------------------------------
# DAG building
# ----------------------------------------------------------------------------------------------


def _pb_varint_field(field: int, value: int) -> bytes:
    return encode_varint(field << 3) + encode_varint(value)


def _pb_bytes_field(field: int, value: bytes) -> bytes:
    return encode_varint((field << 3) | 2) + encode_varint(len(value)) + value


_RAW_SHA256_PREFIX: Final = bytes([1, CODEC_RAW, MULTIHASH_SHA2_256, 32])
_DAG_PB_SHA256_PREFIX: Final = bytes([1, CODEC_DAG_PB, MULTIHASH_SHA2_256, 32])


@dataclass(frozen=True, slots=True)
class _Child:
    """What a parent needs to know about a child: its binary CID, ``Tsize`` and file bytes below it."""

    cid: bytes
    tsize: int
    filesize: int


def _raw_leaf(chunk: bytes | bytearray | memoryview) -> _Child:
    return _Child(_RAW_SHA256_PREFIX + hashlib.sha256(chunk).digest(), len(chunk), len(chunk))


def _file_node(children: list[_Child]) -> _Child:
    """Encode one dag-pb UnixFS File node over ``children`` (canonical field order, see module doc)."""
    filesize = sum(c.filesize for c in children)
    unixfs = _pb_varint_field(1, _UNIXFS_FILE) + _pb_varint_field(3, filesize)
    unixfs += b"".join(_pb_varint_field(4, c.filesize) for c in children)
    links = b"".join(
        _pb_bytes_field(2, _pb_bytes_field(1, c.cid) + _pb_bytes_field(2, b"") + _pb_varint_field(3, c.tsize))
        for c in children
    )
    block = links + _pb_bytes_field(1, unixfs)
    return _Child(
        _DAG_PB_SHA256_PREFIX + hashlib.sha256(block).digest(),
        len(block) + sum(c.tsize for c in children),
        filesize,
    )


class CidBuilder:
    """Incremental CID of a byte stream, as ``ipfs add --cid-version=1 --raw-leaves`` would compute it.

    Feed it with :meth:`update` in pieces of any size, then call :meth:`finalize` once. ``profile``
    (an :class:`ImportProfile` or its name; default ``legacy-cidv1``) sets the chunk size and the links
    per node. ``chunker_size`` and ``max_links`` override them so tests can exercise deep trees with
    small inputs; production uses a profile, whose parameters are the ones the IPFS client sends.
    """

    def __init__(
        self,
        profile: ImportProfile | str | None = None,
        *,
        chunker_size: int | None = None,
        max_links: int | None = None,
    ) -> None:
        chosen = import_profile(profile)
        chunker_size = chosen.chunker_size if chunker_size is None else chunker_size
        max_links = chosen.max_links if max_links is None else max_links
        if chunker_size <= 0 or max_links < 2:
            raise ValueError("chunker_size must be positive and max_links at least 2")
        self.profile = chosen
        self._chunker_size = chunker_size
        self._max_links = max_links
        self._pending = bytearray()  # the unfinished chunk, always shorter than chunker_size
        self._layers: list[list[_Child]] = [[]]  # layer 0 holds leaves, layer n nodes of depth n
        self._leaves = 0
        self._size = 0
        self._result: str | None = None

    @property
    def size(self) -> int:
        """Bytes fed so far."""
        return self._size

    def update(self, data: bytes | bytearray | memoryview) -> None:
        if self._result is not None:
            raise RuntimeError("CidBuilder.update() after finalize()")
        view = memoryview(data).cast("B")
        self._size += len(view)
        step = self._chunker_size
        if self._pending:
            take = step - len(self._pending)
            self._pending += view[:take]
            view = view[take:]
            if len(self._pending) < step:
                return
            self._add_leaf(_raw_leaf(self._pending))
            self._pending.clear()
        while len(view) >= step:
            self._add_leaf(_raw_leaf(view[:step]))
            view = view[step:]
        self._pending += view

    def finalize(self) -> str:
        """The CID (CIDv1, base32). Idempotent; the builder accepts no more data afterwards."""
        if self._result is not None:
            return self._result
        if self._pending or self._leaves == 0:  # the short last chunk, or the empty file's empty leaf
            self._add_leaf(_raw_leaf(self._pending))
            self._pending.clear()
        layers = self._layers
        level = 0
        while True:
            children = layers[level]
            is_top = not any(layers[level + 1 :])
            if is_top and len(children) == 1:
                root = children[0]
                break
            if children:
                layers[level] = []
                self._push(level + 1, _file_node(children))
            level += 1
        cid_bytes = root.cid
        self._result = "b" + base32_encode(cid_bytes)
        self._layers = [[]]
        return self._result

    def _add_leaf(self, leaf: _Child) -> None:
        self._leaves += 1
        self._push(0, leaf)

    def _push(self, level: int, child: _Child) -> None:
        """Append to a layer; a full layer is folded into one node of the next layer at once.

        Folding a full group early is safe: a node with ``max_links`` children never gains more, and
        it is the same node whether or not more data follows.
        """
        if level == len(self._layers):
            self._layers.append([])
        layer = self._layers[level]
        layer.append(child)
        if len(layer) == self._max_links:
            self._layers[level] = []
            self._push(level + 1, _file_node(layer))


def cid_of_bytes(data: bytes | bytearray | memoryview, profile: ImportProfile | str | None = None) -> str:
    """CID of an in-memory byte string under ``profile`` (default legacy-cidv1; see :class:`CidBuilder`)."""
    builder = CidBuilder(profile)
    builder.update(data)
    return builder.finalize()


def cid_of_stream(
    fileobj: IO[bytes], chunk_size: int = 1024 * 1024, profile: ImportProfile | str | None = None
) -> str:
    """CID of everything left in a binary stream; ``chunk_size`` is only the read size."""
    builder = CidBuilder(profile)
    while chunk := fileobj.read(chunk_size):
        builder.update(chunk)
    return builder.finalize()


def cid_of_file(path: Path | str, profile: ImportProfile | str | None = None) -> str:
    """CID of a file on disk, read in 1 MiB pieces."""
    with Path(path).open("rb") as fh:
        return cid_of_stream(fh, profile=profile)


def canonical_json_bytes(obj: Any) -> bytes:
    """The one byte encoding of a JSON document this service publishes: sorted keys, no whitespace, UTF-8.

    Same document, same bytes, same CID, whoever serialises it. NaN/Infinity are refused because they
    are not JSON.
    """
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False).encode(
        "utf-8"
    )


def cid_of_json(obj: Any, profile: ImportProfile | str | None = None) -> str:
    """CID that :meth:`edgeledger.ipfs.client.IpfsClient.add_json` will get for ``obj``."""
    return cid_of_bytes(canonical_json_bytes(obj), profile)
