"""The deployment files, checked by structure (no Docker engine on these machines)."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from app.local import WORKER_APP
from domain.config import Settings, StorageSettings
from domain.toolchains import TOOLCHAINS

ROOT = Path(__file__).resolve().parents[2]
# Run once to completion before the services that need them: migrations, the bucket.
ONE_SHOT = {"migrate", "buckets"}


def compose() -> dict:
    return yaml.safe_load((ROOT / "docker-compose.yml").read_text())


def test_every_long_running_service_has_a_healthcheck_and_waits_for_health() -> None:
    services = compose()["services"]
    for name, service in services.items():
        if name in ONE_SHOT:
            assert service.get("restart") == "no"
        else:
            assert "healthcheck" in service, name
        for dependency, condition in service.get("depends_on", {}).items():
            expected = "service_completed_successfully" if dependency in ONE_SHOT else "service_healthy"
            assert condition["condition"] == expected, (name, dependency)


def test_one_worker_service_and_image_per_toolchain() -> None:
    services = compose()["services"]
    dockerfile = (ROOT / "Dockerfile").read_text()
    targets = set(re.findall(r"^FROM \S+ AS (\S+)$", dockerfile, flags=re.MULTILINE))
    for name in TOOLCHAINS:
        assert f"worker-{name}" in services, name
        assert f"worker-{name}" in targets, name
        assert f"worker.envs build {name}" in dockerfile, name
        assert TOOLCHAINS[name].lock_file.is_file()
    assert "worker-control" in services
    assert "control" in targets


def test_images_install_from_the_same_lock_files() -> None:
    dockerfile = (ROOT / "Dockerfile").read_text()
    assert "-r locks/control.txt" in dockerfile
    for lock in (ROOT / "locks").glob("*.txt"):
        pins = [line for line in lock.read_text().splitlines() if line and not line.startswith("#")]
        assert pins, lock.name
        assert all("==" in line for line in pins), lock.name


def _interpolate(value: str) -> str:
    """Compose's ${VAR:-default} / ${VAR:?message} with nothing set: the default, or a placeholder."""
    return re.sub(r"\$\{(\w+):([-?])([^}]*)\}", lambda m: m.group(3) if m.group(2) == "-" else "<required>", value)


def test_api_and_workers_use_the_minio_bucket() -> None:
    services = compose()["services"]
    assert "healthcheck" in services["minio"]
    assert services["buckets"]["depends_on"] == {"minio": {"condition": "service_healthy"}}
    creates = " ".join(services["buckets"]["command"])
    assert "mc mb --ignore-existing" in creates
    assert "minio:9000" in creates
    users = ["api", "worker-control", *(f"worker-{name}" for name in TOOLCHAINS)]
    for name in users:
        service = services[name]
        env = service["environment"]
        assert env["MODELPORT_STORAGE_BACKEND"] == "s3", name
        assert env["MODELPORT_STORAGE_S3_ENDPOINT_URL"] == "http://minio:9000", name
        # The bucket the one-shot service creates is the one the app is given.
        assert env["MODELPORT_STORAGE_S3_BUCKET"] == services["buckets"]["environment"]["BUCKET"], name
        assert services[name]["depends_on"]["buckets"]["condition"] == "service_completed_successfully", name
        assert services[name]["depends_on"]["minio"]["condition"] == "service_healthy", name
        # Every storage variable is a real setting, and together they pass the settings' checks.
        storage_env = {k: _interpolate(str(v)) for k, v in env.items() if k.startswith("MODELPORT_STORAGE_")}
        for variable in storage_env:
            assert variable.removeprefix("MODELPORT_STORAGE_").lower() in StorageSettings.model_fields, variable
        fields = {k.removeprefix("MODELPORT_STORAGE_").lower(): v for k, v in storage_env.items()}
        assert StorageSettings.model_validate(fields).backend == "s3"


def test_no_default_object_store_secret() -> None:
    services = compose()["services"]
    secret = services["api"]["environment"]["MODELPORT_STORAGE_S3_SECRET_ACCESS_KEY"]
    assert secret.startswith("${MINIO_ROOT_PASSWORD:?"), secret
    assert services["minio"]["environment"]["MINIO_ROOT_PASSWORD"] == secret


def test_the_api_is_ready_only_with_workers_and_no_worker_waits_for_the_api() -> None:
    # /readyz answers 503 until a worker consumes every queue: a worker that waited for the
    # API's health would never start.
    services = compose()["services"]
    api_check = services["api"]["healthcheck"]
    assert "http://127.0.0.1:8000/readyz" in api_check["test"]
    assert "start_period" in api_check

    def waits_for(name: str) -> set[str]:
        direct = set(services[name].get("depends_on", {}))
        return direct.union(*(waits_for(dependency) for dependency in direct))

    workers = ["worker-control", *(f"worker-{name}" for name in TOOLCHAINS)]
    for worker in workers:
        assert "api" not in waits_for(worker), worker


def test_every_worker_command_loads_the_worker_entry_point() -> None:
    # Celery's CLI loads an app instance by name: worker.main builds it (with the tasks) from
    # the environment. worker.celery_app has no app at module level any more.
    services = compose()["services"]
    dockerfile = (ROOT / "Dockerfile").read_text()
    commands = re.findall(r"^CMD \[(.*?)\]$", dockerfile, flags=re.DOTALL | re.MULTILINE)
    celery_cmds = [cmd for cmd in commands if '"celery"' in cmd]
    assert len(celery_cmds) == len(TOOLCHAINS)
    assert all('"-A", "worker.main", "worker"' in cmd for cmd in celery_cmds), celery_cmds
    control = services["worker-control"]["command"]
    assert control[:4] == ["celery", "-A", "worker.main", "worker"]
    for name in ["worker-control", *(f"worker-{toolchain}" for toolchain in TOOLCHAINS)]:
        check = " ".join(services[name]["healthcheck"]["test"])
        assert "celery -A worker.main inspect ping" in check, name
    assert WORKER_APP == "worker.main"


def test_the_worker_entry_point_is_an_app_with_the_tasks() -> None:
    script = (
        "from celery.app.utils import find_app; from worker.celery_app import RUN_STAGE_TASK, RECONCILE_TASK, "
        "RETENTION_TASK; app = find_app('worker.main'); "
        "print(app.main, app.conf.task_default_queue, sorted(n for n in app.tasks if n.startswith('modelport.')))"
    )
    env = {**os.environ, "PYTHONPATH": str(ROOT), "MODELPORT_QUEUE_PREFIX": "entry-"}
    result = subprocess.run([sys.executable, "-c", script], cwd=ROOT, env=env, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == [
        "modelport",
        "entry-control",
        "['modelport.deliver_webhooks',",
        "'modelport.expire',",
        "'modelport.reconcile',",
        "'modelport.run_stage']",
    ]


def test_the_compose_services_pass_the_production_checks(monkeypatch: pytest.MonkeyPatch) -> None:
    services = compose()["services"]
    for name in ["api", "migrate", "worker-control", *(f"worker-{toolchain}" for toolchain in TOOLCHAINS)]:
        env = {key: _interpolate(str(value)) for key, value in services[name]["environment"].items()}
        assert env["MODELPORT_ENVIRONMENT"] == "production", name
        if "MODELPORT_API_KEY" in env:
            env["MODELPORT_API_KEY"] = "k" * 64  # the operator's own (required, no default)
        with monkeypatch.context() as patch:
            for key, value in env.items():
                patch.setenv(key, value)
            settings = Settings()
        assert settings.environment == "production", name
        assert settings.database_url.startswith("postgresql"), name
