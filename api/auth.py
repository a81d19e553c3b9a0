"""Bearer API keys on every endpoint but the health checks."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request

from api.deps import Resources
from api.errors import field_error
from embedq_core.api_keys import verify_key


def require_api_key(request: Request, resources: Resources) -> int | None:
    """The caller's key id; 401 when the key is missing, wrong or revoked."""
    if not resources.settings.auth_required:
        return None
    scheme, _, token = request.headers.get("authorization", "").partition(" ")
    key_id = None
    if scheme.lower() == "bearer" and token.strip():
        with resources.engine.connect() as conn:
            key_id = verify_key(conn, token.strip())
    if key_id is None:
        raise field_error(
            401,
            ["authorization"],
            "missing, invalid or revoked API key (Authorization: Bearer <key>)",
            "unauthorized",
            source="header",
            headers={"WWW-Authenticate": "Bearer"},
        )
    return key_id


ApiKey = Annotated[int | None, Depends(require_api_key)]
