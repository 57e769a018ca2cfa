"""Every upload format that is not a state dict, taken through a converter to a validated
float32 .tflite: the rows of ``UPLOAD_CONVERSIONS`` (tests/support/matrix.py).

TorchScript, ONNX, ExportedProgram and pickled-module uploads of one tiny CNN (batch norm,
depthwise convolutions) are prepared by ``export.prepare`` for the row's converter, converted
(onnx2tf; TorchScript also by onnx-tf, with its SavedModel) and validated in stock LiteRT
against the reference of their own runtime. The rows run side by side, two at a time.
"""

from __future__ import annotations

import zipfile
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest

from domain.jobs.plan import CONVERTERS
from tests.support.matrix import UPLOAD_CONVERSIONS, Conversion
from tests.support.models import spec_of
from tests.support.stage_runner import StageRun, make_torch_models, run_stage

TOLERANCE = 1e-4
OPTIONS = {"enable_pickled_module": True}  # as the worker passes it when the operator enabled it
VALIDATE = {"precision": "float32", "warmup": 1, "runs": 2, "threads_all": 1}

# The pickled module: make_models.py writes the other formats of the same kind of CNN.
MAKE_PICKLED = r"""
import json, sys
from pathlib import Path

import torch
from torch import nn

out = Path(sys.argv[1])
out.mkdir(parents=True, exist_ok=True)
torch.manual_seed(2)
model = nn.Sequential(
    nn.Conv2d(3, 8, 3, 2, 1, bias=False), nn.BatchNorm2d(8), nn.ReLU6(),
    nn.Conv2d(8, 8, 3, 1, 1, groups=8, bias=False), nn.BatchNorm2d(8), nn.ReLU6(),
    nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8, 10),
)
with torch.no_grad():
    for module in model.modules():
        if isinstance(module, nn.BatchNorm2d):
            module.running_mean.normal_(0.0, 0.1)
            module.running_var.uniform_(0.5, 1.5)
torch.save(model.eval(), out / "pickled_cnn.pt")
print(json.dumps({"pickled_cnn": str(out / "pickled_cnn.pt")}))
"""


def spec_for(row: Conversion, consumers: list[str]) -> dict[str, Any]:
    # TINY_MODELS gives the inputs of TorchScript and pickled modules, which carry no signature.
    return spec_of(
        row.tiny,
        tolerance={"float32": TOLERANCE},
        onnx_consumers=consumers,
        toolchain=row.converter,
        targets=list(row.targets),
    )


def consumers_of(model: str) -> list[str]:
    """The converters of every row of ``model``: its ONNX file is prepared once for all."""
    return sorted({row.converter for row in UPLOAD_CONVERSIONS.values() if row.model == model})


@pytest.fixture(scope="module")
def conversions(stage_models: dict[str, Path], tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    work = tmp_path_factory.mktemp("conversions")
    models = {**stage_models, **make_torch_models(MAKE_PICKLED, work / "models")}
    by_model = {row.model: row for row in UPLOAD_CONVERSIONS.values()}

    def prepare(model: str) -> StageRun:
        spec = spec_for(by_model[model], consumers_of(model))
        return run_stage("torch", "export.prepare", work / model / "prepare", {"model": models[model]}, spec, OPTIONS)

    def convert(name: str) -> dict[str, StageRun | None]:
        row = UPLOAD_CONVERSIONS[name]
        prepared = prepares[row.model].result()
        if not prepared.ok:
            return {"convert": None, "validate": None}
        converter = CONVERTERS[row.converter]
        spec = spec_for(row, consumers_of(row.model))
        shared = {"samples": prepared.output("samples"), "reference": prepared.output("reference")}
        source = {"onnx": prepared.output("onnx")} if converter.source == "onnx" else {"model": models[row.model]}
        converted = run_stage(converter.env, converter.entry, work / name / "convert", {**source, **shared}, spec)
        if not converted.ok:
            return {"convert": converted, "validate": None}
        tflite = {"tflite": converted.output("tflite_float32"), **shared}
        validated = run_stage("torch", "validate.tflite", work / name / "validate", tflite, spec, VALIDATE)
        return {"convert": converted, "validate": validated}

    with ThreadPoolExecutor(max_workers=2) as pool:
        prepares = {model: pool.submit(prepare, model) for model in dict.fromkeys(by_model)}
        rows = {name: pool.submit(convert, name) for name in UPLOAD_CONVERSIONS}
        return {
            "prepare": {model: future.result() for model, future in prepares.items()},
            "rows": {name: future.result() for name, future in rows.items()},
        }


def within_tolerance(metrics: dict[str, Any]) -> None:
    assert metrics["verdict"] == "pass", metrics["reasons"]
    for name, numbers in metrics["outputs"].items():
        assert numbers["scale"] > 1e-3, name  # real numbers, not a model that outputs zeros
        assert numbers["max_abs"] <= TOLERANCE * numbers["scale"], (name, numbers)


@pytest.mark.parametrize("name", list(UPLOAD_CONVERSIONS))
def test_the_upload_is_prepared_for_its_converter(conversions: dict[str, Any], name: str) -> None:
    row = UPLOAD_CONVERSIONS[name]
    prepared: StageRun = conversions["prepare"][row.model]
    assert prepared.ok, prepared.result.get("error") or prepared.log[-3000:]
    assert prepared.result["info"]["model_format"] == row.model_format
    within_tolerance(prepared.result["metrics"]["onnx"])


@pytest.mark.parametrize("name", list(UPLOAD_CONVERSIONS))
def test_the_upload_converts_to_a_tflite_within_tolerance(conversions: dict[str, Any], name: str) -> None:
    row = UPLOAD_CONVERSIONS[name]
    runs = conversions["rows"][name]
    convert, validate = runs["convert"], runs["validate"]
    assert convert is not None, "export.prepare failed for this upload"
    assert convert.ok, convert.result.get("error") or convert.log[-3000:]
    assert convert.result["info"]["requires_flex"] is False
    assert validate is not None
    assert validate.ok, validate.result.get("error") or validate.log[-3000:]
    metrics = validate.result["metrics"]["tflite_float32"]
    assert metrics["requires_flex"] is False
    assert metrics["operators"]["flex"] == metrics["operators"]["custom"] == []
    within_tolerance(metrics)
    if "saved_model" in row.targets:
        within_tolerance(convert.result["metrics"]["saved_model"])
        with zipfile.ZipFile(convert.output("saved_model")) as archive:
            assert "saved_model/saved_model.pb" in archive.namelist()
