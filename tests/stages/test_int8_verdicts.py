"""int8 verdicts through the real quantize stage (ai-edge-quantizer, then stock LiteRT) on tiny
litert-torch files: a detection-style head whose box coordinates (0-640) and sigmoid scores
(0-1) share one output is not a `pass` with the full-integer recipe, whatever its whole-tensor
cosine, and the recipe that keeps the last layer float then delivers it; a clean CNN passes
at once."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from tests.support.int8_models import quantize_int8


def test_a_concatenated_detection_head_is_not_a_pass(tmp_path_factory: pytest.TempPathFactory, tmp_path: Path) -> None:
    run = quantize_int8("detector", tmp_path_factory, tmp_path)
    metrics = run.result["metrics"]["tflite_int8"]
    assert metrics["calibration"]["samples"] >= 16
    attempts: list[dict[str, Any]] = run.result["info"]["attempts"]["int8"]
    full = attempts[0]
    assert full["variant"] == "default"
    assert full["verdict"] in ("degraded", "fail"), full
    assert full["min_cosine"] > 0.99  # the whole-tensor cosine is fooled
    (name,) = metrics["outputs"]
    reasons = [r for r in full["reasons"] if "axis 1 (7 channels)" in r]
    assert reasons, full["reasons"]
    assert repr(name) in reasons[0]
    assert "4, 5, 6" in reasons[0]  # the score rows
    assert "keep that head in float" in reasons[0]
    # The second recipe keeps the concatenation and what feeds it in float: the scores survive.
    assert full["outcome"].startswith("lost: ")
    kept = attempts[1]
    assert (kept["variant"], kept["outcome"]) == ("float_sensitive", "kept")
    assert kept["float_ops"]["CONCATENATION"] >= 1
    assert metrics["verdict"] == "pass", metrics["reasons"]
    assert "channels" not in metrics["outputs"][name]


def test_a_clean_cnn_stays_a_pass(tmp_path_factory: pytest.TempPathFactory, tmp_path: Path) -> None:
    run = quantize_int8("cnn", tmp_path_factory, tmp_path)
    metrics = run.result["metrics"]["tflite_int8"]
    assert metrics["verdict"] == "pass", metrics["reasons"]
    assert metrics["min_cosine"] >= 0.99
    (entry,) = metrics["outputs"].values()
    assert "channels" not in entry
    assert entry["top1_agreement"] >= 0.75
    attempts = run.result["info"]["attempts"]["int8"]
    assert [(a["variant"], a["outcome"]) for a in attempts] == [("default", "kept")]  # no fallback needed
