"""Stage ``quantize.litert`` (torch env): quantized .tflite files from the chosen float32 one.

Inputs: ``tflite`` (the float32 file that won, from any toolchain), ``samples``,
``reference``, optional ``calibration`` (the upload). Options: ``precisions`` (any of
``dynamic_range``, ``float16``, ``int8``), ``threads``, and as for ``validate.tflite``:
``runs``, ``warmup``, ``threads_all``, ``xnnpack``, ``timeout_seconds``,
``input_transposes`` (inferred for channel-last files when not given);
``calibration_limit`` (default 500 samples), ``quantizer_timeout_seconds`` (1800).
From the spec: ``int8_io`` (default false).

Per precision: ai-edge-quantizer writes ``model_<precision>.tflite`` in a child process
(``stages.quantize.child``; recipes there), then the file runs on the validation samples
in ai-edge-litert in another child (``validate.tflite``'s, so a runtime crash is that
precision's result) and is compared with the PyTorch reference and with the float32
file's own outputs (``stages.quantize.verdict``). The inputs and outputs stay float32,
except with ``int8_io``: the int8 file then takes and returns int8 tensors (one file,
still ``model_int8.tflite``); the runtime child quantizes the float samples with each
input's scale and zero point and dequantizes the outputs before they are compared, and
``signature`` in the metrics gives each port's dtype, scale and zero point
(``stages.quantize.int8_io``). A float port the quantizer left float is a warning.

A precision that cannot be produced (``quantization_failed``), whose calibration file
does not fit (``invalid_calibration``), or that crashes or fails in the runtime
(``runtime_crashed`` / ``runtime_failed``) is listed in ``info.failed`` and left out of
the outputs; the stage itself fails only when the float32 file is unusable.
"""

from __future__ import annotations

import json
import tempfile
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from stages.kit import samples as sample_io
from stages.kit.child import ChildReport, RuntimeRun, run_child, run_litert
from stages.kit.codes import StageCode
from stages.kit.contract import StageError, StageRequest, StageResult
from stages.kit.options import QuantizeOptions, RuntimeOptions
from stages.kit.spec import PlanSpec
from stages.kit.tflite_boundary import Boundary
from stages.kit.versions import version, versions
from stages.quantize import calibration
from stages.quantize.int8_io import describe, int8_io_gaps
from stages.quantize.verdict import ADVISORY, judge

PRECISIONS = ("dynamic_range", "float16", "int8")
QUANTIZER_TIMEOUT = 1800


def run(request: StageRequest) -> StageResult:
    from stages.kit.naming import match_names
    from stages.kit.tflite_boundary import read
    from stages.kit.tflite_ops import operators

    spec, options = request.spec, QuantizeOptions.from_json(request.options)
    precisions, failed = _precisions(options.precisions)
    tflite = request.input_path("tflite")
    try:
        float_ops = operators(tflite)
        boundary = read(tflite)
    except Exception as exc:  # not a flatbuffer at all
        raise StageError(
            StageCode.INVALID_TFLITE, f"{tflite.name} is not a readable .tflite flatbuffer: {exc}"
        ) from None
    samples_path = request.input_path("samples")
    samples = sample_io.load(samples_path)
    reference = sample_io.load(request.input_path("reference"))
    input_names = [item.name for item in spec.inputs] or list(samples)
    keys, unmatched = match_names(input_names, [port.key for port in boundary.inputs])
    if unmatched:
        raise StageError(
            StageCode.INVALID_TFLITE,
            f"the .tflite inputs {[p.key for p in boundary.inputs]} do not match the model's {input_names}",
        )
    transposes, transposes_source = calibration.input_transposes(
        options.runtime.input_transposes, samples, boundary, keys
    )
    runtime = replace(options.runtime, input_transposes=transposes)
    output_names = list(reference)
    warnings: list[str] = []

    started = time.monotonic()
    float_run = _run_runtime(runtime.once(), tflite, samples_path, input_names, output_names)
    float_outputs, float_failure = float_run.outputs, float_run.failure
    if float_failure:
        warnings.append(f"the float32 file did not run, so there is no vs_float32 comparison: {float_failure}")
    baseline_seconds = time.monotonic() - started

    job = _Job(
        request,
        tflite,
        boundary,
        keys,
        transposes,
        samples_path,
        samples,
        input_names,
        reference,
        float_outputs,
        runtime,
        options,
        spec.int8_io,
    )
    outputs: dict[str, str] = {}
    metrics: dict[str, Any] = {}
    calibration_info: dict[str, Any] | None = None
    with tempfile.TemporaryDirectory(prefix="quantize-", dir=request.output_dir) as work_dir:
        for precision in precisions:
            calibration_file: Path | None = None
            if precision == "int8":
                try:
                    calibration_file, calibration_info = _calibration(job, Path(work_dir))
                except StageError as exc:
                    failed[precision] = {"code": exc.code, "reason": exc.message}
                    continue
                warnings.extend([calibration_info["warning"]] if "warning" in calibration_info else [])
            entry, failure = _produce(job, precision, calibration_file, calibration_info, Path(work_dir))
            if entry is not None:
                metrics[f"tflite_{precision}"] = entry
            if failure is not None:
                failed[precision] = failure
            else:
                outputs[f"tflite_{precision}"] = f"model_{precision}.tflite"

    return StageResult(
        outputs=outputs,
        metrics=metrics,
        info={
            "versions": versions("ai-edge-quantizer", "ai-edge-litert", "numpy", "flatbuffers"),
            "failed": failed,
            "runtime": "ai-edge-litert "
            + (version("ai-edge-litert") or "?")
            + " Interpreter, builtin ops, no flex delegate, "
            + ("XNNPACK delegate (default)" if runtime.xnnpack else "reference kernels (no XNNPACK)"),
            "float32": {
                "size_bytes": tflite.stat().st_size,
                "operators": {k: float_ops[k] for k in ("builtin", "flex", "custom")},
                "ran": float_outputs is not None,
                "seconds": round(baseline_seconds, 3),
            },
            "signature_key": boundary.signature_key,
            "input_map": keys,
            "input_transposes": {"value": transposes, "source": transposes_source},
            "calibration": calibration_info,
            "warnings": warnings,
        },
    )


def _precisions(requested: Any) -> tuple[list[str], dict[str, dict[str, str]]]:
    if isinstance(requested, str):
        requested = [requested]
    if not isinstance(requested, list) or not requested:
        raise StageError(
            StageCode.INVALID_SPEC, f"options.precisions must list some of {list(PRECISIONS)}, got {requested!r}"
        )
    chosen: list[str] = []
    failed: dict[str, dict[str, str]] = {}
    for precision in requested:
        if precision == "float32" or precision in chosen:
            continue
        if precision in PRECISIONS:
            chosen.append(precision)
        else:
            failed[str(precision)] = {
                "code": StageCode.PRECISION_UNAVAILABLE,
                "reason": f"no quantization recipe for {precision!r}; known: {list(PRECISIONS)}",
            }
    return chosen, failed


@dataclass
class _Job:
    """What every precision of one stage run shares."""

    request: StageRequest
    tflite: Path
    boundary: Boundary
    keys: dict[str, str]  # spec input name -> the file's signature key
    transposes: dict[str, list[int]]
    samples_path: Path
    samples: dict[str, Any]
    input_names: list[str]
    reference: dict[str, Any]
    float_outputs: dict[str, Any] | None
    runtime: RuntimeOptions  # how each file runs (input_transposes resolved)
    options: QuantizeOptions
    int8_io: bool = False  # int8 only: int8 inputs and outputs instead of float32

    @property
    def spec(self) -> PlanSpec:
        return self.request.spec


def _calibration(job: _Job, work: Path) -> tuple[Path, dict[str, Any]]:
    uploaded = job.request.optional_input("calibration")
    limit = int(job.options.calibration_limit or calibration.DEFAULT_LIMIT)
    arrays, info = calibration.calibration_arrays(job.spec, uploaded, job.samples, limit)
    fitted = calibration.to_file_inputs(arrays, job.boundary, job.keys, job.transposes)
    path = work / "calibration.npz"
    sample_io.save(path, fitted)
    return path, info


def _produce(
    job: _Job, precision: str, calibration_file: Path | None, calibration_info: dict[str, Any] | None, work: Path
) -> tuple[dict[str, Any] | None, dict[str, str] | None]:
    """(the precision's metrics, or None; its ``failed`` entry, or None when delivered)."""
    target = job.request.output_dir / f"model_{precision}.tflite"
    int8_io = job.int8_io and precision == "int8"
    produced = _quantize(
        precision, job.tflite, target, calibration_file, job.boundary.signature_key, job.options, work, int8_io
    )
    if "error" in produced:
        target.unlink(missing_ok=True)
        return None, {"code": StageCode.QUANTIZATION_FAILED, "reason": produced["error"]}
    entry, failure = _validate(job, precision, target)
    size = target.stat().st_size
    entry.update(
        {
            "quantizer": {
                "library": "ai-edge-quantizer",
                "version": version("ai-edge-quantizer"),
                "recipe": produced["recipe"],
            },
            "calibration": calibration_info
            if precision == "int8"
            else {"source": "none", "samples": 0, "note": "this recipe needs no calibration"},
            "size_bytes": size,
            "size_ratio_vs_float32": round(size / job.tflite.stat().st_size, 4),
            "quantize_seconds": produced["wall_seconds"],
            "seconds": round(produced["wall_seconds"] + entry["seconds"], 3),
        }
    )
    gaps = int8_io_gaps(job.boundary, entry["signature"]) if int8_io else []
    if gaps:
        entry.setdefault("warnings", []).extend(gaps)
    if entry["size_ratio_vs_float32"] > 0.95:
        entry.setdefault("warnings", []).append(
            "the file is barely smaller than the float32 one: the recipe found few weights to quantize"
        )
    if failure is not None:
        target.unlink(missing_ok=True)  # never delivered: it does not run in stock LiteRT
    return entry, failure


def _quantize(
    precision: str,
    source: Path,
    target: Path,
    calibration_file: Path | None,
    signature_key: str | None,
    options: QuantizeOptions,
    work: Path,
    int8_io: bool = False,
) -> dict[str, Any]:
    """``{"recipe", "wall_seconds", ...}`` from the child, or ``{"error": reason}``."""
    report_path = work / f"{precision}.json"
    job = {
        "float_model": str(source),
        "precision": precision,
        "output": str(target),
        "report": str(report_path),
        "calibration": str(calibration_file) if calibration_file else None,
        "signature_key": signature_key or "serving_default",
        "threads": int(options.threads or 1),
        "int8_io": int8_io,
    }
    child = run_child(
        "stages.quantize.child",
        job,
        work / f"{precision}.job.json",
        float(options.quantizer_timeout_seconds or QUANTIZER_TIMEOUT),
        env={"TQDM_DISABLE": "1"},  # calibration progress bars would fill the log
        label=f"quantize.{precision}",
    )
    if child.code is None:
        return {"error": "the quantizer timed out"}
    if child.signal is not None:
        return {"error": f"the quantizer crashed with signal {child.signal}"}
    if child.code != 0 or not report_path.is_file() or not target.is_file():
        return {"error": f"ai-edge-quantizer failed: {_last_error(child.log)}"}
    report: dict[str, Any] = json.loads(report_path.read_text())
    report["wall_seconds"] = round(child.seconds, 3)
    return report


def _validate(job: _Job, precision: str, target: Path) -> tuple[dict[str, Any], dict[str, str] | None]:
    """(the precision's metrics, its ``failed`` entry when the runtime refused it)."""
    from stages.kit.tflite_ops import operators

    started = time.monotonic()
    ops = operators(target)
    report = ChildReport()
    actual: dict[str, Any] | None = None
    failure: str | None = None
    if ops["flex"]:
        failure = f"requires_flex: the file uses Select-TF ops {ops['flex']}, which stock ai-edge-litert cannot run"
    else:
        ran = _run_runtime(job.runtime, target, job.samples_path, job.input_names, list(job.reference))
        report, actual, failure = ran.report, ran.outputs, ran.failure
    entry = judge(precision, job.reference, actual or {}, job.spec)
    if failure:
        entry["verdict"] = "fail"
        entry["reasons"] = [*entry["reasons"], failure] if actual is not None else [failure]
    entry.update(
        {
            "advisory": precision in ADVISORY,
            "vs_float32": judge(precision, job.float_outputs, actual, job.spec)
            if job.float_outputs and actual
            else None,
            "operators": {"builtin": ops["builtin"], "flex": ops["flex"], "custom": ops["custom"]},
            "operator_counts": ops["counts"],
            "transpose_count": ops["transpose_count"],
            "requires_flex": bool(ops["flex"]),
            "signature": describe(target),
            "latency_ms": report.latency_ms,
            "precision": precision,
            "toolchain": "ai-edge-quantizer",
            "seconds": round(time.monotonic() - started, 3),
        }
    )
    if failure is None:
        return entry, None
    code = (
        StageCode.RUNTIME_CRASHED
        if report.crashed
        else StageCode.REQUIRES_FLEX
        if ops["flex"]
        else StageCode.RUNTIME_FAILED
    )
    return entry, {"code": code, "reason": failure}


def _last_error(log: str, limit: int = 500) -> str:
    lines = [line.strip() for line in log.splitlines() if line.strip()]
    line = next((line for line in reversed(lines) if "Error" in line.split(":")[0]), lines[-1] if lines else "")
    line = line or "no output"
    return line if len(line) <= limit else line[: limit - 3] + "..."


def _run_runtime(
    options: RuntimeOptions, tflite: Path, samples: Path, input_names: list[str], output_names: list[str]
) -> RuntimeRun:
    with tempfile.TemporaryDirectory(prefix="litert-") as work_dir:
        return run_litert(options.job(tflite, samples, input_names, output_names), Path(work_dir))
