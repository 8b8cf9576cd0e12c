"""S3BlobStore put/get against bare boto3 put_object/get_object, 4 KiB and 1 MiB objects.

Both sides talk to the S3 endpoint at http://127.0.0.1:25000 (moto) with the same
credentials, in a bucket this benchmark creates and removes. The baseline is a plain boto3
client (SigV4, path as boto3 chooses) doing ``put_object`` with a content type and
``get_object(...)["Body"].read()``. The adapter adds key validation, a sha256 of the bytes,
two metadata headers, and reading through a ``BlobStream``. Target (issue 4): an S3
put/get within 10% of bare boto3.

Run: ``python -m bench.blob_s3 [--quick]`` from the repository root.
"""

from __future__ import annotations

import contextlib
import itertools
import os
import uuid
from collections.abc import Sequence

import boto3
from botocore.config import Config

from adapters.blob.s3 import S3BlobStore
from bench._common import (
    alternating,
    header,
    latency_table,
    load_average,
    paired_verdict,
    parse_args,
)

ENDPOINT = "http://127.0.0.1:25000"
CREDENTIALS = {"aws_access_key_id": "testing", "aws_secret_access_key": "testing"}
KIB = 1024


def run(quick: bool) -> dict[str, float]:
    run_id = uuid.uuid4().hex[:8]
    bucket = f"bench-blob-{run_id}"
    client = boto3.session.Session(region_name="us-east-1", **CREDENTIALS).client(
        "s3", endpoint_url=ENDPOINT, config=Config(signature_version="s3v4")
    )
    client.create_bucket(Bucket=bucket)
    store = S3BlobStore(
        bucket=bucket,
        prefix="adapter",
        endpoint_url=ENDPOINT,
        access_key_id=CREDENTIALS["aws_access_key_id"],
        secret_access_key=CREDENTIALS["aws_secret_access_key"],
    )
    ratios: dict[str, float] = {}
    try:
        for size, label in ((4 * KIB, "4 KiB"), (1024 * KIB, "1 MiB")):
            small = size < 64 * KIB
            if quick:
                rounds, batch, warmup = (5, 10, 5) if small else (4, 4, 2)
            else:
                rounds, batch, warmup = (20, 20, 20) if small else (20, 8, 3)
            ratios.update(_compare(client, store, bucket, size, label, rounds, batch, warmup))
    finally:
        store.close()
        with contextlib.suppress(Exception):
            pages = client.get_paginator("list_objects_v2").paginate(Bucket=bucket)
            for page in pages:
                for item in page.get("Contents", []):
                    client.delete_object(Bucket=bucket, Key=item["Key"])
            client.delete_bucket(Bucket=bucket)
        client.close()
    print(load_average())
    return {f"s3.{name}": ratio for name, ratio in ratios.items()}


def _compare(
    client: object,
    store: S3BlobStore,
    bucket: str,
    size: int,
    label: str,
    rounds: int,
    batch: int,
    warmup: int,
) -> dict[str, float]:
    data = os.urandom(size)
    slots = 8  # distinct keys cycled through, so puts overwrite a handful of objects
    put_keys = itertools.cycle(range(slots))
    bare_put_keys = itertools.cycle(range(slots))
    s3 = client  # a boto3 S3 client; typed loosely, the stubs are for the adapter

    def adapter_put() -> None:
        store.put(f"obj-{size}-{next(put_keys)}", data, content_type="application/octet-stream")

    def bare_put() -> None:
        s3.put_object(  # type: ignore[attr-defined]
            Bucket=bucket,
            Key=f"bare/obj-{size}-{next(bare_put_keys)}",
            Body=data,
            ContentType="application/octet-stream",
        )

    for _ in range(slots):  # every key exists before the first get
        adapter_put()
        bare_put()
    get_keys = itertools.cycle(range(slots))
    bare_get_keys = itertools.cycle(range(slots))

    def adapter_get() -> bytes:
        stream = store.open(f"obj-{size}-{next(get_keys)}")
        try:
            return stream.read()
        finally:
            stream.close()

    def bare_get() -> bytes:
        response = s3.get_object(  # type: ignore[attr-defined]
            Bucket=bucket, Key=f"bare/obj-{size}-{next(bare_get_keys)}"
        )
        body: bytes = response["Body"].read()
        return body

    if adapter_get() != data or bare_get() != data:
        raise RuntimeError("read back different bytes")
    put_names = (f"boto3 put_object {label} (baseline)", f"S3BlobStore.put {label}")
    get_names = (f"boto3 get_object {label} (baseline)", f"S3BlobStore.open+read {label}")
    puts = alternating(
        dict(zip(put_names, (bare_put, adapter_put), strict=True)),
        rounds=rounds,
        per_round=batch,
        warmup=warmup,
    )
    gets = alternating(
        dict(zip(get_names, (bare_get, adapter_get), strict=True)),
        rounds=rounds,
        per_round=batch,
        warmup=warmup,
    )
    put_text, _ = latency_table(puts.samples, {put_names[1]: put_names[0]})
    get_text, _ = latency_table(gets.samples, {get_names[1]: get_names[0]})
    print(f"{label} objects on {ENDPOINT} (ratio column: ratio of the medians of all samples)")
    print(put_text)
    print(get_text)
    print(paired_verdict(f"S3 put {label} vs bare boto3", puts, put_names[1], put_names[0]))
    print(paired_verdict(f"S3 get {label} vs bare boto3", gets, get_names[1], get_names[0]))
    print()
    return {
        f"put {label}": puts.ratio(put_names[1], put_names[0])[0],
        f"get {label}": gets.ratio(get_names[1], get_names[0])[0],
    }


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(__doc__.splitlines()[0], argv)
    header("blob store: S3BlobStore vs bare boto3", args.quick)
    run(args.quick)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
