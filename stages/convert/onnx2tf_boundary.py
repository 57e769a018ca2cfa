"""The boundary of onnx2tf's .tflite: what to fix so it keeps ModelPort's contract, and a check.

onnx2tf decides per model whether a 3-D to 5-D output leaves channel-last (a conv
output does; the same tensor behind a sigmoid may not) and does not say so.
``plan`` compares each output's shape with the reference - and, where the shape
cannot tell ([1, 4, 4, 4], or dynamic dimensions), one sample's values - and plans
a TRANSPOSE for every output that is not in PyTorch's layout. Inputs are checked the
same way against the layout asked for (``-k`` normally takes care of them). Names the
tool sanitized are renamed back to the stable ones. ``stages.kit.tflite_boundary`` applies
the plan.

``sanity_check`` runs one sample through the final file in this environment's
ai-edge-litert, in a child process (``stages.kit.litert_child``) because a converted
file can crash the runtime. Its numbers are for the record: the verdict belongs to
``validate.tflite``.
"""

from __future__ import annotations

import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from stages.kit import child
from stages.kit import samples as sample_io
from stages.kit import tflite_boundary as boundary_io
from stages.kit.child import RuntimeJob
from stages.kit.codes import StageCode
from stages.kit.contract import StageError
from stages.kit.naming import match_names
from stages.kit.tflite_boundary import channel_first_perm, channel_last_perm, permute, shape_fits

CHILD_TIMEOUT = 600


@dataclass
class Plan:
    input_map: dict[str, str] = field(default_factory=dict)  # stable name -> key in onnx2tf's file
    output_map: dict[str, str] = field(default_factory=dict)
    input_perms: dict[str, list[int]] = field(default_factory=dict)  # by file key, for rewrite()
    output_perms: dict[str, list[int]] = field(default_factory=dict)
    renames: dict[str, str] = field(default_factory=dict)  # file key -> stable name
    # By stable name: the permutation from a PyTorch-layout sample to what the final file takes.
    input_transposes: dict[str, list[int]] = field(default_factory=dict)
    resolved_by_values: list[str] = field(default_factory=list)


def plan(raw: Path, samples: dict[str, Any], reference: dict[str, Any], layout: str, work: Path) -> Plan:
    found = boundary_io.read(raw)
    ports_in = {port.key: port for port in found.inputs}
    ports_out = {port.key: port for port in found.outputs}
    result = Plan()
    result.input_map, _ = match_names(list(samples), list(ports_in))
    result.output_map, out_left = match_names(list(reference), list(ports_out))
    # Inputs the exporter pruned (unused) are legitimately absent from the file.
    if out_left or len(result.input_map) != len(ports_in):
        raise StageError(
            StageCode.CONVERSION_FAILED,
            f"cannot map the .tflite signature ({list(ports_in)} -> {list(ports_out)}) to the "
            f"model's inputs {list(samples)} / outputs {list(reference)}",
        )
    problems = [
        problem
        for name, key in result.input_map.items()
        if (problem := _plan_input(result, name, key, ports_in[key].shape, list(samples[name].shape[1:]), layout))
    ]
    ambiguous: list[str] = []
    for name, key in result.output_map.items():
        have, shape = ports_out[key].shape, list(reference[name].shape[1:])
        rank = len(shape)
        as_is = shape_fits(have, shape)
        channel_last = rank in (3, 4, 5) and shape_fits(have, permute(shape, channel_last_perm(rank)))
        if as_is and channel_last:
            ambiguous.append(name)
        elif channel_last:
            result.output_perms[key] = channel_first_perm(rank)
        elif not as_is:
            problems.append(f"output {name!r}: the .tflite gives shape {have}, expected {shape} as PyTorch does")
    if problems:
        raise StageError(StageCode.CONVERSION_FAILED, "; ".join(problems))
    if ambiguous:
        _resolve_by_values(raw, samples, reference, result, ambiguous, work)
    for name, key in {**result.input_map, **result.output_map}.items():
        if key != name:
            result.renames[key] = name
    return result


def _plan_input(result: Plan, name: str, key: str, have: list[int], shape: list[int], layout: str) -> str | None:
    """Plan one input; a problem is returned, so that every mismatch is reported at once."""
    rank = len(shape)
    public = shape
    if layout == "nhwc" and rank == 4:
        public = permute(shape, channel_last_perm(4))
        result.input_transposes[name] = channel_last_perm(4)
    if shape_fits(have, public):
        return None  # also when the shape cannot tell: -k is then trusted, and the sanity check shows
    if public == shape and rank in (3, 4, 5) and shape_fits(have, permute(shape, channel_last_perm(rank))):
        result.input_perms[key] = channel_last_perm(rank)  # went channel-last although kept with -k
    elif public != shape and shape_fits(have, shape):
        result.input_perms[key] = channel_first_perm(4)  # stayed NCHW where NHWC was asked
    else:
        return f"input {name!r}: the .tflite takes shape {have}, expected {public} ({layout})"
    return None


def _resolve_by_values(
    raw: Path, samples: dict[str, Any], reference: dict[str, Any], result: Plan, names: list[str], work: Path
) -> None:
    """Per ambiguous output, keep the layout whose values are closer to the reference on sample 0."""
    import numpy as np

    feed = first_sample(samples, result.input_map, result.input_transposes, result.input_perms)
    actual, failure = run_litert(raw, feed, [result.output_map[name] for name in names], work)
    if actual is None:
        print(f"onnx2tf.boundary: cannot run the raw file ({failure}); keeping {names} as they are", flush=True)
        return
    for name in names:
        value = np.asarray(actual[result.output_map[name]][0], np.float64)
        expected = np.asarray(reference[name][0], np.float64)
        perm = channel_first_perm(value.ndim)
        if np.max(np.abs(np.transpose(value, perm) - expected)) < np.max(np.abs(value - expected)):
            result.output_perms[result.output_map[name]] = perm
        result.resolved_by_values.append(name)


def sanity_check(
    tflite: Path, samples: dict[str, Any], reference: dict[str, Any], result: Plan, tolerance: float, work: Path
) -> dict[str, Any]:
    """Sample 0 through the final file (whose keys are the stable names)."""
    from stages.kit.metrics import compare

    feed = first_sample(samples, {name: name for name in result.input_map}, result.input_transposes, {})
    actual, failure = run_litert(tflite, feed, list(result.output_map), work)
    if actual is None:
        return {"samples": 1, "ran": False, "reason": failure}
    compared = compare({name: value[:1] for name, value in reference.items()}, actual, tolerance)
    return {
        "samples": 1,
        "ran": True,
        "runtime": "ai-edge-litert of the onnx2tf environment, XNNPACK",
        "within_tolerance": compared["verdict"] == "pass",
        "max_abs/scale": {
            name: entry["max_abs"] / entry["scale"] if entry.get("scale") else entry.get("max_abs")
            for name, entry in compared["outputs"].items()
        },
        "reasons": compared["reasons"],
    }


def first_sample(
    samples: dict[str, Any], keys: dict[str, str], public_perms: dict[str, list[int]], file_perms: dict[str, list[int]]
) -> dict[str, Any]:
    """Sample 0 of each input (``[1, *shape]``), keyed by the file's key, laid out as the file takes it.

    ``public_perms`` (by stable name) turn PyTorch's layout into the public one;
    ``file_perms`` (by file key) are the transposes a raw file does not have yet.
    """
    import numpy as np

    feed: dict[str, Any] = {}
    for name, key in keys.items():
        value = samples[name][:1]
        for perm in (public_perms.get(name), file_perms.get(key)):
            if perm is not None:
                value = np.transpose(value, [0, *(axis + 1 for axis in perm)])
        feed[key] = np.ascontiguousarray(value)
    return feed


def run_litert(
    tflite: Path, feed: dict[str, Any], output_keys: list[str], work: Path
) -> tuple[dict[str, Any] | None, str | None]:
    """``feed`` (keyed by the file's input keys) through ``stages.kit.litert_child``, once.

    Returns the outputs keyed by ``output_keys`` (or None) and the failure, if any.
    """
    job_dir = Path(tempfile.mkdtemp(prefix="litert-", dir=work))
    sample_io.save(job_dir / "samples.npz", feed)
    job = RuntimeJob(
        tflite, job_dir / "samples.npz", list(feed), output_keys, warmup=0, runs=1, timeout_seconds=CHILD_TIMEOUT
    )
    ran = child.run_litert(job, job_dir)
    if ran.failure is None and ran.outputs is not None:
        return ran.outputs, None
    reason = ran.failure or "runtime failed: it wrote no outputs"
    return None, f"the {reason}" if reason.startswith("runtime") else reason
