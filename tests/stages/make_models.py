"""Tiny models for the stage tests, written by the torch environment's Python.

    python make_models.py OUT_DIR MARKER_PATH

Prints one JSON line naming the files. Seeds are fixed, so the files are the same
on every run. Run by tests/stages/conftest.py, never imported by the test process.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path


class WritesMarker:
    """Pickles to a call that would create the marker file when unpickled."""

    def __init__(self, marker: str) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[object, tuple[str]]:
        return (exec, (f"open({self.marker!r}, 'w').write('pwned')",))


def onnx_files(out: Path) -> dict[str, str]:
    """ONNX files onnx-tf must refuse: a newer opset, and an operator it has no handler for."""
    import onnx
    from onnx import TensorProto, helper

    def graph(op: str, domain: str = "") -> onnx.GraphProto:
        node = helper.make_node(op, ["input"], ["output"], domain=domain)
        value = helper.make_tensor_value_info("input", TensorProto.FLOAT, [1, 4])
        result = helper.make_tensor_value_info("output", TensorProto.FLOAT, [1, 4])
        return helper.make_graph([node], "tiny", [value], [result])

    opsets = {"opset17": [helper.make_opsetid("", 17)]}
    opsets["custom_op"] = [helper.make_opsetid("", 15), helper.make_opsetid("example.custom", 1)]
    files = {}
    for name, imports in opsets.items():
        op, domain = ("Relu", "") if name == "opset17" else ("Frobnicate", "example.custom")
        model = helper.make_model(graph(op, domain), opset_imports=imports, ir_version=8)
        onnx.save(model, str(out / f"{name}.onnx"))
        files[f"onnx_{name}"] = str(out / f"{name}.onnx")
    return files


def main(out: Path, marker: str) -> dict[str, str]:
    import torch
    import torchvision
    from safetensors.torch import save_file

    out.mkdir(parents=True, exist_ok=True)
    files: dict[str, str] = {}

    torch.manual_seed(0)
    squeezenet = torchvision.models.squeezenet1_1(num_classes=10).eval()
    state = squeezenet.state_dict()
    torch.save(state, out / "squeezenet.pt")
    files["squeezenet"] = str(out / "squeezenet.pt")
    # A training checkpoint of a DataParallel model: the wrapper and the prefix.
    wrapped = {
        "epoch": 3,
        "optimizer": {"lr": 0.1},
        "state_dict": {f"module.{k}": v for k, v in state.items()},
    }
    torch.save(wrapped, out / "squeezenet_checkpoint.pt")
    files["squeezenet_checkpoint"] = str(out / "squeezenet_checkpoint.pt")
    save_file({k: v.contiguous() for k, v in state.items()}, str(out / "squeezenet.safetensors"))
    files["squeezenet_safetensors"] = str(out / "squeezenet.safetensors")

    torch.manual_seed(0)
    torch.save(torchvision.models.resnet18(num_classes=10).state_dict(), out / "resnet18.pt")
    files["resnet18"] = str(out / "resnet18.pt")

    # Two named outputs (a dict): {"out": ..., "aux": ...}.
    segmenter = torchvision.models.segmentation.deeplabv3_mobilenet_v3_large(
        weights=None, weights_backbone=None, num_classes=3, aux_loss=True
    )
    torch.save(segmenter.state_dict(), out / "deeplabv3.pt")
    files["deeplabv3"] = str(out / "deeplabv3.pt")

    torch.manual_seed(1)
    vit = torchvision.models.VisionTransformer(
        image_size=32, patch_size=8, num_layers=1, num_heads=2, hidden_dim=32, mlp_dim=64, num_classes=10
    )
    # torchvision zero-initializes the head, which would make every logit 0.
    torch.nn.init.normal_(vit.heads.head.weight, std=0.5)
    torch.save(vit.state_dict(), out / "vit.pt")
    files["vit"] = str(out / "vit.pt")

    files.update(onnx_files(out))
    torch.save({"conv.weight": WritesMarker(marker)}, out / "malicious.pt")
    files["malicious"] = str(out / "malicious.pt")
    (out / "garbage.bin").write_bytes(os.urandom(4096))
    files["garbage"] = str(out / "garbage.bin")
    return files


if __name__ == "__main__":
    print(json.dumps(main(Path(sys.argv[1]), sys.argv[2])))
