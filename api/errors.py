"""The API's one error shape, {"detail": [{"loc", "msg", "type"}]} (FastAPI's own 422 shape),
for every status: `loc` names the field at fault, or is empty when nothing in the request is."""

from __future__ import annotations

import logging
import re
from typing import Any

import psycopg
from fastapi import FastAPI, HTTPException, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel
from sqlalchemy.exc import InterfaceError, OperationalError
from sqlalchemy.exc import TimeoutError as PoolTimeout
from starlette.exceptions import HTTPException as StarletteHTTPException

from api.fleet import FleetBusy, FleetUnavailable, WorkerFailed
from embedq_core.settings import Settings

log = logging.getLogger(__name__)


class ErrorItem(BaseModel):
    """What is wrong, and where."""

    loc: list[str | int]
    msg: str
    type: str


class ErrorOut(BaseModel):
    """Every error answer."""

    detail: list[ErrorItem]


def _doc(description: str) -> dict[str, Any]:
    return {"model": ErrorOut, "description": description}


# Documented on every protected route, so clients (and schemathesis) know each answer.
ERROR_RESPONSES: dict[int | str, dict[str, Any]] = {
    401: _doc("missing, invalid or revoked API key"),
    404: _doc("unknown collection, job, model or migration"),
    408: _doc("request body not received within EMBEDQ_REQUEST_BODY_TIMEOUT_S"),
    413: _doc("body over EMBEDQ_MAX_REQUEST_BYTES, or too many items or inputs"),
    422: _doc("a field is invalid; loc names it"),
    429: _doc("the model's queue is full; retry after Retry-After seconds"),
    502: _doc("the worker reported an error"),
    503: _doc("Postgres unreachable, or no worker of the model answered; see Retry-After"),
}
# Creating a collection again with another model, or with other chunking.
COLLECTION_CONFLICT_RESPONSES: dict[int | str, dict[str, Any]] = {
    409: _doc("the collection exists bound to another model, or with other chunking"),
}
# /v1/vectorizers changes users' tables: admin keys only, and states that can conflict.
VECTORIZER_RESPONSES: dict[int | str, dict[str, Any]] = {
    **ERROR_RESPONSES,
    403: _doc("not an admin key, or the API's database role may not change that table"),
    409: _doc("the vectorizer exists, or is not in a state for this action"),
    503: _doc("Postgres unreachable, or the table stayed locked; see Retry-After"),
}


def error_content(loc: list[str | int], msg: str, kind: str) -> dict[str, Any]:
    """The body of an error answer."""
    return {"detail": [{"loc": loc, "msg": msg, "type": kind}]}


def error_response(
    status_code: int,
    loc: list[str | int],
    msg: str,
    kind: str,
    headers: dict[str, str] | None = None,
) -> JSONResponse:
    """An error answer in the one shape."""
    return JSONResponse(
        status_code=status_code, content=error_content(loc, msg, kind), headers=headers
    )


def field_error(
    status_code: int,
    loc: list[str | int],
    msg: str,
    kind: str,
    source: str = "body",
    headers: dict[str, str] | None = None,
) -> HTTPException:
    """An HTTPException naming the field at fault (loc is relative to source)."""
    return HTTPException(
        status_code=status_code, detail=error_content([source, *loc], msg, kind), headers=headers
    )


HTTP_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})

# Postgres unreachable, gone mid-query or shut down (through SQLAlchemy or straight from psycopg,
# as the COPY and migration paths use it), or no connection free in the pool in time.
DATABASE_UNAVAILABLE: tuple[type[Exception], ...] = (
    OperationalError,
    InterfaceError,
    PoolTimeout,
    psycopg.OperationalError,
    psycopg.InterfaceError,
)


def allowed_methods(request: Request, fallback: str) -> str:
    """Every method the OpenAPI document lists for this path: Starlette's own 405 names only
    the first route's, so a path served by two routes (GET and POST) would state half."""
    methods: set[str] = set()
    for template, operations in request.app.openapi().get("paths", {}).items():
        pattern = re.sub(r"\\\{[^/]+?\\\}", "[^/]+", re.escape(template))
        if re.fullmatch(pattern, request.url.path):
            methods |= {m.upper() for m in operations if m.upper() in HTTP_METHODS}
    return ", ".join(sorted(methods)) or fallback


def install_error_handlers(app: FastAPI, settings: Settings) -> None:
    """Answer every error in the one shape."""
    retry = {"Retry-After": str(settings.retry_after_s)}

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        if isinstance(exc.detail, dict) and "detail" in exc.detail:
            content = exc.detail
        elif exc.status_code == 400:  # FastAPI's only 400: a body it could not parse
            content = error_content(["body"], str(exc.detail), "json_invalid")
        else:
            content = error_content([], str(exc.detail), "error")
        headers = exc.headers
        if exc.status_code == 405:
            fallback = (headers or {}).get("Allow", "")
            headers = {**(headers or {}), "Allow": allowed_methods(request, fallback)}
        return JSONResponse(status_code=exc.status_code, content=content, headers=headers)

    @app.exception_handler(RequestValidationError)
    async def validation_failed(request: Request, exc: RequestValidationError) -> JSONResponse:
        # FastAPI echoes each bad input back; that fails on lone surrogates and would return
        # megabytes for an oversize text. Name the field and the reason, nothing more.
        detail = [
            {"loc": list(err["loc"]), "msg": err["msg"], "type": err["type"]}
            for err in exc.errors()
        ]
        return JSONResponse(status_code=422, content={"detail": detail})

    async def database_unavailable(request: Request, exc: Exception) -> JSONResponse:
        # An outage or a full pool, not a bad request: ask the client to retry instead of
        # answering 500.
        log.warning("database unavailable: %s: %s", type(exc).__name__, exc)
        return error_response(503, [], "database unavailable; retry later", "unavailable", retry)

    for unavailable in DATABASE_UNAVAILABLE:
        app.add_exception_handler(unavailable, database_unavailable)

    @app.exception_handler(FleetBusy)
    async def fleet_busy(request: Request, exc: FleetBusy) -> JSONResponse:
        return error_response(429, [], str(exc), "busy", retry)

    @app.exception_handler(FleetUnavailable)
    async def fleet_unavailable(request: Request, exc: FleetUnavailable) -> JSONResponse:
        return error_response(503, [], str(exc), "no_worker", retry)

    @app.exception_handler(WorkerFailed)
    async def worker_failed(request: Request, exc: WorkerFailed) -> JSONResponse:
        return error_response(502, [], str(exc), "worker_failed")
