"""One chunk of a run: its images explained by each method, turned into per-image rows."""

from __future__ import annotations

import numpy as np

from ..boxes import heatmaps_to_boxes
from ..metrics import IOU_THRESHOLD, best_iou, box_iou_curve_pair, pixel_score_histograms
from ._faithfulness import _trapezoid, faithfulness_curves
from ._store import _arrow_columns, _parquet

#: How many predictions are kept per image for top-5 accuracy and localization.
TOP_K = 5


# -- one chunk -------------------------------------------------------------------------------
def _prediction_order(outputs: np.ndarray) -> np.ndarray:
    # The order BaseExplainer.explain picks its top_k classes in, so that "top-1" agrees.
    return np.argsort(-outputs, axis=1, kind="stable")


def _faithfulness_rows(explainer, images, pos, cls, top1, heatmaps, explains_top1, options):
    """Deletion/insertion AUCs and curves of the top-1 rows; NaN and None elsewhere."""
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
            step=options.get("step"),
            protocol=options.get("protocol", "sklearn-caf"),
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


def _check_finite(values, what, name, positions, indices, ids) -> None:
    """Refuse non-finite model outputs or maps, naming the images (never a made-up row)."""
    values = np.asarray(values)
    finite = np.isfinite(values.reshape(len(values), -1)).all(axis=1)
    if finite.all():
        return
    bad = sorted(set(np.asarray(positions)[~finite].tolist()))
    shown = ", ".join(f"{int(indices[p])} (id {ids[p]!r})" for p in bad[:5])
    more = f" and {len(bad) - 5} more" if len(bad) > 5 else ""
    raise ValueError(
        f"explainers[{name!r}]: the {what} of image {shown}{more} of the dataset are not "
        "finite (NaN or Inf); no prediction, map or box is made up for them. Check the model "
        "on these images (its weights, their pixels, the preprocessing) or leave them out "
        "of the dataset."
    )


def _to_own_frame(boxes, sizes, pos, map_size) -> np.ndarray:
    """Boxes of the maps' ``(h, w)`` frame in each image's own pixels (a pure scaling in
    pixel-edge coordinates, as the dataset's resize); unchanged where ``sizes`` is None."""
    own = np.asarray(boxes, dtype=np.float64).copy()
    if sizes is None:
        return own
    own[:, 0::2] *= (sizes[pos, 1] / map_size[1])[:, None]
    own[:, 1::2] *= (sizes[pos, 0] / map_size[0])[:, None]
    return own


def _chunk_rows(
    explainers,
    dataset,
    local,
    indices,
    task,
    box_threshold,
    thresholds,
    faithfulness=None,
    protocol="wsol",
):
    """The per-image rows of one chunk, as a dict of columns (the heatmaps die here).

    ``local`` are the chunk's positions in ``dataset`` (a subset of one chunk, or the whole
    dataset), ``indices`` its positions in the evaluated dataset.
    """
    images, labels, true_boxes = dataset.load(np.asarray(local))
    labels = np.asarray(labels, dtype=np.int64)
    # Pixel masks (PxAP's ground truth) where the dataset carries them.
    masks = dataset.load_masks(np.asarray(local)) if getattr(dataset, "has_masks", False) else None
    # The images' own frame, for the reported boxes; a dataset without one (or arrays) is
    # reported in the model's frame.
    if hasattr(dataset, "original_sizes") and hasattr(dataset, "original_boxes"):
        sizes = np.asarray(dataset.original_sizes(np.asarray(local)), dtype=np.float64)
        originals = [np.asarray(b, dtype=np.float64) for b in dataset.original_boxes(local)]
    else:
        sizes, originals = None, [np.asarray(b, dtype=np.float64) for b in true_boxes]
    all_ids = dataset.ids
    ids = [str(all_ids[i]) for i in local]
    columns: dict[str, list] = {}

    def add(**values):
        for key, value in values.items():
            columns.setdefault(key, []).extend(value)

    for name, explainer in explainers.items():
        explanation = explainer.explain(images)
        outputs = explanation.outputs
        kind = "model outputs (logits)" if task == "classification" else "embeddings"
        _check_finite(outputs, kind, name, np.arange(len(outputs)), indices, ids)
        # The raw maps: a NaN map would be normalized into a constant (all-zero) heatmap.
        _check_finite(explanation.maps, "maps", name, np.arange(len(outputs)), indices, ids)
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
                _check_finite(extra.maps, "maps", name, missing, indices, ids)
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
        iou = best_iou(boxes, row_boxes)  # in the model's frame, where the maps are
        own = _to_own_frame(boxes, sizes, pos, heatmaps.shape[1:3])
        curves_v1, curves_v2 = box_iou_curve_pair(
            heatmaps, row_boxes, thresholds=thresholds, protocol=protocol
        )
        pxap_hists = None
        if masks is not None:
            if masks[0].shape[1:] != heatmaps.shape[1:]:
                raise ValueError(
                    f"the dataset's masks are {masks[0].shape[1:]} but {name!r}'s heatmaps are "
                    f"{heatmaps.shape[1:]}; masks must have the maps' (model-ready) size."
                )
            # PxAP's grid: the run's thresholds below 1 (the curve adds the point at 1).
            pxap_hists = pixel_score_histograms(
                heatmaps,
                masks[0][pos],
                ignore=masks[1][pos],
                thresholds=thresholds[thresholds < 1],
            )
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
            x0=own[:, 0].tolist(),
            y0=own[:, 1].tolist(),
            x1=own[:, 2].tolist(),
            y1=own[:, 3].tolist(),
            model_x0=boxes[:, 0].tolist(),
            model_y0=boxes[:, 1].tolist(),
            model_x1=boxes[:, 2].tolist(),
            model_y1=boxes[:, 3].tolist(),
            true_boxes=[originals[p] for p in pos],
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
            protocol=[protocol] * len(pos),
        )
        if pxap_hists is not None:
            add(pxap_true_hist=list(pxap_hists[0]), pxap_false_hist=list(pxap_hists[1]))
        if faith is not None:
            add(**faith)
        if task == "retrieval":
            add(embedding=[outputs[p].astype(np.float32) for p in pos])
    # Image by image, the methods in the order given within an image.
    order = np.argsort(np.asarray(columns["image_index"]), kind="stable")
    return {key: [values[k] for k in order] for key, values in columns.items()}


def _evaluate_chunk(
    chunk,
    explainers,
    dataset,
    local,
    indices,
    task,
    box_threshold,
    thresholds,
    faithfulness=None,
    protocol="wsol",
):
    """A worker's task: ``(chunk, table)`` with the chunk's rows as a pyarrow Table."""
    pa, _ = _parquet()
    columns = _chunk_rows(
        explainers,
        dataset,
        local,
        indices,
        task,
        box_threshold,
        thresholds,
        faithfulness,
        protocol,
    )
    return chunk, pa.table(_arrow_columns(pa, columns)), len(indices)


def _chunk_data(dataset, indices):
    """What a task carries: a subset of one chunk where the dataset offers ``subset``.

    A worker then receives that chunk's paths (or, for arrays, its pixels), not the whole
    dataset; tasks are made one at a time as joblib dispatches them.
    """
    if hasattr(dataset, "subset"):
        return dataset.subset(indices), np.arange(len(indices)), indices
    return dataset, indices, indices
