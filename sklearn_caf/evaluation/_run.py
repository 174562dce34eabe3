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
  accuracy over ``thresholds`` of the largest component's box, at IoU 0.5;
  ``max_box_acc_v2``: every component's box, averaged over IoU 0.3, 0.5 and 0.7;
  ``best_threshold``: the threshold of ``max_box_acc``.
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

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from numbers import Integral, Real
from pathlib import Path
from typing import Any

import numpy as np

from ._faithfulness import deletion_insertion

__all__ = ["LocalizationReport", "deletion_insertion", "evaluate_localization", "load_report"]

#: A box is correct when its IoU with a ground-truth box reaches this (all the papers).
IOU_THRESHOLD = 0.5
#: The IoU thresholds averaged by MaxBoxAcc v2 (wsolevaluation).
V2_IOU_THRESHOLDS = (0.3, 0.5, 0.7)
#: How many predictions are kept per image for top-5 accuracy and localization.
TOP_K = 5

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
RETRIEVAL_SUMMARY = (
    "recall_at_1",
    "nmi",
    "retrieval_loc",
    "gt_known_loc",
    "max_box_acc",
    "max_box_acc_v2",
)
#: Summary columns added by ``faithfulness=True``: means over the top-1 rows.
FAITHFULNESS_SUMMARY = ("deletion_auc", "insertion_auc")
_FAITHFULNESS_KEYS = ("n_steps", "baseline", "blur_sigma", "batch_size")

_MANIFEST = "manifest.json"
_PART_PREFIX = "part-"
_FORMAT_VERSION = 1
_TASKS = ("classification", "retrieval")
# Explainer parameters that do not change the rows: a run started on one device may resume on
# another (the maps then agree to floating-point rounding).
_UNCONFIGURED_PARAMS = ("model", "verbose", "device")

_EVAL_HINT = 'pip install "sklearn-caf[eval]" (pandas and pyarrow)'


def _pandas():
    try:
        import pandas as pd
    except ImportError as exc:
        raise ImportError(f"Evaluation tables need pandas: {_EVAL_HINT}") from exc
    return pd


def _parquet():
    try:
        import pyarrow as pa
        import pyarrow.parquet as pq
    except ImportError as exc:
        raise ImportError(
            f"Evaluation part files are Parquet, which needs pyarrow: {_EVAL_HINT}"
        ) from exc
    return pa, pq


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
        ``box_threshold`` (pixel-edge coordinates) and its ``iou`` (best over the image's
        ground-truth boxes); the flags ``loc_correct`` (``iou >= 0.5``), then
        ``top1_correct``, ``top5_correct``, ``top1_loc``, ``top5_loc`` (classification) or
        ``retrieval_correct``, ``retrieval_loc`` (retrieval), and ``gt_known_loc``;
        ``iou_curve_v1`` and ``iou_curve_v2``, arrays of the IoU at each of ``thresholds``
        of the largest component's box and of the best component's box; for retrieval,
        ``embedding`` (the model's output, float32). With ``faithfulness``:
        ``deletion_auc`` and ``insertion_auc`` and the curves ``deletion_curve`` and
        ``insertion_curve`` (see :func:`deletion_insertion`), on the rows of the top-1
        predicted class's map (``explains_top1``); NaN and null on the other rows.
    summary : pandas.DataFrame
        One row per method (the index), computed from ``per_image`` alone. Classification:
        ``top1_acc, top5_acc, top1_loc, top5_loc, gt_known_loc, max_box_acc,
        max_box_acc_v2, best_threshold``; retrieval: ``recall_at_1, nmi, retrieval_loc,
        gt_known_loc, max_box_acc, max_box_acc_v2``. With ``faithfulness``, also
        ``deletion_auc`` and ``insertion_auc``, the means over the top-1 rows. See
        :mod:`sklearn_caf.evaluation` for the definitions.
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


# -- checking the arguments ------------------------------------------------------------------
def _check_explainers(explainers: Any) -> dict:
    from ._base import BaseExplainer

    if not isinstance(explainers, Mapping) or not explainers:
        raise ValueError(
            "explainers must be a non-empty dict mapping method names to explainers, e.g. "
            f"{{'gradcam': GradCAMExplainer(model=net, layer='layer4')}}; got {explainers!r}."
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
        from .metrics import DEFAULT_THRESHOLDS

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
    from sklearn.base import clone

    fitted, sample = {}, None
    for name, explainer in explainers.items():
        if not _is_fitted(explainer):
            if sample is None:
                sample = dataset.load(np.array([0]))[0]
            explainer = clone(explainer).fit(sample)
        if task == "retrieval" and explainer._uses_targets():
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


# -- the configuration (the manifest) --------------------------------------------------------
def _jsonable(value: Any) -> Any:
    if value is None or isinstance(value, (bool, str)):
        return value
    if isinstance(value, Integral):
        return int(value)
    if isinstance(value, Real):
        return float(value)
    if isinstance(value, np.ndarray):
        digest = hashlib.sha256(np.ascontiguousarray(value).tobytes()).hexdigest()[:16]
        return {"ndarray": list(value.shape), "dtype": str(value.dtype), "sha256": digest}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if isinstance(value, Mapping):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, type) or callable(value):
        return f"{getattr(value, '__module__', '?')}.{getattr(value, '__qualname__', repr(value))}"
    name = getattr(value, "name", None)
    return f"{type(value).__qualname__}({name})" if isinstance(name, str) else repr(value)


def _tensor_bytes(tensor: Any) -> bytes:
    t = tensor.detach().cpu() if hasattr(tensor, "detach") else tensor
    try:
        array = np.asarray(t.numpy() if hasattr(t, "numpy") else t)
    except TypeError:  # bfloat16 and other dtypes NumPy lacks
        array = np.asarray(t.float().numpy())
    return np.ascontiguousarray(array).tobytes()


def model_fingerprint(model: Any) -> dict:
    """A stable description of a model for the manifest: a hash of its weights.

    PyTorch modules hash their ``state_dict`` (names, shapes and values, parameters and
    buffers), Keras models their ``get_weights()``; any other model is described by its class
    and, where it has them, its parameter count only (``"kind": "class"``).

    Parameters
    ----------
    model : object
        A PyTorch module, a Keras model, or any other object.

    Returns
    -------
    fingerprint : dict
        ``"class"`` (the model's qualified class name), ``"kind"`` (``"weights"`` or
        ``"class"``) and, for ``"weights"``, ``"n_values"`` and ``"sha256"`` of the weights.
    """
    cls = f"{type(model).__module__}.{type(model).__qualname__}"
    digest = hashlib.sha256()
    state_dict = getattr(model, "state_dict", None)
    get_weights = getattr(model, "get_weights", None)
    if callable(state_dict):
        n_values = 0
        for name, tensor in state_dict().items():
            digest.update(f"{name}{tuple(tensor.shape)}{tensor.dtype}".encode())
            digest.update(_tensor_bytes(tensor))
            n_values += int(np.prod(tuple(tensor.shape)))
        return {
            "class": cls,
            "kind": "weights",
            "n_values": n_values,
            "sha256": digest.hexdigest(),
        }
    if callable(get_weights):
        n_values = 0
        for w in get_weights():
            w = np.asarray(w)
            digest.update(f"{w.shape}{w.dtype}".encode())
            digest.update(np.ascontiguousarray(w).tobytes())
            n_values += w.size
        return {
            "class": cls,
            "kind": "weights",
            "n_values": n_values,
            "sha256": digest.hexdigest(),
        }
    count = getattr(model, "count_params", None)
    return {"class": cls, "kind": "class", "n_values": int(count()) if callable(count) else None}


def _explainer_config(explainer: Any, models: dict) -> dict:
    params = explainer.get_params(deep=False)
    key = id(explainer.model)
    if key not in models:
        models[key] = model_fingerprint(explainer.model)
    return {
        "class": f"{type(explainer).__module__}.{type(explainer).__qualname__}",
        "params": {
            k: _jsonable(v) for k, v in sorted(params.items()) if k not in _UNCONFIGURED_PARAMS
        },
        "model": models[key],
    }


def _check_faithfulness(faithfulness: Any, task: str) -> dict | None:
    """``None`` (off) or the options of :func:`deletion_insertion`, defaults filled in."""
    from ._faithfulness import (
        DEFAULT_BLUR_SIGMA,
        DEFAULT_N_STEPS,
        check_faithfulness_options,
    )

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
    n_steps, baseline, blur_sigma, batch_size = check_faithfulness_options(
        options.get("n_steps", DEFAULT_N_STEPS),
        options.get("baseline", 0.0),
        options.get("blur_sigma", DEFAULT_BLUR_SIGMA),
        options.get("batch_size"),
    )
    return {
        "n_steps": n_steps,
        "baseline": baseline,
        "blur_sigma": blur_sigma,
        "batch_size": batch_size,
    }


def _run_config(
    explainers, dataset, n_images, task, box_threshold, thresholds, batch_size, faithfulness=None
):
    models: dict = {}
    # batch_size of the faithfulness passes changes the rows only by rounding: not recorded.
    faith = (
        None
        if faithfulness is None
        else {k: _jsonable(v) for k, v in faithfulness.items() if k != "batch_size"}
    )
    return {
        "format": _FORMAT_VERSION,
        "task": task,
        "box_threshold": float(box_threshold),
        "thresholds": [float(t) for t in thresholds],
        "batch_size": int(batch_size),
        "n_images": int(n_images),
        "n_chunks": -(-n_images // batch_size),
        "dataset": {"class": type(dataset).__qualname__, "fingerprint": dataset.fingerprint()},
        "methods": list(explainers),
        "explainers": {name: _explainer_config(e, models) for name, e in explainers.items()},
        "faithfulness": faith,
    }


def _differences(old: Any, new: Any, path: str = "") -> list[str]:
    if isinstance(old, dict) and isinstance(new, dict):
        out = []
        for key in sorted(set(old) | set(new), key=str):
            out += _differences(old.get(key), new.get(key), f"{path}.{key}" if path else key)
        return out
    return [] if old == new else [path or "(all)"]


def _write_atomically(path: Path, write) -> None:
    """Write with ``write(tmp)`` under a temporary name in the same folder, then rename."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}-{uuid.uuid4().hex[:8]}.tmp")
    try:
        write(tmp)
        with open(tmp, "rb") as fh:
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    finally:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()


def _part_path(out: Path, chunk: int) -> Path:
    return out / f"{_PART_PREFIX}{chunk:06d}.parquet"


def _finished_chunks(out: Path) -> dict[int, Path]:
    found = {}
    for path in out.glob(f"{_PART_PREFIX}*.parquet"):
        stem = path.stem[len(_PART_PREFIX) :]
        if stem.isdigit():
            found[int(stem)] = path
    return dict(sorted(found.items()))


def _prepare_out(out: Any, config: dict) -> Path:
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise ValueError(f"out={str(out)!r} exists and is not a directory.")
    out.mkdir(parents=True, exist_ok=True)
    manifest = out / _MANIFEST
    normalized = json.loads(json.dumps(config))
    if manifest.exists():
        try:
            old = json.loads(manifest.read_text())
        except (OSError, ValueError) as exc:
            raise ValueError(f"{manifest} cannot be read as a run manifest: {exc}") from None
        diff = _differences(old, normalized)
        if diff:
            shown = ", ".join(diff[:6]) + (", ..." if len(diff) > 6 else "")
            raise ValueError(
                f"out={str(out)!r} holds a run with a different configuration (differs in: "
                f"{shown}); resume it with the same explainers, dataset and settings, or give "
                "another out directory."
            )
    else:
        if _finished_chunks(out):
            raise ValueError(
                f"out={str(out)!r} holds part files but no {_MANIFEST}; it is not a run this "
                "function can resume. Give an empty or new directory."
            )
        _write_atomically(
            manifest, lambda tmp: tmp.write_text(json.dumps(normalized, indent=2) + "\n")
        )
    # Temporary files of a run killed while writing: never read, safe to remove.
    for stale in out.glob(f".{_PART_PREFIX}*.tmp"):
        with contextlib.suppress(FileNotFoundError):
            stale.unlink()
    return out


# -- one chunk -------------------------------------------------------------------------------
def _prediction_order(outputs: np.ndarray) -> np.ndarray:
    # The order BaseExplainer.explain picks its top_k classes in, so that "top-1" agrees.
    return np.argsort(-outputs, axis=1, kind="stable")


def _faithfulness_rows(explainer, images, pos, cls, top1, heatmaps, explains_top1, options):
    """Deletion/insertion AUCs and curves of the top-1 rows; NaN and None elsewhere."""
    from ._faithfulness import _trapezoid, faithfulness_curves

    n_rows = len(pos)
    del_auc = np.full(n_rows, np.nan)
    ins_auc = np.full(n_rows, np.nan)
    del_curves: list = [None] * n_rows
    ins_curves: list = [None] * n_rows
    rows = np.flatnonzero(explains_top1)
    if rows.size:
        # A map of the whole output (class -1) follows the top-1 predicted class.
        targets = np.where(cls[rows] == -1, top1[rows], cls[rows])
        batch_size = options["batch_size"] or explainer.batch_size
        deletion, insertion, fractions = faithfulness_curves(
            explainer.bound_,
            images[pos[rows]],
            heatmaps[rows],
            targets,
            n_steps=options["n_steps"],
            baseline=options["baseline"],
            blur_sigma=options["blur_sigma"],
            batch_size=batch_size,
        )
        del_auc[rows] = _trapezoid(deletion, fractions)
        ins_auc[rows] = _trapezoid(insertion, fractions)
        for k, row in enumerate(rows):
            del_curves[row] = deletion[k]
            ins_curves[row] = insertion[k]
    return {
        "deletion_auc": del_auc.tolist(),
        "insertion_auc": ins_auc.tolist(),
        "deletion_curve": del_curves,
        "insertion_curve": ins_curves,
    }


def _chunk_rows(
    explainers, dataset, local, indices, task, box_threshold, thresholds, faithfulness=None
):
    """The per-image rows of one chunk, as a dict of columns (the heatmaps die here).

    ``local`` are the chunk's positions in ``dataset`` (a subset of one chunk, or the whole
    dataset), ``indices`` its positions in the evaluated dataset.
    """
    from .boxes import heatmaps_to_boxes
    from .metrics import best_iou

    images, labels, true_boxes = dataset.load(np.asarray(local))
    labels = np.asarray(labels, dtype=np.int64)
    all_ids = dataset.ids
    ids = [str(all_ids[i]) for i in local]
    columns: dict[str, list] = {}

    def add(**values):
        for key, value in values.items():
            columns.setdefault(key, []).extend(value)

    for name, explainer in explainers.items():
        explanation = explainer.explain(images)
        outputs = explanation.outputs
        # (row image position, explained class, heatmap) for every map of this method
        pos, cls, maps = [], [], []
        if explanation.targets is None:  # one map of the whole output per image
            pos = list(range(len(indices)))
            cls = [-1] * len(indices)
            maps = list(explanation.heatmaps[:, 0])
        else:
            targets = explanation.targets
            for i in range(len(indices)):
                for j in range(targets.shape[1]):
                    pos.append(i)
                    cls.append(int(targets[i, j]))
                    maps.append(explanation.heatmaps[i, j])
            missing = np.flatnonzero(~(targets == labels[:, None]).any(axis=1))
            if missing.size:  # the true class's map, for GT-known and top-5 localization
                extra = explainer.explain(images[missing], targets=labels[missing])
                pos += missing.tolist()
                cls += labels[missing].tolist()
                maps += list(extra.heatmaps[:, 0])
        del explanation
        order = np.argsort(np.asarray(pos), kind="stable")  # image by image, rank order
        pos = np.asarray(pos)[order]
        cls = np.asarray(cls, dtype=np.int64)[order]
        heatmaps = np.stack([maps[k] for k in order])
        del maps
        row_boxes = [true_boxes[p] for p in pos]

        boxes, _ = heatmaps_to_boxes(heatmaps, box_threshold)
        iou = best_iou(boxes, row_boxes)
        curves_v1, curves_v2 = _both_iou_curves(heatmaps, row_boxes, thresholds)
        loc = iou >= IOU_THRESHOLD
        true = labels[pos]
        predicted = _prediction_order(outputs)
        top1 = predicted[:, 0][pos]
        whole = cls == -1
        explains_top1 = whole | (cls == top1)
        explains_true = whole | (cls == true)
        faith = (
            None
            if faithfulness is None
            else _faithfulness_rows(
                explainer, images, pos, cls, top1, heatmaps, explains_top1, faithfulness
            )
        )
        del heatmaps
        add(
            image_index=[int(indices[p]) for p in pos],
            image_id=[ids[p] for p in pos],
            method=[name] * len(pos),
            true_label=true.tolist(),
        )
        if task == "classification":
            top5 = predicted[:, :TOP_K][pos]
            top1_ok = top1 == true
            top5_ok = (top5 == true[:, None]).any(axis=1)
            add(
                pred_top5=[row.astype(np.int64) for row in top5],
                explained_class=cls.tolist(),
                explains_top1=explains_top1.tolist(),
                explains_true=explains_true.tolist(),
            )
        else:
            add(
                explained_class=cls.tolist(),
                explains_top1=explains_top1.tolist(),
                explains_true=explains_true.tolist(),
            )
        add(
            x0=boxes[:, 0].tolist(),
            y0=boxes[:, 1].tolist(),
            x1=boxes[:, 2].tolist(),
            y1=boxes[:, 3].tolist(),
            iou=iou.tolist(),
            loc_correct=loc.tolist(),
        )
        if task == "classification":
            add(
                top1_correct=top1_ok.tolist(),
                top5_correct=top5_ok.tolist(),
                top1_loc=(explains_top1 & top1_ok & loc).tolist(),
                top5_loc=(explains_true & top5_ok & loc).tolist(),
            )
        add(
            gt_known_loc=(explains_true & loc).tolist(),
            iou_curve_v1=list(curves_v1),
            iou_curve_v2=list(curves_v2),
        )
        if faith is not None:
            add(**faith)
        if task == "retrieval":
            add(embedding=[outputs[p].astype(np.float32) for p in pos])
    # Image by image, the methods in the order given within an image.
    order = np.argsort(np.asarray(columns["image_index"]), kind="stable")
    return {key: [values[k] for k in order] for key, values in columns.items()}


def _evaluate_chunk(
    chunk, explainers, dataset, local, indices, task, box_threshold, thresholds, faithfulness=None
):
    """A worker's task: ``(chunk, table)`` with the chunk's rows as a pyarrow Table."""
    pa, _ = _parquet()
    columns = _chunk_rows(
        explainers, dataset, local, indices, task, box_threshold, thresholds, faithfulness
    )
    return chunk, pa.table(_arrow_columns(pa, columns)), len(indices)


def _arrow_columns(pa, columns: dict) -> dict:
    out = {}
    for key, values in columns.items():
        if key in ("iou_curve_v1", "iou_curve_v2"):
            out[key] = pa.array(
                [np.asarray(v, dtype=np.float64) for v in values], type=pa.list_(pa.float64())
            )
        elif key in ("deletion_curve", "insertion_curve"):
            out[key] = pa.array(
                [None if v is None else np.asarray(v, dtype=np.float64) for v in values],
                type=pa.list_(pa.float64()),
            )
        elif key in FAITHFULNESS_SUMMARY:
            out[key] = pa.array(values, type=pa.float64())
        elif key == "embedding":
            out[key] = pa.array(values, type=pa.list_(pa.float32()))
        elif key == "pred_top5":
            out[key] = pa.array(values, type=pa.list_(pa.int64()))
        else:
            out[key] = pa.array(values)
    return out


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
    from .metrics import max_box_accuracy_from_curves

    pd = _pandas()
    names = _summary_names(task, "deletion_auc" in per_image.columns)
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
            from .metrics import clustering_nmi

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
        if "deletion_auc" in rows_m.columns:
            # Only the top-1 rows have the AUCs (NaN elsewhere): one value per image.
            top1_rows = rows_m[rows_m["explains_top1"].to_numpy()]
            for name in FAITHFULNESS_SUMMARY:
                values[name] = top1_rows[name].to_numpy(dtype=np.float64).mean()
        rows[method] = {k: float(values[k]) for k in names}
    summary = pd.DataFrame.from_dict(rows, orient="index", columns=names, dtype=float)
    summary.index.name = "method"
    return summary


def _empty_table(task: str):
    pd = _pandas()
    return pd.DataFrame({"image_index": pd.Series(dtype="int64"), "method": pd.Series(dtype=str)})


def _report(tables: list, config: dict, out: Path | None):
    pa, _ = _parquet()
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
    return LocalizationReport(
        per_image=per_image,
        summary=summary,
        config=config,
        thresholds=thresholds,
        n_images=n_done,
        complete=len(tables) == config["n_chunks"],
        out=out,
    )


def _chunk_data(dataset, indices):
    """What a task carries: a subset of one chunk where the dataset offers ``subset``.

    A worker then receives that chunk's paths (or, for arrays, its pixels), not the whole
    dataset; tasks are made one at a time as joblib dispatches them.
    """
    if hasattr(dataset, "subset"):
        return dataset.subset(indices), np.arange(len(indices)), indices
    return dataset, indices, indices


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
        ``manifest.json``. If it holds a run with the same configuration, the run resumes:
        finished chunks are skipped. A different configuration is refused.
    n_jobs : int, default=None
        Chunks run in parallel through joblib; ``None`` means 1 unless inside a
        :func:`joblib.parallel_backend` context (``"dask"`` runs them on a Dask cluster).
    progress : bool, default=True
        Show a progress bar (when tqdm is installed).
    faithfulness : bool or dict, default=False
        Also score each top-1 map by deletion and insertion (:func:`deletion_insertion`;
        classification only): the columns ``deletion_auc``, ``insertion_auc``,
        ``deletion_curve`` and ``insertion_curve`` in ``per_image`` and the mean AUCs in
        ``summary``. A dict sets :func:`deletion_insertion`'s options ``n_steps``,
        ``baseline``, ``blur_sigma`` and ``batch_size`` (``None``: the explainer's). Each
        top-1 map costs ``2 * (n_steps + 1)`` forward passes. The options are part of the
        run's configuration: a run is resumed only with the same ones.

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
    import joblib

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
    )
    out_dir = None if out is None else _prepare_out(out, config)
    finished = _finished_chunks(out_dir) if out_dir is not None else {}
    chunks = [
        (c, np.arange(c * batch_size, min((c + 1) * batch_size, n_images)))
        for c in range(config["n_chunks"])
    ]
    pending = [(c, idx) for c, idx in chunks if c not in finished]
    done_images = sum(len(idx) for c, idx in chunks if c in finished)
    bar = _progress_bar(n_images, progress, done_images)
    tables: dict[int, Any] = {}
    _, pq = _parquet()
    try:
        results = joblib.Parallel(n_jobs=n_jobs, return_as="generator_unordered")(
            joblib.delayed(_evaluate_chunk)(
                c,
                explainers,
                *_chunk_data(dataset, idx),
                task,
                float(box_threshold),
                thresholds,
                faithfulness,
            )
            for c, idx in pending
        )
        for chunk, table, n_done in results:
            if out_dir is not None:
                _write_atomically(
                    _part_path(out_dir, chunk), lambda tmp, t=table: pq.write_table(t, tmp)
                )
            else:
                tables[chunk] = table
            if bar is not None:
                bar.update(n_done)
    finally:
        if bar is not None:
            bar.close()
    if out_dir is not None:
        return load_report(out_dir)
    return _report([tables[c] for c in sorted(tables)], config, None)


def load_report(out: str | os.PathLike) -> LocalizationReport:
    """Read the report of a run written by :func:`evaluate_localization` with ``out``.

    A run still going, or killed, gives a partial report: the chunks finished so far
    (``report.complete`` is False).

    Parameters
    ----------
    out : str or path
        The run's directory.

    Returns
    -------
    report : LocalizationReport
        The per-image rows of every finished chunk, their summary and the run's
        configuration; ``report.complete`` says whether every chunk is there.

    Examples
    --------
    >>> from sklearn_caf.evaluation import load_report
    >>> report = load_report("caf-eval")  # doctest: +SKIP
    >>> report.summary  # doctest: +SKIP
    """
    _, pq = _parquet()
    out = Path(out)
    manifest = out / _MANIFEST
    if not manifest.is_file():
        raise FileNotFoundError(f"{str(out)!r} holds no evaluation run: {_MANIFEST} is missing.")
    config = json.loads(manifest.read_text())
    tables = [pq.read_table(path) for path in _finished_chunks(out).values()]
    return _report(tables, config, out)


def _both_iou_curves(heatmaps, true_boxes, thresholds):
    """``box_iou_curves`` v1 and v2 from one sweep per image (the kernel computes both)."""
    from .metrics import (
        DEFAULT_THRESHOLDS,
        _check_fractions,
        _check_map_batch,
        _check_true_boxes,
        _iou_curve_pair,
    )

    maps = _check_map_batch(heatmaps)
    thresholds = _check_fractions(thresholds, name="thresholds", default=DEFAULT_THRESHOLDS)
    boxes = _check_true_boxes(true_boxes, len(maps), other="heatmaps")
    return _iou_curve_pair(maps, boxes, thresholds, True)
