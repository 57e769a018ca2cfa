"""Per-channel judgement of a quantized output (numpy only): what a whole-tensor cosine hides.

A cosine over the whole tensor is dominated by its large values. An output that
concatenates box coordinates (0-640) and sigmoid scores (0-1), quantized per tensor at
int8, has a step of 640/255 = 2.5: every score becomes 0.0 while the cosine stays at
0.99999. So each channel of an output is judged against its own reference range.

Arrays are ``[N, *per_sample]`` (sample axis first), as in ``stages.kit.metrics``. The
channel axis of a per-sample shape: axis 1 for 4-D maps (``[1, C, H, W]``, PyTorch's
layout: the reference decides it), the last axis for 1-D and 2-D outputs, and both
axis 1 and the last axis for 3-D outputs (``[1, 7, 256]`` is 7 rows of 256 anchors,
``[1, 256, 7]`` the other way round: which one is not known). A channel is judged only
when it has at least ``MIN_VALUES`` reference values and its reference range is at least
``MIN_RANGE_SHARE`` of the output's scale (a dead channel is not evidence).

Findings per channel:

- ``collapsed``: the artifact gives one distinct value where the reference varies -> fail;
- ``coarse``: the output's quantization step (the smallest gap between the artifact's
  distinct values, when they lie on a grid; float outputs have none) is at least
  ``STEP_SHARE_DEGRADED`` of the channel's reference range -> degraded, at least
  ``STEP_SHARE_FAIL`` -> fail;
- ``lost``: the channel's mean abs error is at least ``ERROR_SHARE_DEGRADED`` of its
  reference range -> degraded.
"""

from __future__ import annotations

from typing import Any

import numpy as np

MIN_VALUES = 16
MIN_RANGE_SHARE = 1e-4
STEP_SHARE_DEGRADED = 0.1
STEP_SHARE_FAIL = 0.5
ERROR_SHARE_DEGRADED = 0.25
ADVICE = (
    "split the output so each part gets its own quantization range, normalise its channels to a "
    "common range in the model, or keep that head in float"
)


def channel_axes(per_sample_ndim: int) -> list[int]:
    """The per-sample axes whose entries are judged as channels (see the module doc)."""
    if per_sample_ndim == 4:
        return [1]
    if per_sample_ndim == 3:
        return [1, 2]
    return [per_sample_ndim - 1] if per_sample_ndim >= 1 else []


def grid_step(values: np.ndarray, scale: float) -> float | None:
    """The quantization step of ``values`` when they lie on a grid, else None.

    The smallest gap between distinct values, kept only when every gap is a whole
    multiple of it (within 2 %) and there are at most 256 distinct values per step
    (an int8 output has 256 levels at most).
    """
    distinct = np.unique(values.astype(np.float64).ravel())
    if distinct.size < 2 or distinct.size > 256:
        return None
    gaps = np.diff(distinct)
    gaps = gaps[gaps > 1e-9 * max(scale, 1e-30)]
    if gaps.size == 0:
        return None
    step = float(gaps.min())
    ratios = gaps / step
    if np.max(np.abs(ratios - np.round(ratios))) > 0.02:
        return None
    if (distinct[-1] - distinct[0]) / step > 256.5:
        return None
    return step


def judge_channels(name: str, ref: np.ndarray, act: np.ndarray) -> dict[str, Any]:
    """``{"verdict", "reasons", "channels"}`` for one output; ``verdict`` is None when clean.

    ``channels`` lists per judged axis the flagged channel indices by finding, with the
    step and the worst step share. Shapes must match (``compare`` reports mismatches).
    """
    ref64, act64 = np.asarray(ref, np.float64), np.asarray(act, np.float64)
    result: dict[str, Any] = {"verdict": None, "reasons": [], "channels": {}}
    if ref64.shape != act64.shape or ref64.size == 0 or not np.all(np.isfinite(act64)):
        return result
    scale = float(np.max(np.abs(ref64)))
    if scale == 0.0:
        return result
    step = grid_step(act64, scale)
    worst = 0
    for axis in channel_axes(ref64.ndim - 1):
        found = _axis_findings(ref64, act64, axis + 1, scale, step)
        if not any(found[k] for k in ("collapsed", "coarse", "lost")):
            continue
        result["channels"][f"axis {axis}"] = found
        severity, text = _describe(name, axis, found, step)
        worst = max(worst, severity)
        result["reasons"].append(text)
    result["step"] = step
    result["verdict"] = {0: None, 1: "degraded", 2: "fail"}[worst]
    return result


def _axis_findings(ref: np.ndarray, act: np.ndarray, axis: int, scale: float, step: float | None) -> dict[str, Any]:
    count = ref.shape[axis]
    ref_c = np.moveaxis(ref, axis, 0).reshape(count, -1)
    act_c = np.moveaxis(act, axis, 0).reshape(count, -1)
    found: dict[str, Any] = {"count": count, "collapsed": [], "coarse": [], "lost": [], "worst_step_share": 0.0}
    if ref_c.shape[1] < MIN_VALUES:
        return found
    fail_coarse: list[int] = []
    for index in range(count):
        span = float(np.ptp(ref_c[index]))
        if span < MIN_RANGE_SHARE * scale:
            continue
        share = step / span if step is not None else 0.0
        found["worst_step_share"] = max(found["worst_step_share"], share)
        if float(np.ptp(act_c[index])) == 0.0:
            found["collapsed"].append(index)
            continue
        if step is not None:
            if share >= STEP_SHARE_DEGRADED:
                found["coarse"].append(index)
                if share >= STEP_SHARE_FAIL:
                    fail_coarse.append(index)
        if float(np.mean(np.abs(act_c[index] - ref_c[index]))) >= ERROR_SHARE_DEGRADED * span:
            found["lost"].append(index)
    found["coarse_fail"] = fail_coarse
    found["worst_step_share"] = round(float(found["worst_step_share"]), 4)
    return found


def _describe(name: str, axis: int, found: dict[str, Any], step: float | None) -> tuple[int, str]:
    parts: list[str] = []
    if found["collapsed"]:
        parts.append(f"channels {_indices(found['collapsed'])} collapse to one value where the reference varies")
    if found["coarse"]:
        parts.append(
            f"channels {_indices(found['coarse'])} have a quantization step ({step:.3g}) of at least "
            f"{STEP_SHARE_DEGRADED:g} of their reference range (worst {found['worst_step_share']:.3g})"
        )
    lost_only = [i for i in found["lost"] if i not in found["collapsed"] and i not in found["coarse"]]
    if lost_only:
        parts.append(
            f"channels {_indices(lost_only)} have a mean error of at least {ERROR_SHARE_DEGRADED:g} of their range"
        )
    severity = 2 if found["collapsed"] or found["coarse_fail"] else 1
    text = f"output {name!r}, axis {axis} ({found['count']} channels): " + "; ".join(parts) + f". Fix: {ADVICE}."
    return severity, text


def _indices(indices: list[int], limit: int = 12) -> str:
    shown = ", ".join(str(i) for i in indices[:limit])
    return shown + (f" (+{len(indices) - limit} more)" if len(indices) > limit else "")


def agreement(name: str, ref: np.ndarray, act: np.ndarray) -> dict[str, float]:
    """Argmax agreement of dense outputs: ``pixel_class_agreement`` for segmentation maps
    (per sample ``[1, C, H, W]``, C > 1: the class axis is 1) and ``next_token_agreement``
    for token logits (per sample ``[1, T, V]`` with V >= 32: the argmax of the last
    position), told apart from hidden states of the same shape by the output's name:
    ``logits`` or ``*_logits`` (transformers' ModelOutput field; a BERT ``last_hidden_state``
    [1, 8, 32] had been given a next-token figure). Classifier outputs keep top-1/top-5
    from ``stages.kit.metrics``."""
    ref64, act64 = np.asarray(ref), np.asarray(act)
    if ref64.shape != act64.shape or ref64.size == 0:
        return {}
    if ref64.ndim == 5 and ref64.shape[2] > 1:
        same = np.argmax(ref64, axis=2) == np.argmax(act64, axis=2)
        return {"pixel_class_agreement": float(np.mean(same))}
    if ref64.ndim == 4 and ref64.shape[-1] >= 32 and (name == "logits" or name.endswith("_logits")):
        same = np.argmax(ref64[:, :, -1, :], axis=-1) == np.argmax(act64[:, :, -1, :], axis=-1)
        return {"next_token_agreement": float(np.mean(same))}
    return {}
