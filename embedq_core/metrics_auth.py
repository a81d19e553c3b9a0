"""The bearer token that guards every /metrics endpoint (API and workers) when it is set."""

from __future__ import annotations

import hmac


def metrics_authorized(authorization: str, token: str | None) -> bool:
    """Whether an Authorization header carries the metrics token; any header passes when no
    token is configured (then keep the endpoint on a private network)."""
    if token is None:
        return True
    scheme, _, given = authorization.partition(" ")
    return scheme.lower() == "bearer" and hmac.compare_digest(
        given.strip().encode("utf-8"), token.encode("utf-8")
    )
