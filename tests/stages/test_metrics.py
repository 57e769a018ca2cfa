"""stages.kit.metrics: the numbers and verdicts every artifact report is built from (numpy only)."""

from __future__ import annotations

import json

import numpy as np
import pytest

from stages.kit.metrics import compare

RNG = np.random.default_rng(0)


def logits(samples: int = 4, classes: int = 10) -> np.ndarray:
    return RNG.standard_normal((samples, 1, classes)).astype(np.float32)


def test_identical_outputs_pass_with_classifier_stats() -> None:
    ref = logits()
    result = compare({"output": ref}, {"output": ref.copy()}, 1e-4)
    assert result["verdict"] == "pass"
    assert result["reasons"] == []
    assert result["samples"] == 4
    assert result["tolerance"] == {"metric": "max_abs/scale", "value": 1e-4}
    out = result["outputs"]["output"]
    assert out["max_abs"] == 0.0
    assert out["mean_abs"] == 0.0
    assert out["cosine"] == pytest.approx(1.0)
    assert out["scale"] == pytest.approx(float(np.abs(ref).max()))
    assert out["top1_agreement"] == 1.0
    assert out["top5_agreement"] == 1.0
    top2 = np.sort(ref.reshape(-1, 10), axis=1)[:, -2:]
    assert out["min_top2_margin"] == pytest.approx(float((top2[:, 1] - top2[:, 0]).min()))
    json.dumps(result, allow_nan=False)


def test_tolerance_is_relative_to_the_scale() -> None:
    ref = np.full((2, 1, 3), 100.0, np.float32)
    ref[:, :, 0] = -1000.0  # scale is max |reference| = 1000
    act = ref + np.float32(0.05)  # 5e-5 x scale
    assert compare({"y": ref}, {"y": act}, 1e-4)["verdict"] == "pass"
    failing = compare({"y": ref}, {"y": act}, 1e-5)
    assert failing["verdict"] == "fail"
    assert "exceeds" in failing["reasons"][0]


def test_every_failing_output_gets_a_reason() -> None:
    ref = {"a": logits(), "b": logits(), "c": logits(), "d": logits()}
    act = {
        "a": ref["a"] + 1.0,  # too far
        "b": ref["b"][:, :, :5],  # wrong shape
        # "c" missing
        "d": ref["d"].copy(),
        "extra": ref["d"],
    }
    result = compare(ref, act, 1e-4)
    assert result["verdict"] == "fail"
    assert len(result["reasons"]) == 3
    joined = " ".join(result["reasons"])
    assert "'a'" in joined
    assert "'b'" in joined
    assert "[1, 5]" in joined
    assert "[1, 10]" in joined
    assert "'c'" in joined
    assert "missing" in joined
    assert result["outputs"]["d"]["pass"] is True
    assert result["extra_outputs"] == ["extra"]


def test_non_finite_values_fail_and_stay_json() -> None:
    ref = logits()
    act = ref.copy()
    act[0, 0, 0] = np.nan
    act[1, 0, 1] = np.inf
    result = compare({"output": ref}, {"output": act}, 1e-4)
    assert result["verdict"] == "fail"
    assert "2 NaN/inf" in result["reasons"][0]
    json.dumps(result, allow_nan=False)


def test_a_broken_reference_fails_too() -> None:
    ref = logits()
    ref[0, 0, 0] = np.nan
    result = compare({"output": ref}, {"output": logits()}, 1e-4)
    assert result["verdict"] == "fail"
    assert "reference" in result["reasons"][0]


def test_all_zero_reference_uses_the_tolerance_as_an_absolute_bound() -> None:
    ref = np.zeros((2, 1, 4), np.float32)
    exact = compare({"y": ref}, {"y": ref.copy()}, 1e-4)
    assert exact["verdict"] == "pass"
    assert exact["outputs"]["y"]["scale"] == 0.0
    assert exact["outputs"]["y"]["cosine"] == 1.0
    off = compare({"y": ref}, {"y": ref + 1e-3}, 1e-4)
    assert off["verdict"] == "fail"
    assert "absolute" in off["reasons"][0]


def test_top1_disagreement_and_relative_error() -> None:
    ref = np.array([[[1.0, 0.9, 0.0, 0.0, 0.0, 0.0]], [[0.0, 2.0, 0.0, 0.0, 0.0, 0.0]]], np.float32)
    act = ref.copy()
    act[0, 0, 1] = 1.1  # flips the top-1 of the first, nearly tied sample
    out = compare({"y": ref}, {"y": act}, 1e-4)["outputs"]["y"]
    assert out["top1_agreement"] == 0.5
    assert out["top5_agreement"] == 1.0
    assert out["min_top2_margin"] == pytest.approx(0.1, abs=1e-6)
    assert out["max_rel"] == pytest.approx(0.2 / 0.9, rel=1e-5)


def test_no_classifier_stats_for_other_shapes() -> None:
    feature_map = RNG.standard_normal((2, 1, 3, 4, 4)).astype(np.float32)
    out = compare({"y": feature_map}, {"y": feature_map}, 1e-4)["outputs"]["y"]
    assert "top1_agreement" not in out
    few_classes = logits(classes=3)
    out = compare({"y": few_classes}, {"y": few_classes}, 1e-4)["outputs"]["y"]
    assert "top1_agreement" in out
    assert "top5_agreement" not in out


def test_integer_outputs_compare_numerically() -> None:
    ref = np.arange(12, dtype=np.int64).reshape(3, 4)
    assert compare({"ids": ref}, {"ids": ref.astype(np.int32)}, 1e-4)["verdict"] == "pass"


def test_first_sample_matching_and_later_ones_drifting_says_the_file_keeps_state() -> None:
    # An LSTM whose initial state persists across invoke() calls: sample 1 is exact,
    # samples 2.. carry the previous sample's state (a few percent off).
    ref = RNG.standard_normal((4, 1, 5, 32)).astype(np.float32)
    drifted = ref.copy()
    drifted[1:] += 0.03 * np.abs(ref).max() * RNG.standard_normal(ref[1:].shape).astype(np.float32)
    result = compare({"output_0": ref}, {"output_0": drifted}, 1e-4)
    assert result["verdict"] == "fail"
    assert any("keeps state between invocations" in reason for reason in result["reasons"]), result["reasons"]
    state = result["outputs"]["output_0"]["keeps_state"]
    assert state["first_max_abs"] == 0.0
    assert state["worst_sample"] >= 1
    assert state["failing_samples"] == 3
    json.dumps(result)


def test_a_file_wrong_from_the_first_sample_is_not_called_stateful() -> None:
    ref = RNG.standard_normal((4, 1, 8)).astype(np.float32)
    result = compare({"output": ref}, {"output": ref + 0.5}, 1e-4)
    assert result["verdict"] == "fail"
    assert not any("keeps state" in reason for reason in result["reasons"])
    assert "keeps_state" not in result["outputs"]["output"]
