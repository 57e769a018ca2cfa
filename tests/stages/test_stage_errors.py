"""Errors of convert.onnx_tf and validate.tflite: stable codes, messages that say what to do."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from stages.kit.contract import EXIT_STAGE_ERROR
from tests.support.stage_runner import run_stage

SPEC = {"inputs": [{"name": "input", "shape": [1, 4], "dtype": "float32"}], "tolerance": {"float32": 1e-4}}


@pytest.fixture
def tiny_io(tmp_path: Path) -> dict[str, Path]:
    samples, reference = tmp_path / "samples.npz", tmp_path / "reference.npz"
    np.savez(samples, input=np.ones((2, 1, 4), np.float32))
    np.savez(reference, output=np.ones((2, 1, 4), np.float32))
    return {"samples": samples, "reference": reference}


@pytest.mark.parametrize(
    ("model", "fragment"),
    [("onnx_opset17", "opset 17; onnx-tf 1.10 reads up to 15"), ("onnx_custom_op", "Frobnicate")],
)
def test_onnx_tf_refuses_what_it_cannot_convert(
    stage_models: dict[str, Path], tiny_io: dict[str, Path], tmp_path: Path, model: str, fragment: str
) -> None:
    run = run_stage("onnx-tf", "convert.onnx_tf", tmp_path / "run", {"onnx": stage_models[model], **tiny_io}, SPEC)
    assert run.returncode == EXIT_STAGE_ERROR, run.log[-2000:]
    assert run.error_code == "conversion_failed"
    assert fragment in run.result["error"]["message"]


def test_litert_refuses_a_file_that_is_not_tflite(
    stage_models: dict[str, Path], tiny_io: dict[str, Path], tmp_path: Path
) -> None:
    run = run_stage("torch", "validate.tflite", tmp_path / "run", {"tflite": stage_models["garbage"], **tiny_io}, SPEC)
    assert run.returncode == EXIT_STAGE_ERROR
    assert run.error_code == "invalid_tflite"
    assert "TFL3" in run.result["error"]["message"]
