"""MemcachedCache.get / get_many against a bare pymemcache client on the same server.

Both sides read the same number of keys holding the same JSON values from a private
memcached with one worker thread (``bench._memcached``: with several threads, which
thread serves a connection decided a client's get time for a whole run); the baseline
decodes JSON by hand (``json.loads``), as the adapter does, so the ratio is the adapter's
own overhead: key normalisation, the pooled client, the hit/miss counters and the expiry
flags. Target (issue 4): a get within 10% of a bare get.
pymemcache's own ``PooledClient`` (the thread-safe way to share its client) is timed too,
for reference.

A get takes a few tens of microseconds on loopback, most of it the two system calls and
memcached's thread being scheduled: on a shared 2-core box that time moves by a factor of
two or three with other processes' load. So the variants alternate op by op
(``bench._common.alternating``) and the ratio is the median of per-round ratios.

Run: ``python -m bench.cache_get [--quick]`` from the repository root.
"""

from __future__ import annotations

import itertools
import json
import uuid
from collections.abc import Sequence

from pymemcache.client.base import Client, PooledClient

from adapters.cache.memcached import MemcachedCache
from bench._common import (
    alternating,
    header,
    latency_table,
    load_average,
    paired_verdict,
    parse_args,
)
from bench._memcached import single_thread_memcached

BARE_GET = "pymemcache get (baseline)"
ADAPTER_GET = "MemcachedCache.get"
BARE_MANY = "pymemcache get_many x100 (baseline)"
ADAPTER_MANY = "MemcachedCache.get_many x100"
VALUE = {"id": 12345, "name": "a cached row", "tags": ["x", "y", "z"], "score": 0.5}


def run(quick: bool) -> dict[str, float]:
    with single_thread_memcached() as server:
        return _run(quick, server)


def _run(quick: bool, server: tuple[str, int]) -> dict[str, float]:
    keys_count = 200 if quick else 1000
    many = 100  # keys per get_many call
    rounds, per_round, warmup = (10, 100, 200) if quick else (40, 250, 1000)
    run_id = uuid.uuid4().hex[:8]
    cache = MemcachedCache(servers=[f"{server[0]}:{server[1]}"], namespace=f"bA{run_id}:")
    bare = Client(server, connect_timeout=0.5, timeout=0.5, no_delay=True)
    pooled = PooledClient(server, connect_timeout=0.5, timeout=0.5, no_delay=True)
    adapter_keys = [f"k{i}" for i in range(keys_count)]
    bare_keys = [f"bB{run_id}:k{i}" for i in range(keys_count)]
    cache.set_many(dict.fromkeys(adapter_keys, VALUE))
    text = json.dumps(VALUE, separators=(",", ":")).encode()
    bare.set_many(dict.fromkeys(bare_keys, text))

    adapter_cycle = itertools.cycle(adapter_keys)
    bare_cycle = itertools.cycle(bare_keys)
    adapter_groups = itertools.cycle(_groups(adapter_keys, many))
    bare_groups = itertools.cycle(_groups(bare_keys, many))

    def adapter_get() -> object:
        return cache.get(next(adapter_cycle))

    def bare_get() -> object:
        raw = bare.get(next(bare_cycle))
        return None if raw is None else json.loads(raw)

    pooled_cycle = itertools.cycle(bare_keys)

    def pooled_get() -> object:
        raw = pooled.get(next(pooled_cycle))
        return None if raw is None else json.loads(raw)

    def adapter_get_many() -> object:
        return cache.get_many(next(adapter_groups))

    def bare_get_many() -> object:
        found = bare.get_many(next(bare_groups))
        return {key: json.loads(raw) for key, raw in found.items()}

    try:
        # Sanity: both sides really hit.
        if adapter_get() != VALUE or bare_get() != VALUE:
            raise RuntimeError("a get missed: the keys were not stored")
        if len(adapter_get_many()) != many or len(bare_get_many()) != many:  # type: ignore[arg-type]
            raise RuntimeError("a get_many missed: the keys were not stored")
        singles = alternating(
            {
                BARE_GET: bare_get,
                "pymemcache PooledClient get": pooled_get,
                ADAPTER_GET: adapter_get,
            },
            rounds=rounds,
            per_round=per_round,
            warmup=warmup,
        )
        batches = alternating(
            {BARE_MANY: bare_get_many, ADAPTER_MANY: adapter_get_many},
            rounds=rounds,
            per_round=max(10, per_round // 10),
            warmup=max(20, warmup // 10),
        )
    finally:
        for key in adapter_keys:
            cache.delete(key)
        bare.delete_many(bare_keys)
        cache.close()
        bare.close()
        pooled.close()

    text_single, _ = latency_table(
        singles.samples, {ADAPTER_GET: BARE_GET, "pymemcache PooledClient get": BARE_GET}
    )
    text_many, _ = latency_table(batches.samples, {ADAPTER_MANY: BARE_MANY})
    print(f"{keys_count} keys of {len(text)} bytes of JSON on memcached {server[0]}:{server[1]}")
    print("(ratio column: ratio of the medians over all samples)")
    print(text_single)
    print()
    print("get_many: per call of 100 keys")
    print(text_many)
    print(paired_verdict("cache get vs bare pymemcache get", singles, ADAPTER_GET, BARE_GET))
    pooled_ratio = singles.ratio("pymemcache PooledClient get", BARE_GET)[0]
    print(f"(pymemcache's own PooledClient get vs bare get: ratio {pooled_ratio:.3f})")
    print(
        paired_verdict(
            "cache get_many vs bare pymemcache get_many", batches, ADAPTER_MANY, BARE_MANY
        )
    )
    print(load_average())
    return {
        "cache.get": singles.ratio(ADAPTER_GET, BARE_GET)[0],
        "cache.get_many": batches.ratio(ADAPTER_MANY, BARE_MANY)[0],
        "cache.get_pooled_client": pooled_ratio,
    }


def _groups(keys: Sequence[str], size: int) -> list[list[str]]:
    return [list(keys[i : i + size]) for i in range(0, len(keys) - size + 1, size)]


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(__doc__.splitlines()[0], argv)
    header("cache get: MemcachedCache vs bare pymemcache", args.quick)
    run(args.quick)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
