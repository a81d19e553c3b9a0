"""This CPU's nominal peak arithmetic rate, to say what share of it a variant reaches.

peak = cores x clock x operations per cycle per core for the variant's arithmetic (FP32 FMA,
BF16 dot products, INT8 dot products). Operations per cycle come from the microarchitecture,
not from a measurement; the clock is the one /proc/cpuinfo reports (a VM may report the base
clock while the core boosts higher, which would overstate the share).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from workers.engine.hardware import cpu_flags


@dataclass(frozen=True)
class CpuPeak:
    """Nominal peak operations per second, by arithmetic."""

    microarchitecture: str
    cores: int
    clock_ghz: float
    ops_per_cycle: dict[str, int]  # "fp32", "bf16", "int8" -> ops per cycle per core
    how: str

    def peak_ops_per_s(self, arithmetic: str) -> float | None:
        per_cycle = self.ops_per_cycle.get(arithmetic)
        return None if per_cycle is None else self.cores * self.clock_ghz * 1e9 * per_cycle


def _cpuinfo_field(name: str) -> str | None:
    try:
        text = Path("/proc/cpuinfo").read_text(encoding="utf-8", errors="replace")
    except OSError:
        return None
    for line in text.splitlines():
        if line.split(":")[0].strip() == name:
            return line.partition(":")[2].strip()
    return None


def detect_peak(cores: int) -> CpuPeak | None:
    """The peak for the CPUs this module knows (AMD Zen 4, Intel with AMX); None otherwise."""
    flags = cpu_flags()
    vendor, family = _cpuinfo_field("vendor_id"), _cpuinfo_field("cpu family")
    mhz = float(_cpuinfo_field("cpu MHz") or 0)
    if not mhz:
        return None
    if vendor == "AuthenticAMD" and family == "25" and "avx512f" in flags:
        # Zen 4 runs AVX-512 on two 256-bit FMA pipes: 2 x 8 lanes x 2 = 32 FP32 FLOP/cycle;
        # VDPBF16PS does 2 BF16 products per FP32 lane (64); VPDPBUSD 4 INT8 products (128).
        return CpuPeak(
            "AMD Zen 4 (AVX-512 on 256-bit pipes, no AMX)",
            cores,
            mhz / 1000,
            {"fp32": 32, "bf16": 64, "int8": 128},
            "cores x cpuinfo clock x (FP32: 2 FMA pipes x 8 lanes x 2 = 32 FLOP/cycle; "
            "BF16 via avx512_bf16: 64; INT8 via avx512_vnni: 128 ops/cycle)",
        )
    if vendor == "GenuineIntel" and "amx_bf16" in flags:
        # Sapphire Rapids and later: two 512-bit FMA units; AMX tiles 1,024 BF16 / 2,048 INT8.
        return CpuPeak(
            "Intel with AMX",
            cores,
            mhz / 1000,
            {"fp32": 64, "bf16": 1024, "int8": 2048},
            "cores x cpuinfo clock x (FP32: 2 x 16 lanes x 2 = 64 FLOP/cycle; "
            "AMX BF16 1,024 FLOP/cycle; AMX INT8 2,048 ops/cycle)",
        )
    return None
