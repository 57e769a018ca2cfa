"""Stage tests: real stage processes in the real toolchain interpreters.

The test process itself needs no framework: models are written by the torch
environment (``make_models.py``) and every stage runs as
``<env>/bin/python -m stages <name> <request.json> <result.json>``, as the worker
runs it. The interpreters come from ``domain.toolchains``, or from
``MODELPORT_TORCH_PYTHON`` / ``MODELPORT_ONNX_TF_PYTHON`` when set.
"""

from __future__ import annotations

import json
import os
import subprocess
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from domain.toolchains import TOOLCHAINS, stages_pythonpath

HERE = Path(__file__).resolve().parent
ENV_OVERRIDES = {
    "torch": "MODELPORT_TORCH_PYTHON",
    "onnx-tf": "MODELPORT_ONNX_TF_PYTHON",
    "onnx2tf": "MODELPORT_ONNX2TF_PYTHON",
}
STAGE_TIMEOUT = 600


def toolchain_python(name: str) -> Path:
    """The interpreter of a toolchain environment; fails when none is built (make test builds them)."""
    override = os.environ.get(ENV_OVERRIDES.get(name, "-"))
    if override:
        return Path(override)
    toolchain = TOOLCHAINS[name]
    try:
        ready = toolchain.is_ready()
    except OSError:  # no lock file yet, so no environment either
        ready = False
    if not ready:
        pytest.fail(f"toolchain {name!r} is not built (make envs) and no override is set")
    return toolchain.interpreter


@dataclass
class StageRun:
    returncode: int
    result: dict[str, Any]
    log: str
    output_dir: Path

    @property
    def ok(self) -> bool:
        return bool(self.result.get("ok"))

    @property
    def error_code(self) -> str | None:
        return (self.result.get("error") or {}).get("code")

    def output(self, name: str) -> Path:
        return self.output_dir / self.result["outputs"][name]


def run_stage(
    toolchain: str,
    stage: str,
    work_dir: Path,
    inputs: Mapping[str, str | Path],
    spec: dict[str, Any],
    options: dict[str, Any] | None = None,
) -> StageRun:
    """Run one stage through the JSON contract; the directory keeps request, result and log."""
    work_dir.mkdir(parents=True, exist_ok=True)
    request = {
        "stage": stage,
        "inputs": {name: str(path) for name, path in inputs.items()},
        "spec": spec,
        "options": options or {},
        "output_dir": str(work_dir / "out"),
    }
    (work_dir / "request.json").write_text(json.dumps(request))
    env = {
        **os.environ,
        "PYTHONPATH": stages_pythonpath(),
        "CUDA_VISIBLE_DEVICES": "",
        "OMP_NUM_THREADS": "1",
    }
    proc = subprocess.run(
        [str(toolchain_python(toolchain)), "-m", "stages", stage, "request.json", "result.json"],
        cwd=work_dir,
        capture_output=True,
        text=True,
        env=env,
        timeout=STAGE_TIMEOUT,
    )
    log = proc.stdout + proc.stderr
    (work_dir / "stage.log").write_text(log)
    result_path = work_dir / "result.json"
    assert result_path.is_file(), f"{stage} wrote no result (exit {proc.returncode}):\n{log[-3000:]}"
    return StageRun(proc.returncode, json.loads(result_path.read_text()), log, work_dir / "out")


def prepare_spec(model_format: str, **changes: Any) -> dict[str, Any]:
    """A normalized job spec as export.prepare receives it; ``changes`` override fields."""
    spec: dict[str, Any] = {
        "model_format": model_format,
        "opset": None,
        "exporter": "auto",
        "toolchain": "auto",
        "tolerance": {"float32": 1e-4},
        "validation_samples": 4,
        "seed": 0,
    }
    spec.update(changes)
    return spec


def image_spec(constructor: str, size: int = 64, **changes: Any) -> dict[str, Any]:
    """A job spec for an image classifier with one NCHW input and a dynamic batch."""
    spec = prepare_spec(
        "state_dict",
        architecture={"name": constructor, "kwargs": {"num_classes": 10}},
        inputs=[{"name": "input", "shape": ["batch", 3, size, size], "dtype": "float32"}],
        toolchain="onnx-tf",
    )
    spec.update(changes)
    return spec


ALLOW_TORCHVISION = {"allowed_architectures": ["torchvision.models."]}


@pytest.fixture(scope="session")
def stage_models(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Tiny models (and hostile files) written once per session by the torch environment."""
    out = tmp_path_factory.mktemp("stage-models")
    marker = out / "MARKER-unpickled"
    proc = subprocess.run(
        [str(toolchain_python("torch")), str(HERE / "make_models.py"), str(out / "files"), str(marker)],
        capture_output=True,
        text=True,
        env={**os.environ, "CUDA_VISIBLE_DEVICES": ""},
        timeout=STAGE_TIMEOUT,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    files = {name: Path(path) for name, path in json.loads(proc.stdout.strip().splitlines()[-1]).items()}
    files["marker"] = marker
    return files


def make_torch_models(script: str, out: Path) -> dict[str, Path]:
    """Run a model-building script in the torch env; it prints {name: path} as its last line."""
    proc = subprocess.run(
        [str(toolchain_python("torch")), "-c", script, str(out)],
        capture_output=True,
        text=True,
        env={**os.environ, "CUDA_VISIBLE_DEVICES": ""},
        timeout=STAGE_TIMEOUT,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    return {name: Path(path) for name, path in json.loads(proc.stdout.strip().splitlines()[-1]).items()}
