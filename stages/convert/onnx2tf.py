"""Stage ``convert.onnx2tf`` (onnx2tf env): ONNX -> float32 TFLite (and a SavedModel when asked).

Inputs: ``onnx``, ``samples``, ``reference`` (from ``export.prepare``). Output:
``tflite_float32``, and ``saved_model`` when the job's targets include it
(``stages.convert.onnx2tf_saved_model``: only then is TensorFlow imported). With the
stage option ``tf_ptq`` (the job asks for int8; optional input ``calibration``) onnx2tf
writes the SavedModel too, and ``tflite_int8_tf_ptq`` is TensorFlow's full-integer
quantization of it (``stages.convert.tf_ptq``; ``info.tf_ptq``, a failure never the
stage's); without the ``saved_model`` target that SavedModel is neither validated nor
delivered. onnx2tf 2.6.9's default backend (``flatbuffer_direct``) writes the .tflite itself, builtin ops
only. Its float16
twin is not kept (see ``FLOAT16_NOT_KEPT``); nor is int8, which 2.6.9 gets wrong.

How onnx2tf is driven, and why (verified with 2.6.9):

- As ``python -m onnx2tf`` in a fork of the stage process (``stages.kit.forked_cli``),
  one fork per attempt: it is chatty, calls ``sys.exit`` on errors, keeps module globals
  and runs ``onnxsim`` as a subprocess found on PATH (so the environment's ``bin`` goes
  first on the fork's PATH). A fork, not a fresh interpreter, so that what the warm
  parent preloaded (``worker.warm.PRELOAD``: onnx2tf's converter, TensorFlow for
  ``-fdosm``) is not imported again on every job. Its output goes to the stage log; a
  failure is ``conversion_failed`` with its last error line.
- On a copy of the ONNX file: it rewrites its input in place (onnxsim, op names).
- With ``-k`` (keep_ncw_or_nchw_or_ncdhw_input_names) for every 3-D to 5-D input, as
  it would otherwise move them channel-last; with ``layout: nhwc`` the 4-D inputs are
  left out, so they become NHWC (its default), and only they.
- Without ``-rtpo``: exact GELU becomes the builtin GELU op and a lone Erf a builtin
  polynomial. Where no builtin exists it quietly retries with custom ops
  (``ONNX_<OP>``) that no stock runtime runs, which is ``conversion_failed`` here.
- Nothing needs the network (no calibration download on the float32 path).

Outputs keep PyTorch's layout and every name its stable form: onnx2tf leaves some
outputs channel-last, so ``stages.convert.onnx2tf_boundary`` plans a TRANSPOSE where needed and
``stages.kit.tflite_boundary`` adds it to the file; then every sample runs through the file
in ai-edge-litert as a sanity check (``info.sanity_check``, numbers only - the verdict
is ``validate.tflite``'s; a builtin-only file the runtime cannot run at all is
``conversion_failed`` here - unless a SavedModel was asked for and written: then the stage
keeps it and records the .tflite's failure as ``info.failed.tflite_float32``, as
``convert.onnx_tf`` does). ``info.signature.input_transposes`` gives, per input, the
permutation that turns a PyTorch-layout sample into what the file takes (``[0, 2, 3,
1]`` for a 4-D input with ``layout: nhwc``).
"""

from __future__ import annotations

import os
import re
import shutil
import sys
import tempfile
import time
import traceback
from pathlib import Path
from typing import Any

from stages.convert import onnx2tf_boundary as boundary
from stages.convert import onnx2tf_retry as retry
from stages.convert import onnx2tf_saved_model
from stages.kit import forked_cli
from stages.kit import samples as sample_io
from stages.kit import tflite_boundary as boundary_io
from stages.kit.child import signal_name
from stages.kit.codes import StageCode
from stages.kit.contract import StageError, StageRequest, StageResult
from stages.kit.results import TF_PTQ
from stages.kit.versions import versions

LAYOUTS = ("nchw", "nhwc")
ANSI = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")
ADVICE = (
    "An unsupported operator or dynamic shape usually needs another opset or toolchain "
    "(e.g. onnx-tf), or a model change that avoids it; the stage log has onnx2tf's output"
)
FLOAT16_NOT_KEPT = (
    "onnx2tf also writes a float16 file, which computes in float16 end to end (float16 inputs "
    "and outputs); stock LiteRT's kernels refuse float16 tensors, so it runs only where XNNPACK "
    "takes every operator (resnet18 fails on MAX_POOL_2D). Not kept"
)


def run(request: StageRequest) -> StageResult:
    layout = request.spec.layout
    if layout not in LAYOUTS:
        raise StageError(StageCode.INVALID_SPEC, f"layout must be one of {list(LAYOUTS)}, got {layout!r}")
    tolerance = request.spec.tolerance["float32"]
    samples = sample_io.load(request.input_path("samples"))
    reference = sample_io.load(request.input_path("reference"))
    target = request.output_dir / "model_float32.tflite"
    work = Path(tempfile.mkdtemp(prefix="onnx2tf-", dir=request.output_dir))
    try:
        # Every sample through the file; a miss is converted once more without onnxsim.
        winner, attempts = retry.run_attempts(
            lambda name, flags: _attempt(request, work / name, name, flags, samples, reference, tolerance)
        )
        assert winner.target is not None  # a winner was converted
        shutil.copyfile(winner.target, target)
        arguments, keep, opset, plan, log, tool_seconds, check_seconds, saved_model_error = winner.details
        sanity = winner.check
        saved_model = onnx2tf_saved_model.SavedModelResult()
        int8_outputs: dict[str, str] = {}
        int8: dict[str, Any] | None = None
        if onnx2tf_saved_model.wanted(request):
            started = time.monotonic()
            saved_model = onnx2tf_saved_model.collect(
                winner.target.parent / "out",
                plan,
                samples,
                reference,
                tolerance,
                request.output_dir,
                saved_model_error,
                probes_from=request.input_path("reference"),
            )
            check_seconds += time.monotonic() - started
        int8_outputs, int8 = _tf_ptq(
            request, winner.target.parent / "out", plan, samples, reference, saved_model, saved_model_error
        )
    finally:
        shutil.rmtree(work, ignore_errors=True)

    from stages.kit.tflite_ops import operators

    requires_flex = bool(operators(target)["flex"])
    unrunnable = None
    if not sanity["ran"] and not requires_flex:
        # A builtin-only file that stock LiteRT cannot run is no candidate: say so here,
        # with the runtime's words, rather than hand it on to fail validation.
        unrunnable = StageError(
            StageCode.CONVERSION_FAILED,
            f"onnx2tf wrote a .tflite that stock LiteRT cannot run: {sanity['reason']}. "
            "A static input shape (no named dynamic dimension) or another toolchain may avoid it",
        )
        if not saved_model.outputs:
            # The stage fails for both artifacts: the SavedModel's own reason, when asked for, too.
            why = saved_model.failed.get("saved_model")
            if why:
                raise StageError(unrunnable.code, f"{unrunnable.message}. The SavedModel: {why['reason']}")
            raise unrunnable
    final = boundary_io.read(target)
    info: dict[str, Any] = {
        "versions": versions(
            "onnx2tf", "onnx", "onnxruntime", "onnxsim", "numpy", "ai-edge-litert", "flatbuffers", python=True
        ),
        "converter": {
            "tool": "onnx2tf",
            "backend": "flatbuffer_direct (onnx2tf's default; no TensorFlow)",
            "command": ["python", "-m", "onnx2tf", *arguments],
            "process": "a fork of the stage process, run as python -m (stages.kit.forked_cli)",
            # Which attempt's file this is (stages.convert.onnx2tf_retry; info.attempts has both).
            "attempt": winner.name,
            "environment": {"PATH": "<env>/bin first (onnx2tf runs onnxsim from it)", "TQDM_DISABLE": "1"},
            "keep_ncw_or_nchw_or_ncdhw_input_names": keep,
            "onnx_opset": opset,
            "boundary_rewrite": {
                "input_transposes": plan.input_perms,
                "output_transposes": plan.output_perms,
                "renamed": plan.renames,
                "layout_resolved_by_values": plan.resolved_by_values,
            },
        },
        "requires_flex": requires_flex,
        "layout": layout,
        "signature": {
            "signature_key": final.signature_key,
            "inputs": {port.key: port.to_json() for port in final.inputs},
            "outputs": [port.key for port in final.outputs],
            "output_shapes": {port.key: port.shape for port in final.outputs},
            "input_map": {name: name for name in plan.input_map},
            "output_map": {name: name for name in plan.output_map},
            "input_transposes": plan.input_transposes,
        },
        "sanity_check": sanity,
        **retry.attempts_info(winner, attempts),
        "warnings": _warnings(log),
        "float16": FLOAT16_NOT_KEPT,
        "saved_model": saved_model.info or None,
        TF_PTQ: int8,  # the entry ConvertInfo reads (stages.kit.results)
        "failed": saved_model.failed,
        "seconds": {"onnx2tf": round(tool_seconds, 3), "boundary_and_sanity_check": round(check_seconds, 3)},
    }
    outputs = {"tflite_float32": target.name, **saved_model.outputs, **int8_outputs}
    if unrunnable is not None:
        # Artifacts are independent (issue 9, item 2): the SavedModel stands on its own check;
        # the .tflite's failure is recorded against the .tflite (selection.tflite_failure).
        target.unlink()
        del outputs["tflite_float32"]
        info["failed"] = {
            **saved_model.failed,
            "tflite_float32": {"code": str(unrunnable.code), "reason": unrunnable.message},
        }
    return StageResult(outputs=outputs, metrics=saved_model.metrics, info=info)


def _attempt(
    request: StageRequest,
    work: Path,
    name: str,
    flags: list[str],
    samples: dict[str, Any],
    reference: dict[str, Any],
    tolerance: float,
) -> retry.Attempt:
    """One onnx2tf run with ``flags`` added, in ``work``: the file with its boundary
    rewritten, checked on every sample (``stages.convert.onnx2tf_retry``)."""
    layout = request.spec.layout
    work.mkdir(parents=True)
    model = work / "model.onnx"
    # onnx2tf rewrites the file it is given (onnxsim, op names): never the caller's.
    shutil.copyfile(request.input_path("onnx"), model)
    onnx_inputs, opset = _onnx_inputs(model)
    keep = [name for name, rank in onnx_inputs.items() if rank in (3, 5) or (rank == 4 and layout == "nchw")]
    arguments = ["-i", model.name, "-o", "out", "-v", "info", *(["-k", *keep] if keep else []), *flags]
    started = time.monotonic()
    if onnx2tf_saved_model.needed(request):
        log, saved_model_error = onnx2tf_saved_model.convert(work, arguments, _run_onnx2tf)
    else:
        log, saved_model_error = _run_onnx2tf(work, arguments), None
    tool_seconds = time.monotonic() - started

    raw = work / "out" / "model_float32.tflite"
    target = work / "model_float32.tflite"
    started = time.monotonic()
    try:
        _refuse_custom_ops(raw, log)
        plan = boundary.plan(raw, samples, reference, layout, work)
        boundary_io.rewrite(
            raw, target, input_perms=plan.input_perms, output_perms=plan.output_perms, renames=plan.renames
        )
    except (ValueError, IndexError) as exc:  # a flatbuffer this stage cannot read or edit
        traceback.print_exc()
        raise StageError(
            StageCode.CONVERSION_FAILED, f"the .tflite onnx2tf wrote cannot be used: {type(exc).__name__}: {exc}"
        ) from None
    check = retry.check_all(target, samples, reference, plan, tolerance, work)
    check_seconds = time.monotonic() - started
    details = (arguments, keep, opset, plan, log, tool_seconds, check_seconds, saved_model_error)
    return retry.Attempt(name, flags, target=target, check=check, details=details)


def _tf_ptq(
    request: StageRequest,
    out: Path,
    plan: boundary.Plan,
    samples: dict[str, Any],
    reference: dict[str, Any],
    saved_model: onnx2tf_saved_model.SavedModelResult,
    run_error: str | None,
) -> tuple[dict[str, str], dict[str, Any] | None]:
    """TensorFlow's int8 file from onnx2tf's SavedModel when the plan asks for it
    (``stages.convert.tf_ptq``): (outputs, ``info.tf_ptq``); a failure is the entry's error."""
    from stages.convert import tf_ptq

    if not tf_ptq.wanted(request):
        return {}, None
    directory, reason = saved_model.directory, None
    if run_error is not None:
        reason = f"onnx2tf could not write the SavedModel ({onnx2tf_saved_model.FLAG}): {run_error}"
    elif directory is None and "saved_model" in saved_model.failed:
        reason = f"onnx2tf's SavedModel: {saved_model.failed['saved_model']['reason']}"
    elif directory is None:
        try:
            directory = onnx2tf_saved_model.for_int8(out, plan, samples, reference)
        except Exception as exc:  # TensorFlow raises anything while loading or re-tracing a graph
            traceback.print_exc()
            reason = f"onnx2tf's SavedModel cannot be used: {type(exc).__name__}: {str(exc).strip()[:300]}"
    if directory is None:
        return {}, tf_ptq.entry(reason)
    return tf_ptq.produce(request, directory, samples, plan.input_transposes)


def _onnx_inputs(path: Path) -> tuple[dict[str, int], int | None]:
    """The graph's real inputs (not initializers) with their ranks, and the default-domain opset."""
    import onnx

    try:
        model = onnx.load(str(path), load_external_data=False)
    except Exception as exc:  # anything onnx cannot parse
        raise StageError(
            StageCode.CONVERSION_FAILED, f"the ONNX file cannot be read: {type(exc).__name__}: {exc}"
        ) from None
    initializers = {tensor.name for tensor in model.graph.initializer}
    inputs = {
        item.name: len(item.type.tensor_type.shape.dim) for item in model.graph.input if item.name not in initializers
    }
    opset = next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), None)
    return inputs, opset


def _run_onnx2tf(work: Path, arguments: list[str], module: str = "onnx2tf") -> str:
    """``python -m <module> *arguments`` in ``work``, run in a fork of this stage process
    (``stages.kit.forked_cli``: what the warm parent preloaded is not imported again); its
    output, ANSI colours removed, is returned and printed to the stage log. Raises
    ``conversion_failed`` when a signal killed it, it exited non-zero or wrote no .tflite."""
    env = {
        "PATH": os.pathsep.join(p for p in (str(Path(sys.executable).parent), os.environ.get("PATH")) if p),
        "TQDM_DISABLE": "1",  # progress bars would fill the log with carriage returns
    }
    log_path = work / "onnx2tf.log"
    returncode = forked_cli.run_module(module, arguments, work, env, log_path)
    log = ANSI.sub("", log_path.read_text(errors="replace"))
    print(log, flush=True)
    if returncode < 0:
        raise StageError(
            StageCode.CONVERSION_FAILED, f"onnx2tf was killed by signal {signal_name(-returncode)}. {ADVICE}"
        )
    if returncode != 0 or not (work / "out" / "model_float32.tflite").is_file():
        raise StageError(
            StageCode.CONVERSION_FAILED,
            f"onnx2tf could not convert the model (exit {returncode}): {_last_error(log)}. {ADVICE}",
        )
    return log


def _refuse_custom_ops(tflite: Path, log: str) -> None:
    # Without a builtin, onnx2tf quietly retries with custom ops that no stock runtime has.
    from stages.kit.tflite_ops import operators

    custom = operators(tflite)["custom"]
    if not custom:
        return
    lowered = re.findall(r"Custom ops lowered:.*?onnx_ops=\[([^\]]*)\]", log)
    onnx_ops = ", ".join(lowered) or ", ".join(custom)
    raise StageError(
        StageCode.CONVERSION_FAILED,
        f"onnx2tf has no TFLite builtin for the ONNX operator(s) {onnx_ops} and wrote custom ops "
        f"{custom} instead, which stock LiteRT cannot run. Try the onnx-tf toolchain, or change "
        "the model to avoid those operators",
    )


def _warnings(log: str) -> list[str]:
    found = []
    if "Failed to optimize the onnx file" in log:
        found.append("onnxsim failed on this model; onnx2tf converted it unsimplified (see the stage log)")
    return found


def _last_error(log: str, limit: int = 500) -> str:
    """The line that names the failure: onnx2tf's last ``ERROR:``, else a traceback's last line."""
    lines = [line.strip() for line in log.splitlines() if line.strip()]
    pattern = re.compile(r"^(ERROR:|[\w.]*(Error|Exception|Exit)\b)")
    line = next((line for line in reversed(lines) if pattern.match(line)), lines[-1] if lines else "no output")
    return line if len(line) <= limit else line[: limit - 3] + "..."
