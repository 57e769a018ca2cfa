"""Every .tflite each toolchain made, against PyTorch eager: invoke latency and size, side by side (not a test).

    .venv/bin/python -m bench.artifacts [--models cnn,vit,text] [--runs 30]

For the models of ``bench.e2e`` (mobilenet_v2 224, a 4-layer ViT at 64x64, a 4-layer BERT
encoder at 32 tokens; seeded random weights), one job each with ``toolchain: best`` and
``targets: [tflite]``, so every toolchain (onnx2tf, litert-torch, onnx-tf) converts and
validates its candidate; the float32 .tflite of each candidate is taken from the service's
object store. Then one fresh process in the torch environment times, one after the
other: PyTorch eager (``torch.no_grad``) and each .tflite in ai-edge-litert's interpreter
(XNNPACK, the default), at 1 thread and at all cores: median of ``--runs`` invokes after 3
warm-up ones. Prints size (PyTorch: the state dict), milliseconds and the ratio to PyTorch
(< 1: faster), core count and load. A candidate that failed shows its outcome instead.
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
from pathlib import Path
from typing import Any

from bench._stack import machine, running_stack, toolchain_run
from bench.e2e import BUILD, MAKE, MODELS
from domain.jobs import names

LATENCY = (
    MAKE
    + """
import statistics, time
import numpy as np
from ai_edge_litert.interpreter import Interpreter
arch, inputs, state, files = json.loads(sys.argv[1]), json.loads(sys.argv[2]), sys.argv[3], json.loads(sys.argv[4])
threads, runs = json.loads(sys.argv[5]), int(sys.argv[6])
def median_ms(call):
    for _ in range(3):
        call()
    times = []
    for _ in range(runs):
        started = time.perf_counter()
        call()
        times.append((time.perf_counter() - started) * 1000)
    return statistics.median(times)
result = {}
model, args = loaded(arch, state), example(inputs)
rng = np.random.default_rng(0)
for n in threads:
    torch.set_num_threads(n)
    with torch.no_grad():
        result[f"pytorch/{n}"] = median_ms(lambda: model(*args))
def invoke_ms(path, n):
    interpreter = Interpreter(model_path=path, num_threads=n)
    interpreter.allocate_tensors()
    for detail in interpreter.get_input_details():
        if np.issubdtype(detail["dtype"], np.integer):  # token ids and masks: 0 and 1 are valid for both
            value = rng.integers(0, 2, detail["shape"]).astype(detail["dtype"])
        else:
            value = rng.random(detail["shape"]).astype(detail["dtype"])
        interpreter.set_tensor(detail["index"], value)
    return median_ms(interpreter.invoke)
for label, path in files.items():
    for n in threads:
        try:
            result[f"{label}/{n}"] = invoke_ms(path, n)
        except Exception as exc:  # e.g. a file with flex ops: stock LiteRT cannot load it
            result[f"{label}/{n}"] = f"{type(exc).__name__}: {str(exc).splitlines()[0][:100] if str(exc) else ''}"
print(json.dumps(result))
"""
)


def candidates(objects: Path, job: dict[str, Any], report: dict[str, Any]) -> tuple[dict[str, Path], dict[str, str]]:
    """Each toolchain's float32 .tflite in the object store, and the outcome of those without one."""
    files, outcomes = {}, {}
    for attempt in report.get("attempts", []):
        toolchain = attempt["toolchain"]
        found = sorted((objects / "jobs" / job["id"] / "stages" / names.convert(toolchain)).glob("*float32*.tflite"))
        if found:
            files[toolchain] = found[0]
        else:
            outcomes[toolchain] = attempt["outcome"][:120]
    return files, outcomes


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default=",".join(MODELS))
    parser.add_argument("--runs", type=int, default=30)
    args = parser.parse_args()
    cores = os.cpu_count() or 1
    print(machine(), flush=True)
    with tempfile.TemporaryDirectory(prefix="modelport-bench-artifacts-") as tmp:
        root = Path(tmp)
        env = {"MODELPORT_ALLOWED_ARCHITECTURES": json.dumps(["torchvision.models.", "transformers."])}
        with running_stack(root / "service", env=env) as service:
            for name in args.models.split(","):
                model = MODELS[name]
                state = root / f"{name}.pth"
                arch, inputs = json.dumps(model["architecture"]), json.dumps(model["inputs"])
                toolchain_run("torch", BUILD, arch, str(state))
                spec = {**model, "toolchain": "best", "targets": ["tflite"]}
                job = service.wait(service.submit(state, spec)["id"])
                report = service.client.get(f"/v1/jobs/{job['id']}/report").json()
                files, failed = candidates(root / "service" / "objects", job, report)
                timed = toolchain_run(
                    "torch",
                    LATENCY,
                    arch,
                    inputs,
                    str(state),
                    json.dumps({label: str(path) for label, path in files.items()}),
                    json.dumps([1, cores]),
                    str(args.runs),
                )
                ms = json.loads(timed.stdout.strip().splitlines()[-1])
                shape = " ".join("x".join(map(str, item["shape"])) for item in model["inputs"])
                print(f"\n{name} ({model['architecture']['name']}, {shape}), job {job['status']}", flush=True)
                print(
                    f"  {'runtime':<14}{'size MB':>9}{'ms 1 thread':>13}{'vs torch':>10}"
                    f"{f'ms {cores} threads':>14}{'vs torch':>10}"
                )
                sizes = {"pytorch": state.stat().st_size, **{label: p.stat().st_size for label, p in files.items()}}
                for label, size in sizes.items():
                    one, many = ms[f"{label}/1"], ms[f"{label}/{cores}"]
                    if isinstance(one, str) or isinstance(many, str):
                        print(f"  {label:<14}{size / 1e6:9.2f}  does not run in stock LiteRT: {one}")
                        continue
                    print(
                        f"  {label:<14}{size / 1e6:9.2f}{one:13.2f}{one / ms['pytorch/1']:10.2f}"
                        f"{many:14.2f}{many / ms[f'pytorch/{cores}']:10.2f}"
                    )
                for label, outcome in failed.items():
                    print(f"  {label:<14} no .tflite: {outcome}")
    print(f"\nload after: {machine()}")


if __name__ == "__main__":
    main()
