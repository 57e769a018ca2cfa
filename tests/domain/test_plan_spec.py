"""PlanSpec: the normalized spec's type keeps the stored JSON byte for byte."""

from __future__ import annotations

import json

from modelport.schemas.spec import JobSpec
from stages.kit.spec import PlanSpec


def _normalized(spec: JobSpec, model_format: str, available: list[str]) -> dict:
    # What app.services.jobs.check_spec stored before PlanSpec existed.
    normalized = spec.model_dump(mode="json")
    normalized.update(model_format=model_format, tolerance=spec.effective_tolerance(), available_toolchains=available)
    return normalized


def test_a_full_spec_round_trips_byte_for_byte():
    spec = JobSpec.model_validate(
        {
            "model_format": "state_dict",
            "architecture": {"name": "torchvision.models.resnet18", "kwargs": {"num_classes": 10}},
            "inputs": [
                {"name": "x", "shape": ["batch", 3, 32, 32], "dtype": "float32", "range": [-1, 1]},
                {"name": "ids", "shape": [1, 7], "dtype": "int64"},
            ],
            "opset": 17,
            "toolchain": "best",
            "targets": ["onnx", "tflite"],
            "quantization": ["float32", "int8", "float16"],
            "int8_io": True,
            "layout": "nhwc",
            "tolerance": {"int8": 0.05},
            "validation_samples": 3,
            "seed": 42,
            "strict": True,
        }
    )
    stored = _normalized(spec, "state_dict", ["onnx2tf", "onnx-tf"])
    typed = PlanSpec.from_json(stored)
    assert json.dumps(typed.to_json()) == json.dumps(stored)
    assert typed.inputs[0].shape == ("batch", 3, 32, 32)
    assert typed.inputs[0].range == (-1.0, 1.0)
    assert typed.quantized == ("int8", "float16")
    assert typed.tolerance_for("int8") == 0.05
    assert typed.tolerance_for("float32") == 1e-4


def test_defaults_match_the_api_schema():
    # A key an older stored spec lacks reads as JobSpec's default, so a job accepted
    # before a field existed plans exactly as it did.
    stored = _normalized(JobSpec(), "onnx", ["onnx2tf"])
    assert json.dumps(PlanSpec.from_json(stored).to_json()) == json.dumps(stored)
    bare = PlanSpec.from_json({"model_format": "onnx"}).to_json()
    del stored["available_toolchains"]
    assert bare == stored


def test_check_spec_returns_the_plan_spec_it_stores():
    from app.services.jobs import check_spec
    from domain.config import Settings
    from domain.jobs.plan import CONVERTERS

    settings = Settings()
    spec = JobSpec.model_validate(
        {"architecture": {"name": "torchvision.models.resnet18"}, "inputs": [{"name": "x", "shape": [1, 3, 8, 8]}]}
    )
    checked = check_spec(spec, "state_dict", settings)
    assert isinstance(checked, PlanSpec)
    available = [name for name in CONVERTERS if name in settings.conversion.enabled_toolchains]
    assert json.dumps(checked.to_json()) == json.dumps(_normalized(spec, "state_dict", available))
