"""Fixtures of the object store tests: moto's S3 server over real HTTP, a bucket per test, and
``backend``, which runs a test on the local directory and on S3."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from moto.server import ThreadedMotoServer

from domain.storage import LocalObjectStore
from domain.storage.s3 import S3ObjectStore, make_client
from tests.support.object_stores import PART, Backend, s3_leftovers, s3_settings


@pytest.fixture(scope="module")
def s3_endpoint() -> Iterator[str]:
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    endpoint = f"http://{host}:{port}"
    try:
        yield endpoint
    finally:
        httpx.post(f"{endpoint}/moto-api/reset")  # moto keeps objects in memory: drop them
        server.stop()


@pytest.fixture(scope="module")
def s3_admin(s3_endpoint: str) -> Any:
    """One client for the module: making a boto3 client costs most of a second."""
    return make_client(s3_settings(s3_endpoint, "unused"))


@pytest.fixture
def s3_bucket(s3_admin: Any) -> Iterator[str]:
    """A fresh bucket per test, made the way an operator (or compose's one-shot service) would."""
    bucket = f"modelport-test-{uuid.uuid4().hex[:12]}"
    client = s3_admin
    client.create_bucket(Bucket=bucket)
    yield bucket
    for page in client.get_paginator("list_objects_v2").paginate(Bucket=bucket):
        for entry in page.get("Contents", []):
            client.delete_object(Bucket=bucket, Key=entry["Key"])
    client.delete_bucket(Bucket=bucket)


@pytest.fixture
def s3_store(s3_admin: Any, s3_bucket: str) -> S3ObjectStore:
    return S3ObjectStore(s3_admin, s3_bucket, part_size=PART)


@pytest.fixture(params=["local", "s3"])
def backend(request: pytest.FixtureRequest, tmp_path: Path) -> Backend:
    if request.param == "local":
        root = tmp_path / "objects"
        local = LocalObjectStore(root)
        return Backend(local, lambda: sorted(str(p.relative_to(root)) for p in root.rglob("*") if p.is_file()))
    s3: S3ObjectStore = request.getfixturevalue("s3_store")
    return Backend(s3, lambda: s3_leftovers(s3))
