from __future__ import annotations

from pathlib import Path

import pytest

from embedq_core.manifest import ModelManifest
from workers.engine.backend_choice import (
    BackendChoice,
    BackendKind,
    BackendUnavailable,
    choose_backend,
)
from workers.engine.hardware import Hardware, cpu_flags
from workers.engine.runtime import open_session

GPU = Hardware(cpu_has_amx_bf16=True, has_cuda_provider=True, has_openvino=True)
AMX = Hardware(cpu_has_amx_bf16=True, has_cuda_provider=False, has_openvino=True)
AMX_NO_OV = Hardware(cpu_has_amx_bf16=True, has_cuda_provider=False, has_openvino=False)
PLAIN = Hardware(cpu_has_amx_bf16=False, has_cuda_provider=False, has_openvino=True)
# AMD Zen 4 and the like: BF16 and VNNI in AVX-512, no AMX.
ZEN4 = Hardware(
    cpu_has_amx_bf16=False,
    has_cuda_provider=False,
    has_openvino=True,
    cpu_has_avx512_bf16=True,
    cpu_has_vnni=True,
)
ZEN4_NO_OV = Hardware(False, False, False, cpu_has_avx512_bf16=True, cpu_has_vnni=True)


def _manifest(precision: str) -> ModelManifest:
    return ModelManifest(
        source="m",
        weights_sha256="0" * 64,
        dimension=8,
        pooling="cls",
        normalize=True,
        max_length=16,
        precision=precision,  # type: ignore[arg-type]
        opset=18,
    )


@pytest.mark.parametrize(
    ("hw", "expected"),
    [
        (GPU, "onnxruntime-cuda"),
        (AMX, "openvino-bf16"),
        (AMX_NO_OV, "onnxruntime-cpu"),
        (PLAIN, "onnxruntime-cpu"),
        (ZEN4, "openvino-bf16"),
        (ZEN4_NO_OV, "onnxruntime-cpu"),
    ],
)
def test_auto_picks_the_fastest_faithful_backend_for_fp32(hw: Hardware, expected: str) -> None:
    choice = choose_backend("auto", _manifest("fp32"), hw)
    assert choice.kind == expected
    assert choice.reason


def test_int8_model_runs_on_onnxruntime_cpu_even_with_a_gpu() -> None:
    assert choose_backend("auto", _manifest("int8"), GPU).kind == "onnxruntime-cpu"
    with pytest.raises(BackendUnavailable):
        choose_backend("openvino", _manifest("int8"), AMX)


def test_openvino_int8_model_runs_on_openvino_only() -> None:
    for hw in (ZEN4, AMX, PLAIN, GPU):
        choice = choose_backend("auto", _manifest("int8-openvino"), hw)
        assert choice.kind == "openvino-int8"
        assert choice.openvino_bf16 == hw.cpu_has_bf16  # float layers in BF16 where it exists
    assert "no VNNI" in choose_backend("openvino", _manifest("int8-openvino"), PLAIN).reason
    with pytest.raises(BackendUnavailable):
        choose_backend("onnxruntime-cpu", _manifest("int8-openvino"), ZEN4)
    with pytest.raises(BackendUnavailable, match="openvino package"):
        choose_backend("auto", _manifest("int8-openvino"), ZEN4_NO_OV)


def test_fp16_model_never_falls_back_to_cpu() -> None:
    assert choose_backend("auto", _manifest("fp16"), GPU).kind == "onnxruntime-cuda"
    with pytest.raises(BackendUnavailable, match="needs a GPU"):
        choose_backend("auto", _manifest("fp16"), AMX)


def test_explicit_choices_are_honoured_or_refused() -> None:
    assert choose_backend("onnxruntime-cpu", _manifest("fp32"), GPU).kind == "onnxruntime-cpu"
    assert choose_backend("openvino", _manifest("fp32"), PLAIN).kind == "openvino-fp32"
    assert choose_backend("openvino", _manifest("fp32"), ZEN4).kind == "openvino-bf16"
    with pytest.raises(BackendUnavailable):
        choose_backend("onnxruntime-cuda", _manifest("fp32"), AMX)
    with pytest.raises(BackendUnavailable):
        choose_backend("openvino", _manifest("fp32"), AMX_NO_OV)


def test_cpu_flags_reads_the_flags_line(tmp_path: Path) -> None:
    info = tmp_path / "cpuinfo"
    info.write_text("processor\t: 0\nflags\t\t: fpu sse2 avx512f amx_bf16 amx_tile\n")
    assert {"amx_bf16", "avx512f"} <= cpu_flags(info)
    assert cpu_flags(tmp_path / "missing") == set()


@pytest.mark.parametrize("kind", ["onnxruntime-cpu", "onnxruntime-cuda"])
def test_engine_streams_beyond_one_need_openvino(kind: BackendKind) -> None:
    """ONNX Runtime has no streams: a worker told to run two refuses at start, naming the
    setting, rather than run one batch at a time while the operator thinks it runs two."""
    backend = BackendChoice(kind, "as chosen")
    with pytest.raises(ValueError, match=f"EMBEDQ_ENGINE_STREAMS=2 needs OpenVINO.*{kind}"):
        open_session(Path("never-read.onnx"), backend, 0, 2, "out")
