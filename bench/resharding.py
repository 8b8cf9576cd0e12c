"""Resharding cost: the fraction of keys that move going from N to N + 1 shards.

For N = 1..16, :func:`scalecore.routing.moved_fraction` over the same keys for the jump
consistent hash and for modulo, against the ideal 1 / (N + 1) (only the new shard's fair
share moves). Keys are integer ids 0..K-1 (modulo's best case: perfectly even) and as many
text keys ("user-<i>"). Pure computation: no server.

Run: ``python -m bench.resharding [--quick]`` from the repository root.
"""

from __future__ import annotations

from collections.abc import Sequence

from bench._common import header, parse_args, table
from scalecore.ports.sharding import ShardKey
from scalecore.routing import JumpHashRouter, ModuloRouter, moved_fraction


def run(quick: bool) -> dict[str, float]:
    count = 20_000 if quick else 100_000
    int_keys: list[ShardKey] = list(range(count))
    text_keys: list[ShardKey] = [f"user-{i}" for i in range(count)]
    rows = []
    worst_jump = 0.0  # largest |jump / ideal - 1| over N
    for n in range(1, 17):
        ideal = 1 / (n + 1)
        jump_int = moved_fraction(JumpHashRouter(n), JumpHashRouter(n + 1), int_keys)
        jump_text = moved_fraction(JumpHashRouter(n), JumpHashRouter(n + 1), text_keys)
        mod_int = moved_fraction(ModuloRouter(n), ModuloRouter(n + 1), int_keys)
        mod_text = moved_fraction(ModuloRouter(n), ModuloRouter(n + 1), text_keys)
        worst_jump = max(worst_jump, abs(jump_int / ideal - 1), abs(jump_text / ideal - 1))
        rows.append(
            [
                f"{n} -> {n + 1}",
                f"{ideal:.3f}",
                f"{jump_int:.3f}",
                f"{jump_text:.3f}",
                f"{mod_int:.3f}",
                f"{mod_text:.3f}",
                f"{mod_int / ideal:.1f}x",
            ]
        )
    print(f"{count:,} integer keys and {count:,} text keys")
    print(
        table(
            [
                "shards",
                "ideal 1/(N+1)",
                "jump int",
                "jump text",
                "modulo int",
                "modulo text",
                "modulo/ideal",
            ],
            rows,
        )
    )
    print(f"jump hash: worst deviation from the ideal over N=1..16: {worst_jump:.1%}")
    print("no issue target for this benchmark")
    return {"jump.worst_deviation": worst_jump}


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(__doc__.splitlines()[0], argv)
    header("resharding: keys moved N -> N+1, jump vs modulo", args.quick)
    run(args.quick)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
