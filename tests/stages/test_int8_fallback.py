"""More than one way to int8 (quantize.litert with several float32 sources and recipes), on a
ResNet-style stem and block with a padded max-pool, as torchvision's resnet18 has: onnx2tf
writes it as PADV2, which ai-edge-quantizer 0.10's full-integer recipe cannot quantize
("Ranks of scales (5) and zps (5) must be the same as the tensor rank (1)"); the recipe that
keeps sensitive ops float, or litert-torch's float32 file of the same model, gets int8.
litert-torch's PT2E file of the module (made by convert.litert_torch) is one more attempt."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from tests.support.int8_models import TENSOR_TYPES, int8_chain, quantize_sources, spec
from tests.support.stage_runner import run_stage
from tests.support.toolchain import run_code

# Measured (16 calibration, 4 validation samples): PT2E 0.99996, ai-edge-quantizer's full-integer
# recipe on litert-torch's float32 file 0.99982; a lost residual scale or channel drops below.
PT2E_MIN_COSINE = 0.9995


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


def test_litert_torch_s_pt2e_file_is_one_more_int8_attempt(
    tmp_path_factory: pytest.TempPathFactory, tmp_path: Path
) -> None:
    run = quantize_sources("padded_pool", tmp_path_factory, tmp_path, toolchain="best", pt2e=True)
    attempts = run.result["info"]["attempts"]["int8"]
    # PT2E first on litert-torch's source: it beats the full-integer recipe (attempts.py).
    assert [(a["source"], a["variant"]) for a in attempts] == [
        ("onnx2tf", "default"),
        ("onnx2tf", "float_sensitive"),
        ("litert-torch", "pt2e"),
        ("litert-torch", "default"),
        ("litert-torch", "float_sensitive"),
    ]
    pt2e = attempts[2]
    assert pt2e["quantizer"] == "litert-torch-pt2e 0.10.0"
    assert {a["quantizer"] for a in attempts} == {"litert-torch-pt2e 0.10.0", "ai-edge-quantizer 0.10.0"}
    assert pt2e["source_file"] == "model_int8_pt2e.tflite"
    assert pt2e["recipe"] == "pt2e symmetric per-channel, static"
    assert pt2e["verdict"] == "pass"
    assert pt2e["min_cosine"] > PT2E_MIN_COSINE
    assert pt2e["outcome"] == "kept" or pt2e["outcome"].startswith("lost: ")
    assert pt2e["float_ops"] == {"ADD": 1, "MEAN": 1}  # PT2E annotates no add+relu, no mean
    kept = next(a for a in attempts if a["outcome"] == "kept")
    assert round(kept["min_cosine"], 4) >= round(pt2e["min_cosine"], 4)

    convert = int8_chain("padded_pool", tmp_path_factory)["convert"]
    made = convert.result["info"]["pt2e"]
    assert made["calibration"] == {"source": "uploaded", "samples": 16}  # the quantize stage's data
    assert made["calibrated_samples"] == 16
    assert "error" not in made
    seen = run_code("torch", TENSOR_TYPES, str(convert.output("tflite_int8_pt2e")), timeout=120)
    assert seen["ports"] == ["float32", "float32"]  # int8 inside, float32 boundary (no int8_io)
    weighted = [op for op in seen["ops"] if op[0] in ("CONV_2D", "FULLY_CONNECTED")]
    assert len(weighted) == 4
    for _, inputs, outputs in weighted:  # int8 activations and weights, int32 bias
        assert inputs[:2] == ["int8", "int8"]
        assert outputs == ["int8"]
    assert [op[0] for op in seen["ops"]][:1] == ["QUANTIZE"]
    assert [op[0] for op in seen["ops"]][-1:] == ["DEQUANTIZE"]


def test_a_pt2e_file_litert_torch_could_not_make_is_a_failed_attempt(
    tmp_path_factory: pytest.TempPathFactory, tmp_path: Path
) -> None:
    reason = "litert-torch's PT2E flow failed: a stand-in reason"
    run = quantize_sources("padded_pool", tmp_path_factory, tmp_path, toolchain="best", pt2e_error=reason)
    attempts = run.result["info"]["attempts"]["int8"]
    pt2e = attempts[2]
    assert (pt2e["source"], pt2e["variant"], pt2e["quantizer"]) == ("litert-torch", "pt2e", "litert-torch-pt2e 0.10.0")
    assert pt2e["outcome"] == f"failed: quantization_failed: {reason}"
    assert pt2e["source_file"] == "model_int8_pt2e.tflite"
    assert run.result["info"]["failed"] == {}  # the others still give int8
    assert run.result["outputs"] == {"tflite_int8": "model_int8.tflite"}


def test_a_pt2e_failure_leaves_the_float32_conversion_alone(
    tmp_path_factory: pytest.TempPathFactory, tmp_path: Path
) -> None:
    chain = int8_chain("padded_pool", tmp_path_factory)
    prepare = chain["prepare"]
    calibration = tmp_path / "calibration.npz"
    np.savez(calibration, image=np.zeros((2, 1, 3, 8, 8), np.float32))  # not the model's input shape
    inputs = {
        "model": chain["model"],
        "calibration": calibration,
        "samples": prepare.output("samples"),
        "reference": prepare.output("reference"),
    }
    run = run_stage("torch", "convert.litert_torch", tmp_path / "convert", inputs, spec("padded_pool"))
    assert run.ok, run.result
    assert run.result["outputs"] == {"tflite_float32": "model_float32.tflite"}
    pt2e = run.result["info"]["pt2e"]
    assert pt2e["quantizer"] == "litert-torch-pt2e"
    # The same words quantize.litert gives its int8 precision for this file.
    assert pt2e["error"].startswith("the calibration file: input 'image': samples have shape [2, 1, 3, 8, 8]")
