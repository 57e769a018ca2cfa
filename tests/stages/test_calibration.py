"""stages.quantize.calibration: which calibration data int8 gets (numpy only)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from stages.kit.contract import StageError
from stages.kit.spec import PlanSpec
from stages.quantize import calibration

SPEC = PlanSpec.from_json({"inputs": [{"name": "input", "shape": [1, 3, 8, 8], "dtype": "float32"}]})


def _upload(tmp_path: Path, array: np.ndarray) -> Path:
    path = tmp_path / "calibration.npy"
    np.save(path, array)
    return path


def test_finite_upload_is_used_as_given(tmp_path: Path) -> None:
    array = np.random.default_rng(0).standard_normal((6, 3, 8, 8)).astype(np.float32)
    arrays, info = calibration.calibration_arrays(SPEC, _upload(tmp_path, array), {})
    assert info == {"source": "uploaded", "samples": 6}
    assert arrays["input"].shape == (6, 1, 3, 8, 8)
    assert np.array_equal(arrays["input"][:, 0], array)


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_non_finite_upload_is_invalid_calibration(tmp_path: Path, bad: float) -> None:
    array = np.zeros((4, 3, 8, 8), np.float32)
    array[1, 2, 3, 4] = bad
    array[3, 0, 0, 0] = bad
    with pytest.raises(StageError) as caught:
        calibration.calibration_arrays(SPEC, _upload(tmp_path, array), {})
    assert caught.value.code == "invalid_calibration"
    assert "input 'input': 2 of 768 values are NaN or infinite" in caught.value.message
