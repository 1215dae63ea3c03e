"""``eth_getLogs`` over any block range, in pieces a capped JSON-RPC provider accepts.

Hosted providers cap one ``eth_getLogs`` query: by its block span (often 1,000 to 10,000 blocks) or by the
number of logs it returns (often 10,000), and answer a larger query with an error ("block range too
large", "query returned more than 10000 results", code -32005 or -32602 ...). Every search that runs from
a deployment block to a recent block (the splits settlement pays by, a registration, an anchoring) would
fail on such a provider once the chain is a few weeks old. :func:`read_logs` runs one logical query as
consecutive pieces of at most ``max_blocks`` blocks (the indexer's idea: fixed windows, as its
``INDEXER_LOG_CHUNK`` steps), and when the provider refuses a piece as too large it halves the span and
asks again for the same piece, down to a single block (then :class:`LogQueryRefused`).

Exactly once, in order: the range is resolved to block numbers first ("latest", "safe", "finalized",
"pending" and block hashes through ``resolve_block``, once, so the pieces cover one fixed range), the
pieces are disjoint and contiguous, a log is kept only from the piece whose range holds its block, at most
once per (block number, log index), and the result is sorted by (block number, log index). A query naming
one block by ``blockHash`` (EIP-234) is one block and is sent as it is.

The pieces are separate requests, so a reorg between two of them can mix forks: callers that need one
state read at a final block (settlement reads terms at a block final by the configured confirmations) or
check block hashes themselves (the indexer).

DB-free and web-free: the server's chain client, the indexer and the chain-only verifiers share it, each
with its own ``get_logs`` (one query, as ``w3.eth.get_logs``) and its own error wrapping.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable, Iterable, Mapping
from typing import Any

__all__ = [
    "DEFAULT_MAX_BLOCKS",
    "LogQueryRefused",
    "SpanMemory",
    "is_block_span_refusal",
    "is_range_refusal",
    "provider_error",
    "read_logs",
    "resolve_range",
]

log = logging.getLogger(__name__)

#: Blocks per ``eth_getLogs`` piece unless configured (``ETH_LOGS_MAX_BLOCKS``, ``--logs-max-blocks``):
#: under the 10,000-block and 10,000-result caps of the large hosted providers and equal to the 5,000 of
#: geth-based public endpoints; a provider with a lower cap costs a few refused pieces per query (the span
#: halves until accepted), 0 means "no span limit" (one query, halved only when refused).
DEFAULT_MAX_BLOCKS = 5_000

GetLogs = Callable[[dict[str, Any]], Iterable[Mapping[str, Any]]]
ResolveBlock = Callable[[str | bytes], int]

#: What providers say when a query's block span is too large (lower case).
_SPAN_REFUSALS = (
    r"block range",  # "block range too large", "exceed maximum block range: 5000", "... is too wide"
    r"range is too (large|wide|big)",  # "eth_getLogs range is too large, max is 1k blocks"
    r"range too (large|wide|big)",
    r"range (limit|threshold) exceeded",
    r"max(imum)? range",  # "Max range: 3500"
    r"too many blocks",  # "requested too many blocks from 0 to 20000, maximum is set to 2048"
    r"number of requested blocks",
    r"blocks distance",
    r"limited to (a )?[\d,.]+",  # "eth_getLogs is limited to a 10,000 range"
    r"exceeds the range allowed",
    r"limit the query to at most",
    r"query must be smaller than",
)
#: ... and when its result set is too large (these may also name a block range, as Alchemy's "Log response
#: size exceeded. You can make eth_getLogs requests with up to a 2K block range ..." does).
_RESULT_REFUSALS = (
    r"more than [\d,.]+ (results|logs)",  # "query returned more than 10000 results"
    r"exceeds max results",
    r"exceeds limit of [\d,.]+",  # "logs matched by query exceeds limit of 10000"
    r"too many (results|logs)",
    r"response size",  # "Log response size exceeded"
    r"response too large",
)
#: Codes alone are not enough: -32005 is also "rate limited" and -32602 also "invalid address".
_REFUSAL_PATTERNS = re.compile("|".join((*_SPAN_REFUSALS, *_RESULT_REFUSALS)))
_SPAN_PATTERNS = re.compile("|".join(_SPAN_REFUSALS))
_RESULT_PATTERNS = re.compile("|".join(_RESULT_REFUSALS))
_RATE_LIMITED = re.compile(r"rate|request count|requests per|credits|quota")


class LogQueryRefused(Exception):
    """The provider refuses a log query even for a single block (or a ``blockHash`` query) as too large."""

    def __init__(self, block: int | None, provider_message: str) -> None:
        where = "the single block" if block is None else f"the single block {block}"
        super().__init__(
            f"the RPC refuses eth_getLogs even for {where} as too large ({provider_message}); "
            "a provider that caps results per query this low cannot serve this history"
        )
        self.block = block
        self.provider_message = provider_message


def provider_error(exc: BaseException) -> tuple[int | None, str]:
    """(JSON-RPC error code or None, message) of a failed ``eth_getLogs``, whatever the client library:
    web3's ``Web3RPCError.rpc_response``, an error dict as the exception's argument (older web3,
    ``ValueError``), an HTTP error's body, or the exception's text."""
    candidates: list[Any] = [getattr(exc, "rpc_response", None), *exc.args[:1]]
    for candidate in candidates:
        if isinstance(candidate, Mapping):
            error = candidate.get("error", candidate)
            if isinstance(error, Mapping) and "message" in error:
                code = error.get("code")
                data = error.get("data")
                message = str(error["message"]) + (f" ({data})" if isinstance(data, str) else "")
                return (code if isinstance(code, int) and not isinstance(code, bool) else None), message
    response = getattr(exc, "response", None)
    text = getattr(response, "text", None)
    if isinstance(text, str) and text:
        return None, f"{exc}: {text[:500]}"
    return None, str(exc)


def is_range_refusal(exc: BaseException) -> bool:
    """Whether a failed ``eth_getLogs`` says the query's block span or result set is too large (so a
    smaller span may pass), rather than anything else (rate limits, bad parameters, transport)."""
    code, message = provider_error(exc)
    text = message.lower()
    if _REFUSAL_PATTERNS.search(text):
        return True
    # Infura-style "limit exceeded" without a reason; the same code also means rate limited.
    return code == -32005 and "limit" in text and not _RATE_LIMITED.search(text)


def is_block_span_refusal(exc: BaseException) -> bool:
    """Whether a failed ``eth_getLogs`` says the query spans too many *blocks* (a cap on the span that
    holds for every later query), not too many results (which depends on how dense the logs are where
    the query looked), nor a bare "limit exceeded" that could be either, nor anything else."""
    text = provider_error(exc)[1].lower()
    return bool(_SPAN_PATTERNS.search(text)) and not _RESULT_PATTERNS.search(text)


class SpanMemory:
    """What one client learned of its provider's block-span cap, kept across searches: the smallest span
    the provider refused as too many blocks. Later searches start at half of it (where the refused search
    went on) instead of relearning the cap with refused requests every time. Refusals for too many
    results are not kept: a span learned in a dense stretch would slow every sparse search after it. A
    lower cap found later lowers it; nothing raises it again (a new client starts afresh)."""

    def __init__(self) -> None:
        self.refused_span: int | None = None

    def start_span(self, max_blocks: int) -> int:
        """The span a search starts with: ``max_blocks`` (0: no limit), below the learned cap."""
        if self.refused_span is None:
            return max_blocks
        learned = max(1, self.refused_span // 2)
        return learned if max_blocks == 0 else min(max_blocks, learned)

    def refused(self, span: int, exc: BaseException) -> None:
        """Keeps ``span`` if ``exc`` refused it as too many blocks and it is below what was kept."""
        if is_block_span_refusal(exc) and (self.refused_span is None or span < self.refused_span):
            self.refused_span = span


def _block_ref(value: Any, resolve_block: ResolveBlock) -> int:
    if isinstance(value, bool):
        raise ValueError(f"not a block: {value!r}")
    if isinstance(value, int):
        return value
    if isinstance(value, bytes | bytearray):
        raw = bytes(value)
        return resolve_block(raw) if len(raw) == 32 else int.from_bytes(raw, "big")
    if value is None:
        value = "latest"
    if not isinstance(value, str):
        raise ValueError(f"not a block: {value!r}")
    text = value.strip().lower()
    if text == "earliest":
        return 0
    if text == "pending":  # the pending block's logs are not final: read up to the latest block
        text = "latest"
    if text.startswith("0x") and len(text) == 66:
        return resolve_block(text)  # a block hash
    if text.startswith("0x"):
        return int(text, 16)
    if text.isdigit():
        return int(text)
    return resolve_block(text)


def resolve_range(query: Mapping[str, Any], resolve_block: ResolveBlock) -> tuple[int, int]:
    """(first, last) block numbers of a filter's ``fromBlock``/``toBlock`` (both default to "latest", as
    in JSON-RPC). "latest" is resolved once, so both ends name the same head."""
    cache: dict[Any, int] = {}

    def resolve(ref: str | bytes) -> int:
        if ref not in cache:
            cache[ref] = int(resolve_block(ref))
        return cache[ref]

    return _block_ref(query.get("fromBlock"), resolve), _block_ref(query.get("toBlock"), resolve)


def read_logs(
    get_logs: GetLogs,
    query: Mapping[str, Any],
    *,
    max_blocks: int = DEFAULT_MAX_BLOCKS,
    resolve_block: ResolveBlock,
    refused: Callable[[BaseException], bool] = is_range_refusal,
    memory: SpanMemory | None = None,
) -> list[Mapping[str, Any]]:
    """Every log ``query`` matches, each once, sorted by (block number, log index).

    ``get_logs`` runs one ``eth_getLogs`` query and raises the provider's error as it is;
    ``resolve_block`` turns a tag ("latest", "safe", "finalized") or a block hash into a block number.
    The range goes as pieces of at most ``max_blocks`` blocks (0: one piece); a piece the provider
    refuses as too large (``refused``) is asked again with half the span, and the rest of the range keeps
    the smaller span. With ``memory`` (one per client), a search starts below the block-span cap earlier
    searches learned, and keeps what it learns there. A single block still refused raises
    :class:`LogQueryRefused`; any other error of ``get_logs`` propagates unchanged."""
    if query.get("blockHash") is not None:
        try:
            return _ordered((entry, None) for entry in get_logs(dict(query)))
        except Exception as exc:
            if refused(exc):
                raise LogQueryRefused(None, provider_error(exc)[1]) from exc
            raise
    first, last = resolve_range(query, resolve_block)
    if max_blocks < 0:
        raise ValueError("max_blocks must be 0 (no limit) or positive")
    if memory is not None:
        max_blocks = memory.start_span(max_blocks)
    span = max_blocks or max(1, last - first + 1)
    found: list[tuple[Mapping[str, Any], tuple[int, int]]] = []
    start = first
    while start <= last:
        end = min(last, start + span - 1)
        try:
            entries = list(get_logs({**query, "fromBlock": start, "toBlock": end}))
        except Exception as exc:
            if not refused(exc):
                raise
            if memory is not None:
                memory.refused(end - start + 1, exc)
            if end == start:
                raise LogQueryRefused(start, provider_error(exc)[1]) from exc
            span = (end - start + 1) // 2
            log.info(
                "eth_getLogs refused %d blocks from %d (%s); asking %d at a time (ETH_LOGS_MAX_BLOCKS)",
                end - start + 1,
                start,
                provider_error(exc)[1][:200],
                span,
            )
            continue
        found.extend((entry, (start, end)) for entry in entries)
        start = end + 1
    return _ordered(found)


def _ordered(found: Iterable[tuple[Mapping[str, Any], tuple[int, int] | None]]) -> list[Mapping[str, Any]]:
    """The logs in (block number, log index) order, once each, dropping any outside the piece asked."""
    by_position: dict[tuple[int, int], Mapping[str, Any]] = {}
    for entry, piece in found:
        position = (int(entry["blockNumber"]), int(entry["logIndex"]))
        if piece is not None and not piece[0] <= position[0] <= piece[1]:
            continue
        by_position.setdefault(position, entry)
    return [by_position[position] for position in sorted(by_position)]
