"""Box overlap and localization accuracy.

Boxes are ``[x0, y0, x1, y1]`` in pixel-edge coordinates, as returned by
:mod:`sklearn_caf.boxes`: ``x1 - x0`` is the width and ``y1 - y0`` the height.

A localization is correct when the intersection over union (IoU) of the predicted box with a
ground-truth box reaches ``iou_threshold`` (0.5 in CAM, Grad-CAM and L2-CAF). Three protocols
are covered by :func:`localization_correct` and :func:`localization_accuracy`:

- *GT-known*: no labels; the box must come from the true class's heatmap.
- *Top-1*: the predicted class must also be the true class.
- *Top-k* (the ILSVRC rule): correct when one of the ``k`` guesses names the true class and the
  box of that guess reaches the IoU threshold.

:func:`attention_sparsity` scores how focused attention maps are (BR-NPA's sparsity).
"""

from dataclasses import dataclass
from numbers import Integral, Real

import numpy as np
from sklearn.utils._param_validation import Interval, StrOptions, validate_params
from sklearn.utils.validation import check_consistent_length

__all__ = [
    "DEFAULT_THRESHOLDS",
    "MaxBoxAccuracy",
    "attention_sparsity",
    "best_iou",
    "box_iou",
    "box_iou_curves",
    "box_iou_matrix",
    "clustering_nmi",
    "localization_accuracy",
    "localization_correct",
    "max_box_accuracy",
    "max_box_accuracy_from_curves",
    "recall_at_k",
]


def _check_boxes(boxes, *, name, ndim=None):
    try:
        boxes = np.asarray(boxes)
    except ValueError as exc:  # ragged nested lists
        raise ValueError(f"{name} must be an array of boxes [x0, y0, x1, y1]; {exc}") from None
    if boxes.dtype.kind not in "biuf":
        raise ValueError(f"{name} must hold real numbers; got an array of dtype {boxes.dtype}.")
    boxes = boxes.astype(np.float64, copy=False)
    if boxes.ndim == 0 or boxes.shape[-1] != 4:
        raise ValueError(
            f"{name} must have boxes [x0, y0, x1, y1] along its last axis (length 4); "
            f"got shape {boxes.shape}."
        )
    if ndim is not None and boxes.ndim not in ndim:
        expected = " or ".join(f"{d}-D" for d in ndim)
        raise ValueError(f"{name} must be a {expected} array of boxes; got shape {boxes.shape}.")
    if not np.isfinite(boxes).all():
        raise ValueError(f"{name} contains NaN or infinite values.")
    if (boxes[..., 2] < boxes[..., 0]).any() or (boxes[..., 3] < boxes[..., 1]).any():
        raise ValueError(f"{name} has boxes with x1 < x0 or y1 < y0; expected [x0, y0, x1, y1].")
    return boxes


def _iou(a, b):
    """IoU of validated boxes, broadcast over the leading axes."""
    width = np.minimum(a[..., 2], b[..., 2]) - np.maximum(a[..., 0], b[..., 0])
    height = np.minimum(a[..., 3], b[..., 3]) - np.maximum(a[..., 1], b[..., 1])
    inter = np.clip(width, 0, None) * np.clip(height, 0, None)
    area_a = (a[..., 2] - a[..., 0]) * (a[..., 3] - a[..., 1])
    area_b = (b[..., 2] - b[..., 0]) * (b[..., 3] - b[..., 1])
    union = area_a + area_b - inter
    # Two zero-area boxes have no overlap to speak of: IoU 0 rather than 0 / 0.
    return np.divide(inter, union, out=np.zeros_like(union), where=union > 0)


@validate_params(
    {"boxes_a": ["array-like"], "boxes_b": ["array-like"]}, prefer_skip_nested_validation=True
)
def box_iou(boxes_a, boxes_b) -> np.ndarray:
    """Intersection over union of boxes, pair by pair.

    Parameters
    ----------
    boxes_a : array-like of shape (..., 4)
        Boxes ``[x0, y0, x1, y1]`` with ``x1 >= x0`` and ``y1 >= y0``.
    boxes_b : array-like of shape (..., 4)
        Boxes in the same convention; their leading axes broadcast against those of
        `boxes_a`, so one box of shape (4,) is compared with every box of the other.

    Returns
    -------
    iou : ndarray
        IoU in [0, 1], of the broadcast shape of the leading axes (shape ``()`` for two
        single boxes). Where the union has zero area (two empty boxes) the IoU is 0.

    See Also
    --------
    box_iou_matrix : IoU of every box of one set with every box of another.

    Examples
    --------
    >>> from sklearn_caf.metrics import box_iou
    >>> float(box_iou([0, 0, 2, 2], [1, 1, 3, 3]))  # 1 / (4 + 4 - 1)
    0.14285714285714285
    >>> box_iou([[0, 0, 2, 2], [0, 0, 1, 1]], [0, 0, 2, 2])
    array([1.  , 0.25])
    """
    a = _check_boxes(boxes_a, name="boxes_a")
    b = _check_boxes(boxes_b, name="boxes_b")
    try:
        np.broadcast_shapes(a.shape, b.shape)
    except ValueError:
        raise ValueError(
            f"boxes_a and boxes_b must have broadcastable shapes; got {a.shape} and {b.shape}."
        ) from None
    return _iou(a, b)


@validate_params(
    {"boxes_a": ["array-like"], "boxes_b": ["array-like"]}, prefer_skip_nested_validation=True
)
def box_iou_matrix(boxes_a, boxes_b) -> np.ndarray:
    """Intersection over union of every pair of boxes from two sets.

    Parameters
    ----------
    boxes_a : array-like of shape (n, 4) or (4,)
        Boxes ``[x0, y0, x1, y1]``; a single box counts as a set of one.
    boxes_b : array-like of shape (m, 4) or (4,)
        Boxes in the same convention.

    Returns
    -------
    iou : ndarray of shape (n, m)
        ``iou[i, j]`` is the IoU of ``boxes_a[i]`` and ``boxes_b[j]`` (0 where the union has
        zero area).

    Examples
    --------
    >>> from sklearn_caf.metrics import box_iou_matrix
    >>> box_iou_matrix([[0, 0, 2, 2], [4, 4, 5, 5]], [[0, 0, 2, 2], [0, 0, 1, 1]])
    array([[1.  , 0.25],
           [0.  , 0.  ]])
    """
    a = np.atleast_2d(_check_boxes(boxes_a, name="boxes_a", ndim=(1, 2)))
    b = np.atleast_2d(_check_boxes(boxes_b, name="boxes_b", ndim=(1, 2)))
    return _iou(a[:, np.newaxis], b[np.newaxis])


def _check_true_boxes(true_boxes, n_images, *, other="pred_boxes"):
    """Ground truth as a padded (n, m, 4) array; padding is zero-area boxes (IoU 0)."""
    if isinstance(true_boxes, np.ndarray) and true_boxes.dtype.kind in "biuf":
        boxes = _check_boxes(true_boxes, name="true_boxes", ndim=(2, 3))
        boxes = boxes[:, np.newaxis] if boxes.ndim == 2 else boxes
    else:
        per_image = [
            np.atleast_2d(_check_boxes(b, name=f"true_boxes[{i}]", ndim=(1, 2)))
            for i, b in enumerate(true_boxes)
        ]
        empty = [i for i, b in enumerate(per_image) if len(b) == 0]
        if empty:
            raise ValueError(f"true_boxes[{empty[0]}] is empty; each image needs a box.")
        boxes = np.zeros((len(per_image), max((len(b) for b in per_image), default=0), 4))
        for i, b in enumerate(per_image):
            boxes[i, : len(b)] = b
    if len(boxes) != n_images:
        raise ValueError(
            f"true_boxes has {len(boxes)} images but {other} has {n_images}; "
            "expected one entry per image."
        )
    if boxes.shape[1] == 0:
        raise ValueError("true_boxes has no boxes; each image needs at least one.")
    return boxes


@validate_params(
    {"pred_boxes": ["array-like"], "true_boxes": ["array-like"]},
    prefer_skip_nested_validation=True,
)
def best_iou(pred_boxes, true_boxes) -> np.ndarray:
    """IoU of each predicted box with the best-matching ground-truth box of its image.

    Parameters
    ----------
    pred_boxes : array-like of shape (n_images, 4) or (n_images, k, 4)
        One box per image, or one per guess (e.g. per top-k class).
    true_boxes : array-like of shape (n_images, 4) or (n_images, m, 4), or sequence of n_images \
            array-likes of shape (m_i, 4)
        Ground-truth boxes; an image may have several (as in ImageNet), and its IoU is the
        largest over them.

    Returns
    -------
    iou : ndarray of shape (n_images,) or (n_images, k)
        Best IoU per predicted box.

    Examples
    --------
    >>> from sklearn_caf.metrics import best_iou
    >>> best_iou([[0, 0, 2, 2], [0, 0, 2, 2]], [[[4, 4, 5, 5], [0, 0, 2, 1]], [[1, 1, 3, 3]]])
    array([0.5       , 0.14285714])
    """
    pred = _check_boxes(pred_boxes, name="pred_boxes", ndim=(2, 3))
    if len(pred) == 0:
        raise ValueError("pred_boxes is empty; expected at least one image.")
    true = _check_true_boxes(true_boxes, len(pred))
    # (n, k, 1, 4) against (n, 1, m, 4), then the best ground-truth box per guess.
    pred_k = pred[:, np.newaxis] if pred.ndim == 2 else pred
    iou = _iou(pred_k[:, :, np.newaxis], true[:, np.newaxis]).max(axis=2)
    return iou[:, 0] if pred.ndim == 2 else iou


@validate_params(
    {
        "pred_boxes": ["array-like"],
        "true_boxes": ["array-like"],
        "y_true": ["array-like", None],
        "y_pred": ["array-like", None],
        "iou_threshold": [Interval(Real, 0, 1, closed="both")],
    },
    prefer_skip_nested_validation=True,
)
def localization_correct(
    pred_boxes, true_boxes, *, y_true=None, y_pred=None, iou_threshold: float = 0.5
) -> np.ndarray:
    """Whether each image is correctly localized.

    Without labels this is *GT-known* localization: ``pred_boxes`` must hold one box per image,
    taken from the true class's heatmap, and an image is correct when its IoU reaches
    `iou_threshold`. With labels, an image is correct when one of its guesses names the true
    class *and* that guess's box reaches `iou_threshold` (top-1 for one guess, the ILSVRC top-k
    rule for ``k`` guesses).

    Parameters
    ----------
    pred_boxes : array-like of shape (n_images, 4) or (n_images, k, 4)
        Predicted boxes; ``(n_images, k, 4)`` holds the box of each of the ``k`` guesses in
        `y_pred`. One box per image with ``k`` guesses uses that box for every guess (as for a
        class-agnostic heatmap).
    true_boxes : array-like of shape (n_images, 4) or (n_images, m, 4), or sequence of n_images \
            array-likes of shape (m_i, 4)
        Ground-truth boxes; with several per image, the best IoU counts.
    y_true : array-like of shape (n_images,), default=None
        True classes. Give it together with `y_pred`, or neither for GT-known localization.
    y_pred : array-like of shape (n_images,) or (n_images, k), default=None
        Predicted classes, best guess first for top-k.
    iou_threshold : float in [0, 1], default=0.5
        Smallest IoU that counts as a correct localization.

    Returns
    -------
    correct : ndarray of shape (n_images,), dtype=bool
        Per-image correctness.

    See Also
    --------
    localization_accuracy : The fraction of correct images.
    best_iou : The IoU values behind the decision.

    Examples
    --------
    >>> from sklearn_caf.metrics import localization_correct
    >>> pred = [[0, 0, 2, 2], [0, 0, 2, 2]]
    >>> true = [[0, 0, 2, 2], [1, 1, 3, 3]]
    >>> localization_correct(pred, true)
    array([ True, False])
    >>> localization_correct(pred, true, y_true=[1, 2], y_pred=[0, 2])
    array([False, False])
    """
    if (y_true is None) != (y_pred is None):
        raise ValueError(
            "y_true and y_pred must be given together (top-1 or top-k localization) or both "
            "left as None (GT-known localization)."
        )
    pred = _check_boxes(pred_boxes, name="pred_boxes", ndim=(2, 3))
    if y_true is None:
        if pred.ndim != 2:
            raise ValueError(
                "pred_boxes must have shape (n_images, 4) for GT-known localization (no y_true "
                f"and y_pred): one box, from the true class's heatmap, per image; got shape "
                f"{pred.shape}. Pass y_true and y_pred to score one box per guess."
            )
        return best_iou(pred, true_boxes) >= iou_threshold

    y_true, y_pred = np.asarray(y_true), np.asarray(y_pred)
    if y_true.ndim != 1:
        raise ValueError(f"y_true must be 1-D (one class per image); got shape {y_true.shape}.")
    if y_pred.ndim not in (1, 2):
        raise ValueError(
            f"y_pred must have shape (n_images,) or (n_images, k); got shape {y_pred.shape}."
        )
    check_consistent_length(pred, y_true, y_pred)
    y_pred = y_pred.reshape(len(y_pred), -1)
    iou = best_iou(pred, true_boxes)
    if iou.ndim == 1:
        iou = iou[:, np.newaxis]
    elif iou.shape[1] != y_pred.shape[1]:
        raise ValueError(
            f"pred_boxes has {iou.shape[1]} boxes per image but y_pred has {y_pred.shape[1]} "
            "guesses; expected one box per guess."
        )
    return ((y_pred == y_true[:, np.newaxis]) & (iou >= iou_threshold)).any(axis=1)


@validate_params(
    {
        "pred_boxes": ["array-like"],
        "true_boxes": ["array-like"],
        "y_true": ["array-like", None],
        "y_pred": ["array-like", None],
        "iou_threshold": [Interval(Real, 0, 1, closed="both")],
    },
    prefer_skip_nested_validation=True,
)
def localization_accuracy(
    pred_boxes, true_boxes, *, y_true=None, y_pred=None, iou_threshold: float = 0.5
) -> float:
    """Fraction of correctly localized images.

    GT-known accuracy without labels; top-1 accuracy with one guess per image; top-k accuracy
    (the ILSVRC rule used by CAM, Grad-CAM and L2-CAF) with ``k`` guesses. See
    :func:`localization_correct` for the rule and the accepted shapes.

    Parameters
    ----------
    pred_boxes : array-like of shape (n_images, 4) or (n_images, k, 4)
        Predicted boxes, one per image or one per guess.
    true_boxes : array-like of shape (n_images, 4) or (n_images, m, 4), or sequence of n_images \
            array-likes of shape (m_i, 4)
        Ground-truth boxes; with several per image, the best IoU counts.
    y_true : array-like of shape (n_images,), default=None
        True classes, given together with `y_pred`.
    y_pred : array-like of shape (n_images,) or (n_images, k), default=None
        Predicted classes, best guess first.
    iou_threshold : float in [0, 1], default=0.5
        Smallest IoU that counts as a correct localization.

    Returns
    -------
    accuracy : float
        Fraction of images counted as correct, in [0, 1].

    Examples
    --------
    >>> from sklearn_caf.metrics import localization_accuracy
    >>> pred = [[0, 0, 2, 2], [0, 0, 2, 2], [0, 0, 4, 4]]
    >>> true = [[0, 0, 2, 2], [0, 0, 2, 2], [0, 0, 1, 1]]
    >>> localization_accuracy(pred, true)
    0.6666666666666666
    >>> localization_accuracy(pred, true, y_true=[3, 5, 3], y_pred=[[3, 1], [1, 2], [3, 0]])
    0.3333333333333333
    """
    correct = localization_correct(
        pred_boxes, true_boxes, y_true=y_true, y_pred=y_pred, iou_threshold=iou_threshold
    )
    return float(correct.mean())


@validate_params(
    {"maps": ["array-like"], "feature_norms": ["array-like", None]},
    prefer_skip_nested_validation=True,
)
def attention_sparsity(maps, feature_norms=None) -> np.ndarray:
    """How focused attention maps are: the peak of the norm-weighted mean map over its mean.

    The sparsity of BR-NPA's paper (Section 4.3): the parts' maps are averaged, each position
    is multiplied by the norm of its feature vector, and the sparsity is ``max / mean`` of
    the result. It is 1 for a uniform map and ``h * w`` for a map on a single position;
    higher is more focused.

    Parameters
    ----------
    maps : array-like of shape (n_images, n_parts, \\*spatial)
        Non-negative attention maps (``BRNPAPooling.explain(X).maps``). A single map per
        image may be given as (n_images, 1, \\*spatial).
    feature_norms : array-like of shape (n_images, \\*spatial), default=None
        Norm of the feature vector at each position (``BRNPAParts.feature_norms``);
        ``None`` weights every position equally.

    Returns
    -------
    sparsity : ndarray of shape (n_images,)
        ``max / mean`` per image, >= 1; NaN where the weighted map is all zero.

    Examples
    --------
    >>> import numpy as np
    >>> from sklearn_caf.metrics import attention_sparsity
    >>> maps = np.zeros((2, 1, 2, 2))
    >>> maps[0, 0] = 0.25          # uniform
    >>> maps[1, 0, 0, 0] = 1.0     # one position
    >>> attention_sparsity(maps)
    array([1., 4.])
    """
    maps = np.asarray(maps, dtype=np.float64)
    if maps.ndim < 3:
        raise ValueError(
            f"maps must have shape (n_images, n_parts, *spatial); got shape {maps.shape}."
        )
    if not np.isfinite(maps).all() or (maps < 0).any():
        raise ValueError("maps must hold finite, non-negative values.")
    mean_map = maps.mean(axis=1)
    if feature_norms is not None:
        norms = np.asarray(feature_norms, dtype=np.float64)
        if norms.shape != mean_map.shape:
            raise ValueError(
                f"feature_norms must have shape (n_images, *spatial) = {mean_map.shape}; got "
                f"{norms.shape}."
            )
        if not np.isfinite(norms).all() or (norms < 0).any():
            raise ValueError("feature_norms must hold finite, non-negative values.")
        mean_map = mean_map * norms
    flat = mean_map.reshape(mean_map.shape[0], -1)
    mean = flat.mean(axis=1)
    return np.divide(flat.max(axis=1), mean, out=np.full_like(mean, np.nan), where=mean > 0)


# --------------------------------------------------------------------------------------------
# MaxBoxAcc (Choe et al., "Evaluating Weakly Supervised Object Localization Methods Right",
# CVPR 2020): localization accuracy at the best threshold of a grid, without any assumption on
# the threshold a method needs.

#: The threshold grid of MaxBoxAcc, ``np.arange(0, 1, 0.01)`` (as in Choe et al.).
DEFAULT_THRESHOLDS = np.arange(0, 1, 0.01)


@dataclass(frozen=True)
class MaxBoxAccuracy:
    """Result of :func:`max_box_accuracy` and :func:`max_box_accuracy_from_curves`.

    Attributes
    ----------
    score : float
        Mean over `iou_thresholds` of each accuracy curve's maximum (MaxBoxAcc for one IoU
        threshold, MaxBoxAccV2 for ``(0.3, 0.5, 0.7)`` with ``multi_contour=True``).
    accuracy : ndarray of shape (n_iou_thresholds, n_thresholds)
        Fraction of images correctly localized at each IoU threshold and map threshold.
    best_thresholds : ndarray of shape (n_iou_thresholds,)
        Map threshold at which each curve peaks (the first one on ties).
    thresholds : ndarray of shape (n_thresholds,)
        The map thresholds, in the order given.
    iou_thresholds : ndarray of shape (n_iou_thresholds,)
        The IoU thresholds.
    """

    score: float
    accuracy: np.ndarray
    best_thresholds: np.ndarray
    thresholds: np.ndarray
    iou_thresholds: np.ndarray


def _check_fractions(values, *, name, default=None):
    """A non-empty 1-D float array of values in [0, 1] (a scalar counts as one value)."""
    if values is None:
        return np.array(default, dtype=np.float64)
    values = np.asarray(values)
    if values.dtype.kind not in "biuf":
        raise ValueError(f"{name} must hold real numbers; got an array of dtype {values.dtype}.")
    values = np.atleast_1d(values).astype(np.float64)
    if values.ndim != 1 or len(values) == 0:
        raise ValueError(f"{name} must be a non-empty 1-D array; got shape {values.shape}.")
    if not np.isfinite(values).all() or (values < 0).any() or (values > 1).any():
        raise ValueError(f"{name} must hold values in [0, 1]; got {values}.")
    return values


def _check_map_batch(heatmaps):
    """Heatmaps as a finite float64 (n, height, width) array (any real values)."""
    try:
        maps = np.asarray(heatmaps)
    except ValueError as exc:  # ragged nested lists
        raise ValueError(f"heatmaps must be a regular (non-ragged) array of maps; {exc}") from None
    if maps.dtype.kind not in "biuf":
        raise ValueError(f"heatmaps must hold real numbers; got an array of dtype {maps.dtype}.")
    if maps.ndim != 3 or maps.size == 0:
        raise ValueError(
            "heatmaps must be a non-empty 3-D array of shape (n_images, height, width); got "
            f"shape {maps.shape}."
        )
    maps = maps.astype(np.float64, copy=False)
    finite = np.isfinite(maps).all(axis=(1, 2))
    if not finite.all():
        raise ValueError(
            f"heatmaps contains NaN or infinite values (first in image {np.argmin(finite)})."
        )
    return maps


def _minmax(maps):
    """Min-max normalize each (height, width) map in float64; a constant map becomes 0."""
    lo = maps.min(axis=(1, 2), keepdims=True)
    span = maps.max(axis=(1, 2), keepdims=True) - lo
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(span > 0, (maps - lo) / np.where(span > 0, span, 1), 0.0)


def _one_sweep_kernel():
    try:
        from sklearn_caf._components import iou_curves
    except ImportError as exc:
        raise ImportError(
            "box_iou_curves and max_box_accuracy need numba for their compiled one-sweep "
            "kernel: pip install numba (or pip install 'sklearn-caf[eval]')."
        ) from exc
    return iou_curves


def _iou_curve_pair(maps, boxes, thresholds, multi_contour=True):
    """IoU curves v1 (largest component) and v2 (best component), (n, T) each, in one sweep.

    `maps` is a validated (n, h, w) float64 array, `boxes` a padded (n, m, 4) array and
    `thresholds` a validated 1-D array. ``v2`` is all zeros when `multi_contour` is False.
    """
    kernel = _one_sweep_kernel()
    order = np.argsort(thresholds, kind="stable")
    v1 = np.zeros((len(maps), len(thresholds)))
    v2 = np.zeros((len(maps), len(thresholds)))
    kernel(
        np.ascontiguousarray(maps, dtype=np.float64),
        np.ascontiguousarray(thresholds[order]),
        np.ascontiguousarray(boxes, dtype=np.float64),
        bool(multi_contour),
        v1,
        v2,
    )
    # Back to the caller's order of thresholds.
    out1, out2 = np.empty_like(v1), np.empty_like(v2)
    out1[:, order], out2[:, order] = v1, v2
    return out1, out2


@validate_params(
    {
        "heatmaps": ["array-like"],
        "true_boxes": ["array-like"],
        "thresholds": ["array-like", None],
        "multi_contour": ["boolean"],
    },
    prefer_skip_nested_validation=True,
)
def box_iou_curves(
    heatmaps, true_boxes, *, thresholds=None, multi_contour: bool = False
) -> np.ndarray:
    """IoU of each heatmap's box(es) with the ground truth, at every threshold of a grid.

    Each map is min-max normalized (a constant map becomes 0 everywhere); at threshold ``tau``
    the pixels whose normalized value is ``>= tau`` are kept (a value exactly equal to ``tau``
    is kept) and grouped into 8-connected components. With ``multi_contour=False`` the box of
    the largest component counts (ties in size go to the component holding the map's maximum,
    then to the first one in row-major order, as in :class:`~sklearn_caf.boxes.HeatmapBoxes`);
    with ``multi_contour=True`` the best IoU over every component's box counts. Each box is
    compared with every ground-truth box of its image and the best IoU is kept; where no pixel
    is kept the IoU is 0.

    One point of the curve equals ``HeatmapBoxes(threshold=tau)`` followed by
    :func:`best_iou` on min-max normalized maps of a non-constant map: ``HeatmapBoxes`` keeps
    the pixels ``>= tau * max`` and a normalized map's maximum is 1 (its minimum 0).

    The curves come from **one sweep per image** (pixels added from the highest value down,
    with a union-find that keeps each component's size and box), so the cost hardly depends
    on the number of thresholds. It needs numba (``pip install 'sklearn-caf[eval]'``).

    Parameters
    ----------
    heatmaps : array-like of shape (n_images, height, width)
        Heatmaps with finite real values (any range; each is min-max normalized).
    true_boxes : array-like of shape (n_images, 4) or (n_images, m, 4), or sequence of n_images \
            array-likes of shape (m_i, 4)
        Ground-truth boxes ``[x0, y0, x1, y1]`` in the pixel-edge coordinates of the maps.
    thresholds : array-like of shape (n_thresholds,), default=None
        Thresholds in [0, 1] on the normalized maps, in any order;
        ``None`` is :data:`DEFAULT_THRESHOLDS` (``np.arange(0, 1, 0.01)``).
    multi_contour : bool, default=False
        False: IoU of the largest component's box (MaxBoxAcc). True: best IoU over every
        component's box (MaxBoxAccV2).

    Returns
    -------
    iou : ndarray of shape (n_images, n_thresholds)
        Best IoU per image and threshold, in [0, 1].

    See Also
    --------
    max_box_accuracy : Accuracy curves and MaxBoxAcc from these IoUs.

    Examples
    --------
    >>> import numpy as np
    >>> from sklearn_caf.metrics import box_iou_curves
    >>> heatmap = np.zeros((1, 4, 6))
    >>> heatmap[0, 1:3, 1:3] = 0.5     # a weaker blob on the left
    >>> heatmap[0, 1, 4] = 1.0         # a one-pixel peak on the right
    >>> box_iou_curves(heatmap, [[1, 1, 3, 3]], thresholds=[0.0, 0.5, 0.9])
    array([[0.16666667, 1.        , 0.        ]])
    >>> box_iou_curves(heatmap, [[1, 1, 3, 3]], thresholds=[0.0, 0.5, 0.9], multi_contour=True)
    array([[0.16666667, 1.        , 0.        ]])
    """
    maps = _check_map_batch(heatmaps)
    thresholds = _check_fractions(thresholds, name="thresholds", default=DEFAULT_THRESHOLDS)
    boxes = _check_true_boxes(true_boxes, len(maps), other="heatmaps")
    v1, v2 = _iou_curve_pair(maps, boxes, thresholds, multi_contour)
    return v2 if multi_contour else v1


@validate_params(
    {
        "iou_curves": ["array-like"],
        "thresholds": ["array-like", None],
        "iou_thresholds": ["array-like", Interval(Real, 0, 1, closed="both")],
        "correct": ["array-like", None],
    },
    prefer_skip_nested_validation=True,
)
def max_box_accuracy_from_curves(
    iou_curves, *, thresholds=None, iou_thresholds=(0.5,), correct=None
) -> MaxBoxAccuracy:
    """MaxBoxAcc from precomputed IoU curves (the output of :func:`box_iou_curves`).

    ``accuracy[d, t]`` is the fraction of images whose IoU at threshold ``t`` reaches
    ``iou_thresholds[d]`` (and that are `correct`, when given); ``score`` is the mean over
    ``d`` of ``accuracy[d].max()``. This lets a per-image table that stores each image's
    curve give the dataset's MaxBoxAcc without the heatmaps.

    Parameters
    ----------
    iou_curves : array-like of shape (n_images, n_thresholds)
        Best IoU per image and threshold (a sequence of per-image curves is stacked).
    thresholds : array-like of shape (n_thresholds,), default=None
        The thresholds the curves were computed at; ``None`` is :data:`DEFAULT_THRESHOLDS`.
    iou_thresholds : float or array-like of shape (n_iou_thresholds,), default=(0.5,)
        Smallest IoU that counts as correct; ``(0.3, 0.5, 0.7)`` for MaxBoxAccV2.
    correct : array-like of shape (n_images,) of bool, default=None
        A classification condition ANDed in per image (e.g. top-1 correct, for top-1
        localization); ``None`` counts every image (GT-known).

    Returns
    -------
    result : MaxBoxAccuracy
        ``score``, ``accuracy`` of shape (n_iou_thresholds, n_thresholds),
        ``best_thresholds``, ``thresholds`` and ``iou_thresholds``.

    Examples
    --------
    >>> from sklearn_caf.metrics import max_box_accuracy_from_curves
    >>> curves = [[0.2, 0.6, 0.4], [0.1, 0.5, 0.8]]
    >>> result = max_box_accuracy_from_curves(curves, thresholds=[0.1, 0.2, 0.3])
    >>> result.accuracy
    array([[0. , 1. , 0.5]])
    >>> result.score, result.best_thresholds
    (1.0, array([0.2]))
    >>> max_box_accuracy_from_curves(curves, thresholds=[0.1, 0.2, 0.3],
    ...                              correct=[True, False]).score
    0.5
    """
    numeric = isinstance(iou_curves, np.ndarray) and iou_curves.dtype.kind != "O"
    try:
        # A sequence (or object array, e.g. a DataFrame's list column) of per-image curves.
        curves = iou_curves if numeric else np.stack([np.asarray(c) for c in iou_curves])
    except ValueError as exc:
        raise ValueError(f"iou_curves must hold curves of equal length; {exc}") from None
    if curves.dtype.kind not in "biuf" or curves.ndim != 2 or curves.size == 0:
        raise ValueError(
            "iou_curves must be a non-empty 2-D array of IoUs, shape (n_images, n_thresholds); "
            f"got shape {curves.shape} and dtype {curves.dtype}."
        )
    curves = curves.astype(np.float64, copy=False)
    if not np.isfinite(curves).all() or (curves < 0).any() or (curves > 1).any():
        raise ValueError("iou_curves must hold IoUs in [0, 1] (no NaN).")
    thresholds = _check_fractions(thresholds, name="thresholds", default=DEFAULT_THRESHOLDS)
    if len(thresholds) != curves.shape[1]:
        raise ValueError(
            f"iou_curves has {curves.shape[1]} thresholds per image but thresholds has "
            f"{len(thresholds)}; pass the thresholds the curves were computed at."
        )
    iou_thresholds = _check_fractions(iou_thresholds, name="iou_thresholds")
    keep = np.ones(len(curves), dtype=bool)
    if correct is not None:
        correct = np.asarray(correct)
        if correct.shape != (len(curves),) or correct.dtype.kind not in "biu":
            raise ValueError(
                f"correct must be a boolean array of shape ({len(curves)},), one flag per "
                f"image; got shape {correct.shape} and dtype {correct.dtype}."
            )
        if correct.dtype.kind != "b" and not np.isin(correct, (0, 1)).all():
            raise ValueError("correct must hold booleans (or 0 and 1).")
        keep = correct.astype(bool)
    accuracy = np.stack([((curves >= d) & keep[:, None]).mean(axis=0) for d in iou_thresholds])
    best = accuracy.argmax(axis=1)
    return MaxBoxAccuracy(
        score=float(accuracy.max(axis=1).mean()),
        accuracy=accuracy,
        best_thresholds=thresholds[best],
        thresholds=thresholds,
        iou_thresholds=iou_thresholds,
    )


@validate_params(
    {
        "heatmaps": ["array-like"],
        "true_boxes": ["array-like"],
        "thresholds": ["array-like", None],
        "iou_thresholds": ["array-like", Interval(Real, 0, 1, closed="both")],
        "multi_contour": ["boolean"],
        "correct": ["array-like", None],
    },
    prefer_skip_nested_validation=True,
)
def max_box_accuracy(
    heatmaps,
    true_boxes,
    *,
    thresholds=None,
    iou_thresholds=(0.5,),
    multi_contour: bool = False,
    correct=None,
) -> MaxBoxAccuracy:
    """MaxBoxAcc: box accuracy at the best threshold of a grid (Choe et al., CVPR 2020).

    Each map is min-max normalized; at threshold ``tau`` the pixels ``>= tau`` are kept and
    grouped into 8-connected components (see :func:`box_iou_curves`). Version 1 (the default)
    boxes the largest component, correct when its IoU with some ground-truth box reaches 0.5.
    Version 2 (``multi_contour=True, iou_thresholds=(0.3, 0.5, 0.7)``) boxes every component,
    correct when any of them reaches the IoU threshold, and the score is the mean over the IoU
    thresholds of each accuracy curve's maximum. `correct` ANDs a classification condition in
    (top-1 localization); without it this is GT-known localization.

    The IoU curves come from one sweep per image whose cost does not grow with the number of
    thresholds; it needs numba (``pip install 'sklearn-caf[eval]'``).

    Parameters
    ----------
    heatmaps : array-like of shape (n_images, height, width)
        Heatmaps with finite real values; each is min-max normalized (a constant map becomes
        0 everywhere, kept only at threshold 0).
    true_boxes : array-like of shape (n_images, 4) or (n_images, m, 4), or sequence of n_images \
            array-likes of shape (m_i, 4)
        Ground-truth boxes ``[x0, y0, x1, y1]`` in pixel-edge coordinates of the maps.
    thresholds : array-like of shape (n_thresholds,), default=None
        Map thresholds in [0, 1]; ``None`` is :data:`DEFAULT_THRESHOLDS`
        (``np.arange(0, 1, 0.01)``).
    iou_thresholds : float or array-like of shape (n_iou_thresholds,), default=(0.5,)
        IoU thresholds ``delta``; ``(0.3, 0.5, 0.7)`` for MaxBoxAccV2.
    multi_contour : bool, default=False
        Box every component (version 2) rather than the largest one.
    correct : array-like of shape (n_images,) of bool, default=None
        Per-image classification condition ANDed in; ``None`` counts every image.

    Returns
    -------
    result : MaxBoxAccuracy
        ``score``, ``accuracy`` of shape (n_iou_thresholds, n_thresholds),
        ``best_thresholds``, ``thresholds`` and ``iou_thresholds``.

    See Also
    --------
    box_iou_curves : The per-image IoU curves behind the accuracy.
    max_box_accuracy_from_curves : The same from stored curves.

    Examples
    --------
    >>> import numpy as np
    >>> from sklearn_caf.metrics import max_box_accuracy
    >>> maps = np.zeros((2, 8, 8))
    >>> maps[0, 2:6, 2:6] = 1.0          # on the object
    >>> maps[1, 0, 0] = 1.0              # a peak off the object ...
    >>> maps[1, 4:8, 4:8] = 0.6          # ... and a weaker blob on it
    >>> true = [[2, 2, 6, 6], [4, 4, 8, 8]]
    >>> result = max_box_accuracy(maps, true, thresholds=[0.25, 0.5, 0.75])
    >>> result.accuracy
    array([[1. , 1. , 0.5]])
    >>> result.score, result.best_thresholds
    (1.0, array([0.25]))
    >>> v2 = max_box_accuracy(maps, true, thresholds=[0.25, 0.5, 0.75],
    ...                       iou_thresholds=(0.3, 0.5, 0.7), multi_contour=True)
    >>> v2.accuracy.shape, v2.score
    ((3, 3), 1.0)
    """
    maps = _check_map_batch(heatmaps)
    thresholds = _check_fractions(thresholds, name="thresholds", default=DEFAULT_THRESHOLDS)
    boxes = _check_true_boxes(true_boxes, len(maps), other="heatmaps")
    v1, v2 = _iou_curve_pair(maps, boxes, thresholds, multi_contour)
    return max_box_accuracy_from_curves(
        v2 if multi_contour else v1,
        thresholds=thresholds,
        iou_thresholds=iou_thresholds,
        correct=correct,
    )


# --------------------------------------------------------------------------------------------
# Retrieval metrics (L2-CAF's Table 3, after the deep metric learning literature).


# Distances held at once by recall_at_k (32 MiB of float64).
_RECALL_BLOCK_ELEMENTS = 2**22


def _check_embeddings(embeddings, labels, *, normalize):
    embeddings = np.asarray(embeddings)
    if embeddings.dtype.kind not in "biuf":
        raise ValueError(
            f"embeddings must hold real numbers; got an array of dtype {embeddings.dtype}."
        )
    if embeddings.ndim != 2 or embeddings.shape[0] < 2 or embeddings.shape[1] < 1:
        raise ValueError(
            "embeddings must be a 2-D array of shape (n_samples, n_features) with at least "
            f"2 samples; got shape {embeddings.shape}."
        )
    embeddings = embeddings.astype(np.float64, copy=False)
    if not np.isfinite(embeddings).all():
        raise ValueError("embeddings contains NaN or infinite values.")
    labels = np.asarray(labels)
    if labels.ndim != 1 or len(labels) != len(embeddings):
        raise ValueError(
            f"labels must be 1-D with one label per embedding ({len(embeddings)}); got shape "
            f"{labels.shape}."
        )
    if normalize:
        norms = np.linalg.norm(embeddings, axis=1)
        if (norms == 0).any():
            raise ValueError(
                f"embeddings has a zero vector (row {np.argmin(norms)}); cosine similarity "
                "and L2 normalization are undefined for it."
            )
        embeddings = embeddings / norms[:, np.newaxis]
    return embeddings, labels


@validate_params(
    {
        "embeddings": ["array-like"],
        "labels": ["array-like"],
        "k": [Interval(Integral, 1, None, closed="left"), "array-like"],
        "metric": [StrOptions({"cosine", "euclidean"})],
    },
    prefer_skip_nested_validation=True,
)
def recall_at_k(embeddings, labels, k=1, metric: str = "cosine") -> float | dict[int, float]:
    """Recall@k of retrieval: how often one of a query's k nearest neighbours shares its label.

    Every sample is a query against all the others (the query itself is excluded from its
    own neighbours). A query counts as a hit when at least one of its `k` nearest neighbours
    has its label; Recall@k is the fraction of hits (Recall@1 is the nearest neighbour's
    accuracy). Neighbours at equal computed distances are ranked by index (a stable sort),
    so the result is deterministic. Queries are processed in blocks, so memory stays at a
    few blocks of ``n_samples`` distances.

    Parameters
    ----------
    embeddings : array-like of shape (n_samples, n_features)
        One embedding per sample (at least 2 samples).
    labels : array-like of shape (n_samples,)
        Class of each sample.
    k : int or sequence of int, default=1
        Number of neighbours, from 1 to ``n_samples - 1``; several values give several
        recalls from one ranking.
    metric : {"cosine", "euclidean"}, default="cosine"
        Cosine distance (1 - cosine similarity; zero vectors are an error) or Euclidean
        distance.

    Returns
    -------
    recall : float or dict of int to float
        A float for an int `k`; for a sequence, a dict mapping each ``k`` to its recall.

    Examples
    --------
    >>> from sklearn_caf.metrics import recall_at_k
    >>> embeddings = [[0.0], [0.1], [1.0], [1.2], [5.0]]
    >>> labels = [0, 0, 1, 0, 1]
    >>> recall_at_k(embeddings, labels, k=1, metric="euclidean")
    0.4
    >>> recall_at_k(embeddings, labels, k=[1, 2], metric="euclidean")
    {1: 0.4, 2: 0.8}
    """
    single = isinstance(k, Integral)
    ks = np.atleast_1d(np.asarray(k))
    if ks.ndim != 1 or len(ks) == 0 or ks.dtype.kind not in "iu":
        raise ValueError(f"k must be an int or a non-empty sequence of ints; got {k!r}.")
    embeddings, labels = _check_embeddings(embeddings, labels, normalize=metric == "cosine")
    n = len(embeddings)
    if ks.min() < 1 or ks.max() > n - 1:
        raise ValueError(
            f"k must be between 1 and n_samples - 1 = {n - 1} (the query is not its own "
            f"neighbour); got {k!r}."
        )
    k_max = int(ks.max())
    squared = (embeddings**2).sum(axis=1)
    hits = np.zeros((len(ks), n), dtype=bool)
    block = max(1, min(n, _RECALL_BLOCK_ELEMENTS // n))
    for start in range(0, n, block):
        stop = min(start + block, n)
        queries = np.arange(start, stop)
        products = embeddings[start:stop] @ embeddings.T
        if metric == "cosine":
            distances = 1.0 - products
        else:
            distances = squared[start:stop, np.newaxis] - 2.0 * products + squared
        distances[np.arange(stop - start), queries] = np.inf
        neighbours = np.argsort(distances, axis=1, kind="stable")[:, :k_max]
        found = np.logical_or.accumulate(labels[neighbours] == labels[queries, np.newaxis], axis=1)
        hits[:, start:stop] = found[:, ks - 1].T
    recalls = hits.mean(axis=1)
    if single:
        return float(recalls[0])
    return {int(kk): float(r) for kk, r in zip(ks, recalls, strict=True)}


@validate_params(
    {
        "embeddings": ["array-like"],
        "labels": ["array-like"],
        "n_clusters": [Interval(Integral, 1, None, closed="left"), None],
        "random_state": ["random_state"],
    },
    prefer_skip_nested_validation=True,
)
def clustering_nmi(embeddings, labels, *, n_clusters=None, random_state=None) -> float:
    """Normalized mutual information between the labels and a k-means clustering.

    The clustering quality of retrieval embeddings: the embeddings are L2-normalized, clustered
    by :class:`~sklearn.cluster.KMeans` (10 initializations) into `n_clusters` clusters, and
    the clusters are compared with the labels by
    :func:`~sklearn.metrics.normalized_mutual_info_score` (arithmetic normalization).

    Parameters
    ----------
    embeddings : array-like of shape (n_samples, n_features)
        One embedding per sample; zero vectors are an error (they cannot be normalized).
    labels : array-like of shape (n_samples,)
        Class of each sample.
    n_clusters : int, default=None
        Number of clusters; ``None`` uses the number of distinct labels.
    random_state : int, RandomState instance or None, default=None
        Seeds k-means; pass an int for a reproducible score.

    Returns
    -------
    nmi : float
        NMI in [0, 1]; 1 when the clusters are the classes.

    Examples
    --------
    >>> from sklearn_caf.metrics import clustering_nmi
    >>> embeddings = [[1.0, 0.0], [0.9, 0.1], [0.0, 1.0], [0.1, 0.9]]
    >>> clustering_nmi(embeddings, [0, 0, 1, 1], random_state=0)
    1.0
    """
    from sklearn.cluster import KMeans
    from sklearn.metrics import normalized_mutual_info_score

    embeddings, labels = _check_embeddings(embeddings, labels, normalize=True)
    if n_clusters is None:
        n_clusters = len(np.unique(labels))
    if n_clusters > len(embeddings):
        raise ValueError(
            f"n_clusters={n_clusters} exceeds the number of samples ({len(embeddings)})."
        )
    clusters = KMeans(n_clusters=n_clusters, n_init=10, random_state=random_state).fit_predict(
        embeddings
    )
    return float(normalized_mutual_info_score(labels, clusters))
