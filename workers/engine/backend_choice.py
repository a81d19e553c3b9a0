"""Choosing the inference backend from the manifest, the settings and the hardware.

Pure logic, so every path (GPU, AMX CPU, plain CPU) is testable on any machine.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from embedq_core.manifest import ModelManifest
from workers.engine.hardware import Hardware

RuntimeChoice = Literal["auto", "onnxruntime-cpu", "onnxruntime-cuda", "openvino"]
BackendKind = Literal["onnxruntime-cpu", "onnxruntime-cuda", "openvino-bf16", "openvino-fp32"]


class BackendUnavailable(RuntimeError):
    """The asked-for runtime cannot run this manifest's model here."""


@dataclass(frozen=True)
class BackendChoice:
    """Which backend runs the model, and why (logged at worker start)."""

    kind: BackendKind
    reason: str


def choose_backend(choice: RuntimeChoice, manifest: ModelManifest, hw: Hardware) -> BackendChoice:
    """The backend for manifest on hw. Never a different model: an fp16 model needs CUDA, an
    int8 model runs on ONNX Runtime's CPU provider, an fp32 model wherever it is fastest."""
    if manifest.precision == "fp16":
        if choice not in ("auto", "onnxruntime-cuda"):
            raise BackendUnavailable(f"an fp16 model runs on onnxruntime-cuda only, not {choice}")
        if not hw.has_cuda_provider:
            raise BackendUnavailable("an fp16 model needs a GPU: no CUDAExecutionProvider here")
        return BackendChoice("onnxruntime-cuda", "fp16 model on CUDA")
    if manifest.precision == "int8":
        if choice not in ("auto", "onnxruntime-cpu"):
            raise BackendUnavailable(f"an int8 model runs on onnxruntime-cpu only, not {choice}")
        return BackendChoice("onnxruntime-cpu", "int8 model (quantised for ONNX Runtime)")
    if choice == "onnxruntime-cuda":
        if not hw.has_cuda_provider:
            raise BackendUnavailable("onnxruntime-cuda asked for, but no CUDAExecutionProvider")
        return BackendChoice("onnxruntime-cuda", "asked for")
    if choice == "openvino":
        if not hw.has_openvino:
            raise BackendUnavailable("openvino asked for, but the openvino package is missing")
        if hw.cpu_has_amx_bf16:
            return BackendChoice("openvino-bf16", "asked for; CPU has AMX (amx_bf16)")
        return BackendChoice("openvino-fp32", "asked for; no AMX, so FP32 precision")
    if choice == "onnxruntime-cpu":
        return BackendChoice("onnxruntime-cpu", "asked for")
    if hw.has_cuda_provider:
        return BackendChoice("onnxruntime-cuda", "CUDA provider available")
    if hw.cpu_has_amx_bf16 and hw.has_openvino:
        return BackendChoice("openvino-bf16", "CPU has AMX (amx_bf16): OpenVINO with BF16 hint")
    if hw.cpu_has_amx_bf16:
        return BackendChoice(
            "onnxruntime-cpu", "CPU has AMX but openvino is not installed: ONNX Runtime FP32"
        )
    return BackendChoice(
        "onnxruntime-cpu",
        "no AMX: ONNX Runtime FP32 (export with --quantize int8 for a faster CPU model)",
    )
