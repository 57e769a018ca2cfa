"""An S3 bucket as object store (AWS S3, MinIO, any S3-compatible server): production.

Same contract as the local directory: a writer streams its body up in parts (never the
whole object in memory) and the object appears only when committed; reads stream or
fetch byte ranges; deletes treat a missing object as already deleted. Errors keep the
local store's meaning: a missing object is ``FileNotFoundError``, and an unreachable or
failing server is ``ObjectStoreUnavailable``, a ``ConnectionError`` the worker retries.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
from collections.abc import Iterator
from pathlib import Path
from typing import Any, BinaryIO

import boto3
from boto3.s3.transfer import TransferConfig
from botocore.config import Config
from botocore.exceptions import ClientError, HTTPClientError
from botocore.exceptions import ConnectionError as BotoConnectionError

from domain.config import StorageSettings
from domain.storage.base import StoredObject, check_key, probe_object, write_from_file

MISSING_CODES = {"404", "NoSuchKey", "NotFound"}
TRANSIENT_CODES = {"InternalError", "ServiceUnavailable", "SlowDown", "RequestTimeout"}
# DeleteObjects takes at most 1000 keys, which is also a listing page.
DELETE_BATCH = 1000
READ_BUFFER = 1024 * 1024
PROBE_TIMEOUT_SECONDS = 1.5


class ObjectStoreUnavailable(ConnectionError):
    """The object store did not answer, or answered with a server error, after botocore's retries."""


@contextlib.contextmanager
def _translated(key: str) -> Iterator[None]:
    try:
        yield
    except ClientError as exc:
        code = str(exc.response.get("Error", {}).get("Code", ""))
        status = int(exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode") or 0)
        if code in MISSING_CODES:
            raise FileNotFoundError(f"no object {key!r} in the store") from exc
        if status >= 500 or code in TRANSIENT_CODES:
            raise ObjectStoreUnavailable(f"object store error on {key!r}: {exc}") from exc
        raise
    except (BotoConnectionError, HTTPClientError) as exc:
        raise ObjectStoreUnavailable(f"object store unreachable on {key!r}: {exc}") from exc


def make_client(storage: StorageSettings, *, timeout: float | None = None) -> Any:
    """A boto3 S3 client for these settings (thread-safe; make one per process).

    ``timeout`` (seconds) makes a client for health probes: one attempt, no retries, that
    connect and read timeout, so a readiness check of a dead server answers in ``timeout``.
    """
    config = Config(
        region_name=storage.s3_region,
        s3={"addressing_style": storage.s3_addressing_style},
        # botocore's `max_attempts` counts retries; `total_max_attempts` counts the first try too.
        retries={"mode": "standard", "total_max_attempts": 1} if timeout else {"mode": "standard", "max_attempts": 5},
        connect_timeout=timeout or 10,
        read_timeout=timeout or 60,
        # The API streams several uploads and downloads at once from its thread pool.
        max_pool_connections=32,
    )
    credentials: dict[str, str] = {}
    if storage.s3_access_key_id:
        credentials = {
            "aws_access_key_id": storage.s3_access_key_id,
            "aws_secret_access_key": storage.s3_secret_access_key.get_secret_value(),
        }
    # A session per client: boto3's default session is shared state and not thread-safe.
    return boto3.session.Session().client(
        "s3", endpoint_url=storage.s3_endpoint_url or None, config=config, **credentials
    )


class S3Writer:
    """A streaming upload: whole parts go up as they fill; small objects in one PUT at commit."""

    def __init__(self, client: Any, bucket: str, key: str, part_size: int) -> None:
        self._client = client
        self._bucket = bucket
        self._key = key
        self._part_size = part_size
        self._buffer = bytearray()
        self._digest = hashlib.sha256()
        self._upload_id: str | None = None
        self._parts: list[dict[str, Any]] = []
        self._done = False
        self.size = 0

    def write(self, chunk: bytes) -> None:
        if self._done:
            raise ValueError(f"the upload of {self._key!r} is already finished")
        self._digest.update(chunk)
        self.size += len(chunk)
        self._buffer += chunk
        try:
            while len(self._buffer) >= self._part_size:
                with memoryview(self._buffer) as view:
                    part = bytes(view[: self._part_size])
                self._upload_part(part)
                del self._buffer[: self._part_size]
        except BaseException:
            self.abort()
            raise

    def _upload_part(self, body: bytes) -> None:
        with _translated(self._key):
            if self._upload_id is None:
                started = self._client.create_multipart_upload(Bucket=self._bucket, Key=self._key)
                self._upload_id = started["UploadId"]
            number = len(self._parts) + 1
            answer = self._client.upload_part(
                Bucket=self._bucket, Key=self._key, UploadId=self._upload_id, PartNumber=number, Body=body
            )
        self._parts.append({"PartNumber": number, "ETag": answer["ETag"]})

    def commit(self) -> StoredObject:
        if self._done:
            raise ValueError(f"the upload of {self._key!r} is already finished")
        try:
            if self._upload_id is None:
                with _translated(self._key):
                    self._client.put_object(Bucket=self._bucket, Key=self._key, Body=bytes(self._buffer))
            else:
                if self._buffer:
                    self._upload_part(bytes(self._buffer))
                with _translated(self._key):
                    self._client.complete_multipart_upload(
                        Bucket=self._bucket,
                        Key=self._key,
                        UploadId=self._upload_id,
                        MultipartUpload={"Parts": self._parts},
                    )
        except BaseException:
            self.abort()
            raise
        self._done = True
        self._buffer = bytearray()
        return StoredObject(self._key, self.size, self._digest.hexdigest())

    def abort(self) -> None:
        """Drop what was sent; nothing becomes visible. Safe to call twice."""
        self._done = True
        self._buffer = bytearray()
        upload_id, self._upload_id = self._upload_id, None
        if upload_id is not None:
            # Best effort: a part left behind is invisible to readers, and a bucket lifecycle
            # rule (AbortIncompleteMultipartUpload) reclaims it (docs/configuration.md).
            with contextlib.suppress(ClientError, BotoConnectionError, HTTPClientError):
                self._client.abort_multipart_upload(Bucket=self._bucket, Key=self._key, UploadId=upload_id)


class _RangedReader(io.RawIOBase):
    """A seekable read-only view of one object; each read is a ranged GET of that version."""

    def __init__(self, client: Any, bucket: str, key: str) -> None:
        super().__init__()
        self._client = client
        self._bucket = bucket
        self._key = key
        with _translated(key):
            head = client.head_object(Bucket=bucket, Key=key)
        self._size = int(head["ContentLength"])
        # Every range must come from the object as it was when opened, never a mix of two.
        self._etag = head["ETag"]
        self._pos = 0

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def tell(self) -> int:
        return self._pos

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        base = {io.SEEK_SET: 0, io.SEEK_CUR: self._pos, io.SEEK_END: self._size}[whence]
        if base + offset < 0:
            raise ValueError("negative seek position")
        self._pos = base + offset
        return self._pos

    def _fetch(self, length: int) -> bytes:
        if length <= 0 or self._pos >= self._size:
            return b""
        last = min(self._pos + length, self._size) - 1
        with _translated(self._key):
            answer = self._client.get_object(
                Bucket=self._bucket, Key=self._key, Range=f"bytes={self._pos}-{last}", IfMatch=self._etag
            )
            data: bytes = answer["Body"].read()
        self._pos += len(data)
        return data

    def readinto(self, buffer: Any) -> int:
        view = memoryview(buffer).cast("B")
        data = self._fetch(len(view))
        view[: len(data)] = data
        return len(data)

    def readall(self) -> bytes:
        # One GET for the rest, not RawIOBase's loop of small reads.
        return self._fetch(self._size - self._pos)


class S3ObjectStore:
    def __init__(
        self, client: Any, bucket: str, *, part_size: int = 8 * 1024**2, probe_client: Any | None = None
    ) -> None:
        self.client = client
        self.bucket = bucket
        self.part_size = part_size
        # Readiness probes use a client without retries and with short timeouts.
        self.probe_client = probe_client or client

    @classmethod
    def from_settings(cls, storage: StorageSettings) -> S3ObjectStore:
        return cls(
            make_client(storage),
            storage.s3_bucket,
            part_size=storage.s3_part_size_bytes,
            probe_client=make_client(storage, timeout=PROBE_TIMEOUT_SECONDS),
        )

    def probe(self) -> None:
        """Write, read back and delete a small object (the readiness check).

        Raises ``ObjectStoreUnavailable`` when the server does not answer within the probe
        client's timeout, ``OSError`` when the round trip is wrong, or botocore's
        ``ClientError`` for a refusal (no bucket, bad credentials).
        """
        key, body = probe_object()
        with _translated(key):
            self.probe_client.put_object(Bucket=self.bucket, Key=key, Body=body)
            try:
                read = self.probe_client.get_object(Bucket=self.bucket, Key=key)["Body"].read()
            finally:
                self.probe_client.delete_object(Bucket=self.bucket, Key=key)
        if read != body:
            raise OSError(f"object store returned {len(read)} bytes for a {len(body)}-byte probe object")

    def open_writer(self, key: str) -> S3Writer:
        return S3Writer(self.client, self.bucket, check_key(key), self.part_size)

    def put_file(self, key: str, path: Path) -> StoredObject:
        return write_from_file(self.open_writer(key), path, self.part_size)

    def get_to_file(self, key: str, path: Path) -> None:
        # s3transfer fetches large objects in concurrent ranges into a temporary file and
        # renames it: a failed download leaves no partial file behind.
        transfer = TransferConfig(multipart_threshold=self.part_size, multipart_chunksize=self.part_size)
        with _translated(check_key(key)):
            self.client.download_file(self.bucket, key, str(path), Config=transfer)

    def iter_chunks(self, key: str, chunk_size: int = 1024 * 1024) -> Iterator[bytes]:
        with _translated(check_key(key)):
            body = self.client.get_object(Bucket=self.bucket, Key=key)["Body"]
            try:
                yield from body.iter_chunks(chunk_size)
            finally:
                body.close()

    def read_bytes(self, key: str) -> bytes:
        with _translated(check_key(key)):
            data: bytes = self.client.get_object(Bucket=self.bucket, Key=key)["Body"].read()
        return data

    def open_read(self, key: str) -> BinaryIO:
        return io.BufferedReader(_RangedReader(self.client, self.bucket, check_key(key)), READ_BUFFER)

    def exists(self, key: str) -> bool:
        try:
            with _translated(check_key(key)):
                self.client.head_object(Bucket=self.bucket, Key=key)
        except FileNotFoundError:
            return False
        return True

    def delete(self, key: str) -> bool:
        """Remove one object; False when it was already gone. S3 answers a delete the same
        either way, so two concurrent deletes of one object may both say True."""
        if not self.exists(key):
            return False
        with _translated(key):
            self.client.delete_object(Bucket=self.bucket, Key=key)
        return True

    def delete_prefix(self, prefix: str) -> int:
        """Remove every object under ``prefix`` (or the one object it names); returns how many
        this call listed and removed. A concurrent deleter's removals are not an error."""
        name = check_key(prefix.rstrip("/"))
        removed = 0
        with _translated(prefix):
            pages = self.client.get_paginator("list_objects_v2").paginate(
                Bucket=self.bucket, Prefix=f"{name}/", PaginationConfig={"PageSize": DELETE_BATCH}
            )
            for page in pages:
                keys = [{"Key": entry["Key"]} for entry in page.get("Contents", [])]
                if keys:
                    removed += self._delete_batch(keys)
        if removed:
            return removed
        return int(self.delete(name))

    def _delete_batch(self, keys: list[dict[str, str]]) -> int:
        answer = self.client.delete_objects(Bucket=self.bucket, Delete={"Objects": keys, "Quiet": True})
        # Quiet mode lists only failures; a key already gone is a success, not one of them.
        errors = answer.get("Errors", [])
        if not errors:
            return len(keys)
        first = errors[0]
        message = (
            f"could not delete {len(errors)} of {len(keys)} objects, e.g. {first.get('Key')!r}: "
            f"{first.get('Code')} {first.get('Message')}"
        )
        if all(error.get("Code") in TRANSIENT_CODES for error in errors):
            raise ObjectStoreUnavailable(message)
        raise OSError(message)
