"""Convert: ONNX or PyTorch to SavedModel and .tflite, one module per converter (onnx2tf, onnx-tf, litert-torch)."""
