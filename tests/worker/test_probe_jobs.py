"""A file that fails at a second size of a named dimension loses, at the job level (issue 9,
item 7), on a real database and through the real API, for an ONNX upload.

The stage results recorded here have the shapes the real stages write
(tests/stages/test_saved_model.py runs them on an opset-17 encoder with dynamic ``batch``
and ``seq``): export.prepare's ``info.probes``, and validate.tflite's ``sample_shapes``
and ``probes``. onnx2tf's .tflite matches at the samples' size and does not run at
``batch=2, seq=2``; under ``auto`` onnx-tf's file, which passes at both, is chosen, and the
report gives the sizes and the sample shapes of the artifact it delivers.
"""

from __future__ import annotations

from typing import Any

from fastapi.testclient import TestClient

from domain.config import Settings
from tests.support.pipeline import converted, make_job, run, validated
from tests.worker.test_pipeline_failures import job_out, report_of
from worker.context import build_context

SPEC = {
    "targets": ["onnx", "tflite"],
    "quantization": ["float32"],
    "toolchain": "auto",
    "model_format": "onnx",
    "available_toolchains": ["onnx2tf", "onnx-tf"],
}
SIZES = [{"batch": 1, "seq": 1}, {"batch": 2, "seq": 2}]
BASE, SECOND = {"tokens": [1, 1, 16]}, {"tokens": [2, 2, 16]}
NOT_RUN = "RESHAPE: cannot reshape array of 64 elements into 32"


def exported() -> dict[str, Any]:
    check = {"verdict": "pass", "reasons": [], "outputs": {"logits": {"max_abs": 0.0, "scale": 2.0}}}
    info = {
        "opset": 17,
        "exporter": "uploaded",
        "reference_runtime": "onnxruntime",
        "versions": {"onnxruntime": "1.20.1"},
        "output_names": ["logits"],
        "probes": {"sizes": SIZES},
    }
    stored = {"key": "k/model.onnx", "size": 100, "sha256": "0" * 64, "file": "model.onnx"}
    return {"outputs": {"onnx": stored}, "metrics": {"onnx": check}, "info": info}


def probed(ran: bool) -> dict[str, Any]:
    """validate.tflite's result: passes at the samples' size; at the second, passes or does not run."""
    result = validated()
    metrics = result["metrics"]["tflite_float32"]
    entry = {"sizes": SIZES[1], "shapes": SECOND}
    if ran:
        metrics["probes"] = [{**entry, "ran": True, "verdict": "pass", "max_abs_over_scale": {"logits": 3e-7}}]
        metrics["sample_shapes"] = [BASE, SECOND]
    else:
        metrics["probes"] = [{**entry, "ran": False, "verdict": "fail", "reason": NOT_RUN}]
        metrics["sample_shapes"] = [BASE]
        metrics["verdict"] = "fail"
        metrics["reasons"] = [f"at batch=2, seq=2 the file does not run: {NOT_RUN}"]
    return result


def test_a_tflite_that_does_not_run_at_the_second_size_loses_to_one_that_does(
    settings: Settings, client: TestClient, auth: dict[str, str]
) -> None:
    ctx = build_context(settings)
    job_id = make_job(ctx, SPEC)
    run(ctx, job_id, "export_onnx", exported())
    assert run(ctx, job_id, "convert_onnx2tf", converted("onnx2tf")) == ["validate_onnx2tf"]
    # Failing at batch=2, seq=2 fails the file: auto goes on to the next candidate.
    assert run(ctx, job_id, "validate_onnx2tf", probed(ran=False)) == ["convert_onnx_tf"]
    assert run(ctx, job_id, "convert_onnx_tf", converted("onnx-tf")) == ["validate_onnx_tf"]
    assert run(ctx, job_id, "validate_onnx_tf", probed(ran=True)) == ["report"]
    run(ctx, job_id, "report")

    job = job_out(client, auth, job_id)
    assert job["status"] == "succeeded", job["error"]
    report = report_of(client, auth, job_id)
    assert report["reference"]["runtime"] == "onnxruntime"
    assert report["validation"]["probes"] == {"sizes": SIZES}
    outcomes = {a["toolchain"]: a["outcome"] for a in report["attempts"]}
    assert outcomes["onnx-tf"] == "chosen"
    assert outcomes["onnx2tf"].startswith("lost"), outcomes
    # Each attempt carries its check's reasons (the chosen one's are empty: it passed).
    reasons = {a["toolchain"]: a["reasons"] for a in report["attempts"]}
    assert reasons == {"onnx2tf": [f"at batch=2, seq=2 the file does not run: {NOT_RUN}"], "onnx-tf": []}
    (tflite,) = [a for a in report["artifacts"] if a["kind"] == "tflite"]
    assert (tflite["toolchain"], tflite["verdict"]) == ("onnx-tf", "pass")
    assert tflite["sample_shapes"] == [BASE, SECOND]
    (probe,) = tflite["probes"]
    assert (probe["sizes"], probe["ran"], probe["verdict"]) == (SIZES[1], True, "pass")
