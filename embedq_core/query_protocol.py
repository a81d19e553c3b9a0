"""Live query embedding over Redis: the API pushes a request onto the model's query list, one
worker of that model pops it, answers "taken" at once and then the vectors.

Queries are synchronous and short-lived, so nothing about them needs to survive a restart:
a lost request is a 503 the client retries, never a lost job. Vectors travel as little-endian
float32 bytes, base64 in JSON.
"""

from __future__ import annotations

import base64
import json
import time
import uuid
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
import numpy.typing as npt

InputType = Literal["passage", "query"]
REPLY_TTL_S = 60


# How long a worker that died without leaving (SIGKILL, lost host) still counts as serving.
SERVING_TTL_S = 15


def serving_key(manifest_id: str) -> str:
    """Exists while some worker of the model answers queries: a sorted set of the workers, each
    scored with the Redis time its announcement lapses. A worker that stops removes itself, so
    the key goes at once when the last one leaves; one that dies lapses within SERVING_TTL_S."""
    return f"embedq:serving-workers:{manifest_id}"


# While a worker embeds a request it keeps this key alive; the API gives up early (503) when it
# lapses, i.e. when the worker that took the request died, instead of waiting query_timeout_s.
WORKING_TTL_S = 6
# Requests are dropped this long after their caller's deadline, not at it: worker and API
# clocks may disagree by a few seconds.
EXPIRY_SKEW_S = 30.0


def working_key(request_id: str) -> str:
    """Exists while a worker is embedding this request."""
    return f"embedq:working:{request_id}"


def query_queue(manifest_id: str) -> str:
    """The Redis list a model's workers pop live queries from (not a Celery queue)."""
    return f"embedq:query:{manifest_id}"


@dataclass(frozen=True)
class QueryRequest:
    """Texts to embed now, or passages to score against `query` (a reranker's request), and
    where to answer."""

    request_id: str
    texts: list[str]
    input_type: InputType
    expires_at: float  # wall clock; a worker drops a request its caller gave up on
    query: str | None = None  # set: rerank texts against it
    max_tokens_per_text: int | None = None  # a reranker cuts each passage here too

    @classmethod
    def new(
        cls,
        texts: list[str],
        input_type: InputType,
        timeout_s: float,
        query: str | None = None,
        max_tokens_per_text: int | None = None,
    ) -> QueryRequest:
        """A request with a fresh id that expires after timeout_s."""
        return cls(
            uuid.uuid4().hex,
            texts,
            input_type,
            time.time() + timeout_s,
            query,
            max_tokens_per_text,
        )

    @property
    def reply_key(self) -> str:
        """The list the answer is pushed onto."""
        return f"embedq:reply:{self.request_id}"

    def encode(self) -> bytes:
        """The message pushed onto the query list."""
        return json.dumps(
            {
                "id": self.request_id,
                "texts": self.texts,
                "input_type": self.input_type,
                "expires_at": self.expires_at,
                "query": self.query,
                "max_tokens_per_text": self.max_tokens_per_text,
            },
            ensure_ascii=False,
        ).encode("utf-8")

    @classmethod
    def decode(cls, raw: bytes | str) -> QueryRequest:
        """Parse a message popped from the query list."""
        data = json.loads(raw)
        return cls(
            str(data["id"]),
            list(data["texts"]),
            data["input_type"],
            data["expires_at"],
            data.get("query"),
            data.get("max_tokens_per_text"),
        )


@dataclass(frozen=True)
class QueryReply:
    """Vectors in request order with the tokens each text used, or the worker's error; a sparse
    model's answer also carries each text's lexical weights {token id: weight}. A reranker's
    answer is one raw logit per passage: vectors of shape (passages, 1)."""

    manifest_id: str
    vectors: npt.NDArray[np.float32]
    token_counts: list[int]
    truncated: list[bool]
    error: str | None = None
    sparse: list[dict[int, float]] | None = None

    def encode(self) -> bytes:
        """The message pushed onto the reply list."""
        payload: dict[str, Any] = {
            "manifest_id": self.manifest_id,
            "shape": list(self.vectors.shape),
            "vectors": base64.b64encode(self.vectors.astype("<f4").tobytes()).decode("ascii"),
            "token_counts": self.token_counts,
            "truncated": self.truncated,
            "error": self.error,
            # [[token ids], [weights]] per text: JSON object keys would be strings.
            "sparse": None
            if self.sparse is None
            else [[list(w), list(w.values())] for w in self.sparse],
        }
        return json.dumps(payload).encode("utf-8")

    @classmethod
    def failure(cls, manifest_id: str, error: str) -> QueryReply:
        """A reply that carries only the worker's error."""
        return cls(manifest_id, np.zeros((0, 0), dtype=np.float32), [], [], error)

    @classmethod
    def decode(cls, raw: bytes) -> QueryReply:
        """Parse a message popped from the reply list."""
        data = json.loads(raw)
        shape = tuple(int(n) for n in data["shape"])
        vectors = np.frombuffer(base64.b64decode(data["vectors"]), dtype="<f4").reshape(shape)
        return cls(
            str(data["manifest_id"]),
            vectors.astype(np.float32),
            [int(n) for n in data["token_counts"]],
            [bool(b) for b in data["truncated"]],
            data.get("error"),
            None
            if data.get("sparse") is None
            else [
                {int(t): float(w) for t, w in zip(ids, weights, strict=True)}
                for ids, weights in data["sparse"]
            ],
        )


def relevance(logits: npt.NDArray[np.float32], normalize: bool) -> npt.NDArray[np.float64]:
    """A reranker's scores as clients see them: sigmoid(logit) where its manifest normalises
    (FlagEmbedding's normalize=True), else the logit."""
    wide = logits.astype(np.float64)
    return 1.0 / (1.0 + np.exp(-wide)) if normalize else wide


TAKEN = b"taken"  # first message on a reply list: a worker has the request
