"""The stage plan (domain/jobs/plan.py): what targets need, candidate order, what each stage waits for."""

from __future__ import annotations

from domain.jobs.plan import dependencies, plan_stages
from tests.support.plans import EVERY_CANDIDATE


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
    assert plan == ["export_onnx", *EVERY_CANDIDATE, "quantize", "report"]
    # litert-torch converts a PyTorch module: not a candidate for TorchScript or ONNX uploads.
    assert "convert_litert_torch" not in names(targets=["tflite"], available_toolchains=everything, model_format="onnx")
    # An explicit toolchain is the only candidate, for the SavedModel too when it writes one.
    assert names(targets=["saved_model", "tflite"], toolchain="onnx2tf", available_toolchains=everything) == [
        "export_onnx",
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
