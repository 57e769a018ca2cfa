"""API keys: stored as SHA-256 digests; the secret exists only in the creator's hands."""

from __future__ import annotations

import hashlib
import secrets

from sqlalchemy import select
from sqlalchemy.orm import Session

from domain.models import ApiKey
from domain.models.base import utcnow

DEFAULT_TENANT = "default"
KEY_PREFIX = "mp_"


def hash_key(secret: str) -> str:
    return hashlib.sha256(secret.encode("utf-8")).hexdigest()


def generate_secret() -> str:
    return KEY_PREFIX + secrets.token_urlsafe(32)


def seed_admin_key(session: Session, secret: str) -> ApiKey:
    """Make ``secret`` a valid admin key of the default tenant, whatever keys exist."""
    digest = hash_key(secret)
    key = session.scalar(select(ApiKey).where(ApiKey.key_hash == digest))
    if key is None:
        key = ApiKey(tenant=DEFAULT_TENANT, key_hash=digest, is_admin=True, label="MODELPORT_API_KEY")
        session.add(key)
    else:
        key.is_admin, key.revoked_at = True, None
    session.flush()
    return key


def create_key(
    session: Session, tenant: str, *, is_admin: bool = False, label: str | None = None
) -> tuple[ApiKey, str]:
    secret = generate_secret()
    key = ApiKey(tenant=tenant, key_hash=hash_key(secret), is_admin=is_admin, label=label)
    session.add(key)
    session.flush()
    return key, secret


def authenticate(session: Session, secret: str) -> ApiKey | None:
    key = session.scalar(select(ApiKey).where(ApiKey.key_hash == hash_key(secret)))
    if key is None or key.revoked_at is not None:
        return None
    return key


def revoke(session: Session, key: ApiKey) -> None:
    key.revoked_at = utcnow()
    session.flush()
