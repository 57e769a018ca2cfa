"""Tiny models for the stage tests, written by the torch environment's Python.

    python make_models.py OUT_DIR MARKER_PATH

Prints one JSON line naming the files. Seeds are fixed, so the files are the same
on every run. Run by tests/support/stages.py (make_stage_models) with the repository on
PYTHONPATH (for testkit.families), never imported by the test process.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Any

from testkit.families import BERT_TINY, GPT2_TINY, VIT_ONE_LAYER  # PYTHONPATH: the repository


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


def _cnn() -> object:
    """Batch norm and depthwise convolutions, as in mobile image models."""
    import torch
    from torch import nn

    def block(cin: int, cout: int, stride: int, depthwise: bool = False) -> list[nn.Module]:
        if depthwise:
            conv = nn.Conv2d(cin, cin, 3, stride, 1, groups=cin, bias=False)
        else:
            kernel = 3 if cin == 3 else 1
            conv = nn.Conv2d(cin, cout, kernel, stride, kernel // 2, bias=False)
        return [conv, nn.BatchNorm2d(cout), nn.ReLU6()]

    torch.manual_seed(2)
    model = nn.Sequential(
        *block(3, 8, 2),
        *block(8, 8, 1, depthwise=True),
        *block(8, 16, 1),
        *block(16, 16, 2, depthwise=True),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Linear(16, 10),
    )
    return randomize_batch_norm(model).eval()


def randomize_batch_norm(model: Any) -> Any:
    """Non-trivial running statistics, so folding batch norm is really tested."""
    import torch
    from torch import nn

    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, nn.BatchNorm2d):
                module.running_mean.uniform_(-0.5, 0.5)
                module.running_var.uniform_(0.5, 1.5)
                module.weight.uniform_(0.5, 1.5)
                module.bias.uniform_(-0.2, 0.2)
    return model


def _segmenter() -> object:
    """A dense [1, C, H, W] prediction and an auxiliary one, returned as a dict."""
    import torch
    from torch import nn
    from torch.nn import functional as F  # noqa: N812

    class TinySegmenter(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.stem = nn.Sequential(nn.Conv2d(3, 8, 3, 2, 1), nn.BatchNorm2d(8), nn.ReLU())
            self.body = nn.Sequential(nn.Conv2d(8, 16, 3, 2, 1), nn.ReLU())
            self.head = nn.Conv2d(16, 3, 1)
            self.aux = nn.Conv2d(8, 3, 1)

        def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
            low = self.stem(x)
            size = (x.shape[-2], x.shape[-1])
            out = F.interpolate(self.head(self.body(low)), size=size, mode="bilinear", align_corners=False)
            aux = F.interpolate(self.aux(low), size=size, mode="bilinear", align_corners=False)
            return {"out": out, "aux": aux}

    torch.manual_seed(3)
    return TinySegmenter().eval()


def _lraspp_segmenter() -> object:
    """A tiny LR-ASPP (torchvision's lraspp_mobilenet_v3 head) for int8 tests.

    What int8 meets in that family: hardswish, a sigmoid gate from globally pooled
    features multiplied into the high-level branch, a low-level skip added after
    upsampling, and dense per-pixel logits bilinearly upsampled to the input size.
    """
    import torch
    from torch import nn
    from torch.nn import functional as F  # noqa: N812

    def conv(cin: int, cout: int, stride: int) -> nn.Sequential:
        return nn.Sequential(nn.Conv2d(cin, cout, 3, stride, 1, bias=False), nn.BatchNorm2d(cout), nn.Hardswish())

    class TinyLRASPP(nn.Module):
        def __init__(self, classes: int = 4) -> None:
            super().__init__()
            self.low = nn.Sequential(conv(3, 8, 2), conv(8, 8, 1))  # 1/2
            self.high = nn.Sequential(conv(8, 16, 2), conv(16, 24, 2))  # 1/8
            self.cbr = nn.Sequential(nn.Conv2d(24, 16, 1, bias=False), nn.BatchNorm2d(16), nn.ReLU())
            self.scale = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Conv2d(24, 16, 1, bias=False), nn.Sigmoid())
            self.low_classifier = nn.Conv2d(8, classes, 1)
            self.high_classifier = nn.Conv2d(16, classes, 1)

        def forward(self, image: torch.Tensor) -> dict[str, torch.Tensor]:
            low = self.low(image)
            high = self.high(low)
            gated = self.cbr(high) * self.scale(high)
            gated = F.interpolate(gated, size=low.shape[-2:], mode="bilinear", align_corners=False)
            logits = self.low_classifier(low) + self.high_classifier(gated)
            return {"out": F.interpolate(logits, size=image.shape[-2:], mode="bilinear", align_corners=False)}

    torch.manual_seed(8)
    model = TinyLRASPP()
    randomize_batch_norm(model)  # folded batch norm then shifts the ranges
    with torch.no_grad():
        # Default init gives logits that hardly vary per pixel around a per-class offset:
        # one class everywhere, and a cosine near 1 whatever quantization does. Like a
        # trained head, this one varies per pixel, and its classes are balanced on
        # standard-normal images (the synthetic samples' distribution).
        for classifier in (model.low_classifier, model.high_classifier):
            classifier.weight.normal_(0.0, 0.5)
        model.eval()
        model.high_classifier.bias -= model(torch.randn(8, 3, 64, 64))["out"].mean(dim=(0, 2, 3))
    return model


def quantization_files(out: Path) -> dict[str, str]:
    """The segmentation stand-in for the int8 tests, as an ExportedProgram at 1x3x64x64."""
    import torch

    out.mkdir(parents=True, exist_ok=True)
    path = out / "lraspp.pt2"
    torch.export.save(torch.export.export(_lraspp_segmenter(), (torch.randn(1, 3, 64, 64),)), str(path))
    return {"lraspp_program": str(path)}


ONNX_TOKENS_VOCAB = 37  # below the samples' default id range: only the Gather table gives it


def format_files(out: Path) -> dict[str, str]:
    """TorchScript, ExportedProgram and ONNX uploads, and transformers state dicts."""
    import warnings

    import onnx
    import torch
    import transformers

    warnings.filterwarnings("ignore")
    files: dict[str, str] = {}

    def keep(name: str, path: Path) -> None:
        files[name] = str(path)

    cnn = _cnn()
    image = torch.randn(2, 3, 32, 32)
    torch.jit.save(torch.jit.trace(cnn, image[:1]), str(out / "cnn.torchscript.pt"))
    keep("cnn_torchscript", out / "cnn.torchscript.pt")
    batch = torch.export.Dim("batch", max=64)
    torch.export.save(torch.export.export(cnn, (image,), dynamic_shapes=({0: batch},)), str(out / "cnn.pt2"))
    keep("cnn_program", out / "cnn.pt2")
    torch.onnx.export(
        cnn,
        (image[:1],),
        str(out / "cnn_opset18.onnx"),
        dynamo=False,
        opset_version=18,
        input_names=["image"],
        output_names=["logits"],
        dynamic_axes={"image": {0: "batch"}},
    )
    keep("cnn_onnx18", out / "cnn_opset18.onnx")
    # Identity nodes (inside the graph and naming the output), which onnx.version_converter
    # cannot take below opset 16: the stage removes them before converting for onnx-tf.
    with_identities = onnx.load(str(out / "cnn_opset18.onnx"))
    graph = with_identities.graph
    first = graph.node[0]
    first_out = first.output[0]
    first.output[0] = f"{first_out}_before_identity"
    graph.node.insert(1, onnx.helper.make_node("Identity", [first.output[0]], [first_out], name="inner_identity"))
    last = next(n for n in graph.node if "logits" in n.output)
    last.output[list(last.output).index("logits")] = "logits_before_identity"
    graph.node.append(onnx.helper.make_node("Identity", ["logits_before_identity"], ["logits"], name="output_identity"))
    onnx.save(with_identities, str(out / "cnn_identities.onnx"))
    keep("cnn_onnx_identities", out / "cnn_identities.onnx")
    external = onnx.load(str(out / "cnn_opset18.onnx"))
    onnx.save(
        external,
        str(out / "cnn_external.onnx"),
        save_as_external_data=True,
        location="cnn_external.data",
        size_threshold=0,
    )
    keep("cnn_onnx_external", out / "cnn_external.onnx")

    torch.manual_seed(4)
    mlp = torch.nn.Sequential(
        torch.nn.Linear(16, 32), torch.nn.GELU(), torch.nn.Linear(32, 8), torch.nn.Tanh(), torch.nn.Linear(8, 4)
    ).eval()
    torch.jit.save(torch.jit.script(mlp), str(out / "mlp.torchscript.pt"))
    keep("mlp_torchscript", out / "mlp.torchscript.pt")

    segmenter = _segmenter()
    picture = torch.randn(1, 3, 64, 64)
    torch.jit.save(torch.jit.script(segmenter), str(out / "segmenter.torchscript.pt"))
    keep("segmenter_torchscript", out / "segmenter.torchscript.pt")
    torch.export.save(torch.export.export(segmenter, (picture,)), str(out / "segmenter.pt2"))
    keep("segmenter_program", out / "segmenter.pt2")

    torch.manual_seed(5)
    bert = transformers.BertModel(transformers.BertConfig(**BERT_TINY)).eval()
    torch.save(bert.state_dict(), out / "bert.pt")
    keep("bert", out / "bert.pt")
    tokens = torch.randint(0, 100, (2, 8))
    seq = torch.export.Dim("seq", max=64)
    program = torch.export.export(bert, (tokens,), dynamic_shapes=({0: torch.export.Dim("batch"), 1: seq},))
    torch.export.save(program, str(out / "bert.pt2"))
    keep("bert_program", out / "bert.pt2")

    torch.manual_seed(6)
    gpt2 = transformers.GPT2LMHeadModel(
        transformers.GPT2Config(**GPT2_TINY, use_cache=False, bos_token_id=0, eos_token_id=0)
    ).eval()
    torch.save(gpt2.state_dict(), out / "gpt2.pt")
    keep("gpt2", out / "gpt2.pt")

    # A token model as an ONNX upload: LayerNormalization (opset 17) cannot go down to 15,
    # and one output name that is not an identifier.
    torch.manual_seed(7)
    small = transformers.BertModel(transformers.BertConfig(**{**BERT_TINY, "vocab_size": ONNX_TOKENS_VOCAB}))

    class Encoder(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.bert = small.eval()

        def forward(self, ids: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
            result = self.bert(ids)
            return result.last_hidden_state, result.pooler_output

    torch.onnx.export(
        Encoder().eval(),
        (torch.randint(0, ONNX_TOKENS_VOCAB, (1, 8)),),
        str(out / "tokens_opset17.onnx"),
        dynamo=False,
        opset_version=17,
        input_names=["input_ids"],
        output_names=["hidden:0", "pooled"],
        dynamic_axes={"input_ids": {0: "batch", 1: "sequence"}},
    )
    keep("tokens_onnx17", out / "tokens_opset17.onnx")
    (out / "garbage.onnx").write_bytes(b"\x08\x07\x12\x04junk" + os.urandom(2048))
    keep("onnx_garbage", out / "garbage.onnx")
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
    vit = torchvision.models.VisionTransformer(**VIT_ONE_LAYER)
    # torchvision zero-initializes the head, which would make every logit 0.
    torch.nn.init.normal_(vit.heads.head.weight, std=0.5)
    torch.save(vit.state_dict(), out / "vit.pt")
    files["vit"] = str(out / "vit.pt")

    files.update(onnx_files(out))
    files.update(format_files(out))
    torch.save({"conv.weight": WritesMarker(marker)}, out / "malicious.pt")
    files["malicious"] = str(out / "malicious.pt")
    (out / "garbage.bin").write_bytes(os.urandom(4096))
    files["garbage"] = str(out / "garbage.bin")
    return files


if __name__ == "__main__":
    print(json.dumps(main(Path(sys.argv[1]), sys.argv[2])))
