"""Exporting a BGE-M3 checkpoint: one ONNX graph, one forward pass, two outputs.

- `dense`: the CLS token's hidden state, (batch, hidden); the engine normalises it as the
  manifest says. Only the CLS row leaves the graph, not (batch, seq, hidden) token states,
  which at 8,192 tokens would be 32 MiB per text to copy out for nothing.
- `sparse_weights`: relu(sparse_linear(hidden state)) per token, (batch, seq), as FlagEmbedding's
  `_sparse_embedding` computes it; the engine max-pools them per token id and drops the
  special tokens FlagEmbedding drops (cls, eos, pad, unk).

The ColBERT head (colbert_linear.pt) is not exported. torch and transformers are imported
only when an export runs.
"""

from __future__ import annotations

import logging
import shutil
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ops.export.model_config import FAST_TOKENIZER_FILE, SPARSE_LINEAR_FILE

log = logging.getLogger(__name__)

DENSE_OUTPUT = "dense"
SPARSE_OUTPUT = "sparse_weights"
# tokenizer.json is what workers load; the others let transformers load the export too.
TOKENIZER_FILES = (
    FAST_TOKENIZER_FILE,
    "tokenizer_config.json",
    "special_tokens_map.json",
    "sentencepiece.bpe.model",
)


@dataclass(frozen=True)
class SparseHead:
    """What the manifest records about the exported lexical head."""

    vocab_size: int
    dropped_token_ids: list[int]


def _graph(encoder: Any, head: Any) -> Any:
    import torch

    class M3Graph(torch.nn.Module):
        """The encoder, its CLS state and the lexical head's per-token weights."""

        def __init__(self) -> None:
            super().__init__()
            self.encoder = encoder
            self.head = head

        def forward(
            self, input_ids: torch.Tensor, attention_mask: torch.Tensor
        ) -> tuple[torch.Tensor, torch.Tensor]:
            hidden = self.encoder(
                input_ids=input_ids, attention_mask=attention_mask
            ).last_hidden_state
            return hidden[:, 0], torch.relu(self.head(hidden)).squeeze(-1)

    return M3Graph().eval()


def dropped_special_ids(tokenizer: Any) -> list[int]:
    """The token ids FlagEmbedding gives no lexical weight: cls, eos, pad and unk."""
    ids = (
        tokenizer.cls_token_id,
        tokenizer.eos_token_id,
        tokenizer.pad_token_id,
        tokenizer.unk_token_id,
    )
    return sorted({int(i) for i in ids if i is not None})


def export_m3(model_dir: Path, out_dir: Path, opset: int) -> SparseHead:
    """Write out_dir/model.onnx (dense + sparse outputs) and the tokenizer files."""
    import torch
    from transformers import AutoTokenizer, XLMRobertaModel

    # Eager attention: the SDPA path drops an all-ones mask, a shortcut the tracer would bake in.
    encoder = XLMRobertaModel.from_pretrained(
        model_dir, attn_implementation="eager", add_pooling_layer=False
    ).eval()
    head = torch.nn.Linear(encoder.config.hidden_size, 1)
    state = torch.load(model_dir / SPARSE_LINEAR_FILE, map_location="cpu", weights_only=True)
    head.load_state_dict(state)
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    # Traced with padding in the batch, so the mask path is in the graph.
    sample = tokenizer(["a b c d", "a"], padding=True, return_tensors="pt")
    out_dir.mkdir(parents=True, exist_ok=True)
    log.info("exporting BGE-M3 dense + sparse graph from %s (opset %d)", model_dir, opset)
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")  # tracer warnings; fidelity is tested against torch
        torch.onnx.export(
            _graph(encoder, head),
            (sample["input_ids"], sample["attention_mask"]),
            str(out_dir / "model.onnx"),
            input_names=["input_ids", "attention_mask"],
            output_names=[DENSE_OUTPUT, SPARSE_OUTPUT],
            dynamic_axes={
                "input_ids": {0: "batch", 1: "sequence"},
                "attention_mask": {0: "batch", 1: "sequence"},
                DENSE_OUTPUT: {0: "batch"},
                SPARSE_OUTPUT: {0: "batch", 1: "sequence"},
            },
            opset_version=opset,
            dynamo=False,
        )
    for name in TOKENIZER_FILES:
        if (model_dir / name).is_file():
            shutil.copyfile(model_dir / name, out_dir / name)
    if not (out_dir / FAST_TOKENIZER_FILE).is_file():
        tokenizer.save_pretrained(str(out_dir))  # a slow-only checkpoint: write tokenizer.json
    return SparseHead(int(encoder.config.vocab_size), dropped_special_ids(tokenizer))
