"""Running a SavedModel for the tests, executed by a TensorFlow environment's Python
(onnx-tf's, or onnx2tf's for the SavedModels onnx2tf wrote).

    tf_models.py run_saved_model SAVED_MODEL.zip INPUTS.npy OUT.npz

Unzips the archive, loads it with ``tf.saved_model.load`` and calls its ``serving_default``
signature once per sample (the way a TensorFlow user serves it). Prints one JSON line.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import zipfile
from pathlib import Path

import numpy as np


def cmd_run_saved_model(args: argparse.Namespace) -> dict:
    import tensorflow as tf

    with tempfile.TemporaryDirectory() as unpacked:
        with zipfile.ZipFile(args.archive) as archive:
            archive.extractall(unpacked)
        (model_dir,) = {p.parent for p in Path(unpacked).rglob("saved_model.pb")}
        function = tf.saved_model.load(str(model_dir)).signatures["serving_default"]
        (input_name, spec), *others = function.structured_input_signature[1].items()
        assert not others, "one input expected"
        output_names = sorted(function.structured_outputs)
        outputs = []
        for sample in np.load(args.inputs):
            result = function(**{input_name: tf.constant(sample, dtype=spec.dtype)})
            outputs.append(result[output_names[0]].numpy())
    np.savez(args.out, output=np.stack(outputs))
    return {"input": input_name, "outputs": output_names, "shape": list(np.stack(outputs).shape)}


def main() -> None:
    parser = argparse.ArgumentParser()
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("run_saved_model")
    p.add_argument("archive")
    p.add_argument("inputs")
    p.add_argument("out")
    args = parser.parse_args()
    print(json.dumps(globals()[f"cmd_{args.command}"](args)))


if __name__ == "__main__":
    main()
