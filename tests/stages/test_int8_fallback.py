"""More than one way to int8 (quantize.litert with several float32 sources and recipes), on a
ResNet-style stem and block with a padded max-pool, as torchvision's resnet18 has: onnx2tf
writes it as PADV2, which ai-edge-quantizer 0.10's full-integer recipe cannot quantize
("Ranks of scales (5) and zps (5) must be the same as the tensor rank (1)"); the recipe that
keeps sensitive ops float, or litert-torch's float32 file of the same model, gets int8."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.support.int8_models import quantize_sources


def test_a_padded_max_pool_gets_int8_through_the_fallback(
    tmp_path_factory: pytest.TempPathFactory, tmp_path: Path
) -> None:
    run = quantize_sources("padded_pool", tmp_path_factory, tmp_path)
    assert run.result["outputs"] == {"tflite_int8": "model_int8.tflite"}
    assert run.result["info"]["failed"] == {}
    metrics = run.result["metrics"]["tflite_int8"]
    assert metrics["verdict"] == "pass", metrics["reasons"]
    assert metrics["min_cosine"] >= 0.99
    attempts = run.result["info"]["attempts"]["int8"]
    assert metrics["attempts"] == attempts
    assert len(attempts) >= 2
    first = attempts[0]
    assert (first["source"], first["variant"]) == ("onnx2tf", "default")
    assert first["outcome"].startswith("failed: quantization_failed: ")
    assert "Ranks of scales" in first["outcome"]
    kept = [a for a in attempts if a["outcome"] == "kept"]
    assert len(kept) == 1
    assert kept[0]["verdict"] == "pass"
    assert kept[0]["min_cosine"] == metrics["min_cosine"]
    assert metrics["source"]["candidate"] == kept[0]["source"]
    if kept[0]["variant"] == "float_sensitive":
        assert kept[0]["float_ops"].get("PADV2", 0) >= 1  # the op that failed stays float
    assert first["quantizer"] == "ai-edge-quantizer 0.10.0"
    assert "?" not in kept[0]["float_ops"]


def test_under_best_every_attempt_runs_and_the_best_is_kept(
    tmp_path_factory: pytest.TempPathFactory, tmp_path: Path
) -> None:
    run = quantize_sources("padded_pool", tmp_path_factory, tmp_path, toolchain="best")
    attempts = run.result["info"]["attempts"]["int8"]
    assert [(a["source"], a["variant"]) for a in attempts] == [
        ("onnx2tf", "default"),
        ("onnx2tf", "float_sensitive"),
        ("litert-torch", "default"),
        ("litert-torch", "float_sensitive"),
    ]
    produced = [a for a in attempts if not a["outcome"].startswith("failed")]
    assert len(produced) >= 2
    kept = next(a for a in attempts if a["outcome"] == "kept")
    assert kept["verdict"] == "pass"
    best_cosine = max(a["min_cosine"] for a in produced if a["verdict"] == kept["verdict"])
    assert round(kept["min_cosine"], 4) == round(best_cosine, 4)  # equal to 4 digits: latency decides
    assert all(a["outcome"].startswith(("kept", "lost: ", "failed: ")) for a in attempts)
    assert run.result["metrics"]["tflite_int8"]["min_cosine"] == kept["min_cosine"]
