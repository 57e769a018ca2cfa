"""The client installs and imports on its own: no FastAPI, Celery, SQLAlchemy or ML framework."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
SERVER_SIDE = {
    "fastapi",
    "starlette",
    "uvicorn",
    "sqlalchemy",
    "alembic",
    "celery",
    "kombu",
    "redis",
    "boto3",
    "numpy",
    "torch",
    "tensorflow",
    "app",
    "domain",
    "worker",
    "stages",
}
IMPORTED = (
    "import json, sys, modelport, modelport.aio, modelport.cli, modelport.cli.commands, modelport.cli.render; "
    "print(json.dumps(sorted({name.split('.')[0] for name in sys.modules})))"
)


def test_import_modelport_loads_nothing_of_the_server() -> None:
    result = subprocess.run([sys.executable, "-c", IMPORTED], capture_output=True, text=True, cwd=ROOT, check=True)
    loaded = set(json.loads(result.stdout))
    assert {"modelport", "httpx", "pydantic", "tenacity", "rich"} <= loaded
    assert loaded & SERVER_SIDE == set()


def test_the_client_package_installs_alone(tmp_path: Path) -> None:
    """clients/python builds a wheel of modelport/ only; installed in a fresh venv (dependencies pinned by
    locks/control.txt) it pulls httpx, pydantic, rich and tenacity, and the command works."""
    tree = tmp_path / "src"  # a copy: the build writes build/ and *.egg-info beside its sources
    shutil.copytree(ROOT / "modelport", tree / "modelport", ignore=shutil.ignore_patterns("__pycache__"))
    (tree / "clients" / "python").mkdir(parents=True)
    shutil.copy(ROOT / "clients" / "python" / "pyproject.toml", tree / "clients" / "python")
    pip = [sys.executable, "-m", "pip", "--disable-pip-version-check", "-q"]
    subprocess.run([*pip, "wheel", "--no-deps", "-w", str(tmp_path / "dist"), str(tree / "clients" / "python")],
                   check=True, capture_output=True)  # fmt: skip
    (wheel,) = (tmp_path / "dist").glob("modelport_client-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    assert {n.split("/")[0] for n in names} == {"modelport", wheel.name.split("-py3")[0] + ".dist-info"}
    assert "modelport/schemas/job.py" in names
    assert "modelport/cli/__init__.py" in names

    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    python = venv / "bin" / "python"
    subprocess.run(
        [str(python), "-m", "pip", "install", "--disable-pip-version-check", "-q", "-c",
         str(ROOT / "locks" / "control.txt"), str(wheel)],
        check=True, capture_output=True,
    )  # fmt: skip
    listed = subprocess.run(
        [str(python), "-m", "pip", "list", "--format=json"], capture_output=True, text=True, check=True
    )
    installed = {p["name"].lower() for p in json.loads(listed.stdout)}
    assert {"modelport-client", "httpx", "pydantic", "rich", "tenacity"} <= installed
    assert installed & {"fastapi", "starlette", "sqlalchemy", "celery", "uvicorn", "torch", "numpy"} == set()

    outside = tmp_path / "elsewhere"  # not the checkout: only the installed package can be imported
    outside.mkdir()
    result = subprocess.run([str(python), "-c", IMPORTED], capture_output=True, text=True, cwd=outside, check=True)
    assert set(json.loads(result.stdout)) & SERVER_SIDE == set()
    command = venv / "bin" / "modelport"
    help_text = subprocess.run([str(command), "convert", "--help"], capture_output=True, text=True, cwd=outside)
    assert help_text.returncode == 0
    assert "--calibration" in help_text.stdout
    server = subprocess.run([str(command), "migrate"], capture_output=True, text=True, cwd=outside)
    assert server.returncode == 2
    assert "a server command" in server.stderr
