"""quantize.litert runs for the quantization tests: the segmentation stand-in's chain (once per
session; tests/stages/test_quantize.py and test_int8_io.py quantize it) and one quantize call."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest

from tests.support.matrix import QUANTIZED_PRECISIONS
from tests.support.stage_runner import SUPPORT, StageRun, make_torch_models, run_stage

PRECISIONS = list(QUANTIZED_PRECISIONS)
CALIBRATION_SAMPLES = 16
# The bar the issue sets for int8 on the CNN and segmentation families (DESIGN's "degraded").
INT8_MIN_COSINE = 0.9

MAKE_SEGMENTER = f"""
import json, sys
from pathlib import Path

sys.path.insert(0, {str(SUPPORT)!r})
from make_models import quantization_files

print(json.dumps(quantization_files(Path(sys.argv[1]))))
"""
SEGMENTER_SPEC: dict[str, Any] = {
    "model_format": "exported_program",
    "inputs": [{"name": "image", "shape": [1, 3, 64, 64], "dtype": "float32"}],
    "opset": None,
    "exporter": "auto",
    "toolchain": "litert-torch",
    "layout": "nchw",
    "tolerance": {"float32": 1e-4},
    "quantization": ["float32", "int8"],
    "validation_samples": 4,
    "seed": 0,
}
_SEGMENTER: dict[str, Any] = {}


def quantize(
    runs: dict[str, StageRun],
    work: Path,
    spec: dict[str, Any],
    options: dict[str, Any] | None = None,
    tflite: Path | None = None,
    calibration: Path | None = None,
) -> StageRun:
    prepare = runs["prepare"]
    inputs = {
        "tflite": tflite or runs["convert"].output("tflite_float32"),
        "samples": prepare.output("samples"),
        "reference": prepare.output("reference"),
    }
    if calibration is not None:
        inputs["calibration"] = calibration
    return run_stage("torch", "quantize.litert", work, inputs, spec, {"precisions": PRECISIONS, **(options or {})})


def segmenter_chain(factory: pytest.TempPathFactory) -> dict[str, Any]:
    """export.prepare -> convert.litert_torch on the LR-ASPP stand-in, and a calibration
    .npz of other images than the validation samples; once per session."""
    if not _SEGMENTER:
        work = factory.mktemp("segmenter")
        model = make_torch_models(MAKE_SEGMENTER, work / "models")["lraspp_program"]
        prepare = run_stage("torch", "export.prepare", work / "prepare", {"model": model}, SEGMENTER_SPEC)
        assert prepare.ok, prepare.result
        shared = {"samples": prepare.output("samples"), "reference": prepare.output("reference")}
        convert = run_stage(
            "torch", "convert.litert_torch", work / "convert", {"model": model, **shared}, SEGMENTER_SPEC
        )
        assert convert.ok, convert.result
        calibration = work / "calibration.npz"
        rng = np.random.default_rng(1)
        np.savez(calibration, image=rng.standard_normal((CALIBRATION_SAMPLES, 1, 3, 64, 64)).astype(np.float32))
        _SEGMENTER.update(prepare=prepare, convert=convert, calibration=calibration)
    return _SEGMENTER


def quantize_segmenter(factory: pytest.TempPathFactory, work: Path, **spec_changes: Any) -> StageRun:
    """quantize.litert at int8 on the segmentation stand-in."""
    runs = segmenter_chain(factory)
    spec = {**SEGMENTER_SPEC, **spec_changes}
    run = quantize(runs, work, spec, {"precisions": ["int8"]}, calibration=runs["calibration"])
    assert run.ok, run.result
    return run
