"""API keys: random, shown once, stored only as a sha256 digest.

Keys carry 256 bits of randomness, so a fast digest is enough (no password hashing needed);
lookup is by digest and the final comparison is constant-time.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import Connection, func, insert, or_, select, update

from embedq_core.tables import api_keys

KEY_PREFIX = "eq_"


@dataclass(frozen=True)
class ApiKeyInfo:
    """What may be shown about a key: never the key itself."""

    key_id: int
    name: str
    prefix: str
    created_at: datetime
    revoked_at: datetime | None


def key_digest(key: str) -> str:
    """The stored form of a key."""
    return hashlib.sha256(key.encode("utf-8")).hexdigest()


def create_key(conn: Connection, name: str, admin: bool = False) -> tuple[int, str]:
    """Make a key (an admin key may also manage vectorizers); returns its id and the
    plaintext, which is not stored anywhere."""
    key = KEY_PREFIX + secrets.token_urlsafe(32)
    key_id = conn.execute(
        insert(api_keys)
        .values(name=name, prefix=key[:10], key_sha256=key_digest(key), admin=admin)
        .returning(api_keys.c.id)
    ).scalar_one()
    return int(key_id), key


def is_admin(conn: Connection, key_id: int) -> bool:
    """Whether an active key is an admin key."""
    row = conn.execute(
        select(api_keys.c.admin).where(api_keys.c.id == key_id, api_keys.c.revoked_at.is_(None))
    ).first()
    return bool(row is not None and row.admin)


def revoke_key(conn: Connection, key_id_or_prefix: str) -> int:
    """Revoke by numeric id or by the shown prefix; returns how many keys were revoked."""
    condition = api_keys.c.prefix == key_id_or_prefix
    if key_id_or_prefix.isdigit():
        condition = or_(condition, api_keys.c.id == int(key_id_or_prefix))
    result = conn.execute(
        update(api_keys)
        .where(condition, api_keys.c.revoked_at.is_(None))
        .values(revoked_at=func.now())
    )
    return int(result.rowcount)


def list_keys(conn: Connection) -> list[ApiKeyInfo]:
    """All keys, revoked ones included."""
    rows = conn.execute(select(api_keys).order_by(api_keys.c.id)).mappings().all()
    return [
        ApiKeyInfo(r["id"], r["name"], r["prefix"], r["created_at"], r["revoked_at"]) for r in rows
    ]


def verify_key(conn: Connection, presented: str) -> int | None:
    """The id of the active key matching presented, or None."""
    digest = key_digest(presented)
    row = conn.execute(
        select(api_keys.c.id, api_keys.c.key_sha256).where(
            api_keys.c.key_sha256 == digest, api_keys.c.revoked_at.is_(None)
        )
    ).first()
    if row is None or not hmac.compare_digest(row.key_sha256, digest):
        return None
    return int(row.id)
