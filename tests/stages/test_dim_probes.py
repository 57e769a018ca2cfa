"""Every dimension the spec names is exercised (issue 9, item 7), on a tiny sequence model.

A TorchScript self-attention block over ``["batch", "seq", 16]``: ``export.prepare``
stores the reference at a second size of both named dimensions (``stages.kit.probes``,
hidden from every other reader of ``reference.npz``), and ``validate.tflite`` runs
onnx2tf's file at both sizes, reporting the input shapes it ran (``sample_shapes``) and
the numbers at each size. The SavedModel onnx2tf writes of the same file is run at both
sizes through ``serving_default`` in the stage (``stages.kit.saved_model.validate``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest

from stages.kit import probes as probe_io
from stages.kit import samples as sample_io
from tests.support.stage_runner import make_torch_models, prepare_spec, run_stage
from tests.support.toolchain import toolchain_python

TOLERANCE = 1e-4
SCRIPT = """
import json, sys
from pathlib import Path
import torch

class Attend(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.qkv = torch.nn.Linear(16, 48)
        self.out = torch.nn.Linear(16, 8)

    def forward(self, x):
        q, k, v = self.qkv(x).chunk(3, dim=-1)
        weights = torch.softmax(q @ k.transpose(1, 2) / 4.0, dim=-1)
        return self.out(weights @ v)

torch.manual_seed(0)
out = Path(sys.argv[1])
out.mkdir(parents=True, exist_ok=True)
path = out / "attend.pt"
torch.jit.trace(Attend().eval(), torch.randn(1, 3, 16)).save(str(path))
print(json.dumps({"attend": str(path)}))
"""


@pytest.fixture(scope="module")
def chain(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    toolchain_python("onnx2tf")
    work = tmp_path_factory.mktemp("dim-probes")
    model = make_torch_models(SCRIPT, work / "models")["attend"]
    spec = prepare_spec(
        "torchscript",
        inputs=[{"name": "x", "shape": ["batch", "seq", 16], "dtype": "float32"}],
        toolchain="onnx2tf",
        targets=["onnx", "saved_model", "tflite"],
    )
    prepare = run_stage("torch", "export.prepare", work / "prepare", {"model": model}, spec)
    assert prepare.ok, prepare.result
    shared = {"samples": prepare.output("samples"), "reference": prepare.output("reference")}
    onnx = {"onnx": prepare.output("onnx"), **shared}
    convert = run_stage("onnx2tf", "convert.onnx2tf", work / "convert", onnx, spec)
    assert convert.ok, convert.result
    tflite = {"tflite": convert.output("tflite_float32"), **shared}
    validate = run_stage("torch", "validate.tflite", work / "validate", tflite, spec)
    assert validate.ok, validate.result
    return {"prepare": prepare, "convert": convert, "validate": validate}


def test_the_reference_holds_a_second_size_of_every_named_dimension(chain: dict[str, Any]) -> None:
    prepare = chain["prepare"]
    assert prepare.result["info"]["probes"] == {"sizes": [{"batch": 1, "seq": 1}, {"batch": 2, "seq": 2}]}
    reference = Path(prepare.output("reference"))
    assert list(sample_io.load(reference)) == ["output"]  # the probe keys stay hidden
    (probe,) = probe_io.load(reference)
    assert probe.sizes == {"batch": 2, "seq": 2}
    assert probe.inputs["x"].shape == (probe_io.PROBE_SAMPLES, 2, 2, 16)
    assert probe.outputs["output"].shape == (probe_io.PROBE_SAMPLES, 2, 2, 8)
    assert float(np.abs(probe.outputs["output"]).max()) > 1e-2


def test_the_file_runs_at_both_sizes_and_the_report_lists_the_shapes(chain: dict[str, Any]) -> None:
    metrics = chain["validate"].result["metrics"]["tflite_float32"]
    assert metrics["sample_shapes"] == [{"x": [1, 1, 16]}, {"x": [2, 2, 16]}]
    (probe,) = metrics["probes"]
    assert probe["sizes"] == {"batch": 2, "seq": 2}
    assert probe["ran"] is True, probe
    assert probe["verdict"] == "pass", metrics["reasons"]
    assert probe["max_abs_over_scale"]["output"] <= TOLERANCE
    assert metrics["verdict"] == "pass", metrics["reasons"]
    assert metrics["outputs"]["output"]["max_abs"] <= TOLERANCE * metrics["outputs"]["output"]["scale"]


def test_the_saved_model_runs_at_both_sizes_too(chain: dict[str, Any]) -> None:
    check = chain["convert"].result["metrics"]["saved_model"]
    assert check["sample_shapes"] == [{"x": [1, 1, 16]}, {"x": [2, 2, 16]}]
    (probe,) = check["probes"]
    assert probe["sizes"] == {"batch": 2, "seq": 2}
    assert probe["ran"] is True, probe
    assert probe["verdict"] == "pass", check["reasons"]
    assert probe["max_abs_over_scale"]["output"] <= TOLERANCE
    assert check["verdict"] == "pass", check["reasons"]
