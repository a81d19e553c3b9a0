"""Hostile request bodies get a 4xx, quickly, and the API's memory stays flat."""

from __future__ import annotations

import json
import socket
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest

from tests.support import PrivatePipeline, ServiceHandle


def _rss_bytes(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise AssertionError("no VmRSS")


def _post_raw(
    services: ServiceHandle, path: str, content: bytes | Iterator[bytes]
) -> httpx.Response:
    return httpx.post(
        f"{services.api_url}{path}",
        content=content,
        headers={**services.auth, "Content-Type": "application/json"},
        timeout=60,
    )


def _job(metadata_json: str) -> bytes:
    return f'{{"items": [{{"id": "h1", "text": "hello", "metadata": {metadata_json}}}]}}'.encode()


def _nested(depth: int) -> str:
    return '{"a": ' * depth + "1" + "}" * depth


HOSTILE: list[tuple[str, bytes, str]] = [
    ("deep beyond the parser", _job(_nested(100_000)), "body"),
    ("deep within the parser", _job(_nested(500)), "metadata"),
    ("a huge key", _job(json.dumps({"k" * 2_000_000: 1})), "metadata"),
    ("many keys", _job(json.dumps({f"k{i}": i for i in range(200_000)})), "metadata"),
    ("NaN", _job('{"score": NaN}'), "metadata"),
    ("Infinity", _job('{"score": [1, -Infinity]}'), "metadata"),
]


@pytest.mark.parametrize(("case", "body", "field"), HOSTILE, ids=[h[0] for h in HOSTILE])
def test_hostile_metadata_is_a_4xx_naming_the_field(
    services: ServiceHandle, case: str, body: bytes, field: str
) -> None:
    response = _post_raw(services, "/v1/collections/docs/jobs", body)
    assert 400 <= response.status_code < 500, (case, response.status_code, response.text[:300])
    locs = [str(p) for err in response.json()["detail"] for p in err["loc"]]
    assert field in locs, (case, response.text[:300])
    assert len(response.content) < 2000, "an error must not echo the input"


def test_hostile_filter_is_a_422(services: ServiceHandle) -> None:
    body = f'{{"query": "x", "filter": {_nested(100)}}}'.encode()
    response = _post_raw(services, "/v1/collections/docs/search", body)
    assert response.status_code == 422
    assert response.json()["detail"][0]["loc"] == ["body", "filter"]


def test_chunked_upload_over_the_limit_is_413_without_buffering_it(
    services: ServiceHandle,
) -> None:
    limit = services.settings.max_request_bytes
    sent = 0

    def chunks() -> Iterator[bytes]:
        nonlocal sent
        yield b'{"items": [{"id": "x", "text": "'
        while sent < 4 * limit:  # the client would go on far past the limit
            sent += 1 << 20
            yield b"a" * (1 << 20)

    try:
        response = _post_raw(services, "/v1/collections/docs/jobs", chunks())
    except httpx.HTTPError:  # the server may close before reading the rest: also a refusal
        assert sent < 4 * limit
        return
    assert response.status_code == 413
    assert response.json()["detail"][0]["loc"] == ["body"]


def test_api_memory_stays_flat_under_hostile_bodies(services: ServiceHandle) -> None:
    api = next(c for c in services.children if c.name == "api")
    for _, body, _ in HOSTILE[:2]:  # warm the code paths once
        _post_raw(services, "/v1/collections/docs/jobs", body)
    before = _rss_bytes(api.popen.pid)
    for _ in range(3):
        for _, body, _ in HOSTILE:
            assert _post_raw(services, "/v1/collections/docs/jobs", body).status_code < 500
    after = _rss_bytes(api.popen.pid)
    assert after - before < 64 * 1024 * 1024, f"API RSS grew {(after - before) >> 20} MiB"


def test_slow_body_is_408(private_pipeline: Callable[..., PrivatePipeline]) -> None:
    pipeline = private_pipeline("slow_body", request_body_timeout_s=1.0)
    settings = pipeline.handle.settings
    with socket.create_connection((settings.api_host, settings.api_port), timeout=30) as sock:
        sock.sendall(
            b"POST /v1/collections/slow_body/jobs HTTP/1.1\r\nHost: x\r\n"
            b"Authorization: Bearer " + pipeline.handle.api_key.encode() + b"\r\n"
            b'Content-Type: application/json\r\nContent-Length: 1000\r\n\r\n{"items": ['
        )
        answer = ""
        while "}]}" not in answer:  # headers and body may arrive in separate reads
            chunk = sock.recv(65536)
            if not chunk:
                break
            answer += chunk.decode("utf-8", errors="replace")
    assert answer.startswith("HTTP/1.1 408"), answer[:200]
    assert '"loc":["body"]' in answer.replace(" ", "")


@pytest.mark.parametrize("authorization", ["", "Authorization: Bearer not-a-key\r\n"])
def test_no_key_is_refused_before_a_byte_of_the_body_is_read(
    services: ServiceHandle, authorization: str
) -> None:
    """A client announces 8 MB and sends none of it: without a valid key it is answered 401 at
    once (the body limit would wait EMBEDQ_REQUEST_BODY_TIMEOUT_S for the body, then 408)."""
    host, port = services.settings.api_host, services.settings.api_port
    with socket.create_connection((host, port), timeout=10) as sock:
        sock.sendall(
            (
                f"POST /v1/collections/docs/jobs HTTP/1.1\r\nHost: {host}\r\n{authorization}"
                "Content-Type: application/json\r\nContent-Length: 8000000\r\n\r\n"
            ).encode()
        )
        received = b""
        while chunk := sock.recv(4096):  # the server closes the connection after its answer
            received += chunk
        answer = received.decode("latin-1")
    assert answer.startswith("HTTP/1.1 401"), answer
    assert '"unauthorized"' in answer and "connection: close" in answer.lower()
    # With the key, the same route still reads its body.
    accepted = services.submit("docs", [{"id": "gate-1", "text": "月亮代表我的心"}])
    assert accepted.status_code == 202, accepted.text
