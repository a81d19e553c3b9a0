"""Teacher scores from a reranker the fleet serves, through `POST /v1/rerank`: the scores a
client of the API gets for the same pairs (the raw logit, or its sigmoid where the reranker's
manifest normalises), as FlagEmbedding's add_reranker_score.py writes them."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import httpx
from tenacity import (
    retry,
    retry_if_exception,
    stop_after_delay,
    wait_exponential,
)

# Documents per request (a line's positives and negatives are usually far fewer).
DOCUMENTS_PER_CALL = 128
# Requests in flight: the fleet batches concurrent pairs into one engine call.
CALLS_IN_FLIGHT = 4


class TeacherError(RuntimeError):
    """The API refused the rerank calls for a reason a retry cannot mend."""


def _busy(exc: BaseException) -> bool:
    # 429 (fleet busy) and 503 (no worker yet, database blip) pass; a transport error too.
    if isinstance(exc, httpx.HTTPStatusError):
        return exc.response.status_code in (429, 502, 503)
    return isinstance(exc, httpx.TransportError)


class Teacher:
    """Scores (query, passage) pairs with one reranker through the API."""

    def __init__(self, api_url: str, api_key: str, model: str, timeout_s: float = 120) -> None:
        self.model = model
        self._client = httpx.Client(
            base_url=api_url.rstrip("/"),
            headers={"Authorization": f"Bearer {api_key}"},
            timeout=timeout_s,
        )
        self._pool = ThreadPoolExecutor(CALLS_IN_FLIGHT, thread_name_prefix="teacher")

    def close(self) -> None:
        """Release the connection pool and threads."""
        self._pool.shutdown()
        self._client.close()

    @retry(
        retry=retry_if_exception(_busy),
        wait=wait_exponential(multiplier=0.5, max=10),
        stop=stop_after_delay(600),
        reraise=True,
    )
    def _call(self, query: str, documents: list[str]) -> list[float]:
        response = self._client.post(
            "/v1/rerank",
            json={
                "model": self.model,
                "query": query,
                "documents": documents,
                "return_documents": False,
            },
        )
        if response.status_code in (429, 502, 503):
            response.raise_for_status()
        if response.status_code != 200:
            raise TeacherError(f"/v1/rerank answered {response.status_code}: {response.text}")
        scores = [0.0] * len(documents)
        for result in response.json()["results"]:
            scores[result["index"]] = float(result["relevance_score"])
        return scores

    def score(self, query: str, documents: list[str]) -> list[float]:
        """Each document's score against the query, in order."""
        scores: list[float] = []
        for start in range(0, len(documents), DOCUMENTS_PER_CALL):
            scores += self._call(query, documents[start : start + DOCUMENTS_PER_CALL])
        return scores

    def score_many(self, pairs: list[tuple[str, list[str]]]) -> list[list[float]]:
        """score() for several queries at once, CALLS_IN_FLIGHT requests in flight."""
        return list(self._pool.map(lambda pair: self.score(*pair), pairs))
