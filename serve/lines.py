"""`LineCache`: computed arrays by key, an LRU bounded in bytes, one compute per key in flight.

The server's threads ask for the line features of a tile row's ys and a tile column's xs;
most asks repeat (every tile of a row shares its ys), and several tiles of one row often
arrive at once. So a key is computed once: the first caller computes, callers of the same
key meanwhile wait for that result (`coalesced`), later ones find it stored (`hits`). A
compute that raises stores nothing: its waiters get the same exception and the next caller
tries again. Stored values are dropped least recently used first once they pass
`max_bytes`; a value larger than the whole budget is returned but never stored, so
`LineCache(0)` only coalesces.
"""

from __future__ import annotations

import logging
import threading
from collections import OrderedDict
from typing import Callable, Hashable

log = logging.getLogger(__name__)


def array_bytes(value) -> int:
    """The bytes a stored numpy array holds."""
    return int(value.nbytes)


class Flight:
    """One compute in progress: its result, or its exception, once `done` is set."""

    def __init__(self):
        self.done = threading.Event()
        self.value = None
        self.error: BaseException | None = None

    def result(self):
        self.done.wait()
        if self.error is not None:
            raise self.error
        return self.value


class LineCache:
    """Values by hashable key, at most `max_bytes` of them stored (`size(value)` each)."""

    def __init__(self, max_bytes: int, size: Callable[[object], int] = array_bytes):
        if max_bytes < 0:
            raise ValueError(f"cache budget {max_bytes} bytes is negative")
        self.max_bytes = max_bytes
        self.size = size
        self.lock = threading.Lock()
        self.entries: OrderedDict[Hashable, tuple[object, int]] = OrderedDict()  # oldest first
        self.flights: dict[Hashable, Flight] = {}
        self.bytes = 0
        self.hits = self.misses = self.coalesced = self.evictions = 0

    def get(self, key: Hashable, compute: Callable[[], object]):
        """The value of `key`: stored, being computed by another thread (waited for), or
        computed here by `compute()` (thread-safe)."""
        with self.lock:
            if key in self.entries:
                self.hits += 1
                self.entries.move_to_end(key)
                return self.entries[key][0]
            flight = self.flights.get(key)
            owner = flight is None
            if owner:
                self.misses += 1
                flight = self.flights[key] = Flight()
            else:
                self.coalesced += 1
        if not owner:
            return flight.result()
        try:
            value = compute()
        except BaseException as exc:
            with self.lock:
                del self.flights[key]
            flight.error = exc
            flight.done.set()
            raise
        with self.lock:  # stored before the flight ends: no caller in between starts a second compute
            self._store(key, value)
            del self.flights[key]
        flight.value = value
        flight.done.set()
        return value

    def _store(self, key: Hashable, value) -> None:
        nbytes = self.size(value)
        if nbytes > self.max_bytes:
            return
        self.entries[key] = (value, nbytes)
        self.bytes += nbytes
        while self.bytes > self.max_bytes:
            _, (_, dropped) = self.entries.popitem(last=False)
            self.bytes -= dropped
            self.evictions += 1

    def stats(self) -> dict:
        """hits, misses (computes started), coalesced (waits on a compute in flight),
        evictions, bytes and entries stored."""
        with self.lock:
            return {"hits": self.hits, "misses": self.misses, "coalesced": self.coalesced,
                    "evictions": self.evictions, "bytes": self.bytes, "entries": len(self.entries)}
