"""Tiny models and reference runs for the tests, executed by the torch environment's Python.

    torch_models.py state_dict BUILDER OUT [--kwargs JSON] [--wrap checkpoint|dataparallel]
    torch_models.py reference BUILDER STATE_DICT INPUTS.npy OUT.npz [--kwargs JSON]
    torch_models.py run_torchscript MODEL.pt INPUTS.npy OUT.npz
    torch_models.py run_onnx MODEL.onnx INPUTS.npy OUT.npz
    torch_models.py run_tflite MODEL.tflite INPUTS.npy OUT.npz
    torch_models.py pickle_bomb OUT MARKER      # a pickle whose loading would create MARKER

Prints one JSON line. Builders are torchvision names, e.g. squeezenet1_1, mobilenet_v2.
"""

from __future__ import annotations

import argparse
import json
import os

import numpy as np


def build(name: str, kwargs: dict):  # type: ignore[no-untyped-def]
    import torch
    import torchvision

    torch.manual_seed(0)
    model = getattr(torchvision.models, name)(weights=None, **kwargs)
    return model.eval()


def cmd_state_dict(args: argparse.Namespace) -> dict:
    import torch

    model = build(args.builder, json.loads(args.kwargs))
    state = model.state_dict()
    if args.wrap == "checkpoint":
        state = {"epoch": 3, "state_dict": state}
    elif args.wrap == "dataparallel":
        state = {f"module.{k}": v for k, v in state.items()}
    torch.save(state, args.out)
    return {"path": args.out, "size": os.path.getsize(args.out)}


def cmd_torchscript(args: argparse.Namespace) -> dict:
    import torch

    model = build(args.builder, json.loads(args.kwargs))
    example = torch.rand(*json.loads(args.shape))
    torch.jit.save(torch.jit.trace(model, example), args.out)
    return {"path": args.out}


def cmd_onnx(args: argparse.Namespace) -> dict:
    import torch

    model = build(args.builder, json.loads(args.kwargs))
    example = torch.rand(*json.loads(args.shape))
    torch.onnx.export(
        model, (example,), args.out, input_names=["pixels"], output_names=["scores"], opset_version=17, dynamo=False
    )
    return {"path": args.out}


def cmd_reference(args: argparse.Namespace) -> dict:
    import torch

    model = build(args.builder, json.loads(args.kwargs))
    model.load_state_dict(torch.load(args.state_dict, weights_only=True))
    samples = np.load(args.inputs)
    with torch.no_grad():
        outputs = np.stack([model(torch.from_numpy(s)).numpy() for s in samples])
    np.savez(args.out, output=outputs)
    return {"shape": list(outputs.shape)}


def cmd_run_torchscript(args: argparse.Namespace) -> dict:
    import torch

    model = torch.jit.load(args.model, map_location="cpu").eval()
    samples = np.load(args.inputs)
    with torch.no_grad():
        outputs = np.stack([model(torch.from_numpy(s)).numpy() for s in samples])
    np.savez(args.out, output=outputs)
    return {"shape": list(outputs.shape)}


def cmd_run_onnx(args: argparse.Namespace) -> dict:
    import onnxruntime as ort

    session = ort.InferenceSession(args.model, providers=["CPUExecutionProvider"])
    name = session.get_inputs()[0].name
    samples = np.load(args.inputs)
    outputs = np.stack([session.run(None, {name: s})[0] for s in samples])
    np.savez(args.out, output=outputs)
    return {"shape": list(outputs.shape), "input": name}


def cmd_run_tflite(args: argparse.Namespace) -> dict:
    from ai_edge_litert.interpreter import Interpreter

    interpreter = Interpreter(model_path=args.model)
    interpreter.allocate_tensors()
    inp = interpreter.get_input_details()[0]
    out = interpreter.get_output_details()[0]
    results = []
    for sample in np.load(args.inputs):
        interpreter.set_tensor(inp["index"], sample.astype(inp["dtype"]))
        interpreter.invoke()
        results.append(interpreter.get_tensor(out["index"]).copy())
    outputs = np.stack(results)
    np.savez(args.out, output=outputs)
    return {"shape": list(outputs.shape), "input_shape": [int(d) for d in inp["shape"]]}


class _Bomb:
    def __init__(self, marker: str) -> None:
        self.marker = marker

    def __reduce__(self):  # type: ignore[no-untyped-def]
        return (open, (self.marker, "w"))


def cmd_pickle_bomb(args: argparse.Namespace) -> dict:
    import torch

    torch.save({"weight": torch.zeros(2), "payload": _Bomb(args.marker)}, args.out)
    return {"path": args.out}


def main() -> None:
    parser = argparse.ArgumentParser()
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("state_dict")
    p.add_argument("builder")
    p.add_argument("out")
    p.add_argument("--kwargs", default="{}")
    p.add_argument("--wrap", choices=["checkpoint", "dataparallel"])
    for name in ("torchscript", "onnx"):
        p = sub.add_parser(name)
        p.add_argument("builder")
        p.add_argument("out")
        p.add_argument("--kwargs", default="{}")
        p.add_argument("--shape", default="[1, 3, 32, 32]")
    p = sub.add_parser("reference")
    p.add_argument("builder")
    p.add_argument("state_dict")
    p.add_argument("inputs")
    p.add_argument("out")
    p.add_argument("--kwargs", default="{}")
    for name in ("run_torchscript", "run_onnx", "run_tflite"):
        p = sub.add_parser(name)
        p.add_argument("model")
        p.add_argument("inputs")
        p.add_argument("out")
    p = sub.add_parser("pickle_bomb")
    p.add_argument("out")
    p.add_argument("marker")
    args = parser.parse_args()
    print(json.dumps(globals()[f"cmd_{args.command}"](args)))


if __name__ == "__main__":
    main()
