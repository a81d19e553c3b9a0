"""This CPU's nominal peak arithmetic rate, to say what share of it a variant reaches.

peak = cores x clock x operations per cycle per core for the variant's arithmetic (FP32 FMA,
BF16 dot products, INT8 dot products), for the instructions the CPU has (AMX tiles, AVX-512
BF16 or VNNI, plain AVX2). Operations per cycle come from the microarchitecture, not from a
measurement; the clock is sampled from /proc/cpuinfo while each variant runs (ClockSampler), so
a core that boosts or throttles under load is counted at the speed it ran (a VM may report a
fixed value while the core boosts higher, which would overstate the share).
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType

from workers.engine.hardware import cpu_flags


@dataclass(frozen=True)
class CpuPeak:
    """Nominal peak operations per second, by arithmetic."""

    microarchitecture: str
    cores: int
    clock_ghz: float
    ops_per_cycle: dict[str, int]  # "fp32", "bf16", "int8" -> ops per cycle per core
    how: str

    def peak_ops_per_s(self, arithmetic: str, clock_ghz: float | None = None) -> float | None:
        """Peak for arithmetic at clock_ghz (default: the clock read when detected)."""
        per_cycle = self.ops_per_cycle.get(arithmetic)
        clock = clock_ghz or self.clock_ghz
        return None if per_cycle is None else self.cores * clock * 1e9 * per_cycle


def current_clock_ghz() -> float | None:
    """The mean of every core's clock /proc/cpuinfo reports now, or None."""
    try:
        text = Path("/proc/cpuinfo").read_text(encoding="utf-8", errors="replace")
    except OSError:
        return None
    mhz = [
        float(line.partition(":")[2])
        for line in text.splitlines()
        if line.split(":")[0].strip() == "cpu MHz"
    ]
    return sum(mhz) / len(mhz) / 1000 if mhz else None


class ClockSampler:
    """Samples current_clock_ghz every interval_s in a thread while the block runs."""

    def __init__(self, interval_s: float = 0.5) -> None:
        self._interval_s = interval_s
        self._samples: list[float] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while True:
            clock = current_clock_ghz()
            if clock is not None:
                self._samples.append(clock)
            if self._stop.wait(self._interval_s):
                return

    def __enter__(self) -> ClockSampler:
        self._thread.start()
        return self

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self._stop.set()
        self._thread.join()

    @property
    def mean_ghz(self) -> float | None:
        """The mean of the samples taken, or None."""
        return sum(self._samples) / len(self._samples) if self._samples else None


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
    """The peak for the CPUs this module knows (AMD Zen 3, Zen 4 and Zen 5, Intel with AMX or
    with AVX-512 only); None otherwise."""
    flags = cpu_flags()
    vendor, family = _cpuinfo_field("vendor_id"), _cpuinfo_field("cpu family")
    mhz = float(_cpuinfo_field("cpu MHz") or 0)
    if not mhz:
        return None
    if vendor == "AuthenticAMD" and family == "26" and "avx512f" in flags:
        # Zen 5 server parts (EPYC 9005) run AVX-512 on full 512-bit FMA pipes: 2 x 16 lanes x
        # 2 = 64 FP32 FLOP/cycle; VDPBF16PS 128; VPDPBUSD 256 INT8 ops/cycle.
        return CpuPeak(
            "AMD Zen 5 (AVX-512 on 512-bit pipes, no AMX)",
            cores,
            mhz / 1000,
            {"fp32": 64, "bf16": 128, "int8": 256},
            "cores x cpuinfo clock x (FP32: 2 FMA pipes x 16 lanes x 2 = 64 FLOP/cycle; "
            "BF16 via avx512_bf16: 128; INT8 via avx512_vnni: 256 ops/cycle)",
        )
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
    if vendor == "AuthenticAMD" and family == "25":
        # Zen 3: AVX2 on two 256-bit FMA pipes (32 FP32 FLOP/cycle); no BF16 instructions; INT8
        # without VNNI runs VPMADDUBSW (2 per cycle, 32 products each) plus a widening add.
        return CpuPeak(
            "AMD Zen 3 (AVX2, no AVX-512, no VNNI)",
            cores,
            mhz / 1000,
            {"fp32": 32, "int8": 64},
            "cores x clock x (FP32: 2 FMA pipes x 8 lanes x 2 = 32 FLOP/cycle; no BF16; INT8 "
            "without VNNI: VPMADDUBSW 2/cycle x 32 products = 64 ops/cycle, an upper bound)",
        )
    if vendor == "GenuineIntel" and "avx512f" in flags and "amx_bf16" not in flags:
        vnni = "avx512_vnni" in flags
        bf16 = "avx512_bf16" in flags
        per_cycle = {"fp32": 64, **({"bf16": 128} if bf16 else {}), "int8": 256 if vnni else 128}
        return CpuPeak(
            "Intel with AVX-512, no AMX",
            cores,
            mhz / 1000,
            per_cycle,
            "cores x clock x (FP32: 2 x 16 lanes x 2 = 64 FLOP/cycle; BF16 via avx512_bf16: "
            "128; INT8 via avx512_vnni: 256 ops/cycle, without VNNI 128)",
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
