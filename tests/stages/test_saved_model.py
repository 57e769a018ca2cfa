"""The SavedModel as a candidate output: onnx2tf writes one, onnx-tf keeps its own.

ONNX uploads at opset 17 (LayerNormalization, which onnx-tf cannot read) of a tiny
transformer encoder, a decoder and a ConvNeXt-style block (and a convolution whose output
onnx2tf leaves channel-last, named ``hidden:0``): export.prepare ->
convert.onnx2tf with the ``saved_model`` target -> validate.tflite. Each gets
``model.onnx``, a validated SavedModel and a float32 .tflite; the SavedModel's numbers
are checked again here by loading ``saved_model.zip`` in TensorFlow with
tests/support/saved_model_check.py, independently of the stage.

The einsum case (``torch.einsum("bij,ij->b", x, W)``): onnx-tf's SavedModel passes and
its SavedModel->TFLite step fails; the stage keeps the SavedModel and records the
failure against the .tflite alone.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest

from tests.support.stage_runner import StageRun, make_torch_models, prepare_spec, run_stage
from tests.support.toolchain import run_script

TOLERANCE = 1e-4
TARGETS = ["onnx", "saved_model", "tflite"]

MODELS = r"""
import json, sys
from pathlib import Path
import torch
from torch import nn

out = Path(sys.argv[1]); out.mkdir(parents=True, exist_ok=True)
torch.manual_seed(0)

class Encoder(nn.Module):
    def __init__(self):
        super().__init__()
        self.layer = nn.TransformerEncoderLayer(16, 2, 32, dropout=0.0, batch_first=True)
        self.head = nn.Linear(16, 5)
    def forward(self, tokens):
        return self.head(self.layer(tokens))

class Decoder(nn.Module):
    def __init__(self):
        super().__init__()
        self.layer = nn.TransformerDecoderLayer(16, 2, 32, dropout=0.0, batch_first=True, norm_first=True)
        self.register_buffer("mask", nn.Transformer.generate_square_subsequent_mask(6))
    def forward(self, tokens, memory):
        return self.layer(tokens, memory, tgt_mask=self.mask)

class ConvNeXtBlock(nn.Module):
    def __init__(self, dim=8):
        super().__init__()
        self.dwconv = nn.Conv2d(dim, dim, 7, padding=3, groups=dim)
        self.norm = nn.LayerNorm(dim, eps=1e-6)
        self.up = nn.Linear(dim, 4 * dim)
        self.down = nn.Linear(4 * dim, dim)
        self.gamma = nn.Parameter(torch.full((dim,), 0.5))
    def forward(self, image):
        x = self.dwconv(image).permute(0, 2, 3, 1)
        x = self.down(nn.functional.gelu(self.up(self.norm(x)))) * self.gamma
        return image + x.permute(0, 3, 1, 2)

class Einsum(nn.Module):
    def __init__(self):
        super().__init__()
        self.W = nn.Parameter(torch.randn(3, 4))
    def forward(self, x):
        return torch.einsum("bij,ij->b", x, self.W)

files = {}
def export(name, model, args, inputs, outputs, opset):
    path = out / f"{name}.onnx"
    torch.onnx.export(model.eval(), args, str(path), opset_version=opset, input_names=inputs,
                      output_names=outputs, dynamo=False)
    files[name] = str(path)

export("encoder", Encoder(), (torch.randn(1, 6, 16),), ["tokens"], ["logits"], 17)
export("decoder", Decoder(), (torch.randn(1, 6, 16), torch.randn(1, 4, 16)), ["tokens", "memory"], ["hidden"], 17)
export("convnext", ConvNeXtBlock(), (torch.randn(1, 8, 16, 16),), ["image"], ["features"], 17)
export("einsum", Einsum(), (torch.randn(2, 3, 4),), ["x"], ["y"], 15)
# Names TensorFlow cannot keep ("hidden:0") and a 4-D output: the signature is rebuilt.
renamed = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.Tanh())
export("renamed", renamed, (torch.randn(1, 3, 6, 5),), ["image"], ["hidden:0"], 17)
print(json.dumps(files))
"""


def spec(**changes: Any) -> dict[str, Any]:
    return prepare_spec("onnx", **{"tolerance": {"float32": TOLERANCE}, "targets": TARGETS, **changes})


@pytest.fixture(scope="module")
def models(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    return make_torch_models(MODELS, tmp_path_factory.mktemp("saved-model-models"))


def onnx2tf_chain(work: Path, model: Path) -> dict[str, StageRun]:
    job = spec(onnx_consumers=["onnx2tf"])
    prepare = run_stage("torch", "export.prepare", work / "prepare", {"model": model}, job)
    assert prepare.ok, prepare.result
    shared = {"samples": prepare.output("samples"), "reference": prepare.output("reference")}
    convert = run_stage("onnx2tf", "convert.onnx2tf", work / "convert", {"onnx": prepare.output("onnx"), **shared}, job)
    assert convert.ok, convert.result
    validate = run_stage(
        "torch", "validate.tflite", work / "validate", {"tflite": convert.output("tflite_float32"), **shared}, job
    )
    return {"prepare": prepare, "convert": convert, "validate": validate}


FAMILIES = ("encoder", "decoder", "convnext", "renamed")


@pytest.fixture(scope="module")
def chains(models: dict[str, Path], tmp_path_factory: pytest.TempPathFactory) -> dict[str, dict[str, StageRun]]:
    work = tmp_path_factory.mktemp("saved-model-chains")
    with ThreadPoolExecutor(max_workers=2) as pool:
        runs = {name: pool.submit(onnx2tf_chain, work / name, models[name]) for name in FAMILIES}
        return {name: future.result() for name, future in runs.items()}


@pytest.mark.parametrize("family", FAMILIES)
def test_opset17_upload_gets_onnx_saved_model_and_tflite(chains: dict[str, dict[str, StageRun]], family: str) -> None:
    chain = chains[family]
    prepare, convert, validate = chain["prepare"], chain["convert"], chain["validate"]
    assert prepare.result["info"]["opset"] == 17
    assert prepare.result["metrics"]["onnx"]["verdict"] == "pass"
    assert convert.result["outputs"] == {"tflite_float32": "model_float32.tflite", "saved_model": "saved_model.zip"}
    assert convert.result["info"]["failed"] == {}
    check = convert.result["metrics"]["saved_model"]
    assert check["verdict"] == "pass", check["reasons"]
    for numbers in check["outputs"].values():
        assert numbers["scale"] > 1e-3
        assert numbers["max_abs"] <= TOLERANCE * numbers["scale"]
    assert validate.ok
    assert validate.result["metrics"]["tflite_float32"]["verdict"] == "pass"
    saved = convert.result["info"]["saved_model"]
    assert saved["flag"] == "-fdosm"
    assert saved["tensorflow"] == "2.21.0"


@pytest.mark.parametrize("family", FAMILIES)
def test_saved_model_numbers_hold_when_loaded_independently(
    chains: dict[str, dict[str, StageRun]], family: str
) -> None:
    chain = chains[family]
    prepare, convert = chain["prepare"], chain["convert"]
    found = run_script(
        "onnx2tf",
        "saved_model_check.py",
        str(convert.output("saved_model")),
        str(prepare.output("samples")),
        str(prepare.output("reference")),
    )
    # The signature keeps the upload's input names and output names; the layout is PyTorch's.
    assert sorted(found["inputs"]) == sorted(prepare.result["info"]["input_names"])
    assert found["outputs"] == sorted(prepare.result["info"]["output_names"])
    for name, numbers in found["compared"].items():
        assert numbers["max_abs"] is not None, f"{name}: shape {numbers['shape']} differs from the reference"
        assert numbers["scale"] > 1e-3
        assert numbers["max_abs"] <= TOLERANCE * numbers["scale"], (name, numbers)


def test_tflite_only_job_imports_no_tensorflow(models: dict[str, Path], tmp_path: Path) -> None:
    job = spec(onnx_consumers=["onnx2tf"], targets=["onnx", "tflite"])
    prepare = run_stage("torch", "export.prepare", tmp_path / "prepare", {"model": models["encoder"]}, job)
    shared = {"samples": prepare.output("samples"), "reference": prepare.output("reference")}
    inputs = {"onnx": prepare.output("onnx"), **shared}
    convert = run_stage("onnx2tf", "convert.onnx2tf", tmp_path / "convert", inputs, job)
    assert convert.ok, convert.result
    assert convert.result["outputs"] == {"tflite_float32": "model_float32.tflite"}
    assert convert.result["info"]["saved_model"] is None
    assert "-fdosm" not in convert.result["info"]["converter"]["command"]


@pytest.fixture(scope="module")
def einsum(models: dict[str, Path], tmp_path_factory: pytest.TempPathFactory) -> dict[str, StageRun]:
    work = tmp_path_factory.mktemp("einsum")
    job = spec(onnx_consumers=["onnx-tf", "onnx2tf"])
    prepare = run_stage("torch", "export.prepare", work / "prepare", {"model": models["einsum"]}, job)
    assert prepare.ok, prepare.result
    shared = {"samples": prepare.output("samples"), "reference": prepare.output("reference")}
    convert = run_stage("onnx-tf", "convert.onnx_tf", work / "convert", {"onnx": prepare.output("onnx"), **shared}, job)
    return {"prepare": prepare, "convert": convert}


def test_einsum_keeps_the_passing_saved_model_when_its_tflite_fails(einsum: dict[str, StageRun]) -> None:
    convert = einsum["convert"]
    assert convert.ok, convert.result
    assert convert.result["outputs"] == {"saved_model": "saved_model.zip"}
    check = convert.result["metrics"]["saved_model"]
    assert check["verdict"] == "pass", check["reasons"]
    assert check["outputs"]["y"]["max_abs"] <= TOLERANCE * check["outputs"]["y"]["scale"]
    failed = convert.result["info"]["failed"]["tflite_float32"]
    assert failed["code"] == "tflite_conversion_failed"
    assert "Select-TF" in failed["reason"]
    found = run_script(
        "onnx-tf",
        "saved_model_check.py",
        str(convert.output("saved_model")),
        str(einsum["prepare"].output("samples")),
        str(einsum["prepare"].output("reference")),
    )
    assert found["compared"]["y"]["max_abs"] <= TOLERANCE * found["compared"]["y"]["scale"]


def test_an_output_left_channel_last_gets_pytorchs_layout_back(chains: dict[str, dict[str, StageRun]]) -> None:
    # onnx2tf's own SavedModel returns this output NHWC: the stage re-signs it with the
    # .tflite's boundary plan, and the check above found PyTorch's NCHW shape and values.
    info = chains["renamed"]["convert"].result["info"]
    assert info["converter"]["boundary_rewrite"]["output_transposes"] == {"hidden_0": [0, 3, 1, 2]}
    rewrite = info["saved_model"]["signature_rewrite"]
    assert rewrite["output_transposes"] == {"hidden_0": [0, 3, 1, 2]}
    assert info["saved_model"]["signature"]["outputs"] == ["hidden_0"]
    assert info["saved_model"]["signature"]["inputs"] == {"image": {"shape": [1, 3, 6, 5], "dtype": "float32"}}
