"""A SavedModel that does not run at a probe size says why in one line (stages.kit.saved_model.error_line).

TensorFlow's error from a ``tf.function`` starts with "Graph execution error:" and a
traceback; the report used to keep only that first line, which says nothing.
"""

from __future__ import annotations

from stages.kit.saved_model import error_line
from tests.support.toolchain import run_script


def test_a_graph_execution_error_becomes_its_cause_and_node() -> None:
    answer = run_script("onnx2tf", "tf_error_line.py")
    assert answer["message"].startswith("Graph execution error")
    line = answer["line"]
    assert "Graph execution error" not in line
    assert "Input to reshape is a tensor with 8 values, but the requested shape has 4" in line
    assert line.endswith("(node split_heads)")
    assert len(line) <= 300


def test_other_errors_keep_their_first_line() -> None:
    assert error_line(ValueError("Dimension size must be even\nmore detail")) == "Dimension size must be even"
    assert error_line(RuntimeError("")) == "RuntimeError"
    assert len(error_line(ValueError("x" * 1000))) == 300
