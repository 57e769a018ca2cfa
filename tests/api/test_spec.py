"""The job spec at submission (app/services/jobs.py parse_spec): defaults and refusals."""

from __future__ import annotations

import json

import pytest

from app.core.errors import InvalidRequest
from app.services.jobs import parse_spec

BASE = {
    "architecture": {"name": "torchvision.models.resnet18"},
    "inputs": [{"name": "x", "shape": [1, 3, 8, 8]}],
}


def test_spec_defaults_follow_the_design() -> None:
    spec = parse_spec(json.dumps(BASE))
    assert spec.model_format == "auto"
    assert spec.toolchain == "auto"
    assert spec.layout == "nchw"
    assert spec.targets == ["onnx", "saved_model", "tflite"]
    assert spec.quantization == ["float32"]
    assert spec.effective_tolerance()["float32"] == 1e-4


@pytest.mark.parametrize(
    "patch",
    [
        {"inputs": [{"name": "x", "shape": [1, 0]}]},
        {"inputs": [{"name": "bad name", "shape": [1]}]},
        {"inputs": [{"name": "x", "shape": [1]}, {"name": "x", "shape": [1]}]},
        {"inputs": [{"name": "x", "shape": [1], "range": [1, 0]}]},
        {"architecture": {"name": "resnet18"}},
        {"quantization": ["int4"]},
        {"targets": []},
        {"tolerance": {"float32": 2}},
        {"opset": 3},
    ],
)
def test_spec_rejections(patch: dict) -> None:
    with pytest.raises(InvalidRequest) as error:
        parse_spec(json.dumps({**BASE, **patch}))
    assert error.value.instance_code == "invalid_spec"


def test_named_dynamic_dimensions_are_accepted() -> None:
    spec = parse_spec(json.dumps({**BASE, "inputs": [{"name": "x", "shape": ["batch", 3, 8, 8]}]}))
    assert spec.inputs[0].shape[0] == "batch"
