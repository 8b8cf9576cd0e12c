"""Thundering herd: N threads asking for one missing key at once, CachedLoader vs naive.

Each round takes a key that is not in the cache (a fresh key: what every reader sees the
instant a hot entry expires), releases N threads at once from a barrier, and counts how
many times the loader (a simulated database query that sleeps ``LOAD_SECONDS``) runs and
how long the round takes until every thread has its value.

* naive: ``get``; on a miss ``loader()`` then ``set``: every thread that misses loads.
* CachedLoader: single flight within the process, plus a lease on a SHARED cache.
* CachedLoader x2 (memcached only): two loaders with separate single flights over the same
  memcached, N/2 threads each, standing for two processes; only the lease keeps them to
  one load, and the loser waits for the winner's value by polling.

No issue target: the point is the loader count (ideal: 1 per round).

Run: ``python -m bench.stampede [--quick]`` from the repository root.
"""

from __future__ import annotations

import statistics
import threading
import time
import uuid
from collections.abc import Callable, Sequence

from adapters.cache.memcached import MemcachedCache
from adapters.cache.memory import MemoryCache
from bench._common import header, parse_args, percentile, table
from scalecore.ports.cache import NO_VALUE, Cache
from scalecore.stampede import CachedLoader
from scalecore.types import JSONValue

LOAD_SECONDS = 0.05
VALUE = {"rows": list(range(20))}

Getter = Callable[[str, Callable[[], JSONValue]], JSONValue]


def naive(cache: Cache) -> Getter:
    def get(key: str, loader: Callable[[], JSONValue]) -> JSONValue:
        value = cache.get(key)
        if value is NO_VALUE:
            value = loader()
            cache.set(key, value, 60)
        return value

    return get


def cached(loader_: CachedLoader) -> Getter:
    def get(key: str, loader: Callable[[], JSONValue]) -> JSONValue:
        return loader_.get_or_compute(key, loader, ttl=60)

    return get


def herd(getters: Sequence[Getter], threads: int) -> tuple[int, float]:
    """One round: ``threads`` threads (spread over ``getters``) ask for one fresh key.

    Returns (loader calls, seconds until the last thread had its value).
    """
    key = f"herd:{uuid.uuid4().hex}"
    calls = 0
    lock = threading.Lock()
    barrier = threading.Barrier(threads + 1)
    results: list[JSONValue] = []

    def loader() -> JSONValue:
        nonlocal calls
        with lock:
            calls += 1
        time.sleep(LOAD_SECONDS)
        return VALUE

    def worker(get: Getter) -> None:
        barrier.wait()
        value = get(key, loader)
        with lock:
            results.append(value)

    pool = [
        threading.Thread(target=worker, args=(getters[i % len(getters)],)) for i in range(threads)
    ]
    for thread in pool:
        thread.start()
    barrier.wait()
    began = time.perf_counter()
    for thread in pool:
        thread.join()
    elapsed = time.perf_counter() - began
    if len(results) != threads or any(value != VALUE for value in results):
        raise RuntimeError("a thread got a wrong value")
    return calls, elapsed


def run(quick: bool) -> dict[str, float]:
    threads = 32
    rounds = 3 if quick else 10
    memory = MemoryCache()
    memcached = MemcachedCache(
        servers=["127.0.0.1:21211", "127.0.0.1:21212"], namespace=f"herd{uuid.uuid4().hex[:6]}:"
    )
    variants: dict[str, Sequence[Getter]] = {
        "MemoryCache, naive": [naive(memory)],
        "MemoryCache, CachedLoader": [cached(CachedLoader(memory))],
        "MemcachedCache, naive": [naive(memcached)],
        "MemcachedCache, CachedLoader": [cached(CachedLoader(memcached))],
        "MemcachedCache, CachedLoader x2": [
            cached(CachedLoader(memcached, poll_interval=0.01)),
            cached(CachedLoader(memcached, poll_interval=0.01)),
        ],
    }
    calls: dict[str, list[int]] = {name: [] for name in variants}
    walls: dict[str, list[float]] = {name: [] for name in variants}
    try:
        for getters in variants.values():  # warm-up: threads, pools, connections
            herd(getters, threads)
        names = list(variants)
        for round_ in range(rounds):
            shift = round_ % len(names)
            for name in names[shift:] + names[:shift]:
                count, wall = herd(variants[name], threads)
                calls[name].append(count)
                walls[name].append(wall)
    finally:
        memcached.close()
    rows = [
        [
            name,
            f"{statistics.median(calls[name]):g}",
            max(calls[name]),
            f"{statistics.median(walls[name]) * 1e3:,.1f}",
            f"{percentile(walls[name], 0.9) * 1e3:,.1f}",
        ]
        for name in variants
    ]
    print(
        f"{threads} threads, one missing key per round, loader sleeps {LOAD_SECONDS * 1e3:g} ms, "
        f"{rounds} rounds"
    )
    print(
        table(
            ["variant", "loads median", "loads max", "wall median ms", "wall p90 ms"],
            rows,
        )
    )
    for cache_name in ("MemoryCache", "MemcachedCache"):
        base = statistics.median(calls[f"{cache_name}, naive"])
        better = statistics.median(calls[f"{cache_name}, CachedLoader"])
        print(f"{cache_name}: loader calls per herd {base:g} naive -> {better:g} CachedLoader")
    print("no issue target for this benchmark (ideal: 1 loader call per round)")
    return {name: float(statistics.median(calls[name])) for name in variants}


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(__doc__.splitlines()[0], argv)
    header("stampede: CachedLoader vs naive get-load-set", args.quick)
    run(args.quick)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
