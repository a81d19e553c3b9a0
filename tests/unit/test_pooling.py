from __future__ import annotations

import numpy as np

from workers.engine.pooling import l2_normalize, pool


def test_mean_pooling_ignores_padding() -> None:
    hidden = np.array([[[1.0, 2.0], [3.0, 4.0], [100.0, 100.0]]], dtype=np.float32)
    mask = np.array([[1, 1, 0]], dtype=np.int64)
    np.testing.assert_allclose(pool(hidden, mask, "mean"), [[2.0, 3.0]])


def test_cls_pooling_takes_the_first_token() -> None:
    hidden = np.arange(12, dtype=np.float32).reshape(2, 3, 2)
    mask = np.ones((2, 3), dtype=np.int64)
    np.testing.assert_allclose(pool(hidden, mask, "cls"), [[0.0, 1.0], [6.0, 7.0]])


def test_l2_normalize_gives_unit_rows_and_keeps_zero_rows() -> None:
    out = l2_normalize(np.array([[3.0, 4.0], [0.0, 0.0]], dtype=np.float32))
    np.testing.assert_allclose(out, [[0.6, 0.8], [0.0, 0.0]])
