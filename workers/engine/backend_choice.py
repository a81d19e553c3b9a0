"""Choosing the inference backend from the manifest, the settings and the hardware.

Pure logic, so every path (GPU, AMX CPU, plain CPU) is testable on any machine.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from embedq_core.manifest import ModelManifest
from workers.engine.hardware import Hardware

RuntimeChoice = Literal["auto", "onnxruntime-cpu", "onnxruntime-cuda", "openvino"]
BackendKind = Literal[
    "onnxruntime-cpu", "onnxruntime-cuda", "openvino-bf16", "openvino-fp32", "openvino-int8"
]


class BackendUnavailable(RuntimeError):
    """The asked-for runtime cannot run this manifest's model here."""


@dataclass(frozen=True)
class BackendChoice:
    """Which backend runs the model, and why (logged at worker start)."""

    kind: BackendKind
    reason: str
    # OpenVINO's inference precision for floating-point layers (all of them, or those an INT8
    # model keeps in floating point): BF16 where the CPU has BF16 instructions.
    openvino_bf16: bool = False


def choose_backend(choice: RuntimeChoice, manifest: ModelManifest, hw: Hardware) -> BackendChoice:
    """The backend for manifest on hw. Never a different model: an fp16 model needs CUDA, an
    int8 model runs on ONNX Runtime's CPU provider, an int8-openvino model on OpenVINO, an fp32
    model wherever it is fastest (measured: README, "The engine")."""
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
    if manifest.precision == "int8-openvino":
        if choice not in ("auto", "openvino"):
            raise BackendUnavailable(f"an int8-openvino model runs on openvino only, not {choice}")
        if not hw.has_openvino:
            raise BackendUnavailable("an int8-openvino model needs the openvino package")
        kernels = "VNNI INT8 kernels" if hw.cpu_has_vnni else "no VNNI: emulated INT8, slow"
        return BackendChoice(
            "openvino-int8", f"int8-openvino model ({kernels})", openvino_bf16=hw.cpu_has_bf16
        )
    if choice == "onnxruntime-cuda":
        if not hw.has_cuda_provider:
            raise BackendUnavailable("onnxruntime-cuda asked for, but no CUDAExecutionProvider")
        return BackendChoice("onnxruntime-cuda", "asked for")
    if choice == "openvino":
        if not hw.has_openvino:
            raise BackendUnavailable("openvino asked for, but the openvino package is missing")
        if hw.cpu_has_bf16:
            return BackendChoice("openvino-bf16", f"asked for; {_bf16_kind(hw)}", True)
        return BackendChoice("openvino-fp32", "asked for; no BF16 instructions, so FP32")
    if choice == "onnxruntime-cpu":
        return BackendChoice("onnxruntime-cpu", "asked for")
    if choice != "auto":  # a misspelt runtime must not quietly become the automatic choice
        raise BackendUnavailable(
            f"unknown runtime {choice!r}: auto, onnxruntime-cpu, onnxruntime-cuda or openvino"
        )
    if hw.has_cuda_provider:
        return BackendChoice("onnxruntime-cuda", "CUDA provider available")
    if hw.cpu_has_bf16 and hw.has_openvino:
        return BackendChoice("openvino-bf16", f"{_bf16_kind(hw)}: OpenVINO with BF16 hint", True)
    if hw.cpu_has_bf16:
        return BackendChoice(
            "onnxruntime-cpu", "CPU has BF16 but openvino is not installed: ONNX Runtime FP32"
        )
    return BackendChoice(
        "onnxruntime-cpu",
        "no BF16 instructions: ONNX Runtime FP32 "
        "(export with --quantize int8-openvino for a faster CPU model)",
    )


def _bf16_kind(hw: Hardware) -> str:
    return "CPU has AMX (amx_bf16)" if hw.cpu_has_amx_bf16 else "CPU has avx512_bf16 (no AMX)"
