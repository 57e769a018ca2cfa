"""A real TensorFlow error at a shape a SavedModel's signature cannot take, and the line
``stages.kit.saved_model.error_line`` makes of it (run in the onnx2tf environment).

Prints JSON: ``{"message": <the error's full text>, "line": <error_line's answer>}``.
"""

import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

import tensorflow as tf  # noqa: E402

from stages.kit.saved_model import error_line  # noqa: E402


@tf.function(input_signature=[tf.TensorSpec([None, 4], tf.float32)])
def heads(x: tf.Tensor) -> tf.Tensor:
    # A reshape that hard-codes the example's batch of 1, as exported graphs do.
    return tf.reshape(x, [1, 2, 2], name="split_heads")


try:
    heads(tf.zeros([2, 4]))
except Exception as exc:  # noqa: BLE001 - the error under test
    print(json.dumps({"message": str(exc), "line": error_line(exc)}))
