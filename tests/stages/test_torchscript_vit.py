"""A traced torchvision ViT uploaded as TorchScript converts (issue 9).

``torch.jit.trace(vit, x).save(...)``, loaded back, has no shapes inside
``multi_head_attention_forward``: the legacy exporter fails on it ("transpose for tensor
of unknown rank", torch 2.14.1) although the module runs. export.prepare then exports the
graph converted to FX with the dynamo exporter (stages/export/script_program.py) and says
so in ``info.torchscript_route`` and in each export attempt's ``route``. A tiny ViT stand-in
(image 32, patch 8, one layer, two heads, width 16) with random weights (torchvision zeroes
the head, which would make every output 0) is the upload.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest

from tests.support.stage_runner import StageRun, make_torch_models, prepare_spec, run_stage

TOLERANCE = 1e-4
BOTH = ["onnx-tf", "onnx2tf"]
INPUTS = [{"name": "image", "shape": ["batch", 3, 32, 32], "dtype": "float32"}]

VIT_FILES = """
import json, sys, warnings
from pathlib import Path
import numpy as np
import torch, torchvision

warnings.filterwarnings("ignore")
out = Path(sys.argv[1]); out.mkdir(parents=True, exist_ok=True)
torch.manual_seed(11)
model = torchvision.models.VisionTransformer(
    image_size=32, patch_size=8, num_layers=1, num_heads=2, hidden_dim=16, mlp_dim=32, num_classes=10
).eval()
with torch.no_grad():
    for parameter in model.parameters():
        parameter.copy_(torch.randn_like(parameter) * 0.3)
torch.jit.trace(model, torch.randn(1, 3, 32, 32), check_trace=False).save(str(out / "vit.pt"))
batch3 = np.random.default_rng(5).standard_normal((3, 3, 32, 32)).astype(np.float32)
np.save(out / "batch3.npy", batch3)
with torch.no_grad():
    np.save(out / "expected3.npy", model(torch.from_numpy(batch3)).numpy())
files = {"vit": "vit.pt", "batch3": "batch3.npy", "expected3": "expected3.npy"}
print(json.dumps({name: str(out / file) for name, file in files.items()}))
"""

# The exported file at batch 3 in onnxruntime (the samples are batch 1): the batch stays dynamic.
RUN_BATCH3 = """
import json, sys
from pathlib import Path
import numpy as np
import onnxruntime as ort

out = Path(sys.argv[1]); onnx_file, batch3 = sys.argv[2], sys.argv[3]
session = ort.InferenceSession(onnx_file, providers=["CPUExecutionProvider"])
np.save(out / "got3.npy", session.run(None, {"image": np.load(batch3)})[0])
print(json.dumps({"got3": str(out / "got3.npy")}))
"""


@pytest.fixture(scope="module")
def vit(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    return make_torch_models(VIT_FILES, tmp_path_factory.mktemp("vit"))


@pytest.fixture(scope="module")
def prepared(vit: dict[str, Path], tmp_path_factory: pytest.TempPathFactory) -> StageRun:
    spec = prepare_spec("torchscript", inputs=INPUTS, onnx_consumers=BOTH, tolerance={"float32": TOLERANCE})
    return run_stage("torch", "export.prepare", tmp_path_factory.mktemp("prepare"), {"model": vit["vit"]}, spec)


def test_traced_vit_exports_through_the_converted_graph(prepared: StageRun) -> None:
    assert prepared.ok, prepared.result
    info: dict[str, Any] = prepared.result["info"]
    route = info["torchscript_route"]
    assert route["used"] == "converted_graph"
    assert route["tried"] == ["loaded_graph", "converted_graph"]
    assert "unknown rank" in route["loaded_graph_error"]
    first, *rest = info["export_attempts"]
    assert (first["exporter"], first["ok"], first["route"]) == ("torchscript", False, "loaded_graph")
    assert [attempt["route"] for attempt in rest] == ["converted_graph"] * len(rest)
    assert rest
    # The dynamo exporter writes opset 18; its LayerNormalization is decomposed for onnx-tf's 15.
    assert (info["exporter"], info["opset"], info["onnx_tf_compatible"]) == ("dynamo", 15, True)
    assert info["opset_conversion"]["decomposed"] == ["LayerNormalization"]
    assert [(a["exporter"], a["ok"]) for a in rest] == [("dynamo", True), ("version_converter", True)]
    assert info["output_shapes"] == {"output": ["batch", 10]}
    assert info["onnx_input_shapes"] == {"image": ["batch", 3, 32, 32]}


def test_converted_vit_matches_the_reference(prepared: StageRun) -> None:
    assert prepared.ok, prepared.result
    metrics = prepared.result["metrics"]["onnx"]
    assert metrics["verdict"] == "pass", metrics["reasons"]
    assert metrics["samples"] == 4
    numbers = metrics["outputs"]["output"]
    assert numbers["scale"] > 0.1  # real logits, not the zero head torchvision initialises
    assert numbers["max_abs"] <= TOLERANCE * numbers["scale"]


def test_converted_vit_keeps_the_batch_dynamic(prepared: StageRun, vit: dict[str, Path], tmp_path: Path) -> None:
    assert prepared.ok, prepared.result
    onnx_file, batch3 = str(prepared.output("onnx")), str(vit["batch3"])
    got = np.load(make_torch_models(RUN_BATCH3, tmp_path, onnx_file, batch3)["got3"])
    expected = np.load(vit["expected3"])
    assert got.shape == expected.shape == (3, 10)
    assert np.abs(got - expected).max() <= TOLERANCE * np.abs(expected).max()
