"""Child process of ``validate.tflite``: run a .tflite in ai-edge-litert.

``python -m stages.kit.litert_child <job.json>`` with the job ``stages.kit.child.RuntimeJob``
writes (every key present): ``tflite``, ``samples``,
``input_names``, ``output_names``, ``work_dir``, ``warmup``, ``runs``,
``threads_all``, ``xnnpack``, ``runtime`` (``litert``: stock ai-edge-litert;
``tensorflow``: TensorFlow's interpreter, which runs flex ops). It writes
``outputs.npz`` (keyed by the stable output names) as soon as the samples have run, then
``child.json`` after the latency runs. A file whose signature names an output that is not
one of its graph's outputs is not run: ``signature_error`` says which and why. It exists
so that a runtime crash (SIGABRT, SIGSEGV in a kernel) kills this process and not the
stage, which then reports the signal as the artifact's verdict.
"""

from __future__ import annotations

import json
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

from stages.kit.naming import match_names


class Runner:
    """One way to call the model by name: its signature if it has one, else raw tensors."""

    def __init__(
        self,
        tflite: Path,
        threads: int,
        xnnpack: bool = True,
        runtime: str = "litert",
        preserve_all_tensors: bool = False,
    ) -> None:
        if runtime == "tensorflow":
            # TensorFlow's own interpreter links the flex delegate: it runs Select-TF ops.
            from tensorflow.lite.python.interpreter import Interpreter, OpResolverType
        else:
            from ai_edge_litert.interpreter import Interpreter, OpResolverType

        # Stock LiteRT applies the XNNPACK delegate by default; without it the
        # reference kernels run, which some users ship and which behave differently.
        resolver = OpResolverType.AUTO if xnnpack else OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES
        # preserve_all_tensors keeps every intermediate tensor readable after invoke (the
        # quantization diagnostic, stages.quantize.error_sources); it costs memory.
        self.interpreter = Interpreter(
            model_path=str(tflite),
            num_threads=threads,
            experimental_op_resolver_type=resolver,
            experimental_preserve_all_tensors=preserve_all_tensors,
        )
        signatures = self.interpreter.get_signature_list()
        self.signature_key: str | None = None
        if signatures:
            self.signature_key = "serving_default" if "serving_default" in signatures else sorted(signatures)[0]
            self.runner = self.interpreter.get_signature_runner(self.signature_key)
            self.inputs: dict[str, dict[str, Any]] = dict(self.runner.get_input_details())
            self.outputs: dict[str, dict[str, Any]] = dict(self.runner.get_output_details())
        else:
            self.interpreter.allocate_tensors()
            self.inputs = {d["name"]: d for d in self.interpreter.get_input_details()}
            self.outputs = {d["name"]: d for d in self.interpreter.get_output_details()}

    def __call__(self, feed: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        feed = {name: _quantize(value, self.inputs[name]) for name, value in feed.items()}
        if self.signature_key is not None:
            raw = self.runner(**feed)
        else:
            raw = self._call_tensors(feed)
        return {name: _dequantize(np.asarray(value), self.outputs[name]) for name, value in raw.items()}

    def _call_tensors(self, feed: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        resized = False
        for name, value in feed.items():
            detail = self.inputs[name]
            if list(detail["shape"]) != list(value.shape):
                self.interpreter.resize_tensor_input(detail["index"], list(value.shape))
                resized = True
        if resized:
            self.interpreter.allocate_tensors()
        for name, value in feed.items():
            self.interpreter.set_tensor(self.inputs[name]["index"], value)
        self.interpreter.invoke()
        return {name: self.interpreter.get_tensor(d["index"]) for name, d in self.outputs.items()}


def _quantize(value: np.ndarray, detail: dict[str, Any]) -> np.ndarray:
    dtype = np.dtype(detail["dtype"])
    scales = detail.get("quantization_parameters", {}).get("scales", [])
    if dtype.kind in "iu" and value.dtype.kind == "f" and len(scales) == 1 and scales[0] != 0:
        zero = detail["quantization_parameters"]["zero_points"][0]
        info = np.iinfo(dtype)
        return np.clip(np.round(value / scales[0] + zero), info.min, info.max).astype(dtype)
    return value.astype(dtype, copy=False)


def _dequantize(value: np.ndarray, detail: dict[str, Any]) -> np.ndarray:
    params = detail.get("quantization_parameters", {})
    scales, zeros = params.get("scales", []), params.get("zero_points", [])
    if value.dtype.kind in "iu" and len(scales) == 1 and scales[0] != 0:
        return ((value.astype(np.float32) - zeros[0]) * scales[0]).astype(np.float32)
    return value


def _boundary_quantization(runner: Runner) -> dict[str, dict[str, Any]]:
    """Per-tensor scale and zero point of integer ports (an int8_io file): how they are fed."""
    found: dict[str, dict[str, Any]] = {}
    for kind, details in (("inputs", runner.inputs), ("outputs", runner.outputs)):
        for name, detail in details.items():
            params = detail.get("quantization_parameters", {})
            scales, zeros = params.get("scales", []), params.get("zero_points", [])
            dtype = np.dtype(detail["dtype"])
            if dtype.kind in "iu" and len(scales) == 1:
                entry = {"dtype": dtype.name, "scale": float(scales[0]), "zero_point": int(zeros[0])}
                found.setdefault(kind, {})[name] = entry
    return found


def _detached_outputs(tflite: Path, signature_key: str | None) -> str | None:
    """Why the signature cannot be read after invoke, in words, or None: the outputs it names
    that are not outputs of its subgraph (``Boundary.detached_outputs``). The runtime would
    raise "Tensor data is null" for them (XNNPACK) or hand back whatever a later op wrote
    into their memory (reference kernels), so no number read from them can be trusted."""
    from stages.kit.tflite_boundary import read

    if signature_key is None:  # without a signature the graph's outputs are read directly
        return None
    boundary = read(tflite, signature_key)
    detached = boundary.detached_outputs()
    if not detached:
        return None
    names = ", ".join(f"{port.key!r} (tensor {port.tensor} {port.name!r})" for port in detached)
    return (
        f"the file is malformed: its signature {signature_key!r} reads output {names}, which is not "
        f"an output of its graph (the graph's outputs are tensors {boundary.graph_outputs}); LiteRT "
        "keeps no value for such a tensor after it runs (XNNPACK: 'Tensor data is null', reference "
        "kernels: memory reused by later ops), so that output cannot be read"
    )


def _batch_probe(
    runner: Runner,
    samples: dict[str, np.ndarray],
    in_map: dict[str, str],
    out_map: dict[str, str],
    single: dict[str, np.ndarray],
) -> dict[str, Any] | None:
    """Where every input's leading dimension is dynamic (-1), resize it to 2 and check
    the batched run against the one-by-one outputs (``dynamic: true``). A file that fixes
    the batch says so (``dynamic: false`` and each input's leading size), never None."""
    leading = {
        key: int(runner.inputs[key]["shape_signature"][0]) if len(runner.inputs[key]["shape_signature"]) else None
        for key in in_map.values()
    }
    if not in_map or any(size != -1 for size in leading.values()):
        return {"dynamic": False, "probed": False, "leading_sizes": leading}
    pick = [0, 1] if next(iter(samples.values())).shape[0] > 1 else [0, 0]
    feed = {key: np.concatenate([samples[name][i] for i in pick]) for name, key in in_map.items()}
    try:
        result = runner(feed)
    except Exception as exc:  # the runtime refused the resize
        return {"dynamic": True, "batch": 2, "ok": False, "error": f"{type(exc).__name__}: {exc}"[:500]}
    worst = 0.0
    for name, key in out_map.items():
        expected = np.concatenate([single[name][i] for i in pick])
        got = np.asarray(result[key])
        if got.shape != expected.shape:
            return {
                "dynamic": True,
                "batch": 2,
                "ok": False,
                "error": f"output {name!r} has shape {list(got.shape)}, expected {list(expected.shape)}",
            }
        scale = float(np.max(np.abs(expected))) or 1.0
        worst = max(worst, float(np.max(np.abs(got.astype(np.float64) - expected))) / scale)
    return {"dynamic": True, "batch": 2, "ok": worst <= 1e-3, "max_abs_over_scale": worst}


def _median_ms(runner: Runner, feed: dict[str, np.ndarray], warmup: int, runs: int) -> float:
    for _ in range(warmup):
        runner(feed)
    times = []
    for _ in range(runs):
        started = time.perf_counter()
        runner(feed)
        times.append((time.perf_counter() - started) * 1000.0)
    return round(statistics.median(times), 3)


def main(job_path: str) -> int:
    job = json.loads(Path(job_path).read_text())
    work = Path(job["work_dir"])
    with np.load(job["samples"], allow_pickle=False) as data:
        samples = {name: data[name] for name in data.files}
    xnnpack = bool(job["xnnpack"])
    runtime = str(job["runtime"])
    runner = Runner(Path(job["tflite"]), threads=1, xnnpack=xnnpack, runtime=runtime)
    in_map, in_left = match_names(job["input_names"], list(runner.inputs))
    out_map, out_left = match_names(job["output_names"], list(runner.outputs))
    report: dict[str, Any] = {
        "signature_key": runner.signature_key,
        "tflite_inputs": {
            n: {"shape": [int(x) for x in d["shape_signature"]], "dtype": np.dtype(d["dtype"]).name}
            for n, d in runner.inputs.items()
        },
        "tflite_outputs": list(runner.outputs),
        "input_map": in_map,
        "output_map": out_map,
    }
    quantized = _boundary_quantization(runner)
    if quantized:
        report["boundary_quantization"] = quantized
    detached = _detached_outputs(Path(job["tflite"]), runner.signature_key)
    if detached:
        report["signature_error"] = detached
        (work / "child.json").write_text(json.dumps(report))
        return 0
    # Inputs onnx pruned (unused by the graph) are legitimately absent from the file.
    if out_left or len(in_map) != len(runner.inputs):
        report["mapping_error"] = (
            f"cannot map the file's inputs {list(runner.inputs)} / outputs "
            f"{list(runner.outputs)} to the model's {job['input_names']} / "
            f"{job['output_names']} (unmatched: {in_left + out_left})"
        )
        (work / "child.json").write_text(json.dumps(report))
        return 0
    # layout nhwc: the file takes channel-last inputs; samples are in PyTorch's layout.
    for name, perm in job["input_transposes"].items():
        if name in samples:
            samples[name] = np.ascontiguousarray(np.transpose(samples[name], [0, *(axis + 1 for axis in perm)]))
    # Written before the first invoke: if the runtime kills us, the parent still knows
    # what the file's signature looked like.
    (work / "child.json").write_text(json.dumps(report))
    count = next(iter(samples.values())).shape[0]
    collected: dict[str, list[np.ndarray]] = {name: [] for name in out_map}
    for index in range(count):
        result = runner({key: samples[name][index] for name, key in in_map.items()})
        for name, key in out_map.items():
            collected[name].append(result[key])
    stacked: dict[str, Any] = {name: np.stack(values) for name, values in collected.items()}
    with (work / "outputs.npz").open("wb") as handle:
        np.savez(handle, **stacked)

    report["dynamic_batch"] = _batch_probe(runner, samples, in_map, out_map, stacked)
    (work / "child.json").write_text(json.dumps(report))

    feed = {key: samples[name][0] for name, key in in_map.items()}
    warmup, runs = int(job["warmup"]), int(job["runs"])
    latency = {"median_1_thread": _median_ms(runner, feed, warmup, runs)}
    threads_all = int(job["threads_all"])
    many = Runner(Path(job["tflite"]), threads=threads_all, xnnpack=xnnpack, runtime=runtime)
    latency["median_all_threads"] = _median_ms(many, dict(feed), warmup, runs)
    report["latency_ms"] = {**latency, "runs": runs, "warmup": warmup, "threads_all": threads_all}
    (work / "child.json").write_text(json.dumps(report))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1]))
