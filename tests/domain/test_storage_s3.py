"""The object store contract, on the local directory and on S3 (moto's S3 server over real HTTP).

Every contract test runs on both backends; the S3-only tests cover what only S3 has
(multipart parts on the server before commit, settings, error translation), and
test_storage_service.py runs the API on the S3 backend and the readiness probes.
"""

from __future__ import annotations

import hashlib
import io
import socket
import zipfile
from pathlib import Path

import boto3
import pytest
from botocore.config import Config
from botocore.exceptions import ClientError
from pydantic import ValidationError

from domain.config import Settings
from domain.storage import make_object_store
from domain.storage.s3 import ObjectStoreUnavailable, S3ObjectStore
from tests.support.object_stores import MIB, PART, Backend, chunks_of, put, s3_leftovers

# --- the contract, on both backends ---------------------------------------------------


def test_commit_reports_size_and_sha256_and_reads_back(backend: Backend) -> None:
    store = backend.store
    data = b"".join(chunks_of(300_000, 70_000))
    writer = store.open_writer("uploads/j1/model")
    for start in range(0, len(data), 70_000):
        writer.write(data[start : start + 70_000])
    assert writer.size == len(data)
    assert not store.exists("uploads/j1/model")  # nothing is visible before the commit
    stored = writer.commit()
    assert (stored.key, stored.size, stored.sha256) == ("uploads/j1/model", len(data), hashlib.sha256(data).hexdigest())
    assert store.exists("uploads/j1/model")
    assert store.read_bytes("uploads/j1/model") == data
    assert backend.leftovers() == ["uploads/j1/model"]


def test_empty_object(backend: Backend) -> None:
    stored = backend.store.open_writer("jobs/j/empty").commit()
    assert (stored.size, stored.sha256) == (0, hashlib.sha256(b"").hexdigest())
    assert backend.store.read_bytes("jobs/j/empty") == b""


def test_commit_replaces_an_existing_object(backend: Backend) -> None:
    put(backend.store, "jobs/j/report.json", b"first")
    put(backend.store, "jobs/j/report.json", b"second")
    assert backend.store.read_bytes("jobs/j/report.json") == b"second"


def test_put_file_and_get_to_file_round_trip(backend: Backend, tmp_path: Path) -> None:
    source = tmp_path / "model.onnx"
    source.write_bytes(b"".join(chunks_of(2 * MIB + 123, MIB)))
    stored = backend.store.put_file("jobs/j/stages/export/model.onnx", source)
    assert stored.size == source.stat().st_size
    assert stored.sha256 == hashlib.sha256(source.read_bytes()).hexdigest()
    target = tmp_path / "in" / "model.onnx"
    target.parent.mkdir()
    backend.store.get_to_file("jobs/j/stages/export/model.onnx", target)
    assert target.read_bytes() == source.read_bytes()


def test_streaming_read_in_chunks(backend: Backend) -> None:
    data = b"".join(chunks_of(2500, 2500))
    put(backend.store, "jobs/j/model.tflite", data)
    pieces = list(backend.store.iter_chunks("jobs/j/model.tflite", chunk_size=1000))
    assert b"".join(pieces) == data
    assert len(pieces) >= 3
    assert all(0 < len(piece) <= 1000 for piece in pieces)


def test_open_read_is_seekable_enough_for_zipfile(backend: Backend) -> None:
    archive = io.BytesIO()
    with zipfile.ZipFile(archive, "w") as zf:
        zf.writestr("archive/data.pkl", b"pickle" * 1000)
        zf.writestr("archive/constants.pkl", b"c")
    put(backend.store, "uploads/j/model", archive.getvalue())
    with backend.store.open_read("uploads/j/model") as handle:
        assert handle.read(4) == b"PK\x03\x04"
        handle.seek(0)
        with zipfile.ZipFile(handle) as zf:
            assert zf.read("archive/data.pkl") == b"pickle" * 1000
        assert handle.seek(0, 2) == len(archive.getvalue())
        handle.seek(-3, 2)
        assert handle.read() == archive.getvalue()[-3:]
        assert handle.read(10) == b""


def test_missing_objects_raise_file_not_found(backend: Backend, tmp_path: Path) -> None:
    store = backend.store
    assert not store.exists("jobs/none/report.json")
    with pytest.raises(FileNotFoundError):
        store.read_bytes("jobs/none/report.json")
    with pytest.raises(FileNotFoundError):
        store.open_read("jobs/none/report.json")
    with pytest.raises(FileNotFoundError):
        store.get_to_file("jobs/none/report.json", tmp_path / "out")
    with pytest.raises(FileNotFoundError):
        list(store.iter_chunks("jobs/none/report.json"))
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("key", ["", "/abs", "a//b", "a/../b", "./a", "a/"])
def test_invalid_keys_are_refused(backend: Backend, key: str) -> None:
    with pytest.raises(ValueError, match="invalid object key"):
        backend.store.open_writer(key)
    with pytest.raises(ValueError, match="invalid object key"):
        backend.store.exists(key)


def test_deletes_are_idempotent(backend: Backend) -> None:
    store = backend.store
    for key in ("jobs/a/report.json", "jobs/a/stages/s/out.bin", "jobs/a/logs/s.log", "jobs/ab/report.json"):
        put(store, key, b"x")
    assert store.delete_prefix("jobs/a/") == 3
    assert store.delete_prefix("jobs/a/") == 0
    assert store.delete_prefix("jobs/a") == 0
    assert backend.leftovers() == ["jobs/ab/report.json"]  # a sibling sharing the name's start stays
    assert store.delete("jobs/ab/report.json") is True
    assert store.delete("jobs/ab/report.json") is False
    assert store.delete_prefix("jobs/none") == 0
    put(store, "jobs/c/report.json", b"x")
    assert store.delete_prefix("jobs/c/report.json") == 1  # a prefix naming one object removes it
    assert backend.leftovers() == []
    with pytest.raises(ValueError, match="invalid object key"):
        store.delete_prefix("/")  # never the whole store


def test_an_aborted_writer_leaves_nothing(backend: Backend) -> None:
    writer = backend.store.open_writer("uploads/j/model")
    for chunk in chunks_of(PART + MIB, MIB):  # past one part: S3 has a multipart upload open
        writer.write(chunk)
    writer.abort()
    writer.abort()  # twice is harmless (the upload path aborts every writer it opened)
    assert not backend.store.exists("uploads/j/model")
    assert backend.leftovers() == []


def test_large_write_in_chunks(backend: Backend) -> None:
    digest = hashlib.sha256()
    writer = backend.store.open_writer("jobs/j/stages/export/model.onnx")
    for chunk in chunks_of(12 * MIB, 256 * 1024):
        digest.update(chunk)
        writer.write(chunk)
    stored = writer.commit()
    assert (stored.size, stored.sha256) == (12 * MIB, digest.hexdigest())
    read = hashlib.sha256()
    for piece in backend.store.iter_chunks(stored.key):
        read.update(piece)
    assert read.hexdigest() == digest.hexdigest()
    with backend.store.open_read(stored.key) as handle:
        handle.seek(PART - 10)
        expected = b"".join(chunks_of(12 * MIB, 256 * 1024))[PART - 10 : PART + 10]
        assert handle.read(20) == expected  # across the first part boundary
    assert backend.leftovers() == [stored.key]


# --- S3 only ------------------------------------------------------------------------------


def test_s3_parts_leave_before_the_commit(s3_store: S3ObjectStore) -> None:
    """The body goes up as it arrives: whole parts are on the server before the commit,
    only the unsent tail (under one part) is held, and nothing is visible until then."""
    client, bucket = s3_store.client, s3_store.bucket
    writer = s3_store.open_writer("uploads/j/model")
    for chunk in chunks_of(12 * MIB, MIB):
        writer.write(chunk)
    uploads = client.list_multipart_uploads(Bucket=bucket).get("Uploads", [])
    assert [u["Key"] for u in uploads] == ["uploads/j/model"]
    parts = client.list_parts(Bucket=bucket, Key="uploads/j/model", UploadId=uploads[0]["UploadId"])["Parts"]
    assert [p["Size"] for p in parts] == [PART, PART]
    assert not s3_store.exists("uploads/j/model")
    writer.commit()
    assert client.head_object(Bucket=bucket, Key="uploads/j/model")["ContentLength"] == 12 * MIB
    assert client.list_multipart_uploads(Bucket=bucket).get("Uploads", []) == []


def test_s3_delete_prefix_pages_through_listings(s3_store: S3ObjectStore, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("domain.storage.s3.DELETE_BATCH", 2)
    for index in range(5):
        put(s3_store, f"jobs/p/stages/s/{index}.bin", b"x")
    assert s3_store.delete_prefix("jobs/p") == 5
    assert s3_leftovers(s3_store) == []


def test_s3_reader_refuses_to_mix_two_versions(s3_store: S3ObjectStore) -> None:
    put(s3_store, "uploads/j/model", b"a" * (2 * MIB))
    handle = s3_store.open_read("uploads/j/model")
    assert handle.read(10) == b"a" * 10
    put(s3_store, "uploads/j/model", b"b" * (2 * MIB))  # replaced while being read
    with pytest.raises(ClientError, match="PreconditionFailed"):
        handle.read()
    handle.close()


def refused_port() -> int:
    """A local port that was free a moment ago: connecting to it is refused."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port


def test_s3_unreachable_server_is_a_transient_error() -> None:
    # One attempt, so the test does not wait through botocore's retries.
    client = boto3.session.Session().client(
        "s3",
        endpoint_url=f"http://127.0.0.1:{refused_port()}",
        region_name="us-east-1",
        aws_access_key_id="k",
        aws_secret_access_key="s",
        config=Config(retries={"max_attempts": 1}, connect_timeout=2),
    )
    store = S3ObjectStore(client, "modelport-test")
    with pytest.raises(ObjectStoreUnavailable) as caught:
        store.read_bytes("jobs/j/report.json")
    assert isinstance(caught.value, ConnectionError)  # what the worker's tasks retry
    with pytest.raises(ObjectStoreUnavailable):
        store.exists("jobs/j/report.json")


def test_s3_backend_needs_a_bucket(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MODELPORT_STORAGE_BACKEND", "s3")
    monkeypatch.delenv("MODELPORT_STORAGE_S3_BUCKET", raising=False)
    with pytest.raises(ValidationError, match="MODELPORT_STORAGE_S3_BUCKET"):
        Settings()
    monkeypatch.setenv("MODELPORT_STORAGE_S3_BUCKET", "models")
    monkeypatch.setenv("MODELPORT_STORAGE_S3_ACCESS_KEY_ID", "only-the-id")
    with pytest.raises(ValidationError, match="MODELPORT_STORAGE_S3_SECRET_ACCESS_KEY"):
        Settings()
    monkeypatch.setenv("MODELPORT_STORAGE_S3_SECRET_ACCESS_KEY", "and-the-secret")
    monkeypatch.setenv("MODELPORT_STORAGE_S3_ENDPOINT_URL", "http://minio:9000")
    storage = Settings().storage
    assert (storage.backend, storage.s3_bucket, storage.s3_endpoint_url) == ("s3", "models", "http://minio:9000")
    assert "and-the-secret" not in repr(storage)
    store = make_object_store(storage, local_root="/nonexistent")
    assert isinstance(store, S3ObjectStore)
    assert (store.bucket, store.part_size) == ("models", 8 * MIB)
    assert store.client.meta.endpoint_url == "http://minio:9000"
    monkeypatch.setenv("MODELPORT_STORAGE_BACKEND", "gcs")
    with pytest.raises(ValidationError):
        Settings()
