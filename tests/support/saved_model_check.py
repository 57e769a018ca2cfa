"""Load a ``saved_model.zip`` in TensorFlow and run the reference's samples through its
``serving_default``, independently of the stage that wrote and checked it.

Usage: python saved_model_check.py saved_model.zip samples.npz reference.npz
Prints one JSON line: the signature's input and output keys (with shapes) and, per
reference output, ``max_abs``, ``scale`` and the per-sample ``shape`` it returned.
Runs in a toolchain environment with TensorFlow (onnx2tf's or onnx-tf's).
"""

from __future__ import annotations

import json
import sys
import tempfile
import zipfile
from pathlib import Path

import numpy as np
import tensorflow as tf


def main(archive: str, samples_path: str, reference_path: str) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        with zipfile.ZipFile(archive) as opened:
            opened.extractall(tmp)
        loaded = tf.saved_model.load(str(Path(tmp) / "saved_model"))
        function = loaded.signatures["serving_default"]
        specs = function.structured_input_signature[1]
        samples = dict(np.load(samples_path))
        reference = dict(np.load(reference_path))
        count = next(iter(samples.values())).shape[0]
        actual: dict[str, list[np.ndarray]] = {}
        for index in range(count):
            feed = {name: tf.constant(samples[name][index], dtype=specs[name].dtype) for name in samples}
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
        return {
            "inputs": {name: spec.shape.as_list() for name, spec in specs.items()},
            "outputs": sorted(function.structured_outputs),
            "compared": outputs,
        }


if __name__ == "__main__":
    print(json.dumps(main(*sys.argv[1:4])))
