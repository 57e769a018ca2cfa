"""What the broker knows: messages waiting in each queue, and the live workers consuming it.

Read by the API's /metrics and /readyz; both ask at request time, so every API process
gives the same answer.
"""

from __future__ import annotations

from redis import Redis

from domain.toolchains import TOOLCHAINS
from worker.celery_app import CONTROL_QUEUE, celery_app, queue_name

# Logical queue names (metric labels, readiness checks); the broker's names add the prefix.
QUEUES: tuple[str, ...] = (CONTROL_QUEUE, *TOOLCHAINS)


def queue_depths(redis: Redis) -> dict[str, int]:
    """Messages waiting (sent, not yet taken by a worker) per logical queue.

    Kombu's Redis transport keeps a queue as a list named after it; tasks are sent without
    a priority, so no other list holds them. Taken but unacknowledged messages are not
    counted (they are running). Raises ``redis.RedisError`` when Redis is unreachable.
    """
    pipe = redis.pipeline(transaction=False)
    for queue in QUEUES:
        pipe.llen(queue_name(queue))
    return {queue: int(length) for queue, length in zip(QUEUES, pipe.execute(), strict=True)}


def live_workers(timeout: float) -> dict[str, int]:
    """Workers that answered within ``timeout`` seconds, per logical queue they consume.

    One broadcast of Celery's ``active_queues`` inspect command: every live worker replies
    with its queues, and the call returns when ``timeout`` is over (Celery cannot know how
    many replies to expect). Workers of other prefixes sharing the broker are not counted.
    Raises kombu's/redis's connection errors when the broker is unreachable (after at most
    ``timeout`` seconds of trying to connect).
    """
    counts = dict.fromkeys(QUEUES, 0)
    logical = {queue_name(queue): queue for queue in QUEUES}
    with celery_app.connection_for_write() as connection:
        connection.ensure_connection(max_retries=1, interval_start=0, timeout=timeout)
        replies = celery_app.control.inspect(timeout=timeout, connection=connection).active_queues() or {}
    for consumed in replies.values():
        for queue in {logical.get(entry.get("name", "")) for entry in consumed or []} - {None}:
            counts[queue] += 1  # type: ignore[index]
    return counts
