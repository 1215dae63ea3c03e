"""Sample data of the demo, the benchmarks and the tests: small PNGs whose bytes depend on a label, and
CloudFront standard logs (gzip) of requests for an asset, with documentation-range client IPs."""

from __future__ import annotations

import gzip
import random
import struct
import zlib
from datetime import UTC, datetime, timedelta


def demo_png(label: str, size: int = 64) -> bytes:
    """A small gradient PNG whose pixels depend on `label` (unique bytes per demo run)."""
    seed = zlib.crc32(label.encode())
    rows = b"".join(
        b"\x00"
        + b"".join(
            bytes(((x * 4 + seed) % 256, (y * 4 + (seed >> 8)) % 256, (seed >> 16) % 256))
            for x in range(size)
        )
        for y in range(size)
    )

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = struct.pack(">IIBBBBB", size, size, 8, 2, 0, 0, 0)
    text = b"Comment\x00" + label.encode()
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", header)
        + chunk(b"tEXt", text)
        + chunk(b"IDAT", zlib.compress(rows))
        + chunk(b"IEND", b"")
    )


_CLOUDFRONT_FIELDS = (
    "date time x-edge-location sc-bytes c-ip cs-method cs(Host) cs-uri-stem sc-status cs(Referer) "
    "cs(User-Agent) cs-uri-query cs(Cookie) x-edge-result-type x-edge-request-id x-host-header "
    "cs-protocol cs-bytes time-taken x-forwarded-for ssl-protocol ssl-cipher x-edge-response-result-type "
    "cs-protocol-version fle-status fle-encrypted-fields c-port time-to-first-byte "
    "x-edge-detailed-result-type sc-content-type sc-content-len sc-range-start sc-range-end"
)
_EDGES = ("FRA56-P1", "CDG50-C1", "NRT57-C2", "IAD89-C1", "LHR61-C1")


def demo_cloudfront_log(
    cid: str, size: int, label: str, *, lines: int = 400, days_ago: int = 1, day_start: int | None = None
) -> tuple[bytes, list[str]]:
    """A gzip CloudFront standard log of `lines` requests for `/ipfs/<cid>` made `days_ago` days ago
    (UTC), or on the UTC day starting at `day_start` (unix seconds) when given, with documentation-range
    client IPs; returns the file and its request ids."""
    rng = random.Random(label)  # noqa: S311 - reproducible sample data, not secrets
    when = datetime.fromtimestamp(day_start, UTC) if day_start is not None else None
    day = (when or datetime.now(UTC) - timedelta(days=days_ago)).strftime("%Y-%m-%d")
    body = ["#Version: 1.0", "#Fields: " + _CLOUDFRONT_FIELDS]
    request_ids = []
    for i in range(lines):
        request_id = f"DEMO{label}{i:05d}".replace(" ", "").replace(":", "") + "=="
        request_ids.append(request_id)
        result = rng.choice(("Hit", "Hit", "Hit", "Miss"))
        body.append(
            "\t".join(
                (
                    day,
                    f"{rng.randrange(24):02d}:{rng.randrange(60):02d}:{rng.randrange(60):02d}",
                    rng.choice(_EDGES),
                    str(size + 320),
                    f"198.51.100.{rng.randrange(1, 255)}",
                    "GET",
                    "d111111abcdef8.cloudfront.net",
                    f"/ipfs/{cid}",
                    "200",
                    "-",
                    "Mozilla/5.0",
                    "-",
                    "-",
                    result,
                    request_id,
                    "shop.example",
                    "https",
                    "180",
                    "0.004",
                    "-",
                    "TLSv1.3",
                    "TLS_AES_128_GCM_SHA256",
                    result,
                    "HTTP/2.0",
                    "-",
                    "-",
                    str(rng.randrange(1024, 65535)),
                    "0.002",
                    result,
                    "image/png",
                    str(size),
                    "-",
                    "-",
                )
            )
        )
    return gzip.compress(("\n".join(body) + "\n").encode()), request_ids
