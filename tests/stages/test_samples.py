"""stages.kit.samples: synthetic and uploaded validation inputs (numpy only)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest

from stages.kit import samples
from stages.kit.contract import StageError
from stages.kit.spec import PlanSpec


def spec(**changes: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "inputs": [
            {"name": "pixels", "shape": ["batch", 3, 8, 8], "dtype": "float32"},
            {"name": "ids", "shape": [1, "seq"], "dtype": "int64", "range": [0, 30]},
        ],
        "validation_samples": 5,
        "seed": 7,
    }
    base.update(changes)
    return base


def synthesize(raw: dict[str, Any]) -> dict[str, np.ndarray]:
    typed = PlanSpec.from_json(raw)
    return samples.synthesize(samples.input_specs(typed), typed.validation_samples, typed.seed)


def inputs(raw: dict[str, Any]) -> list[dict[str, Any]]:
    return samples.input_specs(PlanSpec.from_json(raw))


def test_synthetic_samples_are_seeded_and_shaped() -> None:
    first = synthesize(spec())
    second = synthesize(spec())
    assert list(first) == ["pixels", "ids"]
    assert first["pixels"].shape == (5, 1, 3, 8, 8)
    assert first["pixels"].dtype == np.float32
    assert first["ids"].shape == (5, 1, 1)
    assert first["ids"].dtype == np.int64
    assert first["ids"].min() >= 0
    assert first["ids"].max() < 30
    assert all(np.array_equal(first[k], second[k]) for k in first)
    other = synthesize(spec(seed=8))
    assert not np.array_equal(first["pixels"], other["pixels"])
    # No range: standard normal, so negative inputs are exercised too.
    assert first["pixels"].min() < 0 < first["pixels"].max()


def test_float_range_is_respected() -> None:
    data = synthesize(spec(inputs=[{"name": "x", "shape": [2, 2], "dtype": "float32", "range": [5, 6]}]))
    assert data["x"].min() >= 5
    assert data["x"].max() < 6


def test_save_and_load_round_trip(tmp_path: Path) -> None:
    data = synthesize(spec())
    samples.save(tmp_path / "samples.npz", data)
    loaded = samples.load(tmp_path / "samples.npz")
    assert list(loaded) == ["pixels", "ids"]
    assert all(np.array_equal(data[k], loaded[k]) for k in data)


def test_uploaded_npz_with_the_sample_axis(tmp_path: Path) -> None:
    path = tmp_path / "inputs.npz"
    np.savez(path, pixels=np.ones((3, 1, 3, 8, 8), np.float64), ids=np.ones((3, 1, 6), np.int32))
    data = samples.load_uploaded(path, inputs(spec()))
    assert data["pixels"].shape == (3, 1, 3, 8, 8)
    assert data["pixels"].dtype == np.float32
    assert data["ids"].shape == (3, 1, 6)
    assert data["ids"].dtype == np.int64


def test_uploaded_npy_rows_become_batch_one_samples(tmp_path: Path) -> None:
    path = tmp_path / "inputs.npy"
    np.save(path, np.zeros((4, 3, 8, 8), np.float32))
    one_input = spec(inputs=[spec()["inputs"][0]])
    assert samples.load_uploaded(path, inputs(one_input))["pixels"].shape == (4, 1, 3, 8, 8)


@pytest.mark.parametrize(
    ("arrays", "fragment"),
    [
        (
            {"pixels": np.zeros((2, 1, 3, 9, 9), np.float32), "ids": np.zeros((2, 1, 4), np.int64)},
            "[N, batch, 3, 8, 8]",
        ),
        ({"pixels": np.zeros((2, 1, 3, 8, 8), np.float32)}, "missing ['ids']"),
        ({"pixels": np.zeros((2, 1, 3, 8, 8), np.float32), "ids": np.zeros((2, 1, 4), np.float32)}, "'ids'"),
        (
            {"pixels": np.zeros((2, 1, 3, 8, 8), np.float32), "ids": np.zeros((3, 1, 4), np.int64)},
            "same number",
        ),
    ],
)
def test_bad_uploads_name_the_input(tmp_path: Path, arrays: dict[str, np.ndarray], fragment: str) -> None:
    path = tmp_path / "inputs.npz"
    np.savez(path, **arrays)  # type: ignore[arg-type]
    with pytest.raises(StageError) as caught:
        samples.load_uploaded(path, inputs(spec()))
    assert caught.value.code == "invalid_samples"
    assert fragment in caught.value.message


def test_a_misfit_names_the_shape_as_uploaded_and_both_accepted_forms(tmp_path: Path) -> None:
    path = tmp_path / "inputs.npy"
    np.save(path, np.zeros((4, 3, 9, 9), np.float32))  # rows of batch 1, wrong size
    with pytest.raises(StageError) as caught:
        samples.load_uploaded(path, inputs(spec(inputs=[spec()["inputs"][0]])))
    assert caught.value.code == "invalid_samples"
    assert "samples have shape [4, 3, 9, 9], expected [N, batch, 3, 8, 8] or [N, 3, 8, 8]" in caught.value.message


def test_npy_for_several_inputs_and_pickles_are_refused(tmp_path: Path) -> None:
    path = tmp_path / "inputs.npy"
    np.save(path, np.zeros((2, 1, 3, 8, 8), np.float32))
    with pytest.raises(StageError, match="one array"):
        samples.load_uploaded(path, inputs(spec()))
    pickled = tmp_path / "objects.npy"
    np.save(pickled, np.array([{"a": 1}], dtype=object), allow_pickle=True)
    with pytest.raises(StageError) as caught:
        samples.load_uploaded(pickled, inputs(spec(inputs=[spec()["inputs"][0]])))
    assert caught.value.code == "invalid_samples"


def test_invalid_spec_inputs() -> None:
    for bad in (
        [],
        [{"name": "x", "shape": [0, 3], "dtype": "float32"}],
        [{"name": "x", "shape": [1], "dtype": "complex64"}],
    ):
        with pytest.raises(StageError) as caught:
            inputs({"inputs": bad})
        assert caught.value.code == "invalid_spec"


def _npy_header(shape: tuple[int, ...]) -> bytes:
    """An .npy header declaring ``shape`` float32 with (almost) no data behind it."""
    import io

    buffer = io.BytesIO()
    np.lib.format.write_array_header_1_0(buffer, {"descr": "<f4", "fortran_order": False, "shape": shape})
    return buffer.getvalue() + b"\0" * 64


@pytest.mark.parametrize("container", ["npy", "npz"])
def test_a_huge_declared_array_is_refused_before_it_is_allocated(tmp_path: Path, container: str) -> None:
    import zipfile

    header = _npy_header((100_000, 3, 1024, 1024))  # 1.2 TB declared
    path = tmp_path / f"samples.{container}"
    if container == "npy":
        path.write_bytes(header)
    else:
        with zipfile.ZipFile(path, "w") as archive:
            archive.writestr("pixels.npy", header)
    one_input = {"inputs": [{"name": "pixels", "shape": [1, 3, 1024, 1024], "dtype": "float32"}]}
    with pytest.raises(StageError) as error:
        samples.load_uploaded(path, inputs(one_input))
    assert error.value.code == "samples_too_large"
    assert "upload fewer" in error.value.message
