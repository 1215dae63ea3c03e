"""Pure unit tests of the assets service: upload digest, media sniffing, metadata (no services)."""

from __future__ import annotations

import hashlib
import io
import json
import os

import pytest

from edgeledger.assets import service
from edgeledger.assets.models import RegistrationParams, SplitShare
from edgeledger.assets.service import AssetError, FileFacts
from edgeledger.ipfs import cid_of_bytes

PNG = b"\x89PNG\r\n\x1a\n" + os.urandom(600_000)
CREATOR = "0x" + "ab" * 20


@pytest.mark.parametrize(
    ("head", "media_type"),
    [
        (b"\x89PNG\r\n\x1a\n....", "image/png"),
        (b"\xff\xd8\xff\xe0..JFIF", "image/jpeg"),
        (b"GIF89a....", "image/gif"),
        (b"RIFF\x00\x00\x00\x00WEBPVP8 ", "image/webp"),
        (b"RIFF\x00\x00\x00\x00WAVEfmt ", "audio/wav"),
        (b"\x00\x00\x00\x18ftypisom\x00\x00", "video/mp4"),
        (b"\x00\x00\x00\x14ftypqt  \x00\x00", "video/quicktime"),
        (b"\x00\x00\x00\x1cftypavif\x00\x00", "image/avif"),
        (b"\x1a\x45\xdf\xa3\x9f\x42\x86\x81\x01webm", "video/webm"),
        (b"ID3\x04\x00\x00", "audio/mpeg"),
        (b"glTF\x02\x00\x00\x00", "model/gltf-binary"),
        (b"<html><body>", None),
        (b"#!/bin/sh\n", None),
        (b"%PDF-1.7", None),
    ],
)
def test_media_type_comes_from_the_bytes(head: bytes, media_type: str | None) -> None:
    assert service.sniff_media_type(head) == media_type


def test_digest_matches_sha256_and_cid_and_copies_every_byte() -> None:
    target = io.BytesIO()
    facts = service.digest_to_file(io.BytesIO(PNG), target, max_bytes=10**9)
    assert facts == FileFacts(
        sha256="0x" + hashlib.sha256(PNG).hexdigest(),
        cid=cid_of_bytes(PNG),
        size=len(PNG),
        media_type="image/png",
    )
    assert target.getvalue() == PNG


def test_digest_computes_the_cid_under_the_chosen_import_profile() -> None:
    facts = service.digest_to_file(io.BytesIO(PNG), io.BytesIO(), 10**9, "unixfs-v1-2025")
    assert (facts.cid, facts.import_profile) == (cid_of_bytes(PNG, "unixfs-v1-2025"), "unixfs-v1-2025")
    assert facts.cid != cid_of_bytes(PNG)  # 600 kB: one 1 MiB chunk, but three 256 KiB ones
    assert service.digest_to_file(io.BytesIO(PNG), io.BytesIO(), 10**9).import_profile == "legacy-cidv1"
    with pytest.raises(ValueError, match="unknown IPFS import profile"):
        service.digest_to_file(io.BytesIO(PNG), io.BytesIO(), 10**9, "unixfs-v0-2015")


def test_digest_refuses_oversized_empty_and_unknown_uploads() -> None:
    with pytest.raises(AssetError) as too_big:
        service.digest_to_file(io.BytesIO(PNG), io.BytesIO(), max_bytes=len(PNG) - 1)
    assert (too_big.value.code, too_big.value.status) == ("upload_too_large", 413)
    with pytest.raises(AssetError) as empty:
        service.digest_to_file(io.BytesIO(b""), io.BytesIO(), max_bytes=10)
    assert (empty.value.code, empty.value.status) == ("empty_upload", 400)
    with pytest.raises(AssetError) as unknown:
        service.digest_to_file(io.BytesIO(b"plain text"), io.BytesIO(), max_bytes=100)
    assert (unknown.value.code, unknown.value.status) == ("unsupported_media_type", 415)


def test_metadata_is_canonical_and_complete() -> None:
    params = RegistrationParams(title="Sneaker", territories=["de", "FR"], royalty_bps=250, aigc=True)
    facts = FileFacts(sha256="0x" + "11" * 32, cid=cid_of_bytes(b"x"), size=1, media_type="video/mp4")
    first = service.metadata_document(params, facts, CREATOR, 1_700_000_000)
    assert first == service.metadata_document(params, facts, CREATOR, 1_700_000_000)
    doc = json.loads(first)
    assert first == json.dumps(doc, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()
    assert doc["animation_url"] == f"ipfs://{facts.cid}" and "image" not in doc
    assert doc["properties"]["split"] == [{"recipient": CREATOR, "bps": 10_000}]
    assert doc["properties"]["licence"]["valid_from"] == 1_700_000_000
    assert doc["properties"]["content_import_profile"] == "legacy-cidv1"


@pytest.mark.parametrize(
    ("split", "message"),
    [
        ([SplitShare(recipient=CREATOR, bps=9_999)], "sum to 9999"),
        (
            [
                SplitShare(recipient=CREATOR, bps=5_000),
                SplitShare(recipient=CREATOR.upper().replace("0X", "0x"), bps=5_000),
            ],
            "twice",
        ),
        ([], "1 to 50"),
    ],
)
def test_split_is_checked_before_anything_happens(split: list[SplitShare], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        RegistrationParams(title="t", split=split)


def test_licence_window_and_territories_are_checked() -> None:
    with pytest.raises(AssetError) as window:
        service.check_licence_window(2_000, 1_000)
    assert window.value.code == "invalid_licence"
    service.check_licence_window(1_000, 0)
    with pytest.raises(AssetError) as territory:
        service.territories_bitmap(["DE", "ZZ"])
    assert territory.value.code == "unknown_territory" and territory.value.details["codes"] == ["ZZ"]
