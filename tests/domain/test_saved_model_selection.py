"""SavedModel candidates over recorded results (domain/jobs/selection.py, domain/jobs/plan.py):
which converters write one, auto's first pass, best's ranking, and a kept SavedModel
whose candidate made no .tflite."""

from __future__ import annotations

from typing import Any

from domain.jobs.plan import plan_stages, saved_model_candidates
from domain.jobs.records import Records
from domain.jobs.saved_models import tflite_outcome
from domain.jobs.selection import choose_saved_model, collect_saved_models, saved_model_satisfied, tflite_failure

EVERYTHING = ["onnx-tf", "onnx2tf", "litert-torch"]
SPEC: dict[str, Any] = {"toolchain": "auto", "targets": ["saved_model", "tflite"], "available_toolchains": EVERYTHING}


def saved(verdict: str, error: float = 1e-6, tflite: bool = True, failed: dict | None = None) -> dict[str, Any]:
    """A convert stage's recorded result with a SavedModel whose worst max_abs/scale is ``error``."""
    stored = {"key": "k", "size": 10, "sha256": "0" * 64, "file": "saved_model.zip"}
    outputs = {"saved_model": stored}
    if tflite:
        outputs["tflite_float32"] = {**stored, "file": "model_float32.tflite"}
    check = {"verdict": verdict, "reasons": [] if verdict == "pass" else ["too far"]}
    check["outputs"] = {"y": {"max_abs": error, "scale": 1.0}}
    return {"outputs": outputs, "metrics": {"saved_model": check}, "info": {"failed": failed or {}}}


def without_saved_model(code: str, reason: str) -> dict[str, Any]:
    stored = {"key": "k", "size": 10, "sha256": "0" * 64, "file": "model_float32.tflite"}
    return {
        "outputs": {"tflite_float32": stored},
        "info": {"failed": {"saved_model": {"code": code, "reason": reason}}},
    }


def test_every_converter_with_a_saved_model_is_a_candidate_in_order() -> None:
    assert saved_model_candidates(SPEC) == ["onnx2tf", "onnx-tf"]
    assert saved_model_candidates({**SPEC, "targets": ["tflite"]}) == []
    assert saved_model_candidates({**SPEC, "toolchain": "onnx-tf"}) == ["onnx-tf"]
    # litert-torch writes no SavedModel: the SavedModel candidates stay as they are.
    assert saved_model_candidates({**SPEC, "toolchain": "litert-torch"}) == ["onnx2tf", "onnx-tf"]
    assert saved_model_candidates({**SPEC, "available_toolchains": ["onnx-tf", "litert-torch"]}) == ["onnx-tf"]


def test_plan_converts_saved_model_candidates_that_make_no_tflite() -> None:
    names = [s.name for s in plan_stages({**SPEC, "targets": ["saved_model"]})]
    assert names == ["export_onnx", "convert_onnx2tf", "convert_onnx_tf", "report"]
    litert = [s.name for s in plan_stages({**SPEC, "toolchain": "litert-torch"})]
    assert litert[:3] == ["export_onnx", "convert_onnx2tf", "convert_onnx_tf"]
    assert "validate_onnx2tf" not in litert
    assert "validate_litert_torch" in litert


def test_auto_takes_the_first_that_passes_and_best_the_smallest_error() -> None:
    results = {"convert_onnx2tf": saved("pass", error=5e-6), "convert_onnx_tf": saved("pass", error=1e-7)}
    chosen = choose_saved_model(SPEC, results)
    assert chosen is not None
    assert chosen.name == "onnx2tf"
    assert saved_model_satisfied(SPEC, results)
    best = {**SPEC, "toolchain": "best"}
    chosen = choose_saved_model(best, results)
    assert chosen is not None
    assert chosen.name == "onnx-tf"
    assert chosen.error == 1e-7
    assert not saved_model_satisfied(best, results)  # best runs every candidate anyway


def test_a_pass_beats_a_smaller_failing_error_and_a_failure_is_the_last_resort() -> None:
    results = {"convert_onnx2tf": saved("fail", error=1e-9), "convert_onnx_tf": saved("pass", error=1e-5)}
    for toolchain in ("auto", "best"):
        chosen = choose_saved_model({**SPEC, "toolchain": toolchain}, results)
        assert chosen is not None
        assert chosen.name == "onnx-tf"
    only_failing = {"convert_onnx2tf": saved("fail", error=1e-3), "convert_onnx_tf": saved("fail", error=1e-2)}
    chosen = choose_saved_model(SPEC, only_failing)
    assert chosen is not None
    assert (chosen.name, chosen.verdict) == ("onnx2tf", "fail")
    assert not saved_model_satisfied(SPEC, only_failing)
    assert choose_saved_model(SPEC, {}) is None


def test_a_recorded_saved_model_failure_is_the_candidates_not_the_tflites() -> None:
    why = "onnx2tf could not write the SavedModel (-fdosm): unsupported_op_types=['X']"
    results = {"convert_onnx2tf": without_saved_model("conversion_failed", why), "convert_onnx_tf": saved("pass")}
    onnx2tf, onnx_tf = collect_saved_models(SPEC, results)
    assert (onnx2tf.converted, onnx2tf.metrics, onnx2tf.failure) == (
        True,
        None,
        {"code": "conversion_failed", "reason": why},
    )
    assert onnx_tf.verdict == "pass"
    chosen = choose_saved_model(SPEC, results)
    assert chosen is not None
    assert chosen.name == "onnx-tf"
    records = Records.of(results)
    converted = records.convert("onnx2tf")
    assert converted is not None
    assert tflite_failure(converted) is None


def test_a_kept_saved_model_whose_tflite_failed() -> None:
    reason = "TFLite conversion failed even with Select-TF ops: ConverterError"
    failed = {"tflite_float32": {"code": "tflite_conversion_failed", "reason": reason}}
    results = {"convert_onnx_tf": saved("pass", tflite=False, failed=failed)}
    spec = {**SPEC, "toolchain": "onnx-tf"}
    chosen = choose_saved_model(spec, results)
    assert chosen is not None
    assert chosen.name == "onnx-tf"
    assert chosen.verdict == "pass"
    converted = Records.of(results).convert("onnx-tf")
    assert converted is not None
    assert tflite_failure(converted) == f"tflite_conversion_failed: {reason}"
    assert tflite_outcome(converted) == f"failed: tflite_conversion_failed: {reason}"
