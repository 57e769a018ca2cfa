"""Modern ONNX reaches onnx-tf (issue 9, item 4): operators ``onnx.version_converter`` cannot
take below the opset that introduced them are decomposed first (stages/export/onnx_decompose.py).

- the decomposition itself, one node at a time, against onnxruntime on random inputs
  (tests/support/decompose_check.py, in the torch environment);
- an opset-17 ONNX upload of a tiny transformer encoder (LayerNormalization, attention,
  GELU): export.prepare brings it to opset 15, onnx-tf converts it, and the SavedModel,
  loaded again in TensorFlow apart from the stage, matches onnxruntime's reference.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest

from tests.support.stage_runner import StageRun, make_torch_models, prepare_spec, run_stage
from tests.support.toolchain import run_script, tf_script

MAX_DECOMPOSITION_ERROR = 1e-5
TOLERANCE = 1e-4
BOTH = ["onnx-tf", "onnx2tf"]

ENCODER_FILES = """
import json, sys, warnings
from pathlib import Path
import torch

warnings.filterwarnings("ignore")
out = Path(sys.argv[1]); out.mkdir(parents=True, exist_ok=True)
torch.manual_seed(13)


class Encoder(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.attention = torch.nn.MultiheadAttention(16, 2, batch_first=True)
        self.norm1, self.norm2 = torch.nn.LayerNorm(16), torch.nn.LayerNorm(16)
        self.ffn = torch.nn.Sequential(torch.nn.Linear(16, 32), torch.nn.GELU(), torch.nn.Linear(32, 16))

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        attended, _ = self.attention(tokens, tokens, tokens)
        hidden = self.norm1(tokens + attended)
        return self.norm2(hidden + self.ffn(hidden))


model = Encoder().eval()
with torch.no_grad():
    for norm in (model.norm1, model.norm2):
        norm.weight.uniform_(0.5, 1.5)
        norm.bias.uniform_(-0.5, 0.5)
torch.onnx.export(
    model,
    (torch.randn(1, 6, 16),),
    str(out / "encoder17.onnx"),
    dynamo=False,
    opset_version=17,
    input_names=["tokens"],
    output_names=["hidden"],
)

# Mish (opset 18) has neither an adapter nor a decomposition: onnx-tf is skipped, with the reason.
from onnx import TensorProto, helper

graph = helper.make_graph(
    [helper.make_node("Mish", ["features"], ["activated"])],
    "mish",
    [helper.make_tensor_value_info("features", TensorProto.FLOAT, [1, 8])],
    [helper.make_tensor_value_info("activated", TensorProto.FLOAT, [1, 8])],
)
helper_model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)], ir_version=8)
(out / "mish18.onnx").write_bytes(helper_model.SerializeToString())
print(json.dumps({"encoder": str(out / "encoder17.onnx"), "mish": str(out / "mish18.onnx")}))
"""


def test_decompositions_match_onnxruntime() -> None:
    cases: dict[str, dict[str, Any]] = run_script("torch", "decompose_check.py")
    assert set(cases) >= {"layer_norm_17", "layer_norm_18", "gelu_20", "gelu_20_tanh"}
    for name, case in cases.items():
        op = "Gelu" if name.startswith("gelu") else "LayerNormalization"
        assert case["decomposed"] == [op], name
        assert case["opset"] == 15, name
        assert op not in case["ops"], name
        assert case["scale"] > 1.0, name
        assert case["max_abs"] < MAX_DECOMPOSITION_ERROR, (name, case)
    assert cases["layer_norm_17_positive_axis_all_outputs"]["outputs"] == 3


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    return make_torch_models(ENCODER_FILES, tmp_path_factory.mktemp("uploads"))


@pytest.fixture(scope="module")
def encoder_runs(files: dict[str, Path], tmp_path_factory: pytest.TempPathFactory) -> dict[str, StageRun]:
    work = tmp_path_factory.mktemp("encoder17")
    spec = prepare_spec(
        "onnx",
        inputs=[{"name": "tokens", "shape": [1, 6, 16], "dtype": "float32"}],  # the legacy exporter fixes MHA's sizes
        onnx_consumers=BOTH,
        tolerance={"float32": TOLERANCE},
    )
    prepare = run_stage("torch", "export.prepare", work / "prepare", {"model": files["encoder"]}, spec)
    assert prepare.ok, prepare.result
    shared = {"samples": prepare.output("samples"), "reference": prepare.output("reference")}
    convert = run_stage(
        "onnx-tf", "convert.onnx_tf", work / "convert", {"onnx": prepare.output("onnx"), **shared}, spec
    )
    return {"prepare": prepare, "convert": convert}


def test_opset17_encoder_is_decomposed_to_onnx_tfs_opset(encoder_runs: dict[str, StageRun]) -> None:
    info = encoder_runs["prepare"].result["info"]
    assert (info["source_opset"], info["opset"], info["onnx_tf_compatible"]) == (17, 15, True)
    assert info["opset_conversion"]["ok"] is True
    assert info["opset_conversion"]["decomposed"] == ["LayerNormalization"]
    metrics = encoder_runs["prepare"].result["metrics"]["onnx"]
    assert metrics["verdict"] == "pass", metrics["reasons"]
    numbers = metrics["outputs"]["hidden"]
    assert numbers["scale"] > 0.5
    assert numbers["max_abs"] <= TOLERANCE * numbers["scale"]


def test_onnx_tf_saved_model_of_the_opset17_encoder_matches_the_reference(
    encoder_runs: dict[str, StageRun], tmp_path: Path
) -> None:
    convert = encoder_runs["convert"]
    assert convert.ok, convert.result
    assert convert.result["info"]["onnx_opset"] == 15
    stage_metrics = convert.result["metrics"]["saved_model"]
    assert stage_metrics["verdict"] == "pass", stage_metrics["reasons"]
    # The SavedModel loaded again in TensorFlow, apart from the stage that wrote it.
    prepare = encoder_runs["prepare"]
    with np.load(prepare.output("samples")) as samples, np.load(prepare.output("reference")) as reference:
        tokens, expected = samples["tokens"], reference["hidden"]
    np.save(tmp_path / "tokens.npy", tokens)
    answer = tf_script(
        "run_saved_model", str(convert.output("saved_model")), str(tmp_path / "tokens.npy"), str(tmp_path / "got.npz")
    )
    assert answer["input"] == "tokens"
    got = np.load(tmp_path / "got.npz")["output"]
    assert got.shape == expected.shape
    scale = float(np.abs(expected).max())
    assert scale > 0.5
    assert float(np.abs(got - expected).max()) <= TOLERANCE * scale


@pytest.mark.parametrize("consumers", [BOTH, ["onnx-tf"]])
def test_an_operator_without_a_way_down_skips_onnx_tf_with_the_reason(
    files: dict[str, Path], tmp_path: Path, consumers: list[str]
) -> None:
    spec = prepare_spec("onnx", onnx_consumers=consumers, tolerance={"float32": TOLERANCE})
    run = run_stage("torch", "export.prepare", tmp_path, {"model": files["mish"]}, spec)
    if consumers == BOTH:  # onnx2tf reads opset 18: the file stays, flagged for onnx-tf
        assert run.ok, run.result
        info = run.result["info"]
        assert (info["opset"], info["onnx_tf_compatible"]) == (18, False)
        assert "Mish" in info["onnx_tf_reason"]
        assert "decomposed" not in info["opset_conversion"]
    else:
        assert run.error_code == "opset_not_supported", run.result
        assert "Mish" in run.result["error"]["message"]
