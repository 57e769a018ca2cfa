"""Independent artifacts at the job level, on a real database and through the real API:
the einsum case (``torch.einsum("bij,ij->b", x, W)``), whose onnx-tf SavedModel passes
while onnx-tf's SavedModel->TFLite step fails (tests/stages/test_saved_model.py runs
those stages for real; the results recorded here have the same shape).

Under ``auto`` with both ONNX converters, onnx2tf's .tflite passes and its SavedModel
cannot be written: onnx-tf still converts for the SavedModel, keeps it, and the job
succeeds with each artifact from the candidate that made it. With ``toolchain: onnx-tf``
the kept SavedModel is delivered and the job fails for the .tflite alone, saying so.
"""

from __future__ import annotations

from typing import Any

from fastapi.testclient import TestClient

from domain.config import Settings
from tests.support.pipeline import converted, make_job, run, states, validated
from tests.worker.test_pipeline_failures import artifact_names, job_out, report_of
from worker.context import build_context

EINSUM = {
    "targets": ["onnx", "saved_model", "tflite"],
    "quantization": ["float32"],
    "toolchain": "auto",
    "model_format": "onnx",
    "available_toolchains": ["onnx2tf", "onnx-tf"],
}
TFLITE_FAILED = (
    "TFLite conversion failed even with Select-TF ops: ConverterError: 'tf.Einsum' op is neither a custom op "
    "nor a flex op (builtin-only: not TFLite builtins: Einsum). The model uses an operation TFLite cannot "
    "express; try another toolchain"
)
NO_SAVED_MODEL = "onnx2tf could not write the SavedModel (-fdosm): unsupported_op_types=['EINSUM']"


def stored(name: str) -> dict[str, Any]:
    return {"key": f"k/{name}", "size": 100, "sha256": "0" * 64, "file": name}


def exported() -> dict[str, Any]:
    check = {"verdict": "pass", "reasons": [], "outputs": {"y": {"max_abs": 1e-7, "scale": 2.0}}}
    info = {"opset": 15, "exporter": "uploaded", "versions": {"onnxruntime": "1.20.1"}, "output_names": ["y"]}
    return {"outputs": {"onnx": stored("model.onnx")}, "metrics": {"onnx": check}, "info": info}


def onnx_tf_kept_saved_model() -> dict[str, Any]:
    """convert_onnx_tf's result on the einsum model: the SavedModel, no .tflite."""
    check = {"verdict": "pass", "reasons": [], "samples": 4, "outputs": {"y": {"max_abs": 4e-7, "scale": 2.0}}}
    info = {
        "versions": {"tensorflow": "2.15.1", "onnx_tf": "1.10.0"},
        "failed": {"tflite_float32": {"code": "tflite_conversion_failed", "reason": TFLITE_FAILED}},
    }
    return {"outputs": {"saved_model": stored("saved_model.zip")}, "metrics": {"saved_model": check}, "info": info}


def onnx2tf_without_saved_model() -> dict[str, Any]:
    result = converted("onnx2tf")
    result["info"] = {"failed": {"saved_model": {"code": "conversion_failed", "reason": NO_SAVED_MODEL}}}
    return result


def test_auto_keeps_each_artifact_from_the_candidate_that_made_it(
    settings: Settings, client: TestClient, auth: dict[str, str]
) -> None:
    ctx = build_context(settings)
    job_id = make_job(ctx, EINSUM)
    run(ctx, job_id, "export_onnx", exported())
    assert run(ctx, job_id, "convert_onnx2tf", onnx2tf_without_saved_model()) == ["validate_onnx2tf"]
    # The .tflite passed, the SavedModel did not: onnx-tf still converts, for the SavedModel.
    assert run(ctx, job_id, "validate_onnx2tf", validated()) == ["convert_onnx_tf"]
    assert run(ctx, job_id, "convert_onnx_tf", onnx_tf_kept_saved_model()) == ["report"]
    assert states(ctx, job_id)["validate_onnx_tf"] == "skipped"
    run(ctx, job_id, "report")

    job = job_out(client, auth, job_id)
    assert job["status"] == "succeeded", job["error"]
    assert sorted(artifact_names(client, auth, job_id)) == ["model.onnx", "model_float32.tflite", "saved_model.zip"]
    report = report_of(client, auth, job_id)
    assert (report["verdict"], report["reasons"]) == ("pass", [])
    kinds = {a["kind"]: (a["toolchain"], a["verdict"]) for a in report["artifacts"]}
    assert kinds == {"onnx": ("torch", "pass"), "saved_model": ("onnx-tf", "pass"), "tflite": ("onnx2tf", "pass")}
    saved = {a["toolchain"]: a for a in report["saved_model_attempts"]}
    assert saved["onnx2tf"]["outcome"] == f"failed: conversion_failed: {NO_SAVED_MODEL}"
    assert saved["onnx-tf"]["outcome"] == "chosen"
    assert saved["onnx-tf"]["max_abs_over_scale"] == 2e-7
    assert saved["onnx-tf"]["runtime"] == "tensorflow 2.15.1 (serving_default)"
    tflite = {a["toolchain"]: a["outcome"] for a in report["attempts"]}
    assert tflite == {"onnx2tf": "chosen", "onnx-tf": f"failed: tflite_conversion_failed: {TFLITE_FAILED}"}
    stages = {s["name"]: s for s in job["stages"]}
    assert (
        stages["validate_onnx_tf"]["skipped_reason"]
        == "auto: an earlier candidate already passed with builtin ops only"
    )


def test_onnx_tf_alone_delivers_its_saved_model_and_fails_for_the_tflite(
    settings: Settings, client: TestClient, auth: dict[str, str]
) -> None:
    ctx = build_context(settings)
    job_id = make_job(ctx, {**EINSUM, "toolchain": "onnx-tf"})
    run(ctx, job_id, "export_onnx", exported())
    assert run(ctx, job_id, "convert_onnx_tf", onnx_tf_kept_saved_model()) == ["report"]
    run(ctx, job_id, "report")

    job = job_out(client, auth, job_id)
    assert job["status"] == "failed"
    assert (job["error"]["code"], job["error"]["stage"]) == ("tflite_conversion_failed", "convert_onnx_tf")
    lines = job["error"]["message"].splitlines()
    assert lines[:4] == [
        "target 'tflite' was not produced:",
        f"- onnx-tf: failed: tflite_conversion_failed: {TFLITE_FAILED}",
        "Produced and checked: onnx (model.onnx from torch), saved_model (saved_model.zip from onnx-tf).",
        "To get those, submit again without 'tflite' in targets, or with another toolchain.",
    ]
    # The SavedModel that passed is delivered with the job that failed.
    assert sorted(artifact_names(client, auth, job_id)) == ["model.onnx", "saved_model.zip"]
    report = report_of(client, auth, job_id)
    assert report["reasons"] == ["target 'tflite' was not produced at float32"]
    (saved,) = report["saved_model_attempts"]
    assert (saved["toolchain"], saved["outcome"], saved["verdict"]) == ("onnx-tf", "chosen", "pass")


def test_best_skips_the_validation_of_a_tflite_that_was_not_made(
    settings: Settings, client: TestClient, auth: dict[str, str]
) -> None:
    ctx = build_context(settings)
    job_id = make_job(ctx, {**EINSUM, "toolchain": "best"})
    run(ctx, job_id, "export_onnx", exported())
    run(ctx, job_id, "convert_onnx2tf", onnx2tf_without_saved_model())
    run(ctx, job_id, "convert_onnx_tf", onnx_tf_kept_saved_model())
    run(ctx, job_id, "validate_onnx2tf", validated())
    assert states(ctx, job_id)["validate_onnx_tf"] == "skipped"
    run(ctx, job_id, "report")
    job = job_out(client, auth, job_id)
    assert job["status"] == "succeeded", job["error"]
    stages = {s["name"]: s for s in job["stages"]}
    assert stages["validate_onnx_tf"]["skipped_reason"] == (
        f"its conversion did not produce a .tflite: tflite_conversion_failed: {TFLITE_FAILED}"
    )


def test_a_saved_model_that_fails_at_a_probe_size_says_why_in_its_attempt(
    settings: Settings, client: TestClient, auth: dict[str, str]
) -> None:
    ctx = build_context(settings)
    job_id = make_job(ctx, {**EINSUM, "toolchain": "onnx-tf"})
    run(ctx, job_id, "export_onnx", exported())
    result = onnx_tf_kept_saved_model()
    why = "at batch=2 the SavedModel does not run: Input to reshape is a tensor with 8 values (node Reshape)"
    result["metrics"]["saved_model"].update(verdict="fail", reasons=[why])
    run(ctx, job_id, "convert_onnx_tf", result)
    run(ctx, job_id, "report")

    assert job_out(client, auth, job_id)["status"] == "failed"
    (saved,) = report_of(client, auth, job_id)["saved_model_attempts"]
    assert (saved["outcome"], saved["verdict"], saved["reasons"]) == ("chosen", "fail", [why])


def test_an_unknown_error_is_null_in_the_report_not_infinity(
    settings: Settings, client: TestClient, auth: dict[str, str]
) -> None:
    """A check without ``max_abs`` has an unknown (infinite) error: the report, strict JSON
    (stages.kit.fields.finite_json), says null, and the report stage does not fail."""
    ctx = build_context(settings)
    job_id = make_job(ctx, {**EINSUM, "toolchain": "onnx-tf"})
    run(ctx, job_id, "export_onnx", exported())
    result = onnx_tf_kept_saved_model()
    result["metrics"]["saved_model"]["outputs"] = {"y": {"scale": 2.0}}
    run(ctx, job_id, "convert_onnx_tf", result)
    run(ctx, job_id, "report")

    assert job_out(client, auth, job_id)["error"]["code"] != "internal_error"
    (saved,) = report_of(client, auth, job_id)["saved_model_attempts"]
    assert (saved["outcome"], saved["max_abs_over_scale"]) == ("chosen", None)
