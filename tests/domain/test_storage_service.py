"""The object stores in the service: the API writing uploads to S3, and each backend's readiness probe."""

from __future__ import annotations

import hashlib
import socket
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from botocore.exceptions import ClientError
from fastapi.testclient import TestClient

from app.main import create_app
from domain.config import DatabaseSettings, Settings
from domain.migrate import upgrade
from domain.storage import LocalObjectStore
from domain.storage.s3 import PROBE_TIMEOUT_SECONDS, ObjectStoreUnavailable, S3ObjectStore
from tests.support.api import ADMIN_KEY, SPEC, submit
from tests.support.db import sqlite_url
from tests.support.object_stores import Backend, s3_settings

# --- the API on the S3 backend ----------------------------------------------------------


@pytest.fixture
def s3_client(s3_endpoint: str, s3_bucket: str, tmp_path: Path) -> Iterator[TestClient]:
    url = sqlite_url(tmp_path)
    upgrade(url)
    settings = Settings(
        data_dir=tmp_path / "data",
        api_key=ADMIN_KEY,
        database=DatabaseSettings(DATABASE_URL=url),
        storage=s3_settings(s3_endpoint, s3_bucket),
    )
    with TestClient(create_app(settings)) as client:
        yield client


def bucket_keys(client: Any, bucket: str) -> list[str]:
    return [o["Key"] for o in client.list_objects_v2(Bucket=bucket).get("Contents", [])]


def test_api_upload_lands_in_the_bucket(
    s3_client: TestClient, s3_admin: Any, s3_bucket: str, squeezenet_pth: Path, tmp_path: Path
) -> None:
    auth = {"Authorization": f"Bearer {ADMIN_KEY}"}
    model = squeezenet_pth.read_bytes()
    response = submit(s3_client, auth, model)
    assert response.status_code == 202, response.text
    job = response.json()
    key = f"uploads/{job['id']}/model"
    assert job["model"]["sha256"] == hashlib.sha256(model).hexdigest()
    assert bucket_keys(s3_admin, s3_bucket) == [key]
    body = s3_admin.get_object(Bucket=s3_bucket, Key=key)["Body"].read()
    assert hashlib.sha256(body).hexdigest() == job["model"]["sha256"]
    assert not (tmp_path / "data" / "objects").exists()  # nothing went to the local directory

    # A refused submission leaves nothing behind in the bucket.
    refused = submit(s3_client, auth, model, {**SPEC, "targets": ["nothing"]})
    assert refused.status_code == 422, refused.text
    assert refused.headers["content-type"].startswith("application/problem+json")
    assert refused.json()["code"] == "invalid_spec"
    assert bucket_keys(s3_admin, s3_bucket) == [key]


# --- readiness probe -----------------------------------------------------------------


def test_probe_round_trips_and_leaves_nothing(backend: Backend) -> None:
    backend.store.probe()
    backend.store.probe()
    assert backend.leftovers() == []


def test_local_probe_fails_when_the_root_is_not_a_directory(tmp_path: Path) -> None:
    root = tmp_path / "objects"
    store = LocalObjectStore(root)
    root.rmdir()
    root.write_text("not a directory")
    with pytest.raises(OSError, match="objects"):
        store.probe()


def test_s3_probe_fails_on_a_missing_bucket(s3_endpoint: str) -> None:
    store = S3ObjectStore.from_settings(s3_settings(s3_endpoint, f"missing-{uuid.uuid4().hex[:8]}"))
    with pytest.raises(ClientError, match="NoSuchBucket"):
        store.probe()


def test_s3_probe_of_a_silent_server_answers_within_its_timeout() -> None:
    # A server that takes the connection and never answers: the store's own client would
    # wait 60 s per attempt, 5 attempts; the probe waits one short timeout.
    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen(8)
        endpoint = f"http://127.0.0.1:{silent.getsockname()[1]}"
        store = S3ObjectStore.from_settings(s3_settings(endpoint, "modelport-test"))
        started = time.monotonic()
        with pytest.raises(ObjectStoreUnavailable):
            store.probe()
        elapsed = time.monotonic() - started
    # One attempt: botocore's 1 s wait for "100 Continue" on the PUT, then the read timeout.
    assert PROBE_TIMEOUT_SECONDS * 0.9 < elapsed < 1 + 2 * PROBE_TIMEOUT_SECONDS
