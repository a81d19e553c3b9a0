"""A text longer than the model reads is accepted, embedded truncated and flagged."""

from __future__ import annotations

from tests.support import ServiceHandle

LONG_TEXT = "The quick brown fox jumps over the lazy dog. " * 60  # ~600 tokens for MiniLM


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
