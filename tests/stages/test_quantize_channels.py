"""The per-channel judge of quantized outputs (stages.quantize.channels, verdict.judge) on real
arrays: an int8 per-tensor quantization simulated with numpy, as ai-edge-quantizer does it
(asymmetric, 256 levels over the tensor's min/max)."""

from __future__ import annotations

import numpy as np

from stages.kit.spec import PlanSpec
from stages.quantize.channels import agreement, grid_step, judge_channels
from stages.quantize.verdict import judge


def int8_per_tensor(values: np.ndarray) -> np.ndarray:
    low, high = min(float(values.min()), 0.0), max(float(values.max()), 0.0)
    scale = (high - low) / 255.0
    zero = np.round(-128 - low / scale)
    q = np.clip(np.round(values / scale + zero), -128, 127)
    return ((q - zero) * scale).astype(np.float32)


def detection_head(samples: int = 4, seed: int = 0) -> np.ndarray:
    """[N, 1, 7, 256]: 4 box rows in 0..640, 3 sigmoid score rows in 0..1."""
    rng = np.random.default_rng(seed)
    boxes = rng.uniform(0, 640, (samples, 1, 4, 256))
    scores = 1 / (1 + np.exp(-rng.standard_normal((samples, 1, 3, 256))))
    return np.concatenate([boxes, scores], axis=2).astype(np.float32)


def test_the_score_rows_of_a_concatenated_head_fail_with_their_channels_named() -> None:
    ref = detection_head()
    act = int8_per_tensor(ref)
    step = grid_step(act, float(np.abs(ref).max()))
    assert step is not None
    assert 2.4 < step < 2.6
    found = judge_channels("detections", ref, act)
    assert found["verdict"] == "fail"
    axis1 = found["channels"]["axis 1"]
    assert axis1["count"] == 7
    assert set(axis1["coarse"]) | set(axis1["collapsed"]) == {4, 5, 6}
    assert axis1["worst_step_share"] > 2.0  # the step is larger than the scores' whole range
    assert "'detections'" in found["reasons"][0]
    assert "4, 5, 6" in found["reasons"][0]
    assert "split the output" in found["reasons"][0]


def test_the_whole_tensor_cosine_is_fooled_but_the_verdict_is_not() -> None:
    ref = detection_head()
    act = int8_per_tensor(ref)
    result = judge("int8", {"detections": ref}, {"detections": act}, PlanSpec.from_json({}))
    assert result["outputs"]["detections"]["cosine"] > 0.999
    assert result["verdict"] == "fail"
    assert any("axis 1 (7 channels)" in reason for reason in result["reasons"])
    assert result["outputs"]["detections"]["channels"]["axis 1"]["count"] == 7


def test_a_collapsed_channel_is_named() -> None:
    rng = np.random.default_rng(2)
    ref = rng.standard_normal((4, 1, 8, 6, 6)).astype(np.float32)
    act = ref + rng.normal(0, 1e-3, ref.shape).astype(np.float32)
    act[:, :, 3] = 0.25
    found = judge_channels("map", ref, act)
    assert found["verdict"] == "fail"
    assert found["channels"]["axis 1"]["collapsed"] == [3]
    assert "channels 3 collapse" in found["reasons"][0]


def test_a_well_spread_output_stays_clean() -> None:
    rng = np.random.default_rng(3)
    ref = rng.standard_normal((4, 1, 7, 256)).astype(np.float32)  # every row the same range
    act = int8_per_tensor(ref)
    assert judge_channels("detections", ref, act)["verdict"] is None
    result = judge("int8", {"detections": ref}, {"detections": act}, PlanSpec.from_json({}))
    assert result["verdict"] == "pass", result["reasons"]
    feature_map = rng.standard_normal((4, 1, 16, 8, 8)).astype(np.float32)
    assert judge_channels("features", feature_map, int8_per_tensor(feature_map))["verdict"] is None


def test_float_outputs_have_no_grid_step() -> None:
    rng = np.random.default_rng(4)
    values = rng.standard_normal((4, 1, 40)).astype(np.float32)
    assert grid_step(values, float(np.abs(values).max())) is None
    assert grid_step(int8_per_tensor(values), float(np.abs(values).max())) is not None


def test_a_classifier_with_few_samples_is_not_judged_per_class() -> None:
    rng = np.random.default_rng(5)
    ref = rng.standard_normal((4, 1, 10)).astype(np.float32)  # 4 values per class: too few
    assert judge_channels("logits", ref, int8_per_tensor(ref))["verdict"] is None


def test_segmentation_and_token_agreement() -> None:
    rng = np.random.default_rng(6)
    seg = rng.standard_normal((2, 1, 4, 8, 8)).astype(np.float32)
    flipped = seg.copy()
    flipped[0, 0] = -flipped[0, 0]  # the first sample's classes reorder
    pixels = agreement("out", seg, flipped)["pixel_class_agreement"]
    assert 0.3 < pixels < 0.75
    assert agreement("out", seg, seg) == {"pixel_class_agreement": 1.0}
    tokens = rng.standard_normal((4, 1, 5, 64)).astype(np.float32)
    wrong = tokens.copy()
    wrong[:2, :, -1] = -wrong[:2, :, -1]
    assert agreement("logits", tokens, wrong) == {"next_token_agreement": 0.5}
    # Hidden states of the same shape are not token logits: no next-token figure for them.
    assert agreement("last_hidden_state", tokens, wrong) == {}
