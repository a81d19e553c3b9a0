"""The API's validation, in process: FastAPI's TestClient on the real app, the session's real
Postgres (no API or worker process). Every bad request gets a 4xx naming the field, and
nothing is written."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi.testclient import TestClient
from sqlalchemy import Engine, func, select

from api.main import create_app
from embedq_core.api_keys import create_key
from embedq_core.catalog import create_collection, register_model_dir
from embedq_core.db import make_engine
from embedq_core.manifest import ModelManifest
from embedq_core.tables import job_items, jobs
from ops.devstack.stack import EmbeddedStack

LONG_TEXT = "The quick brown fox jumps over the lazy dog. " * 60  # ~600 tokens for MiniLM
COLLECTION = "validation"


class InProcessApi:
    """The real app behind a TestClient, with a key and a MiniLM collection."""

    def __init__(self, client: TestClient, engine: Engine, key: str, max_request_bytes: int):
        self.client = client
        self.engine = engine
        self.auth = {"Authorization": f"Bearer {key}"}
        self.max_request_bytes = max_request_bytes

    def post(self, path: str, body: dict[str, Any]) -> httpx.Response:
        # json.dumps escapes what UTF-8 cannot carry (a lone surrogate) as a client would.
        headers = {**self.auth, "Content-Type": "application/json"}
        return self.client.post(path, content=json.dumps(body), headers=headers)

    def counts(self) -> tuple[int, int]:
        with self.engine.connect() as conn:
            return (
                conn.execute(select(func.count()).select_from(jobs)).scalar_one(),
                conn.execute(select(func.count()).select_from(job_items)).scalar_one(),
            )


@pytest.fixture(scope="module")
def api(
    stack: EmbeddedStack, minilm_dir: Path, minilm_manifest: ModelManifest
) -> Iterator[InProcessApi]:
    settings = stack.settings().model_copy(update={"model_dir": minilm_dir})
    engine = make_engine(settings.require_database_url(), pool_size=2)
    with engine.begin() as conn:
        register_model_dir(conn, minilm_dir)
        _, key = create_key(conn, "validation tests")
    create_collection(engine, COLLECTION, minilm_manifest.manifest_id)
    with TestClient(create_app(settings)) as client:
        yield InProcessApi(client, engine, key, settings.max_request_bytes)
    engine.dispose()


@pytest.fixture
def nothing_written(api: InProcessApi) -> Iterator[None]:
    before = api.counts()
    yield
    assert api.counts() == before, "a rejected request wrote rows"


def _fields(response: httpx.Response) -> set[str]:
    detail = response.json()["detail"]
    return {str(part) for err in detail for part in err["loc"]}


CASES: list[tuple[str, dict[str, Any], int, str]] = [
    ("empty items", {"items": []}, 422, "items"),
    ("empty text", {"items": [{"id": "a", "text": ""}]}, 422, "text"),
    ("whitespace text", {"items": [{"id": "a", "text": " \t\n　"}]}, 422, "text"),
    ("NUL in text", {"items": [{"id": "a", "text": "bad\u0000text"}]}, 422, "text"),
    ("lone surrogate in text", {"items": [{"id": "a", "text": "bad \ud800 text"}]}, 422, "text"),
    ("NUL in id", {"items": [{"id": "a\u0000", "text": "fine"}]}, 422, "id"),
    ("missing id", {"items": [{"text": "no id"}]}, 422, "id"),
    ("id too long", {"items": [{"id": "x" * 257, "text": "fine"}]}, 422, "id"),
    (
        "duplicate ids",
        {"items": [{"id": "a", "text": "one"}, {"id": "a", "text": "two"}]},
        422,
        "id",
    ),
    (
        "metadata not an object",
        {"items": [{"id": "a", "text": "x", "metadata": [1]}]},
        422,
        "metadata",
    ),
    ("metadata a string", {"items": [{"id": "a", "text": "x", "metadata": "{}"}]}, 422, "metadata"),
    (
        "NUL in metadata",
        {"items": [{"id": "a", "text": "x", "metadata": {"k": "v\u0000"}}]},
        422,
        "metadata",
    ),
    ("too many items", {"items": [{"id": str(i), "text": "t"} for i in range(2049)]}, 413, "items"),
    (
        "strict and over the token limit",
        {"items": [{"id": "a", "text": LONG_TEXT}], "strict": True},
        422,
        "text",
    ),
]


@pytest.mark.parametrize(
    ("body", "status", "field"), [c[1:] for c in CASES], ids=[c[0] for c in CASES]
)
@pytest.mark.usefixtures("nothing_written")
def test_bad_item_is_rejected_naming_the_field(
    api: InProcessApi, body: dict[str, Any], status: int, field: str
) -> None:
    response = api.post(f"/v1/collections/{COLLECTION}/jobs", body)
    assert response.status_code == status, response.text
    assert field in _fields(response), response.text


@pytest.mark.usefixtures("nothing_written")
def test_invalid_utf8_body_is_rejected(api: InProcessApi) -> None:
    raw = b'{"items": [{"id": "a", "text": "caf\xc3\x28"}]}'
    response = api.client.post(
        f"/v1/collections/{COLLECTION}/jobs",
        content=raw,
        headers={**api.auth, "Content-Type": "application/json"},
    )
    assert response.status_code == 422, response.text
    assert "body" in _fields(response)


@pytest.mark.usefixtures("nothing_written")
def test_body_over_the_byte_limit_is_413(api: InProcessApi) -> None:
    body = {"items": [{"id": "big", "text": "x" * (api.max_request_bytes + 10)}]}
    response = api.post(f"/v1/collections/{COLLECTION}/jobs", body)
    assert response.status_code == 413
    assert "body" in _fields(response)


@pytest.mark.usefixtures("nothing_written")
def test_unknown_collection_is_404_naming_it(api: InProcessApi) -> None:
    response = api.post("/v1/collections/nope/jobs", {"items": [{"id": "a", "text": "hello"}]})
    assert response.status_code == 404
    assert _fields(response) >= {"path", "name"}
