"""Celery workers: the job chain, the stage runner and the toolchain environments."""
