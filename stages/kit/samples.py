"""Validation inputs: synthetic (seeded) or uploaded, always ``[N, *input_shape]``.

Stages work on inputs as dicts ``{"name", "shape", "dtype", "range"?}``: the spec's
(``input_specs``), or those a stage read from the upload (an ONNX graph's, a program's),
which they write to ``info.inputs``. A shape entry that is a string (or null) is a named
dynamic dimension; synthetic samples give it size 1 (or the stage's ``sample_shape``,
e.g. an ExportedProgram's example sizes).

Synthetic data (``spec.seed``, default 0; ``spec.validation_samples``, default 8):

- floating inputs: standard normal when no range is given, since most image and
  feature models expect normalized inputs centred on 0 (uniform [0, 1) would leave
  negative activations untested); uniform in ``[low, high)`` with a range;
- integer inputs: uniform integers in ``[low, high)``, default ``[0, 100)`` (token
  ids must stay below the vocabulary size, so callers pass a range for those);
- bool inputs: fair coin flips.

Uploaded data: ``.npy`` (only for a single input) or ``.npz`` keyed by input name,
recognized by their bytes, loaded with ``allow_pickle=False``. The leading axis is
the sample axis: ``[N, *shape]``. An array with exactly the input's rank is also
accepted when the input's first dimension is a batch (dynamic, or 1): each row along
axis 0 becomes one sample with batch 1. Every uploaded sample is used.

Samples are saved as an uncompressed ``samples.npz`` keyed by input name.
"""

from __future__ import annotations

import zipfile
from pathlib import Path
from typing import Any

import numpy as np

from stages.kit.codes import StageCode
from stages.kit.contract import StageError
from stages.kit.spec import InputDecl, PlanSpec

DEFAULT_SAMPLES = 8
DEFAULT_INT_RANGE = (0, 100)
NPY_MAGIC = b"\x93NUMPY"
ZIP_MAGIC = b"PK\x03\x04"

DTYPES: dict[str, Any] = {
    "float32": np.float32,
    "float16": np.float16,
    "float64": np.float64,
    "int64": np.int64,
    "int32": np.int32,
    "int16": np.int16,
    "int8": np.int8,
    "uint8": np.uint8,
    "bool": np.bool_,
}


def input_specs(spec: PlanSpec) -> list[dict[str, Any]]:
    """The spec's inputs as dicts, checked enough that later stages can rely on them."""
    return check_inputs([_as_dict(item) for item in spec.inputs])


def check_inputs(inputs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """``inputs`` when each has a unique name, a known dtype and a valid shape, else ``invalid_spec``."""
    if not inputs:
        raise StageError(
            StageCode.INVALID_SPEC,
            "spec.inputs must list the model inputs, e.g. "
            '[{"name": "input", "shape": ["batch", 3, 224, 224], "dtype": "float32"}]',
        )
    seen: set[str] = set()
    for item in inputs:
        name = item["name"]
        if not isinstance(name, str) or not name or name in seen:
            raise StageError(StageCode.INVALID_SPEC, f"every input needs a unique, non-empty name: {item!r}")
        seen.add(name)
        if item["dtype"] not in DTYPES:
            raise StageError(
                StageCode.INVALID_SPEC, f"input {name!r}: dtype {item['dtype']!r} is not one of {sorted(DTYPES)}"
            )
        shape = item["shape"]
        if not isinstance(shape, list) or not all(_is_dim(d) for d in shape):
            raise StageError(
                StageCode.INVALID_SPEC,
                f"input {name!r}: shape must be a list of positive ints or dimension names, got {shape!r}",
            )
    return inputs


def public_inputs(inputs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The inputs as ``info.inputs`` lists them: what a user can declare, no stage-derived keys."""
    return [{key: item[key] for key in ("name", "shape", "dtype", "range") if key in item} for item in inputs]


def _as_dict(item: InputDecl) -> dict[str, Any]:
    # "range" only when given: info.inputs lists what the user declared.
    found: dict[str, Any] = {"name": item.name, "shape": list(item.shape), "dtype": item.dtype}
    if item.range is not None:
        found["range"] = list(item.range)
    return found


def concrete_shape(shape: list[Any]) -> tuple[int, ...]:
    """The shape synthetic samples use: named dynamic dimensions get size 1."""
    return tuple(d if isinstance(d, int) else 1 for d in shape)


def sample_shape(item: dict[str, Any]) -> tuple[int, ...]:
    """One synthetic sample's shape: ``sample_shape`` when the stage derived one (an
    ExportedProgram's example sizes), else the spec shape with dynamic dimensions at 1."""
    given = item.get("sample_shape")
    if isinstance(given, list) and len(given) == len(item["shape"]):
        return tuple(int(d) for d in given)
    return concrete_shape(item["shape"])


def dynamic_axes(shape: list[Any]) -> dict[int, str]:
    return {axis: str(d) for axis, d in enumerate(shape) if not isinstance(d, int)}


def synthesize(inputs: list[dict[str, Any]], count: int = DEFAULT_SAMPLES, seed: int = 0) -> dict[str, np.ndarray]:
    """``count`` seeded samples of each input, ``[count, *sample_shape]``."""
    rng = np.random.default_rng(seed)
    samples: dict[str, np.ndarray] = {}
    for item in check_inputs(inputs):
        dtype = np.dtype(DTYPES[item["dtype"]])
        shape = (count, *sample_shape(item))
        low_high = item.get("range")
        data: np.ndarray[Any, Any]
        if dtype.kind == "f":
            if low_high:
                data = rng.uniform(float(low_high[0]), float(low_high[1]), size=shape)
            else:
                data = rng.standard_normal(size=shape)
        elif dtype.kind == "b":
            data = rng.integers(0, 2, size=shape)
        else:
            low, high = low_high or DEFAULT_INT_RANGE
            data = rng.integers(int(low), int(high), size=shape)
        samples[item["name"]] = data.astype(dtype)
    return samples


def load_uploaded(path: Path, inputs: list[dict[str, Any]]) -> dict[str, np.ndarray]:
    inputs = check_inputs(inputs)
    raw = _read_arrays(path, [item["name"] for item in inputs])
    samples = {item["name"]: _fit(item, raw[item["name"]]) for item in inputs}
    counts = {name: array.shape[0] for name, array in samples.items()}
    if len(set(counts.values())) != 1:
        raise StageError(StageCode.INVALID_SAMPLES, f"every input needs the same number of samples, got {counts}")
    if next(iter(counts.values())) == 0:
        raise StageError(StageCode.INVALID_SAMPLES, "the uploaded samples hold zero samples")
    return samples


def build(inputs: list[dict[str, Any]], spec: PlanSpec, uploaded: Path | None) -> dict[str, np.ndarray]:
    """The uploaded samples of ``inputs`` when there are some, else the spec's synthetic ones."""
    if uploaded is not None:
        return load_uploaded(uploaded, inputs)
    return synthesize(inputs, spec.validation_samples, spec.seed)


def save(path: Path, samples: dict[str, np.ndarray]) -> None:
    arrays: dict[str, Any] = dict(samples)
    with path.open("wb") as handle:
        np.savez(handle, **arrays)


def load(path: Path) -> dict[str, np.ndarray]:
    """The arrays of a samples/reference file by name; the probe sets a reference file also
    holds (``stages.kit.probes``, reserved ``__probe`` keys) are left out."""
    with np.load(path, allow_pickle=False) as data:
        return {name: data[name] for name in data.files if not name.startswith("__probe")}


def _is_dim(dim: Any) -> bool:
    if isinstance(dim, bool):
        return False
    return (isinstance(dim, int) and dim > 0) or (isinstance(dim, str) and bool(dim)) or dim is None


MAX_SAMPLES_BYTES = 2 * 1024**3  # declared array data in one uploaded samples/calibration file


def _declared_bytes(handle: Any) -> int:
    """The data size an .npy header declares, read without reading the data."""
    version = np.lib.format.read_magic(handle)
    readers = {(1, 0): np.lib.format.read_array_header_1_0, (2, 0): np.lib.format.read_array_header_2_0}
    if version not in readers:
        raise ValueError(f"unsupported .npy format version {version}")
    shape, _, dtype = readers[version](handle)
    return int(np.prod(shape, dtype=object)) * int(dtype.itemsize)


def _refuse_huge(path: Path, head: bytes) -> None:
    """``samples_too_large`` before numpy allocates what a header declares."""
    if head.startswith(NPY_MAGIC):
        with path.open("rb") as handle:
            declared = _declared_bytes(handle)
    else:
        declared = 0
        with zipfile.ZipFile(path) as archive:
            for member in archive.infolist():
                if member.filename.endswith(".npy"):
                    with archive.open(member) as handle:
                        declared += _declared_bytes(handle)
    if declared > MAX_SAMPLES_BYTES:
        raise StageError(
            StageCode.SAMPLES_TOO_LARGE,
            f"{path.name} declares {declared} bytes of arrays; the limit is {MAX_SAMPLES_BYTES}. "
            "A few dozen samples are enough to validate or calibrate: upload fewer",
        )


def _read_arrays(path: Path, names: list[str]) -> dict[str, np.ndarray]:
    with path.open("rb") as handle:
        head = handle.read(len(NPY_MAGIC))
    try:
        if head.startswith((NPY_MAGIC, ZIP_MAGIC)):
            _refuse_huge(path, head)
        if head.startswith(NPY_MAGIC):
            if len(names) != 1:
                raise StageError(
                    StageCode.INVALID_SAMPLES,
                    f"a .npy file holds one array but the model has "
                    f"{len(names)} inputs {names}: upload an .npz keyed by input name",
                )
            return {names[0]: np.load(path, allow_pickle=False)}
        if head.startswith(ZIP_MAGIC):
            with np.load(path, allow_pickle=False) as data:
                arrays = {key: data[key] for key in data.files}
        else:
            raise StageError(
                StageCode.INVALID_SAMPLES, "samples must be a .npy (one input) or an .npz keyed by input name"
            )
    except (ValueError, OSError, zipfile.BadZipFile) as exc:
        # allow_pickle=False refuses object arrays with a ValueError: say so plainly.
        raise StageError(StageCode.INVALID_SAMPLES, f"could not read the samples file: {exc}") from None
    missing = [name for name in names if name not in arrays]
    unknown = [key for key in arrays if key not in names]
    if missing or unknown:
        raise StageError(
            StageCode.INVALID_SAMPLES,
            f"the .npz keys {sorted(arrays)} must be the input names {names}; missing {missing}, unknown {unknown}",
        )
    return arrays


def _fit(item: dict[str, Any], array: np.ndarray) -> np.ndarray:
    name, shape = item["name"], item["shape"]
    dtype = np.dtype(DTYPES[item["dtype"]])
    expected = "[N, " + ", ".join(str(d) for d in shape) + "]"
    given = list(array.shape)  # as uploaded, before a batch axis is added
    rows = bool(shape) and (not isinstance(shape[0], int) or shape[0] == 1)
    if rows:
        expected += " or [N, " + ", ".join(str(d) for d in shape[1:]) + "]"
    if array.ndim == len(shape) and rows:
        array = array[:, None, ...]  # one row per sample, batch 1
    if array.ndim != len(shape) + 1 or not all(
        not isinstance(want, int) or got == want for got, want in zip(array.shape[1:], shape, strict=True)
    ):
        raise StageError(
            StageCode.INVALID_SAMPLES,
            f"input {name!r}: samples have shape {given}, expected {expected} (sample axis first)",
        )
    if not _castable(array.dtype, dtype):
        raise StageError(
            StageCode.INVALID_SAMPLES,
            f"input {name!r}: samples are {array.dtype}, expected "
            f"{dtype.name} (floats for float inputs, integers for integer inputs)",
        )
    return np.ascontiguousarray(array.astype(dtype, copy=False))


def _castable(got: np.dtype, want: np.dtype) -> bool:
    # Same kind is fine (float64 -> float32, int32 -> int64); across kinds would
    # silently change values (floats truncated into token ids).
    if want.kind == "f":
        return got.kind in "fiu"
    if want.kind in "iu":
        return got.kind in "iu"
    return got.kind == "b"


def run_info(
    samples: dict[str, np.ndarray],
    *,
    uploaded: bool,
    ranges: dict[str, Any],
    seed: int,
    threads: int,
    seconds: dict[str, float],
) -> dict[str, Any]:
    """The validation run's provenance, the same for every input format's export stage."""
    return {
        "samples": int(next(iter(samples.values())).shape[0]),
        "samples_source": "uploaded" if uploaded else "synthetic",
        "synthetic_ranges": ranges,
        "seed": seed,
        "threads": threads,
        "seconds": {name: round(value, 3) for name, value in seconds.items()},
    }
