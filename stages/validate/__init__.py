"""Validate: run a converted .tflite on the reference samples and compare it with the PyTorch outputs."""
