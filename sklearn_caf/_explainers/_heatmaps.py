"""Post-processing shared by every explainer: resizing and normalizing raw maps."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np


def _linear_taps(n_in: int, n_out: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """1-D linear interpolation with half-pixel centres: output ``i`` is
    ``(1 - frac[i]) * x[lo[i]] + frac[i] * x[hi[i]]``.

    This is the convention of ``torch.nn.functional.interpolate(..., align_corners=False)``,
    ``tf.image.resize`` and OpenCV's ``INTER_LINEAR`` when upsampling, so maps agree with
    what users of those libraries see.
    """
    src = (np.arange(n_out) + 0.5) * (n_in / n_out) - 0.5
    src = np.clip(src, 0, n_in - 1)
    lo = np.floor(src).astype(int)
    hi = np.minimum(lo + 1, n_in - 1)
    return lo, hi, src - lo


def resize_maps(maps: np.ndarray, size: Sequence[int]) -> np.ndarray:
    """Resize the trailing ``len(size)`` axes of ``maps`` (multi-)linearly to ``size``.

    Separable, so it serves 2-D images and 3-D volumes alike. Gathers and weighted sums,
    not a product with an interpolation matrix: a matrix product runs in OpenBLAS's
    threads, which then spin for a while and slow the model's next pass on the same cores
    (on 2 cores, Grad-CAM called in a loop ran 1.4x slower).
    """
    out = np.asarray(maps, dtype=np.float64)
    n_spatial = len(size)
    for i, n_out in enumerate(size):
        axis = out.ndim - n_spatial + i
        if out.shape[axis] != n_out:
            lo, hi, frac = _linear_taps(out.shape[axis], n_out)
            shape = [1] * out.ndim
            shape[axis] = n_out
            frac = frac.reshape(shape)
            out = np.take(out, lo, axis=axis) * (1 - frac) + np.take(out, hi, axis=axis) * frac
    return out


def minmax_normalize(maps: np.ndarray, n_spatial: int) -> np.ndarray:
    """Scale each map (the trailing ``n_spatial`` axes) to [0, 1]; a constant map gives 0."""
    axes = tuple(range(maps.ndim - n_spatial, maps.ndim))
    lo = maps.min(axis=axes, keepdims=True)
    span = maps.max(axis=axes, keepdims=True) - lo
    with np.errstate(invalid="ignore", divide="ignore"):
        out = np.where(span > 0, (maps - lo) / np.where(span > 0, span, 1), 0.0)
    return out.astype(np.float32)


def to_heatmaps(raw: np.ndarray, size: Sequence[int]) -> np.ndarray:
    """Raw non-negative maps at the layer's resolution -> float32 maps in [0, 1] at ``size``."""
    return minmax_normalize(resize_maps(raw, size), len(size))
