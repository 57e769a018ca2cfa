"""A tiny ViT through the onnx-tf chain: attention needs opset >= 14, which onnx-tf 1.10
only converts with the stage's opset-13 Squeeze/Unsqueeze handlers, and exact GELU
(Erf) needs Select-TF ops, so the .tflite is flagged ``requires_flex`` and stock
LiteRT reports it cannot run it.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.support.models import VIT_ONE_LAYER
from tests.support.stage_runner import ALLOW_TORCHVISION, StageRun, image_spec, run_chain


@pytest.fixture(scope="module")
def vit_chain(stage_models: dict[str, Path], tmp_path_factory: pytest.TempPathFactory) -> dict[str, StageRun]:
    work = tmp_path_factory.mktemp("vit-chain")
    spec = image_spec("torchvision.models.VisionTransformer", size=32)
    spec["architecture"]["kwargs"].update(VIT_ONE_LAYER)  # the vit of make_models.py
    return run_chain(work, stage_models["vit"], spec, options=ALLOW_TORCHVISION)


def test_attention_exports_at_opset_15(vit_chain: dict[str, StageRun]) -> None:
    prepare = vit_chain["prepare"].result
    assert prepare["info"]["opset"] == 15
    assert prepare["metrics"]["onnx"]["verdict"] == "pass", prepare["metrics"]["onnx"]["reasons"]


def test_saved_model_of_attention_matches_pytorch(vit_chain: dict[str, StageRun]) -> None:
    convert = vit_chain["convert"].result
    assert convert["info"]["onnx_tf_patched_handlers"] == ["Squeeze-13", "Unsqueeze-13"]
    metrics = convert["metrics"]["saved_model"]
    assert metrics["verdict"] == "pass", metrics["reasons"]
    numbers = metrics["outputs"]["output"]
    assert numbers["scale"] > 0
    assert numbers["max_abs"] <= 1e-4 * numbers["scale"]


def test_erf_needs_flex_and_is_flagged(vit_chain: dict[str, StageRun]) -> None:
    info = vit_chain["convert"].result["info"]
    assert info["requires_flex"] is True
    assert info["converter"]["supported_ops"] == ["TFLITE_BUILTINS", "SELECT_TF_OPS"]
    assert info["builtin_only_error"].startswith("not TFLite builtins: ")
    assert "Erf" in info["builtin_only_error"]


def test_stock_litert_reports_requires_flex_as_the_verdict(vit_chain: dict[str, StageRun]) -> None:
    validate = vit_chain["validate"]
    assert validate.returncode == 0
    metrics = validate.result["metrics"]["tflite_float32"]
    assert metrics["verdict"] == "fail"
    assert metrics["requires_flex"] is True
    # Erf from exact GELU; onnx-tf also computes integer shape arithmetic in float64 (RealDiv).
    assert "FlexErf" in metrics["operators"]["flex"]
    assert any(reason.startswith("requires_flex") for reason in metrics["reasons"])
    assert metrics["latency_ms"] is None
