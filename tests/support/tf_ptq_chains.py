"""TensorFlow's int8 file (stages.convert.tf_ptq) of the tiny CNN classifier of
``tests.support.int8_models``, through convert.onnx_tf and convert.onnx2tf, once per session:
export.prepare at opset 15 (onnx-tf's limit, which onnx2tf reads too), then each convert stage
with the stage option ``tf_ptq`` and the chain's uploaded calibration (16 images)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from tests.support.int8_models import int8_chain, model_file, spec
from tests.support.stage_runner import StageRun, run_stage

MODEL = "cnn"
CONVERTERS = {"onnx-tf": ("onnx-tf", "convert.onnx_tf"), "onnx2tf": ("onnx2tf", "convert.onnx2tf")}
_RUNS: dict[str, StageRun] = {}


def tf_spec(**changes: Any) -> dict[str, Any]:
    """The CNN's spec for an ONNX converter: int8 asked, the ONNX file read by both converters."""
    return spec(MODEL, toolchain="best", onnx_consumers=["onnx-tf", "onnx2tf"], **changes)


def prepared(factory: pytest.TempPathFactory) -> StageRun:
    """export.prepare of the CNN at opset 15 (once per session)."""
    if "prepare" not in _RUNS:
        chain = int8_chain(MODEL, factory)
        work = factory.mktemp("tf-ptq-prepare")
        run = run_stage("torch", "export.prepare", work, {"model": chain["model"]}, tf_spec())
        assert run.ok, run.result
        _RUNS["prepare"] = run
    return _RUNS["prepare"]


def converted(
    converter: str,
    factory: pytest.TempPathFactory,
    work: Path | None = None,
    calibration: Path | None = None,
    options: dict[str, Any] | None = None,
    **changes: Any,
) -> StageRun:
    """``converter``'s stage with ``tf_ptq`` on the CNN; the default run (the chain's calibration,
    no ``changes``) once per session, others in ``work``."""
    default = work is None
    if default and converter in _RUNS:
        return _RUNS[converter]
    prepare = prepared(factory)
    inputs = {
        "onnx": prepare.output("onnx"),
        "samples": prepare.output("samples"),
        "reference": prepare.output("reference"),
        "calibration": calibration or int8_chain(MODEL, factory)["calibration"],
    }
    env, entry = CONVERTERS[converter]
    where = work or factory.mktemp(f"tf-ptq-{converter}")
    run = run_stage(env, entry, where, inputs, tf_spec(**changes), {"tf_ptq": True, **(options or {})})
    assert run.ok, run.result
    if default:
        _RUNS[converter] = run
    return run


def quantize_with_tf_ptq(factory: pytest.TempPathFactory, work: Path, errors: dict[str, str] | None = None) -> StageRun:
    """quantize.litert under ``best`` as the worker runs it for a job whose candidates are onnx2tf
    (chosen) and onnx-tf, each with its TensorFlow int8 file and that file's version; with
    ``errors`` (candidate -> reason) that candidate's file is missing and the reason is passed."""
    prepare = prepared(factory)
    inputs: dict[str, Path] = {
        "samples": prepare.output("samples"),
        "reference": prepare.output("reference"),
        "calibration": int8_chain(MODEL, factory)["calibration"],
    }
    sources = []
    for name in ("onnx2tf", "onnx-tf"):
        run = converted(name, factory)
        inputs[f"tflite_{name}"] = run.output("tflite_float32")
        made = run.result["info"]["tf_ptq"]
        source: dict[str, Any] = {
            "input": f"tflite_{name}",
            "candidate": name,
            "passed": True,
            "input_transposes": (run.result["info"].get("signature") or {}).get("input_transposes"),
            "prebuilt_versions": {"tf_ptq": made["version"]},
        }
        if errors and name in errors:
            source["prebuilt_errors"] = {"tf_ptq": errors[name]}
        else:
            inputs[f"tflite_int8_tf_ptq_{name}"] = run.output("tflite_int8_tf_ptq")
        sources.append(source)
    inputs["tflite"] = inputs["tflite_onnx2tf"]
    options = {"precisions": ["int8"], "sources": sources}
    run = run_stage("torch", "quantize.litert", work, inputs, tf_spec(), options)
    assert run.ok, run.result
    return run


def gelu_through_onnx_tf(factory: pytest.TempPathFactory, work: Path) -> StageRun:
    """convert.onnx_tf with ``tf_ptq`` on the ``gelu`` model (exact GELU: ONNX Erf), calibrated on
    its validation samples; the float32 file needs flex ops, TensorFlow's int8 file cannot be made."""
    gelu = spec("gelu", toolchain="onnx-tf")
    prepare = run_stage("torch", "export.prepare", work / "prepare", {"model": model_file("gelu", factory)}, gelu)
    assert prepare.ok, prepare.result
    inputs = {name: prepare.output(name) for name in ("onnx", "samples", "reference")}
    run = run_stage("onnx-tf", "convert.onnx_tf", work / "convert", inputs, gelu, {"tf_ptq": True})
    assert run.ok, run.result
    return run
