from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from app.main import create_app
from domain.config import Settings
from domain.migrate import upgrade
from tests.support.api import ADMIN_KEY, make_settings
from tests.support.db import sqlite_url, throwaway_postgres
from tests.support.redis_dbs import api_redis_url
from tests.support.toolchain import torch_script

# Tests use their own Redis database (one per test process) and queue names, so a `make run` on the same machine
# never sees (or eats) a test's tasks. Read when a test builds its Settings (nothing reads
# settings at import), and inherited by the workers the tests start.
os.environ.setdefault("REDIS_URL", api_redis_url())
os.environ.setdefault("MODELPORT_QUEUE_PREFIX", f"test-{uuid.uuid4().hex[:8]}-")


@pytest.fixture(params=["sqlite", "postgresql"])
def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """Each API/database test runs on both databases, with the schema built by the migrations."""
    if request.param == "sqlite":
        url = sqlite_url(tmp_path)
        upgrade(url)
        yield url
    else:
        with throwaway_postgres() as url:
            upgrade(url)
            yield url


@pytest.fixture
def settings(db_url: str, tmp_path: Path) -> Settings:
    return make_settings(db_url, tmp_path / "data")


@pytest.fixture
def client(settings: Settings) -> Iterator[TestClient]:
    """The real app on a real database; the broker is a private Redis DB nobody consumes."""
    with TestClient(create_app(settings)) as test_client:
        yield test_client


@pytest.fixture
def auth() -> dict[str, str]:
    return {"Authorization": f"Bearer {ADMIN_KEY}"}


@pytest.fixture(scope="session")
def models_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("models")


@pytest.fixture(scope="session")
def resnet18_pth(models_dir: Path) -> Path:
    path = models_dir / "resnet18_10.pth"
    torch_script("state_dict", "resnet18", str(path), "--kwargs", '{"num_classes": 10}')
    return path


@pytest.fixture(scope="session")
def squeezenet_pth(models_dir: Path) -> Path:
    path = models_dir / "squeezenet10.pth"
    torch_script("state_dict", "squeezenet1_1", str(path), "--kwargs", '{"num_classes": 10}')
    return path
