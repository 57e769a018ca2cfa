"""The service against the converters run by hand, per model, side by side in one run (not a test).

    .venv/bin/python -m bench.e2e [--models cnn,vit,text] [--skip-warmup]

For a CNN (torchvision mobilenet_v2, 1x3x224x224), a small ViT (torchvision
VisionTransformer, 4 layers, 64x64) and a small BERT-like text encoder (transformers
BertModel, 4 layers, 32 tokens), all with seeded random weights built here (no download):

- **tflite**: a job with ``targets: [tflite]`` (float32 only) through the API, submit to
  ``succeeded`` (every artifact validated), against the fastest hand run in fresh processes:
  (a) ``torch.onnx.export`` with its defaults + the ``onnx2tf`` CLI, or (b) litert-torch's
  ``litert_torch.convert(model, args).export(path)``.
- **default**: a job with the default targets (ONNX + SavedModel + .tflite) against the
  hand run of the same three, one after the other: ``torch.onnx.export`` at opset 15 (the
  highest onnx-tf reads), onnx-tf's ``prepare(model).export_graph`` (SavedModel), the
  ``onnx2tf`` CLI on the same ONNX file (.tflite; onnx2tf 2.6.9 writes no SavedModel
  without TensorFlow). Where onnx-tf 1.10 as published cannot read the file (opset-13
  Unsqueeze, from attention), the route is timed again with the service's own handler
  patch (``stages/convert/onnx_tf_patches.py``), and labelled so. And a route of one
  onnx2tf run with ``-fdosm`` (its SavedModel exporter, with the TensorFlow of its env)
  beside the .tflite, on the default export: what the service itself now runs first.

Every hand step loads the state dict into a freshly built model, as a user's script does;
its time is the wall time of its process. A first job (not counted) starts the workers'
warm parents; its time is printed. Prints ratio = service / hand (< 1: the service is
faster), the sum of the service stages' start-up seconds, core count and load.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any

from bench._stack import Stack, machine, running_stack, toolchain_run
from testkit.toolchains import toolchain_python

IMAGE_224 = [{"name": "input", "shape": [1, 3, 224, 224], "dtype": "float32"}]
MODELS: dict[str, dict[str, Any]] = {
    "cnn": {
        "architecture": {"name": "torchvision.models.mobilenet_v2", "kwargs": {}},
        "inputs": IMAGE_224,
    },
    "vit": {
        "architecture": {
            "name": "torchvision.models.VisionTransformer",
            "kwargs": {
                "image_size": 64,
                "patch_size": 8,
                "num_layers": 4,
                "num_heads": 4,
                "hidden_dim": 128,
                "mlp_dim": 256,
                "num_classes": 10,
            },
        },
        "inputs": [{"name": "input", "shape": [1, 3, 64, 64], "dtype": "float32"}],
    },
    "text": {
        "architecture": {
            "name": "transformers.BertModel",
            "config": {
                "hidden_size": 128,
                "num_hidden_layers": 4,
                "num_attention_heads": 4,
                "intermediate_size": 256,
                "vocab_size": 1000,
                "max_position_embeddings": 64,
            },
        },
        "inputs": [
            {"name": "input_ids", "shape": [1, 32], "dtype": "int64", "range": [0, 1000]},
            {"name": "attention_mask", "shape": [1, 32], "dtype": "int64", "range": [1, 2]},
        ],
    },
}

# Runs in the torch env: the model from its spec piece, and example inputs from the spec's.
MAKE = """
import importlib, json, sys, torch
def make(arch):
    module, _, attr = arch["name"].rpartition(".")
    cls = getattr(importlib.import_module(module), attr)
    if "config" in arch:
        return cls(cls.config_class(**arch["config"])).eval()
    return cls(**arch.get("kwargs", {})).eval()
def example(inputs):
    torch.manual_seed(1)
    return tuple(
        torch.randint(*item["range"], item["shape"]) if item["dtype"] == "int64" else torch.rand(*item["shape"])
        for item in inputs
    )
def loaded(arch, state):
    model = make(arch)
    model.load_state_dict(torch.load(state))
    return model
"""
BUILD = (
    MAKE
    + """
torch.manual_seed(0)
model = make(json.loads(sys.argv[1]))
with torch.no_grad():  # a zero-initialised layer (ViT's head) would make every output 0
    for p in model.parameters():
        if p.dim() > 1 and not p.any():
            torch.nn.init.normal_(p, std=0.02)
torch.save(model.state_dict(), sys.argv[2])
"""
)
EXPORT = (
    MAKE
    + """
arch, inputs, state, out, opset = json.loads(sys.argv[1]), json.loads(sys.argv[2]), *sys.argv[3:6]
names = [item["name"] for item in inputs]
class ByName(torch.nn.Module):  # a transformers model takes its inputs by name and returns a ModelOutput
    def __init__(self, model):
        super().__init__()
        self.model = model
    def forward(self, *args):
        out = self.model(**dict(zip(names, args)))
        return out.to_tuple() if hasattr(out, "to_tuple") else out
model = loaded(arch, state)
model = ByName(model) if "config" in arch else model
legacy = {} if opset == "default" else {"opset_version": int(opset), "dynamo": False}
torch.onnx.export(model, example(inputs), out, input_names=names, **legacy)
"""
)
LITERT = (
    MAKE
    + """
import litert_torch
arch, inputs, state, out = json.loads(sys.argv[1]), json.loads(sys.argv[2]), sys.argv[3], sys.argv[4]
litert_torch.convert(loaded(arch, state), example(inputs)).export(out)
"""
)
ONNX_TF = """
import sys, onnx
from onnx_tf.backend import prepare
if sys.argv[3] == "patched":  # the service's opset-13 Squeeze/Unsqueeze handlers (stages/convert/onnx_tf_patches.py)
    from stages.convert import onnx_tf_patches
    onnx_tf_patches.install()
prepare(onnx.load(sys.argv[1])).export_graph(sys.argv[2])
"""


DEFAULT_ROUTE = "export+onnx-tf+onnx2tf"
# Only where onnx-tf as published fails: with the service's own handler patch, not what a user has.
PATCHED_ROUTE = "export+onnx-tf(service's patch)+onnx2tf"
FDOSM_ROUTE = "export+onnx2tf -fdosm"


def timed(step: Any, *args: Any) -> float | str:
    """The wall seconds of ``step(*args)``, or why it failed (its last output line)."""
    started = time.monotonic()
    try:
        step(*args)
    except subprocess.CalledProcessError as exc:
        lines = [line for line in (exc.stderr or exc.stdout or "").splitlines() if line.strip()]
        return f"failed: {lines[-1][:160] if lines else exc.returncode}"
    return time.monotonic() - started


def onnx2tf_cli(onnx: Path, out: Path, *flags: str) -> None:
    """``onnx2tf -i model.onnx -o out [flags]``, the CLI as installed (its env's bin first on
    PATH for onnxsim); with ``-fdosm`` it must write a SavedModel too."""
    bin_dir = toolchain_python("onnx2tf").parent
    env = {**os.environ, "PATH": f"{bin_dir}{os.pathsep}{os.environ.get('PATH', '')}", "CUDA_VISIBLE_DEVICES": ""}
    subprocess.run(
        [str(bin_dir / "onnx2tf"), "-i", str(onnx), "-o", str(out), *flags],
        check=True,
        capture_output=True,
        text=True,
        env=env,
        cwd=onnx.parent,
    )
    if not list(out.glob("*float32.tflite")):
        raise subprocess.CalledProcessError(1, "onnx2tf", "", "no *_float32.tflite written")
    if "-fdosm" in flags and not list(out.rglob("saved_model.pb")):
        raise subprocess.CalledProcessError(1, "onnx2tf", "", "no saved_model.pb written")


def hand_runs(name: str, model: dict[str, Any], state: Path, work: Path) -> dict[str, float | str]:
    """Seconds of each hand route (or why it failed); work files under ``work``."""
    arch, inputs = json.dumps(model["architecture"]), json.dumps(model["inputs"])
    work.mkdir(parents=True)
    seconds: dict[str, float | str] = {}
    export = timed(toolchain_run, "torch", EXPORT, arch, inputs, str(state), str(work / "a.onnx"), "default")
    convert = timed(onnx2tf_cli, work / "a.onnx", work / "a") if isinstance(export, float) else export
    seconds["export+onnx2tf"] = (
        export + convert
        if isinstance(export, float) and isinstance(convert, float)
        else (export if isinstance(export, str) else convert)
    )
    # The default targets in one onnx2tf run: its SavedModel exporter (-fdosm) beside the .tflite.
    both = timed(onnx2tf_cli, work / "a.onnx", work / "e", "-fdosm") if isinstance(export, float) else export
    seconds[FDOSM_ROUTE] = export + both if isinstance(export, float) and isinstance(both, float) else both
    seconds["litert-torch"] = timed(toolchain_run, "torch", LITERT, arch, inputs, str(state), str(work / "b.tflite"))
    export = timed(toolchain_run, "torch", EXPORT, arch, inputs, str(state), str(work / "d.onnx"), "15")
    for variant in ("plain", "patched"):
        steps: list[float | str] = [export]
        if isinstance(steps[-1], float):
            saved_model = str(work / f"d_saved_model_{variant}")
            steps.append(timed(toolchain_run, "onnx-tf", ONNX_TF, str(work / "d.onnx"), saved_model, variant))
        if isinstance(steps[-1], float):
            steps.append(timed(onnx2tf_cli, work / "d.onnx", work / f"d_{variant}"))
        failed = [step for step in steps if isinstance(step, str)]
        route = DEFAULT_ROUTE if variant == "plain" else PATCHED_ROUTE
        seconds[route] = failed[0] if failed else sum(s for s in steps if isinstance(s, float))
        if not failed:  # onnx-tf as published did it: no patch needed
            break
    return seconds


def service_run(service: Stack, model: dict[str, Any], state: Path, targets: list[str] | None) -> dict[str, Any]:
    """Submit to final: wall seconds, status, and the stages' summed process and start-up seconds."""
    spec = {"architecture": model["architecture"], "inputs": model["inputs"]}
    if targets:
        spec["targets"] = targets
    started = time.monotonic()
    job = service.wait(service.submit(state, spec)["id"])
    seconds = time.monotonic() - started
    ran = [s for s in job["stages"] if s.get("process_seconds") is not None]
    return {
        "seconds": seconds,
        "status": job["status"],
        "error": (job.get("error") or {}).get("message"),
        "startup": sum(s.get("startup_seconds") or 0 for s in ran),
        "stages": ", ".join(f"{s['name']} {s['seconds']:.1f}" for s in job["stages"] if s["state"] == "succeeded"),
    }


def show(label: str, service: dict[str, Any], hand: dict[str, float | str]) -> None:
    done = {route: s for route, s in hand.items() if isinstance(s, float)}
    fastest = min(done, key=lambda route: done[route]) if done else None
    ratio = f"{service['seconds'] / done[fastest]:.2f}" if fastest and service["status"] == "succeeded" else "-"
    routes = "; ".join(f"{route} {s:.1f} s" if isinstance(s, float) else f"{route} {s}" for route, s in hand.items())
    print(
        f"{label:<16} service {service['seconds']:6.1f} s ({service['status']}, stages' start-up "
        f"{service['startup']:.1f} s) | hand: {routes} | fastest {fastest} | service/hand {ratio}"
    )
    if service["status"] != "succeeded":
        print(f"    service error: {service['error']}")
    print(f"    stages: {service['stages']}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default=",".join(MODELS))
    parser.add_argument("--skip-warmup", action="store_true", help="no first job to start the warm parents")
    args = parser.parse_args()
    print(machine())
    with tempfile.TemporaryDirectory(prefix="modelport-bench-e2e-") as tmp:
        root = Path(tmp)
        states = {}
        for name in args.models.split(","):
            states[name] = root / f"{name}.pth"
            toolchain_run("torch", BUILD, json.dumps(MODELS[name]["architecture"]), str(states[name]))
        env = {"MODELPORT_ALLOWED_ARCHITECTURES": json.dumps(["torchvision.models.", "transformers."])}
        with running_stack(root / "service", env=env) as service:
            if not args.skip_warmup:
                first = next(iter(states))
                warm = service_run(service, MODELS[first], states[first], None)
                print(f"first job (starts the warm parents; not counted): {warm['seconds']:.1f} s {warm['status']}")
            for name, state in states.items():
                model = MODELS[name]
                hand = hand_runs(name, model, state, root / f"hand-{name}")
                tflite = service_run(service, model, state, ["tflite"])
                default = service_run(service, model, state, None)
                default_routes = (DEFAULT_ROUTE, PATCHED_ROUTE, FDOSM_ROUTE)
                show(f"{name} tflite", tflite, {k: v for k, v in hand.items() if k not in default_routes})
                show(f"{name} default", default, {k: v for k, v in hand.items() if k in default_routes})
    print(f"load after: {machine()}")


if __name__ == "__main__":
    main()
