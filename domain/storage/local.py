"""A local directory as object store: the embedded default."""

from __future__ import annotations

import contextlib
import hashlib
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import BinaryIO

from domain.storage.base import StoredObject, probe_object, write_from_file
from domain.storage.base import check_key as _check_key


class LocalWriter:
    def __init__(self, root: Path, key: str) -> None:
        self._target = root / key
        self._target.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=self._target.parent, prefix=".upload-")
        self._file = os.fdopen(fd, "wb")
        self._tmp = Path(tmp)
        self._digest = hashlib.sha256()
        self._key = key
        self.size = 0

    def write(self, chunk: bytes) -> None:
        self._file.write(chunk)
        self._digest.update(chunk)
        self.size += len(chunk)

    def commit(self) -> StoredObject:
        self._file.close()
        os.replace(self._tmp, self._target)  # atomic: readers never see a partial object
        return StoredObject(self._key, self.size, self._digest.hexdigest())

    def abort(self) -> None:
        self._file.close()
        self._tmp.unlink(missing_ok=True)


class LocalObjectStore:
    def __init__(self, root: str | Path) -> None:
        self.root = Path(root).resolve()
        self.root.mkdir(parents=True, exist_ok=True)

    def _path(self, key: str) -> Path:
        return self.root / _check_key(key)

    def open_writer(self, key: str) -> LocalWriter:
        return LocalWriter(self.root, _check_key(key))

    def put_file(self, key: str, path: Path) -> StoredObject:
        return write_from_file(self.open_writer(key), path, 1024 * 1024)

    def get_to_file(self, key: str, path: Path) -> None:
        shutil.copyfile(self._path(key), path)

    def iter_chunks(self, key: str, chunk_size: int = 1024 * 1024) -> Iterator[bytes]:
        with open(self._path(key), "rb") as source:
            while chunk := source.read(chunk_size):
                yield chunk

    def read_bytes(self, key: str) -> bytes:
        return self._path(key).read_bytes()

    def open_read(self, key: str) -> BinaryIO:
        return open(self._path(key), "rb")

    def exists(self, key: str) -> bool:
        return self._path(key).is_file()

    def delete(self, key: str) -> bool:
        """Remove one object; False when it was already gone."""
        return _unlink(self._path(key))

    def probe(self) -> None:
        """Write, read back and delete a small object (the readiness check); raises
        ``OSError`` when the root is missing, not a directory, unwritable or full."""
        key, body = probe_object()
        writer = self.open_writer(key)
        try:
            writer.write(body)
        except BaseException:
            writer.abort()
            raise
        writer.commit()
        try:
            read = self.read_bytes(key)
        finally:
            self.delete(key)
        if read != body:
            raise OSError(f"read {len(read)} bytes back from a {len(body)}-byte probe object in {self.root}")

    def delete_prefix(self, prefix: str) -> int:
        """Remove every object under ``prefix`` (or the one object it names); returns how many
        this call removed. Safe when another deleter works on the same prefix at the same time."""
        target = self._path(prefix.rstrip("/"))
        if not target.is_dir():
            return int(_unlink(target))
        removed = 0
        for directory, subdirs, files in os.walk(target, topdown=False):
            links = [name for name in subdirs if os.path.islink(os.path.join(directory, name))]
            removed += sum(_unlink(Path(directory, name)) for name in (*files, *links))
            with contextlib.suppress(FileNotFoundError):
                os.rmdir(directory)
        return removed


def _unlink(path: Path) -> bool:
    try:
        path.unlink()
    except FileNotFoundError:
        return False
    return True
