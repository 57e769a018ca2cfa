"""The report describes the artifacts as they are (issue 9, item 6), on tiny models.

- A padded multi-output model (asymmetric padding before a strided convolution and a
  pooling, and a flattened output whose size follows the batch without being it):
  ``info.output_shapes`` (the report's ``outputs``) are the PyTorch reference's shapes,
  with only the spec's declared ``batch`` named.
- A small MLP as an ExportedProgram with a dynamic batch, converted by litert-torch
  with the spec's named dimension passed as ``dynamic_shapes``: litert-torch 0.10 cannot
  lower it, so the file fixes the batch, which ``validate.tflite`` says in the reasons
  (``frozen_dims``) while the numbers pass; ``dynamic_batch`` is reported all the same.
"""

from __future__ import annotations

from typing import Any

import pytest

from stages.kit import samples as sample_io
from stages.kit.results import ExportInfo
from tests.support.stage_runner import make_torch_models, prepare_spec, run_stage

SCRIPT = """
import json, sys
from pathlib import Path
import torch
import torch.nn.functional as F

class Padded(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = torch.nn.Conv2d(3, 4, 3, stride=2)

    def forward(self, x):
        a = self.conv(F.pad(x, (0, 1, 0, 1)))
        b = F.max_pool2d(F.pad(x, (1, 0, 2, 0)), 2)
        return a, b, x.flatten()

torch.manual_seed(0)
out = Path(sys.argv[1])
out.mkdir(parents=True, exist_ok=True)
padded = out / "padded.pt"
torch.jit.trace(Padded().eval(), torch.randn(1, 3, 15, 12)).save(str(padded))
mlp = torch.nn.Sequential(torch.nn.Linear(16, 32), torch.nn.ReLU(), torch.nn.Linear(32, 4)).eval()
batch = torch.export.Dim("batch", min=1, max=64)
program = torch.export.export(mlp, (torch.randn(2, 16),), dynamic_shapes=({0: batch},))
mlp_path = out / "mlp.pt2"
torch.export.save(program, str(mlp_path))
print(json.dumps({"padded": str(padded), "mlp": str(mlp_path)}))
"""


@pytest.fixture(scope="module")
def models(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    return make_torch_models(SCRIPT, tmp_path_factory.mktemp("dims-models"))


def test_output_shapes_are_the_references_with_only_declared_dims_named(models: dict[str, Any], tmp_path: Any) -> None:
    spec = prepare_spec("torchscript", inputs=[{"name": "x", "shape": ["batch", 3, 15, 12], "dtype": "float32"}])
    prepare = run_stage("torch", "export.prepare", tmp_path, {"model": models["padded"]}, spec)
    assert prepare.ok, prepare.result
    info = prepare.result["info"]
    reference = {name: value.shape[1:] for name, value in sample_io.load(prepare.output("reference")).items()}
    assert reference == {"output_0": (1, 4, 7, 6), "output_1": (1, 3, 8, 6), "output_2": (540,)}
    # The flattened output grows with the batch but is not the batch: its reference size.
    expected = {"output_0": ["batch", 4, 7, 6], "output_1": ["batch", 3, 8, 6], "output_2": [540]}
    assert info["output_shapes"] == expected
    assert ExportInfo.from_json(info).outputs() == [{"name": n, "shape": s} for n, s in expected.items()]


def test_litert_torch_is_given_the_dynamic_batch_and_the_frozen_one_is_reported(
    models: dict[str, Any], tmp_path: Any
) -> None:
    spec = prepare_spec(
        "exported_program",
        inputs=[{"name": "x", "shape": ["batch", 16], "dtype": "float32"}],
        toolchain="litert-torch",
    )
    prepare = run_stage("torch", "export.prepare", tmp_path / "prepare", {"model": models["mlp"]}, spec)
    assert prepare.ok, prepare.result
    shared = {"samples": prepare.output("samples"), "reference": prepare.output("reference")}
    convert = run_stage("torch", "convert.litert_torch", tmp_path / "convert", {"model": models["mlp"], **shared}, spec)
    assert convert.ok, convert.result
    info = convert.result["info"]
    # Measured: litert-torch 0.10 refuses even this MLP's dynamic batch; the static file ships.
    dynamic = info["dynamic_shapes"]
    assert dynamic["tried"] is True
    assert dynamic["kept"] is False
    assert dynamic["error"]
    assert info["static_shapes"] is True
    assert info["fixed_dimensions"] == {"x": {"batch": 2}}  # the program's example batch
    validate = run_stage(
        "torch", "validate.tflite", tmp_path / "validate", {"tflite": convert.output("tflite_float32"), **shared}, spec
    )
    assert validate.ok, validate.result
    metrics = validate.result["metrics"]["tflite_float32"]
    assert metrics["verdict"] == "pass", metrics["reasons"]  # the numbers stand
    assert metrics["frozen_dims"] == [{"input": "x", "dim": "batch", "axis": 0, "fixed_at": 2}]
    assert metrics["reasons"] == [
        "input 'x': the file fixes dimension 'batch' (axis 0) at 2, which the spec declares dynamic; "
        "other sizes will not run"
    ]
    assert metrics["dynamic_batch"] == {"dynamic": False, "probed": False, "leading_sizes": {"x": 2}}
