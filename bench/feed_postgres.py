"""The photo feed on PostgreSQL: fan-out-on-write reads vs a pull-on-read join, and how
many database queries a warm feed or profile request makes.

A scratch database (created here, dropped at the end) holds the service's own tables,
bulk-loaded with COPY: ``users`` accounts, each following ``follows`` others drawn at
random, each having posted ``photos_per_user`` photos over the last 30 days, and every
photo fanned out into each follower's feed (what the feed worker would have written).

* **fan out on write** (the service's read path at the database): the follower's feed
  page from ``photofeed_feed`` (``SqlFeedRepository.page``, on its
  ``(follower_id, created_at, photo_id)`` index), then those photos
  (``SqlPhotoRepository.get_many``).
* **pull on read** (baseline): one join, the follower's followees (``photofeed_following``)
  with their photos (``photofeed_photos``, on its ``(owner_id, created_at, id)`` index),
  newest ``LIMIT`` first.

Both run on the same engine and pool, interleaved, for the same random users; the issue's
target is fan-out reads at least 10x faster. Then ``PhotoFeed.feed`` and
``PhotoFeed.profile`` run twice each for sample users, and the SQL statements of the second
(warm: the cache filled by the first) are counted with the engine-level counter behind
``scalecore_http_db_queries_total`` (target: 0).

Run: ``python -m bench.feed_postgres [--quick]`` from the repository root (PostgreSQL on
127.0.0.1:5432, trust auth, as ``scripts/services`` starts it).
"""

from __future__ import annotations

import random
import secrets
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import psycopg
import sqlalchemy as sa

from adapters.sql.engine import statements_in_this_thread
from bench._common import interleaved, latency_table, parse_args
from entrypoints.config import load_settings
from entrypoints.container import close_adapters, create_container, create_tables
from scalecore.ids import logical_shard_for, make_id, shard_of

SERVER = "postgresql://postgres@127.0.0.1:5432"
LIMIT = 10
#: The two statements a fan-out feed page sends (SqlFeedRepository.page, then
#: SqlPhotoRepository.get_many), as plain SQL for the database-level comparison.
PAGE_SQL = (
    "SELECT * FROM photofeed_feed WHERE follower_id = %(user)s AND added_at IS NOT NULL "
    "AND (removed_at IS NULL OR added_at >= removed_at) "
    "ORDER BY created_at DESC, photo_id DESC LIMIT %(limit)s"
)
PHOTOS_SQL = "SELECT * FROM photofeed_photos WHERE id = ANY(%(ids)s)"
PULL = sa.text(
    "SELECT p.* FROM photofeed_following f "
    "JOIN photofeed_photos p ON p.owner_id = f.followee_id "
    "WHERE f.user_id = :user AND f.followed_at IS NOT NULL "
    "AND (f.unfollowed_at IS NULL OR f.followed_at >= f.unfollowed_at) "
    "ORDER BY p.created_at DESC, p.id DESC LIMIT :limit"
)


def _load(
    url: str, users: int, follows: int, photos_per_user: int, rng: random.Random
) -> dict[str, Any]:
    """Bulk-load the population; return the user ids and usernames."""
    now = time.time()
    names = [f"user{i:05d}" for i in range(users)]
    ids = [
        make_id(int(now * 1000) - 10**9 + i, logical_shard_for(name), i)
        for i, name in enumerate(names)
    ]
    following = [_sample_excluding(rng, users, follows, i) for i in range(users)]
    followers: list[list[int]] = [[] for _ in range(users)]
    for i, followees in enumerate(following):
        for j in followees:
            followers[j].append(i)
    started = time.perf_counter()
    with psycopg.connect(url, autocommit=True) as conn, conn.cursor() as cur:
        with cur.copy(
            "COPY photofeed_users (id, username, password_hash, created_at) FROM STDIN"
        ) as copy:
            for i in range(users):
                copy.write_row((ids[i], names[i], "x", now))
        with cur.copy(
            "COPY photofeed_following (user_id, followee_id, followed_at, changed_at) FROM STDIN"
        ) as copy:
            for i, followees in enumerate(following):
                for j in followees:
                    copy.write_row((ids[i], ids[j], now - 1e6, now - 1e6))
        with cur.copy(
            "COPY photofeed_followers (user_id, follower_id, followed_at, unsettled, changed_at)"
            " FROM STDIN"
        ) as copy:
            for j, fans in enumerate(followers):
                for i in fans:
                    copy.write_row((ids[j], ids[i], now - 1e6, False, now - 1e6))
        with cur.copy(
            "COPY photofeed_follow_counts (user_id, followers, following) FROM STDIN"
        ) as copy:
            for i in range(users):
                copy.write_row((ids[i], len(followers[i]), len(following[i])))
        photo_rows = []
        with cur.copy(
            "COPY photofeed_photos (id, owner_id, owner_username, caption, created_at, blob_key,"
            " thumbnail_key, content_type, width, height, size) FROM STDIN"
        ) as copy:
            for i in range(users):
                for k in range(photos_per_user):
                    created = now - rng.random() * 30 * 86400
                    photo = make_id(int(created * 1000), shard_of(ids[i]), k)
                    photo_rows.append((photo, i, created))
                    copy.write_row(
                        (photo, ids[i], names[i], "", created, f"photos/{photo}",
                         f"photos/{photo}.t", "image/jpeg", 640, 480, 50000)
                    )  # fmt: skip
        feed_rows = 0
        with cur.copy(
            "COPY photofeed_feed (follower_id, photo_id, owner_id, created_at, added_at) FROM STDIN"
        ) as copy:
            for photo, owner, created in photo_rows:
                for fan in followers[owner]:
                    copy.write_row((ids[fan], photo, ids[owner], created, created))
                    feed_rows += 1
        cur.execute("ANALYZE")
    print(
        f"loaded {users:,} users, {users * follows:,} follows, {len(photo_rows):,} photos, "
        f"{feed_rows:,} feed entries in {time.perf_counter() - started:.1f} s"
    )
    return {"ids": ids, "names": names, "feed_rows": feed_rows, "photos": len(photo_rows)}


def _sample_excluding(rng: random.Random, size: int, count: int, exclude: int) -> list[int]:
    chosen: set[int] = set()
    while len(chosen) < count:
        pick = rng.randrange(size)
        if pick != exclude:
            chosen.add(pick)
    return list(chosen)


def run(quick: bool = False) -> dict[str, float]:
    users, follows, photos_per_user = (1000, 100, 2) if quick else (10_000, 100, 3)
    rounds, batch = (5, 40) if quick else (10, 100)
    name = f"bench_feed_{secrets.token_hex(5)}"
    url = f"{SERVER}/{name}"
    with psycopg.connect(f"{SERVER}/postgres", autocommit=True) as admin:
        admin.execute(f'CREATE DATABASE "{name}"')
    workdir = Path(tempfile.mkdtemp(prefix="bench-feed-pg-"))
    config = workdir / "scalecore.toml"
    config.write_text(
        f'[deployment]\ndata_dir = "{workdir}"\n\n[database]\n'
        f'shards = ["postgresql+psycopg://postgres@127.0.0.1:5432/{name}"]\n\n'
        '[bus]\nmode = "sync"\n\n[ledger]\nbackend = "memory"\n'
    )
    container = create_container(load_settings(config, environ={}))
    try:
        create_tables(container)
        population = _load(url, users, follows, photos_per_user, random.Random(1))
        ids, names = population["ids"], population["names"]
        service = container.photofeed()
        feeds, photos = service.feeds, service.photos
        photos_db = container.databases().store("photos")
        rng = random.Random(2)
        order_fan = [rng.choice(ids) for _ in range(rounds * batch + 200)]
        order_pull = list(order_fan)

        def fan_out() -> object:
            user = order_fan.pop()
            entries = feeds.page(user, limit=LIMIT)
            return photos.get_many([entry.photo_id for entry in entries])

        def pull() -> object:
            user = order_pull.pop()
            with photos_db.read(shard=0) as conn:
                return conn.execute(PULL, {"user": user, "limit": LIMIT}).all()

        # Same answers first: both designs show the same newest photos.
        probe = ids[7]
        fanned = [e.photo_id for e in feeds.page(probe, limit=LIMIT)]
        with photos_db.read(shard=0) as conn:
            pulled = [row.id for row in conn.execute(PULL, {"user": probe, "limit": LIMIT})]
        assert fanned == pulled, (fanned, pulled)

        # At the database: one psycopg connection, prepared statements, nothing else.
        raw = psycopg.connect(url, autocommit=True, prepare_threshold=0)
        pull_sql = PULL.text.replace(":user", "%(user)s").replace(":limit", "%(limit)s")
        order_raw_fan = list(order_fan[: rounds * batch + 100])
        order_raw_pull = list(order_raw_fan)

        def raw_fan_out() -> object:
            user = order_raw_fan.pop()
            rows = raw.execute(PAGE_SQL, {"user": user, "limit": LIMIT}).fetchall()
            return raw.execute(PHOTOS_SQL, {"ids": [row[1] for row in rows]}).fetchall()

        def raw_pull() -> object:
            return raw.execute(pull_sql, {"user": order_raw_pull.pop(), "limit": LIMIT}).fetchall()

        at_db = interleaved(
            {"fan-out read (2 statements)": raw_fan_out, "pull-on-read join": raw_pull},
            rounds=rounds,
            batch=batch,
            warmup=50,
        )
        text, _ = latency_table(at_db, {})
        print(f"\nat the database: feed page of {LIMIT}, random users, one connection, prepared")
        print(text)
        speedup = statistics.median(at_db["pull-on-read join"]) / statistics.median(
            at_db["fan-out read (2 statements)"]
        )
        state = "target met" if speedup >= 10 else "target missed"
        print(f"fan-out reads are {speedup:.1f}x faster (median); {state} (>= 10x)")

        # Server-side execution time, from EXPLAIN ANALYZE, for 50 users.
        executed: dict[str, list[float]] = {"fan-out (page + photos)": [], "pull join": []}
        for user in rng.sample(ids, 50):

            def server_ms(sql: str, params: dict[str, Any]) -> float:
                plan = raw.execute("EXPLAIN (ANALYZE, FORMAT JSON) " + sql, params).fetchone()
                return float(plan[0][0]["Execution Time"])  # type: ignore[index]

            rows = raw.execute(PAGE_SQL, {"user": user, "limit": LIMIT}).fetchall()
            executed["fan-out (page + photos)"].append(
                server_ms(PAGE_SQL, {"user": user, "limit": LIMIT})
                + server_ms(PHOTOS_SQL, {"ids": [row[1] for row in rows]})
            )
            executed["pull join"].append(server_ms(pull_sql, {"user": user, "limit": LIMIT}))
        raw.close()
        server_ratio = statistics.median(executed["pull join"]) / statistics.median(
            executed["fan-out (page + photos)"]
        )
        print("server-side execution (EXPLAIN ANALYZE, 50 users): " + ", ".join(
            f"{k} median {statistics.median(v):.3f} ms" for k, v in executed.items()
        ) + f"; ratio {server_ratio:.1f}x")  # fmt: skip

        # Through the service's repositories (SQLAlchemy, the pool with its pre-ping).
        samples = interleaved(
            {"fan-out read": fan_out, "pull-on-read join": pull},
            rounds=rounds,
            batch=batch,
            warmup=50,
        )
        text, _ = latency_table(samples, {})
        print(f"\nthrough the repositories (SQLAlchemy, pooled connections): page of {LIMIT}")
        print(text)
        via_repos = statistics.median(samples["pull-on-read join"]) / statistics.median(
            samples["fan-out read"]
        )
        print(f"fan-out reads are {via_repos:.1f}x faster (median) through the repositories")

        # Queries per request, cold and warm.
        sample = rng.sample(range(users), 50)
        labels = ("feed cold", "feed warm", "profile cold", "profile warm")
        counts: dict[str, list[int]] = {label: [] for label in labels}
        for i in sample:
            for label, call in (
                ("feed", lambda i=i: service.feed(ids[i])),
                ("profile", lambda i=i: service.profile(names[i])),
            ):
                for state_ in ("cold", "warm"):
                    before = statements_in_this_thread()
                    call()
                    counts[f"{label} {state_}"].append(statements_in_this_thread() - before)
        print("\nSQL statements per call (50 users; warm = the second call, cache filled)")
        for label, values in counts.items():
            print(f"  {label:<13} mean {statistics.mean(values):.2f}  max {max(values)}")
        return {
            "feed.fanout_speedup": speedup,
            "feed.fanout_speedup_server": server_ratio,
            "feed.fanout_speedup_repositories": via_repos,
            "feed.warm_queries": float(max(counts["feed warm"])),
            "profile.warm_queries": float(max(counts["profile warm"])),
        }
    finally:
        close_adapters(container)
        with psycopg.connect(f"{SERVER}/postgres", autocommit=True) as admin:
            admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


if __name__ == "__main__":
    run(parse_args(__doc__.splitlines()[0]).quick)
