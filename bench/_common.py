"""Shared machinery of the benchmarks: interleaved timing, percentiles, tables, verdicts.

Every comparison runs its variants in the same process and the same run, in alternating
batches (the order rotates every round), after a warm-up, so drift in the machine or the
server hits every variant alike. A benchmark reports; it never asserts, and exits 0.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import time
from collections.abc import Callable, Mapping, Sequence

#: The issue's overhead target: an adapter op within 10% of its raw client.
TARGET_RATIO = 1.10


def parse_args(description: str, argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--quick", action="store_true", help="small counts (a smoke run)")
    return parser.parse_args(argv)


def percentile(samples: Sequence[float], fraction: float) -> float:
    """The ``fraction`` percentile of ``samples`` (nearest rank)."""
    ordered = sorted(samples)
    index = min(len(ordered) - 1, max(0, round(fraction * (len(ordered) - 1))))
    return ordered[index]


def interleaved(
    variants: Mapping[str, Callable[[], object]],
    *,
    rounds: int,
    batch: int,
    warmup: int,
) -> dict[str, list[float]]:
    """Time single calls of each variant: ``rounds`` x ``batch`` samples each, in seconds.

    Each variant is first called ``warmup`` times (connections, pools, caches). Then every
    round runs one batch of each variant, the order rotating by one each round.
    """
    names = list(variants)
    for name in names:
        op = variants[name]
        for _ in range(warmup):
            op()
    samples: dict[str, list[float]] = {name: [] for name in names}
    clock = time.perf_counter
    for round_ in range(rounds):
        shift = round_ % len(names)
        for name in names[shift:] + names[:shift]:
            op, out = variants[name], samples[name]
            for _ in range(batch):
                began = clock()
                op()
                out.append(clock() - began)
    return samples


def summary(samples: Sequence[float]) -> tuple[float, float]:
    """(median, p90) of ``samples``."""
    return statistics.median(samples), percentile(samples, 0.9)


def micros(seconds: float) -> str:
    return f"{seconds * 1e6:,.1f}"


def table(headers: Sequence[str], rows: Sequence[Sequence[object]]) -> str:
    """A plain-text table, right-aligned except for the first column."""
    cells = [[str(cell) for cell in row] for row in rows]
    widths = [max(len(h), *(len(r[i]) for r in cells)) for i, h in enumerate(headers)]

    def line(row: Sequence[str]) -> str:
        first, *rest = row
        return "  ".join(
            [first.ljust(widths[0])] + [c.rjust(w) for c, w in zip(rest, widths[1:], strict=True)]
        )

    out = [line(list(headers)), "  ".join("-" * w for w in widths)]
    out.extend(line(row) for row in cells)
    return "\n".join(out)


def latency_table(
    samples: Mapping[str, Sequence[float]], baselines: Mapping[str, str], *, per: int = 1
) -> tuple[str, dict[str, float]]:
    """A table of median and p90 per op (µs) with each variant's ratio to its baseline.

    ``baselines`` maps a variant to the name of its baseline (baselines map to nothing).
    ``per`` divides every sample (a sample timing ``per`` items reports per item).
    Returns the table and the ratio of medians of each compared variant.
    """
    rows = []
    ratios: dict[str, float] = {}
    medians = {name: statistics.median(s) / per for name, s in samples.items()}
    for name, values in samples.items():
        median, p90 = summary(values)
        base = baselines.get(name)
        ratio = ""
        if base is not None:
            ratios[name] = medians[name] / medians[base]
            ratio = f"{ratios[name]:.3f}"
        rows.append(
            [
                name,
                micros(median / per),
                micros(p90 / per),
                f"{per / median:,.0f}",
                len(values),
                ratio,
            ]
        )
    headers = ["variant", "median µs", "p90 µs", "ops/s", "samples", "ratio"]
    return table(headers, rows), ratios


def verdict(label: str, ratio: float, target: float = TARGET_RATIO) -> str:
    """One line: the ratio against the issue's target, met or missed."""
    state = "target met" if ratio <= target else "target missed"
    return f"{label}: ratio {ratio:.3f} (target <= {target:.2f}): {state}"


def header(title: str, quick: bool) -> None:
    mode = "quick" if quick else "full"
    cpus = os.cpu_count()
    print(f"== {title} ({mode} run; python {platform.python_version()}, {cpus} cpus) ==")
