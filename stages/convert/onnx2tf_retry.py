"""``convert.onnx2tf``'s second chance: every sample through the file, and one retry
without onnxsim when the file misses the reference.

Why (issue 9, item 5): onnx2tf 2.6.9 runs ``onnxsim`` on its input by default. On a
stacked ``nn.LSTM`` exported from TorchScript, onnxsim folds the zero initial state into
a constant that onnx2tf then writes as a *variable* tensor, so the state of one
``invoke()`` leaks into the next: sample 1 is exact, samples 2.. are 2-4 % off. The same
model converted with ``-nuo`` (``--not_use_onnxsim``) is exact on every sample. A single
sample cannot show this, so the check here runs all validation samples one after
another in one interpreter (``stages.kit.litert_child``, as ``validate.tflite`` does)
and compares them with ``stages.kit.metrics.compare``, whose reason then says the file
keeps state.

``run_attempts`` converts with onnx2tf's defaults first; when that file misses the
reference (beyond the float32 tolerance, or it cannot run), it converts once more
without the optional onnxsim pass and keeps the attempt that matches (else the one with
the smaller error). ``info.attempts`` lists both, ``info.attempt`` names the winner and
why. The verdict stays ``validate.tflite``'s.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from stages.kit.contract import StageError

# onnx2tf 2.6.9's CLI flag for not_use_onnxsim (onnx2tf/onnx2tf.py, argparse "-nuo").
WITHOUT_ONNXSIM = ["-nuo"]
RUNTIME = "ai-edge-litert of the onnx2tf environment, XNNPACK, every sample in one interpreter"


@dataclass
class Attempt:
    """One onnx2tf conversion: its flags, the file it wrote and that file's all-sample check."""

    name: str  # "default" or "without_onnxsim"
    flags: list[str]
    target: Path | None = None
    check: dict[str, Any] = field(default_factory=dict)
    error: str | None = None  # the StageError's message when the conversion itself failed
    details: Any = None  # whatever the converting function returned besides the file

    @property
    def matches(self) -> bool:
        return self.error is None and bool(self.check.get("within_tolerance"))

    @property
    def worst(self) -> float:
        """The largest max_abs/scale over the outputs (inf when it did not run)."""
        numbers = [v for v in (self.check.get("max_abs/scale") or {}).values() if isinstance(v, (int, float))]
        if self.error is not None or not self.check.get("ran") or not numbers:
            return float("inf")
        return max(numbers)

    def to_json(self) -> dict[str, Any]:
        found: dict[str, Any] = {"name": self.name, "extra_flags": self.flags, "matches": self.matches}
        if self.error is not None:
            found["error"] = self.error
        else:
            found["check"] = self.check
        return found


def check_all(
    tflite: Path, samples: dict[str, Any], reference: dict[str, Any], plan: Any, tolerance: float, work: Path
) -> dict[str, Any]:
    """Every sample of ``samples`` (``[N, *shape]``, PyTorch layout, stable names) through
    the final file, one after another in one interpreter, compared with ``reference``.

    ``plan`` is ``stages.convert.onnx2tf_boundary.Plan`` (its ``input_map``,
    ``output_map`` and ``input_transposes``). Never raises: a file that cannot run is
    ``{"ran": False, "reason": ...}``.
    """
    import numpy as np

    from stages.convert.onnx2tf_boundary import run_litert
    from stages.kit.metrics import compare

    feed: dict[str, Any] = {}
    for name in plan.input_map:
        value = samples[name]
        perm = plan.input_transposes.get(name)
        if perm is not None:
            value = np.transpose(value, [0, *(axis + 1 for axis in perm)])
        # [N, *input_shape]: the child feeds feed[name][i], one sample per invoke().
        feed[name] = np.ascontiguousarray(value)
    count = int(next(iter(samples.values())).shape[0])
    actual, failure = run_litert(tflite, feed, list(plan.output_map), work)
    if actual is None:
        return {"samples": count, "ran": False, "reason": failure}
    compared = compare(reference, actual, tolerance)
    return {
        "samples": count,
        "ran": True,
        "runtime": RUNTIME,
        "within_tolerance": compared["verdict"] == "pass",
        "max_abs/scale": {
            name: entry["max_abs"] / entry["scale"] if entry.get("scale") else entry.get("max_abs")
            for name, entry in compared["outputs"].items()
        },
        "reasons": compared["reasons"],
    }


def run_attempts(convert: Callable[[str, list[str]], Attempt]) -> tuple[Attempt, list[Attempt]]:
    """The default conversion, then (when its file misses the reference) one without onnxsim.

    ``convert(name, extra_flags)`` converts and checks, returning an ``Attempt``; it may
    raise ``StageError``. The first attempt's ``StageError`` propagates (a conversion that
    fails is not a validation miss); the retry's is recorded on its attempt, and the
    first attempt then stands. Returns the winner and every attempt in order.
    """
    first = convert("default", [])
    if first.matches:
        return first, [first]
    try:
        second = convert("without_onnxsim", WITHOUT_ONNXSIM)
    except StageError as exc:
        second = Attempt("without_onnxsim", WITHOUT_ONNXSIM, error=str(exc))
    attempts = [first, second]
    winner = second if second.matches or second.worst < first.worst else first
    return winner, attempts


def attempts_info(winner: Attempt, attempts: list[Attempt]) -> dict[str, Any]:
    """``info.attempt`` (which one won and why) and ``info.attempts`` (each one's flags and check)."""
    if len(attempts) == 1:
        why = "onnx2tf's defaults matched the reference on every sample; no retry needed"
    elif winner.name == "without_onnxsim" and winner.matches:
        why = (
            "the default file missed the reference ("
            + "; ".join(attempts[0].check.get("reasons") or [attempts[0].check.get("reason") or "see its check"])
            + "); converted again without onnxsim (-nuo), which matched on every sample"
        )
    elif winner.name == "without_onnxsim":
        why = "neither attempt matched; the one without onnxsim had the smaller error"
    else:
        why = "neither attempt matched; onnx2tf's defaults had the smaller error"
    return {"attempt": {"name": winner.name, "why": why}, "attempts": [a.to_json() for a in attempts]}
