from __future__ import annotations

import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO, Protocol


def check_key(key: str) -> str:
    """Object keys are relative slash paths without empty, ``.`` or ``..`` parts (every backend)."""
    parts = key.split("/")
    if not key or key.startswith("/") or any(p in ("", ".", "..") for p in parts):
        raise ValueError(f"invalid object key {key!r}")
    return key


def write_from_file(writer: ObjectWriter, path: Path, chunk_size: int) -> StoredObject:
    """Stream a local file into ``writer`` and commit it; abort on any failure."""
    try:
        with open(path, "rb") as source:
            while chunk := source.read(chunk_size):
                writer.write(chunk)
    except BaseException:
        writer.abort()
        raise
    return writer.commit()


PROBE_PREFIX = "_probe"


def probe_object() -> tuple[str, bytes]:
    """A unique key and body for a readiness probe's write/read/delete round trip."""
    token = uuid.uuid4().hex
    return f"{PROBE_PREFIX}/{token}", token.encode()


@dataclass(frozen=True)
class StoredObject:
    key: str
    size: int
    sha256: str


class ObjectWriter(Protocol):
    """A streaming upload: write chunks, then commit (atomic) or abort."""

    size: int

    def write(self, chunk: bytes) -> None: ...

    def commit(self) -> StoredObject: ...

    def abort(self) -> None: ...


class ObjectStore(Protocol):
    def open_writer(self, key: str) -> ObjectWriter: ...

    def put_file(self, key: str, path: Path) -> StoredObject: ...

    def get_to_file(self, key: str, path: Path) -> None: ...

    def iter_chunks(self, key: str, chunk_size: int = 1024 * 1024) -> Iterator[bytes]: ...

    def read_bytes(self, key: str) -> bytes: ...

    def open_read(self, key: str) -> BinaryIO: ...

    def exists(self, key: str) -> bool: ...

    # Deletes are idempotent: a missing object is not an error, so a repeated or concurrent
    # cleanup (retention, an aborted upload) never fails on what another one removed.
    def delete(self, key: str) -> bool: ...

    def delete_prefix(self, prefix: str) -> int: ...

    # Readiness: write, read back and delete a small object, quickly; raises when the store
    # cannot do that (unwritable directory, unreachable server, missing bucket).
    def probe(self) -> None: ...
