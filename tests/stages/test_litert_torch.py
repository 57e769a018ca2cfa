"""The litert-torch chain: export.prepare -> convert.litert_torch -> validate.tflite, on tiny models.

The torch environment writes the models (``CHAIN_MODELS``): a mobilenet_v2 (batch norm, depthwise
convolutions) with randomized batch-norm statistics, so that folding them is really
tested; an MLP on a 2-D input whose name is not a Python identifier (``features:0``,
which torch.export cannot take as a parameter name); a transformer encoder block
with exact GELU; and the MLP again as a torch.export ExportedProgram.

Each chain runs once per session (``chain`` of tests/support/litert_chains.py, also used by
``test_quantize.py`` for its float32 inputs); the tests assert on its real results.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest

from stages.kit.contract import EXIT_STAGE_ERROR
from stages.registry import STAGES
from tests.support.litert_chains import ALLOWED, INPUTS, MODELS, chain, models, spec_for
from tests.support.stage_runner import StageRun, assert_builtin_float32_pass, float32_metrics, run_stage

TOLERANCE = 1e-4  # spec_of's float32 tolerance


@pytest.fixture(scope="module")
def chains(tmp_path_factory: pytest.TempPathFactory) -> dict[str, dict[str, StageRun]]:
    return {case: chain(case, tmp_path_factory) for case in INPUTS}


@pytest.mark.parametrize("case", list(INPUTS))
def test_float32_passes_in_stock_litert_with_builtin_ops_only(chains: dict[str, Any], case: str) -> None:
    metrics = assert_builtin_float32_pass(chains[case], TOLERANCE)
    assert 0 < metrics["latency_ms"]["median_1_thread"] < 1000


@pytest.mark.parametrize("case", list(INPUTS))
def test_signature_keeps_the_spec_names_and_pytorch_layout(chains: dict[str, Any], case: str) -> None:
    info, validate_info = chains[case]["convert"].result["info"], chains[case]["validate"].result["info"]
    names = [item["name"] for item in INPUTS[case]]
    # validate.tflite matched by signature name, not by elimination or order.
    assert validate_info["signature_key"] == "serving_default"
    assert validate_info["input_map"] == {name: name for name in names}
    assert validate_info["output_map"] == {"output": "output"}
    assert sorted(validate_info["tflite_inputs"]) == sorted(names)
    assert validate_info["tflite_outputs"] == ["output"]
    signature = info["signature"]
    assert signature["input_map"] == {name: name for name in names}
    assert signature["outputs"] == ["output"]
    assert signature["input_transposes"] == {}
    assert info["layout"] == "nchw"
    assert info["static_shapes"] is True
    for item in INPUTS[case]:
        static = [d if isinstance(d, int) else 1 for d in item["shape"]]  # named dims -> 1
        assert signature["inputs"][item["name"]]["shape"] == static
        assert validate_info["tflite_inputs"][item["name"]]["shape"] == static


def test_dynamic_batch_is_fixed_at_the_sample_size(chains: dict[str, Any]) -> None:
    info = chains["mobilenet_v2"]["convert"].result["info"]
    assert info["fixed_dimensions"] == {"input": {"batch": 1}}
    # Measured: litert-torch 0.10 cannot lower mobilenet_v2 with a dynamic batch (its JAX
    # bridge needs concrete reshape sizes, with use_v2 too): tried, then converted static.
    dynamic = info["dynamic_shapes"]
    assert dynamic["tried"] is True
    assert dynamic["kept"] is False
    assert "concrete" in dynamic["error"]
    assert info["static_shapes"] is True
    # The fixed batch is reported (no resize probe) and said in the reasons; the numbers pass.
    metrics = chains["mobilenet_v2"]["validate"].result["metrics"]["tflite_float32"]
    assert metrics["dynamic_batch"] == {"dynamic": False, "probed": False, "leading_sizes": {"input": 1}}
    assert metrics["frozen_dims"] == [{"input": "input", "dim": "batch", "axis": 0, "fixed_at": 1}]
    assert metrics["verdict"] == "pass"
    assert any("fixes dimension 'batch'" in reason for reason in metrics["reasons"]), metrics["reasons"]
    assert chains["mlp"]["convert"].result["info"]["fixed_dimensions"] == {}


def test_input_names_that_are_not_identifiers_are_restored(chains: dict[str, Any]) -> None:
    converter = chains["mlp"]["convert"].result["info"]["converter"]
    assert converter["renamed_inputs"] == {"features_0": "features:0"}
    assert chains["encoder"]["convert"].result["info"]["converter"]["renamed_inputs"] == {}


def test_mobilenet_keeps_one_boundary_transpose(chains: dict[str, Any]) -> None:
    metrics = float32_metrics(chains["mobilenet_v2"])
    assert {"CONV_2D", "DEPTHWISE_CONV_2D"} <= set(metrics["operators"]["builtin"])
    # Batch norm is folded into the convolutions; litert-torch's layout pass moves the
    # NCHW input to channel-last once and keeps the rest of the graph channel-last.
    assert metrics["transpose_count"] == 1
    assert metrics["outputs"]["output"]["top1_agreement"] == 1.0


def test_exact_gelu_is_the_builtin_gelu(chains: dict[str, Any]) -> None:
    metrics = float32_metrics(chains["encoder"])
    assert "GELU" in metrics["operators"]["builtin"]
    output = metrics["outputs"]["output"]
    assert output["max_abs"] <= TOLERANCE * output["scale"]


def test_provenance(chains: dict[str, Any]) -> None:
    run = chains["mobilenet_v2"]["convert"]
    info = run.result["info"]
    assert info["versions"]["litert-torch"] == "0.10.0"
    assert info["versions"]["torch"].startswith("2.14.")
    assert info["versions"]["ai-edge-litert"].startswith("2.3")
    assert info["converter"]["tool"] == "litert-torch"
    assert info["converter"]["flags"] == {
        "strict_export": False,
        "enable_x64": False,
        "quant_config": None,
        "lightweight_conversion": False,
        "use_v2": False,
    }
    assert info["model_format"] == "state_dict"
    assert info["seconds"]["convert"] > 0
    assert "LiteRT-Torch Convert" in run.log  # litert-torch's own progress, in the stage log


def test_an_exported_program_converts_like_the_state_dict(
    chains: dict[str, Any], tmp_path_factory: pytest.TempPathFactory
) -> None:
    prepare = chains["mlp"]["prepare"]
    shared = {"samples": prepare.output("samples"), "reference": prepare.output("reference")}
    work = tmp_path_factory.mktemp("litert-torch-ep")
    spec = spec_for("mlp", model_format="exported_program", architecture=None)
    model = models(tmp_path_factory)["mlp_exported_program"]
    convert = run_stage("torch", "convert.litert_torch", work / "convert", {"model": model, **shared}, spec)
    assert convert.ok, convert.result
    assert convert.result["info"]["model_format"] == "exported_program"
    validate = run_stage(
        "torch", "validate.tflite", work / "validate", {"tflite": convert.output("tflite_float32"), **shared}, spec
    )
    metrics = validate.result["metrics"]["tflite_float32"]
    assert metrics["verdict"] == "pass", metrics["reasons"]
    assert validate.result["info"]["input_map"] == {"features:0": "features:0"}


def test_a_reference_with_other_outputs_is_conversion_failed(chains: dict[str, Any], tmp_path: Path) -> None:
    prepare = chains["mlp"]["prepare"]
    with np.load(prepare.output("reference")) as data:
        output = data["output"]
    reference = tmp_path / "reference.npz"
    np.savez(reference, output_0=output, output_1=output)
    inputs = {"model": MODELS["mlp"], "samples": prepare.output("samples"), "reference": reference}
    run = run_stage("torch", "convert.litert_torch", tmp_path / "run", inputs, spec_for("mlp"), ALLOWED)
    assert run.returncode == EXIT_STAGE_ERROR
    assert run.error_code == "conversion_failed"
    assert "returns 1 tensors" in run.result["error"]["message"]


@pytest.mark.parametrize("model_format", ["torchscript", "onnx"])
def test_formats_without_a_pytorch_module_are_refused(
    chains: dict[str, Any], tmp_path: Path, model_format: str
) -> None:
    prepare = chains["mlp"]["prepare"]
    inputs = {"model": MODELS["mlp"], "samples": prepare.output("samples"), "reference": prepare.output("reference")}
    run = run_stage("torch", "convert.litert_torch", tmp_path, inputs, spec_for("mlp", model_format=model_format))
    assert run.returncode == EXIT_STAGE_ERROR
    assert run.error_code == "format_not_supported"


def test_stages_run_in_the_torch_environment() -> None:
    for name, module in (
        ("convert.litert_torch", "stages.convert.litert_torch"),
        ("quantize.litert", "stages.quantize.litert"),
    ):
        row = STAGES[name]
        assert (row.module, row.function, row.toolchain) == (module, "run", "torch")
