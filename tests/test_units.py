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
from worker.celery_app import celery_app
from worker.plan import plan_stages

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


def test_plan_produces_only_what_targets_need() -> None:
    names = lambda targets: [s.name for s in plan_stages({"targets": targets})]  # noqa: E731
    assert names(["onnx"]) == ["export_onnx", "report"]
    assert names(["saved_model"]) == ["export_onnx", "convert_tf", "report"]
    assert names(["onnx", "saved_model", "tflite"]) == [
        "export_onnx",
        "convert_tf",
        "validate_tflite",
        "report",
    ]


def test_queue_time_limits_are_ordered() -> None:
    conf = celery_app.conf
    assert conf.task_acks_late
    assert conf.task_reject_on_worker_lost
    assert conf.worker_prefetch_multiplier == 1
    assert conf.task_soft_time_limit < conf.task_time_limit < conf.broker_transport_options["visibility_timeout"]
