"""convert.onnx2tf under the warm runner: onnx2tf in a fresh interpreter (the code before)
against onnx2tf in a fork of the stage (this code), side by side in one run (not a test).

    flock /work/wt/heavy.lock .venv/bin/python -m bench.onnx2tf_fork [--baseline REF] [--rounds 2] [--runs 2]

``--baseline`` (a git revision, by default the commit before the fork) is exported with
``git archive`` to a temporary directory. A tiny TorchScript CNN (bench/load.py's) goes
through export.prepare once; then, per round and alternating the order, one measuring
process per code tree (this file, run with that tree first on ``PYTHONPATH``) starts its
own onnx2tf warm parent (not counted), converts once to warm up (not counted) and runs
convert.onnx2tf ``--runs`` times with ``targets: [onnx, tflite]`` and with ``[onnx,
saved_model, tflite]``, alternating. Prints per tree and targets the medians of the
stage's wall seconds, of onnx2tf's own seconds (``info.seconds.onnx2tf``: the onnx2tf
runs, a SavedModel's included), of ``startup_seconds`` and the largest peak RSS of the
stage's process tree, plus the core count and load.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve()
ROOT = HERE.parent.parent
TARGETS = {"tflite": ["onnx", "tflite"], "saved_model": ["onnx", "saved_model", "tflite"]}
SPEC: dict[str, Any] = {
    "model_format": "torchscript",
    "inputs": [{"name": "pixels", "shape": [1, 3, 32, 32], "dtype": "float32"}],
    "toolchain": "onnx2tf",
    "validation_samples": 4,
    "onnx_consumers": ["onnx2tf"],
}


def request(entry: str, inputs: dict[str, Path], workdir: Path, targets: list[str]) -> dict[str, Any]:
    return {
        "stage": entry,
        "inputs": {name: str(path) for name, path in inputs.items()},
        "spec": {**SPEC, "targets": targets},
        "options": {},
        "output_dir": str(workdir / "out"),
    }


def prepare(work: Path) -> dict[str, Path]:
    """The tiny model's ONNX, samples and reference (export.prepare through the cold runner)."""
    from bench.load import TINY_TORCHSCRIPT
    from testkit.toolchains import toolchain_python
    from worker.runner import RunLimits, SubprocessRunner

    model = work / "tiny.pt"
    subprocess.run([str(toolchain_python("torch")), "-c", TINY_TORCHSCRIPT, str(model)], check=True, timeout=300)
    workdir = work / "prepare"
    workdir.mkdir()
    limits = RunLimits(timeout_seconds=600, memory_bytes=None, threads=1, nice=0)
    outcome = SubprocessRunner().run(
        "torch",
        "export.prepare",
        request("export.prepare", {"model": model}, workdir, ["onnx", "tflite"]),
        workdir,
        limits,
    )
    assert outcome.result["ok"], outcome.result
    return {name: workdir / "out" / outcome.result["outputs"][name] for name in ("onnx", "samples", "reference")}


def measure(inputs: dict[str, Path], work: Path, runs: int) -> dict[str, list[dict[str, float]]]:
    """In a measuring process: this tree's warm runner, ``runs`` conversions per target set."""
    from worker.runner import RunLimits
    from worker.warm import WarmRunner

    limits = RunLimits(timeout_seconds=600, memory_bytes=None, threads=1, nice=0)
    warm = WarmRunner()
    found: dict[str, list[dict[str, float]]] = {name: [] for name in TARGETS}
    try:
        assert warm.server("onnx2tf", limits) is not None
        for index in range(runs + 1):
            for name, targets in TARGETS.items():
                workdir = work / f"{name}-{index}"
                workdir.mkdir(parents=True)
                started = time.monotonic()
                outcome = warm.run(
                    "onnx2tf", "convert.onnx2tf", request("convert.onnx2tf", inputs, workdir, targets), workdir, limits
                )
                wall = time.monotonic() - started
                assert outcome.result["ok"], outcome.result
                assert "warm_fork" in outcome.isolation
                if name == "saved_model":
                    assert "saved_model" in outcome.result["outputs"], outcome.result["info"].get("failed")
                if index == 0:
                    continue  # the warm-up conversion
                found[name].append(
                    {
                        "wall": wall,
                        "onnx2tf": outcome.result["info"]["seconds"]["onnx2tf"],
                        "startup": outcome.startup_seconds or 0.0,
                        "peak_rss_mb": outcome.peak_rss_bytes / 1024**2,
                    }
                )
    finally:
        warm.close()
    return found


def run_tree(tree: Path, inputs: dict[str, Path], work: Path, runs: int) -> dict[str, list[dict[str, float]]]:
    env = {**os.environ, "PYTHONPATH": str(tree)}
    args = [sys.executable, str(HERE), "--measure", json.dumps({k: str(v) for k, v in inputs.items()})]
    proc = subprocess.run(
        [*args, "--work", str(work), "--runs", str(runs)], cwd=tree, env=env, capture_output=True, text=True
    )
    if proc.returncode != 0:
        raise RuntimeError(f"measuring in {tree} failed:\n{proc.stderr[-3000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])  # type: ignore[no-any-return]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--baseline", default="48e5432", help="the code before (a git revision)")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--runs", type=int, default=2, help="measured conversions per target set and process")
    parser.add_argument("--measure", help=argparse.SUPPRESS)
    parser.add_argument("--work", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.measure:
        inputs = {name: Path(path) for name, path in json.loads(args.measure).items()}
        print(json.dumps(measure(inputs, Path(args.work), args.runs)))
        return
    load = " ".join(f"{value:.2f}" for value in os.getloadavg())
    print(f"cores={os.cpu_count()} load={load} (1/5/15 min) baseline={args.baseline}", flush=True)
    with tempfile.TemporaryDirectory(prefix="bench-onnx2tf-fork-") as tmp:
        root = Path(tmp)
        before = root / "before"
        before.mkdir()
        archive = subprocess.run(["git", "archive", args.baseline], cwd=ROOT, capture_output=True, check=True)
        subprocess.run(["tar", "-x", "-C", str(before)], input=archive.stdout, check=True)
        inputs = prepare(root)
        trees = {"before (fresh interpreter)": before, "after (fork)": ROOT}
        results: dict[str, dict[str, list[dict[str, float]]]] = {label: {n: [] for n in TARGETS} for label in trees}
        for index in range(args.rounds):
            order = list(trees) if index % 2 == 0 else list(reversed(trees))
            for label in order:
                found = run_tree(trees[label], inputs, root / f"{index}-{label.split()[0]}", args.runs)
                for name in TARGETS:
                    results[label][name].extend(found[name])
                print(f"round {index + 1}: {label} done", flush=True)
    print(f"{'targets':<14}{'code':<28}{'n':>3}{'stage s':>9}{'onnx2tf s':>11}{'startup s':>11}{'peak RSS MB':>13}")
    for name in TARGETS:
        for label in trees:
            rows = results[label][name]
            stage, tool, startup = (statistics.median(r[key] for r in rows) for key in ("wall", "onnx2tf", "startup"))
            peak = max(r["peak_rss_mb"] for r in rows)
            print(f"{name:<14}{label:<28}{len(rows):>3}{stage:>9.2f}{tool:>11.2f}{startup:>11.2f}{peak:>13.0f}")
    load = " ".join(f"{value:.2f}" for value in os.getloadavg())
    print(f"load after: {load}")


if __name__ == "__main__":
    main()
