"""Stage ``validate.tflite`` (torch env): a .tflite in stock ai-edge-litert vs PyTorch.

Inputs: ``tflite``, ``samples``, ``reference``. Options: ``precision`` (default
``float32``), ``tolerance`` (default: ``spec.tolerance[precision]``, else the
defaults), ``threads_all`` (default: the CPU count), ``runs``, ``warmup``,
``timeout_seconds``, ``xnnpack`` (default true: the XNNPACK delegate stock LiteRT
applies; false runs the reference kernels), ``runtime`` (``litert``, the default, or
``tensorflow``: TensorFlow's interpreter with its flex delegate, for files that need
Select-TF ops; the stage then runs in an environment with TensorFlow).

The interpreter runs in a child process (``stages.kit.litert_child``) because a
converted artifact can crash the runtime. A crash, a file that needs flex ops
(stock LiteRT has no flex delegate, and this environment has no TensorFlow), or
names that cannot be matched are the artifact's ``fail`` verdict with the reason -
the stage itself succeeds and reports. Operators are read from the flatbuffer
(``stages.kit.tflite_ops``), without loading the file. A file with quantized integer
inputs/outputs (``int8_io``) gets the float samples quantized with each input's scale
and zero point, and its outputs dequantized before the comparison;
``info.boundary_quantization`` lists those parameters.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from stages.kit import samples as sample_io
from stages.kit.codes import StageCode
from stages.kit.contract import StageError, StageRequest, StageResult
from stages.kit.metrics import compare

DEFAULT_TOLERANCES = {"float32": 1e-4, "float16": 1e-2, "dynamic_range": 1e-1, "int8": 1e-1}
CHILD_LOG_TAIL = 2000


def run(request: StageRequest) -> StageResult:
    from stages.kit.tflite_ops import operators

    spec, options = request.spec, request.options
    precision = str(options.get("precision") or "float32")
    tolerance = float(
        options.get("tolerance")
        or (spec.get("tolerance") or {}).get(precision)
        or DEFAULT_TOLERANCES.get(precision, 1e-4)
    )
    tflite = request.input_path("tflite")
    reference = sample_io.load(request.input_path("reference"))
    samples_path = request.input_path("samples")
    input_names = [item["name"] for item in spec.get("inputs") or []] or list(sample_io.load(samples_path))

    try:
        ops = operators(tflite)
    except Exception as exc:  # a file that is not a flatbuffer at all
        raise StageError(
            StageCode.INVALID_TFLITE, f"{tflite.name} is not a readable .tflite flatbuffer: {exc}"
        ) from None
    requires_flex = bool(ops["flex"])

    runtime = str(options.get("runtime") or "litert")
    started = time.monotonic()
    child: dict[str, Any] = {}
    actual: dict[str, Any] | None = None
    failure: str | None = None
    if requires_flex and runtime != "tensorflow":
        failure = (
            f"requires_flex: the file uses Select-TF ops {ops['flex']}, which stock "
            "ai-edge-litert cannot run (TensorFlow's interpreter is needed)"
        )
    else:
        child, actual, failure = _run_child(tflite, samples_path, input_names, list(reference), options)
    if actual is not None:
        result = compare(reference, actual, tolerance)
    else:
        result = compare(reference, {}, tolerance)
        result["reasons"] = [failure or "the runtime produced no outputs"]
    if failure and actual is not None:
        # Outputs came back, but the run died later (during the latency runs).
        result["verdict"] = "fail"
        result["reasons"].append(failure)
    if requires_flex and runtime == "tensorflow":
        # The numbers stand, but users of stock LiteRT cannot load the file.
        result["notes"] = [f"requires_flex: validated in TensorFlow's interpreter; uses Select-TF ops {ops['flex']}"]
    result.update(
        {
            "seconds": round(time.monotonic() - started, 3),
            "size_bytes": tflite.stat().st_size,
            "operators": {"builtin": ops["builtin"], "flex": ops["flex"], "custom": ops["custom"]},
            "operator_counts": ops["counts"],
            "transpose_count": ops["transpose_count"],
            "latency_ms": child.get("latency_ms"),
            # A named dynamic batch: the file resized to 2 and matched the one-by-one run.
            "dynamic_batch": child.get("dynamic_batch"),
            "requires_flex": requires_flex,
            "precision": precision,
        }
    )
    return StageResult(
        outputs={},
        metrics={f"tflite_{precision}": result},
        info={
            "runtime": _runtime_name(runtime, bool(options.get("xnnpack", True))),
            "operators_source": "flatbuffer via the runtime's schema_py_generated",
            "versions": _versions(runtime),
            "signature_key": child.get("signature_key"),
            "tflite_inputs": child.get("tflite_inputs"),
            "tflite_outputs": child.get("tflite_outputs"),
            "input_map": child.get("input_map"),
            "output_map": child.get("output_map"),
            "crashed": child.get("crashed"),
            "boundary_quantization": child.get("boundary_quantization"),
        },
    )


def _run_child(
    tflite: Path, samples: Path, input_names: list[str], output_names: list[str], options: dict[str, Any]
) -> tuple[dict[str, Any], dict[str, Any] | None, str | None]:
    """(child report, outputs or None, failure reason or None)."""
    with tempfile.TemporaryDirectory(prefix="litert-") as work_dir:
        work = Path(work_dir)
        job = {
            "tflite": str(tflite),
            "samples": str(samples),
            "work_dir": str(work),
            "input_names": input_names,
            "output_names": output_names,
            "warmup": int(options.get("warmup", 3)),
            "runs": int(options.get("runs", 20)),
            "threads_all": int(options.get("threads_all") or os.cpu_count() or 1),
            "xnnpack": bool(options.get("xnnpack", True)),
            "input_transposes": options.get("input_transposes") or {},
            "runtime": str(options.get("runtime") or "litert"),
        }
        (work / "job.json").write_text(json.dumps(job))
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join(p for p in (_package_root(), env.get("PYTHONPATH")) if p)
        try:
            proc = subprocess.run(
                [sys.executable, "-m", "stages.kit.litert_child", str(work / "job.json")],
                capture_output=True,
                text=True,
                env=env,
                timeout=float(options.get("timeout_seconds") or 600),
            )
            code, log = proc.returncode, (proc.stdout + proc.stderr)
        except subprocess.TimeoutExpired:
            code, log = None, ""
        # Keep the child's output in the stage log, where a crash is investigated.
        print(log[-CHILD_LOG_TAIL:], file=sys.stderr, flush=True)
        report: dict[str, Any] = {}
        if (work / "child.json").is_file():
            report = json.loads((work / "child.json").read_text())
        actual = sample_io.load(work / "outputs.npz") if (work / "outputs.npz").is_file() else None
        failure = report.get("mapping_error")
        if code is None:
            failure = "runtime timed out"
        elif code < 0:
            name = signal.Signals(-code).name if -code in signal.Signals._value2member_map_ else str(-code)
            report["crashed"] = name
            failure = f"runtime crashed with signal {name}"
        elif code != 0:
            lines = [line for line in log.strip().splitlines() if line.strip()]
            failure = f"runtime failed: {lines[-1][:500] if lines else f'exit code {code}'}"
        return report, actual, failure


def _package_root() -> str:
    # The directory that holds the ``stages`` package, so the child imports this copy.
    return str(Path(__file__).resolve().parent.parent)


def _runtime_name(runtime: str, xnnpack: bool) -> str:
    kernels = "XNNPACK delegate (default)" if xnnpack else "reference kernels (no XNNPACK)"
    if runtime == "tensorflow":
        return f"TensorFlow tf.lite Interpreter with the flex delegate (Select-TF ops), {kernels}"
    return f"ai-edge-litert Interpreter, builtin ops, no flex delegate, {kernels}"


def _versions(runtime: str = "litert") -> dict[str, str | None]:
    from importlib import metadata

    versions: dict[str, str | None] = {}
    packages = (
        ("tensorflow-cpu", "numpy", "flatbuffers")
        if runtime == "tensorflow"
        else ("ai-edge-litert", "numpy", "flatbuffers")
    )
    for package in packages:
        try:
            versions[package] = metadata.version(package)
        except metadata.PackageNotFoundError:
            versions[package] = None
    return versions
