"""What the broker knows: messages waiting in each queue, and the live workers consuming it.

Read by the API's /metrics and /readyz; both ask at request time, so every API process
gives the same answer.
"""

from __future__ import annotations

from celery import Celery
from redis import Redis

from domain.config import Settings
from domain.toolchains import QUEUES, queue_name


def queue_depths(redis: Redis, settings: Settings) -> dict[str, int]:
    """Messages waiting (sent, not yet taken by a worker) per logical queue.

    Kombu's Redis transport keeps a queue as a list named after it; tasks are sent without
    a priority, so no other list holds them. Taken but unacknowledged messages are not
    counted (they are running). Raises ``redis.RedisError`` when Redis is unreachable.
    """
    pipe = redis.pipeline(transaction=False)
    for queue in QUEUES:
        pipe.llen(queue_name(settings, queue))
    return {queue: int(length) for queue, length in zip(QUEUES, pipe.execute(), strict=True)}


def live_workers(celery: Celery, settings: Settings) -> dict[str, int]:
    """Workers that answered within the ping timeout, per logical queue they consume.

    One broadcast of Celery's ``active_queues`` inspect command: every live worker replies
    with its queues, and the call returns when ``MODELPORT_WORKER_PING_TIMEOUT_SECONDS`` is
    over (Celery cannot know how many replies to expect). Workers of other prefixes sharing
    the broker are not counted. Raises kombu's/redis's connection errors when the broker is
    unreachable (after at most that timeout of trying to connect).
    """
    timeout = settings.queue.worker_ping_timeout_seconds
    counts = dict.fromkeys(QUEUES, 0)
    logical = {queue_name(settings, queue): queue for queue in QUEUES}
    with celery.connection_for_write() as connection:
        connection.ensure_connection(max_retries=1, interval_start=0, timeout=timeout)
        replies = celery.control.inspect(timeout=timeout, connection=connection).active_queues() or {}
    for consumed in replies.values():
        for queue in {logical.get(entry.get("name", "")) for entry in consumed or []} - {None}:
            counts[queue] += 1  # type: ignore[index]
    return counts
