"""Box overlap (IoU) and localization accuracy (GT-known, top-1, top-k)."""

from numbers import Real

import numpy as np
from sklearn.utils.validation import check_consistent_length

from .._utils import Interval, validate_params

# A box is correct when its IoU with a ground-truth box reaches this (all the papers).
IOU_THRESHOLD = 0.5


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
