"""Benchmarks of the real service: the pipeline, the toolchains, the precisions, the API under load."""
