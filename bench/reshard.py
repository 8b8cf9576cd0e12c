"""Online resharding on PostgreSQL: write pauses with writers running, speed, fence cost.

Three scratch databases on the local PostgreSQL (``SCTEST_POSTGRES_URL``, default
``postgresql://postgres@127.0.0.1:5432``) hold the photo feed's tables with ``users``
accounts, each following ``follows`` others and with ``feed`` feed entries. Then, in one
run:

* reshard 3 -> 4 databases (:class:`adapters.sql.reshard.Resharder`, default batch) while
  ``writers`` threads keep writing (follow edges and feed entries) through a
  ``Databases`` built from the old 3-database config, as a web process would. Reported:
  the write pause per logical shard (fence to switch) at p50 / p99 / max, the writers'
  own latency p99 and longest write during the move, and rows/s of the whole reshard
  (planning, copy, catch-up, verification, switch, delete; the fixed wait for every
  process to see the first layout excluded and shown apart);
* baseline: a plain copy of the same rows (SELECT of the moved logical shards' rows, bulk
  INSERT into a fourth database's empty tables, no fence, no verification): rows/s;
* vertical partitioning: the ``feed`` store moved from the four databases onto a fifth
  of its own (``[database.stores.feed]``, :func:`adapters.sql.reshard.resharders_for`)
  while the writers keep going through the old 3-database config: the same pause
  figures and rows/s;
* fence cost: single-row writes (an ``UPDATE`` of a user's password hash, a feed merge of
  one entry) through a database with a live layout (each write first reads its logical
  shard's state row ``FOR SHARE``) against the same writes on a database without one,
  interleaved: the ratio of medians.

Every database made is dropped at the end. Run: ``python -m bench.reshard [--quick]``.
"""

from __future__ import annotations

import os
import random
import threading
import time
import uuid
from collections.abc import Sequence
from typing import Any

import sqlalchemy as sa

from adapters.photofeed.feed.sql import SqlFeedRepository
from adapters.photofeed.follows.sql import SqlFollowRepository
from adapters.photofeed.schema import METADATA
from adapters.photofeed.users.sql import SqlUserRepository
from adapters.sql.layout import key_column, shard_filter
from adapters.sql.reshard import Resharder, resharders_for
from adapters.sql.shards import Databases
from bench._common import header, interleaved, parse_args, percentile, table
from scalecore.ids import IdGenerator, shard_of
from scalecore.photofeed.models import Account, FeedEntry, FollowEdge, User

SERVER = os.environ.get("SCTEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432")


def _databases(urls: list[str]) -> Databases:
    return Databases(metadata=METADATA, shards=urls, create_databases=True)


def _populate(db: Databases, users: int, follows: int, feed: int) -> list[str]:
    ids = IdGenerator()
    accounts = SqlUserRepository(database=db.store("users"))
    edges = SqlFollowRepository(database=db.store("follows"))
    entries = SqlFeedRepository(database=db.store("feed"))
    made: list[str] = []
    now = time.time()
    for index in range(users):
        name = f"bench{index}"
        user = User(id=ids.new_for(name), username=name, created_at=now)
        accounts.add(Account(user=user, password_hash="x" * 60))
        made.append(user.id)
    rng = random.Random(7)
    batch: list[FeedEntry] = []
    for user_id in made:
        for other in rng.sample(made, follows):
            edge = FollowEdge(user_id, other, now, None)
            edges.record_following(edge)
            edges.record_follower(edge)
        for _ in range(feed):
            owner = rng.choice(made)
            photo = ids.new(shard_of(owner))
            batch.append(FeedEntry(user_id, photo, owner, now, now, None))
    entries.merge(batch)
    return made


def _writers(db: Databases, users: list[str], count: int, stop: threading.Event) -> list[float]:
    """Start ``count`` writer threads; return the list their latencies go into."""
    latencies: list[float] = []
    edges = SqlFollowRepository(database=db.store("follows"))
    entries = SqlFeedRepository(database=db.store("feed"))
    ids = IdGenerator()

    def write(seed: int) -> None:
        rng = random.Random(seed)
        while not stop.is_set():
            follower, followee = rng.sample(users, 2)
            began = time.perf_counter()
            if rng.random() < 0.5:
                edges.record_following(FollowEdge(follower, followee, time.time(), None))
            else:
                photo = ids.new(shard_of(followee))
                entries.merge([FeedEntry(follower, photo, followee, time.time(), time.time())])
            latencies.append(time.perf_counter() - began)
            time.sleep(0.005)

    for seed in range(count):
        threading.Thread(target=write, args=(seed,), daemon=True).start()
    return latencies


def _plain_copy(
    source: list[str], target: str, logicals: dict[str, list[int]]
) -> tuple[int, float]:
    """Copy the moved logical shards' rows of every table from ``source`` into ``target``
    with SELECT and bulk INSERT only; return (rows, seconds)."""
    tables = list(_databases([target]).store("users").metadata.sorted_tables)
    engine_out = sa.create_engine(target.replace("postgresql://", "postgresql+psycopg://"))
    rows = 0
    began = time.perf_counter()
    with engine_out.begin() as out:
        for url in source:
            wanted = logicals.get(url, [])
            if not wanted:
                continue
            engine_in = sa.create_engine(url.replace("postgresql://", "postgresql+psycopg://"))
            with engine_in.connect() as conn:
                for table in tables:
                    data = [
                        dict(row._mapping)
                        for row in conn.execute(
                            sa.select(table).where(shard_filter(key_column(table), wanted))
                        )
                    ]
                    for start in range(0, len(data), 500):
                        out.execute(table.insert(), data[start : start + 500])
                    rows += len(data)
            engine_in.dispose()
    seconds = time.perf_counter() - began
    engine_out.dispose()
    return rows, seconds


def run(quick: bool) -> dict[str, float]:
    users, follows, feed, writers = (300, 5, 10, 4) if quick else (1500, 10, 20, 4)
    header(
        f"Online resharding 3 -> 4 on PostgreSQL ({users} users, {follows} follows and "
        f"{feed} feed entries each; {writers} writer threads)",
        quick,
    )
    token = uuid.uuid4().hex[:10]
    urls = [f"{SERVER}/scalecore_bench_reshard_{token}_{i}" for i in range(6)]
    old, new, baseline = urls[:3], urls[:4], urls[4]
    created: list[Databases] = []
    try:
        three = _databases(old)
        created.append(three)
        three.create_schema()
        made = _populate(three, users, follows, feed)
        copy_target = _databases([baseline])
        created.append(copy_target)
        copy_target.create_schema()

        four = _databases(new)
        created.append(four)
        resharder = Resharder(database=four.store("users"), previous=three.store("users"))
        plan = resharder.plan()
        by_source: dict[str, list[int]] = {}
        for move in plan.moves:
            source = next(url for url in old if url.endswith(move.source.rsplit("/", 1)[1]))
            by_source.setdefault(source, []).append(move.logical)
        # The baseline first: the reshard deletes the rows it moved from their sources.
        copied, copy_seconds = _plain_copy(old, baseline, by_source)

        stop = threading.Event()
        site = _databases(old)  # a process on the old config, writing throughout
        created.append(site)
        latencies = _writers(site, made, writers, stop)
        time.sleep(1)
        before = len(latencies)
        began = time.perf_counter()
        report = resharder.execute(plan)
        elapsed = time.perf_counter() - began
        during = latencies[before:]
        stop.set()
        time.sleep(0.2)
        resharder.dispose()

        waited = 2.5  # LAYOUT_TTL + 0.5: every process must see the first layout
        moving = max(elapsed - waited, 1e-9)
        reshard_rate = report.rows / moving
        copy_rate = copied / copy_seconds
        pauses = sorted(report.pauses_ms)
        print(
            table(
                ["", "value"],
                [
                    ["logical shards moved", f"{report.moved} of 4096 ({report.moved / 4096:.1%})"],
                    ["rows moved (all tables)", f"{report.rows}"],
                    ["write pause p50 (ms)", f"{percentile(pauses, 0.5):.0f}"],
                    ["write pause p99 (ms)", f"{percentile(pauses, 0.99):.0f}"],
                    ["write pause max (ms)", f"{pauses[-1]:.0f}"],
                    ["writes during the move", f"{len(during)}"],
                    ["writer latency p99 (ms)", f"{percentile(during, 0.99) * 1000:.0f}"],
                    ["longest write (ms)", f"{max(during) * 1000:.0f}"],
                    ["reshard total (s)", f"{elapsed:.1f} (of which {waited} s fixed wait)"],
                    ["reshard rows/s", f"{reshard_rate:.0f}"],
                    ["plain copy rows/s", f"{copy_rate:.0f} ({copied} rows)"],
                    ["reshard / plain copy", f"{reshard_rate / copy_rate:.2f}"],
                ],
            )
        )

        # Fence cost: the same single-row writes with and without a live layout.
        fenced_users = SqlUserRepository(database=four.store("users"))
        plain_users = SqlUserRepository(database=copy_target.store("users"))
        fenced_feed = SqlFeedRepository(database=four.store("feed"))
        plain_feed = SqlFeedRepository(database=copy_target.store("feed"))
        assert four.store("users").live_layout() is not None
        assert copy_target.store("users").live_layout() is None
        plain_ids = [u for u in made if shard_of(u) in set(by_source.get(old[0], []))][:50]
        fenced_ids = plain_ids  # the same users, now on database 3 under the layout
        rng = random.Random(1)
        ids = IdGenerator()

        def entry(user_id: str) -> FeedEntry:
            return FeedEntry(user_id, ids.new(shard_of(user_id)), user_id, 1.0, 1.0)

        samples = interleaved(
            {
                "update, no layout": lambda: plain_users.set_password_hash(
                    rng.choice(plain_ids), "y" * 60
                ),
                "update, fenced": lambda: fenced_users.set_password_hash(
                    rng.choice(fenced_ids), "y" * 60
                ),
                "feed merge, no layout": lambda: plain_feed.merge([entry(rng.choice(plain_ids))]),
                "feed merge, fenced": lambda: fenced_feed.merge([entry(rng.choice(fenced_ids))]),
            },
            rounds=6 if quick else 12,
            batch=30,
            warmup=20,
        )
        medians = {name: percentile(values, 0.5) for name, values in samples.items()}
        update_ratio = medians["update, fenced"] / medians["update, no layout"]
        merge_ratio = medians["feed merge, fenced"] / medians["feed merge, no layout"]
        print(
            table(
                ["write", "no layout (ms)", "fenced (ms)", "ratio"],
                [
                    [
                        "UPDATE one row",
                        f"{medians['update, no layout'] * 1000:.2f}",
                        f"{medians['update, fenced'] * 1000:.2f}",
                        f"{update_ratio:.2f}",
                    ],
                    [
                        "feed merge, one entry",
                        f"{medians['feed merge, no layout'] * 1000:.2f}",
                        f"{medians['feed merge, fenced'] * 1000:.2f}",
                        f"{merge_ratio:.2f}",
                    ],
                ],
            )
        )
        # Vertical: the feed store onto a database of its own, the writers running again.
        split = Databases(
            metadata=METADATA,
            shards=new,
            stores={"feed": {"shards": [urls[5]]}},
            create_databases=True,
        )
        created.append(split)
        groups = resharders_for(split, four)
        stop = threading.Event()
        latencies = _writers(site, made, writers, stop)
        time.sleep(1)
        before = len(latencies)
        began = time.perf_counter()
        moved_store: list[Any] = []
        try:
            for _name, _stores, store_resharder in groups:
                store_plan = store_resharder.plan()
                if store_plan.moves or store_plan.bootstrap:
                    moved_store.append(store_resharder.execute(store_plan))
        finally:
            for _name, _stores, store_resharder in groups:
                store_resharder.dispose()
        store_elapsed = time.perf_counter() - began
        during = latencies[before:]
        stop.set()
        time.sleep(0.2)
        store_rows = sum(r.rows for r in moved_store)
        store_pauses = sorted(p for r in moved_store for p in r.pauses_ms)
        print(
            table(
                ["feed onto its own database", "value"],
                [
                    ["logical shards moved", f"{sum(r.moved for r in moved_store)} of 4096"],
                    ["rows moved (feed table)", f"{store_rows}"],
                    ["write pause p50 (ms)", f"{percentile(store_pauses, 0.5):.0f}"],
                    ["write pause p99 (ms)", f"{percentile(store_pauses, 0.99):.0f}"],
                    ["write pause max (ms)", f"{store_pauses[-1]:.0f}"],
                    ["writes during the move", f"{len(during)}"],
                    ["writer latency p99 (ms)", f"{percentile(during, 0.99) * 1000:.0f}"],
                    ["longest write (ms)", f"{max(during) * 1000:.0f}"],
                    ["move total (s)", f"{store_elapsed:.1f} (of which {waited} s fixed wait)"],
                    ["move rows/s", f"{store_rows / max(store_elapsed - waited, 1e-9):.0f}"],
                ],
            )
        )
        target = "met" if percentile(pauses, 0.99) <= 500 else "missed"
        print(f"write pause p99 {percentile(pauses, 0.99):.0f} ms: target (<= 500 ms) {target}")
        store_target = "met" if percentile(store_pauses, 0.99) <= 500 else "missed"
        print(
            f"feed move write pause p99 {percentile(store_pauses, 0.99):.0f} ms: "
            f"target (<= 500 ms) {store_target}"
        )
        return {
            "reshard.pause_p99_ms": percentile(pauses, 0.99),
            "reshard.store_pause_p99_ms": percentile(store_pauses, 0.99),
            "reshard.rows_per_s_ratio": reshard_rate / copy_rate,
            "reshard.fence_update_ratio": update_ratio,
            "reshard.fence_merge_ratio": merge_ratio,
        }
    finally:
        for databases in created:
            databases.dispose()
        admin = sa.create_engine(
            f"{SERVER}/postgres".replace("postgresql://", "postgresql+psycopg://"),
            isolation_level="AUTOCOMMIT",
        )
        with admin.connect() as conn:
            for url in urls:
                name = url.rsplit("/", 1)[1]
                conn.exec_driver_sql(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        admin.dispose()


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(__doc__.splitlines()[0] if __doc__ else "", argv)
    run(args.quick)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
