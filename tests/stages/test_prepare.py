"""export.prepare: the formats it reads, the exporters, and every error a user can act on.

Each case is one real stage process. They are independent and single-threaded, so the
module fixture runs them side by side (one per CPU) and the tests assert on the results.
"""

from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from stages.kit import samples as sample_io
from stages.kit.contract import EXIT_STAGE_ERROR
from tests.support.stage_runner import ALLOW_TORCHVISION, StageRun, image_spec, run_stage

SQUEEZENET = "torchvision.models.squeezenet1_1"
DEEPLAB = "torchvision.models.segmentation.deeplabv3_mobilenet_v3_large"


@dataclass
class Case:
    model: str = "squeezenet"
    spec: dict[str, Any] = field(default_factory=dict)  # changes to the squeezenet spec
    samples: str | None = None  # a file written by the fixture


CASES: dict[str, Case] = {
    "checkpoint": Case(model="squeezenet_checkpoint"),
    "safetensors": Case(model="squeezenet_safetensors"),
    "garbage": Case(model="garbage"),
    "malicious": Case(model="malicious"),
    "unknown_architecture": Case(spec={"architecture": {"name": "torchvision.models.resnet1000", "kwargs": {}}}),
    "outside_allow_list": Case(spec={"architecture": {"name": "os.system", "kwargs": {}}}),
    # Inside the allowed package by name, but the object is torch's: no walking out.
    "re_exported": Case(spec={"architecture": {"name": "torchvision.models.resnet.Tensor", "kwargs": {}}}),
    "num_classes": Case(spec={"architecture": {"name": SQUEEZENET, "kwargs": {"num_classes": 5}}}),
    "input_shape": Case(spec={"inputs": [{"name": "input", "shape": [1, 4, 64, 64], "dtype": "float32"}]}),
    "format": Case(spec={"model_format": "keras"}),  # pickled_module: tests/stages/test_pickled_module.py
    "opset_too_new": Case(spec={"opset": 17}),
    "uploaded": Case(samples="good.npy"),
    "uploaded_wrong_shape": Case(samples="wrong.npz"),
    "dict_outputs": Case(
        model="deeplabv3",
        spec={"architecture": {"name": DEEPLAB, "kwargs": {"num_classes": 3, "aux_loss": True}}},
    ),
    "dynamo": Case(spec={"exporter": "dynamo", "toolchain": "auto"}),
    "dynamo_for_onnx_tf": Case(spec={"exporter": "dynamo"}),
}


@pytest.fixture(scope="module")
def runs(stage_models: dict[str, Path], tmp_path_factory: pytest.TempPathFactory) -> dict[str, StageRun]:
    work = tmp_path_factory.mktemp("prepare")
    np.save(work / "good.npy", np.random.default_rng(5).standard_normal((3, 1, 3, 64, 64)).astype(np.float32))
    np.savez(work / "wrong.npz", input=np.zeros((2, 1, 3, 32, 32), np.float32))

    def run(name: str) -> StageRun:
        case = CASES[name]
        inputs: dict[str, Path] = {"model": stage_models[case.model]}
        if case.samples:
            inputs["samples"] = work / case.samples
        spec = image_spec(SQUEEZENET, **case.spec)
        return run_stage("torch", "export.prepare", work / name, inputs, spec, ALLOW_TORCHVISION)

    with ThreadPoolExecutor(max_workers=os.cpu_count() or 2) as pool:
        return dict(zip(CASES, pool.map(run, CASES), strict=True))


def assert_error(run: StageRun, code: str, *fragments: str) -> None:
    assert run.returncode == EXIT_STAGE_ERROR, run.log[-2000:]
    assert run.ok is False
    assert run.error_code == code, run.result
    for fragment in fragments:
        assert fragment in run.result["error"]["message"]


@pytest.mark.parametrize("case", ["checkpoint", "safetensors"])
def test_checkpoint_wrappers_and_safetensors_load(runs: dict[str, StageRun], case: str) -> None:
    assert runs[case].ok, runs[case].result
    assert runs[case].result["metrics"]["onnx"]["verdict"] == "pass"


def test_garbage_bytes_are_invalid_model(runs: dict[str, StageRun]) -> None:
    assert_error(runs["garbage"], "invalid_model", "not a PyTorch state dict")


def test_malicious_pickle_is_refused_and_never_runs(runs: dict[str, StageRun], stage_models: dict[str, Path]) -> None:
    assert_error(runs["malicious"], "unsafe_model", "would run code", "weights_only=True")
    assert not stage_models["marker"].exists()


def test_unknown_architecture(runs: dict[str, StageRun]) -> None:
    assert_error(runs["unknown_architecture"], "architecture_not_found", "resnet1000")


@pytest.mark.parametrize("case", ["outside_allow_list", "re_exported"])
def test_architecture_outside_the_allow_list(runs: dict[str, StageRun], case: str) -> None:
    assert_error(runs[case], "architecture_not_allowed", "torchvision.models.")


def test_wrong_num_classes_lists_the_mismatch(runs: dict[str, StageRun]) -> None:
    assert_error(runs["num_classes"], "state_dict_mismatch", "classifier.1.weight", "[10, 512, 1, 1]", "[5, 512, 1, 1]")


def test_wrong_input_shape_says_what_was_given(runs: dict[str, StageRun]) -> None:
    assert_error(runs["input_shape"], "input_mismatch", "input [1, 4, 64, 64] float32")


def test_unsupported_format(runs: dict[str, StageRun]) -> None:
    assert_error(runs["format"], "format_not_supported")


def test_opset_above_what_onnx_tf_reads(runs: dict[str, StageRun]) -> None:
    assert_error(runs["opset_too_new"], "opset_not_supported", "up to 15")


def test_uploaded_samples_are_used(runs: dict[str, StageRun]) -> None:
    run = runs["uploaded"]
    assert run.ok, run.result
    assert run.result["info"]["samples_source"] == "uploaded"
    assert run.result["metrics"]["onnx"]["samples"] == 3


def test_uploaded_samples_with_a_wrong_shape(runs: dict[str, StageRun]) -> None:
    assert_error(runs["uploaded_wrong_shape"], "invalid_samples", "'input'", "[N, batch, 3, 64, 64]")


def test_dict_outputs_keep_their_names_and_order(runs: dict[str, StageRun]) -> None:
    run = runs["dict_outputs"]
    assert run.ok, run.result
    assert run.result["info"]["output_names"] == ["out", "aux"]
    # Probed: the exporter alone declares four anonymous dimensions after Resize.
    assert run.result["info"]["output_shapes"] == {"out": ["batch", 3, 64, 64], "aux": ["batch", 3, 64, 64]}
    metrics = run.result["metrics"]["onnx"]
    assert metrics["verdict"] == "pass", metrics["reasons"]
    assert list(metrics["outputs"]) == ["out", "aux"]
    reference = sample_io.load(run.output("reference"))  # without the probe sets' reserved keys
    assert list(reference) == ["out", "aux"]
    assert reference["out"].shape == (4, 1, 3, 64, 64)


def test_dynamo_exporter_at_its_native_opset(runs: dict[str, StageRun]) -> None:
    run = runs["dynamo"]
    assert run.ok, run.result
    info = run.result["info"]
    assert (info["exporter"], info["opset"]) == ("dynamo", 18)
    assert run.result["metrics"]["onnx"]["verdict"] == "pass"
    assert info["output_names"] == ["output"]


def test_dynamo_cannot_go_below_opset_18(runs: dict[str, StageRun]) -> None:
    # torch 2.14's dynamo exporter quietly keeps opset 18 when asked for 15 (for onnx-tf);
    # the stage notices instead of handing onnx-tf a file it cannot read.
    assert_error(runs["dynamo_for_onnx_tf"], "export_failed", "dynamo: produced opset 18, not the requested 15")
