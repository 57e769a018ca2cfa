"""onnx2tf's SavedModel, for jobs whose targets include ``saved_model`` (onnx2tf env).

onnx2tf 2.6.9's ``flatbuffer_direct`` backend exports a SavedModel from the same ModelIR
it writes the .tflite from, with ``-fdosm`` (``--flatbuffer_direct_output_saved_model``,
float32; needs TensorFlow, pinned in locks/onnx2tf.in). Only those jobs pass the flag
and import TensorFlow here; a job without the target never does.

That SavedModel has the boundary of onnx2tf's raw .tflite: the ModelIR's tensor names
and, for some outputs, channel-last layout. ``stages.convert.onnx2tf_boundary.plan``
has already worked out, for the .tflite, which outputs to transpose and which names to
restore; the same plan is applied here by wrapping the SavedModel in a new
``serving_default`` (inputs named as in the spec, outputs as the reference's stable
names, PyTorch's layout) - and then checked, not assumed: ``stages.kit.saved_model.validate``
runs every sample through that signature in TensorFlow against the PyTorch reference,
outputs' shapes included.

Artifacts are independent: when the run with ``-fdosm`` fails, onnx2tf runs again
without it for the .tflite, and the SavedModel's failure is recorded against the
SavedModel alone (``info.failed.saved_model = {code, reason}``), as is a SavedModel that
cannot be loaded, wrapped or mapped. A SavedModel that loads but misses the tolerance is
kept with its failing check, like any artifact.
"""

from __future__ import annotations

import os
import shutil
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from stages.convert.onnx2tf_boundary import Plan
from stages.convert.onnx2tf_launch import PATCHED
from stages.kit.codes import StageCode
from stages.kit.contract import StageError, StageRequest

FLAG = "-fdosm"  # --flatbuffer_direct_output_saved_model
LAUNCHER = "stages.convert.onnx2tf_launch"  # onnx2tf's CLI with the exporter's missing kernels
TARGET = "saved_model.zip"


def wanted(request: StageRequest) -> bool:
    """The job asks for a SavedModel, so this stage writes one."""
    return "saved_model" in request.spec.targets


def needed(request: StageRequest) -> bool:
    """onnx2tf runs with ``FLAG``: the job asks for the SavedModel, or for TensorFlow's int8
    file, which is quantized from it (``stages.convert.tf_ptq``)."""
    from stages.convert import tf_ptq

    return wanted(request) or tf_ptq.wanted(request)


@dataclass
class SavedModelResult:
    """What the stage adds for the SavedModel: its output, its check, its info and, when
    it could not be made, ``failed = {"saved_model": {code, reason}}``."""

    outputs: dict[str, str] = field(default_factory=dict)
    metrics: dict[str, Any] = field(default_factory=dict)
    info: dict[str, Any] = field(default_factory=dict)
    failed: dict[str, dict[str, str]] = field(default_factory=dict)
    directory: Path | None = None  # the SavedModel on disk (until the stage's work folder goes)


def convert(
    work: Path, arguments: list[str], run_onnx2tf: Callable[[Path, list[str], str], str]
) -> tuple[str, str | None]:
    """Run onnx2tf with ``-fdosm`` added (through ``LAUNCHER``, which adds the exporter's
    missing kernels); when that run fails, again without it.

    Returns ``(log, saved_model_error)``: the error is None when the SavedModel run
    succeeded. A failure of the second run (the .tflite's) raises as it would have.
    """
    try:
        return run_onnx2tf(work, [*arguments, FLAG], LAUNCHER), None
    except StageError as exc:
        first = exc.message
    shutil.rmtree(work / "out", ignore_errors=True)
    print(f"onnx2tf with {FLAG} failed ({first}); converting again without the SavedModel", flush=True)
    return run_onnx2tf(work, arguments, "onnx2tf"), first


def collect(
    out: Path,
    plan: Plan,
    samples: dict[str, Any],
    reference: dict[str, Any],
    tolerance: float,
    output_dir: Path,
    run_error: str | None,
    probes_from: Path | None = None,
) -> SavedModelResult:
    """The SavedModel onnx2tf wrote under ``out``, given PyTorch's boundary, validated (at
    the probe sizes of ``probes_from`` too, ``stages.kit.saved_model.validate``) and zipped
    into ``output_dir/saved_model.zip``; a failure is recorded, never raised."""
    result = SavedModelResult()
    if run_error is not None:
        result.failed["saved_model"] = {
            "code": str(StageCode.CONVERSION_FAILED),
            "reason": f"onnx2tf could not write the SavedModel ({FLAG}): {run_error}",
        }
        return result
    started = time.monotonic()
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # before the import: TF's start-up chatter
    try:
        raw = _find(out)
        final = out.parent / "saved_model_final"
        rewrite = _wrap(raw, final, plan, samples, reference)
        from stages.kit import saved_model as saved_model_kit

        check, signature = saved_model_kit.validate(
            final if rewrite else raw, samples, reference, tolerance, plan.input_transposes, probes_from
        )
        saved_model_kit.zip_dir(final if rewrite else raw, output_dir / TARGET)
    except StageError as exc:
        result.failed["saved_model"] = {"code": str(exc.code), "reason": exc.message}
        return result
    except Exception as exc:  # TensorFlow raises anything while loading or re-tracing a graph
        traceback.print_exc()
        result.failed["saved_model"] = {
            "code": str(StageCode.CONVERSION_FAILED),
            "reason": f"onnx2tf's SavedModel cannot be used: {type(exc).__name__}: {_first_line(exc)}",
        }
        return result
    import tensorflow as tf

    check["seconds"] = round(time.monotonic() - started, 3)
    result.outputs["saved_model"] = TARGET
    result.metrics["saved_model"] = check
    result.directory = final if rewrite else raw
    result.info = {
        "tensorflow": tf.__version__,
        "flag": FLAG,
        "launcher": {"module": LAUNCHER, "exporter_kernels_patched": list(PATCHED)},
        "signature": signature,
        "signature_rewrite": rewrite,
    }
    return result


def for_int8(out: Path, plan: Plan, samples: dict[str, Any], reference: dict[str, Any]) -> Path:
    """The SavedModel onnx2tf wrote under ``out`` with PyTorch's boundary, for a job that asks
    for int8 and not for the SavedModel: wrapped as ``collect`` does, not validated, not
    zipped (the int8 file made from it is judged by ``quantize.litert``). Raises what
    TensorFlow raises, and ``StageError`` when onnx2tf wrote none."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    raw = _find(out)
    final = out.parent / "saved_model_final"
    return final if _wrap(raw, final, plan, samples, reference) else raw


def _find(out: Path) -> Path:
    found = sorted(path.parent for path in out.rglob("saved_model.pb"))
    if not found:
        raise StageError(StageCode.CONVERSION_FAILED, f"onnx2tf ran with {FLAG} but wrote no saved_model.pb")
    return found[0]


def _wrap(
    raw: Path, final: Path, plan: Plan, samples: dict[str, Any], reference: dict[str, Any]
) -> dict[str, Any] | None:
    """Save ``raw`` again under ``final`` with a ``serving_default`` that takes the spec's
    input names and returns the reference's output names in PyTorch's layout, using the
    .tflite's boundary plan; None (nothing written) when ``raw`` already has that boundary."""
    import tensorflow as tf

    from stages.kit.naming import match_names

    loaded = tf.saved_model.load(str(raw))
    inner = loaded.signatures["serving_default"]
    specs: dict[str, Any] = inner.structured_input_signature[1]
    in_map, in_left = match_names(list(samples), list(specs))
    out_map, out_left = match_names(list(reference), list(inner.structured_outputs))
    if in_left or out_left:
        raise StageError(
            StageCode.CONVERSION_FAILED,
            f"onnx2tf's SavedModel signature ({sorted(specs)} -> {list(inner.structured_outputs)}) does not "
            f"match the model's inputs {list(samples)} / outputs {list(reference)}",
        )
    # The .tflite's plan is keyed by the raw file's names; by stable name it holds for the SavedModel too.
    in_perms = {name: plan.input_perms[key] for name, key in plan.input_map.items() if key in plan.input_perms}
    out_perms = {name: plan.output_perms[key] for name, key in plan.output_map.items() if key in plan.output_perms}
    renamed = {key: name for name, key in {**in_map, **out_map}.items() if key != name}
    if not (in_perms or out_perms or renamed):
        return None

    def public(name: str) -> tf.TensorSpec:
        spec = specs[in_map[name]]
        dims = spec.shape.as_list()
        if name in in_perms:  # the file takes transpose(public, perm): invert it
            dims = [dims[in_perms[name].index(axis)] for axis in range(len(dims))]
        return tf.TensorSpec(dims, spec.dtype, name=name)

    names = list(in_map)

    @tf.function(input_signature=[public(name) for name in names])
    def serve(*args: Any) -> dict[str, Any]:
        feed = {}
        for name, value in zip(names, args, strict=True):
            feed[in_map[name]] = tf.transpose(value, in_perms[name]) if name in in_perms else value
        result = inner(**feed)
        return {
            name: tf.transpose(result[key], out_perms[name]) if name in out_perms else result[key]
            for name, key in out_map.items()
        }

    module = tf.Module()
    module.inner = loaded
    module.serve = serve
    tf.saved_model.save(module, str(final), signatures={"serving_default": serve})
    return {"renamed": renamed, "input_transposes": in_perms, "output_transposes": out_perms}


def _first_line(exc: BaseException, limit: int = 300) -> str:
    text = next((line.strip() for line in str(exc).splitlines() if line.strip()), "")
    return text if len(text) <= limit else text[: limit - 3] + "..."
