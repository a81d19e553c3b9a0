"""Engine steps the bench measures before any of them goes into the engine:

- `PaddedSession`: pad each batch's sequence length up to a multiple (16), so OpenVINO sees
  fewer distinct input shapes (each new shape costs a shape-specific preparation) and its
  kernels get aligned widths; outputs are cut back, so vectors are unchanged.
- `StreamsEmbedder`: OpenVINO with two streams (one thread each on two cores) and two batches
  in flight, against the engine's one stream using every thread for one batch at a time.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from embedq_core.manifest import ModelManifest
from workers.engine.backend_choice import BackendChoice
from workers.engine.batching import plan_batches
from workers.engine.config import EngineConfig
from workers.engine.pooling import FloatArray, l2_normalize, pool
from workers.engine.runtime import IntArray, ModelSession
from workers.engine.tokenize import TextTokenizer


def _pad_width(array: IntArray, width: int) -> IntArray:
    padded: IntArray = np.pad(array, ((0, 0), (0, width - array.shape[1])))
    return padded


class PaddedSession:
    """A session whose batches are padded (mask 0) to a multiple of `multiple` tokens."""

    def __init__(self, inner: ModelSession, multiple: int) -> None:
        self._inner = inner
        self._multiple = multiple
        self.backend = inner.backend

    def _padded(self, *arrays: IntArray) -> tuple[int, list[IntArray]]:
        width = arrays[0].shape[1]
        target = -(-width // self._multiple) * self._multiple
        return width, [_pad_width(a, target) for a in arrays]

    def run(
        self, input_ids: IntArray, attention_mask: IntArray, token_type_ids: IntArray
    ) -> FloatArray:
        width, (ids, mask, types) = self._padded(input_ids, attention_mask, token_type_ids)
        return self._inner.run(ids, mask, types)[:, :width]

    def run_all(
        self, input_ids: IntArray, attention_mask: IntArray, token_type_ids: IntArray
    ) -> list[FloatArray]:
        width, (ids, mask, types) = self._padded(input_ids, attention_mask, token_type_ids)
        return [o[:, :width] if o.ndim == 3 else o for o in self._inner.run_all(ids, mask, types)]


class StreamsEmbedder:
    """OpenVINO with `streams` streams and as many batches in flight; the engine's batching,
    tokenizer and pooling, so only the scheduling differs."""

    def __init__(
        self,
        model_dir: Path,
        manifest: ModelManifest,
        backend: BackendChoice,
        config: EngineConfig,
        streams: int,
    ) -> None:
        import openvino as ov

        self._manifest = manifest
        self._config = config
        self._tokenizer = TextTokenizer(model_dir / "tokenizer.json", manifest.max_length)
        compiled = ov.Core().compile_model(
            str(model_dir / manifest.onnx_file),
            "CPU",
            {
                "INFERENCE_PRECISION_HINT": "bf16" if backend.openvino_bf16 else "f32",
                "NUM_STREAMS": streams,
                "INFERENCE_NUM_THREADS": max(config.intra_op_threads, streams),
            },
        )
        self._inputs = {port.get_any_name() for port in compiled.inputs}
        self._output = compiled.output(manifest.output_name)
        self._queue = ov.AsyncInferQueue(compiled, streams)

    def embed(self, texts: list[str]) -> FloatArray:
        tokenized = self._tokenizer.tokenize(texts)
        lengths = [len(t.ids) for t in tokenized]
        vectors = np.empty((len(texts), self._manifest.dimension), dtype=np.float32)

        def done(request: object, userdata: tuple[list[int], IntArray]) -> None:
            batch, mask = userdata
            hidden = np.asarray(request.get_tensor(self._output).data, dtype=np.float32)  # type: ignore[attr-defined]
            vectors[batch] = l2_normalize(pool(hidden, mask, self._manifest.pooling))

        self._queue.set_callback(done)
        batches = plan_batches(lengths, self._config.max_batch_tokens, self._config.max_batch_size)
        for batch in batches:
            ids, mask, types = self._tokenizer.pad([tokenized[i] for i in batch])
            feeds = {"input_ids": ids, "attention_mask": mask, "token_type_ids": types}
            inputs = {k: v for k, v in feeds.items() if k in self._inputs}
            self._queue.start_async(inputs, (batch, mask))
        self._queue.wait_all()
        return vectors
