"""Every bad request gets a 4xx naming the field, and nothing is written."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from sqlalchemy import func, select

from embedq_core.tables import job_items, jobs
from tests.support import ServiceHandle

LONG_TEXT = "The quick brown fox jumps over the lazy dog. " * 60  # ~600 tokens for MiniLM


def _counts(services: ServiceHandle) -> tuple[int, int]:
    with services.engine.connect() as conn:
        return (
            conn.execute(select(func.count()).select_from(jobs)).scalar_one(),
            conn.execute(select(func.count()).select_from(job_items)).scalar_one(),
        )


@pytest.fixture
def nothing_written(services: ServiceHandle) -> Iterator[None]:
    before = _counts(services)
    yield
    assert _counts(services) == before, "a rejected request wrote rows"


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
    services: ServiceHandle, body: dict[str, Any], status: int, field: str
) -> None:
    response = services.post("/v1/collections/docs/jobs", body)
    assert response.status_code == status, response.text
    assert field in _fields(response), response.text


@pytest.mark.usefixtures("nothing_written")
def test_invalid_utf8_body_is_rejected(services: ServiceHandle) -> None:
    raw = b'{"items": [{"id": "a", "text": "caf\xc3\x28"}]}'
    response = httpx.post(
        f"{services.api_url}/v1/collections/docs/jobs",
        content=raw,
        headers={**services.auth, "Content-Type": "application/json"},
    )
    assert response.status_code == 422, response.text
    assert "body" in _fields(response)


@pytest.mark.usefixtures("nothing_written")
def test_body_over_the_byte_limit_is_413(services: ServiceHandle) -> None:
    limit = services.settings.max_request_bytes
    body = {"items": [{"id": "big", "text": "x" * (limit + 10)}]}
    response = services.post("/v1/collections/docs/jobs", body)
    assert response.status_code == 413
    assert "body" in _fields(response)


@pytest.mark.usefixtures("nothing_written")
def test_unknown_collection_is_404_naming_it(services: ServiceHandle) -> None:
    response = services.submit("nope", [{"id": "a", "text": "hello"}])
    assert response.status_code == 404
    assert _fields(response) >= {"path", "name"}


def test_long_text_is_accepted_truncated_and_flagged(services: ServiceHandle) -> None:
    response = services.submit("docs", [{"id": "long-1", "text": LONG_TEXT}])
    assert response.status_code == 202
    job = services.wait_job(response.json()["job_id"])
    assert (job["status"], job["done"], job["truncated"]) == ("completed", 1, 1)
    with services.engine.connect() as conn:
        truncated = conn.exec_driver_sql(
            "SELECT truncated FROM vectors_docs WHERE id = 'long-1'"
        ).scalar_one()
    assert truncated is True
