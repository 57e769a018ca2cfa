"""The import boundaries (import-linter contracts in pyproject.toml) and import-time purity."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = ("app", "worker", "domain", "stages")
LINT_IMPORTS = str(Path(sys.executable).parent / "lint-imports")


def contracts() -> list[str]:
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())
    return [contract["name"] for contract in config["tool"]["importlinter"]["contracts"]]


def lint_imports(root: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": str(root)}  # this tree's packages, not an installed copy
    return subprocess.run([LINT_IMPORTS, "--no-cache"], cwd=root, env=env, capture_output=True, text=True, timeout=120)


def one_line(text: str) -> str:
    return " ".join(text.split())  # lint-imports wraps long contract names


def test_the_tree_keeps_every_import_contract() -> None:
    result = lint_imports(ROOT)
    assert result.returncode == 0, result.stdout + result.stderr
    output = one_line(result.stdout)
    names = contracts()
    assert len(names) >= 7
    for name in names:
        assert f"{name} KEPT" in output, name
    assert f"Contracts: {len(names)} kept, 0 broken." in output


# One import per contract that the contract refuses: (file, line added, contract broken).
VIOLATIONS = [
    ("domain/config.py", "import celery", "The domain imports neither"),
    ("domain/toolchains.py", "import fastapi", "The domain imports neither"),
    ("app/api/routes/health.py", "from worker import tasks", "The API reaches the worker only"),
    ("app/services/jobs.py", "from starlette.requests import Request", "Services speak no HTTP"),
    ("worker/celery_app.py", "from worker import context", "The Celery factory imports nothing"),
    ("worker/pipeline.py", "import worker.main", "Nothing imports the worker's entry point"),
    ("stages/__init__.py", "import domain", "Stages are framework-free"),
    ("worker/runner.py", "from app.services import jobs", "Top packages depend downwards only"),
]


@pytest.mark.parametrize(("path", "line", "contract"), VIOLATIONS, ids=[v[0] + ":" + v[1] for v in VIOLATIONS])
def test_a_forbidden_import_breaks_its_contract(tmp_path: Path, path: str, line: str, contract: str) -> None:
    for package in PACKAGES:
        shutil.copytree(ROOT / package, tmp_path / package, ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(ROOT / "pyproject.toml", tmp_path / "pyproject.toml")
    target = tmp_path / path
    target.write_text(target.read_text() + f"\n{line}  # noqa\n")

    result = lint_imports(tmp_path)

    assert result.returncode == 1, result.stdout + result.stderr
    output = one_line(result.stdout)
    broken = [name for name in contracts() if f"{name} BROKEN" in output]
    assert any(name.startswith(contract) for name in broken), (broken, output[-2000:])


def test_importing_the_code_reads_no_settings_and_builds_no_celery_app() -> None:
    # A setting that fails validation: any import that read the settings would raise.
    script = """
import importlib, pkgutil
import celery._state
import app, domain, worker
from domain.config import get_settings
for package in (app, domain, worker):
    for module in pkgutil.walk_packages(package.__path__, package.__name__ + "."):
        if module.name != "worker.main":  # the entry point: building the app is its job
            importlib.import_module(module.name)
assert get_settings.cache_info().currsize == 0, "get_settings() ran at import"
assert not list(celery._state._apps), "a Celery app was built at import"
import worker.main
"""
    env = {**os.environ, "PYTHONPATH": str(ROOT), "MODELPORT_MAX_UPLOAD_BYTES": "not-a-number"}
    result = subprocess.run([sys.executable, "-c", script], cwd=ROOT, env=env, capture_output=True, text=True)
    # Only the entry point's import reads the settings (and so fails here, on the bad value).
    assert result.returncode == 1
    assert 'File "<string>", line 12' in result.stderr, result.stderr
    assert "max_upload_bytes" in result.stderr, result.stderr


@pytest.mark.parametrize("package", [*PACKAGES, "tests", "bench"])
def test_each_top_folder_says_in_one_line_what_lives_there(package: str) -> None:
    init = (ROOT / package / "__init__.py").read_text()
    assert init.startswith('"""'), package
    first = init.removeprefix('"""').splitlines()[0]
    assert first.endswith(('."""', ".")), (package, first)
    assert len(first) > 20, (package, first)
