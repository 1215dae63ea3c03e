"""Local CID computation and CID parsing (pure; no node needed).

Every expected CID below was produced by a real IPFS daemon (js-ipfs 0.18.1, ``add --cid-version=1
--raw-leaves --hash=sha2-256 --chunker=size-N``) on the same bytes and hard-coded here; the integration
tests in ``test_ipfs_node.py`` re-check the live agreement. Test data of size ``n`` is
``random.Random(n).randbytes(n)``: deterministic, and every chunk differs (so a link-order bug shows).
"""

from __future__ import annotations

import hashlib
import io
import random
from pathlib import Path

import pytest

from edgeledger.ipfs.cid import (
    CHUNKER_SIZE,
    MAX_LINKS,
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
    is_valid_cid,
    normalize_cid,
    parse_cid,
)

HELLO = b"hello world\n"
HELLO_CID = "bafkreifjjcie6lypi6ny7amxnfftagclbuxndqonfipmb64f2km2devei4"
HELLO_CID_B58 = "zb2rhi36Gc9GJWijLEL6zW45MBux5FcFv5gJmjXA7VAMozEXY"  # as js-ipfs prints it
EMPTY_CID = "bafkreihdwdcefgh4dqkjv67uzcmw7ojee6xedzdetojuzjevtenxquvyku"
# The IPFS docs' example CIDv0 and its CIDv1 (checked with `jsipfs cid format -v 1 -b base32`).
V0 = "QmbWqxBEKC3P8tqsKc98xmWNzrzDtRLMiMPL8wBuTGsMnR"
V0_AS_V1 = "bafybeigdyrzt5sfp7udm7hu76uh7y26nf3efuylqabf3oclgtqy55fbzdi"
V0_AS_V1_B58 = "zdj7Wic6KcJAfWz1c9o4M6kq9Lwd5BfbxkVafnrojaaGiSFxM"

C = CHUNKER_SIZE
# size -> CID of random.Random(size).randbytes(size), chunker size-262144
VECTORS: dict[int, str] = {
    0: EMPTY_CID,
    1: "bafkreiekgmp53zydf4z2ohq3fysx3aawny2i4ah4wf4rj5el3nl2drrqa4",
    12: "bafkreihjqvpvihch7qlxxyg3kayqmuqpxry35mld6z56jvuvpl2nqzclf4",
    C - 1: "bafkreih2hom5mdt3hxznampdzj6ksv6o36vafqqctcrkoz5rfhpw3eodwu",
    C: "bafkreih2bk74eu5axngebs6vftmmkcaqboysjjy726xzy5hksnqmfgw5fy",  # one full chunk: still a raw leaf
    C + 1: "bafybeidbbs6ocod3v27jtr4uhvc6n55y3gbrtur3bvjsnraudtbxkozi2y",  # two leaves under one dag-pb node
    2 * C: "bafybeibuvqq37phlhefrdmacc7uyxcxte2nrginrt6dkl33nuoxwt37o5a",
    MAX_LINKS * C: "bafybeih3ebhydpblov22wbakszm4spvku7hbo3oa5gdhgoh7gnub26mtx4",  # one full node
    MAX_LINKS * C + 1: "bafybeidsyc3rx6lmbjml2fg4ucagkjh3kse6tbphoyyhms46fqhmu6ujbi",  # second layer
    (MAX_LINKS + 1) * C + 5: "bafybeifyx67w5unrg2vqkcd5hptibzgnqohsjp6yrtv63lofefkloeg6sa",
    2 * MAX_LINKS * C + 1: "bafybeigzfqrg5i3rw4j25iz4i6x44vrma37lel2pkgye2mmwek2v4yqzva",
}
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
