"""Stage ``quantize.litert`` (torch env): quantized .tflite files from the candidates' float32 ones.

Inputs: ``tflite`` (the float32 file that won, from any toolchain), ``tflite_<candidate>``
(every candidate's float32 file, named in the ``sources`` option), ``samples``,
``reference``, optional ``calibration`` (the upload), optional ``tflite_int8_<variant>_<candidate>``
(``tflite_int8_<variant>`` beside the lone ``tflite``): an int8 file of that candidate's model
made by its convert stage (``stages.quantize.prebuilt``: ``pt2e``, litert-torch's PT2E file
from the PyTorch module; ``tf_ptq``, TensorFlow's full-integer quantization of onnx-tf's or
onnx2tf's SavedModel), one more int8 attempt on that source, judged like the others.
Options: ``sources`` (the float32 files to try, in selection order: ``{"input",
"candidate", "passed", "input_transposes"}``, and ``prebuilt_errors`` (variant -> why the
convert stage could not make that file: a failed attempt) and ``prebuilt_versions``
(variant -> its quantizer's version); without it the ``tflite`` input alone), ``precisions`` (any of
``dynamic_range``, ``float16``, ``int8``), ``threads``, and as for ``validate.tflite``:
``runs``, ``warmup``, ``threads_all``, ``xnnpack``, ``timeout_seconds``,
``input_transposes`` (inferred for channel-last files when not given);
``calibration_limit`` (default 500 samples), ``quantizer_timeout_seconds`` (1800).
From the spec: ``int8_io`` (default false).

Per precision, every source file in turn, and for int8 two recipes per file (and the
prebuilt files where the source has them, in ``attempts.INT8_ORDER``), until one passes
(all of them under ``toolchain: best``; ``stages.quantize.attempts`` keeps the best and
lists every attempt in ``info.attempts`` and the kept file's ``attempts``). Each attempt:
ai-edge-quantizer writes the file in a child process (``stages.quantize.child``; recipes
there; a prebuilt file's attempt copies it instead), then the file runs on the validation samples
in ai-edge-litert in another child (``validate.tflite``'s, so a runtime crash is that
precision's result) and is compared with the PyTorch reference and with the float32
file's own outputs (``stages.quantize.verdict``). The inputs and outputs stay float32,
except with ``int8_io``: the int8 file then takes and returns int8 tensors (one file,
still ``model_int8.tflite``); the runtime child quantizes the float samples with each
input's scale and zero point and dequantizes the outputs before they are compared, and
``signature`` in the metrics gives each port's dtype, scale and zero point
(``stages.quantize.int8_io``). A float port the quantizer left float is a warning.
A dynamic_range or int8 file that is ``degraded`` or ``fail`` is diagnosed: its metrics
and its attempt get ``error_sources``, the op outputs whose error against the float32 file
is largest, from both files' intermediate tensors on two samples
(``stages.quantize.error_sources``; a failure there is a reason, never the attempt's).

A precision that cannot be produced (``quantization_failed``), whose calibration file
does not fit (``invalid_calibration``), or that crashes or fails in the runtime
(``runtime_crashed`` / ``runtime_failed``) is listed in ``info.failed`` and left out of
the outputs; the stage itself fails only when the float32 file is unusable.
"""

from __future__ import annotations

import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from stages.kit import samples as sample_io
from stages.kit.codes import StageCode
from stages.kit.contract import StageError, StageRequest, StageResult
from stages.kit.options import QuantizeOptions
from stages.kit.versions import version, versions
from stages.quantize import attempts, calibration, prebuilt

PRECISIONS = ("dynamic_range", "float16", "int8")


def run(request: StageRequest) -> StageResult:
    spec, options = request.spec, QuantizeOptions.from_json(request.options)
    precisions, failed = _precisions(options.precisions)
    sources = options.sources or [{"input": "tflite", "candidate": None, "passed": True, "input_transposes": None}]
    samples_path = request.input_path("samples")
    shared = _Shared(request, options, samples_path, sample_io.load(samples_path))
    first = _prepare(shared, sources[0], primary=True)
    assert first is not None
    jobs: dict[int, attempts.Job | None] = {0: first}

    def source_jobs() -> Iterator[attempts.Job]:
        for index, source in enumerate(sources):
            if index not in jobs:
                jobs[index] = _prepare(shared, source, primary=False)
            job = jobs[index]
            if job is not None:
                yield job

    outputs: dict[str, str] = {}
    metrics: dict[str, Any] = {}
    tried: dict[str, list[dict[str, Any]]] = {}
    calibration_info: dict[str, Any] | None = None
    with tempfile.TemporaryDirectory(prefix="quantize-", dir=request.output_dir) as work_dir:
        work = Path(work_dir)

        def calibrate(job: attempts.Job) -> tuple[Path | None, dict[str, Any] | None]:
            return _calibration(shared, job, work)

        for precision in precisions:
            target = request.output_dir / f"model_{precision}.tflite"
            try:
                entry, failure, tried[precision] = attempts.best_of(
                    precision, source_jobs(), calibrate, target, work, spec.toolchain == "best"
                )
            except StageError as exc:  # the calibration file does not fit
                failed[precision] = {"code": exc.code, "reason": exc.message}
                continue
            if entry is not None:
                metrics[f"tflite_{precision}"] = entry
                calibration_info = entry["calibration"] if precision == "int8" else calibration_info
            if failure is not None:
                failed[precision] = failure
            elif entry is not None:
                outputs[f"tflite_{precision}"] = target.name
    warnings = list(first.warnings)
    if calibration_info and "warning" in calibration_info:
        warnings.append(calibration_info["warning"])
    return StageResult(
        outputs=outputs,
        metrics=metrics,
        info={
            "versions": versions("ai-edge-quantizer", "litert-torch", "ai-edge-litert", "numpy", "flatbuffers"),
            "failed": failed,
            "attempts": tried,
            "sources": [
                {"candidate": s.get("candidate"), "passed": s.get("passed"), "used": jobs.get(i) is not None}
                for i, s in enumerate(sources)
                if i in jobs
            ],
            "runtime": "ai-edge-litert "
            + (version("ai-edge-litert") or "?")
            + " Interpreter, builtin ops, no flex delegate, "
            + ("XNNPACK delegate (default)" if first.runtime.xnnpack else "reference kernels (no XNNPACK)"),
            "float32": first.float_info,
            "signature_key": first.boundary.signature_key,
            "input_map": first.keys,
            "input_transposes": {"value": first.transposes, "source": first.transposes_source},
            "calibration": calibration_info,
            "warnings": warnings,
        },
    )


@dataclass
class _Shared:
    """What every source file shares: the request, the samples, the calibration arrays."""

    request: StageRequest
    options: QuantizeOptions
    samples_path: Path
    samples: dict[str, Any]
    calibration: tuple[dict[str, Any], dict[str, Any]] | None = None


@dataclass
class _Prepared(attempts.Job):
    """A source's job, with what the stage's info reports of the first one."""

    warnings: list[str] = field(default_factory=list)
    float_info: dict[str, Any] = field(default_factory=dict)
    transposes_source: str = ""


def _prepare(shared: _Shared, source: dict[str, Any], primary: bool) -> _Prepared | None:
    """The job of one float32 source file; the first one's problems fail the stage (as before
    there were several), another's only drop it (None)."""
    from stages.kit.naming import match_names
    from stages.kit.tflite_boundary import read
    from stages.kit.tflite_ops import operators

    request, options = shared.request, shared.options
    tflite = request.optional_input(str(source["input"]))
    if tflite is None:
        if not primary:
            return None
        tflite = request.input_path("tflite")  # the chosen file, always there
    try:
        float_ops = operators(tflite)
        boundary = read(tflite)
    except Exception as exc:  # not a flatbuffer at all
        if not primary:
            return None
        raise StageError(
            StageCode.INVALID_TFLITE, f"{tflite.name} is not a readable .tflite flatbuffer: {exc}"
        ) from None
    reference = sample_io.load(request.input_path("reference"))
    input_names = [item.name for item in request.spec.inputs] or list(shared.samples)
    keys, unmatched = match_names(input_names, [port.key for port in boundary.inputs])
    if unmatched:
        if not primary:
            return None
        raise StageError(
            StageCode.INVALID_TFLITE,
            f"the .tflite inputs {[p.key for p in boundary.inputs]} do not match the model's {input_names}",
        )
    given = source.get("input_transposes") if source["input"] != "tflite" else options.runtime.input_transposes
    transposes, transposes_source = calibration.input_transposes(given, shared.samples, boundary, keys)
    runtime = replace(options.runtime, input_transposes=transposes)
    started = time.monotonic()
    float_run = attempts.run_runtime(runtime.once(), tflite, shared.samples_path, input_names, list(reference))
    warnings = []
    if float_run.failure:
        warnings.append(f"the float32 file did not run, so there is no vs_float32 comparison: {float_run.failure}")
    return _Prepared(
        request,
        tflite,
        boundary,
        keys,
        transposes,
        shared.samples_path,
        shared.samples,
        input_names,
        reference,
        float_run.outputs,
        runtime,
        options,
        request.spec.int8_io,
        source.get("candidate"),
        _prebuilt(request, str(source["input"])),
        {str(k): str(v) for k, v in (source.get("prebuilt_errors") or {}).items()},
        {str(k): str(v) for k, v in (source.get("prebuilt_versions") or {}).items()},
        warnings=warnings,
        float_info={
            "size_bytes": tflite.stat().st_size,
            "operators": {k: float_ops[k] for k in ("builtin", "flex", "custom")},
            "ran": float_run.outputs is not None,
            "seconds": round(time.monotonic() - started, 3),
        },
        transposes_source=transposes_source,
    )


def _prebuilt(request: StageRequest, float_input: str) -> dict[str, Path]:
    """The int8 files made elsewhere from the same model as float32 input ``float_input``, by
    variant: input ``tflite_int8_<variant>_<candidate>`` next to ``tflite_<candidate>``
    (``tflite_int8_<variant>`` next to the lone ``tflite``; ``prebuilt.input_name``)."""
    found = {name: request.optional_input(prebuilt.input_name(name, float_input)) for name in prebuilt.VARIANTS}
    return {variant: path for variant, path in found.items() if path is not None}


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


def _calibration(shared: _Shared, job: attempts.Job, work: Path) -> tuple[Path, dict[str, Any]]:
    """The calibration .npz in ``job``'s file layout (the arrays are made once)."""
    if shared.calibration is None:
        uploaded = shared.request.optional_input("calibration")
        limit = int(shared.options.calibration_limit or calibration.DEFAULT_LIMIT)
        shared.calibration = calibration.calibration_arrays(job.spec, uploaded, shared.samples, limit)
    arrays, info = shared.calibration
    fitted = calibration.to_file_inputs(arrays, job.boundary, job.keys, job.transposes)
    path = work / f"calibration-{job.candidate or 'chosen'}.npz"
    sample_io.save(path, fitted)
    return path, info
