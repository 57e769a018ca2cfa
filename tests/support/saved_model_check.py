"""Load a ``saved_model.zip`` in TensorFlow and run the reference's samples through its
``serving_default``, independently of the stage that wrote and checked it.

Usage: python saved_model_check.py saved_model.zip samples.npz reference.npz
Prints one JSON line: the signature's input and output keys (with shapes) and, per
reference output, ``max_abs``, ``scale`` and the per-sample ``shape`` it returned.
The probe sets the reference file holds (``__probe<i>__sizes``, ``__probe<i>__in__<input>``,
``__probe<i>__out__<output>``: the reference at a second size of every named dimension)
run the same way: ``probes`` lists, per set, its ``sizes`` and the same numbers. The keys
are read here, not through the stages' code, so a stage that stored them wrongly shows.
Runs in a toolchain environment with TensorFlow (onnx2tf's or onnx-tf's).
"""

from __future__ import annotations

import json
import sys
import tempfile
import zipfile
from pathlib import Path
from typing import Any

import numpy as np
import tensorflow as tf

PROBE = "__probe"


def compared(function: Any, specs: dict[str, Any], inputs: dict[str, Any], reference: dict[str, Any]) -> dict:
    """Each sample of ``inputs`` (``[N, *shape]``) through the signature, against ``reference``."""
    count = next(iter(inputs.values())).shape[0]
    actual: dict[str, list[np.ndarray]] = {}
    for index in range(count):
        feed = {name: tf.constant(inputs[name][index], dtype=specs[name].dtype) for name in inputs}
        for name, value in function(**feed).items():
            actual.setdefault(name, []).append(value.numpy())
    outputs = {}
    for name, ref in reference.items():
        got = np.stack(actual[name]) if name in actual else None
        same = got is not None and got.shape == ref.shape
        outputs[name] = {
            "shape": list(got.shape[1:]) if got is not None else None,
            "max_abs": float(np.max(np.abs(got.astype(np.float64) - ref))) if same else None,
            "scale": float(np.max(np.abs(ref))),
        }
    return outputs


def probe_sets(arrays: dict[str, Any]) -> list[tuple[dict[str, int], dict[str, Any], dict[str, Any]]]:
    sets = []
    index = 0
    while f"{PROBE}{index}__sizes" in arrays:
        key = f"{PROBE}{index}__"
        ins = {name[len(key) + 4 :]: value for name, value in arrays.items() if name.startswith(key + "in__")}
        outs = {name[len(key) + 5 :]: value for name, value in arrays.items() if name.startswith(key + "out__")}
        sets.append((json.loads(str(arrays[key + "sizes"])), ins, outs))
        index += 1
    return sets


def main(archive: str, samples_path: str, reference_path: str) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        with zipfile.ZipFile(archive) as opened:
            opened.extractall(tmp)
        loaded = tf.saved_model.load(str(Path(tmp) / "saved_model"))
        function = loaded.signatures["serving_default"]
        specs = function.structured_input_signature[1]
        samples = dict(np.load(samples_path))
        arrays = dict(np.load(reference_path))
        reference = {name: value for name, value in arrays.items() if not name.startswith(PROBE)}
        probes = [
            {
                "sizes": sizes,
                "shapes": {name: list(value.shape[1:]) for name, value in ins.items()},
                "compared": compared(function, specs, ins, outs),
            }
            for sizes, ins, outs in probe_sets(arrays)
        ]
        return {
            "inputs": {name: spec.shape.as_list() for name, spec in specs.items()},
            "outputs": sorted(function.structured_outputs),
            "compared": compared(function, specs, samples, reference),
            "probes": probes,
        }


if __name__ == "__main__":
    print(json.dumps(main(*sys.argv[1:4])))
