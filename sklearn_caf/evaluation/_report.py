"""A run's report: :class:`LocalizationReport`, and the summary computed from the rows alone."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from .._utils import import_optional
from ..metrics import (
    IOU_THRESHOLD,
    V2_IOU_THRESHOLDS,
    clustering_nmi,
    max_box_accuracy_from_curves,
    pixel_average_precision_from_histograms,
)

# Summary columns of a classification run, in order.
CLASSIFICATION_SUMMARY = (
    "top1_acc",
    "top5_acc",
    "top1_loc",
    "top5_loc",
    "gt_known_loc",
    "max_box_acc",
    "max_box_acc_v2",
    "best_threshold",
)

# Summary columns of a retrieval run, in order.
RETRIEVAL_SUMMARY = (
    "recall_at_1",
    "nmi",
    "retrieval_loc",
    "gt_known_loc",
    "max_box_acc",
    "max_box_acc_v2",
)


# Summary columns added by ``faithfulness=True``: means over the top-1 rows.
FAITHFULNESS_SUMMARY = ("deletion_auc", "insertion_auc")


def _pandas():
    return import_optional("pandas", needed_by="evaluation tables")


# -- the report ------------------------------------------------------------------------------
@dataclass(repr=False)
class LocalizationReport:
    """The result of :func:`evaluate_localization` or :func:`load_report`.

    Attributes
    ----------
    per_image : pandas.DataFrame
        One row per (image, method, explained class). Columns, in order:
        ``image_index`` (position in the dataset), ``image_id``, ``method``, ``true_label``,
        then for classification ``pred_top5`` (the top-5 predicted classes, best first) and for
        retrieval ``nn_label`` (the nearest neighbour's label); ``explained_class`` (-1 for a
        map of the whole output); ``explains_top1`` and ``explains_true`` (whether the map is
        that of the top-1 predicted class / of the true class); the box ``x0, y0, x1, y1`` at
        ``box_threshold`` in the image's own pixels (pixel edges of the original image, as
        the dataset's ``original_sizes``; for images given as arrays, the arrays' pixels),
        the same box ``model_x0, model_y0, model_x1, model_y1`` in the frame of the
        model-ready (resized) image the map was made on, ``true_boxes`` (the image's
        ground-truth boxes in its own pixels, a list of ``[x0, y0, x1, y1]``; ``np.stack``
        gives ``(m, 4)``) and ``iou`` (best over the ground-truth boxes, computed in the
        model's frame; a resize scales both boxes alike, so it is the IoU in the image's
        own frame too); the flags ``loc_correct`` (``iou >= 0.5``), then
        ``top1_correct``, ``top5_correct``, ``top1_loc``, ``top5_loc`` (classification) or
        ``retrieval_correct``, ``retrieval_loc`` (retrieval), and ``gt_known_loc``;
        ``iou_curve_v1`` and ``iou_curve_v2``, arrays of the IoU at each of ``thresholds``
        of the largest contour's box and of the best contour's box, and ``protocol``, the
        box protocol that made them (``"wsol"`` or ``"sklearn-caf"``, see
        :func:`~sklearn_caf.metrics.box_iou_curves`); for retrieval,
        ``embedding`` (the model's output, float32). With ``faithfulness``:
        ``deletion_auc`` and ``insertion_auc`` and the curves ``deletion_curve`` and
        ``insertion_curve`` (see :func:`deletion_insertion`), on the rows of the top-1
        predicted class's map (``explains_top1``); NaN and null on the other rows. For a
        dataset with masks (``ImageBoxDataset.from_arrays(..., masks=)``):
        ``pxap_true_hist`` and ``pxap_false_hist``, the counts of
        :func:`~sklearn_caf.metrics.pixel_score_histograms` on the run's thresholds below 1.
    summary : pandas.DataFrame
        One row per method (the index), computed from ``per_image`` alone. Classification:
        ``top1_acc, top5_acc, top1_loc, top5_loc, gt_known_loc, max_box_acc,
        max_box_acc_v2, best_threshold``; retrieval: ``recall_at_1, nmi, retrieval_loc,
        gt_known_loc, max_box_acc, max_box_acc_v2``. With ``faithfulness``, also
        ``deletion_auc`` and ``insertion_auc``, the means over the top-1 rows. With masks,
        also ``pxap``: PxAP of the true class's maps, their counts summed over the set as
        wsolevaluation's ``MaskEvaluator`` does
        (:func:`~sklearn_caf.metrics.pixel_average_precision`). See
        :mod:`sklearn_caf.evaluation` for the definitions. ``summary.attrs["protocol"]``
        names the box protocol of ``max_box_acc`` and ``max_box_acc_v2``.
    config : dict
        The run's configuration, as stored in the manifest.
    thresholds : ndarray
        The thresholds of the curves.
    n_images : int
        Images evaluated (fewer than the dataset's size in a partial run).
    complete : bool
        Whether every chunk of the dataset is in the report.
    out : pathlib.Path or None
        The run's directory (its manifest and Parquet parts); ``None`` for a run kept in
        memory (``out=None``).
    """

    per_image: Any
    summary: Any
    config: dict
    thresholds: np.ndarray
    n_images: int
    complete: bool
    out: Path | None = field(default=None)

    @property
    def task(self) -> str:
        """``"classification"`` or ``"retrieval"``."""
        return self.config["task"]

    def __repr__(self) -> str:
        state = "complete" if self.complete else "partial"
        methods = ", ".join(map(str, self.summary.index))
        return (
            f"LocalizationReport({self.task}, {self.n_images} of {self.config['n_images']} "
            f"images, {state}; methods: {methods})"
        )


# -- the summary -----------------------------------------------------------------------------
def _nearest_labels(embeddings: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """The label of each embedding's nearest neighbour by cosine similarity, itself excluded."""
    from sklearn.metrics import pairwise_distances_chunked

    if len(embeddings) < 2:
        return np.full(len(embeddings), -1, dtype=np.int64)
    norms = np.linalg.norm(embeddings, axis=1, keepdims=True)
    unit = embeddings / np.where(norms > 0, norms, 1)
    nearest = np.empty(len(unit), dtype=np.int64)
    start = 0

    def reduce(block, offset):
        block = block.copy()
        block[np.arange(len(block)), offset + np.arange(len(block))] = np.inf
        return np.argmin(block, axis=1)

    for found in pairwise_distances_chunked(unit, reduce_func=reduce, metric="euclidean"):
        nearest[start : start + len(found)] = found
        start += len(found)
    return labels[nearest]


def _add_retrieval_columns(per_image):
    """``nn_label`` and the retrieval flags, which need every evaluated image's embedding."""
    pd = _pandas()
    nn = np.full(len(per_image), -1, dtype=np.int64)
    for _, rows in per_image.groupby("method", sort=False):
        emb = np.stack(rows["embedding"].to_numpy()).astype(np.float64)
        nn[per_image.index.get_indexer(rows.index)] = _nearest_labels(
            emb, rows["true_label"].to_numpy()
        )
    per_image.insert(4, "nn_label", pd.array(nn, dtype="int64"))
    ok = per_image["nn_label"].to_numpy() == per_image["true_label"].to_numpy()
    at = per_image.columns.get_loc("loc_correct") + 1
    per_image.insert(at, "retrieval_correct", ok)
    per_image.insert(at + 1, "retrieval_loc", ok & per_image["loc_correct"].to_numpy())
    return per_image


def _summary_names(task: str, faithfulness: bool) -> list:
    names = list(CLASSIFICATION_SUMMARY if task == "classification" else RETRIEVAL_SUMMARY)
    return names + list(FAITHFULNESS_SUMMARY) if faithfulness else names


def summarize(per_image, task: str, thresholds: np.ndarray, methods=None):
    """The summary table of a ``per_image`` table (see :class:`LocalizationReport`)."""
    pd = _pandas()
    names = _summary_names(task, "deletion_auc" in per_image.columns)
    if "pxap_true_hist" in per_image.columns:  # a dataset with masks: PxAP of the true maps
        names.append("pxap")
    methods = list(dict.fromkeys(per_image["method"])) if methods is None else list(methods)
    rows = {}
    for method in methods:
        rows_m = per_image[per_image["method"] == method]
        if rows_m.empty:
            continue
        per = rows_m.groupby("image_index", sort=False)
        true_rows = rows_m[rows_m["explains_true"].to_numpy()]
        v1 = max_box_accuracy_from_curves(
            np.stack(true_rows["iou_curve_v1"].to_numpy()),
            thresholds=thresholds,
            iou_thresholds=(IOU_THRESHOLD,),
        )
        v2 = max_box_accuracy_from_curves(
            np.stack(true_rows["iou_curve_v2"].to_numpy()),
            thresholds=thresholds,
            iou_thresholds=V2_IOU_THRESHOLDS,
        )
        values = {
            "gt_known_loc": per["gt_known_loc"].any().mean(),
            "max_box_acc": v1.score,
            "max_box_acc_v2": v2.score,
        }
        if task == "classification":
            values.update(
                top1_acc=per["top1_correct"].any().mean(),
                top5_acc=per["top5_correct"].any().mean(),
                top1_loc=per["top1_loc"].any().mean(),
                top5_loc=per["top5_loc"].any().mean(),
                best_threshold=float(np.asarray(v1.best_thresholds).ravel()[0]),
            )
        else:
            emb = np.stack(true_rows["embedding"].to_numpy()).astype(np.float64)
            labels = true_rows["true_label"].to_numpy()
            n_labels = len(np.unique(labels))
            values.update(
                recall_at_1=per["retrieval_correct"].any().mean(),
                nmi=clustering_nmi(emb, labels, random_state=0)
                if 1 < n_labels < len(labels)
                else float("nan"),
                retrieval_loc=per["retrieval_loc"].any().mean(),
            )
        if "pxap" in names:
            # wsolevaluation's MaskEvaluator: the counts of the true class's maps, summed.
            values["pxap"] = pixel_average_precision_from_histograms(
                np.stack(true_rows["pxap_true_hist"].to_numpy()),
                np.stack(true_rows["pxap_false_hist"].to_numpy()),
            )
        if "deletion_auc" in rows_m.columns:
            # Only the top-1 rows have the AUCs (NaN elsewhere): one value per image.
            top1_rows = rows_m[rows_m["explains_top1"].to_numpy()]
            for name in FAITHFULNESS_SUMMARY:
                values[name] = top1_rows[name].to_numpy(dtype=np.float64).mean()
        rows[method] = {k: float(values[k]) for k in names}
    summary = pd.DataFrame.from_dict(rows, orient="index", columns=names, dtype=float)
    summary.index.name = "method"
    # Which box protocol produced max_box_acc and max_box_acc_v2 (runs made before the
    # protocol was recorded used the library's own boxes).
    protocols = (
        sorted(set(per_image["protocol"])) if "protocol" in per_image.columns else ["sklearn-caf"]
    )
    summary.attrs["protocol"] = protocols[0] if len(protocols) == 1 else protocols
    return summary


def _empty_table(task: str):
    pd = _pandas()
    return pd.DataFrame({"image_index": pd.Series(dtype="int64"), "method": pd.Series(dtype=str)})


def _report(tables: list, config: dict, out: Path | None, complete: bool | None = None):
    pa = import_optional("pyarrow", needed_by="evaluation tables")
    task, thresholds = config["task"], np.asarray(config["thresholds"])
    if tables:
        per_image = pa.concat_tables(tables).to_pandas()
    else:
        per_image = _empty_table(task)
    per_image = per_image.reset_index(drop=True)
    if task == "retrieval" and len(per_image):
        per_image = _add_retrieval_columns(per_image)
    n_done = int(per_image["image_index"].nunique()) if len(per_image) else 0
    summary = (
        summarize(per_image, task, thresholds, config["methods"])
        if len(per_image)
        else _pandas().DataFrame(
            columns=_summary_names(task, config.get("faithfulness") is not None)
        )
    )
    summary.attrs["protocol"] = config.get("protocol", "sklearn-caf")
    return LocalizationReport(
        per_image=per_image,
        summary=summary,
        config=config,
        thresholds=thresholds,
        n_images=n_done,
        complete=len(tables) == config["n_chunks"] if complete is None else complete,
        out=out,
    )
