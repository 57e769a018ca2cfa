"""The ranking of stages.quantize.error_sources on numpy arrays (the real interpreters are in
tests/stages/test_int8_verdicts.py): a channel crushed by a step larger than its range ranks
above a tensor with only rounding noise, even where its whole-tensor error and cosine look
better; integer tensors are dequantized per tensor and per axis."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from stages.quantize.error_sources import Stats, cosine, dequantize, locate, rank


def stats(name: str, ref: np.ndarray, act: np.ndarray) -> Stats:
    found = Stats("OP", 0, name, "int8", list(ref.shape), None)
    found.add(ref, act)
    return found


def test_a_crushed_channel_ranks_above_rounding_noise() -> None:
    rng = np.random.default_rng(0)
    boxes = rng.uniform(0, 640, (1, 4, 256))
    scores = rng.uniform(0.05, 0.95, (1, 3, 256))
    head = np.concatenate([boxes, scores], axis=1)
    crushed = np.concatenate([boxes, np.zeros_like(scores)], axis=1)  # every score became 0.0
    features = rng.standard_normal((1, 8, 8, 16))
    noisy = features + rng.uniform(-0.02, 0.02, features.shape)  # a step of 0.04 on a range of ~6
    top = rank([stats("noisy", features, noisy), stats("head", head, crushed)])
    assert [entry["tensor"] for entry in top] == ["head", "noisy"]
    first = top[0]
    assert first["cosine"] > 0.9999  # the whole-tensor numbers hide it
    assert first["max_abs_error_of_scale"] < 0.002
    worst = first["worst_channel"]
    assert worst["axis"] == 1
    assert worst["channel"] in (4, 5, 6)
    assert 0.9 < worst["max_abs_error_of_range"] < 1.1  # the largest score, all lost
    assert top[1]["worst_channel"]["max_abs_error_of_range"] < 0.02


def test_dead_channels_and_small_tensors_are_not_judged() -> None:
    ref = np.zeros((1, 4, 32))
    ref[:, 0] = np.linspace(-1, 1, 32)
    act = ref + 0.01
    worst = stats("t", ref, act).worst_channel()
    assert worst is not None
    assert worst["channel"] == 0  # channels 1-3 never vary
    assert stats("v", np.ones((1, 8)), np.ones((1, 8))).worst_channel() is None  # 1 value per channel


def test_dequantize_per_tensor_and_per_axis() -> None:
    value = np.array([[-128, 0, 127], [10, 20, 30]], np.int8)
    per_tensor = {"quantization_parameters": {"scales": [0.5], "zero_points": [-1], "quantized_dimension": 0}}
    assert dequantize(value, per_tensor)[0].tolist() == [-63.5, 0.5, 64.0]
    per_axis = {"quantization_parameters": {"scales": [1.0, 2.0], "zero_points": [0, 0], "quantized_dimension": 0}}
    assert dequantize(value, per_axis)[1].tolist() == [20.0, 40.0, 60.0]
    floats = np.ones(3, np.float32)
    assert dequantize(floats, per_tensor) is floats
    assert cosine(np.zeros(3), np.zeros(3)) == 1.0
    assert cosine(np.ones(3), np.zeros(3)) == 0.0


def test_a_diagnostic_that_cannot_run_gives_a_reason_and_never_raises(tmp_path: Path) -> None:
    missing = tmp_path / "missing.tflite"
    found = locate(missing, missing, tmp_path / "samples.npz", ["image"], {}, timeout=60)
    assert found["ops"] == []
    assert found["reason"].startswith("the diagnostic failed: ")
