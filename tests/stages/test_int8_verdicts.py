"""int8 verdicts through the real quantize stage (ai-edge-quantizer, then stock LiteRT) on tiny
litert-torch files: a detection-style head whose box coordinates (0-640) and sigmoid scores
(0-1) share one output is not a `pass` with the full-integer recipe, whatever its whole-tensor
cosine, and the recipe that keeps the last layer float then delivers it; a clean CNN passes
at once."""

from __future__ import annotations

from typing import Any

import pytest

from tests.support.int8_models import quantize_int8
from tests.support.stage_runner import StageRun


@pytest.fixture(scope="module")
def detector(tmp_path_factory: pytest.TempPathFactory) -> StageRun:
    return quantize_int8("detector", tmp_path_factory, tmp_path_factory.mktemp("quantize-detector"))


@pytest.fixture(scope="module")
def cnn(tmp_path_factory: pytest.TempPathFactory) -> StageRun:
    return quantize_int8("cnn", tmp_path_factory, tmp_path_factory.mktemp("quantize-cnn"))


def test_a_concatenated_detection_head_is_not_a_pass(detector: StageRun) -> None:
    run = detector
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


def test_a_clean_cnn_stays_a_pass(cnn: StageRun) -> None:
    run = cnn
    metrics = run.result["metrics"]["tflite_int8"]
    assert metrics["verdict"] == "pass", metrics["reasons"]
    assert metrics["min_cosine"] >= 0.99
    (entry,) = metrics["outputs"].values()
    assert "channels" not in entry
    assert entry["top1_agreement"] >= 0.75
    attempts = run.result["info"]["attempts"]["int8"]
    assert [(a["variant"], a["outcome"]) for a in attempts] == [("default", "kept")]  # no fallback needed


def test_the_detection_head_names_the_concatenation_that_crushes_its_scores(detector: StageRun) -> None:
    full, kept = detector.result["info"]["attempts"]["int8"]
    found = full["error_sources"]
    assert (found["samples"], found["unmatched"]) == (2, 0), found
    assert found["compared"] >= 8  # every op output of the little graph but the conversions
    assert found["seconds"] < 30
    first, second = found["ops"][:2]
    assert len(found["ops"]) == 5
    # The op where box coordinates (0-640) and scores (0-1) meet one int8 scale.
    assert first["op"] == "CONCATENATION"
    assert (first["dtype"], first["shape"]) == ("int8", [1, 7, 256])
    assert first["cosine"] > 0.999  # what the whole tensor shows
    assert first["max_abs_error_of_scale"] < 0.05
    worst = first["worst_channel"]
    assert (worst["axis"], worst["channel"] in (4, 5, 6)) == (1, True), worst  # a score row
    assert worst["max_abs_error_of_range"] > 1.0  # the error exceeds the scores' whole range
    assert first["step"] > worst["float_range"]  # the int8 step is larger than that range
    # Nothing upstream comes close: the convolutions and sigmoids quantize well.
    assert second["worst_channel"]["max_abs_error_of_range"] < 0.3
    assert all(op["op"] not in ("QUANTIZE", "DEQUANTIZE") for op in found["ops"])
    # The kept file passes: no diagnosis, in the attempt or the artifact.
    assert (kept["verdict"], kept["error_sources"]) == ("pass", None)
    assert "error_sources" not in detector.result["metrics"]["tflite_int8"]


def test_a_passing_cnn_gets_no_error_sources(cnn: StageRun) -> None:
    (attempt,) = cnn.result["info"]["attempts"]["int8"]
    assert (attempt["verdict"], attempt["error_sources"]) == ("pass", None)
    assert "error_sources" not in cnn.result["metrics"]["tflite_int8"]
