"""Choosing and opening the inference runtime for an exported ONNX model."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np
import numpy.typing as npt
import onnxruntime as ort

log = logging.getLogger(__name__)

RuntimeChoice = Literal["auto", "onnxruntime-cpu", "onnxruntime-cuda"]


@dataclass(frozen=True)
class RuntimeSelection:
    """Which execution provider runs the model, and why (logged at worker start)."""

    providers: list[str]
    reason: str


def select_runtime(choice: RuntimeChoice) -> RuntimeSelection:
    """Pick CUDA when present (or asked for), else the CPU provider."""
    available = ort.get_available_providers()
    has_cuda = "CUDAExecutionProvider" in available
    if choice == "onnxruntime-cuda":
        if not has_cuda:
            raise RuntimeError(
                "runtime onnxruntime-cuda asked for, but this onnxruntime has no CUDA provider "
                f"(available: {available}); install the worker-gpu extra"
            )
        return RuntimeSelection(["CUDAExecutionProvider", "CPUExecutionProvider"], "asked for")
    if choice == "auto" and has_cuda:
        return RuntimeSelection(
            ["CUDAExecutionProvider", "CPUExecutionProvider"], "CUDA provider available"
        )
    reason = "asked for" if choice == "onnxruntime-cpu" else "no CUDA provider available"
    return RuntimeSelection(["CPUExecutionProvider"], reason)


class OnnxSession:
    """An ONNX Runtime session that maps our padded arrays onto the model's declared inputs."""

    def __init__(
        self, onnx_path: Path, selection: RuntimeSelection, intra_op_threads: int, output_name: str
    ) -> None:
        options = ort.SessionOptions()
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        if intra_op_threads > 0:
            options.intra_op_num_threads = intra_op_threads
        self._session = ort.InferenceSession(
            str(onnx_path), sess_options=options, providers=selection.providers
        )
        self._input_names = {i.name for i in self._session.get_inputs()}
        self._output_name = output_name
        self.providers: list[str] = self._session.get_providers()

    def run(
        self,
        input_ids: npt.NDArray[np.int64],
        attention_mask: npt.NDArray[np.int64],
        token_type_ids: npt.NDArray[np.int64],
    ) -> npt.NDArray[np.float32]:
        """Token states (batch, seq, dim) as float32."""
        feeds = {"input_ids": input_ids, "attention_mask": attention_mask}
        if "token_type_ids" in self._input_names:
            feeds["token_type_ids"] = token_type_ids
        (hidden,) = self._session.run([self._output_name], feeds)
        return np.asarray(hidden, dtype=np.float32)
