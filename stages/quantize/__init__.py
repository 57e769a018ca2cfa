"""Quantize: dynamic-range, float16 and full-int8 .tflite files with calibration and their verdicts."""
