"""The request file as a stage reads it: a typed spec, typed options, the same JSON."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pytest

from stages.kit.contract import StageError, StageRequest
from stages.kit.options import OperatorOptions, QuantizeOptions, RuntimeOptions, read_options
from stages.kit.spec import PlanSpec


def write(tmp_path: Path, spec: dict[str, Any], options: dict[str, Any] | None = None) -> Path:
    path = tmp_path / "request.json"
    request = {"stage": "export.prepare", "inputs": {}, "spec": spec, "options": options or {}, "output_dir": "/o"}
    path.write_text(json.dumps(request))
    return path


def test_the_spec_the_worker_writes_reads_back_typed_and_unchanged(tmp_path: Path) -> None:
    stored = PlanSpec.from_json({"inputs": [{"name": "x", "shape": ["batch", 3], "dtype": "float32"}]}).to_json()
    written = {**stored, "onnx_consumers": ["onnx2tf", "onnx-tf"]}  # as worker.execute adds it for the export
    request = StageRequest.read(write(tmp_path, written))
    assert request.spec.onnx_consumers == ("onnx2tf", "onnx-tf")
    assert request.spec.inputs[0].shape == ("batch", 3)
    assert request.spec.to_json() == written
    assert "onnx_consumers" not in PlanSpec.from_json(stored).to_json()


def test_a_partial_spec_takes_the_job_spec_defaults(tmp_path: Path) -> None:
    spec = StageRequest.read(write(tmp_path, {"seed": 3})).spec
    assert (spec.model_format, spec.layout, spec.seed, spec.validation_samples) == ("state_dict", "nchw", 3, 8)
    assert spec.tolerance["float32"] == 1e-4


def test_a_spec_of_the_wrong_shape_is_invalid_spec(tmp_path: Path) -> None:
    with pytest.raises(StageError) as caught:
        StageRequest.read(write(tmp_path, {"opset": "seventeen"}))
    assert caught.value.code == "invalid_spec"
    assert "seventeen" in caught.value.message


def test_options_keep_defaults_for_missing_or_null_keys_and_ignore_others() -> None:
    raw = {"threads": 2, "allowed_architectures": None, "precision": "int8", "runs": 1, "warmup": 0}
    assert read_options(OperatorOptions, raw) == OperatorOptions(threads=2)
    runtime = read_options(RuntimeOptions, raw)
    assert (runtime.precision, runtime.runs, runtime.warmup, runtime.xnnpack) == ("int8", 1, 0, True)
    job = runtime.job(Path("m.tflite"), Path("s.npz"), ["x"], ["y"])
    assert job.threads_all == (os.cpu_count() or 1)
    assert job.to_json(Path("/w"))["input_transposes"] == {}


def test_quantize_options_carry_the_runtime_options() -> None:
    options = QuantizeOptions.from_json({"precisions": ["int8"], "xnnpack": False, "calibration_limit": 5})
    assert options.precisions == ["int8"]
    assert options.calibration_limit == 5
    assert options.runtime.xnnpack is False
    assert options.runtime.once().runs == 1
