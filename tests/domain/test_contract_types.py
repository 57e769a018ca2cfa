"""The typed contract's small parts: states, stage names, and recorded results that read
back as they were written."""

from __future__ import annotations

import json
from typing import get_args

from domain.jobs import names
from domain.jobs.plan import Plan
from domain.jobs.records import Records
from domain.jobs.states import FINAL, STAGE_OVER, JobStatus, StageState
from modelport.schemas import job as job_schema
from stages.kit.results import Check, ConvertInfo, RunNote, StageOutcome, StageReply, ValidateInfo


def test_the_api_shows_the_states_the_domain_defines() -> None:
    assert list(get_args(job_schema.JobStatus)) == [s.value for s in JobStatus]
    assert list(get_args(job_schema.StageState)) == [s.value for s in StageState]
    assert {"succeeded", "failed", "cancelled"} == FINAL
    assert {"succeeded", "failed", "skipped"} == STAGE_OVER


def test_stage_names_come_from_one_helper() -> None:
    assert names.convert("onnx-tf") == "convert_onnx_tf"
    assert names.validate("litert-torch") == "validate_litert_torch"
    assert names.validate_flex("onnx2tf") == "validate_flex_onnx2tf"
    assert names.is_validate_flex("validate_flex_onnx2tf")
    assert not names.is_validate_flex("validate_onnx2tf")
    plan = Plan.of({"targets": ["onnx", "tflite"], "toolchain": "best", "available_toolchains": ["onnx-tf"]})
    assert [s.name for s in plan.stages] == [
        names.EXPORT,
        names.convert("onnx-tf"),
        names.validate("onnx-tf"),
        names.validate_flex("onnx-tf"),
        names.REPORT,
    ]
    assert plan.onnx_consumers == ["onnx-tf"]
    assert plan.dependencies(names.validate_flex("onnx-tf")) == [
        names.EXPORT,
        names.convert("onnx-tf"),
        names.validate("onnx-tf"),
    ]


RECORDED = {
    "outputs": {"tflite_float32": {"key": "jobs/j/m.tflite", "size": 10, "sha256": "ab", "file": "m.tflite"}},
    "metrics": {
        "tflite_float32": {
            "verdict": "pass",
            "reasons": [],
            "requires_flex": False,
            "latency_ms": {"median_1_thread": 2.5},
            "outputs": {"output": {"max_abs": 0.002, "scale": 4.0}},
            "size_bytes": 10,
        }
    },
    "info": {"runtime": "ai-edge-litert 1.0", "signature": {"input_transposes": {"x": [0, 2, 3, 1]}}},
    "process_seconds": 1.5,
    "startup_seconds": 0.02,
    "peak_rss_bytes": 1024,
    "isolation": ["netns"],
    "lock_sha256": "cd",
    "log_key": "jobs/j/logs/validate_onnx2tf.log",
}


def test_a_recorded_result_reads_back_byte_for_byte() -> None:
    outcome = StageOutcome.from_json(RECORDED)
    assert json.dumps(outcome.to_json()) == json.dumps(RECORDED)
    check = outcome.check("tflite_float32")
    assert check is not None
    assert check.verdict == "pass"
    assert check.latency == 2.5
    assert check.worst_error == 0.002 / 4.0
    assert check.present(("size_bytes", "operators")) == {"size_bytes": 10}
    assert outcome.check("saved_model") is None
    assert outcome.info_as(ConvertInfo).input_transposes == {"x": [0, 2, 3, 1]}
    assert outcome.info_as(ValidateInfo).runtime == "ai-edge-litert 1.0"
    # A check without numbers is unknown: infinitely bad, never "perfect".
    assert Check.from_json({"outputs": {"y": {"scale": 1.0}}}).worst_error == float("inf")


def test_records_pick_the_flex_validation_when_there_is_one() -> None:
    stock = {"metrics": {"tflite_float32": {"verdict": "pass", "requires_flex": True}}}
    flex = {"metrics": {"tflite_float32": {"verdict": "degraded"}}, "info": {"runtime": "tensorflow"}}
    records = Records.of({"validate_onnx_tf": stock, "validate_flex_onnx_tf": flex})
    assert records.validation("onnx-tf").info_as(ValidateInfo).runtime == "tensorflow"
    assert Records.of({"validate_onnx_tf": stock}).validation("onnx-tf").check("tflite_float32").requires_flex
    assert records.validation("onnx2tf").check("tflite_float32") is None


def test_stage_replies_and_run_notes_keep_their_json() -> None:
    ok = {"ok": True, "outputs": {"onnx": "m.onnx"}, "metrics": {"onnx": {"verdict": "pass"}}, "info": {"opset": 17}}
    assert StageReply.from_json(ok).to_json() == ok
    refused = StageReply.from_json({"ok": False, "error": {"code": "export_failed", "message": "no"}})
    assert (refused.ok, refused.error_code, refused.error_message) == (False, "export_failed", "no")
    assert StageReply.from_json({"ok": False}).error_code == "stage_failed"
    assert RunNote(skipped_reason="auto").to_json() == {"skipped_reason": "auto"}
    assert RunNote(log_tail="boom").to_json() == {"log_tail": "boom"}
    failed = RunNote(log_tail="boom", peak_rss_bytes=2048, process_seconds=0.5).to_json()
    assert failed == {"log_tail": "boom", "peak_rss_bytes": 2048, "process_seconds": 0.5}
    assert RunNote.from_json(RECORDED).startup_seconds == 0.02  # a succeeded stage's usage reads the same way
    assert RunNote.from_json(None) == RunNote()
