"""The tiny models of the tests: one table, ``TINY_MODELS[(format, family)]``, of what each
upload is (its architecture and its inputs, as job-spec pieces), and the scripts that
write the files in the torch environment.

The family configs (ViT, BERT, GPT-2) come from ``testkit.families``, which the scripts
that write the files (``make_models.py``, ``CHAIN_MODELS``, tests/stages/test_families.py's)
import too: one place for each config. A test takes its row and changes what it tests
(e.g. an input name that is not an identifier) with ``spec_of(key, **changes)``.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field
from typing import Any

from testkit.families import BERT_TINY, GPT2_TINY, MASK, TOKENS, VIT_ONE_LAYER, VIT_TINY
from tests.support.stage_runner import prepare_spec

__all__ = ["BERT_TINY", "GPT2_TINY", "MASK", "TOKENS", "VIT_ONE_LAYER", "VIT_TINY"]


def image(size: int, name: str = "image", batch: str | int = "batch") -> list[dict[str, Any]]:
    """One NCHW float32 image input of ``size`` x ``size``."""
    return [{"name": name, "shape": [batch, 3, size, size], "dtype": "float32"}]


@dataclass(frozen=True)
class TinyModel:
    """An upload as the spec describes it: ``architecture`` (None when the file carries the
    module) and ``inputs`` (None when the file carries the signature)."""

    architecture: dict[str, Any] | None
    inputs: list[dict[str, Any]] | None = field(default=None)


MLP = {"name": "torchvision.ops.MLP", "kwargs": {"in_channels": 16, "hidden_channels": [32, 10]}}
MOBILENET_V2 = {"name": "torchvision.models.mobilenet_v2", "kwargs": {"num_classes": 10}}
ENCODER = {
    "name": "torch.nn.TransformerEncoderLayer",
    "kwargs": {
        "d_model": 32,
        "nhead": 2,
        "dim_feedforward": 64,
        "dropout": 0.0,
        "activation": "gelu",
        "batch_first": True,
    },
}
FEATURES = [{"name": "features", "shape": [1, 16], "dtype": "float32"}]


def conv(in_channels: int) -> dict[str, Any]:
    kwargs = {"in_channels": in_channels, "out_channels": 4, "kernel_size": 3, "padding": 1}
    return {"name": "torch.nn.Conv2d", "kwargs": kwargs}


TINY_MODELS: dict[tuple[str, str], TinyModel] = {
    # The families of tests/stages/test_families.py (every converter on each).
    ("state_dict", "segmenter"): TinyModel(
        {
            "name": "torchvision.models.segmentation.lraspp_mobilenet_v3_large",
            "kwargs": {"num_classes": 3, "weights_backbone": None},
        },
        image(64),
    ),
    ("state_dict", "cnn"): TinyModel(MOBILENET_V2, image(32)),
    ("state_dict", "vit"): TinyModel({"name": "torchvision.models.VisionTransformer", "kwargs": VIT_TINY}, image(32)),
    ("state_dict", "bert"): TinyModel({"name": "transformers.BertModel", "config": BERT_TINY}, [TOKENS, MASK]),
    ("state_dict", "gpt2"): TinyModel(
        {"name": "transformers.GPT2LMHeadModel", "config": {**GPT2_TINY, "use_cache": False}}, [TOKENS]
    ),
    ("state_dict", "mlp"): TinyModel(MLP, FEATURES),
    # The chains of test_litert_torch.py and test_onnx2tf.py (CHAIN_MODELS writes them).
    ("state_dict", "mobilenet_v2"): TinyModel(MOBILENET_V2, image(32, name="input")),
    ("state_dict", "encoder"): TinyModel(ENCODER, [{"name": "tokens", "shape": [1, 8, 32], "dtype": "float32"}]),
    # onnx2tf leaves a 4-D output channel-last: once with a shape that tells, once not.
    ("state_dict", "conv"): TinyModel(conv(3), image(8, batch=1)),
    ("state_dict", "conv_square"): TinyModel(conv(4), [{"name": "image", "shape": [1, 4, 4, 4], "dtype": "float32"}]),
    # The uploads of tests/stages/test_conversions.py: a small CNN (batch norm, depthwise
    # convolutions) in every format but the state dict; TorchScript and pickled modules carry
    # no signature, so the spec gives it.
    ("torchscript", "cnn"): TinyModel(None, image(32)),
    ("onnx", "cnn"): TinyModel(None),
    ("exported_program", "cnn"): TinyModel(None),
    ("pickled_module", "cnn"): TinyModel(None, image(32)),
    # The segmentation stand-in of the int8 tests (make_models.py's tiny LR-ASPP), an
    # ExportedProgram at 1x3x64x64 (tests/support/int8_families.py).
    ("exported_program", "lraspp"): TinyModel(None, image(64, batch=1)),
}


def spec_of(key: tuple[str, str], **changes: Any) -> dict[str, Any]:
    """The normalized spec of a ``TINY_MODELS`` row as export.prepare receives it (NCHW);
    ``changes`` override fields."""
    model = TINY_MODELS[key]
    spec = prepare_spec(key[0], layout="nchw")
    if model.architecture is not None:
        spec["architecture"] = copy.deepcopy(model.architecture)  # a test may change its copy
    if model.inputs is not None:
        spec["inputs"] = copy.deepcopy(model.inputs)
    spec.update(changes)
    return spec


# The chain models (test_litert_torch.py, test_onnx2tf.py, test_quantize.py): state dicts of
# the ("state_dict", name) rows above, the MLP as an ExportedProgram, and an ONNX graph with an
# operator TFLite has no builtin for. Seeds are fixed: the files are the same on every run.
CHAIN_MODELS = r"""
import json, sys
from pathlib import Path

import onnx
import torch
import torchvision
from onnx import TensorProto, helper

from tests.support.torch_init import randomize_batch_norm  # PYTHONPATH: the repository

out = Path(sys.argv[1])
out.mkdir(parents=True, exist_ok=True)
files = {}

torch.manual_seed(0)
mobilenet = randomize_batch_norm(torchvision.models.mobilenet_v2(num_classes=10))
torch.nn.init.normal_(mobilenet.classifier[1].weight, std=0.5)
mlp = torchvision.ops.MLP(16, [32, 10]).eval()
models = {
    "mobilenet_v2": mobilenet,
    "mlp": mlp,
    "encoder": torch.nn.TransformerEncoderLayer(32, 2, 64, dropout=0.0, activation="gelu", batch_first=True),
    "conv": torch.nn.Conv2d(3, 4, 3, padding=1),
    "conv_square": torch.nn.Conv2d(4, 4, 3, padding=1),
}
for name, model in models.items():
    torch.save(model.state_dict(), out / f"{name}.pt")
    files[name] = str(out / f"{name}.pt")
torch.export.save(torch.export.export(mlp, (torch.zeros(1, 16),)), out / "mlp.pt2")
files["mlp_exported_program"] = str(out / "mlp.pt2")

node = helper.make_node("Unique", ["features"], ["values"], sorted=1)
graph = helper.make_graph(
    [node],
    "unique",
    [helper.make_tensor_value_info("features", TensorProto.FLOAT, [1, 16])],
    [helper.make_tensor_value_info("values", TensorProto.FLOAT, None)],
)
onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)]), out / "unique.onnx")
files["unique"] = str(out / "unique.onnx")
print(json.dumps(files))
"""
