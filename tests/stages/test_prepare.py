"""torch.prepare: the formats it reads, the exporters, and every error a user can act on."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest

from stages.contract import EXIT_STAGE_ERROR
from tests.stages.conftest import ALLOW_TORCHVISION, StageRun, image_spec, run_stage

SQUEEZENET = "torchvision.models.squeezenet1_1"


def prepare(
    models: dict[str, Path],
    tmp_path: Path,
    model: str = "squeezenet",
    samples: Path | None = None,
    options: dict[str, Any] | None = None,
    **spec_changes: Any,
) -> StageRun:
    spec = image_spec(SQUEEZENET, **spec_changes)
    stage_inputs: dict[str, Any] = {"model": models[model]}
    if samples is not None:
        stage_inputs["samples"] = samples
    return run_stage("torch", "torch.prepare", tmp_path, stage_inputs, spec, options or ALLOW_TORCHVISION)


def assert_error(run: StageRun, code: str, *fragments: str) -> str:
    assert run.returncode == EXIT_STAGE_ERROR, run.log[-2000:]
    assert run.ok is False
    assert run.error_code == code, run.result
    message = run.result["error"]["message"]
    for fragment in fragments:
        assert fragment in message, message
    return message


@pytest.mark.parametrize("model", ["squeezenet_checkpoint", "squeezenet_safetensors"])
def test_checkpoint_wrappers_and_safetensors_load(
    stage_models: dict[str, Path], tmp_path: Path, model: str
) -> None:
    run = prepare(stage_models, tmp_path, model=model)
    assert run.ok, run.result
    assert run.result["metrics"]["onnx"]["verdict"] == "pass"


def test_garbage_bytes_are_invalid_model(stage_models: dict[str, Path], tmp_path: Path) -> None:
    assert_error(
        prepare(stage_models, tmp_path, model="garbage"), "invalid_model", "not a PyTorch state dict"
    )


def test_malicious_pickle_is_refused_and_never_runs(stage_models: dict[str, Path], tmp_path: Path) -> None:
    run = prepare(stage_models, tmp_path, model="malicious")
    assert_error(run, "invalid_model", "would run code", "weights_only=True")
    assert not stage_models["marker"].exists()


def test_unknown_architecture(stage_models: dict[str, Path], tmp_path: Path) -> None:
    run = prepare(
        stage_models, tmp_path, architecture={"name": "torchvision.models.resnet1000", "kwargs": {}}
    )
    assert_error(run, "architecture_not_found", "resnet1000")


@pytest.mark.parametrize(
    "name",
    [
        "os.system",
        # Inside the allowed package by name, but the object is torch's: no walking out.
        "torchvision.models.resnet.Tensor",
    ],
)
def test_architecture_outside_the_allow_list(
    stage_models: dict[str, Path], tmp_path: Path, name: str
) -> None:
    run = prepare(stage_models, tmp_path, architecture={"name": name, "kwargs": {}})
    assert_error(run, "architecture_not_allowed", "torchvision.models.")


def test_wrong_num_classes_lists_the_mismatch(stage_models: dict[str, Path], tmp_path: Path) -> None:
    run = prepare(stage_models, tmp_path, architecture={"name": SQUEEZENET, "kwargs": {"num_classes": 5}})
    assert_error(run, "state_dict_mismatch", "classifier.1.weight", "[10, 512, 1, 1]", "[5, 512, 1, 1]")


def test_wrong_input_shape_says_what_was_given(stage_models: dict[str, Path], tmp_path: Path) -> None:
    spec_inputs = [{"name": "input", "shape": [1, 4, 64, 64], "dtype": "float32"}]
    run = prepare(stage_models, tmp_path, inputs=spec_inputs)
    assert_error(run, "input_mismatch", "input [1, 4, 64, 64] float32")


def test_unsupported_format(stage_models: dict[str, Path], tmp_path: Path) -> None:
    assert_error(prepare(stage_models, tmp_path, model_format="torchscript"), "format_not_supported")


def test_uploaded_samples_are_used(stage_models: dict[str, Path], tmp_path: Path) -> None:
    upload = tmp_path / "inputs.npy"
    np.save(upload, np.random.default_rng(5).standard_normal((3, 1, 3, 64, 64)).astype(np.float32))
    run = prepare(stage_models, tmp_path / "run", samples=upload)
    assert run.ok, run.result
    assert run.result["info"]["samples_source"] == "uploaded"
    assert run.result["metrics"]["onnx"]["samples"] == 3


def test_uploaded_samples_with_a_wrong_shape(stage_models: dict[str, Path], tmp_path: Path) -> None:
    upload = tmp_path / "inputs.npz"
    np.savez(upload, input=np.zeros((2, 1, 3, 32, 32), np.float32))
    run = prepare(stage_models, tmp_path / "run", samples=upload)
    assert_error(run, "invalid_samples", "'input'", "[N, batch, 3, 64, 64]")


def test_dynamo_exporter_at_its_native_opset(stage_models: dict[str, Path], tmp_path: Path) -> None:
    run = prepare(stage_models, tmp_path, exporter="dynamo", toolchain="auto")
    assert run.ok, run.result
    info = run.result["info"]
    assert (info["exporter"], info["opset"]) == ("dynamo", 18)
    assert run.result["metrics"]["onnx"]["verdict"] == "pass"
    assert info["output_names"] == ["output"]


def test_dynamo_cannot_go_below_opset_18(stage_models: dict[str, Path], tmp_path: Path) -> None:
    # torch 2.14's dynamo exporter quietly keeps opset 18 when asked for 15 for onnx-tf;
    # the stage notices instead of handing onnx-tf a file it cannot read.
    run = prepare(stage_models, tmp_path, exporter="dynamo")
    assert_error(run, "export_failed", "dynamo: produced opset 18, not the requested 15")


def test_opset_above_what_onnx_tf_reads(stage_models: dict[str, Path], tmp_path: Path) -> None:
    assert_error(prepare(stage_models, tmp_path, opset=17), "opset_not_supported", "up to 15")
