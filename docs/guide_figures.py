"""The user guide's figures, drawn at build time by matplotlib's plot directive.

``.. plot:: guide_figures.py model_split`` in a page runs one function of this module; each
draws one figure with the library's own functions (boxes, part maps) where there is one.
"""

from __future__ import annotations

import matplotlib.pyplot as plt
import numpy as np
from matplotlib.patches import FancyArrowPatch, FancyBboxPatch


def _box(ax, x, y, w, h, text, color):
    ax.add_patch(
        FancyBboxPatch(
            (x, y), w, h, boxstyle="round,pad=0.02,rounding_size=0.08", fc=color, ec="0.25"
        )
    )
    ax.text(x + w / 2, y + h / 2, text, ha="center", va="center", fontsize=10)


def _arrow(ax, start, end, style="-|>", color="0.2", ls="-"):
    ax.add_patch(
        FancyArrowPatch(start, end, arrowstyle=style, mutation_scale=14, color=color, ls=ls)
    )


def model_split():
    """Trunk, filter and head: what L2-CAF's fast variant optimizes."""
    fig, ax = plt.subplots(figsize=(8.5, 3.0))
    ax.set_xlim(0, 10.6)
    ax.set_ylim(0, 3.3)
    ax.set_axis_off()
    _box(ax, 0.1, 1.9, 1.2, 0.9, "image\n$x$", "#f2f2f2")
    _box(ax, 1.9, 1.9, 1.9, 0.9, "trunk\ninput $\\to$ layer", "#cfe2f3")
    _box(ax, 4.4, 1.9, 1.5, 0.9, "feature maps\n$A$: $h \\times w \\times k$", "#fff2cc")
    _box(ax, 6.5, 1.9, 1.7, 0.9, "head\nlayer $\\to$ output", "#d9ead3")
    _box(ax, 8.8, 1.9, 1.7, 0.9, "output\n$NT(x)$", "#f2f2f2")
    for a, b in [(1.3, 1.9), (3.8, 4.4), (5.9, 6.5), (8.2, 8.8)]:
        _arrow(ax, (a, 2.35), (b, 2.35))
    # The filtered path, below: A * f / ||f||, through the same head.
    _box(ax, 4.4, 0.25, 1.5, 0.9, "$A \\odot f / \\|f\\|_2$\n$f$: $h \\times w$", "#f4cccc")
    _box(ax, 6.5, 0.25, 1.7, 0.9, "head", "#d9ead3")
    _box(ax, 8.8, 0.25, 1.7, 0.9, "output\n$FT(x, f)$", "#f2f2f2")
    _arrow(ax, (5.15, 1.9), (5.15, 1.15))
    _arrow(ax, (5.9, 0.7), (6.5, 0.7))
    _arrow(ax, (8.2, 0.7), (8.8, 0.7))
    _arrow(ax, (9.65, 1.9), (9.65, 1.15), style="<|-|>", color="#cc0000", ls="--")
    ax.text(9.75, 1.52, "loss", color="#cc0000", fontsize=9, va="center")
    ax.text(
        1.0,
        0.7,
        "run once per batch:\ntrunk $\\to A$\n\noptimized: $f$ only,\nthrough the head",
        fontsize=9,
        va="center",
        color="0.3",
    )
    ax.set_title("fit() splits the model at `layer`; transform() explains a batch", fontsize=10)
    return fig


def heatmap_to_box():
    """CAM's rule, step by step: threshold, largest 8-connected component, its box."""
    from scipy import ndimage

    from sklearn_caf import HeatmapBoxes

    yy, xx = np.mgrid[0:64, 0:64]
    heatmap = np.exp(-((xx - 22) ** 2 + (yy - 30) ** 2) / (2 * 9.0**2))
    heatmap += 0.55 * np.exp(-((xx - 50) ** 2 + (yy - 12) ** 2) / (2 * 5.0**2))
    heatmap = (heatmap / heatmap.max()).astype(np.float32)
    threshold = 0.2
    mask = heatmap >= threshold * heatmap.max()
    labels, n = ndimage.label(mask, structure=np.ones((3, 3)))
    sizes = ndimage.sum(mask, labels, index=np.arange(1, n + 1))
    largest = labels == 1 + int(np.argmax(sizes))
    x0, y0, x1, y1, score = HeatmapBoxes(threshold=threshold).fit_transform(heatmap[None])[0]

    fig, axes = plt.subplots(1, 4, figsize=(9, 2.6))
    axes[0].imshow(heatmap, cmap="jet", vmin=0, vmax=1)
    axes[0].set_title("heatmap in [0, 1]")
    axes[1].imshow(mask, cmap="gray")
    axes[1].set_title(f"pixels >= {threshold:g} x max")
    axes[2].imshow(np.where(largest, 1.0, 0.35 * mask), cmap="gray", vmin=0, vmax=1)
    axes[2].set_title("largest component")
    axes[3].imshow(heatmap, cmap="jet", vmin=0, vmax=1)
    axes[3].add_patch(
        plt.Rectangle((x0 - 0.5, y0 - 0.5), x1 - x0, y1 - y0, fill=False, ec="white", lw=2)
    )
    axes[3].set_title(f"its box (score {score:.2f})")
    for ax in axes:
        ax.set_axis_off()
    fig.tight_layout()
    return fig


def brnpa_parts():
    """BR-NPA's ranked parts on feature maps with three blobs of different strength."""
    from sklearn_caf import BRNPAPooling
    from sklearn_caf.plotting import part_map_rgb

    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[0:14, 0:14]
    features = 0.05 * rng.random((1, 8, 14, 14))
    for (cy, cx), strength, channels in [((4, 4), 3.0, [0, 1]), ((9, 10), 2.0, [2, 3])]:
        blob = strength * np.exp(-((xx - cx) ** 2 + (yy - cy) ** 2) / 4.0)
        features[0, channels] += blob
    features[0, 4:6] += 1.2 * np.exp(-((xx - 11) ** 2 + (yy - 3) ** 2) / 3.0)
    parts = BRNPAPooling(n_parts=3).fit(features).explain(features)

    fig, axes = plt.subplots(1, 5, figsize=(9.5, 2.3))
    axes[0].imshow(parts.feature_norms[0], cmap="gray")
    axes[0].set_title("feature norms")
    for k, color in enumerate(["Reds", "Greens", "Blues"]):
        axes[k + 1].imshow(parts.maps[0, k], cmap=color)
        axes[k + 1].set_title(f"part {k + 1} (norm {parts.part_norms[0, k]:.1f})")
    axes[4].imshow(part_map_rgb(parts.maps[0], parts.feature_norms[0]))
    axes[4].set_title("part_map_rgb")
    for ax in axes:
        ax.set_axis_off()
    fig.tight_layout()
    return fig
