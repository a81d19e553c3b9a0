"""Table vectorizers over HTTP, for admin keys: bind, list, read, pause, resume, drop. The same
operations as `embedq vectorize`; the API's database role must own the table it binds."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import psycopg
from fastapi import APIRouter, Depends, Request, status

from api.auth import require_api_key
from api.deps import ApiResources, Resources
from api.errors import field_error
from api.json_body import OffLoopJsonRoute
from api.vectorizer_schemas import ResumeIn, VectorizerIn, VectorizerName, VectorizerOut
from embedq_core.api_keys import is_admin
from embedq_core.catalog import Chunking, candidate_models
from embedq_core.db import libpq_url
from migrations.reembed import control, row_failures
from migrations.reembed.locking import LockPolicy, LockTimeout
from migrations.reembed.progress import Progress, list_migrations, progress
from migrations.reembed.state import MigrationNotFound, load
from migrations.reembed.target import TargetError
from migrations.reembed.text_source import TemplateError
from migrations.reembed.vectorizer import draft_vectorizer, drop

NOT_ADMIN = "managing vectorizers needs an admin key (embedq keys create NAME --admin)"


def require_admin(request: Request, resources: Resources) -> None:
    """403 unless the caller's key is an admin key (with auth off, everyone may)."""
    key_id = require_api_key(request)
    if key_id is None:
        return
    with resources.engine.connect() as conn:
        admin = is_admin(conn, key_id)
    if not admin:
        raise field_error(403, ["authorization"], NOT_ADMIN, "forbidden", source="header")


router = APIRouter(
    prefix="/v1/vectorizers",
    tags=["vectorizers"],
    route_class=OffLoopJsonRoute,
    dependencies=[Depends(require_admin)],
)


@contextmanager
def _connection(resources: ApiResources) -> Iterator[psycopg.Connection[Any]]:
    # Autocommit: the pending-rows index is built CONCURRENTLY; named in pg_stat_activity.
    url = libpq_url(resources.settings.require_database_url())
    with psycopg.connect(url, autocommit=True, application_name="embedq api vectorize") as conn:
        yield conn


@contextmanager
def _answers(name: str) -> Iterator[None]:
    """The control layer's errors as the API's one error shape."""
    try:
        yield
    except MigrationNotFound as exc:
        raise field_error(404, ["name"], str(exc), "not_found", "path") from exc
    except (TargetError, TemplateError) as exc:
        raise field_error(422, [], str(exc), "invalid_binding") from exc
    except control.MigrationStateError as exc:
        raise field_error(409, ["name"], str(exc), "conflict", "path") from exc
    except LockTimeout as exc:
        raise field_error(503, [], str(exc), "lock_timeout", headers={"Retry-After": "30"}) from exc
    except psycopg.errors.InsufficientPrivilege as exc:
        msg = (
            f"the API's database role may not change that table ({exc}): "
            "run `embedq vectorize` as its owner"
        )
        raise field_error(403, [], msg, "forbidden") from exc


def _out(figures: Progress) -> VectorizerOut:
    return VectorizerOut(
        **{k: v for k, v in figures.as_dict().items() if k in VectorizerOut.model_fields}
    )


def _vectorizer(conn: psycopg.Connection[Any], name: str) -> VectorizerOut:
    if not load(conn, name).is_vectorizer:
        raise MigrationNotFound(
            f"no vectorizer named {name!r} ({name} is a re-embedding migration)"
        )
    return _out(progress(conn, name))


@router.post("", status_code=status.HTTP_201_CREATED)
def create(body: VectorizerIn, resources: Resources) -> VectorizerOut:
    """Bind a table: its rows are backfilled, then every insert and text change is embedded.
    Answers once the columns, triggers and pending-rows index exist."""
    with resources.engine.connect() as conn:
        models = [m for m in candidate_models(conn, body.model) if not m.is_reranker]
    if not models:
        raise field_error(
            404, ["model"], f"no registered embedding model {body.model!r}", "not_found"
        )
    settings = resources.settings
    with _connection(resources) as conn, _answers(body.name):
        draft = draft_vectorizer(
            conn,
            body.name,
            body.table,
            body.id,
            body.text,
            body.template,
            body.vector,
            models[0],
            body.chunk_size or settings.reembed_chunk_size,
            None
            if body.chunking is None
            else Chunking(body.chunking.max_tokens, body.chunking.overlap_tokens),
        )
        control.start(conn, draft, resources.celery, LockPolicy.from_settings(settings))
        return _vectorizer(conn, body.name)


@router.get("")
def list_all(resources: Resources) -> list[VectorizerOut]:
    """Every vectorizer's figures."""
    with _connection(resources) as conn:
        return [_out(progress(conn, name)) for name in list_migrations(conn, kind="vectorizer")]


@router.get("/{name}")
def read(name: VectorizerName, resources: Resources) -> VectorizerOut:
    """Rows, pending, lag, rate, phase and refused rows."""
    with _connection(resources) as conn, _answers(name):
        return _vectorizer(conn, name)


@router.post("/{name}/pause")
def pause(name: VectorizerName, resources: Resources) -> VectorizerOut:
    """Stop after the current chunk; writes keep queueing rows."""
    with _connection(resources) as conn, _answers(name):
        _vectorizer(conn, name)
        control.pause(conn, name)
        return _vectorizer(conn, name)


@router.post("/{name}/resume")
def resume(
    name: VectorizerName, resources: Resources, body: ResumeIn | None = None
) -> VectorizerOut:
    """Continue (also after a failure); optionally release parked rows."""
    with _connection(resources) as conn, _answers(name):
        _vectorizer(conn, name)
        if body is not None and body.retry_parked:
            row_failures.retry_parked(conn, name)
        control.resume(conn, name, resources.celery)
        return _vectorizer(conn, name)


@router.delete("/{name}", status_code=status.HTTP_204_NO_CONTENT)
def remove(name: VectorizerName, resources: Resources, drop_columns: bool = False) -> None:
    """Remove the trigger and indexes; the vectors stay unless drop_columns."""
    with _connection(resources) as conn, _answers(name):
        _vectorizer(conn, name)
        drop(conn, name, LockPolicy.from_settings(resources.settings), drop_columns)
