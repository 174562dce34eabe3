"""Input checks shared by the explainers: clear errors instead of silent wrong results."""

from __future__ import annotations

from typing import Any

import numpy as np


def check_images(X: Any, bound: Any | None = None, *, name: str = "X") -> np.ndarray:
    """``X`` as a float32 array (n, ...) with a batch axis and at least one spatial axis.

    Framework tensors are accepted and copied to the host through ``bound``.
    """
    if bound is not None and not isinstance(X, np.ndarray) and hasattr(X, "shape"):
        X = bound.to_numpy(X)
    try:
        arr = np.asarray(X)
    except Exception as exc:  # ragged lists and the like
        raise ValueError(f"{name} must be an array of shape (n_images, ...); {exc}") from exc
    if arr.dtype.kind not in "biuf":
        raise ValueError(f"{name} must hold numbers; got dtype {arr.dtype}.")
    if arr.ndim < 3:
        raise ValueError(
            f"{name} must be a batch of images (n_images, channels, height, width) in the "
            f"model's own layout; got an array of shape {arr.shape}."
        )
    if arr.shape[0] == 0:
        raise ValueError(f"{name} is an empty batch (shape {arr.shape}); give at least one image.")
    arr = arr.astype(np.float32, copy=False)
    if not np.isfinite(arr).all():
        raise ValueError(f"{name} contains NaN or infinite values.")
    return arr


def check_targets(
    targets: Any, n_samples: int, n_outputs: int, *, name: str = "targets"
) -> np.ndarray:
    """Class indices as an int array (n, k), each in [0, n_outputs)."""
    arr = np.asarray(targets)
    if arr.ndim == 1:
        arr = arr[:, None]
    if arr.ndim != 2 or arr.shape[0] != n_samples or arr.shape[1] == 0:
        raise ValueError(
            f"{name} must hold one class index per image, shape ({n_samples},), or k per "
            f"image, shape ({n_samples}, k); got shape {np.shape(targets)}."
        )
    if arr.dtype.kind == "f" and np.all(np.isfinite(arr)) and np.all(arr == np.round(arr)):
        arr = arr.astype(np.int64)
    if arr.dtype.kind not in "iu":
        raise ValueError(f"{name} must be integer class indices; got dtype {arr.dtype}.")
    bad = (arr < 0) | (arr >= n_outputs)
    if bad.any():
        raise ValueError(
            f"{name} must be class indices in [0, {n_outputs}) (the model has {n_outputs} "
            f"outputs); got {arr[bad][:5].tolist()}."
        )
    return arr.astype(np.int64)
