"""How failures end a job, on a real database and through the real API: accuracy misses,
candidates that fail softly, missing targets, quantized precisions (with and without
``strict``), and runner failures (timeout, crash) of a real stage process."""

from __future__ import annotations

import os
import signal
import threading
import time
from pathlib import Path
from typing import Any

import psutil
from fastapi.testclient import TestClient

from app.main import create_app
from domain.config import Settings
from tests.support.api import ADMIN_KEY, make_settings
from tests.support.pipeline import converted, fail, make_job, run, states, validated
from worker import pipeline
from worker.context import WorkerContext, build_context

# Two candidates under auto, no flex validation (onnx-tf is not on this worker).
AUTO = {
    "targets": ["tflite"],
    "quantization": ["float32"],
    "toolchain": "auto",
    "model_format": "state_dict",
    "available_toolchains": ["onnx2tf", "litert-torch"],
}
AUTH = {"Authorization": f"Bearer {ADMIN_KEY}"}
QUANTIZED = {**AUTO, "quantization": ["float32", "int8"], "available_toolchains": ["onnx2tf"]}


def job_out(client: TestClient, auth: dict[str, str], job_id: str) -> dict[str, Any]:
    response = client.get(f"/v1/jobs/{job_id}", headers=auth)
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


def report_of(client: TestClient, auth: dict[str, str], job_id: str) -> dict[str, Any]:
    response = client.get(f"/v1/jobs/{job_id}/report", headers=auth)
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


def artifact_names(client: TestClient, auth: dict[str, str], job_id: str) -> list[str]:
    response = client.get(f"/v1/jobs/{job_id}/artifacts", headers=auth)
    assert response.status_code == 200, response.text
    return [a["name"] for a in response.json()]


def test_every_candidate_missing_its_tolerance_fails_the_job_and_keeps_everything(
    settings: Settings, client: TestClient, auth: dict[str, str]
) -> None:
    ctx = build_context(settings)
    job_id = make_job(ctx, AUTO)
    assert run(ctx, job_id, "export_onnx") == ["convert_onnx2tf"]
    assert run(ctx, job_id, "convert_onnx2tf", converted("onnx2tf")) == ["validate_onnx2tf"]
    # A miss is no deliverable candidate: auto goes on to the next one.
    assert run(ctx, job_id, "validate_onnx2tf", validated("fail", latency_ms=2.0)) == ["convert_litert_torch"]
    assert run(ctx, job_id, "convert_litert_torch", converted("litert")) == ["validate_litert_torch"]
    assert run(ctx, job_id, "validate_litert_torch", validated("fail", latency_ms=1.0)) == ["report"]
    assert run(ctx, job_id, "report") == []

    job = job_out(client, auth, job_id)
    assert job["status"] == "failed"
    # The best of the failing candidates (faster at the same verdict) is the one kept and named.
    assert job["error"]["code"] == "accuracy_check_failed"
    assert job["error"]["stage"] == "validate_litert_torch"
    assert "max_abs 0.5" in job["error"]["message"]
    assert artifact_names(client, auth, job_id) == ["model_float32.tflite"]
    report = report_of(client, auth, job_id)
    assert report["verdict"] == "fail"
    (entry,) = report["artifacts"]
    assert (entry["toolchain"], entry["verdict"]) == ("litert-torch", "fail")
    outcomes = {a["toolchain"]: a["outcome"] for a in report["attempts"]}
    assert outcomes["litert-torch"] == "chosen"
    assert outcomes["onnx2tf"].startswith("lost: output: max_abs 0.5")


def test_a_failing_candidate_is_recorded_and_the_next_one_runs(
    settings: Settings, client: TestClient, auth: dict[str, str]
) -> None:
    ctx = build_context(settings)
    job_id = make_job(ctx, AUTO)
    run(ctx, job_id, "export_onnx")
    released = fail(ctx, job_id, "convert_onnx2tf", "conversion_failed", "onnx2tf: no tflite", "onnx2tf log line")
    assert released == ["convert_litert_torch"]
    assert states(ctx, job_id)["convert_onnx2tf"] == "failed"
    assert states(ctx, job_id)["validate_onnx2tf"] == "skipped"
    assert run(ctx, job_id, "convert_litert_torch", converted("litert")) == ["validate_litert_torch"]
    assert run(ctx, job_id, "validate_litert_torch", validated()) == ["report"]
    assert run(ctx, job_id, "report") == []

    job = job_out(client, auth, job_id)
    assert job["status"] == "succeeded", job["error"]
    stages = {s["name"]: s for s in job["stages"]}
    assert stages["convert_onnx2tf"]["error"]["code"] == "conversion_failed"
    assert stages["validate_onnx2tf"]["skipped_reason"] == "its conversion did not produce a .tflite"
    outcomes = {a["toolchain"]: a["outcome"] for a in report_of(client, auth, job_id)["attempts"]}
    assert outcomes == {"onnx2tf": "failed: conversion_failed: onnx2tf: no tflite", "litert-torch": "chosen"}


def test_when_every_candidate_fails_the_job_takes_the_first_failure(
    settings: Settings, client: TestClient, auth: dict[str, str]
) -> None:
    ctx = build_context(settings)
    job_id = make_job(ctx, AUTO)
    run(ctx, job_id, "export_onnx")
    fail(ctx, job_id, "convert_onnx2tf", "conversion_failed", "onnx2tf: no tflite", "onnx2tf log line")
    assert fail(ctx, job_id, "convert_litert_torch", "tflite_conversion_failed", "litert: no", "x") == ["report"]
    assert run(ctx, job_id, "report") == []

    job = job_out(client, auth, job_id)
    assert job["status"] == "failed"
    assert job["error"]["code"] == "conversion_failed"
    assert job["error"]["stage"] == "convert_onnx2tf"
    assert job["error"]["log_tail"] == "onnx2tf log line"
    # The missing target, then one line per candidate that tried it and why.
    assert job["error"]["message"].splitlines()[:3] == [
        "target 'tflite' was not produced:",
        "- onnx2tf: failed: conversion_failed: onnx2tf: no tflite",
        "- litert-torch: failed: tflite_conversion_failed: litert: no",
    ]
    assert artifact_names(client, auth, job_id) == []
    assert report_of(client, auth, job_id)["reasons"] == ["target 'tflite' was not produced at float32"]


def test_a_target_nothing_produced_is_target_missing(
    settings: Settings, client: TestClient, auth: dict[str, str]
) -> None:
    ctx = build_context(settings)
    job_id = make_job(ctx)  # targets: onnx
    assert run(ctx, job_id, "export_onnx", {"outputs": {}}) == ["report"]
    run(ctx, job_id, "report")
    job = job_out(client, auth, job_id)
    assert job["status"] == "failed"
    assert (job["error"]["code"], job["error"]["stage"]) == ("target_missing", "report")
    assert "target 'onnx' was not produced" in job["error"]["message"]


def run_quantized(ctx: WorkerContext, spec: dict[str, Any], quantize: dict[str, Any] | None) -> str:
    """A job whose float32 .tflite passes; ``quantize`` is the quantize stage's result (None: it failed)."""
    job_id = make_job(ctx, spec)
    run(ctx, job_id, "export_onnx")
    run(ctx, job_id, "convert_onnx2tf", converted("onnx2tf"))
    assert run(ctx, job_id, "validate_onnx2tf", validated()) == ["quantize"]
    if quantize is None:
        released = fail(ctx, job_id, "quantize", "runtime_crashed", "the quantizer crashed", "quantizer log")
    else:
        released = run(ctx, job_id, "quantize", quantize)
    assert released == ["report"]
    run(ctx, job_id, "report")
    return job_id


INT8_FAILED = {
    "outputs": {},
    "info": {"failed": {"int8": {"code": "quantization_failed", "reason": "ai-edge-quantizer refused it"}}},
}


INT8_MISSED = {
    "outputs": {"tflite_int8": {"key": "k/int8", "size": 1, "sha256": "0" * 64, "file": "model_int8.tflite"}},
    "metrics": {"tflite_int8": {"verdict": "fail", "reasons": ["min cosine 0.5 below 0.9"], "outputs": {}}},
    "info": {"failed": {}},
}


def test_a_quantized_precision_not_produced_fails_the_job_only_when_strict(
    settings: Settings, client: TestClient, auth: dict[str, str]
) -> None:
    ctx = build_context(settings)
    lenient = run_quantized(ctx, QUANTIZED, INT8_FAILED)
    job = job_out(client, auth, lenient)
    assert job["status"] == "succeeded", job["error"]
    precisions = report_of(client, auth, lenient)["precisions"]
    assert precisions["int8"] == {
        "status": "not_produced",
        "code": "quantization_failed",
        "reason": "ai-edge-quantizer refused it",
    }
    assert precisions["float32"]["status"] == "produced"
    assert artifact_names(client, auth, lenient) == ["model_float32.tflite"]

    # strict: the precision's own code, at the stage that should have produced it.
    strict = run_quantized(ctx, {**QUANTIZED, "strict": True}, INT8_FAILED)
    job = job_out(client, auth, strict)
    assert job["status"] == "failed"
    assert (job["error"]["code"], job["error"]["stage"]) == ("quantization_failed", "quantize")
    assert "int8: ai-edge-quantizer refused it (strict)" in job["error"]["message"]
    assert artifact_names(client, auth, strict) == ["model_float32.tflite"]

    # The quantize stage itself failing: its code reaches the job, with its log.
    crashed = run_quantized(ctx, {**QUANTIZED, "strict": True}, None)
    job = job_out(client, auth, crashed)
    assert (job["status"], job["error"]["code"], job["error"]["stage"]) == ("failed", "runtime_crashed", "quantize")
    assert job["error"]["log_tail"] == "quantizer log"
    assert report_of(client, auth, crashed)["precisions"]["int8"]["code"] == "runtime_crashed"

    # Produced, but its advisory verdict is fail: under strict the job fails on accuracy.
    missed = run_quantized(ctx, {**QUANTIZED, "strict": True}, INT8_MISSED)
    job = job_out(client, auth, missed)
    assert (job["status"], job["error"]["code"], job["error"]["stage"]) == (
        "failed",
        "accuracy_check_failed",
        "quantize",
    )
    assert "int8: fail: min cosine 0.5 below 0.9 (strict)" in job["error"]["message"]
    assert artifact_names(client, auth, missed) == ["model_float32.tflite", "model_int8.tflite"]
    lenient = run_quantized(ctx, QUANTIZED, INT8_MISSED)
    assert job_out(client, auth, lenient)["status"] == "succeeded"


ATTEMPTS = [
    {"source": "onnx2tf", "variant": "default", "outcome": "failed: quantization_failed: PADV2"},
    {
        "source": "onnx2tf",
        "variant": "float_sensitive",
        "outcome": "kept",
        "verdict": "pass",
        "float_ops": {"PADV2": 1},
    },
]


def test_the_report_lists_every_int8_attempt(settings: Settings, client: TestClient, auth: dict[str, str]) -> None:
    ctx = build_context(settings)
    produced = {
        "outputs": INT8_MISSED["outputs"],
        "metrics": {
            "tflite_int8": {
                "verdict": "pass",
                "reasons": [],
                "outputs": {},
                "source": {"candidate": "onnx2tf", "file": "model_float32.tflite"},
                "float_ops": {"PADV2": 1},
            }
        },
        "info": {"failed": {}, "attempts": {"int8": ATTEMPTS}},
    }
    report = report_of(client, auth, run_quantized(ctx, QUANTIZED, produced))
    assert report["precisions"]["int8"] == {
        "status": "produced",
        "artifact": "model_int8.tflite",
        "verdict": "pass",
        "attempts": ATTEMPTS,
    }
    (int8,) = [a for a in report["artifacts"] if a["precision"] == "int8"]
    assert int8["source"] == {"candidate": "onnx2tf", "file": "model_float32.tflite"}
    assert int8["float_ops"] == {"PADV2": 1}
    failed = {"outputs": {}, "info": {**INT8_FAILED["info"], "attempts": {"int8": ATTEMPTS[:1]}}}
    report = report_of(client, auth, run_quantized(ctx, QUANTIZED, failed))
    assert report["precisions"]["int8"]["attempts"] == ATTEMPTS[:1]
    assert report["precisions"]["int8"]["status"] == "not_produced"


def test_strict_without_quantized_precisions_fails_nothing(
    settings: Settings, client: TestClient, auth: dict[str, str]
) -> None:
    ctx = build_context(settings)
    job_id = make_job(ctx, {"targets": ["onnx"], "quantization": ["float32"], "strict": True})
    onnx = {"key": "k/onnx", "size": 1, "sha256": "0" * 64, "file": "model.onnx"}
    run(
        ctx,
        job_id,
        "export_onnx",
        {"outputs": {"onnx": onnx}, "metrics": {"onnx": validated()["metrics"]["tflite_float32"]}},
    )
    run(ctx, job_id, "report")
    job = job_out(client, auth, job_id)
    assert job["status"] == "succeeded", job["error"]
    assert report_of(client, auth, job_id)["precisions"]["float32"]["status"] == "not_requested"


# Runner failures of a real stage process (export.prepare in the torch environment).


def upload_model(ctx: WorkerContext, job_id: str, tmp_path: Path) -> None:
    model = tmp_path / "model.pth"
    model.write_bytes(b"not a checkpoint, never read: the stage is stopped before")
    ctx.store.put_file(f"uploads/{job_id}/model", model)


def test_a_stage_timeout_reaches_the_job(db_url: str, tmp_path: Path) -> None:
    # Cold: a fresh interpreter takes longer than 1 s to import torch, so the watchdog stops
    # the stage (a warm runner's child has torch already; its timeout: test_warm_runner.py).
    settings = make_settings(db_url, tmp_path / "data", stage_timeout_seconds=1, warm_runners=False)
    ctx = build_context(settings)
    job_id = make_job(ctx)
    upload_model(ctx, job_id, tmp_path)
    started = time.monotonic()
    pipeline.run_stage(ctx, job_id, "export_onnx")
    elapsed = time.monotonic() - started
    assert elapsed < 1 + 10, elapsed
    with TestClient(create_app(settings)) as client:
        job = job_out(client, AUTH, job_id)
    assert job["status"] == "failed"
    assert (job["error"]["code"], job["error"]["stage"]) == ("timeout", "export_onnx")
    assert "limit of 1 s" in job["error"]["message"]
    assert {s["name"]: s["state"] for s in job["stages"]} == {"export_onnx": "failed", "report": "skipped"}


def test_a_crashed_stage_reaches_the_job_with_its_log(db_url: str, tmp_path: Path) -> None:
    # The cold runner's sandbox (its shell reports the signal); a warm child's crash:
    # tests/worker/test_warm_runner.py.
    settings = make_settings(db_url, tmp_path / "data", warm_runners=False)
    ctx = build_context(settings)
    job_id = make_job(ctx)
    upload_model(ctx, job_id, tmp_path)
    runner = threading.Thread(target=pipeline.run_stage, args=(ctx, job_id, "export_onnx"))
    runner.start()
    try:
        stage = wait_for_stage_interpreter(job_id, timeout=60)
        time.sleep(0.5)  # let it start importing: a crash inside a native library, as a runtime's
        os.kill(stage, signal.SIGSEGV)
    finally:
        runner.join(timeout=120)
    assert not runner.is_alive()
    with TestClient(create_app(settings)) as client:
        job = job_out(client, AUTH, job_id)
        log = client.get(f"/v1/jobs/{job_id}/logs/export_onnx", headers=AUTH)
    assert job["status"] == "failed"
    assert (job["error"]["code"], job["error"]["stage"]) == ("stage_crashed", "export_onnx")
    assert job["error"]["message"] == "the stage process was killed by SIGSEGV"
    # The interpreter's fault handler wrote the crash and its Python stack to the stage log.
    # The tail keeps the end of it: the stack's frames (a deep import stack can push the
    # "Fatal Python error" header out of the tail) and the shell's "Segmentation fault".
    assert "Segmentation fault" in job["error"]["log_tail"]
    assert 'File "' in job["error"]["log_tail"]
    assert log.status_code == 200
    assert "Fatal Python error: Segmentation fault" in log.text


def wait_for_stage_interpreter(job_id: str, timeout: float) -> int:
    """The pid of the ``python -m stages`` process running a stage of ``job_id`` (its request
    file lies in a work directory named after the job), not of its sandbox wrappers."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for proc in psutil.process_iter(["pid", "cmdline"]):
            argv = proc.info["cmdline"] or []
            if (
                argv
                and Path(argv[0]).name.startswith("python")
                and argv[1:3] == ["-m", "stages"]
                and any(job_id in a for a in argv[3:])
            ):
                return int(proc.info["pid"])
        time.sleep(0.05)
    raise AssertionError(f"no stage process of job {job_id} appeared in {timeout} s")
