"""Bearer API keys on every endpoint but the health checks, checked before the body is read."""

from __future__ import annotations

from typing import Annotated

import anyio
from fastapi import Depends, Request
from sqlalchemy import Engine

from api.body_limit import App, Receive, Scope, Send
from api.errors import DATABASE_UNAVAILABLE, error_response, field_error
from embedq_core.api_keys import verify_key

# Every route of the API proper (/v2/: Cohere's v2 rerank path); health, metrics (its own
# token) and the docs are open.
PROTECTED_PREFIXES = ("/v1/", "/v2/")
UNAUTHORIZED = "missing, invalid or revoked API key (Authorization: Bearer <key>)"
# Where ApiKeyGate leaves the key it verified, for require_api_key (request.state.api_key_id).
STATE_KEY = "api_key_id"


def bearer_token(authorization: str) -> str | None:
    """The token of an `Authorization: Bearer <token>` header, or None."""
    scheme, _, token = authorization.partition(" ")
    return (token.strip() or None) if scheme.lower() == "bearer" else None


class ApiKeyGate:
    """Verifies the API key from the headers alone, before the body limit reads a byte: a
    request without a valid key is answered 401 at once and costs no memory for its body (its
    connection is closed, the body never read). Pure ASGI, outside BodyLimit."""

    def __init__(self, app: App, engine: Engine, retry_after_s: int) -> None:
        self.app = app
        self.engine = engine
        self.retry_after_s = retry_after_s

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or not str(scope["path"]).startswith(PROTECTED_PREFIXES):
            await self.app(scope, receive, send)
            return
        headers = dict(scope["headers"])
        token = bearer_token(headers.get(b"authorization", b"").decode("latin-1"))
        key_id = None
        if token is not None:
            try:
                key_id = await anyio.to_thread.run_sync(self._verify, token)
            except DATABASE_UNAVAILABLE:
                retry = {"Retry-After": str(self.retry_after_s)}
                busy = "database unavailable; retry later"
                await error_response(503, [], busy, "unavailable", retry)(scope, receive, send)
                return
        if key_id is None:
            refused = error_response(
                401,
                ["header", "authorization"],
                UNAUTHORIZED,
                "unauthorized",
                {"WWW-Authenticate": "Bearer", "Connection": "close"},
            )
            await refused(scope, receive, send)
            return
        scope.setdefault("state", {})[STATE_KEY] = key_id
        await self.app(scope, receive, send)

    def _verify(self, token: str) -> int | None:
        with self.engine.connect() as conn:
            return verify_key(conn, token)


def require_api_key(request: Request) -> int | None:
    """The caller's key id, as ApiKeyGate verified it (None when auth is off); 401 for a route
    the gate does not cover."""
    key_id: int | None = request.scope.get("state", {}).get(STATE_KEY)
    if key_id is None and request.app.state.resources.settings.auth_required:
        raise field_error(
            401,
            ["authorization"],
            UNAUTHORIZED,
            "unauthorized",
            source="header",
            headers={"WWW-Authenticate": "Bearer"},
        )
    return key_id


ApiKey = Annotated[int | None, Depends(require_api_key)]
