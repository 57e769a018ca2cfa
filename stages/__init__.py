"""Conversion stages: a framework-free package run by a toolchain's interpreter.

Each stage is a plain function ``run(request) -> StageResult``. The package imports
no framework at module level; a stage imports torch, onnx or tensorflow itself, so the
same package serves every toolchain environment. Nothing here knows about HTTP, the
database or Celery: see ``stages.kit.contract`` for the JSON contract with the worker.
"""
