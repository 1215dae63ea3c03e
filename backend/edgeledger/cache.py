"""A small per-process cache whose entries expire after a fixed age (the read paths' freshness bound).

The busy read paths (authentication, asset provenance) reuse what they computed for at most
``READ_MAX_AGE_SECONDS`` (1 s by default), the same bound as the chain head they share; docs/operations.md
("Read paths") says what each one caches and why that age is safe.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Awaitable, Callable, Hashable
from typing import Generic, TypeVar

V = TypeVar("V")


class TtlCache(Generic[V]):
    """Values by key for at most ``max_age`` seconds (monotonic clock); at most ``max_entries`` of them
    (when full, the whole cache is dropped: cheaper than tracking order, and refilled within a second).
    ``max_age`` 0 disables it. Reads take no lock (a dict read is atomic); writes do."""

    def __init__(self, max_age: float, max_entries: int = 10_000) -> None:
        self.max_age = max_age
        self.max_entries = max_entries
        self._entries: dict[Hashable, tuple[float, V]] = {}
        self._lock = threading.Lock()

    def get(self, key: Hashable) -> V | None:
        entry = self._entries.get(key)
        if entry is None or time.monotonic() - entry[0] >= self.max_age:
            return None
        return entry[1]

    def put(self, key: Hashable, value: V) -> None:
        if self.max_age <= 0:
            return
        with self._lock:
            if len(self._entries) >= self.max_entries:
                self._entries.clear()
            self._entries[key] = (time.monotonic(), value)

    def clear(self) -> None:
        with self._lock:
            self._entries.clear()

    def __len__(self) -> int:
        return len(self._entries)


class SingleFlight(Generic[V]):
    """Concurrent computations of one key share a single run (use from the event loop only).

    When a cached value expires under load, every request for it would otherwise compute it again at the
    same moment (a thundering herd that, on a busy API process, turned each second's expiry into a
    burst of identical database and chain reads). The first request computes; the others await its
    result, or its error."""

    def __init__(self) -> None:
        self._running: dict[Hashable, asyncio.Future[V]] = {}

    async def run(self, key: Hashable, compute: Callable[[], Awaitable[V]]) -> V:
        running = self._running.get(key)
        if running is not None:
            return await asyncio.shield(running)
        future: asyncio.Future[V] = asyncio.get_running_loop().create_future()
        self._running[key] = future
        try:
            value = await compute()
        except asyncio.CancelledError:
            future.cancel()
            raise
        except Exception as exc:
            future.set_exception(exc)
            future.exception()  # retrieved: no "never retrieved" warning when nobody else waited
            raise
        else:
            future.set_result(value)
            return value
        finally:
            del self._running[key]
