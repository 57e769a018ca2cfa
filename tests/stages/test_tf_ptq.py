"""TensorFlow's post-training full-integer quantization (stages.convert.tf_ptq) of an ONNX
converter's SavedModel: one more int8 attempt of quantize.litert, on the tiny CNN classifier
through convert.onnx_tf (TensorFlow 2.15.1) and convert.onnx2tf (TensorFlow 2.21.0)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from tests.support.int8_models import TENSOR_TYPES
from tests.support.tf_ptq_chains import converted, gelu_through_onnx_tf, quantize_with_tf_ptq
from tests.support.toolchain import run_code

# Measured on the CNN (16 calibration, 4 validation samples): onnx-tf's file 0.99948, onnx2tf's
# 0.99948 (min cosine to PyTorch; ai-edge-quantizer's two recipes 0.99799 / 0.99976); a lost
# scale or a float32 weight read as int8 drops far below.
TF_PTQ_MIN_COSINE = 0.999
TF_VERSIONS = {"onnx-tf": "2.15.1", "onnx2tf": "2.21.0"}


@pytest.mark.parametrize("converter", ["onnx-tf", "onnx2tf"])
def test_tensorflow_s_int8_file_is_int8_inside_with_a_float32_boundary(
    converter: str, tmp_path_factory: pytest.TempPathFactory
) -> None:
    run = converted(converter, tmp_path_factory)
    assert run.result["outputs"]["tflite_int8_tf_ptq"] == "model_int8_tf_ptq.tflite"
    assert "tflite_float32" in run.result["outputs"]
    made = run.result["info"]["tf_ptq"]
    assert "error" not in made, made
    assert (made["quantizer"], made["version"]) == ("tf-lite-converter", TF_VERSIONS[converter])
    assert made["calibration"] == {"source": "uploaded", "samples": 16}  # the quantize stage's data
    assert made["calibrated_samples"] == 16
    assert made["converter"]["supported_ops"] == ["TFLITE_BUILTINS_INT8"]
    seen = run_code("torch", TENSOR_TYPES, str(run.output("tflite_int8_tf_ptq")), timeout=120)
    assert seen["ports"] == ["float32", "float32"]  # int8 inside, float32 boundary (no int8_io)
    weighted = [op for op in seen["ops"] if op[0] in ("CONV_2D", "FULLY_CONNECTED")]
    assert len(weighted) == 3  # two convolutions, one linear layer
    for _, inputs, outputs in weighted:  # int8 activations and weights, int32 bias
        assert inputs[:2] == ["int8", "int8"]
        assert outputs == ["int8"]
    names = [op[0] for op in seen["ops"]]
    assert names[0] == "QUANTIZE"
    assert names[-1] == "DEQUANTIZE"


def test_tensorflow_s_int8_files_are_attempts_of_quantize_litert(
    tmp_path_factory: pytest.TempPathFactory, tmp_path: Path
) -> None:
    run = quantize_with_tf_ptq(tmp_path_factory, tmp_path)
    assert run.result["outputs"] == {"tflite_int8": "model_int8.tflite"}
    attempts = run.result["info"]["attempts"]["int8"]
    made = {a["source"]: a for a in attempts if a["variant"] == "tf_ptq"}
    assert sorted(made) == ["onnx-tf", "onnx2tf"]
    for converter, attempt in made.items():
        assert attempt["quantizer"] == f"tf-lite-converter {TF_VERSIONS[converter]}"
        assert attempt["source_file"] == "model_int8_tf_ptq.tflite"
        assert attempt["recipe"] == "tf.lite full-integer post-training quantization"
        assert attempt["verdict"] == "pass", attempt["reasons"]
        assert attempt["min_cosine"] > TF_PTQ_MIN_COSINE
        assert attempt["outcome"] == "kept" or attempt["outcome"].startswith("lost: ")
        assert attempt["float_ops"] == {}  # every op int8 (TFLITE_BUILTINS_INT8)
    kept = next(a for a in attempts if a["outcome"] == "kept")
    assert round(kept["min_cosine"], 4) >= max(round(a["min_cosine"], 4) for a in made.values())
    assert {a["quantizer"] for a in attempts} == {
        "ai-edge-quantizer 0.10.0",
        "tf-lite-converter 2.15.1",
        "tf-lite-converter 2.21.0",
    }


def test_a_tensorflow_int8_file_that_could_not_be_made_is_a_failed_attempt(
    tmp_path_factory: pytest.TempPathFactory, tmp_path: Path
) -> None:
    # A calibration file that does not fit the model: the float32 conversion is left alone.
    calibration = tmp_path / "calibration.npz"
    np.savez(calibration, image=np.zeros((2, 1, 3, 8, 8), np.float32))
    convert = converted("onnx-tf", tmp_path_factory, tmp_path / "convert", calibration)
    assert "tflite_int8_tf_ptq" not in convert.result["outputs"]
    assert {"tflite_float32", "saved_model"} <= set(convert.result["outputs"])
    reason = convert.result["info"]["tf_ptq"]["error"]
    assert reason.startswith("the calibration file: input 'image': samples have shape [2, 1, 3, 8, 8]")

    run = quantize_with_tf_ptq(tmp_path_factory, tmp_path / "quantize", errors={"onnx-tf": reason})
    attempts = run.result["info"]["attempts"]["int8"]
    attempt = next(a for a in attempts if (a["source"], a["variant"]) == ("onnx-tf", "tf_ptq"))
    assert attempt["quantizer"] == "tf-lite-converter 2.15.1"
    assert attempt["outcome"] == f"failed: quantization_failed: {reason}"
    assert attempt["source_file"] == "model_int8_tf_ptq.tflite"
    assert run.result["info"]["failed"] == {}  # the others still give int8
    assert run.result["outputs"] == {"tflite_int8": "model_int8.tflite"}


def test_a_converter_that_runs_out_of_time_costs_only_the_int8_file(
    tmp_path_factory: pytest.TempPathFactory, tmp_path: Path
) -> None:
    # No saved_model target: onnx2tf writes the SavedModel for the int8 file alone, and delivers none.
    options = {"quantizer_timeout_seconds": 0.5}
    run = converted("onnx2tf", tmp_path_factory, tmp_path, options=options, targets=["onnx", "tflite"])
    assert run.result["info"]["tf_ptq"]["error"] == "TensorFlow's converter timed out after 0.5 s"
    assert set(run.result["outputs"]) == {"tflite_float32"}
    assert run.result["info"]["saved_model"] is None


def test_with_int8_io_tensorflow_s_file_takes_and_returns_int8(
    tmp_path_factory: pytest.TempPathFactory, tmp_path: Path
) -> None:
    run = converted("onnx2tf", tmp_path_factory, tmp_path, int8_io=True)
    seen = run_code("torch", TENSOR_TYPES, str(run.output("tflite_int8_tf_ptq")), timeout=120)
    assert seen["ports"] == ["int8", "int8"]
    names = [op[0] for op in seen["ops"]]
    assert "QUANTIZE" not in names
    assert "DEQUANTIZE" not in names


def test_an_op_without_an_int8_builtin_is_the_reason_and_the_float32_file_stays(
    tmp_path_factory: pytest.TempPathFactory, tmp_path: Path
) -> None:
    run = gelu_through_onnx_tf(tmp_path_factory, tmp_path)
    assert "tflite_float32" in run.result["outputs"]  # with Select-TF ops for Erf, flagged
    assert "tflite_int8_tf_ptq" not in run.result["outputs"]
    made = run.result["info"]["tf_ptq"]
    assert made["error"] == (
        "TensorFlow's full-integer quantization failed: no int8 TFLite builtin for the TensorFlow ops Erf "
        "(TFLITE_BUILTINS_INT8 only)"
    )
    assert made["version"] == "2.15.1"
    assert made["calibration"]["source"] == "synthetic"  # no upload: the validation samples, flagged
    assert not (run.output_dir / "model_int8_tf_ptq.tflite").exists()
