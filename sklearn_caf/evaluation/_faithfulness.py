"""Deletion and insertion curves (Petsiuk et al., RISE, BMVC 2018): do the salient pixels matter?

Deletion replaces the most salient pixels by a baseline, step by step, and follows the
softmax probability of the explained class; insertion puts them, most salient first, into a
blurred copy of the image. The perturbed images are built on the model's device from the
image, its blurred copy and the rank of every pixel in the saliency order, and run through
the explainer's bound model (``bound.trunk`` then ``bound.head``) in batches.

Two protocols: ``"sklearn-caf"`` (a true Gaussian blur with nearest-edge padding, ties moved in
row-major order, steps of equal size, the AUC over the fraction of pixels moved) and
``"rise"``, which reproduces RISE's ``CausalMetric`` (eclique/RISE, ``evaluation.py``): its
11 x 11 kernel, made by ``gaussian_filter`` of a unit impulse and applied with zero padding;
pixels taken in the reverse of ``np.argsort``'s order; each step moving exactly ``step``
pixels; its AUC, the trapezoid rule over the step index.
"""

from __future__ import annotations

import warnings
from numbers import Integral, Real
from typing import TYPE_CHECKING, Any

import numpy as np

from .._explainers import BaseExplainer, ModelEstimator, check_images, check_targets
from .._utils import caller_stacklevel, import_optional, spatial_axes
from ..backend import get_backend

if TYPE_CHECKING:
    import pandas as pd

__all__ = ["deletion_insertion"]

#: Defaults (RISE's): 100 steps, pixels deleted to 0, inserted into a blur of sigma 5 px.
DEFAULT_N_STEPS = 100
DEFAULT_BLUR_SIGMA = 5.0
#: The protocols of deletion_insertion: the library's own, and RISE's CausalMetric.
PROTOCOLS = ("sklearn-caf", "rise")
#: RISE's blur kernel is klen x klen (``gkern(klen=11, nsig=5)`` in its notebook).
RISE_KERNEL_SIZE = 11
# Ranks are compared as float32 on the device: exact for up to 2**24 pixels per image.
_MAX_PIXELS = 2**24


def _trapezoid(y: np.ndarray, x: np.ndarray) -> np.ndarray:
    # Written out: np.trapezoid is NumPy >= 2 only, np.trapz gone from NumPy 2.
    y = np.asarray(y, dtype=np.float64)
    return np.sum(np.diff(x) * (y[..., 1:] + y[..., :-1]) / 2, axis=-1)


def step_size(n_pixels: int, n_steps: int | None, step: int | None) -> int:
    """Pixels moved per step: ``step``, or ``ceil(n_pixels / n_steps)``."""
    return int(step) if step is not None else -(-n_pixels // int(n_steps))


def pixel_counts(n_pixels: int, n_steps: int | None = None, step: int | None = None) -> np.ndarray:
    """How many pixels are moved at each point of the curves, from 0 to ``n_pixels``.

    Every step moves the same number of pixels, ``s = step`` or ``ceil(n_pixels / n_steps)``,
    the last one what is left (RISE's rule): point ``k`` has moved ``min(k * s, n_pixels)``
    pixels, for ``k = 0 ... ceil(n_pixels / s)``. That is ``n_steps`` steps whenever
    ``(n_steps - 1) * s < n_pixels`` (always when ``n_steps ** 2 <= n_pixels``), else fewer.
    """
    s = step_size(n_pixels, n_steps, step)
    n_points = -(-n_pixels // s) + 1
    return np.minimum(np.arange(n_points, dtype=np.int64) * s, n_pixels)


def _positive_int(value: Any) -> bool:
    return not isinstance(value, bool) and isinstance(value, Integral) and value >= 1


def check_protocol_options(
    n_steps: Any, step: Any, protocol: Any
) -> tuple[int | None, int | None, str]:
    """``(n_steps, step, protocol)`` checked: ``n_steps`` is ``DEFAULT_N_STEPS`` when both
    it and ``step`` are None; giving both is an error."""
    if protocol not in PROTOCOLS:
        raise ValueError(f"protocol must be one of {PROTOCOLS}; got {protocol!r}.")
    if step is not None:
        if not _positive_int(step):
            raise ValueError(f"step must be a positive integer (pixels) or None; got {step!r}.")
        if n_steps is not None:
            raise ValueError(
                f"give n_steps or step, not both (n_steps={n_steps!r}, step={step!r}): "
                "step sets the number of steps, ceil(pixels / step)."
            )
        return None, int(step), protocol
    if n_steps is None:
        n_steps = DEFAULT_N_STEPS
    if not _positive_int(n_steps):
        raise ValueError(f"n_steps must be a positive integer; got {n_steps!r}.")
    return int(n_steps), None, protocol


def check_faithfulness_options(
    n_steps: Any, baseline: Any, blur_sigma: Any, batch_size: Any
) -> tuple[int, Any, float, int | None]:
    """The options checked, each error naming its parameter."""
    if n_steps is not None and not _positive_int(n_steps):
        raise ValueError(f"n_steps must be a positive integer; got {n_steps!r}.")
    if isinstance(blur_sigma, bool) or not isinstance(blur_sigma, Real):
        raise ValueError(f"blur_sigma must be a number >= 0 (pixels); got {blur_sigma!r}.")
    if not np.isfinite(blur_sigma) or blur_sigma < 0:
        raise ValueError(f"blur_sigma must be a number >= 0 (pixels); got {blur_sigma!r}.")
    if batch_size is not None and (
        isinstance(batch_size, bool) or not isinstance(batch_size, Integral) or batch_size < 1
    ):
        raise ValueError(f"batch_size must be a positive integer or None; got {batch_size!r}.")
    if isinstance(baseline, bool):
        raise ValueError(f"baseline must be a number or an array of numbers; got {baseline!r}.")
    try:
        values = np.asarray(baseline, dtype=np.float32)
    except (TypeError, ValueError) as exc:
        raise ValueError(
            f"baseline must be a number or an array of numbers; got {baseline!r}."
        ) from exc
    if not np.isfinite(values).all():
        raise ValueError("baseline must be finite.")
    return (
        None if n_steps is None else int(n_steps),
        (float(values) if values.ndim == 0 else values),
        float(blur_sigma),
        (None if batch_size is None else int(batch_size)),
    )


def _check_baseline(baseline: Any, image_shape: tuple) -> np.ndarray:
    try:
        return np.ascontiguousarray(
            np.broadcast_to(np.asarray(baseline, dtype=np.float32), image_shape)
        )
    except ValueError:
        raise ValueError(
            f"baseline must be a number or an array that broadcasts to one image's shape "
            f"{image_shape} (e.g. one value per channel); got shape {np.shape(baseline)}."
        ) from None


def blur_images(X: np.ndarray, sigma: float, channel_axis: int) -> np.ndarray:
    """A Gaussian blur of each image and channel over the spatial axes only.

    Edges are extended by their nearest pixel, so that a blurred image does not darken at
    its border (a zero-padded convolution would add an edge the model can see).
    """
    from scipy.ndimage import gaussian_filter

    if sigma == 0:
        return X.copy()
    spatial = spatial_axes(X.ndim, channel_axis)
    sigmas = [sigma if ax in spatial else 0.0 for ax in range(X.ndim)]
    return gaussian_filter(X, sigma=sigmas, mode="nearest").astype(np.float32, copy=False)


def rise_kernel(sigma: float, size: int = RISE_KERNEL_SIZE) -> np.ndarray:
    """RISE's ``gkern(size, sigma)`` for one channel: ``scipy.ndimage.gaussian_filter`` of a
    ``size x size`` unit impulse at the centre (its defaults: reflected edges, truncated at 4
    sigma), float32 as RISE stores it. It sums to 1; for sigma 5 its standard deviation is
    about 3.1 px, as the reflected tails pile up inside the 11 x 11 square."""
    from scipy.ndimage import gaussian_filter

    impulse = np.zeros((size, size))
    impulse[size // 2, size // 2] = 1.0
    return gaussian_filter(impulse, sigma).astype(np.float32)


def rise_blur_images(X: np.ndarray, sigma: float, channel_axis: int) -> np.ndarray:
    """RISE's insertion substrate: each channel convolved with :func:`rise_kernel` over the
    spatial axes, zero padded (``conv2d(x, kern, padding=klen // 2)``): the border darkens
    towards 0 within 5 pixels."""
    from scipy.ndimage import correlate

    spatial = spatial_axes(X.ndim, channel_axis)
    kernel = rise_kernel(sigma).astype(np.float64)
    shape = [1] * X.ndim
    for ax in spatial:
        shape[ax] = kernel.shape[0]
    out = correlate(
        X.astype(np.float64), kernel.reshape(shape), mode="constant", cval=0.0, origin=0
    )
    return out.astype(np.float32)


def rise_ranks(heatmaps: np.ndarray) -> np.ndarray:
    """Each pixel's position in RISE's order: the reverse of ``np.argsort`` of the flat map.

    The sort is NumPy's default (not stable) one, on the map's own dtype, as RISE calls it:
    tied pixels come in the reverse of the order that sort leaves them in, which depends on
    the NumPy version and the CPU (its SIMD sorts); on one machine this is RISE's order.
    """
    n = heatmaps.shape[0]
    flat = np.asarray(heatmaps).reshape(n, -1)
    order = np.flip(np.argsort(flat, axis=1), axis=1)
    ranks = np.empty(order.shape, dtype=np.int64)
    np.put_along_axis(ranks, order, np.arange(flat.shape[1])[None, :], axis=1)
    return ranks.reshape(heatmaps.shape)


def saliency_ranks(heatmaps: np.ndarray) -> np.ndarray:
    """Each pixel's position in the deletion order: 0 is the most salient pixel.

    Ties go to the pixel that comes first in row-major (C) order over the spatial axes, so
    the order does not depend on the sort algorithm; a constant map deletes in raster order.
    """
    n = heatmaps.shape[0]
    flat = heatmaps.reshape(n, -1).astype(np.float64)
    order = np.argsort(-flat, axis=1, kind="stable")
    ranks = np.empty_like(order)
    np.put_along_axis(ranks, order, np.arange(flat.shape[1])[None, :], axis=1)
    return ranks.reshape(heatmaps.shape)


def _softmax_at(logits: np.ndarray, targets: np.ndarray) -> np.ndarray:
    z = logits.astype(np.float64)
    z_t = z[np.arange(len(z)), targets]
    return 1.0 / np.exp(z - z_t[:, None]).sum(axis=1)


def model_outputs(bound: Any, X: np.ndarray, batch_size: int) -> np.ndarray:
    """The model's (selected) output on ``X``, batch by batch, as NumPy."""
    parts = []
    with bound:
        for start in range(0, len(X), batch_size):
            a, context = bound.trunk(bound.asarray(X[start : start + batch_size]))
            parts.append(bound.to_numpy(bound.head(a, context)))
    return np.concatenate(parts).astype(np.float64)


def _warn_if_probabilities(outputs: np.ndarray) -> None:
    if (
        outputs.shape[1] > 1
        and (outputs >= 0).all()
        and np.allclose(outputs.sum(axis=1), 1.0, atol=1e-4)
    ):
        warnings.warn(
            "the model's outputs are non-negative and sum to 1 for every image: they look like "
            "probabilities, and deletion/insertion take a softmax of them. Explain the logits "
            "(the layer before the softmax; output= selects a model output).",
            UserWarning,
            stacklevel=caller_stacklevel(),
        )


def faithfulness_curves(
    bound: Any,
    X: np.ndarray,
    heatmaps: np.ndarray,
    targets: np.ndarray,
    *,
    n_steps: int | None,
    baseline: Any,
    blur_sigma: float,
    batch_size: int,
    step: int | None = None,
    protocol: str = "sklearn-caf",
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(deletion, insertion, x)``: the two curves of every image, (n, n_points), and their
    x-axis, (n_points,), over which the trapezoid rule gives the AUCs.

    ``X`` is in the model's layout, ``heatmaps`` (n, *spatial) at its resolution, ``targets``
    one class per image. ``n_steps`` or ``step`` sets the steps (:func:`pixel_counts`).
    ``x`` is the fraction of pixels moved, or for ``protocol="rise"`` RISE's ``k / n_steps``.
    Images are taken ``batch_size`` at a time; each one's perturbed copies are made on the
    device and run ``batch_size`` at a time.
    """
    n = X.shape[0]
    channel = bound.input_channel_axis % X.ndim
    spatial = spatial_axes(X.ndim, channel)
    spatial_shape = tuple(X.shape[ax] for ax in spatial)
    if tuple(heatmaps.shape) != (n, *spatial_shape):
        raise ValueError(
            f"the explainer's heatmaps have shape {tuple(heatmaps.shape)}; expected one map "
            f"per image at the input's resolution, {(n, *spatial_shape)}."
        )
    n_pixels = int(np.prod(spatial_shape))
    if n_pixels > _MAX_PIXELS:
        raise ValueError(f"images of more than {_MAX_PIXELS} pixels are not supported.")
    if n_steps is not None and n_steps > n_pixels:
        raise ValueError(
            f"n_steps={n_steps} is more than the {n_pixels} pixels of an image; each step must "
            "move at least one pixel."
        )
    rise = protocol == "rise"
    base = _check_baseline(baseline, X.shape[1:])
    counts = pixel_counts(n_pixels, n_steps, step)
    n_points = len(counts)
    if rise:  # RISE's auc(): the trapezoid rule with the steps evenly spaced on [0, 1]
        fractions = np.arange(n_points) / (n_points - 1)
    else:
        fractions = counts / n_pixels
    counts = counts.astype(np.float32)
    order = rise_ranks if rise else saliency_ranks
    ranks = np.expand_dims(order(heatmaps), channel).astype(np.float32)
    blur = rise_blur_images if rise else blur_images
    deletion = np.empty((n, n_points))
    insertion = np.empty((n, n_points))
    with bound:
        for start in range(0, n, batch_size):
            stop = min(start + batch_size, n)
            m = stop - start
            x = X[start:stop]
            # Every perturbed image is first * (1 - mask) + last * mask (exact for a 0/1 mask),
            # first and last being rows of one stacked tensor: the images, their blurred
            # copies and the baseline.
            sources = bound.asarray(np.concatenate([x, blur(x, blur_sigma, channel), base[None]]))
            rank_t = bound.asarray(ranks[start:stop])
            image = np.repeat(np.arange(m), 2 * n_points)
            step = np.tile(np.arange(n_points), 2 * m)
            is_deletion = np.tile(np.repeat([True, False], n_points), m)
            # Deletion goes from the image to the baseline, insertion from the blur to the image.
            first = np.where(is_deletion, image, m + image)
            last = np.where(is_deletion, 2 * m, image)
            scores = np.empty(len(image))
            for lo in range(0, len(image), batch_size):
                rows = slice(lo, lo + batch_size)
                r = bound.take(rank_t, image[rows])
                shape = (-1,) + (1,) * (X.ndim - 1)
                t = bound.asarray(counts[step[rows]].reshape(shape))
                # 1 where rank < count, else 0, from the protocol's relu alone: ranks and
                # counts are integers (exact in float32), so t - r >= 1 or t - r <= 0.
                mask = bound.relu(t - r) - bound.relu(t - r - 1.0)
                batch = (
                    bound.take(sources, first[rows]) * (1.0 - mask)
                    + bound.take(sources, last[rows]) * mask
                )
                a, context = bound.trunk(batch)
                logits = bound.to_numpy(bound.head(a, context))
                scores[rows] = _softmax_at(logits, targets[start + image[rows]])
            scores = scores.reshape(m, 2, n_points)
            deletion[start:stop] = scores[:, 0]
            insertion[start:stop] = scores[:, 1]
    return deletion, insertion, fractions


def _bound_model(explainer: Any) -> Any:
    """The explainer's bound model, or the whole of its ``model`` bound at the input."""
    bound = getattr(explainer, "bound_", None)
    if bound is not None:
        return bound
    model = getattr(explainer, "model", None)
    if model is None:
        raise TypeError(
            f"explainer must have a model (the network it explains); {type(explainer).__name__} "
            "has no attribute model or it is None."
        )
    backend = get_backend(model, getattr(explainer, "backend", None))
    return backend.bind(
        model,
        layer=None,
        output=getattr(explainer, "output", None),
        device=getattr(explainer, "device", "auto"),
    )


def _fitted(explainer: Any, X: np.ndarray) -> Any:
    """``explainer`` if fitted, else a fitted clone (the object passed is never changed)."""
    from sklearn.base import clone
    from sklearn.exceptions import NotFittedError
    from sklearn.utils.validation import check_is_fitted

    if isinstance(explainer, ModelEstimator):
        if hasattr(explainer, "bound_"):
            return explainer
    else:
        try:
            check_is_fitted(explainer)
            return explainer
        except NotFittedError:
            pass
        except TypeError:  # not an estimator: used as is
            return explainer
    if not hasattr(explainer, "fit"):
        return explainer
    return clone(explainer).fit(X)


def _n_outputs(explainer: Any, bound: Any, X: np.ndarray) -> int:
    n_outputs = getattr(explainer, "n_outputs_", None)
    if n_outputs is None:
        with bound:
            a, context = bound.trunk(bound.asarray(X[:1]))
            n_outputs = int(bound.head(a, context).shape[1])
    return int(n_outputs)


def _heatmaps(explainer: Any, X: np.ndarray, targets: np.ndarray) -> np.ndarray:
    if isinstance(explainer, BaseExplainer):
        per_class = explainer.explains_classes
        return explainer.explain(X, targets=targets if per_class else None).heatmaps[:, 0]
    if not hasattr(explainer, "transform"):
        raise TypeError(
            f"explainer must have transform(X) giving heatmaps (or be an explainer of "
            f"sklearn_caf); {type(explainer).__name__} has none."
        )
    maps = np.asarray(explainer.transform(X))
    if not np.issubdtype(maps.dtype, np.floating):  # float maps keep their dtype: RISE's
        maps = maps.astype(np.float64)  # order sorts the map as it is given
    if maps.ndim == X.ndim and maps.shape[1] == 1:  # (n, 1, *spatial): one map per image
        maps = maps[:, 0]
    if not np.isfinite(maps).all():
        raise ValueError("the explainer's heatmaps contain NaN or infinite values.")
    return maps


def deletion_insertion(
    explainer: Any,
    X: Any,
    targets: Any = None,
    *,
    n_steps: int | None = None,
    step: int | None = None,
    protocol: str = "sklearn-caf",
    baseline: Any = 0.0,
    blur_sigma: float = DEFAULT_BLUR_SIGMA,
    batch_size: int | None = None,
) -> pd.DataFrame:
    """Deletion and insertion curves and their AUCs (Petsiuk et al., RISE, BMVC 2018).

    For each image, the pixels are ordered by the explainer's heatmap, most salient first.
    *Deletion* replaces them by ``baseline`` in steps of equal size and records the
    softmax probability of the explained class at each point, from the untouched image to
    the all-baseline image. *Insertion* starts from a blur of the image and puts the
    original pixels back in the same order, ending at the original. The AUC of each curve
    is the trapezoid rule over the curve's x-axis, in [0, 1]. A faithful map makes the
    probability fall fast under deletion (low ``deletion_auc``) and rise fast under
    insertion (high ``insertion_auc``). ``protocol="rise"`` gives the numbers of RISE's own
    code. See :doc:`/faithfulness`.

    Parameters
    ----------
    explainer : explainer
        An explainer of this library (:class:`~sklearn_caf.L2CAFExplainer`,
        :class:`~sklearn_caf.GradCAMExplainer`), or any estimator with a ``model``
        parameter and ``transform(X)`` returning one map per image at the input's resolution
        (n, H, W). Fitted or not: an unfitted one is cloned and fitted on ``X`` (the object
        passed is not changed). The model is run through the explainer's bound model
        (its backend, ``device`` and ``output=`` selection); for other estimators the
        ``model`` is bound at its input with their ``backend``, ``device`` and ``output``
        attributes where they have them.
    X : array-like of shape (n_images, ...)
        Images in the model's layout (NCHW for PyTorch, NHWC for Keras).
    targets : array-like of int of shape (n_images,), default=None
        The class of each image whose probability is followed (and, for class explainers,
        whose map orders the pixels). ``None`` takes the model's top-1 predicted class.
        Maps of the whole output (class-oblivious L2-CAF, Grad-CAM of an embedding, or any
        other estimator's maps) do not depend on the class: ``targets`` then only picks the
        probability followed. The outputs are read as logits; for a retrieval network
        (an embedding) a softmax is meaningless and so is this metric.
    n_steps : int, default=None
        Steps of each curve: each step moves ``ceil(P / n_steps)`` of the ``P`` pixels (the
        last one what is left), so the curves have ``n_steps + 1`` points (fewer only when
        ``(n_steps - 1) * ceil(P / n_steps) >= P``, which needs ``n_steps ** 2 > P``).
        ``None`` is 100 steps, unless ``step`` is given. RISE moves 224 pixels per step on
        224x224 images (224 steps); 100 steps costs less than half and resolves the curves
        to 1% of the pixels.
    step : int, default=None
        Pixels moved per step instead (RISE's ``step``): the curves have
        ``ceil(P / step) + 1`` points, the last step moving what is left. Give ``n_steps``
        or ``step``, not both.
    protocol : {"sklearn-caf", "rise"}, default="sklearn-caf"
        ``"sklearn-caf"``: insertion starts from a true Gaussian blur of standard deviation
        ``blur_sigma`` with nearest-edge padding, tied pixels move in row-major order, and
        the AUC is over the fraction of pixels moved. ``"rise"`` reproduces RISE's
        ``CausalMetric`` (eclique/RISE): insertion starts from each channel convolved with
        RISE's 11 x 11 kernel (``gaussian_filter`` of a unit impulse with sigma
        ``blur_sigma``; its effective standard deviation is about 3.1 px for sigma 5),
        zero padded; pixels are taken in the reverse of ``np.argsort``'s order of the flat
        map (ties in the reverse of NumPy's default, unstable sort, as RISE has them);
        the AUC is RISE's ``auc``, the trapezoid rule with the points evenly spaced on
        [0, 1], and ``fraction`` holds that x-axis, ``k / n_steps``. Both use
        ``baseline`` for deletion and the softmax of the outputs. To reproduce RISE's
        published setting on 224x224 images pass ``step=224`` (its notebook's).
    baseline : float or array-like, default=0.0
        What deleted pixels become (RISE: 0, the dataset mean after the usual
        normalization): a number, or an array that broadcasts to one image in the model's
        layout (one value per channel: shape (C, 1, 1) for NCHW, (C,) for NHWC).
    blur_sigma : float, default=5.0
        Standard deviation in pixels of the Gaussian blur that insertion starts from, over
        the spatial axes of each channel (RISE: 5). Edges are extended by their nearest
        pixel. 0 starts from the image itself (a flat curve).
    batch_size : int, default=None
        Images handled at once, and perturbed images per forward pass. ``None`` takes the
        explainer's ``batch_size`` (32 when it has none). Memory holds three copies of
        ``batch_size`` images plus one batch of perturbed images, never the ``n_steps``
        copies of every image.

    Returns
    -------
    table : pandas.DataFrame
        One row per image: ``image`` (position in ``X``), ``target`` (the class followed),
        ``deletion_auc``, ``insertion_auc``, then the curves for plotting:
        ``deletion_curve`` and ``insertion_curve`` (arrays of the probabilities at each
        point, ``n_steps + 1`` of them) and ``fraction`` (the curves' x-axis: the fraction of
        pixels moved at each point, or RISE's ``k / n_steps`` for ``protocol="rise"``).
        :func:`~sklearn_caf.plotting.plot_deletion_insertion` draws them.

    Notes
    -----
    With the default protocol, pixels of equal saliency are moved in row-major order over
    the spatial axes (the first one first), so the curves are deterministic; a constant map
    moves pixels in raster order. A pixel is moved in all its channels at once. The
    perturbed images are made on the model's device from the image, its blur and the rank
    of each pixel: only one batch of them exists at a time.

    Examples
    --------
    >>> import torch
    >>> from sklearn_caf import GradCAMExplainer
    >>> from sklearn_caf.evaluation import deletion_insertion
    >>> torch.manual_seed(0)  # doctest: +ELLIPSIS
    <torch._C.Generator object at ...>
    >>> net = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3, padding=1), torch.nn.ReLU(),
    ...                           torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten(),
    ...                           torch.nn.Linear(4, 3)).eval()
    >>> X = torch.rand(2, 3, 16, 16).numpy()
    >>> table = deletion_insertion(GradCAMExplainer(model=net, layer="1"), X, n_steps=8)
    >>> list(table.columns[:4])
    ['image', 'target', 'deletion_auc', 'insertion_auc']
    >>> table["deletion_curve"][0].shape
    (9,)
    >>> rise = deletion_insertion(GradCAMExplainer(model=net, layer="1"), X, step=32,
    ...                           protocol="rise")
    >>> rise["fraction"][0].tolist()
    [0.0, 0.125, 0.25, 0.375, 0.5, 0.625, 0.75, 0.875, 1.0]
    """
    pd = import_optional("pandas", needed_by="deletion_insertion's table")
    n_steps, step, protocol = check_protocol_options(n_steps, step, protocol)
    n_steps, baseline, blur_sigma, batch_size = check_faithfulness_options(
        n_steps, baseline, blur_sigma, batch_size
    )
    bound_for_check = getattr(explainer, "bound_", None)
    X = check_images(X, bound_for_check)
    explainer = _fitted(explainer, X)
    if hasattr(explainer, "_check_fitted_images"):  # the layout and channels seen in fit
        X = explainer._check_fitted_images(X)
    bound = _bound_model(explainer)
    if batch_size is None:
        batch_size = int(getattr(explainer, "batch_size", None) or 32)

    if targets is not None:
        targets = check_targets(targets, len(X), _n_outputs(explainer, bound, X))
        if targets.shape[1] != 1:
            raise ValueError(
                f"targets must hold one class per image, shape ({len(X)},); got shape "
                f"{np.shape(targets)}."
            )
        targets = targets[:, 0]
    if isinstance(explainer, BaseExplainer) and (
        targets is not None or not explainer.explains_classes or explainer.top_k == 1
    ):
        # One pass gives the maps and the logits: explain's first map is the top-1 class's.
        explanation = explainer.explain(X, targets=targets if explainer.explains_classes else None)
        heatmaps, outputs = explanation.heatmaps[:, 0], explanation.outputs
        if targets is None:
            targets = np.argmax(outputs, axis=1)
    else:  # top-1 first, then only its map (not top_k of them)
        outputs = model_outputs(bound, X, batch_size)
        if targets is None:
            targets = np.argmax(outputs, axis=1)
        heatmaps = _heatmaps(explainer, X, targets)
    _warn_if_probabilities(outputs)
    deletion, insertion, fractions = faithfulness_curves(
        bound,
        X,
        heatmaps,
        targets,
        n_steps=n_steps,
        baseline=baseline,
        blur_sigma=blur_sigma,
        batch_size=batch_size,
        step=step,
        protocol=protocol,
    )
    return pd.DataFrame(
        {
            "image": np.arange(len(X), dtype=np.int64),
            "target": targets.astype(np.int64),
            "deletion_auc": _trapezoid(deletion, fractions),
            "insertion_auc": _trapezoid(insertion, fractions),
            "deletion_curve": list(deletion),
            "insertion_curve": list(insertion),
            "fraction": [fractions] * len(X),
        }
    )
