"""The service as a test drives it: its settings on a test database, the admin key, and job specs."""

from __future__ import annotations

import json
from pathlib import Path

from fastapi.testclient import TestClient

from domain.config import DatabaseSettings, LimitSettings, Settings, StorageSettings

ADMIN_KEY = "test-admin-key"

# A resnet18 export of about 15 s with 32 validation samples: long enough to act on a
# stage while it runs (cancel it, kill its worker).
SLOW_RESNET18 = {
    "architecture": {"name": "torchvision.models.resnet18", "kwargs": {"num_classes": 10}},
    "inputs": [{"name": "input", "shape": [1, 3, 224, 224], "dtype": "float32"}],
    "targets": ["onnx"],
    "validation_samples": 32,
}


def make_settings(db_url: str, data_dir: Path, **limits: int | bool) -> Settings:
    """The service's settings on ``db_url``, files under ``data_dir``, ``limits`` overridden."""
    return Settings(
        data_dir=data_dir,
        api_key=ADMIN_KEY,
        database=DatabaseSettings(DATABASE_URL=db_url),
        storage=StorageSettings(local_root=str(data_dir / "objects")),
        limits=LimitSettings(**limits),
    )


# A squeezenet1_1 state dict (the ``squeezenet_pth`` fixture) at 1x3x64x64.
SPEC = {
    "architecture": {"name": "torchvision.models.squeezenet1_1", "kwargs": {"num_classes": 10}},
    "inputs": [{"name": "input", "shape": [1, 3, 64, 64], "dtype": "float32"}],
}


def submit(
    client: TestClient,
    auth: dict[str, str],
    model: bytes,
    spec: dict | str = SPEC,
    headers: dict[str, str] | None = None,
    **files: tuple[str, bytes],
):  # type: ignore[no-untyped-def]
    """POST /v1/jobs as a client does: the spec as a form field, the model (and ``files``) as parts."""
    spec_text = spec if isinstance(spec, str) else json.dumps(spec)
    return client.post(
        "/v1/jobs",
        headers={**auth, **(headers or {})},
        data={"spec": spec_text},
        files={"model": ("model.pth", model), **files},
    )


def assert_problem(response, status: int, code: str) -> dict:  # type: ignore[no-untyped-def]
    """``response`` is a problem+json of ``status`` with ``code``; returns its body."""
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/problem+json")
    body = response.json()
    assert body["code"] == code, body
    assert body["status"] == status
    assert body["detail"]
    assert body["title"]
    return body
