"""LineCache: LRU by bytes, one compute per key in flight, failures not kept, consistent under threads."""

from __future__ import annotations

import random
import threading
import time

import numpy as np
import pytest

from creps.serve.lines import LineCache


class Computes:
    """compute functions that count their calls per key."""

    def __init__(self):
        self.calls: dict = {}
        self.lock = threading.Lock()

    def of(self, key, nbytes: int = 1000, gate: threading.Event | None = None, error: Exception | None = None):
        def compute():
            with self.lock:
                self.calls[key] = self.calls.get(key, 0) + 1
            if gate is not None:
                assert gate.wait(10), "the gate was never opened"
            if error is not None:
                raise error
            return np.full(nbytes, hash(key) % 251, np.uint8)
        return compute


def wait_for(condition, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.001)


def test_lru_evicts_the_least_recently_used_by_bytes():
    cache, computes = LineCache(3000), Computes()
    for key in "abc":
        cache.get(key, computes.of(key))
    cache.get("a", computes.of("a"))  # a is now the most recent; b the oldest
    cache.get("d", computes.of("d"))  # 4000 bytes > 3000: b goes
    assert cache.stats() == {"hits": 1, "misses": 4, "coalesced": 0, "evictions": 1, "bytes": 3000, "entries": 3}
    for key in "acd":
        cache.get(key, computes.of(key))
    assert computes.calls == {"a": 1, "b": 1, "c": 1, "d": 1}
    cache.get("b", computes.of("b"))  # recomputed, and evicts the then oldest (a)
    assert computes.calls["b"] == 2
    cache.get("c", computes.of("c"))
    assert computes.calls["c"] == 1
    cache.get("a", computes.of("a"))
    assert computes.calls["a"] == 2


def test_sizes_count_and_an_entry_past_the_budget_is_returned_but_not_kept():
    cache, computes = LineCache(2500), Computes()
    small = cache.get("small", computes.of("small", 500))
    big = cache.get("big", computes.of("big", 2501))
    assert (small.nbytes, big.nbytes) == (500, 2501)
    assert cache.stats()["bytes"] == 500 and cache.stats()["entries"] == 1
    cache.get("two", computes.of("two", 2000))  # 2500 bytes: fits exactly
    assert cache.stats()["evictions"] == 0 and cache.stats()["bytes"] == 2500
    cache.get("big", computes.of("big", 2501))
    assert computes.calls["big"] == 2 and cache.stats()["evictions"] == 0


def test_zero_budget_only_coalesces():
    cache, computes = LineCache(0), Computes()
    cache.get("k", computes.of("k", 1))
    cache.get("k", computes.of("k", 1))
    assert computes.calls["k"] == 2 and cache.stats()["entries"] == 0


@pytest.mark.parametrize("threads", [2, 8])
def test_threads_asking_one_key_share_one_compute(threads):
    cache, computes, gate = LineCache(1 << 20), Computes(), threading.Event()
    results, errors = [None] * threads, []

    def ask(i):
        try:
            results[i] = cache.get("key", computes.of("key", gate=gate))
        except Exception as exc:  # pragma: no cover - reported below
            errors.append(exc)

    workers = [threading.Thread(target=ask, args=(i,)) for i in range(threads)]
    for worker in workers:
        worker.start()
    wait_for(lambda: cache.stats()["coalesced"] == threads - 1)  # all but the computing one wait
    gate.set()
    for worker in workers:
        worker.join(10)
    assert not errors
    assert computes.calls == {"key": 1}
    assert all(result is results[0] for result in results)
    assert cache.stats() == {"hits": 0, "misses": 1, "coalesced": threads - 1, "evictions": 0, "bytes": 1000,
                             "entries": 1}


def test_a_failed_compute_reaches_every_waiter_and_is_not_kept():
    cache, computes, gate = LineCache(1 << 20), Computes(), threading.Event()
    error = RuntimeError("the backend broke")
    seen = []

    def ask():
        try:
            cache.get("key", computes.of("key", gate=gate, error=error))
        except RuntimeError as exc:
            seen.append(exc)

    workers = [threading.Thread(target=ask) for _ in range(4)]
    for worker in workers:
        worker.start()
    wait_for(lambda: cache.stats()["coalesced"] == 3)
    gate.set()
    for worker in workers:
        worker.join(10)
    assert seen == [error] * 4 and computes.calls == {"key": 1}
    assert cache.stats()["entries"] == 0 and cache.stats()["bytes"] == 0
    value = cache.get("key", computes.of("key", 10))  # the next caller computes again
    assert computes.calls == {"key": 2} and value.nbytes == 10


def test_many_threads_many_keys_stay_consistent():
    cache, computes = LineCache(20_000), Computes()
    asks, lock, wrong = [0], threading.Lock(), []

    def work(seed):
        rng = random.Random(seed)
        for _ in range(300):
            key = rng.randrange(40)
            value = cache.get(key, computes.of(key, 1000 + key))
            if value.nbytes != 1000 + key or value[0] != hash(key) % 251 or cache.stats()["bytes"] > 20_000:
                wrong.append(key)
            with lock:
                asks[0] += 1

    workers = [threading.Thread(target=work, args=(seed,)) for seed in range(6)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join(30)
    stats = cache.stats()
    assert wrong == []
    assert stats["hits"] + stats["misses"] + stats["coalesced"] == asks[0] == 1800
    assert stats["misses"] == sum(computes.calls.values())
    assert stats["misses"] - stats["evictions"] == stats["entries"]  # every compute stored (all fit), some dropped
    assert stats["bytes"] == sum(1000 + key for key in cache.entries)


def test_a_negative_budget_is_refused():
    with pytest.raises(ValueError, match="negative"):
        LineCache(-1)
