"""MemcachedCache.get / get_many against a bare pymemcache client on the same server.

Both sides read the same number of keys holding the same JSON values from memcached at
127.0.0.1:21211; the baseline decodes JSON by hand (``json.loads``), as the adapter does,
so the ratio is the adapter's own overhead: key normalisation, the pooled client, the
hit/miss counters and the expiry flags. Target (issue 4): a get within 10% of a bare get.

Run: ``python -m bench.cache_get [--quick]`` from the repository root.
"""

from __future__ import annotations

import itertools
import json
import uuid
from collections.abc import Sequence

from pymemcache.client.base import Client

from adapters.cache.memcached import MemcachedCache
from bench._common import header, interleaved, latency_table, parse_args, verdict

SERVER = ("127.0.0.1", 21211)
VALUE = {"id": 12345, "name": "a cached row", "tags": ["x", "y", "z"], "score": 0.5}


def run(quick: bool) -> dict[str, float]:
    keys_count = 200 if quick else 1000
    many = 100  # keys per get_many call
    rounds, batch, warmup = (10, 100, 200) if quick else (30, 300, 1000)
    run_id = uuid.uuid4().hex[:8]
    cache = MemcachedCache(servers=[f"{SERVER[0]}:{SERVER[1]}"], namespace=f"bA{run_id}:")
    bare = Client(SERVER, connect_timeout=0.5, timeout=0.5, no_delay=True)
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
        singles = interleaved(
            {"pymemcache get (baseline)": bare_get, "MemcachedCache.get": adapter_get},
            rounds=rounds,
            batch=batch,
            warmup=warmup,
        )
        batches = interleaved(
            {
                f"pymemcache get_many x{many} (baseline)": bare_get_many,
                f"MemcachedCache.get_many x{many}": adapter_get_many,
            },
            rounds=rounds,
            batch=max(10, batch // 10),
            warmup=max(20, warmup // 10),
        )
    finally:
        for key in adapter_keys:
            cache.delete(key)
        bare.delete_many(bare_keys)
        cache.close()
        bare.close()

    text_single, single_ratios = latency_table(
        singles, {"MemcachedCache.get": "pymemcache get (baseline)"}
    )
    text_many, many_ratios = latency_table(
        batches,
        {f"MemcachedCache.get_many x{many}": f"pymemcache get_many x{many} (baseline)"},
    )
    print(f"{keys_count} keys of {len(text)} bytes of JSON on memcached {SERVER[0]}:{SERVER[1]}")
    print(text_single)
    print()
    print(f"get_many: per call of {many} keys")
    print(text_many)
    get_ratio = single_ratios["MemcachedCache.get"]
    many_ratio = many_ratios[f"MemcachedCache.get_many x{many}"]
    print(verdict("cache get vs bare pymemcache get", get_ratio))
    print(verdict("cache get_many vs bare pymemcache get_many", many_ratio))
    return {"cache.get": get_ratio, "cache.get_many": many_ratio}


def _groups(keys: Sequence[str], size: int) -> list[list[str]]:
    return [list(keys[i : i + size]) for i in range(0, len(keys) - size + 1, size)]


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(__doc__.splitlines()[0], argv)
    header("cache get: MemcachedCache vs bare pymemcache", args.quick)
    run(args.quick)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
