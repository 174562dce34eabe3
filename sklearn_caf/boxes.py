"""Bounding boxes from heatmaps, with the thresholding rule of CAM.

A heatmap is turned into a box the way Zhou et al. (CAM, 2016) do it: keep the pixels whose
value is at least ``threshold`` times the map's maximum, take the largest 8-connected component
of what is left, and return the smallest box that contains it.

Boxes use pixel-edge coordinates ``[x0, y0, x1, y1]``: ``x0`` is the first column of the
component and ``x1`` the last column plus one, so that ``x1 - x0`` is the width in pixels, and
likewise for rows. A single pixel at row 3, column 5 is the box ``[5, 3, 6, 4]``. The same
convention is used by :mod:`sklearn_caf.metrics`.
"""

from numbers import Real
from typing import ClassVar

import numpy as np
from scipy import ndimage
from sklearn.base import BaseEstimator, TransformerMixin
from sklearn.utils.validation import check_is_fitted

from ._utils import Interval, StrOptions, fit_context, validate_params

__all__ = ["HeatmapBoxes", "heatmap_to_box", "heatmaps_to_boxes"]

#: Published thresholds, as a fraction of each map's maximum.
THRESHOLD_PRESETS = {"cam": 0.2, "gradcam": 0.15}

_THRESHOLD_CONSTRAINTS = [Interval(Real, 0, 1, closed="both"), StrOptions(set(THRESHOLD_PRESETS))]

# Connect the 8 neighbours within an image but never across images of a batch, so that one
# call to ndimage.label labels the whole batch.
_BATCH_STRUCTURE = np.zeros((3, 3, 3), dtype=bool)
_BATCH_STRUCTURE[1] = True

_BOX_COLUMNS = ("x0", "y0", "x1", "y1", "score")


def _resolve_threshold(threshold):
    return THRESHOLD_PRESETS[threshold] if isinstance(threshold, str) else float(threshold)


def _check_heatmaps(heatmaps, *, ndim, name):
    """Return `heatmaps` as a float array after checking rank, size, dtype and values."""
    try:
        heatmaps = np.asarray(heatmaps)
    except ValueError as exc:  # ragged nested lists
        raise ValueError(
            f"{name} must be a regular (non-ragged) array of heatmaps; {exc}"
        ) from None
    ndims = ndim if isinstance(ndim, tuple) else (ndim,)
    expected = " or ".join(f"{d}-D" for d in ndims)
    if heatmaps.dtype.kind not in "biuf":
        raise ValueError(f"{name} must hold real numbers; got an array of dtype {heatmaps.dtype}.")
    if heatmaps.ndim not in ndims:
        raise ValueError(
            f"{name} must be a {expected} array of heatmaps; got shape {heatmaps.shape}."
        )
    if heatmaps.size == 0:
        raise ValueError(f"{name} is empty (shape {heatmaps.shape}); expected at least one map.")
    if heatmaps.dtype.kind != "f":
        heatmaps = heatmaps.astype(np.float64)
    if not np.isfinite(heatmaps).all():
        raise ValueError(f"{name} contains NaN or infinite values.")
    if heatmaps.min() < 0:
        raise ValueError(
            f"{name} contains negative values (min {heatmaps.min():.3g}); heatmaps are "
            "expected to be non-negative, e.g. normalized to [0, 1]."
        )
    return heatmaps


def _boxes(heatmaps, threshold):
    """Boxes and scores of a validated, non-negative (n, H, W) batch."""
    n = heatmaps.shape[0]
    flat = heatmaps.reshape(n, -1)
    peak = flat.max(axis=1)
    # `>=` with threshold <= 1 always keeps the maximum, and a constant map (zeros included)
    # keeps every pixel, so each image has at least one component.
    mask = heatmaps >= threshold * peak[:, None, None]
    labels, n_labels = ndimage.label(mask, structure=_BATCH_STRUCTURE)
    flat_labels = labels.reshape(n, -1)
    sizes = np.bincount(flat_labels.ravel(), minlength=n_labels + 1)
    sums = np.bincount(flat_labels.ravel(), weights=flat.ravel(), minlength=n_labels + 1)
    # A component never spans two images, so scattering image indices by label is exact.
    image_of = np.zeros(n_labels + 1, dtype=np.intp)
    image_of[flat_labels] = np.arange(n)[:, np.newaxis]
    candidates = np.arange(1, n_labels + 1)
    image_of, sizes, sums = image_of[1:], sizes[1:], sums[1:]
    holds_argmax = candidates == flat_labels[np.arange(n), flat.argmax(axis=1)][image_of]

    # Largest component per image; ties go to the one holding the argmax, then the first.
    order = np.lexsort((candidates, ~holds_argmax, -sizes, image_of))
    chosen = order[np.r_[True, image_of[order][1:] != image_of[order][:-1]]]
    component = labels == candidates[chosen][:, np.newaxis, np.newaxis]
    rows, cols = component.any(axis=2), component.any(axis=1)
    boxes = np.column_stack(
        [
            cols.argmax(axis=1),
            rows.argmax(axis=1),
            cols.shape[1] - cols[:, ::-1].argmax(axis=1),
            rows.shape[1] - rows[:, ::-1].argmax(axis=1),
        ]
    ).astype(np.float64)
    return boxes, sums[chosen] / sizes[chosen]


@validate_params(
    {"heatmaps": ["array-like"], "threshold": _THRESHOLD_CONSTRAINTS},
    prefer_skip_nested_validation=True,
)
def heatmaps_to_boxes(
    heatmaps: np.ndarray, threshold: float | str = 0.2
) -> tuple[np.ndarray, np.ndarray]:
    """Box the largest thresholded component of each heatmap in a batch.

    Parameters
    ----------
    heatmaps : array-like of shape (n_images, height, width)
        Non-negative heatmaps, typically normalized to [0, 1].
    threshold : float in [0, 1] or {"cam", "gradcam"}, default=0.2
        Pixels with a value of at least ``threshold * heatmap.max()`` are kept. ``"cam"`` is 0.2
        (Zhou et al., CAM) and ``"gradcam"`` is 0.15 (Selvaraju et al., Grad-CAM).

    Returns
    -------
    boxes : ndarray of shape (n_images, 4)
        ``[x0, y0, x1, y1]`` in pixel-edge coordinates (``x1 - x0`` is the width).
    scores : ndarray of shape (n_images,)
        Mean heatmap value over the boxed component.

    Examples
    --------
    >>> import numpy as np
    >>> from sklearn_caf.boxes import heatmaps_to_boxes
    >>> maps = np.zeros((2, 4, 5))
    >>> maps[0, 1:3, 2:4] = 1.0
    >>> maps[1, 3, 0] = 0.5
    >>> boxes, scores = heatmaps_to_boxes(maps)
    >>> boxes
    array([[2., 1., 4., 3.],
           [0., 3., 1., 4.]])
    >>> scores
    array([1. , 0.5])
    """
    heatmaps = _check_heatmaps(heatmaps, ndim=3, name="heatmaps")
    return _boxes(heatmaps, _resolve_threshold(threshold))


@validate_params(
    {"heatmap": ["array-like"], "threshold": _THRESHOLD_CONSTRAINTS},
    prefer_skip_nested_validation=True,
)
def heatmap_to_box(heatmap: np.ndarray, threshold: float | str = 0.2) -> tuple[np.ndarray, float]:
    """Box the largest thresholded component of one heatmap.

    Pixels with a value of at least ``threshold * heatmap.max()`` are kept (the rule of CAM);
    the largest 8-connected component of them is boxed. Ties in size go to the component that
    holds the heatmap's maximum, then to the first one in row-major order. A constant heatmap,
    all zeros included, keeps every pixel and gives the full image box.

    Parameters
    ----------
    heatmap : array-like of shape (height, width)
        A non-negative heatmap, typically normalized to [0, 1].
    threshold : float in [0, 1] or {"cam", "gradcam"}, default=0.2
        Fraction of the maximum a pixel must reach. ``"cam"`` is 0.2 (Zhou et al.) and
        ``"gradcam"`` is 0.15 (Selvaraju et al.).

    Returns
    -------
    box : ndarray of shape (4,)
        ``[x0, y0, x1, y1]`` in pixel-edge coordinates: first column, first row, last column
        plus one, last row plus one.
    score : float
        Mean heatmap value over the boxed component.

    See Also
    --------
    heatmaps_to_boxes : The same for a batch of heatmaps.
    HeatmapBoxes : The same as a scikit-learn transformer.

    Examples
    --------
    >>> import numpy as np
    >>> from sklearn_caf.boxes import heatmap_to_box
    >>> heatmap = np.zeros((6, 8))
    >>> heatmap[3, 5] = 1.0
    >>> box, score = heatmap_to_box(heatmap)
    >>> box
    array([5., 3., 6., 4.])
    >>> score
    1.0
    """
    heatmap = _check_heatmaps(heatmap, ndim=2, name="heatmap")
    boxes, scores = _boxes(heatmap[np.newaxis], _resolve_threshold(threshold))
    return boxes[0], float(scores[0])


class HeatmapBoxes(TransformerMixin, BaseEstimator):
    """Turn heatmaps into bounding boxes, one row per image.

    Each heatmap is thresholded at ``threshold`` times its maximum, and the largest 8-connected
    component of the kept pixels is boxed (Zhou et al., CAM). See :func:`heatmap_to_box` for
    the exact rule.

    Parameters
    ----------
    threshold : float in [0, 1] or {"cam", "gradcam"}, default=0.2
        Fraction of each heatmap's maximum a pixel must reach to be kept. ``"cam"`` is 0.2, the
        value of Zhou et al.; ``"gradcam"`` is 0.15, the value of the Grad-CAM authors.

    Attributes
    ----------
    heatmap_shape_ : tuple of int
        Shape of one sample seen in :meth:`fit`: ``(height, width)`` for one heatmap per image,
        ``(n_targets, height, width)`` for several (e.g. one per top-k class).
    n_targets_ : int
        Number of heatmaps per image: 1 for 3-D input, ``k`` for input of shape
        ``(n, k, height, width)``.

    See Also
    --------
    heatmap_to_box : The functional form, for one heatmap.
    sklearn_caf.metrics.localization_accuracy : Score the boxes against ground truth.

    Notes
    -----
    Nothing is learned from the data: :meth:`fit` only records the layout of the input so that
    :meth:`transform` can check it and name its output columns. The spatial size may differ
    between :meth:`fit` and :meth:`transform`, since boxes are computed per image.

    Examples
    --------
    >>> import numpy as np
    >>> from sklearn_caf.boxes import HeatmapBoxes
    >>> heatmaps = np.zeros((1, 4, 6))
    >>> heatmaps[0, 1:3, 2:5] = 1.0
    >>> HeatmapBoxes(threshold="cam").fit_transform(heatmaps)
    array([[2., 1., 5., 3., 1.]])
    """

    _parameter_constraints: ClassVar[dict] = {"threshold": _THRESHOLD_CONSTRAINTS}

    def __init__(self, *, threshold=0.2):
        self.threshold = threshold

    @fit_context(prefer_skip_nested_validation=True)
    def fit(self, X, y=None):
        """Check the heatmaps and record their layout.

        Parameters
        ----------
        X : array-like of shape (n_images, height, width) or (n_images, n_targets, height, width)
            Non-negative heatmaps.
        y : None
            Ignored.

        Returns
        -------
        self : object
            The fitted transformer.
        """
        X = _check_heatmaps(X, ndim=(3, 4), name="X")
        self.heatmap_shape_ = X.shape[1:]
        self.n_targets_ = X.shape[1] if X.ndim == 4 else 1
        return self

    def transform(self, X):
        """Box each heatmap.

        Parameters
        ----------
        X : array-like of shape (n_images, height, width) or (n_images, n_targets, height, width)
            Non-negative heatmaps, with the same rank (and ``n_targets``) as in :meth:`fit`.

        Returns
        -------
        X_out : ndarray of shape (n_images, 5) or (n_images, 5 * n_targets)
            Columns ``x0, y0, x1, y1, score`` per heatmap, grouped by target.
        """
        check_is_fitted(self)
        X = _check_heatmaps(X, ndim=(3, 4), name="X")
        if X.ndim != len(self.heatmap_shape_) + 1:
            raise ValueError(
                f"X must be {len(self.heatmap_shape_) + 1}-D as in fit "
                f"(samples of shape {self.heatmap_shape_}); got shape {X.shape}."
            )
        if X.ndim == 4 and X.shape[1] != self.n_targets_:
            raise ValueError(
                f"X has {X.shape[1]} heatmaps per image (axis 1) but {self.n_targets_} "
                "were seen in fit."
            )
        n = X.shape[0]
        boxes, scores = _boxes(X.reshape(-1, *X.shape[-2:]), _resolve_threshold(self.threshold))
        return np.column_stack([boxes, scores]).reshape(n, -1)

    def get_feature_names_out(self, input_features=None):
        """Names of the output columns.

        Parameters
        ----------
        input_features : None
            Ignored: the input is images, not named features.

        Returns
        -------
        feature_names_out : ndarray of str objects
            ``x0, y0, x1, y1, score`` for 3-D input; ``x0_0, ..., score_0, x0_1, ...`` (one
            group per target) for 4-D input.
        """
        check_is_fitted(self)
        if len(self.heatmap_shape_) == 2:
            return np.asarray(_BOX_COLUMNS, dtype=object)
        return np.asarray(
            [f"{col}_{t}" for t in range(self.n_targets_) for col in _BOX_COLUMNS], dtype=object
        )

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.input_tags.two_d_array = False
        tags.input_tags.three_d_array = True
        tags.input_tags.positive_only = True
        return tags
