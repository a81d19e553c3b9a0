"""Error answers that name the field at fault, in FastAPI's own 422 shape."""

from __future__ import annotations

from typing import Any

from fastapi import HTTPException


def field_error(
    status_code: int, loc: list[str | int], msg: str, kind: str, source: str = "body"
) -> HTTPException:
    """An HTTPException whose detail matches FastAPI's validation errors: [{loc, msg, type}]."""
    detail: list[dict[str, Any]] = [{"loc": [source, *loc], "msg": msg, "type": kind}]
    return HTTPException(status_code=status_code, detail=detail)
