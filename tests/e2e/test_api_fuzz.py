"""schemathesis, every phase (examples, coverage, fuzzing, stateful) and every check but one
(the stateful "created resource not found", see below), against the real API with a valid key,
a real collection and a real job: no server error, and every answer is one the OpenAPI document
states."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

from embedq_core.manifest import ModelManifest
from tests.support import ServiceHandle

CONFIG = """
base-url = "{api_url}"
headers = {{ Authorization = "Bearer {api_key}" }}
request-timeout = 60.0
seed = 20261122
generation.max-examples = {max_examples}

[parameters]
"path.name" = "docs"
"path.job_id" = "{job_id}"

# 413 is this API's documented answer to too many items or inputs (the schema states the
# maxItems); schemathesis lists only the common 4xx by default.
[checks.negative_data_rejection]
expected-statuses = ["400", "401", "404", "405", "406", "409", "413", "415", "422", "428", "429"]

[checks.positive_data_acceptance]
expected-statuses = {positive}

# Embeddings of the real collection's model, at its real dimension: `dimensions` other than
# the model's is refused (422) for models without Matryoshka training, which no schema knows.
# `"sparse": true` is refused (422) likewise: this collection's model has no sparse head.
[[operations]]
include-path = "/v1/embeddings"
parameters = {{ "body.model" = "docs", "body.dimensions" = {dimension} }}
checks.positive_data_acceptance.expected-statuses = ["2xx", "401", "404", "409", "422", "429"]

# Sparse and hybrid search need a collection whose model has a sparse head (422 otherwise),
# and the two fusion weights cannot both be 0: rules of the collection and of two values
# together, which JSON Schema cannot state.
[[operations]]
include-path = "/v1/collections/{{name}}/search"
checks.positive_data_acceptance.expected-statuses = ["2xx", "401", "404", "409", "422", "429"]

# Reranking needs a reranker: a model name that resolves to an embedding model is refused
# (422 naming `model`), a rule of the catalog that no schema states. /v2/rerank is the same.
[[operations]]
include-path-regex = "^/v[12]/rerank$"
checks.positive_data_acceptance.expected-statuses = ["2xx", "401", "404", "409", "422", "429"]

# A chunking collection's windows must fit its model (max_tokens up to its max length less its
# special tokens; overlap below max_tokens): rules of the model and of two values together,
# which JSON Schema cannot state (422 naming `chunking`).
[[operations]]
include-name = "POST /v1/collections"
checks.positive_data_acceptance.expected-statuses = ["2xx", "401", "404", "409", "422", "429"]

# Vectorizers change users' tables: the fuzzer's key is no admin key, so every call is refused
# 403 before its body is read (tests/e2e/test_vectorize.py drives them with an admin key).
[[operations]]
include-path-regex = "^/v1/vectorizers"
checks.positive_data_acceptance.expected-statuses = ["401", "403"]
checks.negative_data_rejection.expected-statuses = [
    "400", "401", "403", "404", "405", "406", "409", "413", "415", "422", "428", "429"
]

# Ids must be unique within one submission (422 naming the duplicate), and with "strict": true
# a text over the model's token limit is refused: rules of the items' values together, which
# JSON Schema cannot state.
[[operations]]
include-path = "/v1/collections/{{name}}/jobs"
checks.positive_data_acceptance.expected-statuses = ["2xx", "401", "404", "409", "422", "429"]
"""


def _st() -> str:
    found = shutil.which("st") or shutil.which("schemathesis")
    if found is None:
        found = str(Path(sys.executable).parent / "st")
    return found


def test_schemathesis_finds_no_server_error_and_no_undocumented_answer(
    services: ServiceHandle, minilm_manifest: ModelManifest, tmp_path: Path
) -> None:
    accepted = services.submit("docs", [{"id": "fuzz-seed", "text": "a real job for the fuzzer"}])
    assert accepted.status_code == 202, accepted.text
    job_id = accepted.json()["job_id"]
    services.wait_job(job_id)
    config = tmp_path / "schemathesis.toml"
    config.write_text(
        CONFIG.format(
            api_url=services.api_url,
            api_key=services.api_key,
            job_id=job_id,
            dimension=minilm_manifest.dimension,
            max_examples=25,
            positive='["2xx", "401", "404", "409", "429"]',
        )
    )
    result = subprocess.run(
        [
            _st(),
            "--config-file",
            str(config),
            "run",
            f"{services.api_url}/openapi.json",
            "--checks",
            "all",
            # The stateful "created resource not found" check reads any 404 after a create as
            # the created resource missing. The 404s it meets here name a field of the body (an
            # unknown reranker in `rerank.model`: unknown models are 404 on every route, as in
            # OpenAI's API) on a collection that exists (`path.name` is pinned to "docs").
            "--exclude-checks",
            "ensure_resource_availability",
            "--phases",
            "examples,coverage,fuzzing,stateful",
            "--no-color",
        ],
        capture_output=True,
        text=True,
        timeout=900,
        check=False,
        cwd=tmp_path,  # its example database and reports stay out of the checkout
    )
    output = result.stdout + result.stderr
    failures = output[max(0, output.find("FAILURES")) :]
    assert result.returncode == 0, failures[:12000]
    for phase in ("Coverage", "Fuzzing", "Stateful"):  # each ran, none was skipped
        assert phase in output and f"⏭  {phase}" not in output, output[-3000:]
    # The jobs the fuzzer got accepted would otherwise fill the queue later tests count.
    services.wait_collection_idle("docs")
