"""Named dynamic dimensions the spec declares, against what a .tflite really keeps.

A candidate that cannot keep a declared dynamic dimension (litert-torch with static
shapes, a converter that pins the batch) delivers a file with that dimension fixed at
the sample's size. The file can still be exact, so this is not a failure of the numbers;
it is said in the artifact's reasons and the candidate loses to one that keeps the
dimension (``domain.jobs.selection``). Issue 9, item 6.
"""

from __future__ import annotations

from typing import Any

from stages.kit import samples as sample_io


def frozen_dims(
    inputs: list[dict[str, Any]],
    tflite_inputs: dict[str, dict[str, Any]],
    input_map: dict[str, str],
    transposes: dict[str, list[int]] | None = None,
) -> list[dict[str, Any]]:
    """The declared dynamic dimensions the file fixes: ``[{"input", "dim", "axis", "fixed_at"}]``.

    ``inputs``: the spec's inputs (``{"name", "shape"}``, a string entry is a named
    dimension); ``tflite_inputs``: the file's inputs by key with their ``shape``
    (``shape_signature``: -1 where dynamic); ``input_map``: input name -> file key;
    ``transposes``: input name -> the permutation the file's layout applies (file axis
    ``j`` holds PyTorch axis ``perm[j]``). Inputs the file lacks are skipped.
    """
    frozen: list[dict[str, Any]] = []
    for item in inputs:
        name = item["name"]
        key = input_map.get(name)
        port = tflite_inputs.get(key) if key is not None else None
        if port is None:
            continue
        shape = list(port["shape"])
        perm = (transposes or {}).get(name) or list(range(len(shape)))
        named = sample_io.dynamic_axes(item["shape"])
        for file_axis, torch_axis in enumerate(perm):
            if torch_axis in named and file_axis < len(shape) and int(shape[file_axis]) != -1:
                frozen.append(
                    {"input": name, "dim": named[torch_axis], "axis": torch_axis, "fixed_at": int(shape[file_axis])}
                )
    return frozen


def frozen_reasons(frozen: list[dict[str, Any]]) -> list[str]:
    """One sentence per fixed dimension, for the artifact's reasons."""
    return [
        f"input {item['input']!r}: the file fixes dimension {item['dim']!r} (axis {item['axis']}) at "
        f"{item['fixed_at']}, which the spec declares dynamic; other sizes will not run"
        for item in frozen
    ]
