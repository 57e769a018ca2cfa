"""convert.onnx2tf's retry without onnxsim (issue 9, item 5), on a stacked LSTM.

A TorchScript ``nn.LSTM(24, 32, num_layers=2, batch_first=True)``: with onnx2tf's
defaults, onnxsim folds the zero initial state and the file keeps state between
``invoke()`` calls (sample 1 exact, later ones a few percent off); converted again with
``-nuo`` it is exact on every sample. The stage keeps the attempt that matches, and
``validate.tflite`` (a separate interpreter) confirms it on every sample.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest

from tests.support.stage_runner import make_torch_models, prepare_spec, run_stage
from tests.support.toolchain import toolchain_python

TOLERANCE = 1e-4
SAMPLES = 4
LSTM_SCRIPT = """
import json, sys
from pathlib import Path
import torch

class Stacked(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.lstm = torch.nn.LSTM(24, 32, num_layers=2, batch_first=True)

    def forward(self, x):
        out, _ = self.lstm(x)
        return out

torch.manual_seed(0)
out = Path(sys.argv[1])
out.mkdir(parents=True, exist_ok=True)
model = Stacked().eval()
path = out / "lstm.pt"
torch.jit.trace(model, torch.randn(1, 6, 24)).save(str(path))
print(json.dumps({"lstm": str(path)}))
"""


@pytest.fixture(scope="module")
def chain(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    toolchain_python("onnx2tf")  # fails the module at once when the environment is not built
    work = tmp_path_factory.mktemp("onnx2tf-lstm")
    model = make_torch_models(LSTM_SCRIPT, work / "models")["lstm"]
    spec = prepare_spec(
        "torchscript",
        inputs=[{"name": "x", "shape": [1, 6, 24], "dtype": "float32"}],
        toolchain="onnx2tf",
        validation_samples=SAMPLES,
    )
    prepare = run_stage("torch", "export.prepare", work / "prepare", {"model": model}, spec)
    assert prepare.ok, prepare.result
    shared = {"samples": prepare.output("samples"), "reference": prepare.output("reference")}
    convert = run_stage(
        "onnx2tf", "convert.onnx2tf", work / "convert", {"onnx": prepare.output("onnx"), **shared}, spec
    )
    assert convert.ok, convert.result
    tflite = {"tflite": convert.output("tflite_float32"), **shared}
    validate = run_stage("torch", "validate.tflite", work / "validate", tflite, spec)
    assert validate.ok, validate.result
    return {"prepare": prepare, "convert": convert, "validate": validate, "reference": shared["reference"]}


def test_the_stateful_default_file_is_retried_without_onnxsim(chain: dict[str, Any]) -> None:
    info = chain["convert"].result["info"]
    attempts = {a["name"]: a for a in info["attempts"]}
    assert list(attempts) == ["default", "without_onnxsim"]
    # The default (onnxsim) file: sample 1 matches, later ones drift; the reason says why.
    default = attempts["default"]
    assert default["matches"] is False
    assert any("keeps state between invocations" in r for r in default["check"]["reasons"]), default
    retried = attempts["without_onnxsim"]
    assert retried["extra_flags"] == ["-nuo"]
    assert retried["matches"] is True
    assert info["attempt"]["name"] == "without_onnxsim"
    assert "without onnxsim" in info["attempt"]["why"]
    assert info["converter"]["command"][-1] == "-nuo"  # the winner's command line
    assert info["converter"]["attempt"] == "without_onnxsim"  # what the report's attempts show
    assert info["sanity_check"]["samples"] == SAMPLES


def test_the_delivered_file_is_exact_on_every_sample(chain: dict[str, Any]) -> None:
    metrics = chain["validate"].result["metrics"]["tflite_float32"]
    assert metrics["verdict"] == "pass", metrics["reasons"]
    assert metrics["samples"] == SAMPLES >= 3
    with np.load(Path(chain["reference"])) as data:
        reference = data["output"]
    assert reference.shape == (SAMPLES, 1, 6, 32)
    out = metrics["outputs"]["output"]
    assert out["scale"] == pytest.approx(float(np.abs(reference).max()), rel=1e-6)
    assert out["scale"] > 1e-2  # real numbers
    assert out["max_abs"] <= TOLERANCE * out["scale"]
