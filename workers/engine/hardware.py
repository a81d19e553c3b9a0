"""What the machine offers the engine: AMX, BF16 and VNNI instructions, a CUDA provider,
an OpenVINO runtime."""

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
    # BF16 dot products in AVX-512 (Zen 4, Cooper Lake+): OpenVINO computes BF16 with them
    # where AMX is absent.
    cpu_has_avx512_bf16: bool = False
    # INT8 dot products (VNNI, in AVX-512 or AVX): what OpenVINO's INT8 kernels need to pay off.
    cpu_has_vnni: bool = False

    @property
    def cpu_has_bf16(self) -> bool:
        """BF16 compute of either kind (AMX tiles or AVX-512 BF16 instructions)."""
        return self.cpu_has_amx_bf16 or self.cpu_has_avx512_bf16


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

    flags = cpu_flags()
    return Hardware(
        cpu_has_amx_bf16="amx_bf16" in flags,
        has_cuda_provider="CUDAExecutionProvider" in ort.get_available_providers(),
        has_openvino=importlib.util.find_spec("openvino") is not None,
        cpu_has_avx512_bf16="avx512_bf16" in flags,
        cpu_has_vnni=bool({"avx512_vnni", "avx_vnni", "amx_int8"} & flags),
    )
