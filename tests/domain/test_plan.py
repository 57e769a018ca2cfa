"""The stage plan (domain/jobs/plan.py): what targets need, candidate order, what each stage waits for."""

from __future__ import annotations

from domain.jobs.plan import Plan, dependencies, plan_stages
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


def test_onnx_converters_get_the_calibration_and_hand_tensorflow_s_int8_file_on_only_for_int8() -> None:
    everything = ["onnx-tf", "onnx2tf", "litert-torch"]
    int8 = Plan.of({"targets": ["tflite"], "quantization": ["float32", "int8"], "available_toolchains": everything})
    quantize = int8.stage("quantize").inputs
    for name, stage in (("onnx2tf", "convert_onnx2tf"), ("onnx-tf", "convert_onnx_tf")):
        convert = int8.stage(stage)
        assert convert.inputs["calibration"] == ("upload", "calibration")
        assert convert.options == {"tf_ptq": True}
        assert quantize[f"tflite_int8_tf_ptq_{name}"] == (stage, "tflite_int8_tf_ptq")
    assert int8.stage("convert_litert_torch").options == {}  # its int8 file is PT2E's
    assert "tflite_int8_tf_ptq_litert-torch" not in quantize
    for quantization in (["float32"], ["float32", "float16", "dynamic_range"]):
        plan = Plan.of({"targets": ["tflite"], "quantization": quantization, "available_toolchains": everything})
        for stage in ("convert_onnx2tf", "convert_onnx_tf"):
            assert "calibration" not in plan.stage(stage).inputs
            assert plan.stage(stage).options == {}
        inputs = plan.stage("quantize").inputs if "float16" in quantization else {}
        assert not any(name.startswith("tflite_int8_") for name in inputs)
    # A converter that writes only the SavedModel makes no int8 file: nothing would judge it.
    saved = Plan.of(
        {
            "targets": ["tflite", "saved_model"],
            "toolchain": "litert-torch",
            "quantization": ["float32", "int8"],
            "available_toolchains": everything,
        }
    )
    assert saved.stage("convert_onnx2tf").options == {}
    assert "calibration" not in saved.stage("convert_onnx2tf").inputs
