"""Compare an artifact's outputs with the reference outputs (numpy only).

Both sides are dicts of arrays keyed by the stable output names, each of shape
``[N, *output_shape]`` (sample axis first). ``compare`` never raises on bad data:
a missing output, a shape mismatch or a non-finite value is a failing output with
a reason, so one report lists every mismatch at once.

Definitions (per output, computed in float64):

- ``scale``: max |reference| over all samples. The verdict is ``max_abs <=
  tolerance * scale``; when the reference is all zeros (scale 0) the tolerance is
  used as an absolute bound instead, so an exact match still passes.
- ``max_rel``: max of ``|actual - reference| / |reference|``, with the denominator
  floored at ``1e-6 * scale`` so exact zeros in the reference do not make it
  infinite.
- ``cosine``: the smallest per-sample cosine similarity of the flattened outputs
  (1.0 when both are all zeros, 0.0 when only one is).
- For classifier-shaped outputs (per sample ``[batch, classes]``, classes > 1):
  ``top1_agreement`` (argmax equal), ``top5_agreement`` (the reference's top-1
  class is among the artifact's top 5; only when classes >= 5) and
  ``min_top2_margin`` (smallest gap between the two largest reference logits: where
  it is tiny, a top-1 disagreement is noise, not evidence).

Every number is a plain float (or None with a reason), so the result is JSON as is.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

TOLERANCE_METRIC = "max_abs/scale"


def compare(reference: dict[str, np.ndarray], actual: dict[str, np.ndarray], tolerance: float) -> dict[str, Any]:
    outputs: dict[str, dict[str, Any]] = {}
    reasons: list[str] = []
    for name, ref in reference.items():
        entry, problems = _compare_output(name, np.asarray(ref), actual.get(name), tolerance)
        outputs[name] = entry
        reasons.extend(problems)
    result: dict[str, Any] = {
        "verdict": "fail" if reasons or not reference else "pass",
        "reasons": reasons if reference else ["there are no reference outputs to compare"],
        "tolerance": {"metric": TOLERANCE_METRIC, "value": float(tolerance)},
        "samples": _sample_count(reference),
        "outputs": outputs,
    }
    extra = [name for name in actual if name not in reference]
    if extra:
        # Not a failure (the reference decides what matters) but worth seeing.
        result["extra_outputs"] = extra
    return result


def _sample_count(reference: dict[str, np.ndarray]) -> int:
    for ref in reference.values():
        return int(np.asarray(ref).shape[0]) if np.ndim(ref) else 1
    return 0


def _compare_output(
    name: str, ref: np.ndarray, act: np.ndarray | None, tolerance: float
) -> tuple[dict[str, Any], list[str]]:
    if act is None:
        return {"pass": False}, [f"output {name!r} is missing from the artifact's outputs"]
    act = np.asarray(act)
    if act.shape != ref.shape:
        return {"pass": False, "shape": list(act.shape), "expected_shape": list(ref.shape)}, [
            f"output {name!r} has shape {_per_sample(act.shape)} per sample, "
            f"expected {_per_sample(ref.shape)} (sample axis first: {list(act.shape)} "
            f"vs {list(ref.shape)})"
        ]
    ref64, act64 = _as_float64(ref), _as_float64(act)
    problems: list[str] = []
    ref_bad = int(np.size(ref64) - np.count_nonzero(np.isfinite(ref64)))
    act_bad = int(np.size(act64) - np.count_nonzero(np.isfinite(act64)))
    if ref_bad:
        problems.append(f"output {name!r}: the reference has {ref_bad} NaN/inf values")
    if act_bad:
        problems.append(f"output {name!r}: the artifact produced {act_bad} NaN/inf values")
    if problems:
        return {"pass": False, "non_finite": act_bad, "reference_non_finite": ref_bad}, problems

    entry = _error_stats(ref64, act64)
    entry.update(_classifier_stats(ref64, act64))
    overflowed = sorted(key for key, value in entry.items() if value is None)
    if overflowed:
        entry["pass"] = False
        return entry, [f"output {name!r}: {', '.join(overflowed)} overflowed (values too large)"]
    bound = tolerance * entry["scale"] if entry["scale"] > 0 else tolerance
    entry["pass"] = bool(entry["max_abs"] <= bound)
    if not entry["pass"]:
        problems.append(
            f"output {name!r}: max abs error {entry['max_abs']:.3g} exceeds "
            f"{tolerance:g} x scale {entry['scale']:.3g} = {bound:.3g}"
            + ("" if entry["scale"] > 0 else " (reference is all zeros: absolute bound)")
        )
        drift = _state_drift(ref64, act64, bound)
        if drift is not None:
            entry["keeps_state"] = drift
            problems.append(
                f"output {name!r}: sample 1 matches (max abs error {drift['first_max_abs']:.3g}) but later samples "
                f"drift (worst: sample {drift['worst_sample'] + 1}, {drift['worst_max_abs']:.3g}): "
                "the file likely keeps state between invocations (e.g. a recurrent initial state "
                "that became a variable tensor)"
            )
    return entry, problems


def _state_drift(ref: np.ndarray, act: np.ndarray, bound: float) -> dict[str, Any] | None:
    """Samples run one after another in one interpreter: the first within ``bound`` and
    a later one beyond it is the signature of state kept between ``invoke()`` calls."""
    if ref.ndim == 0 or ref.shape[0] < 2:
        return None
    per_sample = np.abs(act - ref).reshape(ref.shape[0], -1).max(axis=1)
    if per_sample[0] > bound:
        return None
    worst = int(np.argmax(per_sample))
    return {
        "first_max_abs": float(per_sample[0]),
        "worst_sample": worst,
        "worst_max_abs": float(per_sample[worst]),
        "failing_samples": int(np.count_nonzero(per_sample > bound)),
    }


def _per_sample(shape: tuple[int, ...]) -> list[int]:
    return list(shape[1:])


def _as_float64(array: np.ndarray) -> np.ndarray:
    if array.dtype == np.bool_:
        return array.astype(np.float64)
    return array.astype(np.float64, copy=False)


def _error_stats(ref: np.ndarray, act: np.ndarray) -> dict[str, Any]:
    diff = np.abs(act - ref)
    scale = _plain(np.max(np.abs(ref))) if ref.size else 0.0
    floor = 1e-6 * scale if scale else 1e-12
    rel = diff / np.maximum(np.abs(ref), floor)
    return {
        "max_abs": _plain(np.max(diff)) if diff.size else 0.0,
        "mean_abs": _plain(np.mean(diff)) if diff.size else 0.0,
        "max_rel": _plain(np.max(rel)) if rel.size else 0.0,
        "cosine": _min_cosine(ref, act),
        "scale": scale,
    }


def _min_cosine(ref: np.ndarray, act: np.ndarray) -> float | None:
    samples = ref.shape[0] if ref.ndim else 1
    ref2 = ref.reshape(samples, -1)
    act2 = act.reshape(samples, -1)
    worst = 1.0
    for r, a in zip(ref2, act2, strict=True):
        nr, na = float(np.linalg.norm(r)), float(np.linalg.norm(a))
        if nr == 0.0 and na == 0.0:
            cos = 1.0
        elif nr == 0.0 or na == 0.0:
            cos = 0.0
        else:
            cos = float(np.dot(r, a) / (nr * na))
        worst = min(worst, cos)
    return _plain(worst)


def _classifier_stats(ref: np.ndarray, act: np.ndarray) -> dict[str, Any]:
    # Only [N, batch, classes]: a 2-D output per sample whose last axis holds scores.
    if ref.ndim != 3 or ref.shape[-1] < 2 or ref.size == 0:
        return {}
    classes = ref.shape[-1]
    ref_rows = ref.reshape(-1, classes)
    act_rows = act.reshape(-1, classes)
    ref_top1 = np.argmax(ref_rows, axis=1)
    stats: dict[str, Any] = {
        "top1_agreement": _plain(np.mean(ref_top1 == np.argmax(act_rows, axis=1))),
    }
    if classes >= 5:
        act_top5 = np.argsort(-act_rows, axis=1, kind="stable")[:, :5]
        stats["top5_agreement"] = _plain(np.mean(np.any(act_top5 == ref_top1[:, None], axis=1)))
    top2 = np.sort(ref_rows, axis=1)[:, -2:]
    stats["min_top2_margin"] = _plain(np.min(top2[:, 1] - top2[:, 0]))
    return stats


def _plain(value: Any) -> float | None:
    # Inputs were checked finite, but float64 outputs can still overflow (norms of
    # huge values): JSON has no NaN/inf, so such a metric becomes None with a reason.
    number = float(value)
    return number if math.isfinite(number) else None
