"""Child process of ``stages.convert.tf_ptq``: TensorFlow's post-training full-integer quantization.

``python -m stages.convert.tf_ptq_child <job.json>`` (onnx-tf or onnx2tf env) with job keys
``saved_model`` (the directory), ``calibration`` (.npz keyed by the spec's input names,
``[N, *input shape]`` in PyTorch's layout), ``input_transposes`` (input name -> the
permutation that turns one PyTorch-layout sample into what the signature takes),
``int8_io``, ``output`` and ``report``. It writes the int8 .tflite and a JSON report
(the converter's flags, how many samples were calibrated). A child because the MLIR
converter and its calibrator abort the process on some graphs: that costs the attempt,
never the float32 conversion.

The converter, as TensorFlow documents full-integer quantization
(tensorflow.org/lite/performance/post_training_quantization#integer_only):
``TFLiteConverter.from_saved_model(dir, signature_keys=["serving_default"])``,
``optimizations=[Optimize.DEFAULT]``, ``representative_dataset``,
``target_spec.supported_ops=[OpsSet.TFLITE_BUILTINS_INT8]`` (an op without an int8 kernel
fails the conversion instead of staying float), and ``inference_input_type`` /
``inference_output_type`` float32 (int8 with ``int8_io``). TensorFlow's defaults are kept:
int8 weights symmetric per output channel for convolutions and dense layers, int8
activations affine per tensor from min/max over the calibration samples, int32 biases.
Inputs that are not float (token ids) stay as they are, with ``int8_io`` too: the converter
puts a QUANTIZE after float inputs only, and ``inference_input_type`` changes only inputs
with one ("... the `inference_input_type` attribute will default to the original type",
``_modify_model_input_type_per_subgraph`` in tensorflow/lite/python/util.py, 2.15.1).

The representative dataset yields one dict per sample keyed by the signature's input
names, not a list: a list is matched to the inputs by position, and the order of a
SavedModel's inputs is not the spec's ("since TensorFlow 2.7 we recommend the
signature-based approach ... because the input tensor ordering can be easily flipped",
quoted in tensorflow/tensorflow#62664; onnx2tf matches calibration data to signature
names for the same reason, PINTO0309/onnx2tf#249). Each value is fed in the signature's
own layout and dtype (an NHWC input of onnx2tf's SavedModel gets the sample transposed).
"""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

SIGNATURE = "serving_default"


def signature_inputs(
    specs: dict[str, Any], arrays: dict[str, np.ndarray], transposes: dict[str, list[int]]
) -> dict[str, np.ndarray]:
    """``arrays`` (spec name -> ``[N, *shape]``, PyTorch layout) keyed by the signature's input
    names, transposed where ``transposes`` says and cast to each input's dtype.

    ``specs``: signature input name -> ``tf.TensorSpec``. Raises ``ValueError`` when the names
    cannot be matched or a sample does not fit its input's shape."""
    from stages.kit.naming import match_names
    from stages.quantize.calibration import to_layout

    keys, left = match_names(list(arrays), list(specs))
    if left:
        raise ValueError(f"the SavedModel's inputs {sorted(specs)} do not match the model's {list(arrays)}")
    fitted: dict[str, np.ndarray] = {}
    for name, key in keys.items():
        array = to_layout(arrays[name], transposes.get(name))
        spec = specs[key]
        if not spec.shape.is_compatible_with(array.shape[1:]):
            raise ValueError(
                f"input {name!r}: calibration samples of shape {list(array.shape[1:])} do not fit the "
                f"SavedModel input {key!r} of shape {spec.shape.as_list()}"
            )
        fitted[key] = np.ascontiguousarray(array.astype(spec.dtype.as_numpy_dtype, copy=False))
    return fitted


def main(job_path: str) -> int:
    job = json.loads(Path(job_path).read_text())
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    import tensorflow as tf

    from stages.kit import samples as sample_io

    started = time.monotonic()
    saved_model = str(job["saved_model"])
    specs = tf.saved_model.load(saved_model).signatures[SIGNATURE].structured_input_signature[1]
    feed = signature_inputs(specs, sample_io.load(Path(job["calibration"])), job.get("input_transposes") or {})
    count = int(next(iter(feed.values())).shape[0])

    def representative() -> Any:
        for index in range(count):
            yield {key: array[index] for key, array in feed.items()}

    io_type = tf.int8 if job.get("int8_io") else tf.float32
    converter = tf.lite.TFLiteConverter.from_saved_model(saved_model, signature_keys=[SIGNATURE])
    converter.optimizations = [tf.lite.Optimize.DEFAULT]
    converter.representative_dataset = representative
    converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
    converter.inference_input_type = io_type
    converter.inference_output_type = io_type
    converter.allow_custom_ops = False
    Path(job["output"]).write_bytes(converter.convert())
    flags = {
        "source": "saved_model",
        "signature_keys": [SIGNATURE],
        "optimizations": ["DEFAULT"],
        "supported_ops": ["TFLITE_BUILTINS_INT8"],
        "inference_input_type": io_type.name,
        "inference_output_type": io_type.name,
        "allow_custom_ops": False,
        "representative_dataset": "one dict per sample, keyed by the signature's input names",
        "experimental_new_quantizer": bool(getattr(converter, "experimental_new_quantizer", True)),
        "per_channel": not bool(getattr(converter, "_experimental_disable_per_channel", False)),
    }
    report = {
        "tensorflow": tf.__version__,
        "converter": flags,
        "calibrated_samples": count,
        "seconds": round(time.monotonic() - started, 3),
    }
    Path(job["report"]).write_text(json.dumps(report))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1]))
