"""quantize.litert on real float32 .tflite files: ai-edge-quantizer, then stock LiteRT.

The float32 inputs are the litert-torch chains of ``test_litert_torch.py`` (a mobilenet_v2
with randomized batch norm at 1x3x32x32, a transformer encoder block with exact GELU),
built once per session. The CNN is quantized with an uploaded calibration .npz (other
data than the validation samples), the encoder without one (synthetic calibration).
The segmentation family's stand-in is the tiny LR-ASPP of ``make_models.py`` (dense
[1, 4, 64, 64] logits), an ExportedProgram converted by litert-torch
(``segmenter_chain`` of tests/support/quantize_chains.py, also used by ``test_int8_io.py``),
quantized at int8 with an uploaded calibration .npz.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest

from stages.kit.contract import EXIT_STAGE_ERROR
from tests.support.litert_chains import chain, spec_for
from tests.support.matrix import QUANTIZATIONS
from tests.support.quantize_chains import (
    CALIBRATION_SAMPLES,
    INT8_MIN_COSINE,
    PRECISIONS,
    quantize,
    quantize_segmenter,
)
from tests.support.stage_runner import StageRun, run_stage


@pytest.fixture(scope="module")
def chains(tmp_path_factory: pytest.TempPathFactory) -> dict[str, dict[str, StageRun]]:
    return {case: chain(case, tmp_path_factory) for case in QUANTIZATIONS}


@pytest.fixture(scope="module")
def quantized(chains: dict[str, Any], tmp_path_factory: pytest.TempPathFactory) -> dict[str, StageRun]:
    work = tmp_path_factory.mktemp("quantize")
    calibration = work / "calibration.npz"
    rng = np.random.default_rng(1)  # not the validation samples' seed
    np.savez(calibration, input=rng.standard_normal((CALIBRATION_SAMPLES, 1, 3, 32, 32)).astype(np.float32))
    cnn = quantize(chains["mobilenet_v2"], work / "cnn", spec_for("mobilenet_v2"), calibration=calibration)
    encoder = quantize(chains["encoder"], work / "encoder", spec_for("encoder"))
    for run in (cnn, encoder):
        assert run.ok, run.result
    return {"mobilenet_v2": cnn, "encoder": encoder}


def cosine(metrics: dict[str, Any]) -> float:
    return float(metrics["outputs"]["output"]["cosine"])


@pytest.mark.parametrize("case", list(QUANTIZATIONS))
def test_every_precision_is_produced_with_float32_io(quantized: dict[str, StageRun], case: str) -> None:
    run = quantized[case]
    assert run.result["outputs"] == {f"tflite_{p}": f"model_{p}.tflite" for p in PRECISIONS}
    assert run.result["info"]["failed"] == {}
    for precision in PRECISIONS:
        metrics = run.result["metrics"][f"tflite_{precision}"]
        assert run.output(f"tflite_{precision}").stat().st_size == metrics["size_bytes"]
        assert metrics["toolchain"] == "ai-edge-quantizer"
        assert metrics["quantizer"]["library"] == "ai-edge-quantizer"
        assert metrics["quantizer"]["version"] == "0.10.0"
        assert metrics["operators"]["flex"] == metrics["operators"]["custom"] == []
        assert metrics["requires_flex"] is False
        signature = metrics["signature"]
        assert {io["dtype"] for io in [*signature["inputs"].values(), *signature["outputs"].values()]} == {"float32"}
        assert 0 < metrics["latency_ms"]["median_1_thread"] < 1000


@pytest.mark.parametrize("case", list(QUANTIZATIONS))
def test_float16_passes_its_tolerance(quantized: dict[str, StageRun], case: str) -> None:
    metrics = quantized[case].result["metrics"]["tflite_float16"]
    assert metrics["verdict"] == "pass", metrics["reasons"]
    assert metrics["advisory"] is False
    assert metrics["tolerance"] == {"metric": "max_abs/scale", "value": 1e-2}
    output = metrics["outputs"]["output"]
    assert output["max_abs"] <= 1e-2 * output["scale"]
    assert metrics["quantizer"]["recipe"]["entries"][0]["algorithm_key"] == "float_casting"
    assert "DEQUANTIZE" in metrics["operators"]["builtin"]  # fp16 weights, float32 compute


@pytest.mark.parametrize("case", list(QUANTIZATIONS))
def test_dynamic_range_is_close_to_pytorch(quantized: dict[str, StageRun], case: str) -> None:
    metrics = quantized[case].result["metrics"]["tflite_dynamic_range"]
    assert metrics["advisory"] is True
    assert cosine(metrics) >= 0.99
    assert metrics["verdict"] == "pass", metrics["reasons"]
    assert metrics["tolerance"] == {"metric": "min cosine", "pass": 0.99, "degraded": 0.9}
    assert metrics["quantizer"]["recipe"]["name"] == "dynamic_wi8_afp32"
    assert metrics["calibration"]["source"] == "none"


def test_int8_on_the_cnn_uses_the_uploaded_calibration(quantized: dict[str, StageRun]) -> None:
    run = quantized["mobilenet_v2"]
    metrics = run.result["metrics"]["tflite_int8"]
    assert metrics["advisory"] is True
    assert cosine(metrics) >= 0.9
    assert metrics["verdict"] in ("pass", "degraded")
    assert metrics["calibration"] == {"source": "uploaded", "samples": CALIBRATION_SAMPLES}
    assert run.result["info"]["calibration"]["source"] == "uploaded"
    assert run.result["info"]["warnings"] == []
    # Full integer inside, float32 at the boundary.
    assert {"QUANTIZE", "DEQUANTIZE", "CONV_2D"} <= set(metrics["operators"]["builtin"])
    assert metrics["operator_counts"]["QUANTIZE"] == metrics["operator_counts"]["DEQUANTIZE"] == 1
    assert "top1_agreement" in metrics["outputs"]["output"]
    assert "min_top2_margin" in metrics["outputs"]["output"]


def test_without_calibration_int8_is_calibrated_on_synthetic_samples(quantized: dict[str, StageRun]) -> None:
    run = quantized["encoder"]
    metrics = run.result["metrics"]["tflite_int8"]
    warning = "calibration: synthetic (accuracy unknown)"
    assert metrics["calibration"] == {"source": "synthetic", "samples": 4, "warning": warning}
    assert warning in run.result["info"]["warnings"]
    # The advisory rule (docs/report.md): pass from a cosine of 0.99, degraded from 0.9.
    assert cosine(metrics) > 0.9
    assert metrics["verdict"] == ("pass" if cosine(metrics) >= 0.99 else "degraded")


@pytest.mark.parametrize("case", list(QUANTIZATIONS))
def test_quantized_files_are_compared_with_the_float32_file(quantized: dict[str, StageRun], case: str) -> None:
    run = quantized[case]
    float_size = run.result["info"]["float32"]["size_bytes"]
    assert run.result["info"]["float32"]["ran"] is True
    for precision in PRECISIONS:
        metrics = run.result["metrics"][f"tflite_{precision}"]
        vs_float32 = metrics["vs_float32"]
        assert vs_float32["verdict"] == metrics["verdict"]
        assert vs_float32["outputs"]["output"]["cosine"] > 0.9
        assert metrics["size_bytes"] < float_size
    sizes = {p: run.result["metrics"][f"tflite_{p}"]["size_ratio_vs_float32"] for p in PRECISIONS}
    if case == "mobilenet_v2":  # weights dominate: int8 ~ 1/4, float16 ~ 1/2
        assert sizes["dynamic_range"] < 0.35
        assert sizes["int8"] < 0.4
        assert 0.45 < sizes["float16"] < 0.6


def test_the_quantized_file_validates_in_litert_validate(
    chains: dict[str, Any], quantized: dict[str, StageRun], tmp_path: Path
) -> None:
    prepare = chains["mobilenet_v2"]["prepare"]
    inputs = {
        "tflite": quantized["mobilenet_v2"].output("tflite_float16"),
        "samples": prepare.output("samples"),
        "reference": prepare.output("reference"),
    }
    run = run_stage("torch", "validate.tflite", tmp_path, inputs, spec_for("mobilenet_v2"), {"precision": "float16"})
    metrics = run.result["metrics"]["tflite_float16"]
    assert metrics["verdict"] == "pass", metrics["reasons"]
    ours = quantized["mobilenet_v2"].result["metrics"]["tflite_float16"]["outputs"]["output"]
    assert metrics["outputs"]["output"]["max_abs"] == pytest.approx(ours["max_abs"])


def test_a_precision_that_cannot_be_produced_is_recorded(chains: dict[str, Any], tmp_path: Path) -> None:
    calibration = tmp_path / "calibration.npz"
    np.savez(calibration, not_an_input=np.zeros((2, 1, 8, 32), np.float32))
    run = quantize(
        chains["encoder"],
        tmp_path / "run",
        spec_for("encoder"),
        {"precisions": ["int8", "int4", "dynamic_range"]},
        calibration=calibration,
    )
    assert run.ok, run.result
    assert run.result["outputs"] == {"tflite_dynamic_range": "model_dynamic_range.tflite"}
    failed = run.result["info"]["failed"]
    assert set(failed) == {"int8", "int4"}
    assert failed["int8"]["code"] == "invalid_calibration"
    assert "not_an_input" in failed["int8"]["reason"]
    assert failed["int4"]["code"] == "precision_unavailable"
    assert not (run.output_dir / "model_int8.tflite").exists()


def test_a_file_the_runtime_refuses_is_recorded(
    chains: dict[str, Any], quantized: dict[str, StageRun], tmp_path: Path
) -> None:
    # An int8 file given as "float32": the float16 recipe casts weights of ops whose
    # activations are int8, and LiteRT refuses the result when it prepares the graph.
    run = quantize(
        chains["encoder"],
        tmp_path,
        spec_for("encoder"),
        {"precisions": ["float16"]},
        tflite=quantized["encoder"].output("tflite_int8"),
    )
    assert run.ok, run.result
    assert run.result["outputs"] == {}
    failure = run.result["info"]["failed"]["float16"]
    assert failure["code"] == "runtime_failed"
    assert "failed to prepare" in failure["reason"]
    assert run.result["metrics"]["tflite_float16"]["verdict"] == "fail"


def test_an_unreadable_tflite_is_invalid_tflite(chains: dict[str, Any], tmp_path: Path) -> None:
    garbage = tmp_path / "model.tflite"
    garbage.write_bytes(b"\x00" * 64)
    run = quantize(chains["encoder"], tmp_path / "run", spec_for("encoder"), tflite=garbage)
    assert run.returncode == EXIT_STAGE_ERROR
    assert run.error_code == "invalid_tflite"


def test_int8_on_the_segmenter_keeps_its_dense_output(tmp_path_factory: pytest.TempPathFactory) -> None:
    run = quantize_segmenter(tmp_path_factory, tmp_path_factory.mktemp("segmenter-int8"))
    assert run.result["outputs"] == {"tflite_int8": "model_int8.tflite"}
    assert run.result["info"]["failed"] == {}
    metrics = run.result["metrics"]["tflite_int8"]
    # Measured: min cosine 0.9985 (pass), vs the float32 file too.
    assert metrics["min_cosine"] >= INT8_MIN_COSINE
    assert metrics["verdict"] in ("pass", "degraded"), metrics["reasons"]
    assert metrics["vs_float32"]["min_cosine"] >= INT8_MIN_COSINE
    output = metrics["outputs"]["out"]
    assert output["mean_abs_over_scale"] < 0.05
    assert "top1_agreement" not in output  # per-pixel logits are not a classifier's scores
    assert metrics["calibration"] == {"source": "uploaded", "samples": CALIBRATION_SAMPLES}
    # Full integer inside, the LR-ASPP ops included; float32 at the boundary.
    counts = metrics["operator_counts"]
    assert counts["QUANTIZE"] == counts["DEQUANTIZE"] == 1
    assert {"CONV_2D", "HARD_SWISH", "LOGISTIC", "MUL", "RESIZE_BILINEAR"} <= set(counts)
    signature = metrics["signature"]
    assert signature["boundary"] == "float"
    assert signature["outputs"] == {"out": {"shape": [1, 4, 64, 64], "dtype": "float32"}}
