"""Inference sessions over one exported ONNX file: ONNX Runtime (CPU or CUDA) or OpenVINO."""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import numpy.typing as npt

from embedq_core.manifest import ModelManifest
from workers.engine.backend_choice import BackendChoice, choose_backend
from workers.engine.cancellation import Cancellation, RunCancelled
from workers.engine.config import EngineConfig
from workers.engine.hardware import Hardware, detect_hardware

log = logging.getLogger(__name__)

IntArray = npt.NDArray[np.int64]
FloatArray = npt.NDArray[np.float32]


Padded = tuple[IntArray, IntArray, IntArray]  # input_ids, attention_mask, token_type_ids


class ModelSession(Protocol):
    """Token ids in, token states (batch, seq, dim) out as float32."""

    backend: str
    batches_at_once: int  # how many batches run_all_together takes

    def run_all_together(
        self, batches: Sequence[Padded], cancellation: Cancellation | None = None
    ) -> list[list[FloatArray]]:
        """Run up to batches_at_once padded batches at once; each one's run_all outputs. With a
        cancellation, cancel() stops the run (RunCancelled)."""

    def run(
        self, input_ids: IntArray, attention_mask: IntArray, token_type_ids: IntArray
    ) -> FloatArray:
        """Run one padded batch; the first output only."""

    def run_all(
        self, input_ids: IntArray, attention_mask: IntArray, token_type_ids: IntArray
    ) -> list[FloatArray]:
        """Run one padded batch; every output the session was opened with, in that order."""


def _feeds(
    names: set[str], input_ids: IntArray, attention_mask: IntArray, token_type_ids: IntArray
) -> dict[str, IntArray]:
    feeds = {"input_ids": input_ids, "attention_mask": attention_mask}
    if "token_type_ids" in names:
        feeds["token_type_ids"] = token_type_ids
    return feeds


class OrtSession:
    """ONNX Runtime on the CPU provider, or on CUDA with IO binding."""

    def __init__(
        self,
        onnx_path: Path,
        use_cuda: bool,
        intra_op_threads: int,
        output_name: str,
        extra_outputs: tuple[str, ...] = (),
    ) -> None:
        import onnxruntime as ort

        options = ort.SessionOptions()
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        if intra_op_threads > 0:
            options.intra_op_num_threads = intra_op_threads
        providers = (
            ["CUDAExecutionProvider", "CPUExecutionProvider"]
            if use_cuda
            else ["CPUExecutionProvider"]
        )
        if use_cuda and hasattr(ort, "preload_dlls"):
            # The worker-gpu image carries CUDA and cuDNN as PyPI wheels (onnxruntime-gpu's
            # cuda/cudnn extras), not on the library path: ORT >= 1.21 loads them from there.
            ort.preload_dlls()
        no_gpu = (
            "no usable GPU: CUDAExecutionProvider failed to initialise ({}); give the worker a "
            "GPU (the NVIDIA driver and a device) or run a CPU worker on an FP32 export"
        )
        try:
            self._session = ort.InferenceSession(str(onnx_path), options, providers=providers)
        except Exception as exc:
            if use_cuda:
                raise RuntimeError(no_gpu.format(f"{type(exc).__name__}: {exc}")) from exc
            raise
        active = self._session.get_providers()
        if use_cuda and active[0] != "CUDAExecutionProvider":
            # ORT falls back to CPU silently when CUDA fails to initialise; refuse instead.
            raise RuntimeError(no_gpu.format(f"active providers: {active}"))
        self._use_cuda = use_cuda
        self._input_names = {i.name for i in self._session.get_inputs()}
        self._output_names = [output_name, *extra_outputs]
        self.backend = "onnxruntime-cuda" if use_cuda else "onnxruntime-cpu"
        self.batches_at_once = 1

    def run_all_together(
        self, batches: Sequence[Padded], cancellation: Cancellation | None = None
    ) -> list[list[FloatArray]]:
        if cancellation is None:
            return [self.run_all(*batch) for batch in batches]
        import onnxruntime as ort

        # ORT checks the flag between nodes; a fresh RunOptions per run, so a late stop can
        # only ever end the run it was meant for.
        options = ort.RunOptions()

        def stop() -> None:
            options.terminate = True

        with cancellation.stoppable(stop):
            return [self._run(self._output_names, *batch, options) for batch in batches]

    def run(
        self, input_ids: IntArray, attention_mask: IntArray, token_type_ids: IntArray
    ) -> FloatArray:
        return self._run(self._output_names[:1], input_ids, attention_mask, token_type_ids)[0]

    def run_all(
        self, input_ids: IntArray, attention_mask: IntArray, token_type_ids: IntArray
    ) -> list[FloatArray]:
        return self._run(self._output_names, input_ids, attention_mask, token_type_ids)

    def _run(
        self,
        names: list[str],
        input_ids: IntArray,
        attention_mask: IntArray,
        token_type_ids: IntArray,
        options: Any = None,
    ) -> list[FloatArray]:
        feeds = _feeds(self._input_names, input_ids, attention_mask, token_type_ids)
        if not self._use_cuda:
            outputs = self._session.run(names, feeds, options)
            return [np.asarray(o, dtype=np.float32) for o in outputs]
        # IO binding: inputs copied once to the device, output allocated there and copied back
        # once, instead of ORT staging every tensor through extra host buffers.
        binding = self._session.io_binding()
        for name, array in feeds.items():
            binding.bind_cpu_input(name, array)
        for name in names:
            binding.bind_output(name, "cuda")
        self._session.run_with_iobinding(binding, options)
        return [np.asarray(o, dtype=np.float32) for o in binding.copy_outputs_to_cpu()]


HEAL_ATTEMPTS = 5  # runs after a cancellation until the graph completes one again


class OpenVinoSession:
    """OpenVINO on the CPU reading the same ONNX file; BF16 inference precision on AMX.

    One stream runs one batch at a time on every thread. With `streams` > 1 that many batches
    run at once, each on its share of the threads: no stream waits on another's threads, so a
    core taken by another process stalls one batch, not all of them."""

    def __init__(
        self,
        onnx_path: Path,
        bf16: bool,
        threads: int,
        streams: int,
        output_name: str,
        extra_outputs: tuple[str, ...] = (),
    ) -> None:
        import openvino as ov

        core = ov.Core()
        config: dict[str, Any] = {"INFERENCE_PRECISION_HINT": "bf16" if bf16 else "f32"}
        if streams == 1:
            config["PERFORMANCE_HINT"] = "LATENCY"
        else:
            config["NUM_STREAMS"] = streams
        if threads > 0:
            config["INFERENCE_NUM_THREADS"] = max(threads, streams)
        compiled = core.compile_model(core.read_model(str(onnx_path)), "CPU", config)
        self._requests = [compiled.create_infer_request() for _ in range(streams)]
        self.batches_at_once = streams
        self._input_names = {port.get_any_name() for port in compiled.inputs}
        self._outputs = [compiled.output(name) for name in (output_name, *extra_outputs)]
        self.backend = "openvino-bf16" if bf16 else "openvino-fp32"
        self._unsettled = False  # a run was cancelled since the last one that completed

    def run(
        self, input_ids: IntArray, attention_mask: IntArray, token_type_ids: IntArray
    ) -> FloatArray:
        return self.run_all(input_ids, attention_mask, token_type_ids)[0]

    def _heal(self, requests: Sequence[Any]) -> None:
        """Run a two-token input through each cancelled request until one run completes.

        A run cancelled mid-graph sometimes leaves the graph's dynamic shapes half updated
        (OpenVINO 2026.4: the next run of another shape can fail shape inference, measured in
        about 1 of 12 cancellations on the bge-large shape); a run that completes updates every
        node again. Two tokens cost a few milliseconds even on a large model."""
        ids = np.zeros((1, 2), dtype=np.int64)
        feeds = _feeds(self._input_names, ids, np.ones_like(ids), np.zeros_like(ids))
        for request in requests:
            for attempt in range(HEAL_ATTEMPTS):
                try:
                    request.infer(feeds)
                    break
                except RuntimeError:
                    if attempt == HEAL_ATTEMPTS - 1:
                        raise

    def run_all(
        self, input_ids: IntArray, attention_mask: IntArray, token_type_ids: IntArray
    ) -> list[FloatArray]:
        return self.run_all_together([(input_ids, attention_mask, token_type_ids)])[0]

    def run_all_together(
        self, batches: Sequence[Padded], cancellation: Cancellation | None = None
    ) -> list[list[FloatArray]]:
        try:
            outputs = self._run_together(batches, cancellation)
        except RunCancelled:
            raise
        except RuntimeError:
            if not self._unsettled:
                raise
            # Healed after the cancellation, the graph may still refuse another shape once
            # (_heal): heal again and run once more.
            self._heal(self._requests[: len(batches)])
            outputs = self._run_together(batches, cancellation)
        self._unsettled = False
        return outputs

    def _run_together(
        self, batches: Sequence[Padded], cancellation: Cancellation | None
    ) -> list[list[FloatArray]]:
        requests = self._requests[: len(batches)]

        def stop() -> None:
            for request in requests:
                request.cancel()  # harmless on a request that already finished

        with cancellation.stoppable(stop) if cancellation else contextlib.nullcontext():
            for request, batch in zip(requests, batches, strict=True):
                request.start_async(_feeds(self._input_names, *batch))
            if cancellation is not None and cancellation.cancelled:
                stop()  # cancelled before a request had started: cancel what has started now
            failure: Exception | None = None
            for request in requests:
                try:
                    request.wait()
                except Exception as exc:  # wait for every request before reusing any
                    failure = failure or exc
            if failure is not None:
                if cancellation is not None and cancellation.cancelled:
                    self._unsettled = True
                    self._heal(requests)
                raise failure
        # Copies: a request's output buffers are reused by its next batch.
        return [
            [np.array(request.get_tensor(out).data, dtype=np.float32) for out in self._outputs]
            for request in requests
        ]


def open_session(
    onnx_path: Path,
    backend: BackendChoice,
    intra_op_threads: int,
    streams: int,
    output_name: str,
    extra_outputs: tuple[str, ...] = (),
) -> ModelSession:
    """Open the chosen backend on onnx_path; `extra_outputs` (e.g. a sparse head's token
    weights) come after output_name from run_all. streams > 1 needs OpenVINO."""
    if backend.kind.startswith("openvino"):
        session = OpenVinoSession(
            onnx_path, backend.openvino_bf16, intra_op_threads, streams, output_name, extra_outputs
        )
        session.backend = backend.kind  # openvino-int8 computes its float layers in BF16 or FP32
        return session
    if streams != 1:
        raise ValueError(
            f"EMBEDQ_ENGINE_STREAMS={streams} needs OpenVINO; this engine runs {backend.kind}"
            f" ({backend.reason}): set it to 1"
        )
    return OrtSession(
        onnx_path, backend.kind == "onnxruntime-cuda", intra_op_threads, output_name, extra_outputs
    )


def open_model_session(
    model_dir: Path,
    manifest: ModelManifest,
    config: EngineConfig,
    hardware: Hardware | None = None,
) -> ModelSession:
    """The session for an exported model on the backend its manifest, config.runtime and the
    hardware call for, with every output the manifest names (a sparse head's too); logs the
    choice and why."""
    backend = choose_backend(config.runtime, manifest, hardware or detect_hardware())
    session = open_session(
        model_dir / manifest.onnx_file,
        backend,
        config.intra_op_threads,
        config.streams,
        manifest.output_name,
        (manifest.sparse_output_name,) if manifest.sparse_output_name else (),
    )
    streams = f", {config.streams} streams" if config.streams > 1 else ""
    log.info(
        "%s %s on %s%s (%s)",
        manifest.kind, manifest.manifest_id, backend.kind, streams, backend.reason,
    )  # fmt: skip
    return session
