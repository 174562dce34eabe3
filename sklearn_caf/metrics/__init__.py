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

PxAP (:func:`pixel_average_precision`, :func:`pixel_precision_recall_curve`) scores heatmaps
against pixel masks, as wsolevaluation's ``MaskEvaluator`` (OpenImages30k).

:func:`attention_sparsity` scores how focused attention maps are (BR-NPA's sparsity).
"""

from . import _boxes, _max_box_acc
from ._attention import attention_sparsity
from ._boxes import (
    best_iou,
    box_iou,
    box_iou_matrix,
    localization_accuracy,
    localization_correct,
)
from ._max_box_acc import (
    MaxBoxAccuracy,
    box_iou_curve_pair,
    box_iou_curves,
    max_box_accuracy,
    max_box_accuracy_from_curves,
)
from ._pxap import (
    pixel_average_precision,
    pixel_average_precision_from_histograms,
    pixel_precision_recall_curve,
    pixel_score_histograms,
)
from ._retrieval import clustering_nmi, recall_at_k

#: The threshold grid of MaxBoxAcc, ``np.arange(0, 1, 0.01)`` (as in Choe et al.).
DEFAULT_THRESHOLDS = _max_box_acc.DEFAULT_THRESHOLDS

#: The IoU thresholds averaged by MaxBoxAcc v2 (wsolevaluation).
V2_IOU_THRESHOLDS = _max_box_acc.V2_IOU_THRESHOLDS

#: A box is correct when its IoU with a ground-truth box reaches this (all the papers).
IOU_THRESHOLD = _boxes.IOU_THRESHOLD

__all__ = [
    "DEFAULT_THRESHOLDS",
    "IOU_THRESHOLD",
    "V2_IOU_THRESHOLDS",
    "MaxBoxAccuracy",
    "attention_sparsity",
    "best_iou",
    "box_iou",
    "box_iou_curve_pair",
    "box_iou_curves",
    "box_iou_matrix",
    "clustering_nmi",
    "localization_accuracy",
    "localization_correct",
    "max_box_accuracy",
    "max_box_accuracy_from_curves",
    "pixel_average_precision",
    "pixel_average_precision_from_histograms",
    "pixel_precision_recall_curve",
    "pixel_score_histograms",
    "recall_at_k",
]
