"""The model manifest: what an exported ONNX model computes, written next to it at export time.

Pooling, normalisation, max length, query instruction and dimension are read from here and
nowhere else; every stored vector records the id of the manifest that produced it.
"""

from __future__ import annotations

import hashlib
import json
import re
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, Field, model_validator

MANIFEST_FILENAME = "embedq_manifest.json"


class ModelManifest(BaseModel):
    """Everything needed to reproduce and identify an exported model: an embedder (text in,
    vector out) or a reranker (a query and a passage in, one relevance logit out)."""

    schema_version: int = 1
    kind: Literal["embedder", "reranker"] = Field(
        default="embedder",
        description=(
            "reranker: a cross-encoder with one label; its graph gives the pair's logit "
            "(output_name), `normalize` means relevance = sigmoid(logit) as FlagEmbedding's "
            "normalize=True, and dimension is 1"
        ),
    )
    source: str = Field(description="Hugging Face hub id or local directory the weights came from")
    source_revision: str | None = None
    weights_sha256: str
    dimension: int = Field(gt=0)
    pooling: Literal["cls", "mean"]
    normalize: bool
    max_length: int = Field(gt=0, description="max tokens, special tokens included")
    query_instruction: str | None = None
    precision: Literal["fp32", "fp16", "int8", "int8-openvino"]
    onnx_file: str = "model.onnx"
    opset: int
    output_name: str = "last_hidden_state"
    versions: dict[str, str] = Field(default_factory=dict, description="exporter/runtime versions")
    supports_dimensions: bool = Field(
        default=False,
        description="Matryoshka-trained: a prefix of the vector, renormalised, is an embedding",
    )
    quality: dict[str, float] = Field(
        default_factory=dict, description="fidelity measured at export (INT8 vs FP32)"
    )
    pooled_output: bool = Field(
        default=False,
        description="output_name is already pooled, (batch, dim), not token states",
    )
    # A BGE-M3-style lexical head: the graph's second output holds one weight per token
    # (relu of a linear layer over its hidden state), max-pooled per token id by the engine.
    sparse: bool = False
    sparse_output_name: str | None = None
    vocab_size: int | None = Field(default=None, gt=0, description="sparse vectors' dimension")
    sparse_dropped_token_ids: list[int] = Field(
        default_factory=list, description="special tokens (cls, eos, pad, unk) given no weight"
    )

    @model_validator(mode="after")
    def sparse_complete(self) -> ModelManifest:
        if self.sparse and (self.vocab_size is None or not self.sparse_output_name):
            raise ValueError("a sparse manifest needs vocab_size and sparse_output_name")
        if self.kind == "reranker" and (self.sparse or self.dimension != 1):
            raise ValueError("a reranker gives one score per pair: dimension 1, no sparse head")
        return self

    @property
    def is_reranker(self) -> bool:
        """A cross-encoder: it scores query-passage pairs and embeds nothing."""
        return self.kind == "reranker"

    @property
    def manifest_id(self) -> str:
        """A stable id: a readable slug plus a hash of everything that changes the vectors."""
        identity: dict[str, object] = {
            "source": self.source,
            "source_revision": self.source_revision,
            "weights_sha256": self.weights_sha256,
            "pooling": self.pooling,
            "normalize": self.normalize,
            "max_length": self.max_length,
            "query_instruction": self.query_instruction,
            "precision": self.precision,
            "opset": self.opset,
        }
        if self.kind != "embedder":  # only then: embedders' ids stay as they were
            identity["kind"] = self.kind
        if self.sparse:  # only then: manifests written before these fields keep their ids
            identity |= {
                "sparse": True,
                "vocab_size": self.vocab_size,
                "sparse_dropped_token_ids": self.sparse_dropped_token_ids,
                "pooled_output": self.pooled_output,
            }
        digest = hashlib.sha256(json.dumps(identity, sort_keys=True).encode()).hexdigest()[:10]
        slug = re.sub(r"[^a-z0-9]+", "-", Path(self.source).name.lower()).strip("-")[:40]
        return f"{slug}-{self.precision}-{digest}"

    def write(self, model_dir: Path) -> Path:
        """Write the manifest (with its id, for people reading the file) into model_dir."""
        path = model_dir / MANIFEST_FILENAME
        payload = {"manifest_id": self.manifest_id, **self.model_dump()}
        path.write_text(json.dumps(payload, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
        return path

    @classmethod
    def read(cls, model_dir: Path) -> ModelManifest:
        """Read the manifest of an exported model directory, with a clear error if it is absent."""
        path = Path(model_dir) / MANIFEST_FILENAME
        if not path.is_file():
            raise FileNotFoundError(
                f"{path} not found: export the model first (embedq export-model SOURCE --out DIR)"
            )
        payload = json.loads(path.read_text(encoding="utf-8"))
        recorded_id = payload.pop("manifest_id", None)
        manifest = cls.model_validate(payload)
        if recorded_id is not None and recorded_id != manifest.manifest_id:
            raise ValueError(f"{path}: manifest_id {recorded_id} does not match its contents")
        return manifest
