"""The service's only way to talk to an IPFS node (kubo in production, js-ipfs in the local stack).

Why a wrapper around ``ipfshttpclient``:

* the add parameters that decide a CID are always sent explicitly (CIDv1, raw leaves, sha2-256, and the
  import profile's chunker and ``max-file-links``: :func:`add_options`), so the node's defaults, its
  ``Import.*`` configuration or an ``ipfs init --profile`` can never change a content address and
  :func:`edgeledger.ipfs.cid.cid_of_bytes` with the same profile predicts every CID this client gets
  back;
* every CID leaving this module is normalised to CIDv1 base32 (js-ipfs answers in base58btc);
* failures become :class:`IpfsError` with an API-ready code/status instead of library exceptions.

Which node builds which layout: kubo >= 0.35 honours ``max-file-links`` (and >= 0.40 knows the
``unixfs-v1-2025`` profile by name), so it builds both profiles exactly. Older kubo ignores the unknown
option (its width is fixed at 174, the legacy one). js-ipfs 0.66 (the local stack) takes ``chunker`` but
drops ``max-file-links`` (its HTTP API strips unknown options) and always builds 174-link nodes: under
``unixfs-v1-2025`` it agrees with us up to 174 chunks (174 MiB) and gives another CID above. Nothing
papers over that: the caller compares the node's CID with its own and refuses a mismatch, and
:meth:`IpfsClient.builds_file_width` asks a node (3 bytes, hashed only) whether it honours the width.

``ipfshttpclient.connect()`` refuses daemons newer than it knows (kubo >= 0.8, js-ipfs); constructing
``ipfshttpclient.Client`` directly skips that version check, and the calls used here are stable across
kubo and js-ipfs.

Streaming: every add goes through ``Client.add_bytes`` with a *generator* body, which ipfshttpclient
turns into a multipart part (with ``Content-Type: application/octet-stream``, which js-ipfs requires)
that ``requests`` sends with chunked transfer encoding, one read-sized piece at a time. A file is
therefore never held in memory (measured: see ``tests/backend/test_ipfs_node.py``). ``Client.add`` is
not used because it sends its boolean options as ``True``/``False`` and its own defaults for some.

Threads: the underlying client is created once but opens a fresh HTTP session per request (its default,
``session=False``), so one :class:`IpfsClient` can be shared by FastAPI's sync endpoints.
"""

from __future__ import annotations

import logging
import time
import warnings
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any, Final, NoReturn

import ipfshttpclient  # type: ignore[import-untyped]
import ipfshttpclient.exceptions as ipfs_exc  # type: ignore[import-untyped]
import requests

from edgeledger.config import Settings
from edgeledger.errors import EdgeLedgerError
from edgeledger.ipfs.cid import (
    CidBuilder,
    ImportProfile,
    InvalidCidError,
    canonical_json_bytes,
    import_profile,
    normalize_cid,
)

if TYPE_CHECKING:
    from edgeledger.config import Settings

__all__ = ["ADD_OPTIONS", "IpfsClient", "IpfsError", "add_options"]

log = logging.getLogger(__name__)

# ipfshttpclient 0.7 passes ``strict=True`` to urllib3 2.x, which warns on every request. Scoped to that
# one message from that one module, so nothing else is hidden; filters are process-wide, but a
# ``catch_warnings`` block per call would not be thread-safe.
warnings.filterwarnings(
    "ignore",
    message=r"The 'strict' parameter is no longer needed",
    category=FutureWarning,
    module=r"urllib3\.poolmanager",
)


def add_options(profile: ImportProfile | str | None = None) -> dict[str, str]:
    """Query parameters of an ``/api/v0/add`` under ``profile``: exactly what
    :class:`~edgeledger.ipfs.cid.CidBuilder` models for it (default ``legacy-cidv1``)."""
    chosen = import_profile(profile)
    return {
        "cid-version": "1",
        "raw-leaves": "true",
        "hash": "sha2-256",
        "chunker": chosen.chunker,
        "max-file-links": str(chosen.max_links),
        "pin": "true",
        "trickle": "false",
        "wrap-with-directory": "false",
    }


ADD_OPTIONS: Final[dict[str, str]] = add_options()
"""The add parameters of the default (``legacy-cidv1``) profile."""

#: The width probe: 3 one-byte chunks under at most 2 links per node. A node that honours
#: ``max-file-links`` answers with a two-level tree; one that ignores it, with a single node of 3 links.
_PROBE_BYTES: Final = b"abc"
_PROBE_OPTIONS: Final = {
    **add_options(),
    "chunker": "size-1",
    "max-file-links": "2",
    "pin": "false",
    "only-hash": "true",
}

_READ_SIZE: Final = 1024 * 1024  # bytes read from disk and sent per multipart piece
_CONNECT_TIMEOUT: Final = 10.0  # a black-holed address should not cost the full (long) read timeout
_PING_TIMEOUT: Final = 5.0
_API_BASE: Final = "api/v0"


class IpfsError(EdgeLedgerError):
    """The IPFS node was unreachable (``ipfs_unavailable``, 503) or refused a call (``ipfs_error``, 502).

    503 tells a client to retry later; 502 that the node itself rejected the request.
    """

    status = 502
    code = "ipfs_error"


def _read_pieces(fileobj: IO[bytes], size: int) -> Iterator[bytes]:
    while piece := fileobj.read(size):
        yield piece


class IpfsClient:
    """Add, read and unpin content on one IPFS node, addressed by its API multiaddr.

    No connection is made until the first call; each call uses its own HTTP session.
    """

    def __init__(
        self, api_multiaddr: str, timeout: float = 600.0, profile: ImportProfile | str | None = None
    ) -> None:
        """``timeout``: seconds to wait for the node to answer (reads); connecting waits at most 10 s.
        ``profile``: the import profile of every add that names none (default ``legacy-cidv1``)."""
        if timeout <= 0:
            raise ValueError("timeout must be positive")
        self._addr = api_multiaddr
        self._timeout = timeout
        self._profile = import_profile(profile)
        try:
            self._client = ipfshttpclient.Client(
                api_multiaddr,
                base=_API_BASE,
                timeout=(min(_CONNECT_TIMEOUT, timeout), timeout),
                chunk_size=_READ_SIZE,
            )
        except ipfs_exc.AddressError as exc:
            raise ValueError(f"invalid IPFS API multiaddr {api_multiaddr!r}: {exc}") from None

    @classmethod
    def from_settings(cls, settings: Settings) -> IpfsClient:
        """Client for ``IPFS_API`` with ``IPFS_TIMEOUT_SECONDS`` and ``IPFS_IMPORT_PROFILE``."""
        return cls(
            settings.ipfs_api, timeout=settings.ipfs_timeout_seconds, profile=settings.ipfs_import_profile
        )

    @property
    def api_multiaddr(self) -> str:
        return self._addr

    @property
    def timeout(self) -> float:
        return self._timeout

    @property
    def profile(self) -> ImportProfile:
        """The import profile of adds that name none."""
        return self._profile

    def __repr__(self) -> str:
        return f"IpfsClient({self._addr!r}, timeout={self._timeout}, profile={self._profile.name!r})"

    # ------------------------------------------------------------------------------------------
    # Adding (always pinned, always with add_options(profile))
    # ------------------------------------------------------------------------------------------

    def add_file(self, path: Path | str, profile: ImportProfile | str | None = None) -> str:
        """Add and pin a file, streamed from disk; returns its CID (CIDv1 base32).

        ``profile``: the import profile (default: the client's). A missing/unreadable file raises the
        ``OSError`` from opening it, before the node is contacted.
        """
        with Path(path).open("rb") as fh:
            return self.add_stream(fh, profile)

    def add_stream(self, fileobj: IO[bytes], profile: ImportProfile | str | None = None) -> str:
        """Add and pin everything left in a binary stream, read and sent 1 MiB at a time."""
        return self._add(_read_pieces(fileobj, _READ_SIZE), profile)

    def add_bytes(self, data: bytes, profile: ImportProfile | str | None = None) -> str:
        """Add and pin a byte string as a file."""
        return self._add(iter((bytes(data),)), profile)

    def add_json(self, obj: Any, profile: ImportProfile | str | None = None) -> str:
        """Add and pin ``obj`` as canonical JSON (sorted keys, compact, UTF-8).

        The CID is therefore a function of the document alone: ``cid_of_json(obj)`` predicts it.
        """
        return self.add_bytes(canonical_json_bytes(obj), profile)

    def _add(self, body: Iterator[bytes], profile: ImportProfile | str | None) -> str:
        opts = add_options(self._profile if profile is None else profile)
        try:
            reply = self._client.add_bytes(body, opts=opts)
        except Exception as exc:
            self._raise("add", exc)
        return self._cid_from_reply("add", reply)

    def builds_file_width(self) -> bool:
        """Whether the node honours ``max-file-links``, i.e. can build every profile's layout.

        Hashes 3 bytes (``only-hash``: nothing is stored or pinned) as 1-byte chunks under at most 2
        links per node and compares with the local computation. kubo >= 0.35 answers True; js-ipfs and
        older kubo (fixed 174-link nodes) answer False, and then agree with ``unixfs-v1-2025`` only up
        to 174 chunks.
        """
        try:
            reply = self._client.add_bytes(iter((_PROBE_BYTES,)), opts=_PROBE_OPTIONS)
        except Exception as exc:
            self._raise("add", exc)
        expected = CidBuilder(chunker_size=1, max_links=2)
        expected.update(_PROBE_BYTES)
        return self._cid_from_reply("add", reply) == expected.finalize()

    # ------------------------------------------------------------------------------------------
    # Reading and pins
    # ------------------------------------------------------------------------------------------

    def cat(self, cid: str) -> bytes:
        """Whole content of a file. Note a node that lacks the blocks may wait up to ``timeout`` for them."""
        target = normalize_cid(cid)
        try:
            data = self._client.cat(target)
        except Exception as exc:
            self._raise("cat", exc, cid=target)
        return bytes(data)

    def cat_limited(self, cid: str, max_bytes: int, seconds: float) -> bytes:
        """Content of a file of at most ``max_bytes``, read within about ``seconds``; never holds more
        than ``max_bytes`` plus one received piece in memory.

        Raises :class:`IpfsError` ``ipfs_too_large`` (413) past ``max_bytes`` (the node is asked for at
        most ``max_bytes + 1`` and the read stops there), ``ipfs_timeout`` (504) when the data is not all
        there after ``seconds`` (checked as pieces arrive; a node that sends nothing is given up after
        ``seconds`` without data, so the read takes at most about twice ``seconds``), and the usual
        ``ipfs_unavailable``/``ipfs_error`` otherwise."""
        if max_bytes < 0 or seconds <= 0:
            raise ValueError("max_bytes must be >= 0 and seconds > 0")
        target = normalize_cid(cid)
        started = time.monotonic()
        received: list[bytes] = []
        size = 0
        stream: Any = None
        try:
            stream = self._client.cat(target, length=max_bytes + 1, stream=True, timeout=seconds)
            for piece in stream:
                size += len(piece)
                if size > max_bytes:
                    raise IpfsError(
                        f"{target} is larger than {max_bytes} bytes",
                        code="ipfs_too_large",
                        status=413,
                        operation="cat",
                        cid=target,
                    )
                received.append(bytes(piece))
                if time.monotonic() - started > seconds:
                    raise _cat_timeout(target, seconds)
        except IpfsError:
            raise
        except Exception as exc:
            if isinstance(exc, ipfs_exc.TimeoutError | requests.Timeout):
                raise _cat_timeout(target, seconds) from exc
            self._raise("cat", exc, cid=target)
        finally:
            if stream is not None:
                stream.close()
        return b"".join(received)

    def pin_rm(self, cid: str) -> None:
        """Release the recursive pin on ``cid``. Idempotent: a CID that is not pinned is not an error.

        The blocks stay in the node's repository until its garbage collector runs.
        """
        target = normalize_cid(cid)
        try:
            self._client.pin.rm(target)
        except ipfs_exc.ErrorResponse as exc:
            if _says_not_pinned(exc):
                log.debug("pin rm %s: not pinned (%s)", target, exc)
                return
            self._raise("pin rm", exc, cid=target)
        except Exception as exc:
            self._raise("pin rm", exc, cid=target)

    def is_pinned(self, cid: str) -> bool:
        """Whether ``cid`` is pinned *recursively* (how every add here pins).

        A CID only reachable through another pin (an "indirect" pin, e.g. one chunk of a pinned file)
        does not count: the question this answers is "will our own pin keep this content?".
        """
        target = normalize_cid(cid)
        try:
            reply = self._client.pin.ls(target, type="recursive")
        except ipfs_exc.ErrorResponse as exc:
            if _says_not_pinned(exc):
                return False
            self._raise("pin ls", exc, cid=target)
        except Exception as exc:
            self._raise("pin ls", exc, cid=target)
        keys: dict[str, Any] = reply.get("Keys") or {}
        for key in keys:
            try:
                if normalize_cid(key, allow_v0=True) == target:
                    return True
            except InvalidCidError:
                continue
        return False

    # ------------------------------------------------------------------------------------------
    # Health
    # ------------------------------------------------------------------------------------------

    def version(self) -> str:
        """The node's version string (e.g. ``0.29.0`` for kubo, ``0.18.1`` for js-ipfs)."""
        return self._version(timeout=None)

    def ping(self, timeout: float = _PING_TIMEOUT) -> None:
        """Raise :class:`IpfsError` unless the node answers within ``timeout`` seconds (health checks)."""
        self._version(timeout=timeout)

    def _version(self, timeout: float | None) -> str:
        kwargs: dict[str, Any] = {} if timeout is None else {"timeout": timeout}
        try:
            reply = self._client.version(**kwargs)
        except Exception as exc:
            self._raise("version", exc)
        version = reply.get("Version") if isinstance(reply, Mapping) else None
        if not isinstance(version, str):
            raise IpfsError(
                f"the IPFS node at {self._addr} sent an unexpected version reply", operation="version"
            )
        return version

    # ------------------------------------------------------------------------------------------
    # Errors
    # ------------------------------------------------------------------------------------------

    def _cid_from_reply(self, operation: str, reply: Any) -> str:
        try:
            return normalize_cid(str(reply), allow_v0=True)
        except InvalidCidError:
            raise IpfsError(
                f"the IPFS node at {self._addr} answered {operation} with an invalid CID {reply!r}",
                operation=operation,
            ) from None

    def _raise(self, operation: str, exc: Exception, **details: Any) -> NoReturn:
        """Re-raise a library exception as :class:`IpfsError`; anything unexpected propagates unchanged."""
        unreachable = _unreachable_reason(exc)
        if unreachable is not None:
            raise IpfsError(
                f"the IPFS node at {self._addr} is unreachable ({unreachable})",
                code="ipfs_unavailable",
                status=503,
                operation=operation,
                **details,
            ) from exc
        if isinstance(exc, ipfs_exc.ErrorResponse):
            raise IpfsError(
                f"the IPFS node at {self._addr} refused {operation}: {exc}", operation=operation, **details
            ) from exc
        if isinstance(exc, ipfs_exc.Error | requests.RequestException):
            raise IpfsError(
                f"the IPFS node at {self._addr} failed {operation}: {exc}", operation=operation, **details
            ) from exc
        raise exc


def _cat_timeout(cid: str, seconds: float) -> IpfsError:
    return IpfsError(
        f"{cid} was not read within {seconds:g} s", code="ipfs_timeout", status=504, operation="cat", cid=cid
    )


def _unreachable_reason(exc: Exception) -> str | None:
    """Short reason when ``exc`` means "no usable node there" (refused, timed out, dropped), else None."""
    if isinstance(exc, ipfs_exc.TimeoutError | requests.Timeout):
        return "timed out"
    if isinstance(exc, ipfs_exc.ConnectionError | requests.ConnectionError):
        return "connection failed"
    if isinstance(exc, ipfs_exc.ProtocolError | requests.exceptions.ChunkedEncodingError):
        return "connection lost"
    return None


def _says_not_pinned(exc: ipfs_exc.ErrorResponse) -> bool:
    # kubo: "not pinned or pinned indirectly" / "path '...' is not pinned"; js-ipfs: "... is not pinned".
    return "not pinned" in str(exc).lower()
