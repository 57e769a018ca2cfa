"""Where a quantized file's error comes from: the op outputs that drift most from the float32 file.

For a ``dynamic_range`` or ``int8`` file whose verdict is ``degraded`` or ``fail``, both the
float32 source file and the quantized one run on the first ``SAMPLES`` validation samples in
ai-edge-litert with ``experimental_preserve_all_tensors`` and without XNNPACK (a delegate
owns the tensors inside its partitions, so they would not be readable). Every op output of
the quantized file (subgraph 0, QUANTIZE and DEQUANTIZE excepted: they only convert what
an earlier op computed) is matched by tensor name with the float32 file's tensor:
ai-edge-quantizer keeps the names of the tensors it quantizes. int8 tensors are
dequantized with their scale and zero point (per axis when they have several). This is
ai-edge-quantizer's own comparison (``Quantizer.validate`` / ``model_validator``: the same
interpreter options, the same name matching); it is done here because that one gives one
number per tensor (mean squared error or median diff ratio) and no op type, and a mean over
a whole tensor hides what it must find: a channel crushed by a step larger than its range.

Per compared op output (``[S, *tensor shape]`` over the samples, float64):

- ``max_abs_error_of_scale``: max |quantized - float32| / max |float32|;
- ``cosine``: the smallest per-sample cosine similarity;
- ``worst_channel``: on axis 1 and the last axis of tensors of rank >= 3 (NCHW or NHWC:
  which one is not known), the last axis of rank-2 ones, the channel whose max abs error is
  the largest share of its own float32 range (``max_abs_error_of_range``); channels with
  fewer than ``MIN_VALUES`` values or a range under ``MIN_RANGE_SHARE`` of the tensor's
  scale are not judged (a dead channel is not evidence; the output verdict's thresholds,
  ``stages.quantize.channels``);
- ``step``: the int8 tensor's quantization scale (None for a float tensor).

The ops are ranked by ``worst_channel.max_abs_error_of_range`` (``max_abs_error_of_scale``
where no channel is judged), largest first, and the first ``TOP`` are reported. A tensor
that cannot be matched (absent from the float32 file, another shape) is counted in
``unmatched``, never an error. The diagnostic runs in a child process
(``python -m stages.quantize.error_sources <job.json>``) and never fails the attempt: any
failure (a crash, a timeout, a mapping it cannot make) is a ``reason`` and no ``ops``.
"""

from __future__ import annotations

import json
import sys
import tempfile
import time
import traceback
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from stages.quantize.channels import MIN_RANGE_SHARE, MIN_VALUES

SAMPLES = 2
TOP = 5
TIMEOUT = 300.0
DIAGNOSED_PRECISIONS = ("dynamic_range", "int8")
DIAGNOSED_VERDICTS = ("degraded", "fail")
CONVERSIONS = frozenset({"QUANTIZE", "DEQUANTIZE"})
RANKED_BY = (
    "worst channel max abs error / that channel's float32 range (max abs error / the tensor's max |float32| "
    "where no channel is judged), largest first"
)


def wanted(precision: str, verdict: str | None) -> bool:
    """Whether a file of ``precision`` with ``verdict`` gets the diagnostic."""
    return precision in DIAGNOSED_PRECISIONS and verdict in DIAGNOSED_VERDICTS


def locate(
    float_file: Path,
    quantized: Path,
    samples: Path,
    input_names: list[str],
    transposes: dict[str, list[int]],
    timeout: float = TIMEOUT,
) -> dict[str, Any]:
    """``{"against", "samples", "compared", "unmatched", "ranked_by", "ops": [...]}`` for
    ``quantized`` against its float32 source ``float_file`` on the first ``SAMPLES`` samples
    of ``samples`` (``.npz``, ``[N, *shape]`` by input name, PyTorch's layout;
    ``transposes``: input name -> permutation for a channel-last file). Each of ``ops``:
    ``op`` (builtin name), ``op_index`` (position in the quantized graph), ``tensor``,
    ``dtype``, ``shape``, ``step``, ``max_abs_error_of_scale``, ``cosine``, ``worst_channel``
    (``axis``, ``channel``, ``max_abs_error_of_range``, ``float_range``) or None.
    Never raises: a failure gives ``{"ops": [], "reason": ...}``."""
    from stages.kit.child import run_child

    started = time.monotonic()
    try:
        with tempfile.TemporaryDirectory(prefix="error-sources-") as work_dir:
            work = Path(work_dir)
            job = {
                "float_file": str(float_file),
                "quantized": str(quantized),
                "samples": str(samples),
                "input_names": input_names,
                "transposes": transposes,
                "report": str(work / "sources.json"),
            }
            child = run_child(
                "stages.quantize.error_sources", job, work / "job.json", timeout, label="quantize.error_sources"
            )
            report_path = work / "sources.json"
            if child.code is None:
                return {"ops": [], "reason": f"the diagnostic timed out after {timeout:g} s"}
            if child.signal is not None:
                return {"ops": [], "reason": f"the runtime crashed with signal {child.signal} while diagnosing"}
            if not report_path.is_file():
                return {"ops": [], "reason": f"the diagnostic failed: {child.last_line()}"}
            result: dict[str, Any] = json.loads(report_path.read_text())
            result["seconds"] = round(time.monotonic() - started, 3)
            return result
    except Exception as exc:  # a diagnostic never fails the attempt
        return {"ops": [], "reason": f"the diagnostic failed: {type(exc).__name__}: {exc}"[:500]}


@dataclass
class Stats:
    """Running error statistics of one op output over the samples (float64)."""

    op: str
    op_index: int
    tensor: str
    dtype: str
    shape: list[int]
    step: float | None
    scale: float = 0.0
    max_error: float = 0.0
    cosine: float = 1.0
    # per judged axis: (min, max, max error, values per channel) of each channel
    channels: dict[int, list[np.ndarray]] = field(default_factory=dict)

    def add(self, ref: np.ndarray, act: np.ndarray) -> None:
        """One sample's float32 ``ref`` and dequantized ``act`` (same shape)."""
        ref64, act64 = np.asarray(ref, np.float64), np.asarray(act, np.float64)
        error = np.abs(act64 - ref64)
        self.scale = max(self.scale, float(np.max(np.abs(ref64))) if ref64.size else 0.0)
        self.max_error = max(self.max_error, float(np.max(error)) if error.size else 0.0)
        self.cosine = min(self.cosine, cosine(ref64, act64))
        for axis in channel_axes(ref64.ndim):
            count = ref64.shape[axis]
            ref_c = np.moveaxis(ref64, axis, 0).reshape(count, -1)
            err_c = np.moveaxis(error, axis, 0).reshape(count, -1)
            low, high, worst = ref_c.min(axis=1), ref_c.max(axis=1), err_c.max(axis=1)
            if axis not in self.channels:
                self.channels[axis] = [low, high, worst, np.full(count, ref_c.shape[1])]
            else:
                seen = self.channels[axis]
                seen[0], seen[1] = np.minimum(seen[0], low), np.maximum(seen[1], high)
                seen[2], seen[3] = np.maximum(seen[2], worst), seen[3] + ref_c.shape[1]

    def worst_channel(self) -> dict[str, Any] | None:
        """The judged channel whose max abs error is the largest share of its float32 range."""
        best: dict[str, Any] | None = None
        for axis, (low, high, worst, values) in sorted(self.channels.items()):
            span = high - low
            judged = (values >= MIN_VALUES) & (span >= MIN_RANGE_SHARE * self.scale) & (span > 0)
            if not np.any(judged):
                continue
            share = np.where(judged, worst / np.where(span > 0, span, 1.0), -1.0)
            channel = int(np.argmax(share))
            if best is None or share[channel] > best["max_abs_error_of_range"]:
                best = {
                    "axis": axis,
                    "channel": channel,
                    "max_abs_error_of_range": float(share[channel]),
                    "float_range": float(span[channel]),
                }
        return best

    def summary(self) -> dict[str, Any]:
        worst = self.worst_channel()
        return {
            "op": self.op,
            "op_index": self.op_index,
            "tensor": self.tensor,
            "dtype": self.dtype,
            "shape": self.shape,
            "step": _round(self.step),
            "max_abs_error_of_scale": _round(self.max_error / self.scale if self.scale > 0 else self.max_error),
            "cosine": _round(self.cosine),
            "worst_channel": None
            if worst is None
            else {**worst, "max_abs_error_of_range": _round(worst["max_abs_error_of_range"])},
        }


def channel_axes(ndim: int) -> list[int]:
    """The axes of a tensor (batch axis included) whose entries are judged as channels."""
    if ndim >= 3:
        return [1, ndim - 1]
    return [1] if ndim == 2 else []


def cosine(ref: np.ndarray, act: np.ndarray) -> float:
    """Cosine similarity of two flattened arrays; 1.0 when both are zero, 0.0 when one is."""
    a, b = ref.ravel(), act.ravel()
    norms = float(np.linalg.norm(a)) * float(np.linalg.norm(b))
    if norms == 0.0:
        return 1.0 if not np.any(a) and not np.any(b) else 0.0
    return float(np.dot(a, b) / norms)


def dequantize(value: np.ndarray, detail: dict[str, Any]) -> np.ndarray:
    """An integer tensor with quantization parameters as float64 (per tensor or per axis);
    anything else as it is."""
    params = detail.get("quantization_parameters") or {}
    scales = np.asarray(params.get("scales", []), np.float64)
    zeros = np.asarray(params.get("zero_points", []), np.float64)
    if value.dtype.kind not in "iu" or scales.size == 0:
        return value
    if scales.size == 1:
        return (value.astype(np.float64) - zeros[0]) * scales[0]
    shape = [1] * value.ndim
    shape[int(params.get("quantized_dimension", 0))] = scales.size
    return (value.astype(np.float64) - zeros.reshape(shape)) * scales.reshape(shape)


def rank(stats: list[Stats], top: int = TOP) -> list[dict[str, Any]]:
    """The ``top`` op outputs by ``RANKED_BY``, as their summaries."""
    summaries = [s.summary() for s in stats]

    def key(entry: dict[str, Any]) -> tuple[float, float]:
        worst = entry["worst_channel"]
        share = worst["max_abs_error_of_range"] if worst else entry["max_abs_error_of_scale"]
        return (-(share or 0.0), -(entry["max_abs_error_of_scale"] or 0.0))

    return sorted(summaries, key=key)[:top]


def _round(value: float | None, digits: int = 6) -> float | None:
    return None if value is None else float(f"{value:.{digits}g}")


def _op_outputs(path: Path) -> list[tuple[int, str, int]]:
    """(op position, builtin name, output tensor index) of subgraph 0, in execution order."""
    from ai_edge_litert import schema_py_generated as schema
    from ai_edge_quantizer.utils import tfl_flatbuffer_utils as tfl

    names = {value: key for key, value in vars(schema.BuiltinOperator).items() if key.isupper()}
    model = tfl.read_model(path)
    found: list[tuple[int, str, int]] = []
    for position, op in enumerate(model.subgraphs[0].operators):
        code = model.operatorCodes[op.opcodeIndex]
        builtin = max(int(code.builtinCode), int(code.deprecatedBuiltinCode))
        found.extend((position, names.get(builtin, f"BUILTIN_{builtin}"), int(i)) for i in op.outputs if i >= 0)
    return found


def _feeds(job: dict[str, Any], runner: Any) -> list[dict[str, np.ndarray]]:
    from stages.kit.naming import match_names

    with np.load(job["samples"], allow_pickle=False) as data:
        samples = {name: data[name][:SAMPLES] for name in data.files}
    for name, perm in job["transposes"].items():
        if name in samples:
            samples[name] = np.ascontiguousarray(np.transpose(samples[name], [0, *(a + 1 for a in perm)]))
    in_map, left = match_names(list(job["input_names"]), list(runner.inputs))
    if left:
        raise ValueError(f"cannot map the inputs {left} to the file's {list(runner.inputs)}")
    count = next(iter(samples.values())).shape[0]
    return [{key: samples[name][index] for name, key in in_map.items()} for index in range(count)]


def diagnose(job: dict[str, Any]) -> dict[str, Any]:
    """The child's work (see ``locate``)."""
    from stages.kit.litert_child import Runner

    float_file, quantized = Path(job["float_file"]), Path(job["quantized"])
    reference = Runner(float_file, threads=1, xnnpack=False, preserve_all_tensors=True)
    target = Runner(quantized, threads=1, xnnpack=False, preserve_all_tensors=True)
    ref_details = {d["name"]: d for d in reference.interpreter.get_tensor_details() if d["name"]}
    act_details = {d["index"]: d for d in target.interpreter.get_tensor_details()}
    stats: dict[int, Stats] = {}
    unmatched: dict[str, str] = {}
    outputs = [(p, op, i) for p, op, i in _op_outputs(quantized) if op not in CONVERSIONS]
    feeds = _feeds(job, target)
    for feed in feeds:
        reference(dict(feed))
        target(dict(feed))
        for position, op, index in outputs:
            detail = act_details[index]
            name = detail["name"]
            ref_detail = ref_details.get(name)
            if ref_detail is None:
                unmatched[name] = "not in the float32 file"
                continue
            ref = reference.interpreter.get_tensor(ref_detail["index"])
            if ref.dtype.kind != "f":
                continue  # ids, shapes, masks: not what quantization changes
            act = dequantize(target.interpreter.get_tensor(index), detail)
            if act.shape != ref.shape:
                unmatched[name] = f"shape {list(act.shape)} vs {list(ref.shape)} in the float32 file"
                continue
            if index not in stats:
                scales = (detail.get("quantization_parameters") or {}).get("scales", [])
                step = float(scales[0]) if len(scales) == 1 and np.dtype(detail["dtype"]).kind in "iu" else None
                dtype = np.dtype(detail["dtype"]).name
                stats[index] = Stats(op, position, name, dtype, [int(x) for x in act.shape], step)
            stats[index].add(ref, act)
    return {
        "against": float_file.name,
        "samples": len(feeds),
        "runtime": "ai-edge-litert Interpreter, reference kernels (no XNNPACK), experimental_preserve_all_tensors",
        "compared": len(stats),
        "unmatched": len(unmatched),
        "unmatched_examples": dict(list(unmatched.items())[:5]),
        "ranked_by": RANKED_BY,
        "ops": rank(list(stats.values())),
    }


def main(job_path: str) -> int:
    job = json.loads(Path(job_path).read_text())
    try:
        result = diagnose(job)
    except Exception as exc:  # reported, never raised: the diagnostic is advisory
        traceback.print_exc()
        result = {"ops": [], "reason": f"the diagnostic failed: {type(exc).__name__}: {exc}"[:500]}
    Path(job["report"]).write_text(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1]))
