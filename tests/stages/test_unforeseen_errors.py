"""An exception a stage did not foresee becomes its role's code and one line in the user's terms.

The messages below have the shape the frameworks really print (TensorFlow's op errors start
with "Graph execution error:" and a stack of graph frames before the reason and the node);
the code under test is the mapping and the summary, not the framework.
"""

from __future__ import annotations

import pytest

from stages.kit.failures import unexpected
from stages.registry import STAGES, unforeseen

TF_OP_ERROR = """Graph execution error:

Detected at node 'onnx_tf_prefix_LSTM_1/transpose' defined at (most recent call last):
    File "/env/lib/python3.11/site-packages/onnx_tf/backend.py", line 120, in run
      outputs = self.tf_module(**inputs)
    File "/env/lib/python3.11/site-packages/onnx_tf/handlers/backend/lstm.py", line 201, in _common
      return tf.transpose(x, perm)
Node: 'onnx_tf_prefix_LSTM_1/transpose'
Incompatible shapes: [1,128] vs. [1,96]
\t [[{{node onnx_tf_prefix_LSTM_1/transpose}}]] [Op:__inference_run_1234]
"""


class InvalidArgumentError(Exception):
    """Stands for tf.errors.InvalidArgumentError: only its name and message matter here."""


def test_every_converting_stage_has_its_roles_code() -> None:
    codes = {name: unforeseen(name)[0] for name in STAGES}
    expected = {
        "export.prepare": "export_failed",
        "convert.onnx_tf": "conversion_failed",
        "convert.onnx2tf": "conversion_failed",
        "convert.litert_torch": "conversion_failed",
        "validate.tflite": "validation_failed",
        "quantize.litert": "quantization_failed",
    }
    for name, code in expected.items():
        assert codes[name] == code, name
    assert unforeseen("no.such.stage")[0] == "stage_failed"


def test_a_tensorflow_op_error_is_one_line_naming_the_converter_reason_and_node() -> None:
    try:
        try:
            raise KeyError("onnx_tf_prefix_LSTM_1")
        except KeyError as inner:
            raise InvalidArgumentError(TF_OP_ERROR) from inner
    except InvalidArgumentError as exc:
        error = unexpected(*unforeseen("convert.onnx_tf"), exc)
    assert error.code == "conversion_failed"
    message = error.message
    assert "\n" not in message
    assert len(message) <= 300
    for noise in ("Traceback", "Graph execution error", "File "):
        assert noise not in message
    assert message.startswith("The onnx-tf converter failed unexpectedly: InvalidArgumentError: Incompatible shapes")
    assert "onnx_tf_prefix_LSTM_1/transpose" in message
    assert "spec.toolchain" in message
    assert "stage log" in message


@pytest.mark.parametrize("length", [10, 5000])
def test_a_long_or_short_message_stays_one_bounded_line(length: int) -> None:
    error = unexpected(*unforeseen("convert.onnx2tf"), ValueError("x" * length + "\nsecond line"))
    assert "\n" not in error.message
    assert "second line" not in error.message
    assert len(error.message) <= 300


def test_an_exception_without_a_message_takes_its_causes() -> None:
    try:
        try:
            raise RuntimeError("LayerNormalization is not supported at opset 17")
        except RuntimeError as inner:
            raise AssertionError() from inner
    except AssertionError as exc:
        error = unexpected(*unforeseen("convert.onnx2tf"), exc)
    assert "LayerNormalization is not supported at opset 17" in error.message
