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
``info.boundary_quantization`` lists those parameters. A dimension the spec names but the
file fixes (``stages.kit.dims``) is listed in ``frozen_dims`` and said in the reasons,
without changing the verdict (the numbers stand; ``domain.jobs.selection`` ranks it lower).
Then the file runs at a second size of every named dimension (``stages.validate.probing``;
``probes``, ``sample_shapes``): a failure or a miss there fails the file.
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path
from typing import Any

from stages.kit import samples as sample_io
from stages.kit.child import ChildReport, run_litert
from stages.kit.codes import StageCode
from stages.kit.contract import StageError, StageRequest, StageResult
from stages.kit.dims import frozen_dims, frozen_reasons
from stages.kit.metrics import compare
from stages.kit.options import RuntimeOptions, read_options
from stages.kit.versions import versions
from stages.validate.probing import run_probes

DEFAULT_TOLERANCES = {"float32": 1e-4, "float16": 1e-2, "dynamic_range": 1e-1, "int8": 1e-1}


def run(request: StageRequest) -> StageResult:
    from stages.kit.tflite_ops import operators

    spec = request.spec
    options = read_options(RuntimeOptions, request.options)
    precision = options.precision
    tolerance = float(options.tolerance or spec.tolerance_for(precision) or DEFAULT_TOLERANCES.get(precision, 1e-4))
    tflite = request.input_path("tflite")
    reference = sample_io.load(request.input_path("reference"))
    samples_path = request.input_path("samples")
    input_names = [item.name for item in spec.inputs] or list(sample_io.load(samples_path))

    try:
        ops = operators(tflite)
    except Exception as exc:  # a file that is not a flatbuffer at all
        raise StageError(
            StageCode.INVALID_TFLITE, f"{tflite.name} is not a readable .tflite flatbuffer: {exc}"
        ) from None
    requires_flex = bool(ops["flex"])

    runtime = options.runtime
    started = time.monotonic()
    report = ChildReport()
    actual: dict[str, Any] | None = None
    failure: str | None = None
    if requires_flex and runtime != "tensorflow":
        failure = (
            f"requires_flex: the file uses Select-TF ops {ops['flex']}, which stock "
            "ai-edge-litert cannot run (TensorFlow's interpreter is needed)"
        )
    else:
        with tempfile.TemporaryDirectory(prefix="litert-") as work_dir:
            job = options.job(tflite, samples_path, input_names, list(reference))
            ran = run_litert(job, Path(work_dir))
        report, actual, failure = ran.report, ran.outputs, ran.failure
    if actual is not None:
        result = compare(reference, actual, tolerance)
    else:
        result = compare(reference, {}, tolerance)
        result["reasons"] = [failure or "the runtime produced no outputs"]
    if failure and actual is not None:
        # Outputs came back, but the run died later (during the latency runs).
        result["verdict"] = "fail"
        result["reasons"].append(failure)
    # A declared dynamic dimension the file fixes: the numbers stand, the reasons say it.
    frozen = frozen_dims(
        [{"name": item.name, "shape": list(item.shape)} for item in spec.inputs],
        report.tflite_inputs or {},
        report.input_map or {},
        options.input_transposes,
    )
    probed: list[dict[str, Any]] = []
    if actual is not None and not failure:
        # The other sizes of every named dimension (stages.validate.probing): a miss fails.
        probed, missed = run_probes(tflite, request.input_path("reference"), options, input_names, tolerance, frozen)
        if missed:
            result["verdict"] = "fail"
            result["reasons"] = [*result["reasons"], *missed]
    result["reasons"] = [*result["reasons"], *frozen_reasons(frozen)]
    base_shapes = {name: [int(d) for d in value.shape[1:]] for name, value in sample_io.load(samples_path).items()}
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
            "latency_ms": report.latency_ms,
            # Every file: a named dynamic batch resized to 2 and matched the one-by-one run, or fixed.
            "dynamic_batch": report.dynamic_batch,
            "frozen_dims": frozen,
            # Every input shape the file ran at: the samples', then each probe's.
            "sample_shapes": [base_shapes, *(p["shapes"] for p in probed if p.get("ran"))],
            "probes": probed,
            "requires_flex": requires_flex,
            "precision": precision,
        }
    )
    return StageResult(
        outputs={},
        metrics={f"tflite_{precision}": result},
        info={
            "runtime": _runtime_name(runtime, options.xnnpack),
            "operators_source": "flatbuffer via the runtime's schema_py_generated",
            "versions": versions(
                *(("tensorflow-cpu",) if runtime == "tensorflow" else ("ai-edge-litert",)), "numpy", "flatbuffers"
            ),
            "signature_key": report.signature_key,
            "tflite_inputs": report.tflite_inputs,
            "tflite_outputs": report.tflite_outputs,
            "input_map": report.input_map,
            "output_map": report.output_map,
            "crashed": report.crashed,
            "boundary_quantization": report.boundary_quantization,
        },
    )


def _runtime_name(runtime: str, xnnpack: bool) -> str:
    kernels = "XNNPACK delegate (default)" if xnnpack else "reference kernels (no XNNPACK)"
    if runtime == "tensorflow":
        return f"TensorFlow tf.lite Interpreter with the flex delegate (Select-TF ops), {kernels}"
    return f"ai-edge-litert Interpreter, builtin ops, no flex delegate, {kernels}"
