"""Run every benchmark in turn: ``python -m bench [--quick] [name ...]``.

Each benchmark prints its own tables; a summary of the issue-4 overhead ratios follows.
A benchmark that fails (a server down) is reported and the others still run. Exit
status 0 whatever the numbers: benchmarks report, they do not assert.
"""

from __future__ import annotations

import argparse
import importlib
import time
import traceback
from collections.abc import Sequence

from bench._common import TARGET_RATIO

BENCHMARKS = (
    "cache_get",
    "bus_publish",
    "blob_s3",
    "stampede",
    "feed_fanout",
    "resharding",
    "migrate",
    "reshard",
)
#: Ratios with an issue-4 target (adapter median / raw client median <= 1.10).
TARGETED = (
    "cache.get",
    "cache.get_many",
    "bus.publish",
    "s3.put 4 KiB",
    "s3.get 4 KiB",
    "s3.put 1 MiB",
    "s3.get 1 MiB",
)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small counts (a smoke run)")
    parser.add_argument("names", nargs="*", metavar="name", help=", ".join(BENCHMARKS))
    args = parser.parse_args(argv)
    unknown = [name for name in args.names if name not in BENCHMARKS]
    if unknown:
        parser.error(f"unknown benchmark {', '.join(unknown)}; known: {', '.join(BENCHMARKS)}")
    results: dict[str, float] = {}
    failed: list[str] = []
    began = time.perf_counter()
    for name in args.names or BENCHMARKS:
        module = importlib.import_module(f"bench.{name}")
        mode = "quick" if args.quick else "full"
        print(f"\n== bench.{name} ({mode}) ==")
        started = time.perf_counter()
        try:
            results.update(module.run(args.quick))
        except Exception:
            traceback.print_exc()
            failed.append(name)
        print(f"[{name}: {time.perf_counter() - started:.1f} s]")
    print(f"\n== summary ({time.perf_counter() - began:.1f} s) ==")
    for key in TARGETED:
        if key in results:
            state = "target met" if results[key] <= TARGET_RATIO else "target missed"
            print(f"{key:<16} ratio {results[key]:.3f}  {state} (<= {TARGET_RATIO:.2f})")
    if "bus.publish_many" in results:
        print(
            f"{'bus.publish_many':<16} ratio {results['bus.publish_many']:.3f}  (per message, vs"
            " pika confirming each message: informational)"
        )
    migrate_targets = (
        ("migrate.sql_rate_ratio", ">=", 0.5),
        ("migrate.blob_time_ratio", "<=", 1.2),
        ("migrate.rss_growth_mib", "<", 150.0),
        ("migrate.second_pass_ratio", "<", 0.10),
    )
    for key, op, target in migrate_targets:
        if key in results:
            value = results[key]
            met = (
                value >= target if op == ">=" else value <= target if op == "<=" else value < target
            )
            print(
                f"{key:<28} {value:.3f}  {'target met' if met else 'target missed'} ({op} {target})"
            )
    if failed:
        print(f"failed to run: {', '.join(failed)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
