"""Each toolchain side by side on a set of small models (not a test).

    .venv/bin/python -m bench.toolchains [--models resnet18,vit_tiny,...]

Starts the embedded stack once (SQLite, private Redis, API, one worker per queue),
submits every model with `toolchain: best` so every candidate converts and is
validated, and prints per model and toolchain: conversion seconds, max_abs/scale
against PyTorch, .tflite size, transposes, LiteRT latency, and PyTorch's own latency
measured in the same run, with the ratio.
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

import httpx

from bench._stack import running_stack
from testkit.families import VIT_TINY
from testkit.toolchains import toolchain_python

MODELS: dict[str, dict[str, Any]] = {
    "resnet18": {"builder": "torchvision.models.resnet18", "kwargs": {}, "shape": [1, 3, 224, 224]},
    "mobilenet_v2": {"builder": "torchvision.models.mobilenet_v2", "kwargs": {}, "shape": [1, 3, 224, 224]},
    "efficientnet_b0": {"builder": "torchvision.models.efficientnet_b0", "kwargs": {}, "shape": [1, 3, 224, 224]},
    "vit_tiny": {"builder": "torchvision.models.VisionTransformer", "kwargs": VIT_TINY, "shape": [1, 3, 32, 32]},
    "lraspp": {
        "builder": "torchvision.models.segmentation.lraspp_mobilenet_v3_large",
        "kwargs": {"num_classes": 3, "weights_backbone": None},
        "shape": [1, 3, 128, 128],
    },
}

BUILD_AND_TIME = """
import importlib, json, statistics, sys, time, torch
name, kwargs, shape, out = sys.argv[1], json.loads(sys.argv[2]), json.loads(sys.argv[3]), sys.argv[4]
module, _, attr = name.rpartition(".")
torch.manual_seed(0)
model = getattr(importlib.import_module(module), attr)(**kwargs).eval()
# Stand-in for trained weights: layers a builder zero-initialises (ViT's head) would make
# every output 0 and every comparison vacuous.
with torch.no_grad():
    for p in model.parameters():
        if p.dim() > 1 and not p.any():
            torch.nn.init.normal_(p, std=0.02)
torch.save(model.state_dict(), out)
x = torch.rand(*shape)
result = {}
for threads in (1, int(sys.argv[5])):
    torch.set_num_threads(threads)
    with torch.no_grad():
        for _ in range(3): model(x)
        runs = []
        for _ in range(20):
            t = time.perf_counter(); model(x); runs.append((time.perf_counter() - t) * 1000)
    result[threads] = statistics.median(runs)
print(json.dumps(result))
"""


def run_model(client: httpx.Client, name: str, model: dict[str, Any], data: Path) -> None:
    threads = os.cpu_count() or 1
    path = data / f"{name}.pth"
    timed = subprocess.run(
        [
            str(toolchain_python("torch")),
            "-c",
            BUILD_AND_TIME,
            model["builder"],
            json.dumps(model["kwargs"]),
            json.dumps(model["shape"]),
            str(path),
            str(threads),
        ],
        check=True,
        capture_output=True,
        text=True,
    )
    torch_ms = {int(k): v for k, v in json.loads(timed.stdout.strip().splitlines()[-1]).items()}
    spec = {
        "architecture": {"name": model["builder"], "kwargs": model["kwargs"]},
        "inputs": [{"name": "input", "shape": model["shape"], "dtype": "float32"}],
        "toolchain": "best",
        "targets": ["tflite"],
    }
    started = time.monotonic()
    job = client.post("/v1/jobs", data={"spec": json.dumps(spec)}, files={"model": (path.name, path.read_bytes())})
    job = job.json()
    while job.get("status") not in ("succeeded", "failed", "cancelled"):
        time.sleep(1)
        job = client.get(f"/v1/jobs/{job['id']}").json()
    total = time.monotonic() - started
    print(
        f"\n{name} {model['shape']}: job {job['status']} in {total:.0f} s; "
        f"PyTorch {torch_ms[1]:.2f} ms (1 thread), {torch_ms[threads]:.2f} ms ({threads} threads)"
    )
    report = client.get(f"/v1/jobs/{job['id']}/report")
    if report.status_code != 200:
        print(f"  no report: {job.get('error')}")
        return
    print(
        f"  {'toolchain':13} {'outcome':10} {'convert s':>9} {'max_abs/scale':>13} {'size MB':>8} "
        f"{'transposes':>10} {'ms 1t':>7} {'ratio':>6} {'ms Nt':>7} {'ratio':>6}"
    )
    for attempt in report.json()["attempts"]:
        latency = attempt.get("latency_ms") or {}
        one, many = latency.get("median_1_thread"), latency.get("median_all_threads")
        error = attempt.get("max_abs_over_scale")
        outcome = "chosen" if attempt["chosen"] else attempt["outcome"].split(":")[0]
        print(
            f"  {attempt['toolchain']:13} {outcome:10} {attempt.get('convert_seconds') or 0:9.1f} "
            f"{error if error is not None else float('nan'):13.2e} {(attempt.get('size') or 0) / 1e6:8.2f} "
            f"{attempt.get('transpose_count') if attempt.get('transpose_count') is not None else '-':>10} "
            f"{one or float('nan'):7.2f} {(one or float('nan')) / torch_ms[1]:6.2f} "
            f"{many or float('nan'):7.2f} {(many or float('nan')) / torch_ms[threads]:6.2f}"
        )
        if not attempt["chosen"] and attempt["outcome"].startswith("failed"):
            print(f"    {attempt['outcome'][:200]}")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--models", default=",".join(MODELS))
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        data = Path(tmp)
        env = {
            "MODELPORT_ALLOWED_ARCHITECTURES": json.dumps(["torchvision.models.", "transformers."]),
            "MODELPORT_ENABLED_TOOLCHAINS": json.dumps(["onnx-tf", "onnx2tf", "litert-torch"]),
        }
        with running_stack(data, env=env) as service:
            client = service.client
            print("ratio = LiteRT latency / PyTorch latency (same machine, same run; < 1 is faster)")
            for name in args.models.split(","):
                run_model(client, name, MODELS[name], data)


if __name__ == "__main__":
    main()
