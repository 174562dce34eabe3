"""Post-processing shared by every explainer: resizing and normalizing raw maps."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np


def _linear_resize_matrix(n_in: int, n_out: int) -> np.ndarray:
    """(n_out, n_in) weights of 1-D linear interpolation with half-pixel centres.

    This is the convention of ``torch.nn.functional.interpolate(..., align_corners=False)``,
    ``tf.image.resize`` and OpenCV's ``INTER_LINEAR`` when upsampling, so maps agree with
    what users of those libraries see.
    """
    src = (np.arange(n_out) + 0.5) * (n_in / n_out) - 0.5
    src = np.clip(src, 0, n_in - 1)
    lo = np.floor(src).astype(int)
    hi = np.minimum(lo + 1, n_in - 1)
    frac = src - lo
    weights = np.zeros((n_out, n_in))
    np.add.at(weights, (np.arange(n_out), lo), 1 - frac)
    np.add.at(weights, (np.arange(n_out), hi), frac)
    return weights


def resize_maps(maps: np.ndarray, size: Sequence[int]) -> np.ndarray:
    """Resize the trailing ``len(size)`` axes of ``maps`` (multi-)linearly to ``size``.

    Separable, so it serves 2-D images and 3-D volumes alike.
    """
    out = np.asarray(maps, dtype=np.float64)
    n_spatial = len(size)
    for i, n_out in enumerate(size):
        axis = out.ndim - n_spatial + i
        if out.shape[axis] != n_out:
            weights = _linear_resize_matrix(out.shape[axis], n_out)
            out = np.moveaxis(np.tensordot(out, weights, axes=([axis], [1])), -1, axis)
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
