"""Object store test helpers: S3 settings for moto's server, what a backend holds, test data."""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass

from pydantic import SecretStr

from domain.config import StorageSettings
from domain.storage import ObjectStore
from domain.storage.s3 import S3ObjectStore

MIB = 1024 * 1024
PART = 5 * MIB  # S3's smallest part: multipart paths are reached with little data


def s3_settings(endpoint: str, bucket: str) -> StorageSettings:
    return StorageSettings(
        backend="s3",
        s3_bucket=bucket,
        s3_endpoint_url=endpoint,
        s3_region="us-east-1",
        s3_access_key_id="test-key",
        s3_secret_access_key=SecretStr("test-secret"),
        s3_addressing_style="path",
        s3_part_size_bytes=PART,
    )


def s3_leftovers(store: S3ObjectStore) -> list[str]:
    """Every object and every unfinished multipart upload in the bucket."""
    objects = store.client.list_objects_v2(Bucket=store.bucket).get("Contents", [])
    uploads = store.client.list_multipart_uploads(Bucket=store.bucket).get("Uploads", [])
    return sorted([o["Key"] for o in objects] + [f"upload:{u['Key']}" for u in uploads])


@dataclass
class Backend:
    store: ObjectStore
    # What the backend holds, including anything half-written (temp files, open uploads).
    leftovers: Callable[[], list[str]]


def chunks_of(total: int, chunk: int, seed: bytes = b"modelport") -> Iterator[bytes]:
    """Distinct bytes per chunk, so a misplaced or repeated part changes the digest."""
    index = 0
    while total > 0:
        size = min(chunk, total)
        block = hashlib.sha256(seed + index.to_bytes(8, "big")).digest()
        yield (block * (size // len(block) + 1))[:size]
        total -= size
        index += 1


def put(store: ObjectStore, key: str, data: bytes) -> None:
    writer = store.open_writer(key)
    writer.write(data)
    writer.commit()
