"""Checking the arguments of a run, planning its chunks and dispatching them through joblib."""

from __future__ import annotations

import contextlib
import json
import os
from collections.abc import Mapping
from numbers import Integral, Real
from typing import Any

import numpy as np
from sklearn.base import clone

from .._explainers import BaseExplainer
from ..metrics import DEFAULT_THRESHOLDS
from ._chunks import _chunk_data, _evaluate_chunk
from ._config import _run_config
from ._faithfulness import (
    DEFAULT_BLUR_SIGMA,
    check_faithfulness_options,
    check_protocol_options,
)
from ._report import LocalizationReport, _pandas, _report
from ._store import _parquet, _prepare_out, _run_lock, _write_part, load_report, run_identity

# The box protocols of the IoU curves (sklearn_caf.metrics.box_iou_curves).
_BOX_PROTOCOLS = ("wsol", "sklearn-caf")
_FAITHFULNESS_KEYS = ("n_steps", "step", "protocol", "baseline", "blur_sigma", "batch_size")

_TASKS = ("classification", "retrieval")


# -- checking the arguments ------------------------------------------------------------------
def _check_explainers(explainers: Any) -> dict:
    if not isinstance(explainers, Mapping) or not explainers:
        raise ValueError(
            "explainers must be a non-empty dict mapping method names to explainers, e.g. "
            f"{{'gradcam': GradCAMExplainer(model=net, layer='layer4')}}; got "
            f"{_describe(explainers)}."
        )
    for name, explainer in explainers.items():
        if not isinstance(name, str) or not name:
            raise ValueError(f"explainers' keys must be non-empty strings; got {name!r}.")
        if not isinstance(explainer, BaseExplainer):
            raise TypeError(
                f"explainers[{name!r}] must be an explainer (L2CAFExplainer, "
                f"GradCAMExplainer...); got {type(explainer).__name__}."
            )
    return dict(explainers)


def _describe(value: Any) -> str:
    """A short description of ``value`` for an error: its type and size, never the repr of
    a model (hundreds of lines)."""
    if isinstance(value, (list, tuple)):
        kinds = sorted({type(v).__name__ for v in value})
        return f"a {type(value).__name__} of {len(value)} ({', '.join(kinds) or 'nothing'})"
    if isinstance(value, Mapping):
        return "an empty dict"
    return f"a {type(value).__name__}"


def _check_dataset(dataset: Any) -> int:
    missing = [
        a for a in ("load", "fingerprint", "ids", "labels", "boxes") if not hasattr(dataset, a)
    ]
    if missing:
        raise TypeError(
            "dataset must be an ImageBoxDataset (sklearn_caf.datasets) or offer the same "
            f"interface; {type(dataset).__name__} has no {', '.join(missing)}."
        )
    n = len(dataset)
    if n == 0:
        raise ValueError("dataset is empty; expected at least one image.")
    return n


def _check_thresholds(thresholds: Any) -> np.ndarray:
    if thresholds is None:
        return np.asarray(DEFAULT_THRESHOLDS, dtype=np.float64)
    values = np.asarray(thresholds, dtype=np.float64)
    if values.ndim != 1 or values.size == 0:
        raise ValueError(f"thresholds must be a non-empty 1-D sequence; got shape {values.shape}.")
    if not np.isfinite(values).all() or values.min() < 0 or values.max() > 1:
        raise ValueError("thresholds must lie in [0, 1].")
    if np.any(np.diff(values) <= 0):
        raise ValueError("thresholds must be strictly increasing.")
    return values


def _is_fitted(explainer: Any) -> bool:
    return hasattr(explainer, "bound_")


def _fit_explainers(explainers: dict, dataset: Any, task: str) -> dict:
    """Fitted explainers: fitted ones as given, unfitted ones cloned and fitted on one image."""

    fitted, sample = {}, None
    for name, explainer in explainers.items():
        if not _is_fitted(explainer):
            if sample is None:
                sample = dataset.load(np.array([0]))[0]
            explainer = clone(explainer).fit(sample)
        if task == "retrieval" and explainer.explains_classes:
            raise ValueError(
                f"explainers[{name!r}] explains classes, but task='retrieval' needs maps of the "
                "whole embedding: L2CAFExplainer(objective='class-oblivious') or "
                "GradCAMExplainer(objective='embedding')."
            )
        if task == "classification":
            labels = np.asarray(dataset.labels)
            if labels.min() < 0 or labels.max() >= explainer.n_outputs_:
                raise ValueError(
                    f"the dataset's labels span [{labels.min()}, {labels.max()}] but "
                    f"explainers[{name!r}]'s model has {explainer.n_outputs_} outputs; the "
                    "labels must be indices of the model's classes."
                )
        fitted[name] = explainer
    return fitted


def _check_faithfulness(faithfulness: Any, task: str) -> dict | None:
    """``None`` (off) or the options of :func:`deletion_insertion`, defaults filled in."""
    if faithfulness is False or faithfulness is None:
        return None
    if faithfulness is True:
        options: dict = {}
    elif isinstance(faithfulness, Mapping):
        options = dict(faithfulness)
        unknown = sorted(set(map(str, options)) - set(_FAITHFULNESS_KEYS))
        if unknown:
            raise ValueError(
                f"faithfulness got unknown options {unknown}; it takes True or a dict of "
                f"{', '.join(_FAITHFULNESS_KEYS)}."
            )
    else:
        raise ValueError(
            "faithfulness must be True, False or a dict of deletion_insertion's options "
            f"({', '.join(_FAITHFULNESS_KEYS)}); got {faithfulness!r}."
        )
    if task != "classification":
        raise ValueError(
            "faithfulness (deletion/insertion) follows the probability of a class; it needs "
            "task='classification', not a retrieval network's embedding."
        )
    n_steps, step, protocol = check_protocol_options(
        options.get("n_steps"), options.get("step"), options.get("protocol", "sklearn-caf")
    )
    n_steps, baseline, blur_sigma, batch_size = check_faithfulness_options(
        n_steps,
        options.get("baseline", 0.0),
        options.get("blur_sigma", DEFAULT_BLUR_SIGMA),
        options.get("batch_size"),
    )
    return {
        "n_steps": n_steps,
        "step": step,
        "protocol": protocol,
        "baseline": baseline,
        "blur_sigma": blur_sigma,
        "batch_size": batch_size,
    }


# -- the public functions --------------------------------------------------------------------
def _progress_bar(total: int, enabled: bool, initial: int):
    if not enabled:
        return None
    try:
        from tqdm.auto import tqdm
    except ImportError:  # the bar is cosmetic
        return None
    return tqdm(total=total, initial=initial, unit="image", desc="evaluating")


def evaluate_localization(
    explainers: Mapping[str, Any],
    dataset: Any,
    *,
    task: str = "classification",
    box_threshold: float = 0.2,
    thresholds: Any = None,
    batch_size: int = 64,
    out: str | os.PathLike | None = None,
    n_jobs: int | None = None,
    progress: bool = True,
    faithfulness: bool | Mapping[str, Any] = False,
    protocol: str = "wsol",
) -> LocalizationReport:
    """Explain every image of a dataset with each method and score how well the maps localize.

    The dataset is processed in chunks of ``batch_size`` images; each chunk's heatmaps are
    turned into rows (boxes, IoUs, correctness flags, IoU-vs-threshold curves) and dropped,
    so memory does not grow with the dataset's images. See :mod:`sklearn_caf.evaluation` for
    the definitions of the metrics.

    Parameters
    ----------
    explainers : dict of str to explainer
        Method name -> explainer (:class:`~sklearn_caf.L2CAFExplainer`,
        :class:`~sklearn_caf.GradCAMExplainer`, fitted or not). An unfitted explainer is
        cloned and fitted on the dataset's first image; the objects passed are not changed.
        Class explainers explain their ``top_k`` predicted classes (the top-1 gives
        ``top1_loc``) and, where it is not among them, the true class (``gt_known_loc``,
        ``top5_loc``).
    dataset : ImageBoxDataset
        Images in the models' layout with labels and ground-truth boxes
        (:class:`~sklearn_caf.datasets.ImageBoxDataset`, from files or from
        :func:`~sklearn_caf.datasets.make_wsol_dataset`).
    task : {"classification", "retrieval"}, default="classification"
        Classification networks (logits; top-1/top-5/GT-known localization) or retrieval
        networks (embeddings; Recall@1, NMI, retrieval localization). Retrieval needs
        explainers of the whole output (class-oblivious L2-CAF, Grad-CAM of the embedding).
    box_threshold : float in [0, 1], default=0.2
        Each map's box keeps the pixels at ``box_threshold`` of its maximum or more and
        boxes the largest 8-connected component (CAM's rule, as
        :class:`~sklearn_caf.HeatmapBoxes`).
    thresholds : array-like of float, default=None
        Increasing thresholds in [0, 1] of the IoU curves and MaxBoxAcc;
        ``None`` is ``np.arange(0, 1, 0.01)`` (wsolevaluation).
    batch_size : int, default=64
        Images per chunk: the unit of work, of parallelism and of resuming.
    out : str or path, default=None
        Directory for the per-image Parquet part files (``part-000000.parquet``...) and
        ``manifest.json``; each part has a checksum file ``part-000000.parquet.sha256``.
        If it holds a run with the same configuration, the run resumes: finished chunks
        are skipped. A different configuration is refused. A part that fails verification
        (corrupt, a copy of another chunk's or another run's, outside the plan) is moved
        to ``out/rejected/`` with a warning and its chunk computed again.
    n_jobs : int, default=None
        Chunks run in parallel through joblib; ``None`` means 1 unless inside a
        :func:`joblib.parallel_backend` context (``"dask"`` runs them on a Dask cluster).
    progress : bool, default=True
        Show a progress bar (when tqdm is installed).
    faithfulness : bool or dict, default=False
        Also score each top-1 map by deletion and insertion (:func:`deletion_insertion`;
        classification only): the columns ``deletion_auc``, ``insertion_auc``,
        ``deletion_curve`` and ``insertion_curve`` in ``per_image`` and the mean AUCs in
        ``summary``. A dict sets :func:`deletion_insertion`'s options ``n_steps`` or
        ``step``, ``protocol`` (``"rise"`` for RISE's own numbers), ``baseline``,
        ``blur_sigma`` and ``batch_size`` (``None``: the explainer's). Each top-1 map costs
        ``2 * (n_steps + 1)`` forward passes. The options are part of the
        run's configuration: a run is resumed only with the same ones.
    protocol : {"wsol", "sklearn-caf"}, default="wsol"
        How the IoU curves, ``max_box_acc`` and ``max_box_acc_v2`` turn a thresholded map
        into boxes (:func:`~sklearn_caf.metrics.box_iou_curves`; :ref:`protocols`):
        ``"wsol"`` reproduces wsolevaluation's ``BoxEvaluator`` exactly (the numbers of
        published WSOL tables), ``"sklearn-caf"`` uses the library's tight pixel boxes. It
        is recorded in ``report.config["protocol"]`` (the manifest), in the ``protocol``
        column of ``per_image`` and in ``summary.attrs["protocol"]``, and is part of the
        run's configuration. ``top1_loc``, ``top5_loc`` and ``gt_known_loc`` use CAM's box
        (``box_threshold``) under either protocol. A dataset with masks
        (``has_masks``, ``load_masks``) adds ``pxap`` to the summary: PxAP of the true
        class's maps as wsolevaluation's ``MaskEvaluator`` (:ref:`protocols`), on the
        thresholds below 1; the masks must have the heatmaps' size.

    Returns
    -------
    report : LocalizationReport
        ``report.per_image`` and ``report.summary``.

    Raises
    ------
    ValueError
        On bad arguments, or when ``out`` holds a run with another configuration.

    See Also
    --------
    load_report : Read a run written with ``out``.
    sklearn_caf.metrics.max_box_accuracy : MaxBoxAcc of heatmaps in memory.

    Examples
    --------
    >>> import torch
    >>> from sklearn_caf import GradCAMExplainer
    >>> from sklearn_caf.datasets import make_wsol_dataset
    >>> from sklearn_caf.evaluation import evaluate_localization
    >>> data = make_wsol_dataset(8, random_state=0)
    >>> net = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3, padding=1), torch.nn.ReLU(),
    ...                           torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten(),
    ...                           torch.nn.Linear(4, data.n_classes))
    >>> report = evaluate_localization({"gradcam": GradCAMExplainer(model=net, layer="1")},
    ...                                data, progress=False)
    >>> list(report.summary.columns)  # doctest: +NORMALIZE_WHITESPACE
    ['top1_acc', 'top5_acc', 'top1_loc', 'top5_loc', 'gt_known_loc', 'max_box_acc',
     'max_box_acc_v2', 'best_threshold']
    >>> int(report.per_image["image_index"].nunique())
    8
    """
    explainers = _check_explainers(explainers)
    n_images = _check_dataset(dataset)
    if task not in _TASKS:
        raise ValueError(f"task must be 'classification' or 'retrieval'; got {task!r}.")
    if (
        isinstance(box_threshold, bool)
        or not isinstance(box_threshold, Real)
        or not 0 <= box_threshold <= 1
    ):
        raise ValueError(f"box_threshold must be a number in [0, 1]; got {box_threshold!r}.")
    thresholds = _check_thresholds(thresholds)
    if isinstance(batch_size, bool) or not isinstance(batch_size, Integral) or batch_size < 1:
        raise ValueError(f"batch_size must be a positive integer; got {batch_size!r}.")
    if n_jobs is not None and (isinstance(n_jobs, bool) or not isinstance(n_jobs, Integral)):
        raise ValueError(f"n_jobs must be an integer or None; got {n_jobs!r}.")
    faithfulness = _check_faithfulness(faithfulness, task)
    if protocol not in _BOX_PROTOCOLS:
        raise ValueError(f"protocol must be one of {_BOX_PROTOCOLS}; got {protocol!r}.")
    _pandas()
    _parquet()

    explainers = _fit_explainers(explainers, dataset, task)
    config = _run_config(
        explainers,
        dataset,
        n_images,
        task,
        box_threshold,
        thresholds,
        int(batch_size),
        faithfulness,
        protocol,
    )
    with contextlib.ExitStack() as stack:
        out_dir, finished = None, {}
        if out is not None:
            stack.enter_context(_run_lock(out))  # held until the report is read back
            out_dir, finished = _prepare_out(out, config)
        tables = _dispatch(
            explainers,
            dataset,
            config,
            finished,
            out_dir,
            n_jobs,
            progress,
            task,
            float(box_threshold),
            thresholds,
            faithfulness,
            protocol,
        )
        if out_dir is not None:
            return load_report(out_dir)
    return _report([tables[c] for c in sorted(tables)], config, None)


def _dispatch(
    explainers,
    dataset,
    config,
    finished,
    out_dir,
    n_jobs,
    progress,
    task,
    box_threshold,
    thresholds,
    faithfulness,
    protocol,
):
    """Run the pending chunks through joblib; write each as a part (``out_dir``) or return
    the tables by chunk (``out_dir=None``)."""
    import joblib

    batch_size, n_images = config["batch_size"], config["n_images"]
    run_id = run_identity(json.loads(json.dumps(config)))
    chunks = [
        (c, np.arange(c * batch_size, min((c + 1) * batch_size, n_images)))
        for c in range(config["n_chunks"])
    ]
    pending = [(c, idx) for c, idx in chunks if c not in finished]
    done_images = sum(len(idx) for c, idx in chunks if c in finished)
    bar = _progress_bar(n_images, progress, done_images)
    tables: dict[int, Any] = {}
    try:
        results = joblib.Parallel(n_jobs=n_jobs, return_as="generator_unordered")(
            joblib.delayed(_evaluate_chunk)(
                c,
                explainers,
                *_chunk_data(dataset, idx),
                task,
                box_threshold,
                thresholds,
                faithfulness,
                protocol,
            )
            for c, idx in pending
        )
        for chunk, table, n_done in results:
            if out_dir is not None:
                _write_part(out_dir, chunk, table, run_id)
            else:
                tables[chunk] = table
            if bar is not None:
                bar.update(n_done)
    finally:
        if bar is not None:
            bar.close()
    return tables
