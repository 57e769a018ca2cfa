"""Calibration data for static int8, and how samples fit the float .tflite's inputs (numpy only).

Where calibration data comes from, best first:

1. ``uploaded``: the job's ``calibration`` file (.npy for one input, .npz keyed by input
   name, sample axis first, PyTorch's layout), read with the same rules as uploaded
   validation samples (``stages.kit.samples.load_uploaded``). A file that does not fit the
   spec's inputs, or holds NaN or infinite values, is an error for int8 alone: falling
   back silently would hide it.
2. ``validation samples``: the samples the job validates on, when the user uploaded
   them - real data, but the int8 numbers are then measured on the data the ranges
   were calibrated on.
3. ``synthetic``: the seeded synthetic samples (recognized by regenerating them from
   the spec), with the warning ``calibration: synthetic (accuracy unknown)``: activation
   ranges from random inputs need not match real data.

Samples follow the spec (PyTorch's layout). The file may take an input channel-last
(``layout: nhwc`` from onnx2tf): ``input_transposes`` (per input, the permutation
applied to one sample, as ``validate.tflite`` takes it) comes from the options, or is
inferred when the PyTorch shape does not fit the file and the channel-last one does.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from stages.kit import samples as sample_io
from stages.kit.codes import StageCode
from stages.kit.contract import StageError
from stages.kit.spec import PlanSpec
from stages.kit.tflite_boundary import Boundary, channel_last_perm, permute, shape_fits

SYNTHETIC_WARNING = "calibration: synthetic (accuracy unknown)"
VALIDATION_WARNING = "calibration: validation samples (int8 is measured on the same data its ranges were calibrated on)"
DEFAULT_LIMIT = 500


def input_transposes(
    given: dict[str, list[int]] | None, samples: dict[str, np.ndarray], boundary: Boundary, keys: dict[str, str]
) -> tuple[dict[str, list[int]], str]:
    """(per input name, the permutation of one sample the file needs; where that came from)."""
    if given:
        return {name: list(perm) for name, perm in given.items()}, "options"
    ports = {port.key: port for port in boundary.inputs}
    inferred: dict[str, list[int]] = {}
    for name, key in keys.items():
        if name not in samples:
            continue
        shape, wanted = list(samples[name].shape[1:]), ports[key].shape
        if len(shape) == 4 and not shape_fits(wanted, shape):
            perm = channel_last_perm(4)
            if shape_fits(wanted, permute(shape, perm)):
                inferred[name] = perm
    return inferred, "inferred from the file's input shapes" if inferred else "none"


def to_layout(array: np.ndarray, perm: list[int] | None) -> np.ndarray:
    """``[N, *shape]`` samples with each sample's axes permuted by ``perm`` (``[0, 2, 3, 1]``:
    NCHW to NHWC), the sample axis left first; unchanged for ``None``."""
    return array if perm is None else np.transpose(array, [0, *(axis + 1 for axis in perm)])


def to_file_inputs(
    arrays: dict[str, np.ndarray], boundary: Boundary, keys: dict[str, str], transposes: dict[str, list[int]]
) -> dict[str, np.ndarray]:
    """``[N, *shape]`` arrays keyed by the file's signature keys, in its layout and dtypes."""
    ports = {port.key: port for port in boundary.inputs}
    fitted: dict[str, np.ndarray] = {}
    for name, key in keys.items():
        array = to_layout(arrays[name], transposes.get(name))
        port = ports[key]
        if not shape_fits(port.shape, list(array.shape[1:])):
            raise StageError(
                StageCode.INVALID_CALIBRATION,
                f"input {name!r}: calibration samples of shape {list(array.shape[1:])} do not fit the "
                f".tflite input {key!r} of shape {port.shape}",
            )
        fitted[key] = np.ascontiguousarray(array.astype(np.dtype(port.dtype), copy=False))
    return fitted


def calibration_arrays(
    spec: PlanSpec, uploaded: Path | None, samples: dict[str, np.ndarray], limit: int = DEFAULT_LIMIT
) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
    """(arrays keyed by input name, ``{"source", "samples", "warning"?, "available"?}``).

    Arrays are ``[N, *input_shape]`` in the spec's dtypes, at most ``limit`` samples.
    Raises ``StageError(INVALID_CALIBRATION)`` when the uploaded file does not fit the
    spec's inputs or holds a NaN or infinite value in a float input.
    """
    if uploaded is not None:
        try:
            arrays = sample_io.load_uploaded(uploaded, sample_io.input_specs(spec))
        except StageError as exc:
            raise StageError(StageCode.INVALID_CALIBRATION, f"the calibration file: {exc.message}") from None
        _refuse_non_finite(arrays)
        info: dict[str, Any] = {"source": "uploaded"}
    else:
        arrays = samples
        synthetic = _is_synthetic(spec, samples)
        info = {
            "source": "synthetic" if synthetic else "validation samples",
            "warning": SYNTHETIC_WARNING if synthetic else VALIDATION_WARNING,
        }
    available = int(next(iter(arrays.values())).shape[0])
    info["samples"] = min(available, limit)
    if available > limit:
        # The first ones: an uploaded file's order is the user's choice, and reproducible.
        info["available"] = available
        arrays = {name: array[:limit] for name, array in arrays.items()}
    return arrays, info


def _refuse_non_finite(arrays: dict[str, np.ndarray]) -> None:
    # Activation ranges from NaN/inf samples are meaningless: ai-edge-quantizer's files
    # then crash LiteRT (SIGSEGV) and TensorFlow's converter still writes a file, so a
    # job would keep an int8 file calibrated on nothing. Refuse the file by name instead.
    for name, array in arrays.items():
        if array.dtype.kind != "f":
            continue
        bad = int(array.size - np.count_nonzero(np.isfinite(array)))
        if bad:
            raise StageError(
                StageCode.INVALID_CALIBRATION,
                f"the calibration file: input {name!r}: {bad} of {array.size} values are NaN or infinite; "
                "calibration samples must be finite",
            )


def _is_synthetic(spec: PlanSpec, samples: dict[str, np.ndarray]) -> bool:
    # export.prepare's synthetic samples are reproducible from the spec's seed.
    try:
        synthetic = sample_io.synthesize(sample_io.input_specs(spec), spec.validation_samples, spec.seed)
    except StageError:
        return False
    return set(synthetic) == set(samples) and all(
        synthetic[name].shape == samples[name].shape and np.array_equal(synthetic[name], samples[name])
        for name in samples
    )
