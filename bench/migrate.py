"""``scalecore migrate`` from one box to a fleet: throughput, memory, the second pass.

A generated deployment (at ``--scale 1``: 100,000 users, 2,000,000 follow edges,
1,000,000 feed entries, 10,000 photos with a blob of about 50 KB each, 2,000 sessions)
on the embedded layout (one SQLite file, a local blob folder, SQL sessions) is migrated to
three PostgreSQL databases and an S3 bucket (moto) by ``scalecore migrate`` run as a child
process. Then 1% of the data changes (users, follow edges, feed entries turned into
tombstones, new photos) and ``migrate`` runs again: the second pass.

Baselines, in the same run, on the same servers:

- SQL: the same rows read from the same SQLite file and inserted with a plain SQLAlchemy
  ``executemany`` INSERT (2,000 rows a batch) into three fresh PostgreSQL databases of
  the same server, routed by the same jump hash. Target: migrate's SQL rows/s at least
  half of it (migrate also checksums, upserts and reads every row back).
- Blobs: the same bytes uploaded from plain files with boto3 ``upload_fileobj``, on as
  many threads as migrate uses. Target: migrate's blob time within 1.2x of it (migrate
  also hashes every object and checks it against a listing of the bucket: size and the
  ETag MD5 S3 computed; ``--verify``, timed separately, reads every object back).
- Memory: peak RSS of the migrate process minus that of a process that only imports the
  same modules. Target: under 150 MiB.
- Second pass: under 10% of the first pass's wall time. The first pass installs the
  change log on the source (triggers); the 1% of changes go through them, and the
  second pass walks only the buckets they name.

Run: ``python -m bench.migrate [--quick] [--scale S]`` from the repository root. It
creates and drops its own databases and buckets.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import random
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path

import boto3
import sqlalchemy as sa
from botocore.config import Config

from adapters.photofeed.schema import (
    METADATA,
    feed_table,
    follow_counts_table,
    followers_table,
    following_table,
    outbox_table,
    photos_table,
    users_table,
)
from bench._common import header, table
from scalecore.ids import IdGenerator, shard_of
from scalecore.routing import JumpHashRouter

POSTGRES = "postgresql+psycopg://postgres@127.0.0.1:5432"
ENDPOINT = "http://127.0.0.1:25000"
CREDENTIALS = {"aws_access_key_id": "testing", "aws_secret_access_key": "testing"}
FULL = {"users": 100_000, "edges": 2_000_000, "feed": 1_000_000, "blobs": 10_000}
BLOB_BYTES = 50_000
SESSIONS = 2_000
SHARDS = 3
WORKERS = 8  # as entrypoints.migrate.blobs
BATCH = 2000
CACHE_CONTROL = "public, max-age=31536000, immutable"


# --------------------------------------------------------------------------- generation


def generate(workdir: Path, scale: float, rng: random.Random) -> dict[str, int]:
    """The source deployment under ``workdir/source``; returns what it holds."""
    from adapters.blob.localfs import LocalFsBlobStore
    from adapters.sessions.sql import SqlSessionStore

    n_users = max(10, int(FULL["users"] * scale))
    n_edges = max(20, int(FULL["edges"] * scale))
    n_feed = max(20, int(FULL["feed"] * scale))
    n_blobs = max(5, int(FULL["blobs"] * scale))
    data = workdir / "source"
    url = f"sqlite:///{data / 'shard-0.db'}"
    data.mkdir(parents=True)
    engine = sa.create_engine(url)
    for metadata in METADATA.values():
        metadata.create_all(engine)
    ids = IdGenerator()
    now = time.time()
    users = [ids.new_for(f"user{n}") for n in range(n_users)]
    with engine.begin() as connection:
        connection.execute(
            users_table.insert(),
            [
                {
                    "id": uid,
                    "username": f"user{n}",
                    "password_hash": "$argon2id$x" * 8,
                    "created_at": now - n,
                }
                for n, uid in enumerate(users)
            ],
        )
    counts = {uid: [0, 0] for uid in users}
    per_user = max(1, n_edges // n_users)
    edges: set[tuple[str, str]] = set()
    for follower in users:
        for followee in rng.sample(users, min(per_user + 1, len(users))):
            if followee != follower and len(edges) < n_edges:
                edges.add((follower, followee))
    # Bulk rows go straight to the driver as tuples (the generator, not migrate, would
    # otherwise dominate a full-size run).
    insert_a = _insert_sql(followers_table)
    insert_b = _insert_sql(following_table)
    with engine.begin() as connection:
        batch_a: list[tuple[object, ...]] = []
        batch_b: list[tuple[object, ...]] = []
        for follower, followee in edges:
            batch_a.append((followee, follower, now, None, False, now))
            batch_b.append((follower, followee, now, None, now))
            counts[followee][0] += 1
            counts[follower][1] += 1
            if len(batch_a) >= 50_000:
                connection.exec_driver_sql(insert_a, batch_a)
                connection.exec_driver_sql(insert_b, batch_b)
                batch_a, batch_b = [], []
        if batch_a:
            connection.exec_driver_sql(insert_a, batch_a)
            connection.exec_driver_sql(insert_b, batch_b)
        connection.execute(
            follow_counts_table.insert(),
            [{"user_id": u, "followers": c[0], "following": c[1]} for u, c in counts.items()],
        )
    blobs = LocalFsBlobStore(root=data / "blobs", url_secret="bench" * 8)
    raw = workdir / "raw"
    raw.mkdir()
    photos = []
    writes: list[Future[object]] = []
    pool = ThreadPoolExecutor(max_workers=WORKERS)  # the store fsyncs every object

    def store(key: str, payload: bytes, n: int) -> None:
        blobs.put(key, payload, content_type="image/jpeg", cache_control=CACHE_CONTROL)
        (raw / f"{n}.jpg").write_bytes(payload)

    for n in range(n_blobs):
        owner = users[n % len(users)]
        photo_id = ids.new(shard_of(owner))
        payload = rng.randbytes(BLOB_BYTES)
        key = f"photos/{photo_id}.jpg"
        writes.append(pool.submit(store, key, payload, n))
        if len(writes) >= 4 * WORKERS:
            writes.pop(0).result()
        photos.append(
            {
                "id": photo_id,
                "owner_id": owner,
                "owner_username": f"user{n % len(users)}",
                "caption": f"photo {n}",
                "created_at": now + n,
                "blob_key": key,
                "thumbnail_key": key,
                "content_type": "image/jpeg",
                "width": 640,
                "height": 480,
                "size": BLOB_BYTES,
            }
        )
    for write in writes:
        write.result()
    pool.shutdown()
    blobs.close()
    with engine.begin() as connection:
        connection.execute(photos_table.insert(), photos)
        connection.execute(
            outbox_table.insert(),
            [
                {
                    "id": p["id"],
                    "topic": "photo.uploaded",
                    "payload": "{}",
                    "created_at": now,
                    "claimant": None,
                    "claimed_until": None,
                    "sent_at": now,
                }
                for p in photos
            ],
        )
        feed: list[tuple[object, ...]] = []
        insert_feed = _insert_sql(feed_table)
        seen: set[tuple[str, str]] = set()
        while len(seen) < n_feed:
            follower = users[rng.randrange(len(users))]
            photo = photos[rng.randrange(len(photos))]
            if (follower, photo["id"]) in seen:
                continue
            seen.add((follower, photo["id"]))
            removed = now if rng.random() < 0.05 else None  # some tombstones
            feed.append(
                (follower, photo["id"], photo["owner_id"], photo["created_at"], now - 10, removed)
            )
            if len(feed) >= 50_000:
                connection.exec_driver_sql(insert_feed, feed)
                feed = []
        if feed:
            connection.exec_driver_sql(insert_feed, feed)
    engine.dispose()
    sessions = SqlSessionStore(url=f"sqlite:///{data / 'sessions.db'}")
    sessions.create_schema()
    for n in range(int(max(10, SESSIONS * scale))):
        sessions.create({"user_id": users[n % len(users)], "csrf": "x" * 43})
    sessions.close()
    return {"users": n_users, "edges": len(edges), "feed": n_feed, "blobs": n_blobs}


def _insert_sql(t: sa.Table) -> str:
    """A positional INSERT of every column of ``t``, in the table's column order."""
    columns = [column.name for column in t.columns]
    marks = ", ".join("?" for _ in columns)
    return f"INSERT INTO {t.name} ({', '.join(columns)}) VALUES ({marks})"


def change_one_percent(workdir: Path, rng: random.Random) -> None:
    """1% of users updated, of follow edges touched, of feed entries removed; 1% more photos."""
    from adapters.blob.localfs import LocalFsBlobStore

    data = workdir / "source"
    engine = sa.create_engine(f"sqlite:///{data / 'shard-0.db'}")
    with engine.begin() as connection:
        for t, column in ((users_table, "created_at"), (followers_table, "changed_at")):
            connection.execute(
                sa.text(
                    f"UPDATE {t.name} SET {column} = {column} + 1 WHERE abs(random()) % 100 = 0"
                )
            )
        connection.execute(
            sa.text(
                "UPDATE photofeed_feed SET removed_at = added_at + 5 "
                "WHERE removed_at IS NULL AND abs(random()) % 100 = 0"
            )
        )
        n_photos = connection.execute(sa.select(sa.func.count()).select_from(photos_table))
        extra = max(1, int(n_photos.scalar_one()) // 100)
    engine.dispose()
    blobs = LocalFsBlobStore(root=data / "blobs", url_secret="bench" * 8)
    for n in range(extra):
        blobs.put(f"photos/extra-{n}.jpg", rng.randbytes(BLOB_BYTES), content_type="image/jpeg")
    blobs.close()


# --------------------------------------------------------------------------- baselines


def sql_baseline(workdir: Path, urls: Sequence[str]) -> tuple[int, float]:
    """Plain executemany INSERT of every source row into fresh databases; (rows, seconds)."""
    engines = [sa.create_engine(url) for url in urls]
    for engine in engines:
        for metadata in METADATA.values():
            metadata.create_all(engine)
    router = JumpHashRouter(len(urls))
    source = sa.create_engine(f"sqlite:///{workdir / 'source' / 'shard-0.db'}")
    rows = 0
    began = time.perf_counter()
    with source.connect() as reader:
        for metadata in METADATA.values():
            for t in metadata.tables.values():
                first = next(iter(t.primary_key.columns)).name
                result = reader.execution_options(yield_per=BATCH).execute(sa.select(t))
                for page in result.partitions(BATCH):
                    groups: dict[int, list[dict[str, object]]] = {}
                    for item in page:
                        mapping = dict(item._mapping)
                        index = router.shard_for(shard_of(mapping[first]))
                        groups.setdefault(index, []).append(mapping)
                    for index, group in groups.items():
                        with engines[index].begin() as connection:
                            connection.execute(t.insert(), group)
                    rows += len(page)
    seconds = time.perf_counter() - began
    for engine in engines:
        engine.dispose()
    source.dispose()
    return rows, seconds


def blob_baseline(workdir: Path, client: object, bucket: str) -> tuple[int, float]:
    """boto3 ``upload_fileobj`` of the same bytes from plain files; (bytes, seconds)."""
    files = sorted((workdir / "raw").iterdir())

    def upload(path: Path) -> int:
        with path.open("rb") as handle:
            client.upload_fileobj(  # type: ignore[attr-defined]
                handle,
                bucket,
                f"photos/{path.name}",
                ExtraArgs={"ContentType": "image/jpeg", "CacheControl": CACHE_CONTROL},
            )
        return path.stat().st_size

    began = time.perf_counter()
    with ThreadPoolExecutor(max_workers=WORKERS) as pool:
        total = sum(pool.map(upload, files))
    return total, time.perf_counter() - began


# --------------------------------------------------------------------------- migrate


def run_child(args: Sequence[str]) -> tuple[str, float, int]:
    """Run a python child; return (stdout, seconds, peak RSS in bytes)."""
    began = time.perf_counter()
    process = subprocess.Popen(
        [sys.executable, *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env={k: v for k, v in os.environ.items() if not k.startswith("SCALECORE_")},
    )
    out, err = process.communicate()
    seconds = time.perf_counter() - began
    # The child reports its own peak RSS on its last stderr line (see _WRAPPER).
    if process.returncode != 0:
        raise RuntimeError(f"{args[:4]} failed ({process.returncode}): {err.decode()[-2000:]}")
    peak = 0
    for line in err.decode().splitlines():
        if line.startswith("peak-rss "):
            peak = int(line.split()[1])
    return out.decode(), seconds, peak


#: The child's own peak RSS: VmHWM of its address space. (``ru_maxrss`` would not do: on
#: Linux it survives exec, so a child reports at least the RSS its parent had when it forked.)
_PEAK = (
    "hwm = next(l for l in open('/proc/self/status') if l.startswith('VmHWM:'))\n"
    "print('peak-rss', int(hwm.split()[1]) * 1024, file=sys.stderr)\n"
)
_WRAPPER = (
    "import resource, sys\n"
    "sys.argv = ['scalecore', *sys.argv[1:]]\n"
    "try:\n"
    "    from entrypoints.cli import main\n"
    "    main()\n"
    "except SystemExit as exc:\n"
    "    code = exc.code\n"
    "else:\n"
    "    code = 0\n"
    f"{_PEAK}"
    "sys.exit(code)\n"
)
_IMPORTS_ONLY = (
    "import resource, sys\n"
    "import entrypoints.cli, entrypoints.migrate.run, adapters.blob.s3, adapters.blob.localfs\n"
    "import adapters.sql.shards, adapters.sessions.sql, psycopg, boto3, sqlalchemy\n"
    "from entrypoints.photofeed.config import load_settings\n"
    "from entrypoints.container import Container\n"
    "c = Container(settings=load_settings(sys.argv[1], environ={}))\n"
    "c.blobs(); c.databases()\n"
    f"{_PEAK}"
)


def parse_table(text: str) -> dict[str, list[str]]:
    lines = [line.split() for line in text.splitlines() if line.strip()]
    header_at = next(i for i, line in enumerate(lines) if line[:2] == ["store", "read"])
    rows = {}
    for line in lines[header_at + 1 :]:
        if len(line) < 7:
            break
        # bytes may be "4.9 kB" (two cells)
        if len(line) in (8, 9):
            line = [*line[:4], f"{line[4]} {line[5]}", *line[6:]]
        rows[line[0]] = line
    return rows


def to_bytes(text: str) -> float:
    number, _, unit = text.partition(" ")
    scale = {"B": 1, "kB": 1e3, "MB": 1e6}.get(unit, 1)
    return float(number.replace(",", "")) * scale


def run(quick: bool, scale: float | None = None) -> dict[str, float]:
    scale = scale if scale is not None else (0.005 if quick else 0.05)
    run_id = uuid.uuid4().hex[:8]
    rng = random.Random(7)
    databases = [f"bench_mig_{run_id}_{i}" for i in range(SHARDS)]
    baseline_dbs = [f"bench_base_{run_id}_{i}" for i in range(SHARDS)]
    meta_db = f"bench_mig_{run_id}_meta"
    bucket, base_bucket = f"bench-mig-{run_id}", f"bench-base-{run_id}"
    client = boto3.session.Session(region_name="us-east-1", **CREDENTIALS).client(
        "s3", endpoint_url=ENDPOINT, config=Config(signature_version="s3v4")
    )
    admin = sa.create_engine(f"{POSTGRES}/postgres", isolation_level="AUTOCOMMIT")
    with tempfile.TemporaryDirectory(prefix="bench-migrate-") as tmp:
        workdir = Path(tmp)
        try:
            with admin.connect() as connection:
                for name in [*databases, *baseline_dbs, meta_db]:
                    connection.exec_driver_sql(f'CREATE DATABASE "{name}"')
            client.create_bucket(Bucket=base_bucket)
            began = time.perf_counter()
            sizes = generate(workdir, scale, rng)
            print(
                f"generated {sizes['users']:,} users, {sizes['edges']:,} follow edges, "
                f"{sizes['feed']:,} feed entries, {sizes['blobs']:,} blobs of "
                f"{BLOB_BYTES:,} B (scale {scale}) in {time.perf_counter() - began:.0f} s"
            )
            return _measure(
                workdir, rng, databases, baseline_dbs, meta_db, bucket, base_bucket, client
            )
        finally:
            with contextlib.suppress(Exception), admin.connect() as connection:
                for name in [*databases, *baseline_dbs, meta_db]:
                    connection.exec_driver_sql(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
            admin.dispose()
            for name in (bucket, base_bucket):
                with contextlib.suppress(Exception):
                    for page in client.get_paginator("list_objects_v2").paginate(Bucket=name):
                        for item in page.get("Contents", []):
                            client.delete_object(Bucket=name, Key=item["Key"])
                    client.delete_bucket(Bucket=name)


def _measure(
    workdir: Path,
    rng: random.Random,
    databases: list[str],
    baseline_dbs: list[str],
    meta_db: str,
    bucket: str,
    base_bucket: str,
    client: object,
) -> dict[str, float]:
    source = workdir / "source.toml"
    source.write_text(
        f'[deployment]\ndata_dir = "{workdir / "source"}"\n'
        f'[blobs]\nbackend = "localfs"\nroot = "{workdir / "source" / "blobs"}"\n'
        f'url_secret = "{"bench" * 8}"\n'
        '[sessions]\nbackend = "sql"\n'
    )
    target = workdir / "target.toml"
    shards = ", ".join(f'"{POSTGRES}/{name}"' for name in databases)
    target.write_text(
        f'[deployment]\ndata_dir = "{workdir / "target"}"\nmulti_node = true\n'
        f'[blobs]\nbackend = "s3"\nbucket = "{bucket}"\nendpoint_url = "{ENDPOINT}"\n'
        'region = "us-east-1"\naccess_key_id = "testing"\nsecret_access_key = "testing"\n'
        "create_bucket = true\n"
        f'[sessions]\nbackend = "sql"\nurl = "{POSTGRES}/{meta_db}"\n'
        f'[ledger]\nbackend = "sql"\nurl = "{POSTGRES}/{meta_db}"\n'
        f"[database]\nshards = [{shards}]\n"
    )
    base_rows, base_sql = sql_baseline(workdir, [f"{POSTGRES}/{name}" for name in baseline_dbs])
    base_bytes, base_blob = blob_baseline(workdir, client, base_bucket)
    _, _, idle_rss = run_child(["-c", _IMPORTS_ONLY, str(target)])
    args = ["-c", _WRAPPER, "migrate", "--from", str(source), "--to", str(target), "--quiet"]
    first_out, first_seconds, first_rss = run_child(args)
    first = parse_table(first_out)
    change_one_percent(workdir, rng)
    second_out, second_seconds, second_rss = run_child(args)
    _, verify_seconds, _ = run_child(
        ["-c", _WRAPPER, "migrate", "--from", str(source), "--to", str(target), "--verify", "-q"]
    )
    print("first pass:\n" + first_out)
    print("second pass (after 1% changed):\n" + second_out)
    sql_stores = ("users", "photos", "follows", "feed")
    sql_rows = sum(int(first[s][1].replace(",", "")) for s in sql_stores)
    sql_seconds = sum(float(first[s][5]) for s in sql_stores)
    blob_seconds = float(first["blobs"][5])
    blob_bytes = to_bytes(first["blobs"][4])
    migrate_rate = sql_rows / sql_seconds
    base_rate = base_rows / base_sql
    rss_growth = (max(first_rss, second_rss) - idle_rss) / 2**20
    rows = [
        [
            "SQL rows/s (all stores)",
            f"{migrate_rate:,.0f}",
            f"{base_rate:,.0f}",
            f"{migrate_rate / base_rate:.2f}",
            ">= 0.50",
        ],
        [
            "blob MB/s",
            f"{blob_bytes / blob_seconds / 1e6:,.1f}",
            f"{base_bytes / base_blob / 1e6:,.1f}",
            f"{blob_seconds / base_blob:.2f} (time)",
            "<= 1.20",
        ],
        [
            "peak RSS growth MiB",
            f"{rss_growth:,.0f}",
            f"(peaks: first {first_rss / 2**20:,.0f}, second {second_rss / 2**20:,.0f}, "
            f"imports only {idle_rss / 2**20:,.0f})",
            "-",
            "< 150",
        ],
        [
            "second pass / first",
            f"{second_seconds:,.1f} s",
            f"{first_seconds:,.1f} s",
            f"{second_seconds / first_seconds:.3f}",
            "< 0.10",
        ],
        ["--verify afterwards", f"{verify_seconds:,.1f} s", "-", "-", "-"],
    ]
    for store in (*sql_stores, "blobs", "sessions"):
        seconds = float(first[store][5])
        rate = int(first[store][1].replace(",", "")) / seconds if seconds else 0.0
        megabytes = to_bytes(first[store][4]) / seconds / 1e6 if seconds else 0.0
        label = f"  {store}: rows or objects/s, MB/s"
        rows.append([label, f"{rate:,.0f}", f"{megabytes:,.1f} MB/s", "-", "-"])
    print(table(["measure", "migrate", "baseline", "ratio", "target"], rows))
    return {
        "migrate.sql_rate_ratio": migrate_rate / base_rate,
        "migrate.blob_time_ratio": blob_seconds / base_blob,
        "migrate.rss_growth_mib": rss_growth,
        "migrate.second_pass_ratio": second_seconds / first_seconds,
    }


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="scale 0.005 (a smoke run)")
    parser.add_argument(
        "--scale", type=float, default=None, help="fraction of the full size (default 0.05)"
    )
    args = parser.parse_args(argv)
    header("scalecore migrate: SQLite + folder -> 3 PostgreSQL shards + S3", args.quick)
    run(args.quick, args.scale)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
