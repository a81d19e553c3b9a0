"""What the machine offers the engine: AMX, a CUDA provider, an OpenVINO runtime."""

from __future__ import annotations

import importlib.util
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class Hardware:
    """Facts backend selection depends on; detected, never assumed."""

    cpu_has_amx_bf16: bool
    has_cuda_provider: bool
    has_openvino: bool


def cpu_flags(cpuinfo: Path = Path("/proc/cpuinfo")) -> set[str]:
    """The CPU feature flags the kernel reports (empty where /proc/cpuinfo is absent)."""
    try:
        text = cpuinfo.read_text(encoding="utf-8", errors="replace")
    except OSError:
        return set()
    for line in text.splitlines():
        if line.startswith("flags"):
            return set(line.partition(":")[2].split())
    return set()


def detect_hardware() -> Hardware:
    """Probe this machine."""
    import onnxruntime as ort

    return Hardware(
        cpu_has_amx_bf16="amx_bf16" in cpu_flags(),
        has_cuda_provider="CUDAExecutionProvider" in ort.get_available_providers(),
        has_openvino=importlib.util.find_spec("openvino") is not None,
    )
