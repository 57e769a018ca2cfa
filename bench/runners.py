"""Cold runner vs warm runner, side by side on the same stages (not a test).

    .venv/bin/python -m bench.runners [--rounds 3] [--model squeezenet1_1]

For one small torchvision model it runs the float32 chain export.prepare (torch env) ->
convert.onnx2tf (onnx2tf env) -> validate.tflite (torch env) through
``worker.runner.SubprocessRunner`` (a fresh sandboxed interpreter per stage) and through
``worker.warm.WarmRunner`` (a child forked from a pre-imported parent per environment),
alternating the two in each round so the machine's load falls on both alike. Prints each
stage's median wall time per runner and the ratio warm / cold, plus the warm parents'
start-up (paid once per worker process, not per stage). Also prints the core count and load.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any

from domain.toolchains import get_toolchain, stages_pythonpath
from worker.runner import RunLimits, SubprocessRunner
from worker.warm import WarmRunner

LIMITS = RunLimits(timeout_seconds=900, memory_bytes=None, threads=1, nice=0)


def make_state_dict(model: str, out: Path) -> None:
    """A seeded state dict of ``torchvision.models.<model>(num_classes=10)``, made in the torch env."""
    script = (
        "import sys, torch, torchvision; torch.manual_seed(0); "
        f"torch.save(getattr(torchvision.models, {model!r})(num_classes=10).state_dict(), sys.argv[1])"
    )
    env = {**os.environ, "PYTHONPATH": stages_pythonpath(), "CUDA_VISIBLE_DEVICES": ""}
    subprocess.run([str(get_toolchain("torch").interpreter), "-c", script, str(out)], check=True, env=env)


def spec(model: str) -> dict[str, Any]:
    return {
        "model_format": "state_dict",
        "architecture": {"name": f"torchvision.models.{model}", "kwargs": {"num_classes": 10}},
        "inputs": [{"name": "input", "shape": [1, 3, 64, 64], "dtype": "float32"}],
        "toolchain": "onnx2tf",
        "validation_samples": 4,
        "onnx_consumers": ["onnx2tf"],
    }


def chain(runner: SubprocessRunner, model_file: Path, model: str, work: Path) -> dict[str, float]:
    """The three stages' wall seconds (including process start and framework import)."""
    seconds: dict[str, float] = {}

    def stage(toolchain: str, entry: str, inputs: dict[str, Path], options: dict[str, Any]) -> dict[str, Path]:
        workdir = work / entry
        workdir.mkdir(parents=True)
        request = {
            "stage": entry,
            "inputs": {name: str(path) for name, path in inputs.items()},
            "spec": spec(model),
            "options": options,
            "output_dir": str(workdir / "out"),
        }
        started = time.monotonic()
        outcome = runner.run(toolchain, entry, request, workdir, LIMITS)
        seconds[entry] = time.monotonic() - started
        assert outcome.result["ok"], outcome.result
        return {name: workdir / "out" / file for name, file in outcome.result["outputs"].items()}

    prepared = stage(
        "torch", "export.prepare", {"model": model_file}, {"allowed_architectures": ["torchvision.models."]}
    )
    shared = {"samples": prepared["samples"], "reference": prepared["reference"]}
    converted = stage("onnx2tf", "convert.onnx2tf", {"onnx": prepared["onnx"], **shared}, {})
    stage("torch", "validate.tflite", {"tflite": converted["tflite_float32"], **shared}, {"precision": "float32"})
    seconds["chain"] = sum(seconds.values())
    return seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--model", default="squeezenet1_1")
    args = parser.parse_args()
    print(f"cores={os.cpu_count()} load={os.getloadavg()[0]:.2f} model={args.model} rounds={args.rounds}")
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        model_file = root / "model.pth"
        make_state_dict(args.model, model_file)
        warm = WarmRunner()
        started = time.monotonic()
        for toolchain in ("torch", "onnx2tf"):
            warm.server(toolchain, LIMITS)
        startup = time.monotonic() - started
        cold = SubprocessRunner()
        runs: dict[str, list[dict[str, float]]] = {"cold": [], "warm": []}
        try:
            for index in range(args.rounds):
                order = [("cold", cold), ("warm", warm)] if index % 2 == 0 else [("warm", warm), ("cold", cold)]
                for name, runner in order:
                    runs[name].append(chain(runner, model_file, args.model, root / f"{name}-{index}"))
        finally:
            warm.close()
    print(f"warm parents start-up (torch + onnx2tf, once per worker process): {startup:.1f} s")
    print(f"{'stage':<18}{'cold s':>9}{'warm s':>9}{'warm/cold':>11}")
    for stage in ("export.prepare", "convert.onnx2tf", "validate.tflite", "chain"):
        cold_s = statistics.median(run[stage] for run in runs["cold"])
        warm_s = statistics.median(run[stage] for run in runs["warm"])
        print(f"{stage:<18}{cold_s:>9.2f}{warm_s:>9.2f}{warm_s / cold_s:>11.2f}")
    print(f"load after: {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
