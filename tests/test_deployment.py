"""The deployment files, checked by structure (no Docker engine on these machines)."""

from __future__ import annotations

import re
from pathlib import Path

import yaml

from worker.toolchains import TOOLCHAINS

ROOT = Path(__file__).resolve().parent.parent


def compose() -> dict:
    return yaml.safe_load((ROOT / "docker-compose.yml").read_text())


def test_every_long_running_service_has_a_healthcheck_and_waits_for_health() -> None:
    services = compose()["services"]
    for name, service in services.items():
        if name == "migrate":
            assert service.get("restart") == "no"
            continue
        assert "healthcheck" in service, name
        for dependency, condition in service.get("depends_on", {}).items():
            expected = "service_completed_successfully" if dependency == "migrate" else "service_healthy"
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
