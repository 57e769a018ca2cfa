"""What the worker hands the quantize stage: every candidate's float32 .tflite as an input
(domain/jobs/plan.py) and, in its ``sources`` option, those that passed in selection order
with their input transposes (worker/execute.py)."""

from __future__ import annotations

from typing import Any

from domain.jobs.plan import Plan
from domain.jobs.records import Records
from worker.execute import Claim, _input_key, _options_from_conversion

EVERYTHING = ["onnx-tf", "onnx2tf", "litert-torch"]


def _convert(name: str, transposes: dict[str, list[int]] | None = None) -> dict[str, Any]:
    output = {"key": f"jobs/j/stages/convert_{name}/model_float32.tflite", "size": 1, "sha256": "0", "file": "m"}
    return {"outputs": {"tflite_float32": output}, "info": {"input_transposes": transposes}}


def _validated(verdict: str, latency: float, flex: bool = False) -> dict[str, Any]:
    metrics = {
        "verdict": verdict,
        "requires_flex": flex,
        "latency_ms": {"median_1_thread": latency},
        "outputs": {"output": {"max_abs": 1e-6, "scale": 1.0}},
    }
    return {"metrics": {"tflite_float32": metrics}}


RESULTS = {
    "convert_onnx2tf": _convert("onnx2tf", {"image": [0, 2, 3, 1]}),
    "validate_onnx2tf": _validated("pass", 5.0),
    "convert_litert_torch": _convert("litert_torch"),
    "validate_litert_torch": _validated("pass", 2.0),
    "convert_onnx_tf": _convert("onnx_tf"),
    "validate_onnx_tf": _validated("pass", 1.0, flex=True),
}


def _claim(toolchain: str) -> Claim:
    spec = {
        "targets": ["tflite"],
        "toolchain": toolchain,
        "quantization": ["float32", "int8"],
        "available_toolchains": EVERYTHING,
    }
    plan = Plan.of(spec)
    return Claim(plan.stage("quantize"), plan, "model", None, None, Records.of(RESULTS))


def test_the_quantize_stage_gets_every_candidates_float32_file() -> None:
    claim = _claim("auto")
    inputs = claim.definition.inputs
    assert inputs["tflite"] == ("chosen", "tflite_float32")
    for name, stage in (("onnx2tf", "convert_onnx2tf"), ("litert-torch", "convert_litert_torch")):
        assert inputs[f"tflite_{name}"] == (stage, "tflite_float32")
        assert _input_key(claim, *inputs[f"tflite_{name}"]) == RESULTS[stage]["outputs"]["tflite_float32"]["key"]


def test_sources_are_the_passing_candidates_in_selection_order() -> None:
    auto = _options_from_conversion(_claim("auto").definition, _claim("auto"))
    # auto: the chosen (first builtin-only pass by priority), then the others by priority; onnx-tf
    # needs flex ops, so it is no source.
    assert [s["candidate"] for s in auto["sources"]] == ["onnx2tf", "litert-torch"]
    assert auto["sources"][0] == {
        "input": "tflite_onnx2tf",
        "candidate": "onnx2tf",
        "passed": True,
        "input_transposes": {"image": [0, 2, 3, 1]},
    }
    assert auto["input_transposes"] == {"image": [0, 2, 3, 1]}
    best = _options_from_conversion(_claim("best").definition, _claim("best"))
    # best: by rank (the faster litert-torch file first).
    assert [s["candidate"] for s in best["sources"]] == ["litert-torch", "onnx2tf"]
    assert "input_transposes" not in best


def test_litert_torch_s_pt2e_file_reaches_the_quantize_stage_when_int8_is_asked() -> None:
    claim = _claim("auto")
    inputs = claim.definition.inputs
    assert inputs["tflite_int8_pt2e_litert-torch"] == ("convert_litert_torch", "tflite_int8_pt2e")
    # Only litert-torch converts the PyTorch module: the ONNX converters have no PT2E file.
    assert sorted(name for name in inputs if name.startswith("tflite_int8_pt2e")) == ["tflite_int8_pt2e_litert-torch"]
    stored = {"key": "jobs/j/stages/convert_litert_torch/model_int8_pt2e.tflite", "size": 1, "sha256": "0", "file": "m"}
    results = {**RESULTS, "convert_litert_torch": {**RESULTS["convert_litert_torch"]}}
    results["convert_litert_torch"]["outputs"] = {
        **results["convert_litert_torch"]["outputs"],
        "tflite_int8_pt2e": stored,
    }
    with_file = Claim(claim.definition, claim.plan, "model", None, None, Records.of(results))
    assert _input_key(with_file, *inputs["tflite_int8_pt2e_litert-torch"]) == stored["key"]
    assert _input_key(claim, *inputs["tflite_int8_pt2e_litert-torch"]) is None  # no file: the input is left out
    # A PT2E file that could not be made reaches the stage as the source's reason (a failed attempt).
    failed = {**results["convert_litert_torch"], "info": {"pt2e": {"quantizer": "litert-torch-pt2e", "error": "no"}}}
    without = Claim(
        claim.definition, claim.plan, "model", None, None, Records.of({**results, "convert_litert_torch": failed})
    )
    sources = _options_from_conversion(without.definition, without)["sources"]
    assert {s["candidate"]: s.get("prebuilt_errors") for s in sources} == {
        "onnx2tf": None,
        "litert-torch": {"pt2e": "no"},
    }
    # The convert stage calibrates PT2E on the uploaded calibration, only when int8 is asked.
    assert claim.plan.stage("convert_litert_torch").inputs["calibration"] == ("upload", "calibration")
    float16 = Plan.of(
        {"targets": ["tflite"], "quantization": ["float32", "float16"], "available_toolchains": EVERYTHING}
    )
    assert "calibration" not in float16.stage("convert_litert_torch").inputs
    assert not any(name.startswith("tflite_int8_pt2e") for name in float16.stage("quantize").inputs)


def test_an_onnx_converter_s_tensorflow_int8_file_reaches_the_quantize_stage_with_its_version() -> None:
    claim = _claim("auto")
    inputs = claim.definition.inputs
    assert sorted(name for name in inputs if name.startswith("tflite_int8_tf_ptq")) == [
        "tflite_int8_tf_ptq_onnx-tf",
        "tflite_int8_tf_ptq_onnx2tf",
    ]
    assert inputs["tflite_int8_tf_ptq_onnx2tf"] == ("convert_onnx2tf", "tflite_int8_tf_ptq")
    made = {"quantizer": "tf-lite-converter", "version": "2.21.0"}
    failed = {"quantizer": "tf-lite-converter", "version": "2.15.1", "error": "the converter aborted"}
    results = {
        **RESULTS,
        "convert_onnx2tf": {**RESULTS["convert_onnx2tf"], "info": {"tf_ptq": made}},
        "convert_litert_torch": {**RESULTS["convert_litert_torch"], "info": {"pt2e": {"error": "no"}}},
        # onnx-tf's file passes without flex here, so it is a source too.
        "validate_onnx_tf": _validated("pass", 9.0),
        "convert_onnx_tf": {**RESULTS["convert_onnx_tf"], "info": {"tf_ptq": failed}},
    }
    records = Claim(claim.definition, claim.plan, "model", None, None, Records.of(results))
    sources = {s["candidate"]: s for s in _options_from_conversion(records.definition, records)["sources"]}
    assert sources["onnx2tf"]["prebuilt_versions"] == {"tf_ptq": "2.21.0"}
    assert "prebuilt_errors" not in sources["onnx2tf"]
    assert sources["onnx-tf"]["prebuilt_errors"] == {"tf_ptq": "the converter aborted"}
    assert sources["onnx-tf"]["prebuilt_versions"] == {"tf_ptq": "2.15.1"}
    assert sources["litert-torch"]["prebuilt_errors"] == {"pt2e": "no"}
