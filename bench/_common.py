"""Shared machinery of the benchmarks: interleaved timing, percentiles, tables, verdicts.

Every comparison runs its variants in the same process and the same run, in alternating
batches (the order rotates every round), after a warm-up, so drift in the machine or the
server hits every variant alike. A benchmark reports; it never asserts, and exits 0.
"""

from __future__ import annotations

import argparse
import gc
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


class Paired:
    """Samples of :func:`alternating`: every op, and every round's samples per variant."""

    def __init__(self, names: Sequence[str]) -> None:
        self.samples: dict[str, list[float]] = {name: [] for name in names}
        self.rounds: list[dict[str, list[float]]] = []

    def ratio(self, variant: str, baseline: str) -> tuple[float, float, float]:
        """The median over rounds of (variant's median / baseline's median in that round),
        and the lower and upper quartile of those per-round ratios."""
        ratios = sorted(
            statistics.median(r[variant]) / statistics.median(r[baseline]) for r in self.rounds
        )
        return statistics.median(ratios), percentile(ratios, 0.25), percentile(ratios, 0.75)


def alternating(
    variants: Mapping[str, Callable[[], object]],
    *,
    rounds: int,
    per_round: int,
    warmup: int,
) -> Paired:
    """Time single calls of each variant, alternating op by op: A B, B A, A B ...

    For ratios of ops that take tens of microseconds on a shared box: another process's
    burst of CPU (or a server thread waiting for a core) lasts longer than a pair of ops,
    so it lands on both variants alike instead of on one variant's whole batch. Each
    variant is called ``warmup`` times first; the garbage collector is paused while timing
    (the variants' allocations are still timed, the collections they trigger are not);
    ``Paired.ratio`` gives the median of the per-round ratios of medians and its spread.
    """
    names = list(variants)
    for name in names:
        op = variants[name]
        for _ in range(warmup):
            op()
    paired = Paired(names)
    clock = time.perf_counter
    orders = [names[shift:] + names[:shift] for shift in range(len(names))]
    gc.collect()
    gc.disable()
    try:
        for round_ in range(rounds):
            this_round: dict[str, list[float]] = {name: [] for name in names}
            for i in range(per_round):
                for name in orders[(round_ + i) % len(orders)]:
                    op = variants[name]
                    began = clock()
                    op()
                    this_round[name].append(clock() - began)
            paired.rounds.append(this_round)
            for name, values in this_round.items():
                paired.samples[name].extend(values)
            gc.collect()  # between rounds, untimed
    finally:
        gc.enable()
    return paired


def paired_verdict(label: str, paired: Paired, variant: str, baseline: str) -> str:
    """One line: the median per-round ratio, its quartiles, and met or missed."""
    ratio, low, high = paired.ratio(variant, baseline)
    state = "target met" if ratio <= TARGET_RATIO else "target missed"
    return (
        f"{label}: ratio {ratio:.3f} (median of {len(paired.rounds)} rounds; quartiles "
        f"{low:.3f} - {high:.3f}; target <= {TARGET_RATIO:.2f}): {state}"
    )


def load_average() -> str:
    """``os.getloadavg()`` as ``uptime`` prints it, for the record beside every figure."""
    one, five, fifteen = os.getloadavg()
    return f"load average {one:.2f}, {five:.2f}, {fifteen:.2f}"


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
    print(
        f"== {title} ({mode} run; python {platform.python_version()}, {cpus} cpus; "
        f"{load_average()}) =="
    )
