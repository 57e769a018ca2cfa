"""Running stages as the worker runs them, for the stage tests (named so that no module
of this folder shadows the `stages` package for the scripts run from here).

The test process itself needs no framework: models are written by the torch environment
(``make_models.py`` and the scripts of ``models.py``) and every stage runs as
``<env>/bin/python -m stages <name> <request.json> <result.json>``. The interpreters come
from ``testkit.toolchains`` (built environments, or the ``MODELPORT_*_PYTHON`` overrides).
"""

from __future__ import annotations

import json
import os
import subprocess
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from domain.toolchains import stages_pythonpath
from tests.support.toolchain import toolchain_python

SUPPORT = Path(__file__).resolve().parent  # the model-writing scripts live here
STAGE_TIMEOUT = 600
ALLOW_TORCHVISION = {"allowed_architectures": ["torchvision.models."]}


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


def run_chain(
    work: Path,
    model: Path,
    spec: dict[str, Any],
    converter: tuple[str, str] = ("onnx-tf", "convert.onnx_tf"),
    options: dict[str, Any] | None = None,
) -> dict[str, StageRun]:
    """export.prepare -> ``converter`` (toolchain env, stage entry) -> validate.tflite; each must succeed.

    ``options`` go to export.prepare, and to the converter when it reads the PyTorch model
    (convert.litert_torch) rather than the ONNX file. Returns {"prepare", "convert", "validate"}.
    """
    env, entry = converter
    prepare = run_stage("torch", "export.prepare", work / "prepare", {"model": model}, spec, options)
    assert prepare.ok, prepare.result
    shared = {"samples": prepare.output("samples"), "reference": prepare.output("reference")}
    if entry == "convert.litert_torch":
        convert = run_stage(env, entry, work / "convert", {"model": model, **shared}, spec, options)
    else:
        convert = run_stage(env, entry, work / "convert", {"onnx": prepare.output("onnx"), **shared}, spec)
    assert convert.ok, convert.result
    tflite = {"tflite": convert.output("tflite_float32"), **shared}
    validate = run_stage("torch", "validate.tflite", work / "validate", tflite, spec)
    assert validate.ok, validate.result
    return {"prepare": prepare, "convert": convert, "validate": validate}


def float32_metrics(chain: Mapping[str, Any]) -> dict[str, Any]:
    """validate.tflite's metrics of a chain's float32 .tflite."""
    metrics: dict[str, Any] = chain["validate"].result["metrics"]["tflite_float32"]
    return metrics


def assert_builtin_float32_pass(chain: Mapping[str, Any], tolerance: float) -> dict[str, Any]:
    """A chain's converter wrote one float32 .tflite with TFLite builtin ops only, and stock
    LiteRT ran it within ``tolerance`` (max_abs / scale) on real, non-zero outputs; its metrics."""
    convert, metrics = chain["convert"], float32_metrics(chain)
    assert convert.result["outputs"] == {"tflite_float32": "model_float32.tflite"}
    assert convert.result["info"]["requires_flex"] is False
    assert metrics["verdict"] == "pass", metrics["reasons"]
    for output in metrics["outputs"].values():
        assert output["scale"] > 1e-3  # real numbers, not a model that outputs zeros
        assert output["max_abs"] <= tolerance * output["scale"]
    assert metrics["operators"]["flex"] == []
    assert metrics["operators"]["custom"] == []
    assert metrics["requires_flex"] is False
    return metrics


def prepare_spec(model_format: str, **changes: Any) -> dict[str, Any]:
    """A normalized job spec as export.prepare receives it; ``changes`` override fields."""
    spec: dict[str, Any] = {
        "model_format": model_format,
        # No saved_model: onnx2tf writes one (and imports TensorFlow) only when asked, and
        # the stage tests that check it ask (tests/stages/test_saved_model.py, matrix rows).
        "targets": ["onnx", "tflite"],
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


def torch_env() -> dict[str, str]:
    """The environment of a model-writing script: no GPU, and the repository on the path
    (``testkit.families`` holds the tiny models' configs)."""
    return {**os.environ, "CUDA_VISIBLE_DEVICES": "", "PYTHONPATH": stages_pythonpath()}


def make_torch_models(script: str, out: Path, *args: str) -> dict[str, Path]:
    """Run a model-building script in the torch env (``sys.argv[1:]`` = ``out``, ``args``);
    it prints {name: path} as its last line."""
    proc = subprocess.run(
        [str(toolchain_python("torch")), "-c", script, str(out), *args],
        capture_output=True,
        text=True,
        env=torch_env(),
        timeout=STAGE_TIMEOUT,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    return {name: Path(path) for name, path in json.loads(proc.stdout.strip().splitlines()[-1]).items()}


def make_stage_models(out: Path) -> dict[str, Path]:
    """The shared tiny models and hostile files of ``make_models.py``; ``marker`` is the file
    the malicious pickle would create if it were ever unpickled."""
    marker = out / "MARKER-unpickled"
    proc = subprocess.run(
        [str(toolchain_python("torch")), str(SUPPORT / "make_models.py"), str(out / "files"), str(marker)],
        capture_output=True,
        text=True,
        env=torch_env(),
        timeout=STAGE_TIMEOUT,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    files = {name: Path(path) for name, path in json.loads(proc.stdout.strip().splitlines()[-1]).items()}
    files["marker"] = marker
    return files
