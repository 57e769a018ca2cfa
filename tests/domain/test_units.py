"""Unit tests of the pure parts: spec validation, format sniffing, the stage plan, the celery limits."""

from __future__ import annotations

import io
import json
import struct
import zipfile

import pytest

from app.core.errors import InvalidRequest
from app.services.jobs import parse_spec, resolve_format
from app.services.sniff import sniff_format
from domain.config import Settings
from domain.jobs.plan import dependencies, plan_stages
from domain.jobs.selection import auto_satisfied, choose, collect
from worker.celery_app import make_celery

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


def _zip(names: list[str]) -> io.BytesIO:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        for name in names:
            archive.writestr(name, b"x")
    buffer.seek(0)
    return buffer


def test_sniffing_reads_bytes_not_names() -> None:
    assert sniff_format(_zip(["archive/data.pkl", "archive/data/0", "archive/version"])) == "state_dict_or_module"
    assert sniff_format(_zip(["m/code/__torch__.py", "m/constants.pkl", "m/data.pkl"])) == "torchscript"
    assert sniff_format(_zip(["m/archive_format", "m/models/model.json"])) == "exported_program"
    header = json.dumps({"w": {"dtype": "F32", "shape": [1], "data_offsets": [0, 4]}}).encode()
    assert sniff_format(io.BytesIO(struct.pack("<Q", len(header)) + header + b"\0" * 4)) == "safetensors"
    assert sniff_format(io.BytesIO(b"\x08\x08\x12\x07pytorch")) == "onnx"
    assert sniff_format(io.BytesIO(b"\x80\x02\x8a\x0alegacy")) == "state_dict_or_module"
    assert sniff_format(io.BytesIO(b"")) is None
    assert sniff_format(io.BytesIO(b"PK\x03\x04 truncated zip")) is None
    assert sniff_format(io.BytesIO(b"hello world")) is None


def test_declared_format_must_match_the_bytes() -> None:
    assert resolve_format("auto", "safetensors") == "state_dict"
    assert resolve_format("state_dict", "state_dict_or_module") == "state_dict"
    with pytest.raises(InvalidRequest) as error:
        resolve_format("torchscript", "onnx")
    assert error.value.instance_code == "format_mismatch"
    assert "'onnx'" in error.value.detail
    with pytest.raises(InvalidRequest) as error:
        resolve_format("pickled_module", "state_dict_or_module")
    assert error.value.instance_code == "format_disabled"


def names(**spec: object) -> list[str]:
    return [s.name for s in plan_stages({"available_toolchains": ["onnx-tf"], **spec})]


def test_plan_produces_only_what_targets_need() -> None:
    assert names(targets=["onnx"]) == ["export_onnx", "report"]
    assert names(targets=["saved_model"]) == ["export_onnx", "convert_onnx_tf", "report"]
    assert names(targets=["onnx", "saved_model", "tflite"]) == [
        "export_onnx",
        "convert_onnx_tf",
        "validate_onnx_tf",
        "validate_flex_onnx_tf",
        "report",
    ]


def test_plan_tries_candidates_in_priority_order_and_quantizes_the_winner() -> None:
    everything = ["onnx-tf", "onnx2tf", "litert-torch"]
    plan = names(targets=["tflite"], available_toolchains=everything, quantization=["float32", "int8"])
    assert plan == [
        "export_onnx",
        "convert_onnx2tf",
        "validate_onnx2tf",
        "validate_flex_onnx2tf",
        "convert_litert_torch",
        "validate_litert_torch",
        "validate_flex_litert_torch",
        "convert_onnx_tf",
        "validate_onnx_tf",
        "validate_flex_onnx_tf",
        "quantize",
        "report",
    ]
    # litert-torch converts a PyTorch module: not a candidate for TorchScript or ONNX uploads.
    assert "convert_litert_torch" not in names(targets=["tflite"], available_toolchains=everything, model_format="onnx")
    # An explicit toolchain is the only candidate; the SavedModel still comes from onnx-tf.
    assert names(targets=["saved_model", "tflite"], toolchain="onnx2tf", available_toolchains=everything) == [
        "export_onnx",
        "convert_onnx_tf",
        "convert_onnx2tf",
        "validate_onnx2tf",
        "validate_flex_onnx2tf",
        "report",
    ]


def test_best_waits_only_for_what_a_stage_consumes() -> None:
    spec = {
        "targets": ["tflite"],
        "toolchain": "best",
        "quantization": ["float32", "int8"],
        "available_toolchains": ["onnx-tf", "onnx2tf", "litert-torch"],
    }
    assert dependencies(spec, "convert_onnx_tf") == ["export_onnx"]
    assert dependencies(spec, "validate_litert_torch") == ["export_onnx", "convert_litert_torch"]
    assert dependencies(spec, "validate_flex_onnx2tf") == ["export_onnx", "convert_onnx2tf", "validate_onnx2tf"]
    quantize = dependencies(spec, "quantize")
    assert {"export_onnx", "validate_flex_onnx_tf", "convert_litert_torch"} <= set(quantize)
    assert dependencies(spec, "report") == [s.name for s in plan_stages(spec)][:-1]
    # auto decides after each candidate whether the next runs: everything earlier.
    auto = {**spec, "toolchain": "auto"}
    assert dependencies(auto, "convert_onnx_tf") == [s.name for s in plan_stages(auto)][:7]


def _validated(verdict: str, flex: bool = False, latency: float = 1.0, error: float = 1e-6) -> dict:
    metrics = {
        "verdict": verdict,
        "requires_flex": flex,
        "latency_ms": {"median_1_thread": latency},
        "outputs": {"output": {"max_abs": error, "scale": 1.0}},
    }
    return {"metrics": {"tflite_float32": metrics}}


def test_selection_by_verdict_builtin_latency_error() -> None:
    spec = {"toolchain": "auto", "available_toolchains": ["onnx-tf", "onnx2tf", "litert-torch"]}
    results = {
        "convert_onnx_tf": {},
        "validate_onnx_tf": _validated("pass", flex=True),
        "convert_onnx2tf": {},
        "validate_onnx2tf": _validated("pass", latency=5.0),
        "convert_litert_torch": {},
        "validate_litert_torch": _validated("pass", latency=2.0),
    }
    # auto: the first builtin-only pass in priority order
    assert choose(spec, results).name == "onnx2tf"
    assert auto_satisfied(spec, results)
    # best: all ranked; the faster builtin-only pass wins
    assert choose({**spec, "toolchain": "best"}, results).name == "litert_torch".replace("_", "-")
    # nothing deliverable: the best of what exists (a flex pass beats a failure)
    only = {
        "convert_onnx_tf": {},
        "validate_onnx_tf": _validated("pass", flex=True),
        "convert_onnx2tf": {},
        "validate_onnx2tf": _validated("fail"),
    }
    assert choose(spec, only).name == "onnx-tf"
    assert not auto_satisfied(spec, only)
    assert choose(spec, {}) is None
    exact = {"convert_onnx2tf": {}, "validate_onnx2tf": _validated("pass", error=0.0)}
    (candidate,) = [c for c in collect(spec, exact) if c.metrics]
    assert candidate.error == 0.0


def test_queue_time_limits_are_ordered() -> None:
    conf = make_celery(Settings()).conf
    assert conf.task_acks_late
    assert conf.task_reject_on_worker_lost
    assert conf.worker_prefetch_multiplier == 1
    assert conf.task_soft_time_limit < conf.task_time_limit < conf.broker_transport_options["visibility_timeout"]
