"""The object store: uploads, stage outputs and artifacts, addressed by key."""

from __future__ import annotations

from domain.config import StorageSettings
from domain.storage.base import ObjectStore, StoredObject
from domain.storage.local import LocalObjectStore

__all__ = ["LocalObjectStore", "ObjectStore", "StoredObject", "make_object_store"]


def make_object_store(storage: StorageSettings, *, local_root: str) -> ObjectStore:
    """The configured backend; ``local_root`` is the resolved directory of the local one."""
    if storage.backend == "local":
        return LocalObjectStore(local_root)
    if storage.backend == "s3":
        # Imported here: only an S3 deployment pays for importing boto3.
        from domain.storage.s3 import S3ObjectStore

        return S3ObjectStore.from_settings(storage)
    raise ValueError(f"unknown object store backend {storage.backend!r} (supported: local, s3)")
