"""Model shapes for `embedq bench engine --shape NAME`: an architecture with random weights.

Speed depends on a model's shape (layers, widths, sequence length), not on its weights, so a
randomly initialised model with a production model's architecture is an honest stand-in for
every speed figure. It says nothing about retrieval quality (only real weights do), and its
fidelity figures (INT8 against FP32) are of random weights too.

To add a shape, add a `ModelShape` to `SHAPES`: `model_type` is a transformers model type
(`AutoConfig.for_model`), `architecture` the config fields that set its size. A shape whose
tokenizer is not BERT WordPiece (an XLM-R one such as bge-m3) names another entry of
`TOKENIZERS`: a function that writes the tokenizer files into the model directory and returns
the vocabulary size. A shape with `sparse_head` gets BGE-M3's lexical head (`sparse_linear.pt`,
random too), so export-model exports it as BGE-M3 (dense + sparse); `long_inputs` replaces the
bench's corpora with texts of exactly those token lengths.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from ops.export.model_config import SPARSE_LINEAR_FILE, Pooling
from ops.export.xlmr_tokenizer import write_xlmr_tokenizer

# The instruction bge-*-zh-v1.5 puts before queries (passages never get it).
BGE_ZH_QUERY_INSTRUCTION = "为这个句子生成表示以用于检索相关文章："


@dataclass(frozen=True)
class ModelShape:
    """One architecture the bench can build with random weights."""

    name: str
    stands_for: str  # the real model whose architecture this is
    model_type: str
    architecture: dict[str, int]
    pooling: Pooling
    max_length: int
    tokenizer: str = "wordpiece-zh"
    query_instruction: str | None = None
    extra_config: dict[str, object] = field(default_factory=dict)
    sparse_head: bool = False  # BGE-M3's sparse_linear.pt beside the weights
    long_inputs: tuple[tuple[int, int], ...] = ()  # (tokens per text, texts) per bench corpus


def _bert(hidden: int, layers: int, heads: int, intermediate: int) -> dict[str, int]:
    return {
        "hidden_size": hidden,
        "num_hidden_layers": layers,
        "num_attention_heads": heads,
        "intermediate_size": intermediate,
    }


M3_MAX_TOKENS = 8192
# XLM-R's ids (<s>=0, <pad>=1, </s>=2) and position table: positions start after the pad id.
_XLMR_CONFIG: dict[str, object] = {
    "max_position_embeddings": M3_MAX_TOKENS + 2,
    "type_vocab_size": 1,
    "pad_token_id": 1,
    "bos_token_id": 0,
    "eos_token_id": 2,
}

SHAPES: dict[str, ModelShape] = {
    shape.name: shape
    for shape in (
        ModelShape(
            "bge-large-zh",
            "BAAI/bge-large-zh-v1.5",
            "bert",
            _bert(1024, 24, 16, 4096),
            "cls",
            512,
            query_instruction=BGE_ZH_QUERY_INSTRUCTION,
        ),
        ModelShape(
            "bge-base",
            "BAAI/bge-base-zh-v1.5",
            "bert",
            _bert(768, 12, 12, 3072),
            "cls",
            512,
            query_instruction=BGE_ZH_QUERY_INSTRUCTION,
        ),
        ModelShape(
            "bge-small",
            "BAAI/bge-small-zh-v1.5",
            "bert",
            _bert(512, 4, 8, 2048),
            "cls",
            512,
            query_instruction=BGE_ZH_QUERY_INSTRUCTION,
        ),
        # XLM-RoBERTa large with 8,194 positions (8,192 tokens plus XLM-R's padding offset) and
        # the full 250,002-row embedding matrix (1 GB FP32), as BAAI/bge-m3's config.json.
        ModelShape(
            "bge-m3",
            "BAAI/bge-m3",
            "xlm-roberta",
            _bert(1024, 24, 16, 4096),
            "cls",
            M3_MAX_TOKENS,
            tokenizer="unigram-xlmr",
            extra_config={"vocab_size": 250_002, **_XLMR_CONFIG},
            sparse_head=True,
            # Few texts: at 8,192 tokens one text is ~11.5 TFLOP (minutes on 2 cores).
            long_inputs=((512, 8), (2048, 2), (8192, 1)),
        ),
        # For smoke runs and tests only: seconds to build, export and quantise.
        ModelShape("tiny-bert", "(none: a test shape)", "bert", _bert(64, 2, 2, 128), "cls", 512),
        ModelShape(
            "tiny-m3",
            "(none: a test shape)",
            "xlm-roberta",
            _bert(32, 2, 2, 64),
            "cls",
            M3_MAX_TOKENS,
            tokenizer="unigram-xlmr",
            extra_config=_XLMR_CONFIG,
            sparse_head=True,
            long_inputs=((32, 4), (128, 2), (512, 1)),
        ),
    )
}


def shape_flops_per_token(shape: ModelShape, seq_len: int) -> float:
    """Multiply-adds x 2 per token of a BERT-style encoder at seq_len: the linear layers
    (4 h^2 for Q, K, V and the output projection, 2 h i for the feed-forward) plus attention
    scores and their weighted sum (2 x seq_len x h). Embedding lookups and norms are ignored."""
    h = shape.architecture["hidden_size"]
    i = shape.architecture["intermediate_size"]
    layers = shape.architecture["num_hidden_layers"]
    return 2.0 * layers * (4 * h * h + 2 * h * i + 2 * seq_len * h)


def _wordpiece_zh(model_dir: Path, texts: list[str]) -> int:
    """A BERT WordPiece tokenizer like bge-*-zh's (one token per Chinese character): MiniLM's
    uncased English vocabulary plus every CJK character of `texts` it lacks, so no bench text
    tokenises to [UNK]. Token counts match bert-base-chinese's closely on Chinese text."""
    from transformers import BertTokenizerFast

    from ops.devstack.bundled_model import bundled_model_source

    vocab = (bundled_model_source() / "vocab.txt").read_text(encoding="utf-8").splitlines()
    known = set(vocab)
    extra = sorted({c for t in texts for c in t if "\u4e00" <= c <= "\u9fff" and c not in known})
    vocab += extra
    (model_dir / "vocab.txt").write_text("\n".join(vocab) + "\n", encoding="utf-8")
    BertTokenizerFast(
        vocab_file=str(model_dir / "vocab.txt"),
        do_lower_case=True,
        tokenize_chinese_chars=True,
        model_max_length=512,
    ).save_pretrained(model_dir)
    return len(vocab)


def _unigram_xlmr(model_dir: Path, texts: list[str]) -> int:
    """An XLM-R-style Unigram tokenizer (ops.export.xlmr_tokenizer). Unspaced Chinese goes one
    token a character (words over 16 characters get no piece), about what bge-m3's tokenizer
    gives."""
    return write_xlmr_tokenizer(model_dir, texts, M3_MAX_TOKENS, max_word_chars=16)


TOKENIZERS: dict[str, Callable[[Path, list[str]], int]] = {
    "wordpiece-zh": _wordpiece_zh,
    "unigram-xlmr": _unigram_xlmr,
}


def _write_sentence_transformers_files(model_dir: Path, shape: ModelShape) -> None:
    """modules.json, pooling and max length: what export-model and sentence-transformers read."""
    parts = [("", "Transformer"), ("1_Pooling", "Pooling"), ("2_Normalize", "Normalize")]
    modules = [
        {"idx": i, "name": str(i), "path": path, "type": f"sentence_transformers.models.{kind}"}
        for i, (path, kind) in enumerate(parts)
    ]
    (model_dir / "modules.json").write_text(json.dumps(modules, indent=2))
    (model_dir / "1_Pooling").mkdir(exist_ok=True)
    (model_dir / "2_Normalize").mkdir(exist_ok=True)
    pooling = {
        "word_embedding_dimension": shape.architecture["hidden_size"],
        "pooling_mode_cls_token": shape.pooling == "cls",
        "pooling_mode_mean_tokens": shape.pooling == "mean",
    }
    (model_dir / "1_Pooling" / "config.json").write_text(json.dumps(pooling))
    st_config = {"max_seq_length": shape.max_length, "do_lower_case": False}
    (model_dir / "sentence_bert_config.json").write_text(json.dumps(st_config))


def build_shape_source(shape: ModelShape, model_dir: Path, texts: list[str], seed: int = 0) -> Path:
    """A Hugging Face model directory with shape's architecture, random weights (seeded), its
    tokenizer and sentence-transformers files: what `export_model` takes from a hub."""
    import torch
    from transformers import AutoConfig, AutoModel

    model_dir.mkdir(parents=True, exist_ok=True)
    vocab_size = TOKENIZERS[shape.tokenizer](model_dir, texts)
    fields = {
        "vocab_size": vocab_size,
        "max_position_embeddings": shape.max_length,
        **shape.architecture,
        **shape.extra_config,  # last, so a shape can override the defaults above
    }
    config = AutoConfig.for_model(shape.model_type, **fields)
    torch.manual_seed(seed)
    model = AutoModel.from_config(config)
    model.eval().save_pretrained(model_dir, safe_serialization=True)
    if shape.sparse_head:  # BGE-M3's lexical head: Linear(hidden, 1), random like the rest
        head = torch.nn.Linear(shape.architecture["hidden_size"], 1)
        torch.save(head.state_dict(), model_dir / SPARSE_LINEAR_FILE)
    _write_sentence_transformers_files(model_dir, shape)
    return model_dir


def shape_of_model_dir(source_dir: Path) -> ModelShape:
    """The shape of a real model directory (for its FLOP count): its config.json's sizes."""
    config = json.loads((source_dir / "config.json").read_text(encoding="utf-8"))
    sizes = ("hidden_size", "num_hidden_layers", "num_attention_heads", "intermediate_size")
    return ModelShape(
        name=source_dir.name,
        stands_for=source_dir.name,
        model_type=str(config["model_type"]),
        architecture={key: int(config[key]) for key in sizes},
        pooling="mean",  # not used for speed or FLOPs; the export's manifest says the real one
        max_length=int(config.get("max_position_embeddings", 512)),
    )
