"""Export: load an upload (state dict, TorchScript, .pt2, ONNX); write the reference ONNX and outputs."""
