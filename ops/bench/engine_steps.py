"""An engine step the bench measures before it goes into the engine: `PaddedSession` pads each
batch's sequence length up to a multiple (16), so OpenVINO sees fewer distinct input shapes (each
new shape costs a shape-specific preparation) and its kernels get aligned widths; outputs are cut
back, so vectors are unchanged. (Two OpenVINO streams, measured here first, are now the engine's
own `EMBEDQ_ENGINE_STREAMS`.)"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from workers.engine.cancellation import Cancellation
from workers.engine.pooling import FloatArray
from workers.engine.runtime import IntArray, ModelSession, Padded


def _pad_width(array: IntArray, width: int) -> IntArray:
    padded: IntArray = np.pad(array, ((0, 0), (0, width - array.shape[1])))
    return padded


class PaddedSession:
    """A session whose batches are padded (mask 0) to a multiple of `multiple` tokens."""

    def __init__(self, inner: ModelSession, multiple: int) -> None:
        self._inner = inner
        self._multiple = multiple
        self.backend = inner.backend
        self.batches_at_once = 1

    def run_all_together(
        self, batches: Sequence[Padded], cancellation: Cancellation | None = None
    ) -> list[list[FloatArray]]:
        if cancellation is not None:
            raise ValueError("the bench's padded session cannot be cancelled")
        return [self.run_all(*batch) for batch in batches]

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
