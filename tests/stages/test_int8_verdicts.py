"""int8 verdicts through the real quantize stage (ai-edge-quantizer, then stock LiteRT) on tiny
litert-torch files: a detection-style head whose box coordinates (0-640) and sigmoid scores
(0-1) share one output is not a `pass`, whatever its whole-tensor cosine; a clean CNN is."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.support.int8_models import quantize_int8


def test_a_concatenated_detection_head_is_not_a_pass(tmp_path_factory: pytest.TempPathFactory, tmp_path: Path) -> None:
    run = quantize_int8("detector", tmp_path_factory, tmp_path)
    metrics = run.result["metrics"]["tflite_int8"]
    assert metrics["calibration"]["samples"] >= 16
    assert metrics["verdict"] in ("degraded", "fail"), metrics
    (name,) = metrics["outputs"]
    reasons = [r for r in metrics["reasons"] if "axis 1 (7 channels)" in r]
    assert reasons, metrics["reasons"]
    assert repr(name) in reasons[0]
    assert "4, 5, 6" in reasons[0]  # the score rows
    assert "keep that head in float" in reasons[0]
    flagged = metrics["outputs"][name]["channels"]["axis 1"]
    assert {4, 5, 6} <= set(flagged["collapsed"]) | set(flagged["coarse"])
    assert not {0, 1, 2, 3} & set(flagged["collapsed"])  # the boxes survive


def test_a_clean_cnn_stays_a_pass(tmp_path_factory: pytest.TempPathFactory, tmp_path: Path) -> None:
    run = quantize_int8("cnn", tmp_path_factory, tmp_path)
    metrics = run.result["metrics"]["tflite_int8"]
    assert metrics["verdict"] == "pass", metrics["reasons"]
    assert metrics["min_cosine"] >= 0.99
    (entry,) = metrics["outputs"].values()
    assert "channels" not in entry
    assert entry["top1_agreement"] >= 0.75
