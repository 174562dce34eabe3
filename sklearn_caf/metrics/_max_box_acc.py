"""MaxBoxAcc (Choe et al., CVPR 2020): IoU-vs-threshold curves in one sweep and their maximum."""

from dataclasses import dataclass
from numbers import Real

import numpy as np

from .._utils import Interval, StrOptions, import_optional, validate_params
from ._boxes import _check_true_boxes

# --------------------------------------------------------------------------------------------
# MaxBoxAcc (Choe et al., "Evaluating Weakly Supervised Object Localization Methods Right",
# CVPR 2020): localization accuracy at the best threshold of a grid, without any assumption on
# the threshold a method needs.

# The threshold grid of MaxBoxAcc, ``np.arange(0, 1, 0.01)`` (as in Choe et al.).
DEFAULT_THRESHOLDS = np.arange(0, 1, 0.01)

# The IoU thresholds averaged by MaxBoxAcc v2 (wsolevaluation).
V2_IOU_THRESHOLDS = (0.3, 0.5, 0.7)

# The box protocols: wsolevaluation's BoxEvaluator exactly (the default: the numbers of the
# published WSOL tables), and the library's own tight pixel boxes.
BOX_PROTOCOLS = ("wsol", "sklearn-caf")


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
    import_optional(
        "numba", needed_by="box_iou_curves and max_box_accuracy (their compiled one-sweep kernel)"
    )
    from ._components import iou_curves

    return iou_curves


def _wsol_kernel():
    import_optional(
        "numba", needed_by="box_iou_curves and max_box_accuracy (their compiled kernels)"
    )
    from ._components import wsol_iou_curves

    return wsol_iou_curves


def _wsol_curve_pair(maps, boxes, thresholds, want_v1=True, want_v2=True):
    """IoU curves v1 and v2 of wsolevaluation's ``BoxEvaluator``, (n, T) each.

    The map is min-max normalized in float64 and cast to uint8 as the reference does; a
    threshold ``t`` keeps ``u8 > int(t * 255)``. The pixel-edge ground truth
    ``[x0, y0, x1, y1]`` is the reference's inclusive ``[x0, y0, x1 - 1, y1 - 1]``.
    """
    kernel = _wsol_kernel()
    u8 = (_minmax(maps) * 255).astype(np.uint8)
    inclusive = np.array(boxes, dtype=np.float64)
    inclusive[..., 2:] -= 1.0  # zero-padding becomes [0, 0, -1, -1]: IoU 0
    v1 = np.zeros((len(maps), 256))
    v2 = np.zeros((len(maps), 256))
    kernel(np.ascontiguousarray(u8), np.ascontiguousarray(inclusive), want_v1, want_v2, v1, v2)
    # The reference's threshold: int(t * max(u8)); max(u8) is 255 unless the map is constant,
    # where every level keeps nothing anyway.
    levels = np.minimum((thresholds * 255).astype(np.int64), 255)
    return v1[:, levels], v2[:, levels]


def _iou_curve_pair(
    maps, boxes, thresholds, multi_contour=True, protocol="sklearn-caf", need_v1=True
):
    """IoU curves v1 (largest component) and v2 (best component), (n, T) each, in one sweep.

    `maps` is a validated (n, h, w) float64 array, `boxes` a padded (n, m, 4) array and
    `thresholds` a validated 1-D array. ``v2`` is not computed when `multi_contour` is False
    (nor, for ``"wsol"``, ``v1`` when `need_v1` is False): it is then meaningless.
    """
    if protocol == "wsol":
        return _wsol_curve_pair(maps, boxes, thresholds, need_v1, multi_contour)
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
        "protocol": [StrOptions(set(BOX_PROTOCOLS))],
    },
    prefer_skip_nested_validation=True,
)
def box_iou_curves(
    heatmaps, true_boxes, *, thresholds=None, multi_contour: bool = False, protocol: str = "wsol"
) -> np.ndarray:
    """IoU of each heatmap's box(es) with the ground truth, at every threshold of a grid.

    Each map is min-max normalized in float64 (a constant map becomes 0 everywhere). Two
    protocols turn a threshold ``tau`` into boxes (see :ref:`protocols`):

    ``protocol="wsol"`` (default)
        wsolevaluation's ``BoxEvaluator`` (Choe et al., CVPR 2020), every curve point exactly:
        the normalized map is cast to ``uint8`` (``(map * 255).astype(uint8)``) and the pixels
        ``> int(tau * 255)`` are kept (a constant map keeps none); the contours are those of
        ``cv2.findContours(mask, RETR_TREE)`` (hole contours included). Version 1 boxes the
        contour of largest ``cv2.contourArea`` (the area of the polygon through the border
        pixels' centres, so a 20-pixel line loses to a 3 x 3 square; ties go to the contour
        OpenCV lists first), version 2 every contour. A box is ``cv2.boundingRect`` as
        ``[x, y, x + w, y + h]`` clipped to ``[W - 1, H - 1]``, an inclusive box one pixel
        larger than the pixels; an empty mask gives the box ``[0, 0, 0, 0]``. IoUs are the
        reference's ``+1`` IoU of inclusive boxes: the pixel-edge ground truth
        ``[x0, y0, x1, y1]`` is scored as the inclusive ``[x0, y0, x1 - 1, y1 - 1]`` (the
        same pixels). No OpenCV is needed: the 256 masks' contours come from three
        union-find sweeps over the levels.
    ``protocol="sklearn-caf"``
        The library's tight pixel boxes: the pixels ``>= tau`` are kept and grouped into
        8-connected components. Version 1 boxes the largest component (most pixels; ties go
        to the component holding the map's maximum, then to the first one in row-major order,
        as in :class:`~sklearn_caf.boxes.HeatmapBoxes`), version 2 every component; each box
        is the components' pixel-edge box and an empty mask scores IoU 0. One point of the
        curve equals ``HeatmapBoxes(threshold=tau)`` followed by :func:`best_iou` on
        non-constant maps.

    With ``multi_contour=False`` the IoU of version 1's box counts; with ``multi_contour=True``
    the best IoU over version 2's boxes. Each box is compared with every ground-truth box of
    its image and the best IoU is kept.

    The curves come from **one sweep per image** (pixels added level by level with a
    union-find that keeps each component's box), so the cost hardly depends on the number of
    thresholds. It needs numba (``pip install 'sklearn-caf[eval]'``).

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
        False: IoU of the largest contour's (component's) box (MaxBoxAcc). True: best IoU over
        every contour's box (MaxBoxAccV2).
    protocol : {"wsol", "sklearn-caf"}, default="wsol"
        ``"wsol"``: wsolevaluation's ``BoxEvaluator`` exactly, the numbers of published
        WSOL tables; ``"sklearn-caf"``: the library's tight pixel boxes (see above and
        :ref:`protocols`).

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
    >>> heatmap[0, 1:3, 1:3] = 0.5     # a weaker 2 x 2 blob on the left
    >>> heatmap[0, 1, 4] = 1.0         # a one-pixel peak on the right
    >>> box_iou_curves(heatmap, [[1, 1, 3, 3]], thresholds=[0.0, 0.4, 0.9])
    array([[0.44444444, 0.44444444, 0.        ]])

    The reference boxes the blob one pixel larger (3 x 3 pixels for 2 x 2) and at ``tau = 0``
    keeps only the values above the minimum; the library's tight boxes and ``>=`` give:

    >>> box_iou_curves(heatmap, [[1, 1, 3, 3]], thresholds=[0.0, 0.4, 0.9],
    ...                protocol="sklearn-caf")
    array([[0.16666667, 1.        , 0.        ]])
    """
    maps = _check_map_batch(heatmaps)
    thresholds = _check_fractions(thresholds, name="thresholds", default=DEFAULT_THRESHOLDS)
    boxes = _check_true_boxes(true_boxes, len(maps), other="heatmaps")
    v1, v2 = _iou_curve_pair(
        maps, boxes, thresholds, multi_contour, protocol, need_v1=not multi_contour
    )
    return v2 if multi_contour else v1


@validate_params(
    {
        "heatmaps": ["array-like"],
        "true_boxes": ["array-like"],
        "thresholds": ["array-like", None],
        "protocol": [StrOptions(set(BOX_PROTOCOLS))],
    },
    prefer_skip_nested_validation=True,
)
def box_iou_curve_pair(
    heatmaps, true_boxes, *, thresholds=None, protocol: str = "wsol"
) -> tuple[np.ndarray, np.ndarray]:
    """Both IoU curves of :func:`box_iou_curves`, v1 and v2, in one call.

    Equal to ``box_iou_curves(..., multi_contour=False)`` and
    ``box_iou_curves(..., multi_contour=True)``. With ``protocol="sklearn-caf"`` it costs
    one of them (the sweep that finds the largest component also sees every other one); with
    ``protocol="wsol"`` about both (the largest contour needs its own sweeps).

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
    protocol : {"wsol", "sklearn-caf"}, default="wsol"
        ``"wsol"``: wsolevaluation's ``BoxEvaluator`` exactly, the numbers of published
        WSOL tables; ``"sklearn-caf"``: the library's tight pixel boxes (see
        :func:`box_iou_curves` and :ref:`protocols`).

    Returns
    -------
    iou_v1 : ndarray of shape (n_images, n_thresholds)
        IoU of the largest component's box (MaxBoxAcc).
    iou_v2 : ndarray of shape (n_images, n_thresholds)
        Best IoU over every component's box (MaxBoxAccV2).

    See Also
    --------
    box_iou_curves : One of the two curves.

    Examples
    --------
    >>> import numpy as np
    >>> from sklearn_caf.metrics import box_iou_curve_pair
    >>> heatmap = np.zeros((1, 4, 6))
    >>> heatmap[0, 1:3, 1:3] = 0.5     # a weaker blob on the left
    >>> heatmap[0, 1:3, 4] = 1.0       # a larger-valued, smaller blob on the right
    >>> v1, v2 = box_iou_curve_pair(heatmap, [[1, 1, 3, 3]], thresholds=[0.4, 0.9])
    >>> v1, v2
    (array([[0.44444444, 0.        ]]), array([[0.44444444, 0.        ]]))
    >>> box_iou_curve_pair(heatmap, [[1, 1, 3, 3]], thresholds=[0.4, 0.9],
    ...                    protocol="sklearn-caf")
    (array([[1., 0.]]), array([[1., 0.]]))
    """
    maps = _check_map_batch(heatmaps)
    thresholds = _check_fractions(thresholds, name="thresholds", default=DEFAULT_THRESHOLDS)
    boxes = _check_true_boxes(true_boxes, len(maps), other="heatmaps")
    return _iou_curve_pair(maps, boxes, thresholds, True, protocol)


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
        "protocol": [StrOptions(set(BOX_PROTOCOLS))],
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
    protocol: str = "wsol",
) -> MaxBoxAccuracy:
    """MaxBoxAcc: box accuracy at the best threshold of a grid (Choe et al., CVPR 2020).

    Each map is min-max normalized and thresholded at every ``tau`` of a grid, and its mask
    boxed by `protocol` (see :func:`box_iou_curves`): by default exactly as wsolevaluation's
    ``BoxEvaluator``, so that the score can sit beside published WSOL tables. Version 1 (the
    default) boxes the largest contour, correct when its IoU with some ground-truth box
    reaches 0.5. Version 2 (``multi_contour=True, iou_thresholds=(0.3, 0.5, 0.7)``) boxes
    every contour, correct when any of them reaches the IoU threshold, and the score is the
    mean over the IoU thresholds of each accuracy curve's maximum. `correct` ANDs a
    classification condition in (top-1 localization); without it this is GT-known
    localization.

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
    protocol : {"wsol", "sklearn-caf"}, default="wsol"
        ``"wsol"``: wsolevaluation's ``BoxEvaluator`` exactly, the numbers of published
        WSOL tables; ``"sklearn-caf"``: the library's tight pixel boxes (see
        :func:`box_iou_curves` and :ref:`protocols`).

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
    ((3, 3), 0.8333333333333334)
    >>> max_box_accuracy(maps, true, thresholds=[0.25, 0.5, 0.75], iou_thresholds=(0.3, 0.5, 0.7),
    ...                  multi_contour=True, protocol="sklearn-caf").score
    1.0
    """
    maps = _check_map_batch(heatmaps)
    thresholds = _check_fractions(thresholds, name="thresholds", default=DEFAULT_THRESHOLDS)
    boxes = _check_true_boxes(true_boxes, len(maps), other="heatmaps")
    v1, v2 = _iou_curve_pair(
        maps, boxes, thresholds, multi_contour, protocol, need_v1=not multi_contour
    )
    return max_box_accuracy_from_curves(
        v2 if multi_contour else v1,
        thresholds=thresholds,
        iou_thresholds=iou_thresholds,
        correct=correct,
    )


# --------------------------------------------------------------------------------------------
# Retrieval metrics (L2-CAF's Table 3, after the deep metric learning literature).
