"""The logs the ingestion benchmark (``benchmarks.ingest``) reads: one population of requests, written as
CloudFront, Alibaba Cloud CDN, Tencent Cloud CDN or nginx ``combined`` lines, so that the formats are
compared on the same work.

The population (:func:`requests`, fixed seed): 50,000 clients (IPv4), 400 hosts of 97 merchants, 2,000
assets requested Pareto-distributed as HLS segments under ``/ipfs/<cid>/``, nine CloudFront edge
locations, response sizes of 200 kB-4 MB, a cache result per request (hits, misses, refresh hits and
errors answered 502), times spread evenly over two UTC days (2024-05-01 and 2024-05-02, the two daily
periods). Every format writes the same instants, clients, paths, statuses and body sizes; it writes them
as that format does:

* ``cloudfront``: the 33-field standard log, UTC ``date`` + ``time``, a logged ``x-edge-request-id``;
* ``alibaba``: Alibaba Cloud CDN offline log lines, ``[1/May/2024:08:00:00 +0800]`` (Beijing time with
  its offset), an absolute ``"GET https://host/path"``, ``HIT``/``MISS``, the protocol appended;
* ``tencent``: the 16 fields of Tencent Cloud CDN offline logs, a ``yyyyMMddHHmmss`` Beijing time without
  zone (the parser applies UTC+8), ``hit``/``miss``, the client port;
* ``nginx``: nginx ``combined`` of one edge node (``$time_local`` with the node's ``+0200``), which names
  no host and no edge location: the source declares them (:data:`NGINX_HOST`, :data:`NGINX_EDGE`), so
  every record carries that one host and edge location.

Only CloudFront logs a request id; the other three formats get a derived one (SHA-256 of the line's
fields), so two identical lines would be one record. Two requests of the same second agree on client,
size, asset, segment and agent with a probability of about 10^-15, so a 1,000,000-line file (some 2.6
million such pairs) has two identical lines with a probability of about 10^-9; the benchmark checks that
every line became a record all the same. The CloudFront request ids come from
a second generator seeded from the same seed, so every file is the same from run to run.
"""

from __future__ import annotations

import base64
import gzip
import random
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO, NamedTuple
from urllib.parse import unquote

CLOUDFRONT_FIELDS = (
    "date time x-edge-location sc-bytes c-ip cs-method cs(Host) cs-uri-stem sc-status cs(Referer) "
    "cs(User-Agent) cs-uri-query cs(Cookie) x-edge-result-type x-edge-request-id x-host-header cs-protocol "
    "cs-bytes time-taken x-forwarded-for ssl-protocol ssl-cipher x-edge-response-result-type "
    "cs-protocol-version fle-status fle-encrypted-fields c-port time-to-first-byte "
    "x-edge-detailed-result-type sc-content-type sc-content-len sc-range-start sc-range-end"
)
EDGES = (
    "FRA56-P7",
    "IAD89-C3",
    "NRT57-P2",
    "LHR61-C1",
    "CDG52-P1",
    "GRU3-P4",
    "SIN2-C1",
    "SYD1-C1",
    "BOM78-P1",
)
RESULTS = ("Hit", "Hit", "Hit", "Miss", "RefreshHit", "Error")
#: User agents as CloudFront logs them (percent-encoded); the other formats log them decoded.
AGENTS = (
    "Mozilla/5.0%20(Windows%20NT%2010.0;%20Win64;%20x64)%20AppleWebKit/537.36%20Chrome/124.0",
    "Mozilla/5.0%20(iPhone;%20CPU%20iPhone%20OS%2017_4%20like%20Mac%20OS%20X)",
    "VLC/3.0.20%20LibVLC/3.0.20",
)
PERIOD_START = 1_714_521_600  # 2024-05-01T00:00:00Z; the lines cover 2024-05-01 and 2024-05-02

#: What the nginx edge node's source declares (its lines name neither).
NGINX_HOST = "cdn0.merchant0.example"
NGINX_EDGE = "FRA1"
NGINX_UTC_OFFSET_S = 2 * 3600  # the node's $time_local: Frankfurt in May, CEST
BEIJING_UTC_OFFSET_S = 8 * 3600  # Alibaba and Tencent log Beijing time

_MONTHS = "Jan Feb Mar Apr May Jun Jul Aug Sep Oct Nov Dec".split()


@dataclass(frozen=True)
class BenchFormat:
    """A format the benchmark generates, and what its source declares."""

    name: str  # the benchmark's --format
    log_format: str  # the parser's format id, declared by the source
    kind: str
    provider: str
    site_host: str | None = None
    site_edge_location: str | None = None
    header_lines: int = 0  # skipped lines before the data (CloudFront #Version, #Fields)


BENCH_FORMATS = {
    f.name: f
    for f in (
        BenchFormat("cloudfront", "cloudfront", "cdn_provider", "cloudfront", header_lines=2),
        BenchFormat("alibaba", "aliyun", "cdn_provider", "aliyun"),
        BenchFormat("tencent", "tencent", "cdn_provider", "tencent"),
        BenchFormat("nginx", "nginx_combined", "edge_node", "edgeledger", NGINX_HOST, NGINX_EDGE),
    )
}


class Request(NamedTuple):
    """One generated request (``t``: Unix seconds, UTC; ``size``: body bytes)."""

    t: int
    asset: str
    segment: int
    size: int
    result: str
    host: str
    edge: str
    client: str
    agent: str
    port: int

    @property
    def path(self) -> str:
        return f"/ipfs/{self.asset}/seg-{self.segment:05d}.ts"

    @property
    def status(self) -> int:
        return 502 if self.result == "Error" else 200


def fake_cid(rng: random.Random) -> str:
    """A CIDv1-shaped base32 string (the resolver only looks it up; these are not registered)."""
    return "bafkrei" + "".join(rng.choice("abcdefghijklmnopqrstuvwxyz234567") for _ in range(52))


def population(rng: random.Random) -> tuple[list[str], list[str], list[str]]:
    """The benchmark's hosts (400 of 97 merchants), assets (2,000 CIDs) and clients (50,000 IPv4), drawn
    from ``rng`` in this order (every generator's files depend on it)."""
    hosts = [f"cdn{i}.merchant{i % 97}.example" for i in range(400)]
    assets = [fake_cid(rng) for _ in range(2_000)]
    clients = [
        f"{rng.randrange(1, 224)}.{rng.randrange(256)}.{rng.randrange(256)}.{rng.randrange(1, 255)}"
        for _ in range(50_000)
    ]
    return hosts, assets, clients


def requests(lines: int, seed: int) -> Iterator[Request]:
    """The population's ``lines`` requests, in time order (the draws are the CloudFront generator's
    of old, in the same order, so its files keep their content)."""
    rng = random.Random(seed)
    hosts, assets, clients = population(rng)
    step = 2 * 86_400 / lines
    for n in range(lines):
        asset = assets[int(rng.paretovariate(1.2)) % len(assets)]
        segment = rng.randrange(1, 600)
        size = rng.randrange(200_000, 4_000_000)
        result = rng.choice(RESULTS)
        host = rng.choice(hosts)
        edge = rng.choice(EDGES)
        client = rng.choice(clients)
        agent = rng.choice(AGENTS)
        port = rng.randrange(1024, 65535)
        t = PERIOD_START + int(n * step)
        yield Request(t, asset, segment, size, result, host, edge, client, agent, port)


class _Clock:
    """``time.gmtime(t + offset)`` formatted, computed once per second (lines come in time order)."""

    def __init__(self, offset_s: int, style: str) -> None:
        self.offset_s, self.style = offset_s, style
        self.last_t: int | None = None
        self.text = ""

    def __call__(self, t: int) -> str:
        if t != self.last_t:
            self.last_t = t
            g = time.gmtime(t + self.offset_s)
            hms = f"{g.tm_hour:02d}:{g.tm_min:02d}:{g.tm_sec:02d}"
            if self.style == "cloudfront":  # date \t time, UTC
                self.text = f"{g.tm_year:04d}-{g.tm_mon:02d}-{g.tm_mday:02d}\t{hms}"
            elif self.style == "tencent":  # yyyyMMddHHmmss, no zone
                self.text = f"{g.tm_year:04d}{g.tm_mon:02d}{g.tm_mday:02d}{hms.replace(':', '')}"
            else:  # [dd/Mon/yyyy:HH:MM:SS +hhmm]; Alibaba writes the day unpadded, nginx padded
                day = f"{g.tm_mday}" if self.style == "alibaba" else f"{g.tm_mday:02d}"
                sign = "+" if self.offset_s >= 0 else "-"
                zone = f"{sign}{abs(self.offset_s) // 3600:02d}{abs(self.offset_s) // 60 % 60:02d}"
                self.text = f"[{day}/{_MONTHS[g.tm_mon - 1]}/{g.tm_year:04d}:{hms} {zone}]"
        return self.text


def _write_cloudfront(out: IO[str], population: Iterator[Request], seed: int) -> None:
    ids = random.Random(f"cloudfront-request-ids-{seed}")
    clock = _Clock(0, "cloudfront")
    out.write("#Version: 1.0\n#Fields: " + CLOUDFRONT_FIELDS + "\n")
    for r in population:
        rid = base64.urlsafe_b64encode(ids.randbytes(42)).decode()[:56]
        out.write(
            f"{clock(r.t)}\t{r.edge}\t{r.size}\t{r.client}\tGET\t"
            f"d111111abcdef8.cloudfront.net\t{r.path}\t{r.status}\t-\t"
            f"{r.agent}\t-\t-\t{r.result}\t{rid}\t{r.host}\thttps\t180\t0.042\t-\tTLSv1.3\t"
            f"TLS_AES_128_GCM_SHA256\t{r.result}\tHTTP/2.0\t-\t-\t{r.port}\t0.011\t"
            f"{r.result}\tvideo/MP2T\t{r.size}\t-\t-\n"
        )


_DECODED_AGENTS = {agent: unquote(agent) for agent in AGENTS}


def _write_alibaba(out: IO[str], population: Iterator[Request], seed: int) -> None:
    # [time] client-ip proxy-ip response-ms "referer" "METHOD url" status request-size response-size
    # cache "user-agent" "content-type" protocol
    clock = _Clock(BEIJING_UTC_OFFSET_S, "alibaba")
    for r in population:
        cache = "MISS" if r.result in ("Miss", "Error") else "HIT"
        out.write(
            f'{clock(r.t)} {r.client} - 42 "-" "GET https://{r.host}{r.path}" {r.status} 180 {r.size} '
            f'{cache} "{_DECODED_AGENTS[r.agent]}" "video/MP2T" https\n'
        )


# Tencent's province and ISP codes (mainland package); which one a client gets does not matter here.
_TENCENT_REGIONS = ("22 2", "4 1", "1050 1", "8 3")


def _write_tencent(out: IO[str], population: Iterator[Request], seed: int) -> None:
    # time client-ip domain path bytes province isp status referer response-ms "user-agent" range method
    # protocol hit/miss client-port
    clock = _Clock(BEIJING_UTC_OFFSET_S, "tencent")
    for r in population:
        cache = "miss" if r.result in ("Miss", "Error") else "hit"
        out.write(
            f"{clock(r.t)} {r.client} {r.host} {r.path} {r.size} {_TENCENT_REGIONS[r.port % 4]} {r.status} "
            f'- 42 "{_DECODED_AGENTS[r.agent]}" - GET HTTP/2.0 {cache} {r.port}\n'
        )


def _write_nginx(out: IO[str], population: Iterator[Request], seed: int) -> None:
    # $remote_addr - $remote_user [$time_local] "$request" $status $body_bytes_sent "$http_referer"
    # "$http_user_agent"
    clock = _Clock(NGINX_UTC_OFFSET_S, "nginx")
    for r in population:
        out.write(
            f'{r.client} - - {clock(r.t)} "GET {r.path} HTTP/2.0" {r.status} {r.size} "-" '
            f'"{_DECODED_AGENTS[r.agent]}"\n'
        )


_WRITERS = {
    "cloudfront": _write_cloudfront,
    "alibaba": _write_alibaba,
    "tencent": _write_tencent,
    "nginx": _write_nginx,
}


def generate(path: Path, lines: int, seed: int, fmt: str = "cloudfront") -> None:
    """Write the population's ``lines`` requests as ``fmt`` lines (gzip) to ``path``."""
    with gzip.open(path, "wt", compresslevel=6, encoding="utf-8", newline="\n") as out:
        _WRITERS[fmt](out, requests(lines, seed), seed)
