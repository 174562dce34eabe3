"""How well each method localizes, over a whole dataset: per-image tables and the papers' metrics.

:func:`evaluate_localization` explains a dataset chunk by chunk with one or more explainers
and returns a :class:`LocalizationReport`: one row per (image, method, explained class) in
``per_image`` — the box at ``box_threshold``, its IoU, the correctness flags and each map's
IoU at every threshold (the *curves*, from which MaxBoxAcc v1 and v2 are recomputed) — and
the papers' metrics per method in ``summary``. Heatmaps never outlive their chunk.

With ``out=DIR`` every finished chunk is written as a Parquet part file (written under a
temporary name, then renamed: a part exists completely or not at all) next to a manifest of
the run's configuration. Running again with the same ``out`` resumes: finished chunks are
skipped. :func:`load_report` reads a finished or partial run. Chunks run through joblib, so
``n_jobs`` uses local processes and ``with joblib.parallel_backend("dask"):`` a Dask cluster.

Definitions (``iou >= 0.5`` is a correct box; one box per map, the largest component of the
pixels at ``box_threshold`` or more, as in CAM):

- ``top1_loc``: the top-1 predicted class is the true class and its map's box is correct
  (L2-CAF paper, Table 1; wsolevaluation's "top-1 localization").
- ``top5_loc``: the ILSVRC rule the L2-CAF paper follows with its five maps (one per top-5
  prediction): an image counts when one of the five guesses names the true class *and* that
  guess's box is correct. Only the true class's guess can name it, so this is "the true class
  is among the top 5 and its map's box is correct"; a wrong class's map that happens to cover
  the object does not count.
- ``gt_known_loc``: the true class's map's box is correct, whatever the prediction.
- ``max_box_acc``: MaxBoxAcc (Choe et al., CVPR 2020) on the true class's maps: the best
  accuracy over ``thresholds`` of the largest contour's box, at IoU 0.5;
  ``max_box_acc_v2``: every contour's box, averaged over IoU 0.3, 0.5 and 0.7;
  ``best_threshold``: the threshold of ``max_box_acc``. The boxes follow the run's
  ``protocol``: by default wsolevaluation's ``BoxEvaluator`` exactly (``"wsol"``, the
  numbers of published WSOL tables), or the library's tight pixel boxes
  (``"sklearn-caf"``); see :ref:`protocols`.
- ``pxap`` (datasets with masks: ``ImageBoxDataset.from_arrays(..., masks=, ignore=)``):
  PxAP (Choe et al., CVPR 2020) of the true class's maps, the pixel precision-recall curve
  over ``thresholds`` with true and false positives summed over every pixel of the set, as
  wsolevaluation's ``MaskEvaluator`` (:func:`~sklearn_caf.metrics.pixel_average_precision`).
- Retrieval (L2-CAF paper, Table 3): ``recall_at_1`` (nearest neighbour by cosine similarity
  over the evaluated images, the query excluded), ``nmi`` (k-means on the L2-normalized
  embeddings), ``retrieval_loc``: the nearest neighbour has the query's label *and* the box is
  correct.
- Faithfulness (``faithfulness=True``; Petsiuk et al., RISE, BMVC 2018): ``deletion_auc``
  and ``insertion_auc`` of each top-1 map, the areas under the probability of the class as
  its most salient pixels are deleted, or inserted into a blurred copy
  (:func:`deletion_insertion`).

A class-oblivious map (L2-CAF's Eq. 1, Grad-CAM of an embedding) explains the whole output:
its one row serves as the map of the predicted class and of the true class.
"""

from . import _report
from ._config import model_fingerprint
from ._faithfulness import deletion_insertion
from ._report import LocalizationReport
from ._run import evaluate_localization
from ._store import load_report

#: Summary columns of a classification run, in order.
CLASSIFICATION_SUMMARY = _report.CLASSIFICATION_SUMMARY

#: Summary columns of a retrieval run, in order.
RETRIEVAL_SUMMARY = _report.RETRIEVAL_SUMMARY

#: Summary columns added by ``faithfulness=True``: means over the top-1 rows.
FAITHFULNESS_SUMMARY = _report.FAITHFULNESS_SUMMARY

__all__ = [
    "CLASSIFICATION_SUMMARY",
    "FAITHFULNESS_SUMMARY",
    "RETRIEVAL_SUMMARY",
    "LocalizationReport",
    "deletion_insertion",
    "evaluate_localization",
    "load_report",
    "model_fingerprint",
]
