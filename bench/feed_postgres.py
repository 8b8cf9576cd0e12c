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
* **pull on read** (baseline): the follower's followees (``photofeed_following``) with
  their photos (``photofeed_photos``, on its ``(owner_id, created_at, id)`` index), newest
  ``LIMIT`` first, written two ways: a plain join (a top-N sort of everything the
  followees posted) and a LATERAL join that reads each followee's newest ``LIMIT`` photos
  only. Ratios are against the faster of the two.

At the database (one psycopg connection, prepared statements) the fan-out page is also
measured as one statement, the page joined to its photos: what it would cost with the
photo fields in the feed row or both stores in one database (the service sends two).
Both run on the same engine and pool, interleaved, for the same random users; the issue's
target is fan-out reads at least 10x faster. Then ``PhotoFeed.feed`` and
``PhotoFeed.profile`` run twice each for sample users, and the SQL statements of the second
(warm: the cache filled by the first) are counted with the engine-level counter behind
``scalecore_http_db_queries_total`` (target: 0).

Run: ``python -m bench.feed_postgres [--quick]`` from the repository root (PostgreSQL on
127.0.0.1:5432, trust auth, as ``scripts/services`` starts it).
"""

from __future__ import annotations

import json
import random
import re
import secrets
import statistics
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any

import psycopg
import sqlalchemy as sa

from adapters.sql.engine import statements_in_this_thread
from bench._common import interleaved, latency_table, load_average
from entrypoints.container import close_adapters, create_container, create_tables
from entrypoints.photofeed.config import load_settings
from scalecore.ids import logical_shard_for, make_id, shard_of
from scalecore.photofeed.events import TOPIC_PHOTO_UPLOADED, PhotoEvent

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
#: A fan-out page as one statement: the page's entries joined to their photos. What a page
#: would cost if the feed rows and the photos were in one database (the service keeps them
#: in two logical stores, which may be different databases) or the feed row carried the
#: photo fields a page shows.
PAGE_JOIN_SQL = (
    "SELECT p.* FROM (SELECT photo_id, created_at FROM photofeed_feed "
    "WHERE follower_id = %(user)s AND added_at IS NOT NULL "
    "AND (removed_at IS NULL OR added_at >= removed_at) "
    "ORDER BY created_at DESC, photo_id DESC LIMIT %(limit)s) e "
    "JOIN photofeed_photos p ON p.id = e.photo_id ORDER BY e.created_at DESC, e.photo_id DESC"
)
#: The pull join written the way that reads least: each followee's newest ``limit``
#: photos (a LATERAL index range scan that stops after ``limit`` rows), then the newest
#: ``limit`` of those. The same answer as PULL; it reads at most ``limit`` photos per
#: followee however much they have posted.
PULL_LATERAL_SQL = (
    "SELECT p.* FROM photofeed_following f CROSS JOIN LATERAL ("
    "SELECT * FROM photofeed_photos q WHERE q.owner_id = f.followee_id "
    "ORDER BY q.created_at DESC, q.id DESC LIMIT %(limit)s) p "
    "WHERE f.user_id = %(user)s AND f.followed_at IS NOT NULL "
    "AND (f.unfollowed_at IS NULL OR f.followed_at >= f.unfollowed_at) "
    "ORDER BY p.created_at DESC, p.id DESC LIMIT %(limit)s"
)
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


def _fanout_rate(
    service: Any, ids: list[str], rng: random.Random, *, uploads: int
) -> dict[str, float]:
    """Feed entries one feed-worker thread writes per second: ``apply_photo_event`` (what
    ``FeedWorker.handle`` calls) for ``uploads`` new photos of random accounts, each
    written into every follower's feed on PostgreSQL and each follower's cached first
    page invalidated in memcached. The broker's delivery is left out (measured by
    bench.bus_publish)."""
    now = time.time()
    owners = [rng.choice(ids) for _ in range(uploads)]
    events = [
        PhotoEvent(
            photo_id=make_id(int(now * 1000) + k, shard_of(owner), 900 + k % 100),
            owner_id=owner,
            created_at=now + k * 1e-3,
            occurred_at=now + k * 1e-3,
        ).to_payload()
        for k, owner in enumerate(owners)
    ]
    written = 0
    began, cpu_began = time.perf_counter(), time.process_time()
    for payload in events:
        written += service.apply_photo_event(TOPIC_PHOTO_UPLOADED, payload)
    elapsed, cpu = time.perf_counter() - began, time.process_time() - cpu_began
    rate = written / elapsed
    print(
        f"\nfan-out: {uploads} uploads -> {written:,} feed entries in {elapsed:.2f} s: "
        f"{rate:,.0f} entries/s for one worker thread ({written / max(cpu, 1e-9):,.0f} per "
        f"CPU second of the worker; {elapsed / uploads * 1000:.1f} ms per upload)"
    )
    return {
        "fanout_uploads": uploads,
        "fanout_entries": written,
        "fanout_entries_per_worker_s": round(rate),
        "fanout_entries_per_cpu_s": round(written / max(cpu, 1e-9)),
    }


#: pgbench script: a fan-out feed page, as the repositories read it (page, then its photos).
#: The photo statement finds the page's ids again in a subquery, so it costs a little more
#: than SqlPhotoRepository.get_many with the ids in hand.
_PGBENCH_SCRIPT = """\\set n random(0, {last})
SELECT follower_id, photo_id, owner_id, created_at, added_at, removed_at FROM photofeed_feed \
WHERE follower_id = (SELECT id FROM bench_user_ids WHERE n = :n) AND added_at IS NOT NULL \
AND (removed_at IS NULL OR added_at >= removed_at) \
ORDER BY created_at DESC, photo_id DESC LIMIT 10;
SELECT * FROM photofeed_photos WHERE id IN (SELECT photo_id FROM photofeed_feed \
WHERE follower_id = (SELECT id FROM bench_user_ids WHERE n = :n) \
ORDER BY created_at DESC, photo_id DESC LIMIT 10);
"""


def _shard_queries_per_s(url: str, ids: list[str], *, seconds: int) -> dict[str, Any]:
    """The statements/s this PostgreSQL answers for the feed's read statements, driven
    by pgbench (8 clients, 2 threads, prepared statements) on the same box."""
    with psycopg.connect(url, autocommit=True) as conn, conn.cursor() as cur:
        cur.execute("CREATE TABLE bench_user_ids (n integer PRIMARY KEY, id text NOT NULL)")
        with cur.copy("COPY bench_user_ids (n, id) FROM STDIN") as copy:
            for n, user in enumerate(ids):
                copy.write_row((n, user))
        cur.execute("ANALYZE bench_user_ids")
    script = Path(tempfile.mkdtemp(prefix="bench-pgbench-")) / "feed.sql"
    script.write_text(_PGBENCH_SCRIPT.format(last=len(ids) - 1))
    database = url.rsplit("/", 1)[1]
    command = [
        "pgbench", "-h", "127.0.0.1", "-U", "postgres", "-n", "-M", "prepared", "-c", "8",
        "-j", "2", "-T", str(seconds), "-f", str(script), database,
    ]  # fmt: skip
    out = subprocess.run(command, capture_output=True, text=True, check=True).stdout
    tps = float(re.search(r"tps = ([0-9.]+)", out).group(1))  # type: ignore[union-attr]
    latency = re.search(r"latency average = ([0-9.]+) ms", out)
    qps = 2 * tps
    print(
        f"PostgreSQL under pgbench (8 clients, prepared, {seconds} s, client on the same "
        f"cores): {tps:,.0f} feed pages/s = {qps:,.0f} statements/s"
        + (f", {latency.group(1)} ms per page" if latency else "")
    )
    shown = " ".join([*command[:-2], "feed.sql", "DATABASE"])  # the temporary paths left out
    return {"queries_per_shard_s": round(qps), "pgbench_command": shown}


def _sample_excluding(rng: random.Random, size: int, count: int, exclude: int) -> list[int]:
    chosen: set[int] = set()
    while len(chosen) < count:
        pick = rng.randrange(size)
        if pick != exclude:
            chosen.add(pick)
    return list(chosen)


def run(
    quick: bool = False, photos_per_user: int | None = None, json_path: Path | None = None
) -> dict[str, float]:
    users, follows, default_photos = (1000, 100, 2) if quick else (10_000, 100, 3)
    photos_per_user = photos_per_user or default_photos
    print(f"feed on PostgreSQL: {users:,} users following {follows} each, {photos_per_user} "
          f"photos each; {load_average()}")  # fmt: skip
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
        '[bus]\nmode = "sync"\n\n[ledger]\nbackend = "memory"\n\n'
        # As deploy/distributed.toml: fan-out invalidates first feed pages in memcached.
        '[cache]\nbackend = "twotier"\nservers = ["127.0.0.1:21211", "127.0.0.1:21212"]\n'
        f'namespace = "{name}:"\nlocal_ttl = 2.0\n'
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

        pull_lateral_text = sa.text(
            PULL_LATERAL_SQL.replace("%(user)s", ":user").replace("%(limit)s", ":limit")
        )

        def pull() -> object:
            # The same path a repository read takes (ShardedDatabase.query): one pooled
            # connection, autocommit, no ping; the faster of the two pull queries.
            user = order_pull.pop()
            params = {"user": user, "limit": LIMIT}
            return photos_db.query(
                shard_of(user), lambda conn: conn.execute(pull_lateral_text, params).all()
            )

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

        def raw_one(sql: str, order: list[str]) -> Any:
            return lambda: raw.execute(sql, {"user": order.pop(), "limit": LIMIT}).fetchall()

        for sql in (PAGE_JOIN_SQL, PULL_LATERAL_SQL):  # same answers as the two above
            assert [r[0] for r in raw.execute(sql, {"user": probe, "limit": LIMIT})] == pulled
        fan2, fan1 = "fan-out read (2 statements)", "fan-out read (1 statement)"
        pull_join, pull_lateral = "pull-on-read join", "pull-on-read, LATERAL"
        at_db = interleaved(
            {
                fan2: raw_fan_out,
                fan1: raw_one(PAGE_JOIN_SQL, list(order_raw_fan)),
                pull_join: raw_one(pull_sql, order_raw_pull),
                pull_lateral: raw_one(PULL_LATERAL_SQL, list(order_raw_fan)),
            },
            rounds=rounds,
            batch=batch,
            warmup=50,
        )
        text, _ = latency_table(at_db, {})
        print(f"\nat the database: feed page of {LIMIT}, random users, one connection, prepared")
        print(text)
        med = {k: statistics.median(v) for k, v in at_db.items()}
        best_pull = min(med[pull_join], med[pull_lateral])
        speedup = best_pull / med[fan2]
        speedup_one = best_pull / med[fan1]
        state = "target met" if speedup >= 10 else "target missed"
        print(
            f"fan-out reads are {speedup:.1f}x faster than the faster pull (median); {state} "
            f"(>= 10x); as one statement {speedup_one:.1f}x"
        )

        # Server-side execution time, from EXPLAIN ANALYZE, for 200 users.
        executed: dict[str, list[float]] = {fan2: [], fan1: [], pull_join: [], pull_lateral: []}
        for user in rng.sample(ids, 200):

            def server_ms(sql: str, params: dict[str, Any]) -> float:
                plan = raw.execute("EXPLAIN (ANALYZE, FORMAT JSON) " + sql, params).fetchone()
                return float(plan[0][0]["Execution Time"])  # type: ignore[index]

            params = {"user": user, "limit": LIMIT}
            rows = raw.execute(PAGE_SQL, params).fetchall()
            executed[fan2].append(
                server_ms(PAGE_SQL, params) + server_ms(PHOTOS_SQL, {"ids": [r[1] for r in rows]})
            )
            executed[fan1].append(server_ms(PAGE_JOIN_SQL, params))
            executed[pull_join].append(server_ms(pull_sql, params))
            executed[pull_lateral].append(server_ms(PULL_LATERAL_SQL, params))
        indexes = {
            table: [
                row[0]
                for row in raw.execute(
                    "SELECT indexdef FROM pg_indexes WHERE tablename = %s ORDER BY indexname",
                    (table,),
                )
            ]
            for table in ("photofeed_feed", "photofeed_photos", "photofeed_following")
        }
        raw.close()
        server = {k: statistics.median(v) for k, v in executed.items()}
        best_pull_server = min(server[pull_join], server[pull_lateral])
        server_ratio = best_pull_server / server[fan2]
        server_ratio_one = best_pull_server / server[fan1]
        print("server-side execution (EXPLAIN ANALYZE, median of 200 users): " + ", ".join(
            f"{k} {v:.3f} ms" for k, v in server.items()
        ) + f"; fan-out faster than the faster pull by {server_ratio:.1f}x "
            f"(2 statements), {server_ratio_one:.1f}x (1 statement)")  # fmt: skip
        print("indexes:")
        for definition in (d for defs in indexes.values() for d in defs):
            print(f"  {definition}")

        # Through the service's repositories (SQLAlchemy Core, ShardedDatabase's pooled
        # connections: autocommit reads, no pre-ping).
        samples = interleaved(
            {"fan-out read": fan_out, "pull-on-read, LATERAL": pull},
            rounds=rounds,
            batch=batch,
            warmup=50,
        )
        text, _ = latency_table(samples, {})
        print(f"\nthrough the repositories (SQLAlchemy, pooled connections): page of {LIMIT}")
        print(text)
        via_repos = statistics.median(samples["pull-on-read, LATERAL"]) / statistics.median(
            samples["fan-out read"]
        )
        print(f"fan-out reads are {via_repos:.1f}x faster (median) through the repositories")
        print(
            f"\nsummary: fan-out reads faster than the faster pull by {server_ratio:.1f}x "
            f"server-side ({server_ratio_one:.1f}x as one statement), {speedup:.1f}x at the "
            f"database ({speedup_one:.1f}x as one statement), {via_repos:.1f}x through the "
            "repositories; "
            f"{load_average()}"
        )

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

        fanout = _fanout_rate(service, ids, rng, uploads=50 if quick else 300)
        shard_qps = _shard_queries_per_s(url, ids, seconds=5 if quick else 15)
        figures = {
            "users": users,
            "follows": follows,
            "photos_per_user": photos_per_user,
            "fanout_speedup_server": round(server_ratio, 2),
            "fanout_speedup_server_one_statement": round(server_ratio_one, 2),
            "fanout_speedup_database": round(speedup, 2),
            "fanout_speedup_database_one_statement": round(speedup_one, 2),
            "server_ms": {k: round(v, 4) for k, v in server.items()},
            "database_us": {k: round(v, 1) for k, v in med.items()},
            "indexes": indexes,
            "fanout_speedup_repositories": round(via_repos, 2),
            "feed_warm_queries": max(counts["feed warm"]),
            "profile_warm_queries": max(counts["profile warm"]),
            **fanout,
            **shard_qps,
            "load_average": load_average(),
            "measured_at": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        }
        if json_path is not None:
            json_path.write_text(json.dumps(figures, indent=2) + "\n")
            print(f"figures: {json_path}")
        return {
            "feed.fanout_speedup": speedup,
            "feed.fanout_speedup_server": server_ratio,
            "feed.fanout_speedup_repositories": via_repos,
            "feed.warm_queries": float(max(counts["feed warm"])),
            "profile.warm_queries": float(max(counts["profile warm"])),
            "feed.fanout_entries_per_s": float(fanout["fanout_entries_per_worker_s"]),
            "feed.queries_per_shard_s": float(shard_qps["queries_per_shard_s"]),
        }
    finally:
        close_adapters(container)
        with psycopg.connect(f"{SERVER}/postgres", autocommit=True) as admin:
            admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


if __name__ == "__main__":
    import argparse

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="1,000 users (a smoke run)")
    parser.add_argument(
        "--photos", type=int, default=None, help="photos per user (default 3; quick: 2)"
    )
    parser.add_argument("--json", type=Path, default=None, help="write the figures here")
    arguments = parser.parse_args()
    run(arguments.quick, arguments.photos, arguments.json)
