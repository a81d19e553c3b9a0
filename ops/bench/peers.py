"""The peers a user would pick instead of this project, as `embedq bench engine` runs them:
sentence-transformers on torch FP32, on torch BF16 weights, with `backend="onnx"` and with
`backend="openvino"`. Each returns an embed function (texts -> normalised vectors)."""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path

import numpy as np
import numpy.typing as npt

FloatArray = npt.NDArray[np.float32]
Embed = Callable[[list[str]], FloatArray]

PEERS = ("st-torch-fp32", "st-torch-bf16", "st-onnx", "st-openvino")


def _private_copy(source_dir: Path) -> Path:
    """A symlinked copy of the model directory: the ONNX and OpenVINO backends export into the
    model directory they load, which must not be the source (a package's, or shared)."""
    work = Path(tempfile.mkdtemp(prefix="embedq-peer-"))
    for path in source_dir.iterdir():
        target = work / path.name
        if path.is_dir():
            shutil.copytree(path, target)
        else:
            target.symlink_to(path)
    return work


def peer_loading(backend: str, source_dir: Path, threads: int) -> tuple[dict[str, object], Path]:
    """How sentence-transformers loads a peer (SentenceTransformer and CrossEncoder alike):
    `backend` is torch-fp32, torch-bf16, onnx or openvino; returns the keyword arguments and
    the model directory to load (a private copy where the backend exports into it)."""
    import torch

    torch.set_num_threads(threads)
    if backend == "torch-fp32":
        return {}, source_dir
    if backend == "torch-bf16":
        return {"model_kwargs": {"torch_dtype": torch.bfloat16}}, source_dir
    if backend == "onnx":
        from onnxruntime import SessionOptions

        options = SessionOptions()
        options.intra_op_num_threads = threads
        onnx: dict[str, object] = {"backend": "onnx", "model_kwargs": {"session_options": options}}
        return onnx, _private_copy(source_dir)
    if backend == "openvino":
        ov_config = {"INFERENCE_NUM_THREADS": str(threads)}
        openvino: dict[str, object] = {
            "backend": "openvino",
            "model_kwargs": {"ov_config": ov_config},
        }
        return openvino, _private_copy(source_dir)
    raise ValueError(f"unknown peer backend {backend}")


def sentence_transformers_peer(
    variant: str, source_dir: Path, threads: int, batch_size: int
) -> tuple[Embed, str]:
    """The peer `variant` (one of PEERS) on `threads` threads; returns (embed, backend label)."""
    from sentence_transformers import SentenceTransformer

    if variant not in PEERS:
        raise ValueError(f"unknown peer {variant}")
    kwargs, model_dir = peer_loading(variant.removeprefix("st-"), source_dir, threads)
    model = SentenceTransformer(str(model_dir), device="cpu", **kwargs)

    def embed(texts: list[str]) -> FloatArray:
        vectors = model.encode(texts, batch_size=batch_size, normalize_embeddings=True)
        return np.asarray(vectors, dtype=np.float32)

    return embed, variant
