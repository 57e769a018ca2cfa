"""Verdicts for quantized .tflite files (numpy only), after DESIGN.md's "Verdicts".

- ``float16`` is held to a tolerance like float32: max abs error <= 1e-2 x scale
  (``spec.tolerance.float16`` overrides), vs PyTorch.
- ``dynamic_range`` and ``int8`` are advisory, since quantization error is expected:
  judged by the smallest per-sample cosine similarity over all outputs, vs PyTorch:
  ``pass`` at >= 0.99, ``degraded`` at >= 0.9, else ``fail``. mean abs error / scale is
  reported next to it, and top-1 agreement with the top-2 margin for classifier-shaped
  outputs (both from ``stages.kit.metrics.compare``).
- Advisory precisions are also judged per channel (``stages.quantize.channels``): a
  channel that collapses to one value, or whose quantization step is a large share of
  its own reference range, makes the file ``degraded`` or ``fail`` whatever the cosine,
  with a reason naming the output, the axis and the channels. Segmentation maps get
  ``pixel_class_agreement`` and token logits ``next_token_agreement`` next to it.

The same rule judges the comparison with the float32 file's outputs (``vs_float32``),
which isolates what quantization itself cost from what the float conversion did.
"""

from __future__ import annotations

from typing import Any

from stages.kit.metrics import compare
from stages.kit.spec import PlanSpec
from stages.quantize.channels import agreement, judge_channels

ADVISORY = ("dynamic_range", "int8")
DEFAULT_FLOAT16_TOLERANCE = 1e-2
COSINE_PASS = {"dynamic_range": 0.99, "int8": 0.99}
COSINE_DEGRADED = 0.9


def float16_tolerance(spec: PlanSpec) -> float:
    return float(spec.tolerance_for("float16") or DEFAULT_FLOAT16_TOLERANCE)


def judge(precision: str, expected: dict[str, Any], actual: dict[str, Any], spec: PlanSpec) -> dict[str, Any]:
    """``compare``'s result with the precision's verdict, reasons and tolerance."""
    if precision not in ADVISORY:
        result = compare(expected, actual, float16_tolerance(spec))
        _add_mean_over_scale(result)
        return result
    # Not compare's max-abs criterion (an infinite bound): only missing outputs, shape
    # mismatches and non-finite values stay as its reasons, and they fail the file.
    result = compare(expected, actual, float("inf"))
    _add_mean_over_scale(result)
    threshold = COSINE_PASS[precision]
    reasons = list(result["reasons"])
    cosines = {name: entry.get("cosine") for name, entry in result["outputs"].items()}
    worst = min((c for c in cosines.values() if c is not None), default=None)
    if reasons or worst is None:
        verdict = "fail"
    elif worst >= threshold:
        verdict = "pass"
    elif worst >= COSINE_DEGRADED:
        verdict = "degraded"
    else:
        verdict = "fail"
    for name, cosine in cosines.items():
        if cosine is not None and cosine < threshold:
            reasons.append(
                f"output {name!r}: min cosine similarity {cosine:.4f} is below {threshold} "
                f"({'degraded' if cosine >= COSINE_DEGRADED else 'fail'}: degraded down to {COSINE_DEGRADED})"
            )
    for name, entry in result["outputs"].items():
        if name not in actual or "cosine" not in entry:
            continue
        entry.update(agreement(name, expected[name], actual[name]))
        channels = judge_channels(name, expected[name], actual[name])
        if channels["verdict"] is None:
            continue
        entry["channels"] = channels["channels"]
        reasons.extend(channels["reasons"])
        verdict = _worse(verdict, channels["verdict"])
    result.update(
        {
            "verdict": verdict,
            "reasons": reasons,
            "tolerance": {"metric": "min cosine", "pass": threshold, "degraded": COSINE_DEGRADED},
            "min_cosine": worst,
        }
    )
    return result


def _worse(a: str, b: str) -> str:
    order = ("pass", "degraded", "fail")
    return a if order.index(a) >= order.index(b) else b


def _add_mean_over_scale(result: dict[str, Any]) -> None:
    for entry in result["outputs"].values():
        if entry.get("mean_abs") is not None and entry.get("scale"):
            entry["mean_abs_over_scale"] = entry["mean_abs"] / entry["scale"]
    top1 = [e["top1_agreement"] for e in result["outputs"].values() if e.get("top1_agreement") is not None]
    if top1:
        result["top1_agreement"] = min(top1)
