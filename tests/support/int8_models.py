"""Tiny models for the int8 verdict and fallback tests, as ExportedPrograms built in the torch
env, and their chains (export.prepare -> convert.litert_torch) with a calibration .npz of other
inputs than the validation samples.

- ``detector``: a detection-style head, ``[1, 3, 16, 16] -> [1, 7, 256]``: rows 0-3 are box
  coordinates (sigmoid x 640), rows 4-6 sigmoid scores, concatenated in one output.
- ``cnn``: a clean tiny CNN classifier, ``[1, 3, 16, 16] -> [1, 10]``.
- ``gelu``: a convolution and exact GELU (ONNX ``Erf``, no TFLite int8 builtin),
  ``[1, 3, 16, 16] -> [1, 10]``.
- ``padded_pool``: a ResNet-style stem and block whose max-pool pads (``MaxPool2d(3, 2,
  padding=1)``, as torchvision's resnet18), ``[1, 3, 32, 32] -> [1, 10]``.
- ``two_heads``: BERT's outputs in small, ``[1, 3, 8, 8]`` (64 tokens of 3 features) ->
  a layer-normed hidden state ``[1, 64, 16]`` and ``tanh(linear(hidden[:, 0]))`` ``[1, 16]``:
  a graph output that also feeds the layers after it.
- ``faint``: ``cnn``'s architecture with no biases and its first convolution's weights scaled
  by 1e-5, so every activation stays below 1e-4, as an untrained mobilenet_v2's do after a
  few inverted residuals (``stages.convert.litert_torch_pt2e``: under PT2E's scale floor).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest

from tests.support.quantize_chains import CALIBRATION_SAMPLES
from tests.support.stage_runner import StageRun, make_torch_models, run_stage

MAKE = """
import json, sys
from pathlib import Path
import torch
from torch import nn

torch.manual_seed(0)
out = Path(sys.argv[1]); out.mkdir(parents=True, exist_ok=True)


class Detector(nn.Module):
    def __init__(self):
        super().__init__()
        self.body = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.Conv2d(8, 7, 3, padding=1))

    def forward(self, image):
        x = self.body(image).flatten(2)  # [1, 7, 256]
        return torch.cat([torch.sigmoid(x[:, :4]) * 640.0, torch.sigmoid(x[:, 4:])], dim=1)


class Block(nn.Module):
    def __init__(self, c):
        super().__init__()
        self.a = nn.Sequential(nn.Conv2d(c, c, 3, padding=1, bias=False), nn.BatchNorm2d(c), nn.ReLU())
        self.b = nn.Sequential(nn.Conv2d(c, c, 3, padding=1, bias=False), nn.BatchNorm2d(c))

    def forward(self, x):
        return torch.relu(x + self.b(self.a(x)))


class TwoHeads(nn.Module):  # BERT's two outputs in small: a hidden state, and a head reading it

    def __init__(self):
        super().__init__()
        self.proj, self.norm, self.pool = nn.Linear(3, 16), nn.LayerNorm(16), nn.Linear(16, 16)

    def forward(self, image):
        hidden = self.norm(self.proj(image.flatten(2).transpose(1, 2)))  # [1, 64, 16]
        return hidden, torch.tanh(self.pool(hidden[:, 0]))


def classifier(stem, width):
    return nn.Sequential(*stem, nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(width, 10))


with torch.random.fork_rng():  # the other models' weights stay what they were measured with
    torch.manual_seed(7)
    two_heads = TwoHeads()
    nn.init.normal_(two_heads.norm.weight, 1.0, 0.2); nn.init.normal_(two_heads.norm.bias, std=0.2)
models = {
    "detector": (Detector(), 16),
    "cnn": (classifier([nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.Conv2d(8, 16, 3, stride=2), nn.ReLU()], 16), 16),
    "gelu": (classifier([nn.Conv2d(3, 8, 3, padding=1), nn.GELU()], 8), 16),
    "padded_pool": (
        classifier(
            [nn.Conv2d(3, 16, 7, 2, 3, bias=False), nn.BatchNorm2d(16), nn.ReLU(), nn.MaxPool2d(3, 2, padding=1),
             Block(16)],
            16,
        ),
        32,
    ),
    "two_heads": (two_heads, 8),
    "faint": (classifier([nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.Conv2d(8, 16, 3, stride=2), nn.ReLU()], 16), 16),
}
with torch.no_grad():
    faint = models["faint"][0]
    faint[0].weight.mul_(1e-5)
    for module in faint.modules():
        if isinstance(module, (nn.Conv2d, nn.Linear)):
            module.bias.zero_()
files = {}
for name, (model, side) in models.items():
    model.eval()
    for module in model.modules():
        if isinstance(module, nn.BatchNorm2d):
            module.running_mean.uniform_(-0.2, 0.2); module.running_var.uniform_(0.5, 1.5)
    path = out / f"{name}.pt2"
    torch.export.save(torch.export.export(model, (torch.randn(1, 3, side, side),)), str(path))
    files[name] = str(path)
print(json.dumps(files))
"""
# Each op of the file with its input and output dtypes, and the boundary's, read by the
# LiteRT interpreter (not by the service's own flatbuffer readers).
TENSOR_TYPES = """
import json, sys
from ai_edge_litert.interpreter import Interpreter
it = Interpreter(model_path=sys.argv[1])
dtype = {d["index"]: d["dtype"].__name__ for d in it.get_tensor_details()}
ops = [[op["op_name"], [dtype[i] for i in op["inputs"] if i >= 0], [dtype[i] for i in op["outputs"]]]
       for op in it._get_ops_details()]
ports = [d["dtype"].__name__ for d in [*it.get_input_details(), *it.get_output_details()]]
print(json.dumps({"ops": ops, "ports": ports}))
"""
SIDES = {"detector": 16, "cnn": 16, "gelu": 16, "padded_pool": 32, "two_heads": 8, "faint": 16}
_MODELS: dict[str, Path] = {}
_CHAINS: dict[str, dict[str, Any]] = {}


def spec(name: str, **changes: Any) -> dict[str, Any]:
    side = SIDES[name]
    return {
        "model_format": "exported_program",
        "inputs": [{"name": "image", "shape": [1, 3, side, side], "dtype": "float32"}],
        "opset": None,
        "exporter": "auto",
        "toolchain": "litert-torch",
        "layout": "nchw",
        "tolerance": {"float32": 1e-4},
        "quantization": ["float32", "int8"],
        "validation_samples": 4,
        "seed": 0,
        **changes,
    }


def model_file(name: str, factory: pytest.TempPathFactory) -> Path:
    """The model's ExportedProgram (.pt2); the models are made once per session."""
    if not _MODELS:
        _MODELS.update(make_torch_models(MAKE, factory.mktemp("int8-models")))
    return _MODELS[name]


def int8_chain(name: str, factory: pytest.TempPathFactory) -> dict[str, Any]:
    """export.prepare -> convert.litert_torch for one model (with its PT2E int8 file), and its
    calibration .npz (``CALIBRATION_SAMPLES`` images); once per session."""
    if name not in _CHAINS:
        work = factory.mktemp(f"int8-{name}")
        model = model_file(name, factory)
        prepare = run_stage("torch", "export.prepare", work / "prepare", {"model": model}, spec(name))
        assert prepare.ok, prepare.result
        shared = {"samples": prepare.output("samples"), "reference": prepare.output("reference")}
        calibration = work / "calibration.npz"
        side = SIDES[name]
        rng = np.random.default_rng(1)
        np.savez(calibration, image=rng.standard_normal((CALIBRATION_SAMPLES, 1, 3, side, side)).astype(np.float32))
        # The job asks for int8: the stage also writes litert-torch's PT2E file, calibrated on it.
        inputs = {"model": model, "calibration": calibration, **shared}
        convert = run_stage("torch", "convert.litert_torch", work / "convert", inputs, spec(name))
        assert convert.ok, convert.result
        _CHAINS[name] = {"prepare": prepare, "convert": convert, "calibration": calibration, "model": model}
    return _CHAINS[name]


def quantize_int8(
    name: str, factory: pytest.TempPathFactory, work: Path, pt2e: bool = False, **options: Any
) -> StageRun:
    """quantize.litert at int8 on the chain's float32 file, with the uploaded calibration (and
    with ``pt2e``, litert-torch's PT2E file as one more attempt)."""
    runs = int8_chain(name, factory)
    inputs = {
        "tflite": runs["convert"].output("tflite_float32"),
        "samples": runs["prepare"].output("samples"),
        "reference": runs["prepare"].output("reference"),
        "calibration": runs["calibration"],
    }
    if pt2e:
        inputs["tflite_int8_pt2e"] = runs["convert"].output("tflite_int8_pt2e")
    run = run_stage("torch", "quantize.litert", work, inputs, spec(name), {"precisions": ["int8"], **options})
    assert run.ok, run.result
    return run


def onnx2tf_file(name: str, factory: pytest.TempPathFactory) -> StageRun:
    """convert.onnx2tf of the chain's ONNX file (its float32 .tflite is channel-last)."""
    runs = int8_chain(name, factory)
    if "onnx2tf" not in runs:
        prepare = runs["prepare"]
        inputs = {
            "onnx": prepare.output("onnx"),
            "samples": prepare.output("samples"),
            "reference": prepare.output("reference"),
        }
        convert = run_stage(
            "onnx2tf",
            "convert.onnx2tf",
            factory.mktemp(f"int8-{name}-onnx2tf"),
            inputs,
            spec(name, toolchain="onnx2tf"),
        )
        assert convert.ok, convert.result
        runs["onnx2tf"] = convert
    converted: StageRun = runs["onnx2tf"]
    return converted


def quantize_sources(
    name: str,
    factory: pytest.TempPathFactory,
    work: Path,
    toolchain: str = "auto",
    precisions: list[str] | None = None,
    pt2e: bool = False,
    pt2e_error: str | None = None,
) -> StageRun:
    """quantize.litert as the worker runs it for a job with two passing candidates: onnx2tf's
    float32 file (chosen) and litert-torch's, in that order, with the uploaded calibration;
    with ``pt2e`` also litert-torch's PT2E int8 file (the plan's ``tflite_int8_pt2e_<c>``), with
    ``pt2e_error`` the worker's word that litert-torch could not make it."""
    runs = int8_chain(name, factory)
    onnx2tf = onnx2tf_file(name, factory)
    prepare = runs["prepare"]
    inputs = {
        "tflite": onnx2tf.output("tflite_float32"),
        "tflite_onnx2tf": onnx2tf.output("tflite_float32"),
        "tflite_litert-torch": runs["convert"].output("tflite_float32"),
        "samples": prepare.output("samples"),
        "reference": prepare.output("reference"),
        "calibration": runs["calibration"],
    }
    if pt2e:
        inputs["tflite_int8_pt2e_litert-torch"] = runs["convert"].output("tflite_int8_pt2e")
    transposes = onnx2tf.result["info"].get("input_transposes")
    sources = [
        {"input": "tflite_onnx2tf", "candidate": "onnx2tf", "passed": True, "input_transposes": transposes},
        {"input": "tflite_litert-torch", "candidate": "litert-torch", "passed": True, "input_transposes": None},
    ]
    if pt2e_error:
        sources[1]["prebuilt_errors"] = {"pt2e": pt2e_error}
    options = {"precisions": precisions or ["int8"], "sources": sources}
    run = run_stage("torch", "quantize.litert", work, inputs, spec(name, toolchain=toolchain), options)
    assert run.ok, run.result
    return run
