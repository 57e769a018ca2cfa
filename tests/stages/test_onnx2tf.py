"""The onnx2tf chain: export.prepare -> convert.onnx2tf -> validate.tflite, on tiny models.

The torch environment writes the models (``CHAIN_MODELS``): a mobilenet_v2 (batch norm, depthwise
convolutions) with randomized batch-norm statistics, so that folding them is really
tested; an MLP on a 2-D input; a transformer encoder block with exact GELU on a 3-D
input; and two single convolutions whose 4-D output onnx2tf leaves channel-last,
once with a shape that tells ([1, 4, 8, 8]) and once with one that does not
([1, 4, 4, 4]). Each chain runs once (module fixture); the tests assert on its results.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

import pytest

from stages.kit.contract import EXIT_STAGE_ERROR
from stages.registry import STAGES
from tests.support.models import CHAIN_MODELS, TINY_MODELS, spec_of
from tests.support.stage_runner import (
    StageRun,
    assert_builtin_float32_pass,
    float32_metrics,
    make_torch_models,
    run_stage,
)
from tests.support.toolchain import toolchain_python

TOLERANCE = 1e-4
ALLOWED = {"allowed_architectures": ["torchvision.models.", "torchvision.ops.", "torch.nn."]}
DYNAMIC = "batch"

# The chain models of tests/support/models.py (CHAIN_MODELS writes them, with unique.onnx).
CASES = ["mobilenet_v2", "mlp", "encoder", "conv", "conv_square"]
INPUTS = {case: TINY_MODELS[("state_dict", case)].inputs or [] for case in CASES}


def spec_for(case: str, **changes: Any) -> dict[str, Any]:
    return spec_of(("state_dict", case), toolchain="onnx2tf", **changes)


@pytest.fixture(scope="module")
def models(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    toolchain_python("onnx2tf")  # fails the module at once when the environment is not built
    return make_torch_models(CHAIN_MODELS, tmp_path_factory.mktemp("onnx2tf-models"))


@pytest.fixture(scope="module")
def chains(models: dict[str, Path], tmp_path_factory: pytest.TempPathFactory) -> dict[str, dict[str, Any]]:
    work = tmp_path_factory.mktemp("onnx2tf-chains")
    chains: dict[str, dict[str, Any]] = {}
    for case in CASES:
        spec = spec_for(case)
        prepare = run_stage("torch", "export.prepare", work / case / "prepare", {"model": models[case]}, spec, ALLOWED)
        assert prepare.ok, prepare.result
        onnx_digest = hashlib.sha256(prepare.output("onnx").read_bytes()).hexdigest()
        shared = {"samples": prepare.output("samples"), "reference": prepare.output("reference")}
        convert = run_stage(
            "onnx2tf", "convert.onnx2tf", work / case / "convert", {"onnx": prepare.output("onnx"), **shared}, spec
        )
        assert convert.ok, convert.result
        validate = run_stage(
            "torch",
            "validate.tflite",
            work / case / "validate",
            {"tflite": convert.output("tflite_float32"), **shared},
            spec,
        )
        assert validate.ok, validate.result
        chains[case] = {
            "prepare": prepare,
            "convert": convert,
            "validate": validate,
            "onnx_unchanged": hashlib.sha256(prepare.output("onnx").read_bytes()).hexdigest() == onnx_digest,
        }
    return chains


@pytest.mark.parametrize("case", list(CASES))
def test_float32_passes_in_stock_litert_with_builtin_ops_only(chains: dict[str, Any], case: str) -> None:
    metrics = assert_builtin_float32_pass(chains[case], TOLERANCE)
    assert chains[case]["convert"].result["info"]["sanity_check"]["within_tolerance"] is True
    # A named dynamic batch resizes (two samples in one call); a fixed one is reported, not probed.
    probe = metrics["dynamic_batch"]
    dynamic = any(d == DYNAMIC for item in INPUTS[case] for d in item["shape"][:1])
    assert probe["dynamic"] is dynamic, probe
    assert probe["ok"] is True if dynamic else probe["probed"] is False, probe


@pytest.mark.parametrize("case", list(CASES))
def test_boundary_keeps_pytorch_layout_and_names(chains: dict[str, Any], case: str) -> None:
    chain = chains[case]
    info, validate_info = chain["convert"].result["info"], chain["validate"].result["info"]
    assert info["layout"] == "nchw"
    assert info["signature"]["input_transposes"] == {}
    for item in INPUTS[case]:
        expected = [-1 if d == DYNAMIC else d for d in item["shape"]]
        assert validate_info["tflite_inputs"][item["name"]]["shape"] == expected
        assert info["signature"]["inputs"][item["name"]]["shape"] == expected
    assert validate_info["input_map"] == {item["name"]: item["name"] for item in INPUTS[case]}
    assert validate_info["output_map"] == {"output": "output"}
    assert validate_info["signature_key"] == "serving_default"


def test_mobilenet_transposes_only_its_nchw_input(chains: dict[str, Any]) -> None:
    metrics = float32_metrics(chains["mobilenet_v2"])
    assert {"CONV_2D", "DEPTHWISE_CONV_2D"} <= set(metrics["operators"]["builtin"])
    # Batch norm is folded into the convolutions; the NCHW input costs one transpose
    # (the onnx-tf chain wraps every convolution in a pair).
    assert metrics["transpose_count"] == 1
    assert metrics["outputs"]["output"]["top1_agreement"] == 1.0


def test_exact_gelu_becomes_the_builtin_gelu(chains: dict[str, Any]) -> None:
    metrics = float32_metrics(chains["encoder"])
    assert "GELU" in metrics["operators"]["builtin"]
    assert not any("Erf" in op for op in metrics["operators"]["flex"] + metrics["operators"]["custom"])
    # The tanh approximation would miss this bound by an order of magnitude.
    output = metrics["outputs"]["output"]
    assert output["max_abs"] <= TOLERANCE * output["scale"]


def test_channel_last_outputs_are_transposed_back(chains: dict[str, Any]) -> None:
    by_shape = chains["conv"]["convert"].result["info"]["converter"]["boundary_rewrite"]
    assert by_shape["output_transposes"] == {"output": [0, 3, 1, 2]}
    assert by_shape["layout_resolved_by_values"] == []
    # [1, 4, 4, 4] reads the same both ways: one sample's values decide.
    by_values = chains["conv_square"]["convert"].result["info"]["converter"]["boundary_rewrite"]
    assert by_values["output_transposes"] == {"output": [0, 3, 1, 2]}
    assert by_values["layout_resolved_by_values"] == ["output"]
    for case in ("conv", "conv_square"):
        assert float32_metrics(chains[case])["verdict"] == "pass"
        assert chains[case]["convert"].result["info"]["signature"]["output_shapes"]["output"][1] == 4


def test_provenance_and_log(chains: dict[str, Any]) -> None:
    convert: StageRun = chains["mobilenet_v2"]["convert"]
    info = convert.result["info"]
    assert info["versions"]["onnx2tf"] == "2.6.9"
    assert info["versions"]["python"].startswith("3.12.")
    assert "tensorflow" not in info["versions"]
    assert info["converter"]["command"][-2:] == ["-k", "input"]
    assert info["converter"]["onnx_opset"] == 18
    assert info["warnings"] == []
    assert "Float32 tflite output complete!" in convert.log  # onnx2tf's own output, in the stage log
    assert not list(convert.output_dir.glob("onnx2tf-*"))  # its work directory is gone
    assert all(chain["onnx_unchanged"] for chain in chains.values())  # onnx2tf edits its input in place


@pytest.mark.parametrize(("case", "expected"), [("mobilenet_v2", [-1, 32, 32, 3]), ("encoder", [1, 8, 32])])
def test_nhwc_layout_changes_only_4d_inputs(
    chains: dict[str, Any], tmp_path: Path, case: str, expected: list[int]
) -> None:
    prepare = chains[case]["prepare"]
    inputs = {name: prepare.output(name) for name in ("onnx", "samples", "reference")}
    run = run_stage("onnx2tf", "convert.onnx2tf", tmp_path, inputs, spec_for(case, layout="nhwc"))
    assert run.ok, run.result
    info = run.result["info"]
    name = INPUTS[case][0]["name"]
    assert info["layout"] == "nhwc"
    assert info["signature"]["inputs"][name]["shape"] == expected
    assert info["signature"]["input_transposes"] == ({name: [0, 2, 3, 1]} if len(expected) == 4 else {})
    assert info["sanity_check"]["within_tolerance"] is True


def test_an_operator_without_builtin_is_conversion_failed(
    chains: dict[str, Any], models: dict[str, Path], tmp_path: Path
) -> None:
    prepare = chains["mlp"]["prepare"]
    inputs = {"onnx": models["unique"], "samples": prepare.output("samples"), "reference": prepare.output("reference")}
    run = run_stage("onnx2tf", "convert.onnx2tf", tmp_path, inputs, spec_for("mlp"))
    assert run.returncode == EXIT_STAGE_ERROR
    assert run.error_code == "conversion_failed"
    message = run.result["error"]["message"]
    assert "Unique" in message
    assert "ONNX_UNIQUE" in message
    assert "onnx-tf" in message


def test_an_unreadable_onnx_file_is_conversion_failed(chains: dict[str, Any], tmp_path: Path) -> None:
    prepare = chains["mlp"]["prepare"]
    garbage = tmp_path / "model.onnx"
    garbage.write_bytes(b"\xff" * 256)  # wire type 7 does not exist: no protobuf parses this
    inputs = {"onnx": garbage, "samples": prepare.output("samples"), "reference": prepare.output("reference")}
    run = run_stage("onnx2tf", "convert.onnx2tf", tmp_path / "run", inputs, spec_for("mlp"))
    assert run.returncode == EXIT_STAGE_ERROR
    assert run.error_code == "conversion_failed"
    assert "cannot be read" in run.result["error"]["message"]


def test_stage_runs_in_the_onnx2tf_environment() -> None:
    row = STAGES["convert.onnx2tf"]
    assert (row.module, row.function, row.toolchain) == ("stages.convert.onnx2tf", "run", "onnx2tf")
