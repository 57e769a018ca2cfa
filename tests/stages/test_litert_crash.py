"""validate.tflite survives the runtime: an int8 resnet18 from the onnx-tf chain makes
LiteRT's reference kernels SIGABRT (and XNNPACK refuse it). Either is the artifact's
``fail`` verdict with the reason, from a stage that itself succeeds.
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from tests.support.stage_runner import STAGE_TIMEOUT, SUPPORT, StageRun, image_spec, run_stage
from tests.support.toolchain import toolchain_python


@pytest.fixture(scope="module")
def int8_resnet(stage_models: dict[str, Path], tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    work = tmp_path_factory.mktemp("int8-resnet")
    spec = image_spec("torchvision.models.resnet18", size=32)
    prepare = run_stage("torch", "export.prepare", work / "prepare", {"model": stage_models["resnet18"]}, spec)
    assert prepare.ok, prepare.result
    shared = {"samples": prepare.output("samples"), "reference": prepare.output("reference")}
    convert = run_stage(
        "onnx-tf", "convert.onnx_tf", work / "convert", {"onnx": prepare.output("onnx"), **shared}, spec
    )
    assert convert.ok, convert.result
    tflite = work / "model_int8.tflite"
    proc = subprocess.run(
        [
            str(toolchain_python("onnx-tf")),
            str(SUPPORT / "make_int8.py"),
            str(convert.output("saved_model")),
            str(shared["samples"]),
            str(tflite),
        ],
        capture_output=True,
        text=True,
        timeout=STAGE_TIMEOUT,
        env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"},
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    return {"tflite": tflite, **shared, "work": work}


def validate(files: dict[str, Path], name: str, xnnpack: bool) -> StageRun:
    spec = image_spec("torchvision.models.resnet18", size=32)
    inputs = {key: files[key] for key in ("tflite", "samples", "reference")}
    options = {"precision": "int8", "xnnpack": xnnpack, "runs": 3}
    return run_stage("torch", "validate.tflite", files["work"] / name, inputs, spec, options)


def test_a_runtime_crash_is_the_verdict_not_a_lost_stage(int8_resnet: dict[str, Path]) -> None:
    run = validate(int8_resnet, "reference-kernels", xnnpack=False)
    assert run.returncode == 0
    assert run.ok
    metrics = run.result["metrics"]["tflite_int8"]
    assert metrics["verdict"] == "fail"
    assert metrics["reasons"] == ["runtime crashed with signal SIGABRT"]
    assert run.result["info"]["crashed"] == "SIGABRT"
    assert run.result["info"]["input_map"] == {"input": "input"}  # learnt before the crash
    # What does not need the runtime is still reported.
    assert metrics["size_bytes"] == int8_resnet["tflite"].stat().st_size
    assert "CONV_2D" in metrics["operators"]["builtin"]
    assert metrics["latency_ms"] is None


def test_a_runtime_error_is_the_verdict_too(int8_resnet: dict[str, Path]) -> None:
    run = validate(int8_resnet, "xnnpack", xnnpack=True)
    assert run.ok
    metrics = run.result["metrics"]["tflite_int8"]
    assert metrics["verdict"] == "fail"
    assert len(metrics["reasons"]) == 1
    assert metrics["reasons"][0].startswith("runtime failed: RuntimeError")
    assert "XNNPACK" in metrics["reasons"][0]
    assert run.result["info"]["crashed"] is None
