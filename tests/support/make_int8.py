"""Full-integer (int8) TFLite from a zipped SavedModel, run by the onnx-tf environment's Python.

    python make_int8.py SAVED_MODEL.zip SAMPLES.npz OUT.tflite

The stage tests use it to get the artifact DESIGN.md reports as crashing LiteRT (an int8
resnet18 from the onnx-tf chain), without waiting for the quantization stages.
"""

from __future__ import annotations

import sys
import tempfile
import zipfile
from pathlib import Path


def main(saved_model_zip: Path, samples_path: Path, out: Path) -> None:
    import numpy as np
    import tensorflow as tf

    with tempfile.TemporaryDirectory() as work, np.load(samples_path) as samples:
        zipfile.ZipFile(saved_model_zip).extractall(work)
        converter = tf.lite.TFLiteConverter.from_saved_model(str(Path(work) / "saved_model"))
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
        converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
        converter.representative_dataset = lambda: (
            {name: samples[name][i] for name in samples.files} for i in range(len(samples[samples.files[0]]))
        )
        out.write_bytes(converter.convert())


if __name__ == "__main__":
    main(Path(sys.argv[1]), Path(sys.argv[2]), Path(sys.argv[3]))
