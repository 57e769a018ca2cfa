"""The object store: uploads, stage outputs and artifacts, addressed by key."""

from app.storage.base import ObjectStore, StoredObject
from app.storage.local import LocalObjectStore

__all__ = ["LocalObjectStore", "ObjectStore", "StoredObject", "make_object_store"]


def make_object_store(backend: str, *, local_root: str) -> ObjectStore:
    if backend == "local":
        return LocalObjectStore(local_root)
    raise ValueError(f"unknown object store backend {backend!r} (supported: local)")
