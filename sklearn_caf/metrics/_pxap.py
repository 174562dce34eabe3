"""PxAP (Choe et al., CVPR 2020): the pixel precision-recall curve of heatmaps against masks."""

import numpy as np

from .._utils import validate_params
from ._max_box_acc import DEFAULT_THRESHOLDS, _check_map_batch, _minmax

# --------------------------------------------------------------------------------------------
# PxAP as wsolevaluation's ``MaskEvaluator`` computes it (OpenImages30k):
#
# - a pixel is kept at threshold ``t`` when its normalized score is ``>= t`` (the reference's
#   histogram bins ``[t_k, t_k+1)``, compared in float64);
# - the ground truth is 1 (foreground), 0 (background) or ignored; a pixel in the ignore
#   region that is also foreground counts as foreground; ignored pixels count nowhere;
# - TP and FP are summed over every pixel of every image (one curve for the whole set), and
#   pixels scored below the first threshold are counted nowhere;
# - the curve runs over the thresholds in decreasing order, starting at ``>= 1``, and
#   AP = sum_i precision_i * (recall_i - recall_{i-1}) over the points where some pixel is kept
#   (recall 0 before the first point).


def _check_threshold_grid(thresholds):
    if thresholds is None:
        return np.array(DEFAULT_THRESHOLDS, dtype=np.float64)
    values = np.asarray(thresholds)
    if values.dtype.kind not in "biuf":
        raise ValueError(
            f"thresholds must hold real numbers; got an array of dtype {values.dtype}."
        )
    values = np.atleast_1d(values).astype(np.float64)
    if values.ndim != 1 or len(values) == 0:
        raise ValueError(f"thresholds must be a non-empty 1-D array; got shape {values.shape}.")
    if not np.isfinite(values).all() or (values < 0).any() or (values >= 1).any():
        raise ValueError(f"thresholds must hold values in [0, 1); got {values}.")
    if (np.diff(values) <= 0).any():
        raise ValueError(
            "thresholds must be strictly increasing (the reference's histogram bins); got "
            f"{values}."
        )
    return values


def _check_binary(values, shape, *, name):
    try:
        arr = np.asarray(values)
    except ValueError as exc:
        raise ValueError(f"{name} must be a regular (non-ragged) array of masks; {exc}") from None
    if arr.shape != shape:
        raise ValueError(
            f"{name} must have the shape of heatmaps, {shape}; got shape {arr.shape}."
        )
    if arr.dtype == bool:
        return arr
    if arr.dtype.kind not in "biuf" or not np.isin(arr, (0, 1)).all():
        raise ValueError(f"{name} must be boolean (or hold only 0 and 1).")
    return arr.astype(bool)


def _histograms(heatmaps, masks, ignore, thresholds, normalize):
    """Per image, the counted foreground and background pixels in each bin, (n, T + 1) each.

    Bin ``k`` holds the scores in ``[t_k, t_(k+1))``, the last one ``[1, 2)``; the scores
    below ``t_0`` are in no bin.
    """
    maps = _check_map_batch(heatmaps)
    fg = _check_binary(masks, maps.shape, name="masks")
    if ignore is None:
        counted = np.ones(maps.shape, dtype=bool)
    else:
        counted = ~_check_binary(ignore, maps.shape, name="ignore") | fg
    if normalize:
        maps = _minmax(maps)
    elif (maps < 0).any() or (maps > 1).any():
        raise ValueError(
            "heatmaps must hold values in [0, 1] with normalize=False; got values in "
            f"[{maps.min()}, {maps.max()}]."
        )
    edges = np.concatenate([thresholds, [1.0, 2.0]])
    n_bins = len(thresholds) + 1
    # Bin k holds the scores in [edges[k], edges[k + 1]); -1 the scores below thresholds[0].
    bins = np.searchsorted(edges, maps, side="right") - 1
    bins = np.where(counted & (bins >= 0), bins, n_bins)  # n_bins: counted nowhere
    bins += (np.arange(len(maps)) * (n_bins + 1))[:, None, None]
    size = len(maps) * (n_bins + 1)
    true_hist = np.bincount(bins[fg], minlength=size).reshape(len(maps), -1)[:, :n_bins]
    false_hist = np.bincount(bins[~fg], minlength=size).reshape(len(maps), -1)[:, :n_bins]
    return true_hist, false_hist


def _pixel_counts(heatmaps, masks, ignore, thresholds, normalize):
    """True and false positives per bin edge, in the reference's decreasing order."""
    true_hist, false_hist = _histograms(heatmaps, masks, ignore, thresholds, normalize)
    return _accumulate(true_hist.sum(axis=0), false_hist.sum(axis=0))


def _accumulate(true_hist, false_hist):
    """``tp, fp, n_true`` from set-wide histograms: ``tp[i]``/``fp[i]`` count the
    foreground/background pixels scored ``>= edge_i`` for the edges
    ``[2, 1, t_(n-1), ..., t_0]`` (the ``>= 2`` point is empty)."""
    true_hist = np.append(true_hist, 0)  # the reference's [2, 3] bin
    false_hist = np.append(false_hist, 0)
    tp = true_hist[::-1].cumsum().astype(np.float64)
    fp = false_hist[::-1].cumsum().astype(np.float64)
    n_true = float(true_hist.sum())
    if n_true <= 0:
        raise ValueError(
            "masks has no foreground pixel outside the ignore regions (scored at or above "
            "the first threshold): precision and recall are undefined."
        )
    if (tp + fp <= 0).all():
        raise ValueError(
            "No pixel is counted: every pixel lies in the ignore regions or below the first "
            "threshold."
        )
    return tp, fp, n_true


def _curve_and_ap(tp, fp, n_true):
    kept = (tp + fp) != 0
    with np.errstate(invalid="ignore", divide="ignore"):
        precision = tp / (tp + fp)
    recall = tp / n_true
    ap = float((precision[1:] * np.diff(recall))[kept[1:]].sum())
    return precision, recall, ap


_PARAMS = {
    "heatmaps": ["array-like"],
    "masks": ["array-like"],
    "ignore": ["array-like", None],
    "thresholds": ["array-like", None],
    "normalize": ["boolean"],
}


@validate_params(_PARAMS, prefer_skip_nested_validation=True)
def pixel_precision_recall_curve(
    heatmaps, masks, *, ignore=None, thresholds=None, normalize: bool = True
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Pixel precision and recall of heatmaps against masks, per threshold (PxAP's curve).

    The curve of wsolevaluation's ``MaskEvaluator`` (Choe et al., CVPR 2020): at a threshold
    ``t`` the pixels whose (normalized) score is ``>= t`` are predicted foreground; true and
    false positives are summed over **all pixels of all images** (one curve for the set, not
    one per image). Pixels of the `ignore` regions that are not foreground count nowhere
    (the reference's ignore mask is the ignore region minus the foreground). As in the
    reference, pixels scored below ``thresholds[0]`` count nowhere either (start the grid at
    0 to count every pixel). See :ref:`protocols`.

    Parameters
    ----------
    heatmaps : array-like of shape (n_images, height, width)
        Heatmaps with finite real values.
    masks : array-like of shape (n_images, height, width)
        Ground-truth foreground, boolean (or 0/1). An image may have no foreground.
    ignore : array-like of shape (n_images, height, width), default=None
        Regions left out of the counts (OpenImages30k's ignore boxes), boolean (or 0/1).
    thresholds : array-like of shape (n_thresholds,), default=None
        Strictly increasing thresholds in [0, 1); ``None`` is :data:`DEFAULT_THRESHOLDS`
        (``np.arange(0, 1, 0.01)``, the reference's default ``cam_curve_interval``).
    normalize : bool, default=True
        Min-max normalize each map first (a constant map becomes 0 everywhere), as
        wsolevaluation's ``normalize_scoremap``. With False the maps must lie in [0, 1].

    Returns
    -------
    precision : ndarray of shape (n_thresholds + 1,)
        Pixel precision at each of ``thresholds`` and at 1.0 (pixels scored exactly 1); NaN
        where no pixel is kept.
    recall : ndarray of shape (n_thresholds + 1,)
        Pixel recall at the same points.
    thresholds : ndarray of shape (n_thresholds + 1,)
        ``thresholds`` followed by 1.0, increasing.

    See Also
    --------
    pixel_average_precision : The area under this curve (PxAP).

    Examples
    --------
    >>> import numpy as np
    >>> from sklearn_caf.metrics import pixel_precision_recall_curve
    >>> heatmap = np.array([[[0.0, 0.5, 1.0]]])
    >>> mask = np.array([[[False, True, True]]])
    >>> precision, recall, thresholds = pixel_precision_recall_curve(
    ...     heatmap, mask, thresholds=[0.0, 0.5])
    >>> precision, recall, thresholds
    (array([0.66666667, 1.        , 1.        ]), array([1. , 1. , 0.5]), array([0. , 0.5, 1. ]))
    """
    grid = _check_threshold_grid(thresholds)
    tp, fp, n_true = _pixel_counts(heatmaps, masks, ignore, grid, normalize)
    precision, recall, _ = _curve_and_ap(tp, fp, n_true)
    # Drop the ">= 2" point (never reached by maps in [0, 1]) and return increasing thresholds.
    return precision[1:][::-1].copy(), recall[1:][::-1].copy(), np.append(grid, 1.0)


@validate_params(_PARAMS, prefer_skip_nested_validation=True)
def pixel_average_precision(
    heatmaps, masks, *, ignore=None, thresholds=None, normalize: bool = True
) -> float:
    """PxAP: the area under the pixel precision-recall curve (Choe et al., CVPR 2020).

    Reproduces wsolevaluation's ``MaskEvaluator`` (the OpenImages30k metric): the curve of
    :func:`pixel_precision_recall_curve`, taken from the highest threshold (1.0) down, and
    ``AP = sum_i precision_i * (recall_i - recall_(i-1))`` over the points where some pixel is
    kept (recall 0 before the first point), a right Riemann sum without interpolation. The
    reference reports it in percent; this returns a fraction in [0, 1].

    Parameters
    ----------
    heatmaps : array-like of shape (n_images, height, width)
        Heatmaps with finite real values.
    masks : array-like of shape (n_images, height, width)
        Ground-truth foreground, boolean (or 0/1). An image may have no foreground, but the
        set must have some outside the ignore regions.
    ignore : array-like of shape (n_images, height, width), default=None
        Regions left out of the counts (OpenImages30k's ignore boxes); foreground pixels in
        them still count.
    thresholds : array-like of shape (n_thresholds,), default=None
        Strictly increasing thresholds in [0, 1); ``None`` is :data:`DEFAULT_THRESHOLDS`.
    normalize : bool, default=True
        Min-max normalize each map first, as wsolevaluation's ``normalize_scoremap``. With
        False the maps must lie in [0, 1] (pass the maps the reference would read to get its
        number to the last bit: it normalizes in the maps' own dtype).

    Returns
    -------
    pxap : float
        The pixel average precision, in [0, 1] (the reference's number divided by 100).

    See Also
    --------
    pixel_precision_recall_curve : The curve itself.
    max_box_accuracy : The box metric of the same paper.

    Examples
    --------
    >>> import numpy as np
    >>> from sklearn_caf.metrics import pixel_average_precision
    >>> heatmap = np.array([[[0.0, 0.5, 1.0]]])
    >>> mask = np.array([[[False, True, True]]])
    >>> pixel_average_precision(heatmap, mask, thresholds=[0.0, 0.5])
    1.0
    >>> pixel_average_precision(heatmap, mask, ignore=[[[True, False, False]]],
    ...                         thresholds=[0.0, 0.5])
    1.0
    >>> pixel_average_precision(1 - heatmap, mask, thresholds=[0.0, 0.5])
    0.5833333333333333
    """
    grid = _check_threshold_grid(thresholds)
    tp, fp, n_true = _pixel_counts(heatmaps, masks, ignore, grid, normalize)
    return _curve_and_ap(tp, fp, n_true)[2]


@validate_params(
    {
        "heatmaps": ["array-like"],
        "masks": ["array-like"],
        "ignore": ["array-like", None],
        "thresholds": ["array-like", None],
        "normalize": ["boolean"],
    },
    prefer_skip_nested_validation=True,
)
def pixel_score_histograms(
    heatmaps, masks, *, ignore=None, thresholds=None, normalize: bool = True
) -> tuple[np.ndarray, np.ndarray]:
    """Per image, how many foreground and background pixels score in each threshold bin.

    What ``MaskEvaluator.accumulate`` adds up, image by image: PxAP needs only these counts
    summed over the set (:func:`pixel_average_precision_from_histograms`), so a set can be
    scored in chunks. Bin ``k`` holds the scores in ``[thresholds[k], thresholds[k + 1])``,
    the last bin ``[1, 2)`` (the scores equal to 1); ignored background pixels and pixels
    scored below ``thresholds[0]`` are in no bin.

    Parameters
    ----------
    heatmaps : array-like of shape (n_images, height, width)
        Heatmaps with finite real values.
    masks : array-like of shape (n_images, height, width)
        Ground-truth foreground, boolean (or 0/1).
    ignore : array-like of shape (n_images, height, width), default=None
        Regions left out of the counts; foreground pixels in them still count.
    thresholds : array-like of shape (n_thresholds,), default=None
        Strictly increasing thresholds in [0, 1); ``None`` is :data:`DEFAULT_THRESHOLDS`.
    normalize : bool, default=True
        Min-max normalize each map first; with False the maps must lie in [0, 1].

    Returns
    -------
    true_hist : ndarray of shape (n_images, n_thresholds + 1), int64
        Foreground pixels per bin.
    false_hist : ndarray of shape (n_images, n_thresholds + 1), int64
        Counted background pixels per bin.

    See Also
    --------
    pixel_average_precision_from_histograms : PxAP from these counts.

    Examples
    --------
    >>> import numpy as np
    >>> from sklearn_caf.metrics import pixel_score_histograms
    >>> heatmap = np.array([[[0.0, 0.5, 1.0]]])
    >>> mask = np.array([[[False, True, True]]])
    >>> pixel_score_histograms(heatmap, mask, thresholds=[0.0, 0.5])
    (array([[0, 1, 1]]), array([[1, 0, 0]]))
    """
    grid = _check_threshold_grid(thresholds)
    true_hist, false_hist = _histograms(heatmaps, masks, ignore, grid, normalize)
    return true_hist.astype(np.int64), false_hist.astype(np.int64)


@validate_params(
    {"true_hist": ["array-like"], "false_hist": ["array-like"]},
    prefer_skip_nested_validation=True,
)
def pixel_average_precision_from_histograms(true_hist, false_hist) -> float:
    """PxAP from the per-image counts of :func:`pixel_score_histograms`, summed over images.

    Equal to :func:`pixel_average_precision` on the same maps, masks and thresholds.

    Parameters
    ----------
    true_hist : array-like of shape (n_images, n_bins) or (n_bins,)
        Foreground pixels per bin (bins in increasing threshold order, the last ``[1, 2)``).
    false_hist : array-like of the same shape
        Counted background pixels per bin.

    Returns
    -------
    pxap : float
        The pixel average precision, in [0, 1].

    Examples
    --------
    >>> import numpy as np
    >>> from sklearn_caf.metrics import (pixel_average_precision_from_histograms,
    ...                                  pixel_score_histograms)
    >>> heatmaps = np.array([[[0.0, 0.5, 1.0]], [[1.0, 0.0, 0.2]]])
    >>> masks = np.array([[[False, True, True]], [[False, False, True]]])
    >>> t, f = pixel_score_histograms(heatmaps, masks, thresholds=[0.0, 0.5])
    >>> pixel_average_precision_from_histograms(t, f)
    0.5555555555555556
    """
    true_hist = np.asarray(true_hist)
    false_hist = np.asarray(false_hist)
    for name, hist in (("true_hist", true_hist), ("false_hist", false_hist)):
        if hist.dtype.kind not in "biuf" or hist.ndim not in (1, 2) or hist.shape[-1] < 2:
            raise ValueError(
                f"{name} must be a 1-D or 2-D array of counts with at least 2 bins; got "
                f"shape {hist.shape} and dtype {hist.dtype}."
            )
        if not np.isfinite(hist).all() or (hist < 0).any():
            raise ValueError(f"{name} must hold non-negative counts.")
    if true_hist.shape != false_hist.shape:
        raise ValueError(
            f"true_hist and false_hist must have one shape; got {true_hist.shape} and "
            f"{false_hist.shape}."
        )
    if true_hist.ndim == 2:
        true_hist, false_hist = true_hist.sum(axis=0), false_hist.sum(axis=0)
    tp, fp, n_true = _accumulate(true_hist.astype(np.float64), false_hist.astype(np.float64))
    return _curve_and_ap(tp, fp, n_true)[2]
