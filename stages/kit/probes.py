"""Probe sets: the validation samples at other sizes of every named dimension (issue 9, item 7).

Synthetic samples give each named dynamic dimension one size (1, or an ExportedProgram's
example size). A file declared dynamic in a sequence or time axis could pass there and
fail at every other length, so ``export.prepare`` also runs the reference (PyTorch, or
onnxruntime on an uploaded ONNX file) at a second size of every named dimension
(``build``) and stores those inputs and outputs in ``reference.npz`` under reserved keys
(``PREFIX``), which ``stages.kit.samples.load`` hides from every other reader.
``validate.tflite`` and the SavedModel check run the file at those shapes too.

Layout in ``reference.npz``: ``__probe0__sizes`` (a JSON string: dimension -> size),
``__probe0__in__<input>`` (``[M, *shape]``), ``__probe0__out__<output>`` (``[M, *shape]``).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

PREFIX = "__probe"
PROBE_SAMPLES = 2  # samples per probe set: enough to see a wrong size, cheap to run


@dataclass
class ProbeSet:
    """One probe: the size of each named dimension, inputs and reference outputs (``[M, ...]``)."""

    sizes: dict[str, int]
    inputs: dict[str, Any]
    outputs: dict[str, Any]


def second_sizes(base: dict[str, int]) -> dict[str, int]:
    """Another size for each named dimension: small ones grow, larger ones shrink (a sequence
    may not grow past the model's maximum)."""
    return {dim: size + 1 if size <= 2 else size - 1 for dim, size in base.items()}


def resized(samples: dict[str, Any], inputs: list[dict[str, Any]], sizes: dict[str, int], count: int) -> dict[str, Any]:
    """The first ``count`` samples (``[count, *shape]`` per input) with every named axis at ``sizes``.

    A grown axis is filled from the following samples: position ``k`` of sample ``j`` is
    position ``k % have`` of sample ``(j + k // have) % N``. Every value is one the samples
    hold (token ids stay ids, an uploaded sample stays in its domain), inputs sharing a
    dimension stay aligned (ids and their mask), and the new positions differ from the old
    ones: repeating one token or one row would let a file that mixes positions wrongly
    (attention over the sequence, pooling, the batch) match the reference there. With one
    sample the axis repeats it. A shrunk axis keeps its first positions.
    """
    import numpy as np

    from stages.kit.samples import dynamic_axes

    found: dict[str, Any] = {}
    for item in inputs:
        pool = samples[item["name"]]
        for axis, dim in dynamic_axes(item["shape"]).items():
            have = pool.shape[1 + axis]
            parts = [np.take(np.roll(pool, -(k // have), axis=0), k % have, axis=1 + axis) for k in range(sizes[dim])]
            pool = np.stack(parts, axis=1 + axis)
        found[item["name"]] = np.ascontiguousarray(pool[:count])
    return found


def base_sizes(samples: dict[str, Any], inputs: list[dict[str, Any]]) -> dict[str, int]:
    """Each named dimension's size in the samples."""
    from stages.kit.samples import dynamic_axes

    base: dict[str, int] = {}
    for item in inputs:
        for axis, dim in dynamic_axes(item["shape"]).items():
            base.setdefault(dim, int(samples[item["name"]].shape[1 + axis]))
    return base


def build(
    samples: dict[str, Any],
    inputs: list[dict[str, Any]],
    output_names: list[str],
    run: Callable[[dict[str, Any]], dict[str, Any]],
    runtime: str,
    unnamed: str = "no named dynamic dimension",
) -> tuple[list[ProbeSet], dict[str, Any]]:
    """The reference at a second size of every named dimension: ``(probe sets, info.probes)``.

    ``samples``: input name -> ``[N, *shape]``; ``inputs``: the signature (a string or null
    in a shape is a named dimension). ``run`` maps resized inputs (``[M, *shape]``) to the
    reference runtime's outputs by name (``[M, *shape]``), and may raise: the model itself
    does not take that size. ``runtime`` names it in the reason (``the PyTorch model``);
    ``unnamed`` is the reason when no input names a dimension.
    ``info.probes`` is ``{"sizes": [base, second]}``, or ``{"sizes", "reason"}`` saying why
    there is no probe (no named dimension, the reference fails there, other outputs).
    """
    from stages.kit.failures import first_line

    base = base_sizes(samples, inputs)
    if not base:
        return [], {"sizes": [], "reason": unnamed}
    sizes = second_sizes(base)
    feed = resized(samples, inputs, sizes, PROBE_SAMPLES)
    try:
        outputs = run(feed)
    except Exception as exc:  # the reference runtime's errors at a shape are many and untyped
        why = getattr(exc, "message", None) or first_line(exc)
        return [], {"sizes": [base], "reason": f"{runtime} fails at {sizes}: {why}"}
    if list(outputs) != output_names:
        return [], {"sizes": [base], "reason": f"{runtime} returns {list(outputs)} at {sizes}, not {output_names}"}
    return [ProbeSet(sizes, feed, outputs)], {"sizes": [base, sizes]}


def to_arrays(probes: list[ProbeSet]) -> dict[str, Any]:
    """The reserved ``reference.npz`` keys of ``probes``."""
    import numpy as np

    arrays: dict[str, Any] = {}
    for index, probe in enumerate(probes):
        key = f"{PREFIX}{index}__"
        arrays[key + "sizes"] = np.array(json.dumps(probe.sizes))
        arrays.update({f"{key}in__{name}": value for name, value in probe.inputs.items()})
        arrays.update({f"{key}out__{name}": value for name, value in probe.outputs.items()})
    return arrays


def load(path: Path) -> list[ProbeSet]:
    """The probe sets stored in ``reference.npz`` (none for a file without them)."""
    import numpy as np

    with np.load(path, allow_pickle=False) as data:
        arrays = {name: data[name] for name in data.files if name.startswith(PREFIX)}
    probes: list[ProbeSet] = []
    index = 0
    while f"{PREFIX}{index}__sizes" in arrays:
        key = f"{PREFIX}{index}__"
        sizes = {str(k): int(v) for k, v in json.loads(str(arrays[key + "sizes"])).items()}
        ins = {name[len(key) + 4 :]: value for name, value in arrays.items() if name.startswith(key + "in__")}
        outs = {name[len(key) + 5 :]: value for name, value in arrays.items() if name.startswith(key + "out__")}
        probes.append(ProbeSet(sizes, ins, outs))
        index += 1
    return probes


def compared_entry(
    entry: dict[str, Any], probe: ProbeSet, actual: dict[str, Any], tolerance: float
) -> tuple[dict[str, Any], list[str]]:
    """A probe that ran: ``entry`` with its verdict and max_abs/scale per output, and the
    comparison's reasons prefixed with the probe's sizes (``at seq=2: ...``). Shared by
    ``validate.tflite`` and the SavedModel check (``stages.kit.saved_model``)."""
    from stages.kit.metrics import compare

    compared = compare(probe.outputs, actual, tolerance)
    result = {
        **entry,
        "ran": True,
        "verdict": compared["verdict"],
        "max_abs_over_scale": {
            name: out["max_abs"] / out["scale"] if out.get("scale") else out.get("max_abs")
            for name, out in compared["outputs"].items()
        },
    }
    at = ", ".join(f"{dim}={size}" for dim, size in probe.sizes.items())
    return result, [f"at {at}: {reason}" for reason in compared["reasons"]]
