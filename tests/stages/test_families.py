"""Toolchains x model families at float32: one stand-in per family, every converter.

Each family is prepared once (export.prepare, for both ONNX consumers, so onnx-tf's
opset cap of 15 applies), then every converter runs on it (convert.onnx2tf and
convert.onnx_tf on the exported ONNX file, convert.litert_torch on the PyTorch model)
and validate.tflite runs its float32 .tflite in stock LiteRT. The families:

- cnn: torchvision mobilenet_v2 (batch norm with randomized statistics, depthwise convs);
- vit: a two-layer torchvision VisionTransformer (exact GELU, attention);
- bert: the tiny transformers BertModel of make_models.py (token ids and a mask);
- segmenter: torchvision lraspp_mobilenet_v3_large, a dense [1, 3, 64, 64] output "out";
- gpt2: the tiny transformers GPT2LMHeadModel of make_models.py (causal LM logits);
- mlp: torchvision.ops.MLP on a [1, 16] input.

``EXPECTED`` (tests/support/matrix.py) holds the measured outcome of every cell, so a regression and an
improvement both fail a test; DESIGN promises every family at least one candidate
that passes with builtin ops only, which is asserted per family.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest

from tests.support.matrix import FAMILY_OUTCOMES
from tests.support.models import spec_of
from tests.support.stage_runner import StageRun, make_torch_models, run_stage

TOLERANCE = 1e-4
CONVERTERS = {  # spec name -> (toolchain env, stage, what it converts)
    "onnx2tf": ("onnx2tf", "convert.onnx2tf", "onnx"),
    "litert-torch": ("torch", "convert.litert_torch", "model"),
    "onnx-tf": ("onnx-tf", "convert.onnx_tf", "onnx"),
}
# torchvision.ops for the MLP stand-in; everything else is a torchvision model or transformers.
ALLOWED = {"allowed_architectures": ["torchvision.models.", "transformers.", "torchvision.ops."]}
VALIDATE = {"precision": "float32", "warmup": 1, "runs": 2, "threads_all": 1}

# (family, converter) -> the measured outcome, kept in tests/support/matrix.py, whose rows
# tests/project/test_coverage.py counts as conversions.
EXPECTED = FAMILY_OUTCOMES

MAKE_MODELS = r"""
import json, sys
from pathlib import Path

import torch
import torchvision

from testkit.families import VIT_TINY  # PYTHONPATH: the repository
from tests.support.torch_init import randomize_batch_norm

out = Path(sys.argv[1])
out.mkdir(parents=True, exist_ok=True)
torch.manual_seed(0)
models = {"cnn": randomize_batch_norm(torchvision.models.mobilenet_v2(num_classes=10))}
torch.manual_seed(1)
vit = torchvision.models.VisionTransformer(**VIT_TINY)
with torch.no_grad():  # torchvision zero-initializes the head: every logit would be 0
    for parameter in vit.parameters():
        if parameter.dim() >= 2 and not parameter.any():
            parameter.normal_(0.0, 0.02)
models["vit"] = vit
torch.manual_seed(2)
models["segmenter"] = randomize_batch_norm(
    torchvision.models.segmentation.lraspp_mobilenet_v3_large(num_classes=3, weights_backbone=None)
)
torch.manual_seed(3)
models["mlp"] = torchvision.ops.MLP(16, [32, 10])
files = {}
for name, model in models.items():
    torch.save(model.state_dict(), out / f"{name}.pt")
    files[name] = str(out / f"{name}.pt")
print(json.dumps(files))
"""


# family -> its model file (this module's MAKE_MODELS or make_models.py's) and spec; the
# slowest first. The architectures and inputs are the ("state_dict", family) rows of TINY_MODELS.
FAMILIES: dict[str, dict[str, Any]] = {
    family: spec_of(
        ("state_dict", family),
        toolchain="best",
        onnx_consumers=["onnx-tf", "onnx2tf"],
        tolerance={"float32": TOLERANCE},
        validation_samples=2,
    )
    for family in ("segmenter", "cnn", "vit", "bert", "gpt2", "mlp")
}
CELLS = [(family, converter) for family in FAMILIES for converter in CONVERTERS]
# Measured convert seconds, longest first (the order the cells run in, so two workers finish
# together): litert-torch on the segmenter ~65 s, onnx-tf 40-60 s on every family but the MLP.
SLOWEST_FIRST = [
    ("segmenter", "litert-torch"),
    ("vit", "onnx-tf"),
    ("segmenter", "onnx-tf"),
    ("gpt2", "onnx-tf"),
    ("bert", "onnx-tf"),
    ("cnn", "litert-torch"),
    ("cnn", "onnx-tf"),
    ("bert", "litert-torch"),
    ("gpt2", "litert-torch"),
    ("vit", "litert-torch"),
]
SLOWEST_FIRST += [cell for cell in CELLS if cell not in SLOWEST_FIRST]


@pytest.fixture(scope="module")
def models(stage_models: dict[str, Path], tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    out = tmp_path_factory.mktemp("family-models")
    files = make_torch_models(MAKE_MODELS, out)
    return {**files, "bert": stage_models["bert"], "gpt2": stage_models["gpt2"]}


@pytest.fixture(scope="module")
def matrix(models: dict[str, Path], tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """Every family prepared once, then every (family, converter) cell converted and validated."""
    work = tmp_path_factory.mktemp("families")

    def prepare(family: str) -> StageRun:
        return run_stage(
            "torch", "export.prepare", work / family / "prepare", {"model": models[family]}, FAMILIES[family], ALLOWED
        )

    def cell(key: tuple[str, str]) -> dict[str, StageRun | None]:
        family, converter = key
        ready = prepared[family].result()
        if not ready.ok:
            return {"convert": None, "validate": None, "flex": None}
        env, stage, source = CONVERTERS[converter]
        family_spec = FAMILIES[family]
        shared = {"samples": ready.output("samples"), "reference": ready.output("reference")}
        source_file = {"onnx": ready.output("onnx")} if source == "onnx" else {"model": models[family]}
        where = work / family / converter
        convert = run_stage(env, stage, where / "convert", {**source_file, **shared}, family_spec, ALLOWED)
        if not convert.ok:
            return {"convert": convert, "validate": None, "flex": None}
        tflite = {"tflite": convert.output("tflite_float32"), **shared}
        validate = run_stage("torch", "validate.tflite", where / "validate", tflite, family_spec, VALIDATE)
        flex = None
        if validate.ok and validate.result["metrics"]["tflite_float32"]["requires_flex"]:
            # As the pipeline does: TensorFlow's interpreter (onnx-tf env) runs Select-TF ops.
            options = {**VALIDATE, "runtime": "tensorflow"}
            flex = run_stage("onnx-tf", "validate.tflite", where / "validate_flex", tflite, family_spec, options)
        return {"convert": convert, "validate": validate, "flex": flex}

    # Each call is its own subprocess. The prepares are queued first, in the order their
    # families' cells start, so a cell that waits for its family's prepare never waits on
    # one that no worker has started.
    with ThreadPoolExecutor(max_workers=2) as pool:
        families = list(dict.fromkeys(family for family, _ in SLOWEST_FIRST))
        prepared = {family: pool.submit(prepare, family) for family in families}
        cells = {key: pool.submit(cell, key) for key in SLOWEST_FIRST}
        return {
            "prepare": {family: future.result() for family, future in prepared.items()},
            "cells": {key: future.result() for key, future in cells.items()},
        }


def outcome(runs: dict[str, StageRun | None]) -> str:
    convert, validate = runs["convert"], runs["validate"]
    assert convert is not None, "export.prepare failed for this family"
    if not convert.ok:
        return f"failed:{convert.error_code}"
    assert validate is not None
    assert validate.ok, (validate.result, validate.log[-2000:])
    metrics = validate.result["metrics"]["tflite_float32"]
    if metrics["requires_flex"]:
        return "requires_flex"
    if metrics["verdict"] == "pass":
        return "pass"
    if any(reason.startswith("runtime failed") for reason in metrics["reasons"]):
        return "runtime_failed"
    if any(p.get("verdict") == "fail" for p in metrics.get("probes") or []) and all(
        reason.startswith("at ") for reason in metrics["reasons"] if "dimension" not in reason
    ):
        return "fails_at_other_size"  # right on the samples, wrong or not running at a probed size
    return "mismatch"


def detail(runs: dict[str, StageRun | None]) -> Any:
    """What to show when a cell's outcome changes."""
    convert, validate = runs["convert"], runs["validate"]
    if convert is not None and not convert.ok:
        return convert.result.get("error")
    if validate is not None:
        metrics = validate.result["metrics"]["tflite_float32"]
        return {"reasons": metrics["reasons"], "flex": metrics["operators"]["flex"], "outputs": metrics["outputs"]}
    return None


def test_the_table_covers_every_cell() -> None:
    assert sorted(EXPECTED) == sorted(CELLS)


@pytest.mark.parametrize("family", list(FAMILIES))
def test_prepare_exports_onnx_for_both_consumers(matrix: dict[str, Any], family: str) -> None:
    run: StageRun = matrix["prepare"][family]
    assert run.ok, run.result.get("error") or run.log[-3000:]
    assert run.result["info"]["opset"] == 15  # onnx-tf reads opsets <= 15
    metrics = run.result["metrics"]["onnx"]
    assert metrics["verdict"] == "pass", metrics["reasons"]
    assert metrics["samples"] == 2


@pytest.mark.parametrize(("family", "converter"), CELLS)
def test_cell_outcome_is_the_measured_one(matrix: dict[str, Any], family: str, converter: str) -> None:
    runs = matrix["cells"][(family, converter)]
    assert outcome(runs) == EXPECTED[(family, converter)], detail(runs)


@pytest.mark.parametrize(("family", "converter"), [cell for cell in CELLS if EXPECTED[cell] == "pass"])
def test_passing_cells_are_builtin_only_and_within_tolerance(
    matrix: dict[str, Any], family: str, converter: str
) -> None:
    runs = matrix["cells"][(family, converter)]
    assert runs["convert"] is not None, detail(runs)
    assert runs["validate"] is not None, detail(runs)
    assert runs["convert"].result["info"]["requires_flex"] is False
    metrics = runs["validate"].result["metrics"]["tflite_float32"]
    assert metrics["operators"]["flex"] == []
    assert metrics["operators"]["custom"] == []
    assert metrics["samples"] == 2
    assert list(metrics["outputs"]) == matrix["prepare"][family].result["info"]["output_names"]
    for name, numbers in metrics["outputs"].items():
        assert numbers["scale"] > 1e-3, name  # real numbers, not a model that outputs zeros
        assert numbers["max_abs"] <= TOLERANCE * numbers["scale"], (name, numbers)


@pytest.mark.parametrize(("family", "converter"), [cell for cell in CELLS if EXPECTED[cell] == "requires_flex"])
def test_flex_cells_are_flagged_by_the_converter_too(matrix: dict[str, Any], family: str, converter: str) -> None:
    runs = matrix["cells"][(family, converter)]
    assert runs["convert"] is not None, detail(runs)
    info = runs["convert"].result["info"]
    assert info["requires_flex"] is True
    assert info["builtin_only_error"].startswith("not TFLite builtins: ")


@pytest.mark.parametrize(("family", "converter"), [cell for cell in CELLS if EXPECTED[cell] == "requires_flex"])
def test_flex_cells_pass_in_tensorflows_interpreter(matrix: dict[str, Any], family: str, converter: str) -> None:
    # DESIGN: an artifact that needs flex ops is validated in TensorFlow's interpreter.
    flex = matrix["cells"][(family, converter)]["flex"]
    assert flex is not None, detail(matrix["cells"][(family, converter)])
    assert flex.ok, (flex.result, flex.log[-2000:])
    assert flex.result["info"]["runtime"].startswith("TensorFlow tf.lite Interpreter with the flex delegate")
    metrics = flex.result["metrics"]["tflite_float32"]
    assert metrics["requires_flex"] is True
    assert metrics["operators"]["flex"], metrics["operators"]
    assert metrics["verdict"] == "pass", metrics["reasons"]
    assert metrics["notes"][0].startswith("requires_flex: validated in TensorFlow's interpreter")
    assert metrics["latency_ms"]["median_1_thread"] > 0
    for name, numbers in metrics["outputs"].items():
        assert numbers["max_abs"] <= TOLERANCE * numbers["scale"], (name, numbers)


@pytest.mark.parametrize("family", list(FAMILIES))
def test_every_family_has_a_builtin_only_candidate_that_passes(matrix: dict[str, Any], family: str) -> None:
    # DESIGN: every family gets at least one builtin-only float32 .tflite within tolerance.
    passing = []
    for converter in CONVERTERS:
        validate = matrix["cells"][(family, converter)]["validate"]
        if validate is None:
            continue
        metrics = validate.result["metrics"]["tflite_float32"]
        if (
            metrics["verdict"] == "pass"
            and not metrics["requires_flex"]
            and all(n["max_abs"] <= TOLERANCE * n["scale"] and n["scale"] > 0 for n in metrics["outputs"].values())
        ):
            passing.append(converter)
    assert passing, {converter: detail(matrix["cells"][(family, converter)]) for converter in CONVERTERS}


def test_the_segmenter_keeps_its_dense_output(matrix: dict[str, Any]) -> None:
    info = matrix["prepare"]["segmenter"].result["info"]
    assert info["output_names"] == ["out"]
    for converter in CONVERTERS:
        validate = matrix["cells"][("segmenter", converter)]["validate"]
        assert validate is not None
        assert validate.result["info"]["output_map"] == {"out": "out"}


def test_onnx2tf_fails_a_file_stock_litert_cannot_run(matrix: dict[str, Any]) -> None:
    convert = matrix["cells"][("gpt2", "onnx2tf")]["convert"]
    assert convert is not None
    assert convert.error_code == "conversion_failed"
    assert "stock LiteRT cannot run: " in convert.result["error"]["message"]
    assert "out of bounds" in convert.result["error"]["message"]
