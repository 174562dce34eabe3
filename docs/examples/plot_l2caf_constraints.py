"""
==========================================================
L2-CAF's attention constraints: L2 norm, softmax, Gaussian
==========================================================

The paper's Fig. 11 (Sec. 4.4): the same attention filter optimized under three
constraints, on the sample photos with a pretrained EfficientNet-Lite0, at its last feature
map (7 x 7 cells). As in the paper, the filters are class-oblivious (Eq. 1): they keep
the network's output unchanged while they may suppress cells.

- ``constraint="l2"``: ``f / ||f||``, the paper's L2-CAF, spread over every cell that
  matters (several modes at once);
- ``constraint="softmax"``: ``softmax(f)``, non-negative and summing to 1; sparse, a few
  cells take all the weight;
- ``constraint="gaussian"``: a Gaussian bump of identity covariance (one cell) whose mean
  alone is optimized; a single mode, wherever it is.

The model and photos come from the ``demo`` extra (no network access). See
:ref:`l2caf_constraints` for the math.
"""

# %%
# Model and photos
# ----------------
import matplotlib.pyplot as plt
import numpy as np
from PIL import Image

from sklearn_caf import L2CAFExplainer
from sklearn_caf.datasets import load_sample_photos
from sklearn_caf.plotting import overlay_heatmap
from sklearn_caf_torch.pretrained import (
    EFFICIENTNET_LITE0_LAYER,
    EFFICIENTNET_LITE0_SIZE,
    efficientnet_lite0,
    preprocess_efficientnet_lite,
)

names, photos = load_sample_photos()
size = EFFICIENTNET_LITE0_SIZE
shown = [np.asarray(Image.fromarray(p).resize((size, size), Image.BILINEAR)) for p in photos]
X = preprocess_efficientnet_lite(shown, size=size)
model = efficientnet_lite0()

# %%
# Three constraints, one objective
# --------------------------------
# The L2 filter is solved in closed form (the head after the last feature map is global
# average pooling then a linear layer); the softmax and the Gaussian run Adam with the
# authors' schedule. ``explain`` keeps the raw filters: ``maps`` (7 x 7 per photo) and,
# for the Gaussian, its mean in cell coordinates, ``params``.
constraints = ["l2", "softmax", "gaussian"]
explanations = {}
for constraint in constraints:
    explainer = L2CAFExplainer(
        model=model, layer=EFFICIENTNET_LITE0_LAYER, constraint=constraint, device="cpu"
    )
    explanations[constraint] = explainer.fit(X[:1]).explain(X)
    print(
        f"{constraint:>8}: solver {explainer.solver_!r}, iterations per photo "
        f"{explanations[constraint].n_iter.ravel().tolist()}"
    )

means = explanations["gaussian"].params[:, 0]
for name, mu in zip(names, means, strict=True):
    print(f"Gaussian mean for {name:>10}: row {mu[0]:5.2f}, column {mu[1]:5.2f} (cells)")

# %%
# Sparsity of the three filters: the share of the filter's weight (``|f|`` for the L2
# filter) on its single largest cell. The softmax concentrates, the L2 filter spreads.
for constraint in constraints:
    maps = np.abs(explanations[constraint].maps[:, 0]).reshape(len(X), -1)
    top = maps.max(axis=1) / maps.sum(axis=1)
    print(f"{constraint:>8}: weight on the top cell, median {np.median(top):.2f}")

# %%
# The figure
# ----------
# One column per photo; the rows are the photo, then the heatmaps (the filters resized to
# the photo and scaled to [0, 1]) of the three constraints.
fig, axes = plt.subplots(4, len(X), figsize=(1.9 * len(X), 8))
for j, name in enumerate(names):
    axes[0, j].imshow(shown[j])
    axes[0, j].set_title(name, fontsize=9)
    for i, constraint in enumerate(constraints, start=1):
        heatmap = explanations[constraint].heatmaps[j, 0]
        axes[i, j].imshow(overlay_heatmap(shown[j], heatmap))
for i, label in enumerate(["photo", *constraints]):
    axes[i, 0].set_ylabel(label)
for ax in axes.ravel():
    ax.set_xticks([])
    ax.set_yticks([])
fig.suptitle("Class-oblivious L2-CAF under three constraints (EfficientNet-Lite0)")
fig.tight_layout()
plt.show()
