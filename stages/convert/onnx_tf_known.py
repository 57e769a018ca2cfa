"""onnx-tf failures recognised by their cause, said in the user's terms.

onnx-tf 1.10 converts each ONNX ``LSTM`` node to a ``tf.compat.v1`` RNN built in one
variable scope; with two LSTM nodes one after the other (``nn.LSTM(..., num_layers=2)``,
which every exporter writes as one LSTM node per layer) the SavedModel is written, but
running it fails: the second layer's cell is given the first layer's kernel, e.g.
"Matrix size-incompatible: In[0]: [1,64], In[1]: [56,128]" (the second layer's input and
state, 32+32, against the first's kernel, 24+32 rows; seen with torch 2.14.1 and
TensorFlow 2.15). The generic mapping (``stages.kit.failures.unexpected``) would already
say ``conversion_failed`` with that line; ``stacked_lstm`` says what it means.
"""

from __future__ import annotations

import sys
import traceback
from typing import Any

from stages.kit.codes import StageCode
from stages.kit.contract import StageError
from stages.kit.failures import summary


def stacked_lstm(model: Any, exc: BaseException) -> StageError | None:
    """``conversion_failed`` naming stacked LSTMs, when ``model`` (an ``onnx.ModelProto``)
    has two or more LSTM nodes and running onnx-tf's SavedModel failed (``exc``) at an
    LSTM's cell; None for any other failure. The traceback goes to the stage log."""
    lstms = sum(1 for node in model.graph.node if node.op_type == "LSTM")
    text = str(exc).lower()
    if lstms < 2 or "lstm" not in text:
        return None
    traceback.print_exception(exc, file=sys.stderr)
    return StageError(
        StageCode.CONVERSION_FAILED,
        f"onnx-tf cannot convert stacked LSTMs (num_layers > 1; this model has {lstms} LSTM layers): "
        f"its SavedModel gives later layers the first one's weights ({summary(exc, 60)}). "
        "Use the onnx2tf or litert-torch toolchain, or drop saved_model from the targets",
    )
