"""Local CID computation and CID parsing (pure; no node needed).

The expected CIDs of both import profiles live in ``samples/cid_vectors.json``, each with how to rebuild
its bytes and where the CID comes from: kubo's own IPIP-499 fixtures (``unixfs-v1-2025`` at 1,024 and
1,025 chunks), a real IPFS daemon (js-ipfs, ``add --cid-version=1 --raw-leaves --hash=sha2-256
--chunker=size-N``) for the others; ``test_ipfs_node.py`` re-checks the live agreement. Where no
outside source gives a CID (the small-parameter trees below), :func:`reference_cid`, a second,
straightforward implementation written the way kubo's balanced builder works (top-down, in memory),
gives the expectation. Test data of size ``n`` is ``random.Random(n).randbytes(n)``: deterministic, and
every chunk differs (so a link-order bug shows).
"""

from __future__ import annotations

import hashlib
import io
import json
import random
import typing
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import pydantic
import pytest
from Crypto.Cipher import ChaCha20

from edgeledger.config import Settings
from edgeledger.ipfs.cid import (
    CHUNKER_SIZE,
    DEFAULT_PROFILE,
    LEGACY_CIDV1,
    MAX_LINKS,
    PROFILES,
    UNIXFS_V1_2025,
    Cid,
    CidBuilder,
    InvalidCidError,
    base32_decode,
    base32_encode,
    base58btc_decode,
    base58btc_encode,
    canonical_json_bytes,
    cid_multihash_digest,
    cid_of_bytes,
    cid_of_file,
    cid_of_json,
    cid_of_stream,
    decode_varint,
    encode_varint,
    import_profile,
    is_valid_cid,
    normalize_cid,
    parse_cid,
)
from edgeledger.ledger.registration import IMPORT_PROFILES, import_profile_code, import_profile_name

SAMPLES = Path(__file__).parent / "samples"
CID_VECTORS: list[dict[str, Any]] = json.loads((SAMPLES / "cid_vectors.json").read_text())["vectors"]

HELLO = b"hello world\n"
HELLO_CID = "bafkreifjjcie6lypi6ny7amxnfftagclbuxndqonfipmb64f2km2devei4"
HELLO_CID_B58 = "zb2rhi36Gc9GJWijLEL6zW45MBux5FcFv5gJmjXA7VAMozEXY"  # as js-ipfs prints it
EMPTY_CID = "bafkreihdwdcefgh4dqkjv67uzcmw7ojee6xedzdetojuzjevtenxquvyku"
# The IPFS docs' example CIDv0 and its CIDv1 (checked with `jsipfs cid format -v 1 -b base32`).
V0 = "QmbWqxBEKC3P8tqsKc98xmWNzrzDtRLMiMPL8wBuTGsMnR"
V0_AS_V1 = "bafybeigdyrzt5sfp7udm7hu76uh7y26nf3efuylqabf3oclgtqy55fbzdi"
V0_AS_V1_B58 = "zdj7Wic6KcJAfWz1c9o4M6kq9Lwd5BfbxkVafnrojaaGiSFxM"

C = CHUNKER_SIZE
MiB = 1024 * 1024
# size -> legacy-cidv1 CID of random.Random(size).randbytes(size), from samples/cid_vectors.json
VECTORS: dict[int, str] = {
    v["input"]["size"]: v["cid"]
    for v in CID_VECTORS
    if v["profile"] == LEGACY_CIDV1.name and v["input"]["generator"] == "python_random"
}
assert min(VECTORS) == 0 and VECTORS[0] == EMPTY_CID and {C, C + 1, MAX_LINKS * C + 1} <= set(VECTORS)
# Deeper trees, cheaply: chunker size-1024 (the daemon ran with --chunker=size-1024; max links still 174).
SMALL_CHUNK = 1024
DEEP_VECTORS: dict[int, str] = {
    # 174 full nodes of 174 leaves: exactly a full depth-2 tree
    MAX_LINKS**2 * SMALL_CHUNK: "bafybeiehqcmpwvftolznzrutymghnlloapnidoa5rh3ludzkmxfwc7vtba",
    # one byte more: a depth-3 root whose second child is a chain of one-child nodes
    MAX_LINKS**2 * SMALL_CHUNK + 1: "bafybeia4tco7qn4xfgzismiyeew54zql4rglfpmv7ev6husmmdjaxeivom",
    MAX_LINKS**2 * SMALL_CHUNK + 175 * SMALL_CHUNK + 3: (
        "bafybeiepn3n6xl3yc37snupxp2lbuhqg425ljv37drh3zedsurmwytngqe"
    ),
}


def data_of(size: int) -> bytes:
    return random.Random(size).randbytes(size)


def kubo_chacha20(seed: str, size: int, piece: int = MiB) -> Iterator[bytes]:
    """kubo's ``DeterministicRandomReader(size, seed)`` (test/cli/testutils): the ChaCha20 key stream,
    key sha256(seed), zero nonce, counter 0, produced lazily ``piece`` bytes at a time."""
    cipher = ChaCha20.new(key=hashlib.sha256(seed.encode()).digest(), nonce=bytes(12))
    zeros = bytes(piece)
    left = size
    while left:
        n = min(piece, left)
        yield cipher.encrypt(zeros if n == piece else zeros[:n])
        left -= n


def vector_pieces(spec: dict[str, Any]) -> Iterator[bytes]:
    """The bytes of a vector's ``input`` (samples/cid_vectors.json ``generators``), in pieces."""
    if spec["generator"] == "text":
        yield spec["text"].encode()
    elif spec["generator"] == "python_random":
        yield data_of(spec["size"])
    elif spec["generator"] == "kubo_chacha20":
        yield from kubo_chacha20(spec["seed"], spec["size"])
    else:
        raise AssertionError(f"unknown generator {spec['generator']}")


def vector_size(spec: dict[str, Any]) -> int:
    return len(spec["text"].encode()) if spec["generator"] == "text" else int(spec["size"])


# ----------------------------------------------------------------------------------------------
# A second implementation: kubo's balanced builder, top-down and in memory (expectations only)
# ----------------------------------------------------------------------------------------------


def _varint(n: int) -> bytes:
    out = b""
    while n >= 0x80:
        out += bytes([n & 0x7F | 0x80])
        n >>= 7
    return out + bytes([n])


def _field(number: int, payload: bytes | int) -> bytes:
    if isinstance(payload, int):
        return _varint(number << 3) + _varint(payload)
    return _varint(number << 3 | 2) + _varint(len(payload)) + payload


def reference_cid(pieces: Iterable[bytes], chunk: int, width: int) -> str:
    """CID as boxo's ``importer/balanced`` builds it: the first leaf is the root; while data remains,
    wrap the root in a new node and fill that node recursively to the next depth. Written apart from
    :class:`CidBuilder` (which groups bottom-up while streaming) so that each checks the other."""
    data = b"".join(pieces)
    chunks = iter([data[i : i + chunk] for i in range(0, len(data), chunk)] or [b""])
    pending: list[bytes] = [next(chunks)]

    def more() -> bool:
        if not pending:
            nxt = next(chunks, None)
            if nxt is not None:
                pending.append(nxt)
        return bool(pending)

    def leaf() -> tuple[bytes, int, int]:  # (binary CID, Tsize, file bytes)
        block = pending.pop()
        return bytes([1, 0x55, 0x12, 32]) + hashlib.sha256(block).digest(), len(block), len(block)

    def node(children: list[tuple[bytes, int, int]]) -> tuple[bytes, int, int]:
        size = sum(c[2] for c in children)
        unixfs = _field(1, 2) + _field(3, size) + b"".join(_field(4, c[2]) for c in children)
        links = b"".join(_field(2, _field(1, c[0]) + _field(2, b"") + _field(3, c[1])) for c in children)
        block = links + _field(1, unixfs)
        digest = hashlib.sha256(block).digest()
        return bytes([1, 0x70, 0x12, 32]) + digest, len(block) + sum(c[1] for c in children), size

    def fill(children: list[tuple[bytes, int, int]], depth: int) -> tuple[bytes, int, int]:
        while len(children) < width and more():
            children.append(leaf() if depth == 1 else fill([], depth - 1))
        return node(children)

    root = leaf()
    depth = 1
    while more():
        root = fill([root], depth)
        depth += 1
    return "b" + base32_encode(root[0])


def streamed_cid(pieces: Iterable[bytes], **builder: Any) -> str:
    cid = CidBuilder(**builder)
    for piece in pieces:
        cid.update(piece)
    return cid.finalize()


# ----------------------------------------------------------------------------------------------
# Import profiles
# ----------------------------------------------------------------------------------------------


def test_profiles_are_the_ipip_499_parameters() -> None:
    assert list(PROFILES) == ["legacy-cidv1", "unixfs-v1-2025"] and DEFAULT_PROFILE is LEGACY_CIDV1
    assert (LEGACY_CIDV1.chunker_size, LEGACY_CIDV1.max_links) == (262_144, 174)
    assert (UNIXFS_V1_2025.chunker_size, UNIXFS_V1_2025.max_links) == (1_048_576, 1_024)
    assert UNIXFS_V1_2025.chunker == "size-1048576" and str(UNIXFS_V1_2025) == "unixfs-v1-2025"
    assert import_profile(None) is import_profile("legacy-cidv1") is LEGACY_CIDV1
    assert import_profile(UNIXFS_V1_2025) is UNIXFS_V1_2025
    with pytest.raises(ValueError, match="unknown IPFS import profile 'unixfs-v0-2015'"):
        import_profile("unixfs-v0-2015")  # CIDv0 with dag-pb leaves: not something this service builds
    with pytest.raises(ValueError):
        CidBuilder("nonsense")


def test_the_on_chain_codes_name_exactly_the_profiles() -> None:
    """The registry records a profile as its index in ledger.registration.IMPORT_PROFILES (append-only)."""
    assert tuple(PROFILES) == IMPORT_PROFILES
    assert [import_profile_code(name) for name in PROFILES] == [0, 1]
    assert [import_profile_name(code) for code in (0, 1)] == list(PROFILES)
    with pytest.raises(ValueError, match="unknown IPFS import profile 'unixfs-v0-2015'"):
        import_profile_code("unixfs-v0-2015")
    with pytest.raises(ValueError, match="unknown import profile code 2"):
        import_profile_name(2)


def test_the_setting_offers_exactly_the_profiles() -> None:
    """IPFS_IMPORT_PROFILE is a Literal (config.py cannot import the ipfs package): kept in step here."""
    assert typing.get_args(Settings.model_fields["ipfs_import_profile"].annotation) == tuple(PROFILES)
    assert Settings().ipfs_import_profile == DEFAULT_PROFILE.name
    assert Settings(ipfs_import_profile="unixfs-v1-2025").ipfs_import_profile == "unixfs-v1-2025"
    with pytest.raises(pydantic.ValidationError):
        Settings(ipfs_import_profile="unixfs-v0-2015")


def test_every_profile_has_vectors_at_its_boundaries() -> None:
    """Exactly one chunk, one chunk + 1 byte, a full node of ``width`` chunks, and just past it."""
    for profile in PROFILES.values():
        n, width = profile.chunker_size, profile.max_links
        sizes = {vector_size(v["input"]) for v in CID_VECTORS if v["profile"] == profile.name}
        assert {n, n + 1, width * n} <= sizes, profile.name
        assert sizes & {width * n + 1, (width + 1) * n}, profile.name
    assert all(v["source"] and v["case"] for v in CID_VECTORS)


@pytest.mark.parametrize(
    "vector",
    CID_VECTORS,
    ids=[f"{v['profile']}-{vector_size(v['input'])}" for v in CID_VECTORS],
)
def test_profile_vectors(vector: dict[str, Any]) -> None:
    """Every vector of samples/cid_vectors.json; the 1 GiB ones are generated and hashed as a stream."""
    assert streamed_cid(vector_pieces(vector["input"]), profile=vector["profile"]) == vector["cid"]


def test_the_profiles_part_ways_above_one_legacy_chunk() -> None:
    for size in (0, 1, C):
        assert cid_of_bytes(data_of(size), "unixfs-v1-2025") == cid_of_bytes(data_of(size)) == VECTORS[size]
    data = data_of(C + 1)
    legacy, modern = cid_of_bytes(data, LEGACY_CIDV1), cid_of_bytes(data, UNIXFS_V1_2025)
    assert legacy == VECTORS[C + 1] and legacy.startswith("bafy")  # two leaves under a dag-pb node
    assert modern == "b" + base32_encode(bytes([1, 0x55, 0x12, 32]) + hashlib.sha256(data).digest())


@pytest.mark.parametrize(
    "vector",
    [v for v in CID_VECTORS if vector_size(v["input"]) <= 4 * MiB],
    ids=lambda v: f"{v['profile']}-{vector_size(v['input'])}",
)
def test_reference_builder_agrees_with_the_small_vectors(vector: dict[str, Any]) -> None:
    profile = import_profile(vector["profile"])
    pieces = vector_pieces(vector["input"])
    assert reference_cid(pieces, profile.chunker_size, profile.max_links) == vector["cid"]


@pytest.mark.parametrize("width", [2, 3, 4, 174])
def test_streaming_and_reference_builders_agree_around_every_boundary(width: int) -> None:
    """Tiny chunks make deep trees cheap: every size around 1, w, w^2 and w^3 chunks, +-1 byte."""
    chunk = 4
    sizes = {0, 1}
    for depth in range(4):
        for k in (width**depth - 1, width**depth, width**depth + 1, 2 * width**depth):
            sizes |= {max(0, k * chunk + d) for d in (-1, 0, 1)}
    for size in sorted(sizes):
        if size > 200_000:
            continue
        data = data_of(size)
        expected = reference_cid([data], chunk, width)
        assert streamed_cid([data], chunker_size=chunk, max_links=width) == expected, size


def test_profile_and_overrides_compose() -> None:
    data = data_of(3 * MiB + 1)
    assert cid_of_bytes(data, "unixfs-v1-2025") == reference_cid([data], MiB, 1024)
    # An explicit width overrides the profile's (tests use this for deep trees with small inputs).
    assert streamed_cid([data], profile=UNIXFS_V1_2025, max_links=2) == reference_cid([data], MiB, 2)
    assert cid_of_stream(io.BytesIO(data), profile="unixfs-v1-2025") == cid_of_bytes(data, UNIXFS_V1_2025)
    assert cid_of_json({"a": 1}, "unixfs-v1-2025") == cid_of_json({"a": 1})  # small: one raw leaf


# ----------------------------------------------------------------------------------------------
# CID computation
# ----------------------------------------------------------------------------------------------


def test_hello_world_is_a_raw_leaf() -> None:
    assert cid_of_bytes(HELLO) == HELLO_CID


@pytest.mark.parametrize("size", sorted(VECTORS))
def test_known_vectors(size: int) -> None:
    assert cid_of_bytes(data_of(size)) == VECTORS[size]


@pytest.mark.parametrize("size", sorted(DEEP_VECTORS))
def test_deep_trees_with_small_chunks(size: int) -> None:
    builder = CidBuilder(chunker_size=SMALL_CHUNK)
    builder.update(data_of(size))
    assert builder.finalize() == DEEP_VECTORS[size]


@pytest.mark.parametrize("piece", [1, 7, 1000, C - 1, C, C + 1, 3 * C + 17])
def test_result_does_not_depend_on_how_the_stream_is_cut(piece: int) -> None:
    size = (MAX_LINKS + 1) * C + 5
    data = data_of(size)
    builder = CidBuilder()
    view = memoryview(data)
    # 1-byte pieces over 45 MB would take minutes: use them for the head only, then larger pieces.
    head = min(len(data), piece * 2000)
    for offset in range(0, head, piece):
        builder.update(view[offset : min(offset + piece, head)])
    builder.update(view[head:])
    assert builder.size == size
    assert builder.finalize() == VECTORS[size]


@pytest.mark.parametrize("chunk_size", [1, 4096, C, 1024 * 1024])
def test_cid_of_stream(chunk_size: int) -> None:
    size = 2 * C if chunk_size > 1 else C + 1
    assert cid_of_stream(io.BytesIO(data_of(size)), chunk_size=chunk_size) == VECTORS[size]


def test_cid_of_file(tmp_path: Path) -> None:
    path = tmp_path / "f.bin"
    path.write_bytes(data_of(C + 1))
    assert cid_of_file(path) == VECTORS[C + 1]


def test_builder_accepts_bytearray_and_memoryview() -> None:
    builder = CidBuilder()
    builder.update(bytearray(HELLO[:5]))
    builder.update(memoryview(HELLO)[5:])
    assert builder.finalize() == HELLO_CID


def test_finalize_is_idempotent_and_closes_the_builder() -> None:
    builder = CidBuilder()
    builder.update(HELLO)
    assert builder.finalize() == builder.finalize() == HELLO_CID
    with pytest.raises(RuntimeError):
        builder.update(b"more")


def test_builder_state_stays_small() -> None:
    """Only the partial node of each layer is kept, never the list of all leaves."""
    builder = CidBuilder(chunker_size=16)
    builder.update(bytes(16 * (MAX_LINKS**2 + 5)))
    layers = builder._layers
    assert all(len(layer) < MAX_LINKS for layer in layers)
    assert sum(len(layer) for layer in layers) <= 3 * MAX_LINKS


def test_builder_rejects_nonsense_parameters() -> None:
    with pytest.raises(ValueError):
        CidBuilder(chunker_size=0)
    with pytest.raises(ValueError):
        CidBuilder(max_links=1)


# ----------------------------------------------------------------------------------------------
# JSON
# ----------------------------------------------------------------------------------------------


def test_canonical_json_is_sorted_compact_utf8() -> None:
    assert canonical_json_bytes({"b": [1, {"z": None, "a": True}], "a": "é"}) == (
        '{"a":"é","b":[1,{"a":true,"z":null}]}'.encode()
    )
    assert cid_of_json({"b": 1, "a": 2}) == cid_of_json({"a": 2, "b": 1}) == cid_of_bytes(b'{"a":2,"b":1}')


def test_canonical_json_refuses_nan() -> None:
    with pytest.raises(ValueError):
        canonical_json_bytes({"x": float("nan")})


# ----------------------------------------------------------------------------------------------
# Parsing and normalising
# ----------------------------------------------------------------------------------------------


def test_base58_and_base32_spellings_normalise_to_base32() -> None:
    assert normalize_cid(HELLO_CID_B58) == HELLO_CID
    assert normalize_cid(HELLO_CID) == HELLO_CID
    assert normalize_cid(V0_AS_V1_B58) == V0_AS_V1
    assert base58btc_encode(parse_cid(HELLO_CID).to_bytes()) == HELLO_CID_B58[1:]


@pytest.mark.parametrize("cid", [*VECTORS.values(), *DEEP_VECTORS.values(), V0_AS_V1])
def test_round_trip_through_base58(cid: str) -> None:
    parsed = parse_cid(cid)
    as_b58 = "z" + base58btc_encode(parsed.to_bytes())
    assert parse_cid(as_b58) == parsed
    assert normalize_cid(as_b58) == cid
    assert str(Cid.from_bytes(parsed.to_bytes())) == cid


def test_cid_fields() -> None:
    leaf = parse_cid(HELLO_CID)
    assert (leaf.version, leaf.codec, leaf.multihash_code) == (1, 0x55, 0x12)
    assert leaf.digest == hashlib.sha256(HELLO).digest()
    assert parse_cid(VECTORS[C + 1]).codec == 0x70
    assert cid_multihash_digest(HELLO_CID) == hashlib.sha256(HELLO).digest()
    assert cid_multihash_digest(HELLO_CID_B58) == hashlib.sha256(HELLO).digest()


def test_cidv0_is_rejected_by_default_with_a_clear_message() -> None:
    with pytest.raises(InvalidCidError, match="CIDv0"):
        normalize_cid(V0)
    assert not is_valid_cid(V0)


def test_cidv0_converts_when_allowed() -> None:
    assert normalize_cid(V0, allow_v0=True) == V0_AS_V1
    assert is_valid_cid(V0, allow_v0=True)
    assert str(parse_cid(V0, allow_v0=True)) == V0


@pytest.mark.parametrize(
    "text",
    [
        "",
        "b",
        "z",
        "bafy",
        HELLO_CID.upper(),  # base32upper is a different multibase ('B'); not accepted
        " " + HELLO_CID,
        HELLO_CID + " ",
        HELLO_CID + "a",  # one character too many
        HELLO_CID[:-1],  # truncated digest
        HELLO_CID[:-1] + "1",  # '1' is not base32
        "f01551220" + hashlib.sha256(HELLO).hexdigest(),  # base16 multibase: not accepted
        "m" + "AVUSIA",  # base64 multibase: not accepted
        HELLO_CID_B58[:-1] + "0",  # '0' is not base58
        HELLO_CID_B58[:-2],
        "Qm" + "1" * 44,  # v0-shaped garbage
        "QmbWqxBEKC3P8tqsKc98xmWNzrzDtRLMiMPL8wBuTGsMn",  # v0 one char short
        "b" + base32_encode(bytes([2, 0x55, 0x12, 32]) + bytes(32)),  # CID version 2
        "b" + base32_encode(bytes([1, 0x99, 0x12, 32]) + bytes(32)),  # unknown codec
        "b" + base32_encode(bytes([1, 0x55, 0x12, 31]) + bytes(31)),  # sha2-256 with 31 bytes
        "b" + base32_encode(bytes([1, 0x55, 0x12, 32]) + bytes(33)),  # trailing byte
        "b" + base32_encode(bytes([0x81, 0x00, 0x55, 0x12, 32]) + bytes(32)),  # non-minimal varint
        "b" + base32_encode(bytes([0x12, 32]) + bytes(32)),  # bare multihash, not a CID
        "b" + "a" * 600,
    ],
)
def test_invalid_cids_are_rejected(text: str) -> None:
    with pytest.raises(InvalidCidError):
        normalize_cid(text, allow_v0=True)
    assert not is_valid_cid(text, allow_v0=True)


def test_non_string_is_rejected() -> None:
    with pytest.raises(InvalidCidError):
        normalize_cid(b"bafk")  # type: ignore[arg-type]


def test_invalid_cid_error_is_a_value_error() -> None:
    assert issubclass(InvalidCidError, ValueError)


# ----------------------------------------------------------------------------------------------
# Encodings
# ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("data", [b"", b"\0", b"\0\0\1", b"f", b"fo", b"foo", b"foob", b"fooba", b"foobar"])
def test_base32_matches_rfc4648(data: bytes) -> None:
    import base64

    expected = base64.b32encode(data).decode().rstrip("=").lower()
    assert base32_encode(data) == expected
    assert base32_decode(expected) == data


@pytest.mark.parametrize("text", ["a", "abc", "abcdef", "ab", "A", "="])
def test_base32_rejects_bad_lengths_and_characters(text: str) -> None:
    with pytest.raises(ValueError):
        base32_decode(text)


def test_base32_rejects_nonzero_padding_bits() -> None:
    assert base32_decode("my") == b"f"
    with pytest.raises(ValueError):
        base32_decode("mz")


@pytest.mark.parametrize("data", [b"", b"\0", b"\0\0\1\2", b"hello world", bytes(range(256))])
def test_base58_round_trip(data: bytes) -> None:
    assert base58btc_decode(base58btc_encode(data)) == data


def test_base58_known_value() -> None:
    assert base58btc_encode(b"hello world") == "StV1DL6CwTryKyV"


@pytest.mark.parametrize("value", [0, 1, 127, 128, 300, 0x55, 0x70, 2**32, 2**63 - 1])
def test_varint_round_trip(value: int) -> None:
    encoded = encode_varint(value)
    assert decode_varint(encoded + b"tail") == (value, len(encoded))


def test_varint_known_encodings() -> None:
    assert encode_varint(300) == b"\xac\x02"
    assert encode_varint(0xB220) == b"\xa0\xe4\x02"


@pytest.mark.parametrize("raw", [b"", b"\x80", b"\x80\x00", b"\xff" * 10])
def test_varint_rejects_truncated_nonminimal_and_long(raw: bytes) -> None:
    with pytest.raises(ValueError):
        decode_varint(raw)
