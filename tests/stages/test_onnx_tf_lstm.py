"""A stacked LSTM through the real onnx-tf stage fails as ``conversion_failed`` in one line (issue 9, item 3).

``nn.LSTM(24, 32, num_layers=2)`` uploaded as an ExportedProgram (``.pt2``): export.prepare
writes two ONNX LSTM nodes at opset 15; onnx-tf writes a SavedModel that cannot run (its
second layer gets the first layer's weight shapes: "Matrix size-incompatible"). Before,
the job failed as ``stage_failed`` with a TensorFlow traceback as the message; now the stage
says plainly that onnx-tf cannot convert stacked LSTMs and what to use instead
(stages/convert/onnx_tf_known.py), and the traceback stays in the stage log.
"""

from __future__ import annotations

import pytest

from tests.support.stage_runner import StageRun, make_torch_models, prepare_spec, run_stage

LSTM_FILES = """
import json, sys, warnings
from pathlib import Path
import torch

warnings.filterwarnings("ignore")
out = Path(sys.argv[1]); out.mkdir(parents=True, exist_ok=True)
torch.manual_seed(3)


class Stacked(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.lstm = torch.nn.LSTM(24, 32, num_layers=2, batch_first=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.lstm(x)[0]


program = torch.export.export(Stacked().eval(), (torch.randn(1, 5, 24),))
torch.export.save(program, str(out / "lstm.pt2"))
print(json.dumps({"lstm": str(out / "lstm.pt2")}))
"""


@pytest.fixture(scope="module")
def converted(tmp_path_factory: pytest.TempPathFactory) -> StageRun:
    work = tmp_path_factory.mktemp("stacked-lstm")
    files = make_torch_models(LSTM_FILES, work / "files")
    spec = prepare_spec("exported_program", onnx_consumers=["onnx-tf", "onnx2tf"])
    prepare = run_stage("torch", "export.prepare", work / "prepare", {"model": files["lstm"]}, spec)
    assert prepare.ok, prepare.result
    assert prepare.result["info"]["opset"] == 15
    inputs = {"onnx": prepare.output("onnx"), "samples": prepare.output("samples")}
    return run_stage(
        "onnx-tf", "convert.onnx_tf", work / "convert", {**inputs, "reference": prepare.output("reference")}, spec
    )


def test_stacked_lstm_through_onnx_tf_is_a_conversion_failure_in_one_line(converted: StageRun) -> None:
    assert not converted.ok
    assert converted.error_code == "conversion_failed", converted.result
    message = converted.result["error"]["message"]
    assert "\n" not in message
    assert len(message) < 300, len(message)
    for noise in ("Traceback", 'File "', "Graph execution error"):
        assert noise not in message
    assert message.startswith("onnx-tf cannot convert stacked LSTMs (num_layers > 1")
    assert "2 LSTM layers" in message
    assert "Use the onnx2tf or litert-torch toolchain" in message  # what to do
    # The traceback is kept for the operator, in the stage log.
    assert "Traceback" in converted.log
    assert "Matrix size-incompatible" in converted.log
