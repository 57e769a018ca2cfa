"""The real API for the client's tests: served by uvicorn on a free port, on SQLite, without workers (a
job stays queued, so cancelling and "not ready" answers are deterministic). The end-to-end tests with
real workers use tests.support.stack instead."""

from __future__ import annotations

import pickle
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import uvicorn

from app.local import free_port
from app.main import create_app
from domain.migrate import upgrade
from tests.support.api import ADMIN_KEY, make_settings
from tests.support.db import sqlite_url

SPEC = {
    "architecture": {"name": "torchvision.models.squeezenet1_1", "kwargs": {"num_classes": 10}},
    "inputs": [{"name": "input", "shape": [1, 3, 64, 64], "dtype": "float32"}],
}


@pytest.fixture(scope="module")
def api_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    data = tmp_path_factory.mktemp("client-api")
    url = sqlite_url(data)
    upgrade(url)
    port = free_port()
    config = uvicorn.Config(
        create_app(make_settings(url, data / "data")), host="127.0.0.1", port=port, log_level="warning"
    )
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, name="client-test-api", daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        assert thread.is_alive(), "the API stopped while starting"
        assert time.monotonic() < deadline, "the API did not start in 30 s"
        time.sleep(0.05)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=15)


@pytest.fixture
def api_env(api_url: str, monkeypatch: pytest.MonkeyPatch) -> str:
    """MODELPORT_URL / MODELPORT_API_KEY pointing at the test API, as a user would set them."""
    monkeypatch.setenv("MODELPORT_URL", api_url)
    monkeypatch.setenv("MODELPORT_API_KEY", ADMIN_KEY)
    return api_url


@pytest.fixture(scope="module")
def plain_state_dict(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A state dict the API accepts at the door (a plain pickle of tensors' stand-ins, no globals):
    enough for tests whose job is never run, without starting the torch interpreter."""
    path = tmp_path_factory.mktemp("client-models") / "tiny.pth"
    path.write_bytes(pickle.dumps({"features.0.weight": [0.5] * 64, "classifier.1.bias": [0.0] * 10}, protocol=2))
    return path
