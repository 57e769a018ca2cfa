"""End-to-end tests: a job through the API, real Celery workers and real converters."""
