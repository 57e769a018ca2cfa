"""Celery workers (`celery -A worker.main`): thin tasks, the job chain, the stage runner, the env builder."""
