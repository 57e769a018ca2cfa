"""stages.kit.probes without a runtime: the inputs at a second size and the reference there
(``build``), with plain numpy functions standing in for the reference runtime."""

from __future__ import annotations

from typing import Any

import numpy as np

from stages.kit import probes

INPUTS = [
    {"name": "ids", "shape": ["batch", "seq"], "dtype": "int64"},
    {"name": "mask", "shape": ["batch", "seq"], "dtype": "int64"},
]


def samples(count: int = 4, seq: int = 1) -> dict[str, Any]:
    ids = np.arange(count * seq).reshape(count, 1, seq) + 10
    return {"ids": ids, "mask": ids + 1000}


def test_a_grown_axis_takes_new_values_from_the_following_samples() -> None:
    feed = probes.resized(samples(), INPUTS, {"batch": 2, "seq": 3}, 2)
    assert feed["ids"].shape == (2, 2, 3)
    # Sample 0: batch row 1 and positions 1, 2 come from samples 1, 2, 3 (no repeated token).
    assert feed["ids"][0].tolist() == [[10, 11, 12], [11, 12, 13]]
    assert feed["ids"][1].tolist() == [[11, 12, 13], [12, 13, 10]]
    # Inputs that share a dimension stay aligned, position by position.
    assert (feed["mask"] == feed["ids"] + 1000).all()


def test_a_shrunk_axis_keeps_its_first_positions_and_one_sample_repeats() -> None:
    feed = probes.resized(samples(count=1, seq=4), INPUTS, {"batch": 2, "seq": 3}, 2)
    assert feed["ids"].tolist() == [[[10, 11, 12], [10, 11, 12]]]


def test_build_runs_the_reference_at_the_second_sizes() -> None:
    def run(feed: dict[str, Any]) -> dict[str, Any]:
        # Attention-like: each position sees the whole sequence (a mean over it).
        return {"out": feed["ids"] - feed["ids"].mean(axis=-1, keepdims=True)}

    sets, info = probes.build(samples(), INPUTS, ["out"], run, "the model")
    assert info == {"sizes": [{"batch": 1, "seq": 1}, {"batch": 2, "seq": 2}]}
    (probe,) = sets
    assert probe.outputs["out"].shape == (probes.PROBE_SAMPLES, 2, 2)
    assert np.abs(probe.outputs["out"]).max() > 0  # distinct positions: the mean is not each value


def test_build_says_why_there_is_no_probe() -> None:
    def fails(feed: dict[str, Any]) -> dict[str, Any]:
        raise ValueError("cannot reshape array of size 4 into shape (1,2)\nmore detail")

    fixed = [{"name": "ids", "shape": [1, 1], "dtype": "int64"}]
    assert probes.build({"ids": np.zeros((2, 1, 1))}, fixed, ["out"], fails, "x", "none named") == (
        [],
        {"sizes": [], "reason": "none named"},
    )
    _, info = probes.build(samples(), INPUTS, ["out"], fails, "onnxruntime on the uploaded file")
    assert info == {
        "sizes": [{"batch": 1, "seq": 1}],
        "reason": "onnxruntime on the uploaded file fails at {'batch': 2, 'seq': 2}: "
        "ValueError: cannot reshape array of size 4 into shape (1,2)",
    }
    _, info = probes.build(samples(), INPUTS, ["out"], lambda feed: {"other": feed["ids"]}, "the model")
    assert info["reason"] == "the model returns ['other'] at {'batch': 2, 'seq': 2}, not ['out']"
