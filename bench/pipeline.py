"""End-to-end timing of one conversion through the real service (not a test).

    .venv/bin/python -m bench.pipeline [--builder resnet18] [--size 224] [--toolchain best]

Starts the embedded stack (SQLite, private Redis, API, one worker per queue) in a
temporary directory, converts a torchvision state dict, and prints the end-to-end time,
each stage's time, each artifact's error against PyTorch, and the .tflite's latency
beside PyTorch's own latency measured in the same run. With ``--toolchain best`` the
sum of the stages' seconds over the end-to-end time shows how much ran at once.
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from pathlib import Path

from bench._stack import running_stack
from testkit.toolchains import toolchain_python

TORCH_LATENCY = """
import sys, time, statistics, torch, torchvision
torch.set_num_threads(int(sys.argv[3]))
m = getattr(torchvision.models, sys.argv[1])(weights=None).eval()
x = torch.rand(1, 3, int(sys.argv[2]), int(sys.argv[2]))
with torch.no_grad():
    for _ in range(3): m(x)
    runs = []
    for _ in range(20):
        t = time.perf_counter(); m(x); runs.append((time.perf_counter() - t) * 1000)
print(statistics.median(runs))
"""


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--builder", default="resnet18")
    parser.add_argument("--size", type=int, default=224)
    parser.add_argument("--toolchain", default="auto", choices=["auto", "best", "onnx-tf", "onnx2tf", "litert-torch"])
    parser.add_argument("--save-report", type=Path, help="write the job's report JSON here")
    args = parser.parse_args()
    import subprocess

    python = str(toolchain_python("torch"))
    with tempfile.TemporaryDirectory() as tmp:
        data = Path(tmp)
        model = data / f"{args.builder}.pth"
        subprocess.run(
            [
                python,
                "-c",
                f"import torch, torchvision; torch.save(torchvision.models."
                f"{args.builder}(weights=None).state_dict(), '{model}')",
            ],
            check=True,
        )
        with running_stack(data) as service:
            client = service.client
            spec = {
                "architecture": {"name": f"torchvision.models.{args.builder}", "kwargs": {}},
                "inputs": [{"name": "input", "shape": [1, 3, args.size, args.size], "dtype": "float32"}],
                "toolchain": args.toolchain,
            }
            started = time.monotonic()
            job = client.post(
                "/v1/jobs", data={"spec": json.dumps(spec)}, files={"model": (model.name, model.read_bytes())}
            ).json()
            while job["status"] not in ("succeeded", "failed", "cancelled"):
                time.sleep(0.5)
                job = client.get(f"/v1/jobs/{job['id']}").json()
            total = time.monotonic() - started
            print(f"model: torchvision {args.builder} 1x3x{args.size}x{args.size}  status: {job['status']}")
            print(f"end to end: {total:.1f} s")
            for stage in job["stages"]:
                print(f"  stage {stage['name']:26} {stage['seconds'] or 0:7.1f} s  {stage['state']}")
            busy = sum(stage["seconds"] or 0 for stage in job["stages"])
            print(f"stage seconds {busy:.1f} / end to end {total:.1f} = {busy / total:.2f} (over 1: overlapped)")
            if job["status"] != "succeeded":
                print(json.dumps(job["error"], indent=2))
                return
            report = client.get(f"/v1/jobs/{job['id']}/report").json()
            if args.save_report:
                args.save_report.write_text(json.dumps(report, indent=2))
            for artifact in report["artifacts"]:
                for name, m in artifact["outputs"].items():
                    print(
                        f"  {artifact['name']:22} {name}: max_abs {m['max_abs']:.3g}  scale {m['scale']:.3g}  "
                        f"max_abs/scale {m['max_abs'] / m['scale']:.3g}  cosine {m['cosine']:.8f}  "
                        f"verdict {artifact['verdict']}"
                    )
            tflite = next(a for a in report["artifacts"] if a["name"] == "model_float32.tflite")
            threads = os.cpu_count() or 1
            for label, n, key in (
                ("1 thread", 1, "median_1_thread"),
                (f"{threads} threads", threads, "median_all_threads"),
            ):
                torch_ms = float(
                    subprocess.run(
                        [python, "-c", TORCH_LATENCY, args.builder, str(args.size), str(n)],
                        check=True,
                        capture_output=True,
                        text=True,
                    ).stdout
                )
                lite_ms = tflite["latency_ms"][key]
                print(
                    f"  latency {label}: tflite {lite_ms:.2f} ms  pytorch {torch_ms:.2f} ms  "
                    f"ratio tflite/pytorch {lite_ms / torch_ms:.2f}"
                )


if __name__ == "__main__":
    main()
