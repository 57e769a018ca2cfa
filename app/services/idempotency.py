"""A short-lived reservation of an Idempotency-Key while its first request uploads.

The job row (with its unique (tenant, key)) exists only once the upload is stored, so a
second request with the same key arriving meanwhile is told 409 instead of uploading a
duplicate. The reservation lives in Redis with a TTL, so a crashed API process cannot hold
a key forever.
"""

from __future__ import annotations

import structlog
from redis import Redis
from redis.exceptions import RedisError

log = structlog.get_logger()
RESERVATION_SECONDS = 3600  # longer than the largest upload takes
_RELEASE = "if redis.call('get', KEYS[1]) == ARGV[1] then return redis.call('del', KEYS[1]) else return 0 end"


class KeyReservation:
    def __init__(self, redis: Redis, tenant: str, key: str, holder: str) -> None:
        self.redis, self.name, self.holder = redis, f"modelport:idempotency:{tenant}:{key}", holder
        self.held = False

    def acquire(self) -> bool:
        """True when this request holds the key (or Redis is unreachable: fail open)."""
        try:
            self.held = bool(self.redis.set(self.name, self.holder, nx=True, ex=RESERVATION_SECONDS))
        except RedisError as exc:
            log.warning("idempotency.reservation_unavailable", error=str(exc))
            return True
        return self.held

    def release(self) -> None:
        if not self.held:
            return
        try:
            self.redis.eval(_RELEASE, 1, self.name, self.holder)
        except RedisError as exc:
            log.warning("idempotency.release_failed", error=str(exc))
