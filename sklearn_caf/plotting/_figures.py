"""Figures of evaluation runs, sanity checks and deletion/insertion curves (matplotlib)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from .._utils import import_optional
from ..metrics import IOU_THRESHOLD, V2_IOU_THRESHOLDS, max_box_accuracy_from_curves
from ._images import apply_colormap, display_image, draw_box, image_grid, overlay_heatmap

# Smallest side of a contact-sheet tile, in pixels.
_MIN_TILE = 128


def _true_rows(report):
    rows = report.per_image
    return rows[rows["explains_true"].to_numpy()]


def _two_panels(axes, who: str, panels: str):
    """A new figure with two panels side by side, or the user's two ``axes``."""
    plt = import_optional("matplotlib.pyplot", needed_by=who)
    if axes is None:
        return plt.subplots(1, 2, figsize=(10, 4), sharey=True, layout="constrained")
    if len(axes) != 2:
        raise ValueError(f"axes must hold two Axes ({panels}); got {len(axes)}.")
    return axes[0].figure, axes


def _finish_curves(axes, titles: tuple[str, str], xlabel: str, ylabel: str) -> None:
    """Titles, labels, limits, grid and legends of two panels of curves over [0, 1]."""
    for ax, title in zip(axes, titles, strict=True):
        ax.set_title(title)
        ax.set_xlabel(xlabel)
        ax.set_xlim(0, 1)
        ax.set_ylim(0, 1.02)
        ax.grid(alpha=0.3)
        ax.legend(loc="best", fontsize="small")
    axes[0].set_ylabel(ylabel)


def plot_threshold_curves(report, *, axes=None):
    """Box accuracy against the map threshold, one line per method: MaxBoxAcc v1 and v2.

    The left panel is the accuracy at IoU 0.5 of the largest component's box (MaxBoxAcc is
    its maximum); the right one the mean over IoU 0.3, 0.5 and 0.7 of the best component's
    box (MaxBoxAccV2). Both use each image's true-class map and are computed from
    ``report.per_image`` alone.

    Parameters
    ----------
    report : LocalizationReport
        From :func:`~sklearn_caf.evaluation.evaluate_localization` or
        :func:`~sklearn_caf.evaluation.load_report`.
    axes : sequence of two matplotlib Axes, default=None
        Where to draw; ``None`` makes a new figure with two panels.

    Returns
    -------
    figure : matplotlib.figure.Figure
        The figure with the curves (the one given, or a new one).

    Examples
    --------
    >>> from sklearn_caf.evaluation import load_report
    >>> from sklearn_caf.plotting import plot_threshold_curves
    >>> fig = plot_threshold_curves(load_report("caf-eval"))  # doctest: +SKIP
    >>> fig.savefig("curves.png")  # doctest: +SKIP
    """
    fig, axes = _two_panels(axes, "plot_threshold_curves", "v1, v2")
    rows = _true_rows(report)
    thresholds = np.asarray(report.thresholds)
    for method in report.summary.index:
        m_rows = rows[rows["method"] == method]
        if m_rows.empty:
            continue
        for ax, column, ious in (
            (axes[0], "iou_curve_v1", (IOU_THRESHOLD,)),
            (axes[1], "iou_curve_v2", V2_IOU_THRESHOLDS),
        ):
            result = max_box_accuracy_from_curves(
                np.stack(m_rows[column].to_numpy()), thresholds=thresholds, iou_thresholds=ious
            )
            ax.plot(
                thresholds,
                result.accuracy.mean(axis=0),
                label=f"{method} ({result.score:.3f})",
            )
    titles = (
        "MaxBoxAcc: largest component, IoU 0.5",
        "MaxBoxAccV2: any component, IoU 0.3/0.5/0.7",
    )
    _finish_curves(axes, titles, "map threshold", "box accuracy")
    return fig


def plot_localization_examples(
    report, dataset, explainers, *, n_images: int = 4, alpha: float = 0.5
) -> np.ndarray:
    """A contact sheet of the worst and best localized images of each method.

    One row per method: its ``n_images`` images of lowest IoU at the report's
    ``box_threshold``, then its ``n_images`` of highest, each showing the map of the true
    class (recomputed: reports hold no heatmaps), the ground-truth boxes in green and the
    map's box in red, captioned with the IoU and the image id.

    Parameters
    ----------
    report : LocalizationReport
        The evaluation of ``explainers`` on ``dataset``.
    dataset : ImageBoxDataset
        The dataset evaluated.
    explainers : dict of str to explainer
        The explainers evaluated (fitted or not; unfitted ones are cloned and fitted).
    n_images : int, default=4
        Worst and best images shown per method.
    alpha : float, default=0.5
        Weight of the heatmap in the overlays.

    Returns
    -------
    sheet : ndarray of shape (H, W, 3), uint8
        The contact sheet as one RGB picture.

    Examples
    --------
    >>> from sklearn_caf.plotting import plot_localization_examples
    >>> sheet = plot_localization_examples(report, data, explainers)  # doctest: +SKIP
    """
    from sklearn.base import clone

    if n_images < 1:
        raise ValueError(f"n_images must be at least 1; got {n_images}.")
    rows = _true_rows(report)
    tiles, captions = [], []
    for method in report.summary.index:
        if method not in explainers:
            raise ValueError(f"explainers has no method {method!r} of the report.")
        m_rows = rows[rows["method"] == method].sort_values("iou", kind="stable")
        picked = [("worst", m_rows.head(n_images)), ("best", m_rows.tail(n_images)[::-1])]
        explainer = explainers[method]
        for kind, chosen in picked:
            indices = chosen["image_index"].to_numpy()
            images, _, true_boxes = dataset.load(indices)
            if not hasattr(explainer, "bound_"):
                explainer = clone(explainer).fit(images[:1])
            classes = chosen["explained_class"].to_numpy()
            targets = classes if explainer.explains_classes else None
            heatmaps = explainer.explain(images, targets=targets).heatmaps[:, 0]
            for k, (_, row) in enumerate(chosen.iterrows()):
                picture = display_image(images[k])
                # Small images (32 px) are enlarged by an integer factor, so the sheet is legible.
                scale = max(1, -(-_MIN_TILE // min(picture.shape[:2])))
                picture = picture.repeat(scale, axis=0).repeat(scale, axis=1)
                heatmap = np.asarray(heatmaps[k]).repeat(scale, axis=0).repeat(scale, axis=1)
                tile = overlay_heatmap(picture, heatmap, alpha=alpha)
                for box in np.atleast_2d(true_boxes[k]):
                    tile = draw_box(tile, np.asarray(box) * scale, color=(0, 255, 0), width=2)
                # The images as the model sees them: the model-frame box.
                corners = ("model_x0", "model_y0", "model_x1", "model_y1")
                box = np.array([row[c] for c in corners]) * scale
                tiles.append(draw_box(tile, box, color=(255, 0, 0), width=2))
                captions.append(f"{kind} IoU {row['iou']:.2f} {method}")
        # Methods with fewer images than 2 * n_images: pad the row so methods stay aligned.
        while len(tiles) % (2 * n_images):
            tiles.append(np.full_like(tiles[-1], 255))
            captions.append("")
    return image_grid(tiles, ncols=2 * n_images, captions=captions)


# -- pictures of a sanity check (sklearn_caf.sanity) ------------------------------------------
def plot_model_randomization(
    maps,
    *,
    images: np.ndarray | None = None,
    indices: Sequence[int] | None = None,
    rank: int = 0,
    alpha: float = 0.5,
    cmap: str = "jet",
    tile_size: float = 1.6,
):
    """The maps of a model-randomization check in a grid, as in Adebayo et al.'s figures.

    One row per method and image: the trained model's map, then the map after each
    randomization step (column titles: the last layer randomized). Rows of one method
    share its steps; methods with fewer steps leave their last cells empty.

    Parameters
    ----------
    maps : Bunch or dict of str to Bunch
        The second value of :func:`~sklearn_caf.sanity.model_randomization` with
        ``return_maps=True``, or several of them by method name (rows are labelled by it).
    images : array-like of shape (n_images, ...), default=None
        The images checked (as the model takes them: CHW or HWC, any range); the maps are
        drawn over them. ``None`` draws the coloured maps alone.
    indices : sequence of int, default=None
        Which images to show; ``None`` shows all.
    rank : int, default=0
        Which of an image's explained targets to show (0: the top one).
    alpha : float in [0, 1], default=0.5
        Weight of the maps over the images.
    cmap : str, default="jet"
        Colormap; see :func:`apply_colormap`.
    tile_size : float, default=1.6
        Side of one map in inches.

    Returns
    -------
    figure : matplotlib.figure.Figure
        A new figure, one row of maps per method and image.

    Examples
    --------
    >>> import numpy as np
    >>> from sklearn.utils import Bunch
    >>> from sklearn_caf.plotting import plot_model_randomization
    >>> heatmaps = np.random.default_rng(0).random((3, 2, 1, 8, 8))  # 2 steps, 2 images
    >>> maps = Bunch(heatmaps=heatmaps, layer=["original", "fc", "conv1"])
    >>> fig = plot_model_randomization({"Grad-CAM": maps})
    >>> len(fig.axes)
    6
    """
    plt = import_optional("matplotlib.pyplot", needed_by="plot_model_randomization")
    methods = dict(maps) if isinstance(maps, dict) and "heatmaps" not in maps else {"": maps}
    if not methods:
        raise ValueError("maps is empty; pass the maps of model_randomization(return_maps=True).")
    for name, bunch in methods.items():
        heatmaps = np.asarray(bunch["heatmaps"])
        if heatmaps.ndim != 5 or len(bunch["layer"]) != heatmaps.shape[0]:
            raise ValueError(
                f"maps{f'[{name!r}]' if name else ''} must come from model_randomization("
                f"return_maps=True): heatmaps of shape (n_steps + 1, n_images, k, H, W) and "
                f"one layer label per step; got heatmaps of shape {heatmaps.shape}."
            )
    n_images = min(np.asarray(b["heatmaps"]).shape[1] for b in methods.values())
    indices = list(range(n_images)) if indices is None else [int(i) for i in indices]
    bad = [i for i in indices if not 0 <= i < n_images]
    if bad or not indices:
        raise ValueError(f"indices must be image rows in [0, {n_images}); got {indices}.")
    pictures = None if images is None else [display_image(np.asarray(images)[i]) for i in indices]
    n_cols = max(len(b["layer"]) for b in methods.values())
    n_rows = len(methods) * len(indices)
    fig, axes = plt.subplots(
        n_rows,
        n_cols,
        figsize=(tile_size * n_cols, tile_size * n_rows + 0.4),
        squeeze=False,
        layout="constrained",
    )
    row = 0
    for name, bunch in methods.items():
        heatmaps = np.asarray(bunch["heatmaps"])
        if not 0 <= rank < heatmaps.shape[2]:
            raise ValueError(f"rank must be in [0, {heatmaps.shape[2]}); got {rank}.")
        for position, i in enumerate(indices):
            for col in range(n_cols):
                ax = axes[row, col]
                ax.set_xticks([])
                ax.set_yticks([])
                if col >= heatmaps.shape[0]:
                    ax.set_axis_off()
                    continue
                heatmap = heatmaps[col, i, rank]
                if pictures is None:
                    tile = apply_colormap(heatmap, cmap)
                else:
                    tile = overlay_heatmap(pictures[position], heatmap, alpha=alpha, cmap=cmap)
                ax.imshow(tile)
                if position == 0:
                    ax.set_title(str(bunch["layer"][col]), fontsize="small")
            label = f"{name}\nimage {i}" if name else f"image {i}"
            axes[row, 0].set_ylabel(label, fontsize="small")
            row += 1
    return fig


def _faithfulness_tables(results) -> dict:
    """Method name -> rows holding the curves, from any of plot_deletion_insertion's inputs."""
    per_image = getattr(results, "per_image", None)
    if per_image is not None:  # a LocalizationReport
        if "deletion_curve" not in per_image.columns:
            raise ValueError(
                "results is a LocalizationReport without deletion/insertion curves; run "
                "evaluate_localization with faithfulness=True."
            )
        rows = per_image[per_image["explains_top1"].to_numpy()]
        return {m: rows[rows["method"] == m] for m in results.summary.index}
    if hasattr(results, "columns"):
        results = {"": results}
    if not isinstance(results, dict) or not results:
        raise ValueError(
            "results must be a table from deletion_insertion, a dict of method name to such "
            f"tables, or a LocalizationReport; got {type(results).__name__}."
        )
    for name, table in results.items():
        missing = {"deletion_curve", "insertion_curve"} - set(getattr(table, "columns", ()))
        if missing:
            raise ValueError(
                f"results[{name!r}] must be a table from deletion_insertion; it lacks the "
                f"columns {sorted(missing)}."
            )
    return dict(results)


def plot_deletion_insertion(results: Any, *, axes: Any = None) -> Any:
    """Deletion and insertion curves (RISE), the mean over images of each method.

    The left panel is the probability of the explained class as the most salient pixels
    are deleted, the right one as they are inserted into the blurred image; each legend
    entry gives the method's mean AUC (lower is better for deletion, higher for insertion).

    Parameters
    ----------
    results : DataFrame, dict of str to DataFrame, or LocalizationReport
        A table from :func:`~sklearn_caf.evaluation.deletion_insertion`, several of them
        by method name, or a report of
        :func:`~sklearn_caf.evaluation.evaluate_localization` run with
        ``faithfulness=True`` (its top-1 rows).
    axes : sequence of two matplotlib Axes, default=None
        Where to draw (deletion, insertion); ``None`` makes a new figure with two panels.

    Returns
    -------
    figure : matplotlib.figure.Figure
        The figure with the two panels (the one of ``axes``, or a new one).

    Examples
    --------
    >>> import numpy as np
    >>> import pandas as pd
    >>> from sklearn_caf.plotting import plot_deletion_insertion
    >>> curves = [np.array([0.9, 0.4, 0.1]), np.array([0.8, 0.2, 0.1])]
    >>> table = pd.DataFrame({"deletion_auc": [0.45, 0.33], "insertion_auc": [0.6, 0.7],
    ...                       "deletion_curve": curves, "insertion_curve": curves[::-1]})
    >>> fig = plot_deletion_insertion({"gradcam": table})
    >>> [ax.get_title() for ax in fig.axes]
    ['Deletion (lower AUC is better)', 'Insertion (higher AUC is better)']
    """
    tables = _faithfulness_tables(results)
    fig, axes = _two_panels(axes, "plot_deletion_insertion", "deletion, insertion")
    for name, table in tables.items():
        if len(table) == 0:
            continue
        for ax, kind in ((axes[0], "deletion"), (axes[1], "insertion")):
            curves = np.stack([np.asarray(c, dtype=np.float64) for c in table[f"{kind}_curve"]])
            if "fraction" in table.columns:
                x = np.asarray(table["fraction"].iloc[0], dtype=np.float64)
            else:  # evaluation reports: equal steps, to within one pixel
                x = np.linspace(0.0, 1.0, curves.shape[1])
            auc = float(np.mean(table[f"{kind}_auc"].to_numpy(dtype=np.float64)))
            label = f"{name} (AUC {auc:.3f})" if name else f"AUC {auc:.3f}"
            ax.plot(x, curves.mean(axis=0), label=label)
    titles = ("Deletion (lower AUC is better)", "Insertion (higher AUC is better)")
    _finish_curves(axes, titles, "fraction of pixels", "probability of the explained class")
    return fig
