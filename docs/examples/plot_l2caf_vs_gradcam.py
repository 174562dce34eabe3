"""
===========================================================
L2-CAF and Grad-CAM side by side: maps, boxes and timings
===========================================================

Grad-CAM needs one backward pass per image; L2-CAF optimizes a filter, which the paper
does with Adam for hundreds of iterations (about 7x Grad-CAM's time on GoogLeNet). After
the last convolutional layer of EfficientNet-Lite0 the head is global average pooling and
a linear layer, so L2-CAF's problem has an exact solution (an eigenproblem on the 7x7
filter): ``solver="exact"``. This example compares the three on four photos: the maps and
their boxes, how close Adam gets to the exact optimum, and what each costs.
"""

# %%
import time

import matplotlib.pyplot as plt
import numpy as np
import torch
from PIL import Image

from sklearn_caf import GradCAMExplainer, HeatmapBoxes, L2CAFExplainer
from sklearn_caf.datasets import load_sample_photos
from sklearn_caf.plotting import draw_box, overlay_heatmap
from sklearn_caf_torch.pretrained import (
    EFFICIENTNET_LITE0_LAYER,
    efficientnet_lite0,
    preprocess_efficientnet_lite,
)

torch.set_num_threads(2)
model = efficientnet_lite0()
names, photos = load_sample_photos()
keep = [names.index(n) for n in ("chelsea", "coffee", "motorcycle", "flower")]
pictures = [
    np.asarray(Image.fromarray(photos[i]).resize((224, 224), Image.BILINEAR)) for i in keep
]
X = preprocess_efficientnet_lite(pictures)
layer = EFFICIENTNET_LITE0_LAYER

# %%
# Three explainers of the top class
# ---------------------------------
# All three explain the top predicted class (class-specific L2-CAF, Eq. 2 of the paper).
# Each is fitted first (splitting the network is a one-off cost), then timed on the batch.
explainers = {
    "Grad-CAM": GradCAMExplainer(model=model, layer=layer),
    "L2-CAF exact": L2CAFExplainer(
        model=model, layer=layer, objective="class-specific", solver="exact"
    ),
    "L2-CAF Adam": L2CAFExplainer(
        model=model, layer=layer, objective="class-specific", solver="adam"
    ),
}
with torch.no_grad():  # the first forward pass allocates; keep it out of the timings
    model(torch.as_tensor(X))
explanations, seconds = {}, {}
for name, explainer in explainers.items():
    explainer.fit(X[:1])
    start = time.perf_counter()
    explanations[name] = explainer.explain(X)
    seconds[name] = time.perf_counter() - start

for name, s in seconds.items():
    print(f"{name:>13}: {s:6.2f} s  ({s / seconds['Grad-CAM']:5.1f}x Grad-CAM)")
print("Adam iterations per map:", explanations["L2-CAF Adam"].n_iter[:, 0])

# %%
# How close does Adam get?
# ------------------------
# The filters are unit vectors on the 7x7 grid; their cosine similarity is 1 when Adam
# reached the exact optimum.
exact = explanations["L2-CAF exact"].maps.reshape(len(X), -1)
adam = explanations["L2-CAF Adam"].maps.reshape(len(X), -1)
cosine = (exact * adam).sum(1) / np.linalg.norm(exact, axis=1) / np.linalg.norm(adam, axis=1)
print("cosine(exact, Adam) per photo:", np.round(cosine, 4))

# %%
# Maps and boxes
# --------------
# One row per photo; the box is CAM's rule (20% of the map's maximum, largest component).
fig, axes = plt.subplots(len(X), 3, figsize=(8, 2.75 * len(X)))
for col, (name, ex) in enumerate(explanations.items()):
    boxes = HeatmapBoxes(threshold="cam").fit_transform(ex.heatmaps[:, 0])
    for row in range(len(X)):
        overlay = overlay_heatmap(pictures[row], ex.heatmaps[row, 0])
        axes[row, col].imshow(draw_box(overlay, boxes[row, :4], color=(255, 255, 255)))
        axes[row, col].set_axis_off()
    axes[0, col].set_title(f"{name}\n{seconds[name]:.2f} s for {len(X)} photos")
fig.tight_layout()
plt.show()

# %%
# The exact solver's cost is about ``h * w + 6`` evaluations of the head per image (the
# head's matrix is read off at the unit filters), with no iteration and no step size to
# tune; Adam's cost grows with its iterations. On heads that are not affine in the filter
# (a layer inside the network) ``solver="auto"`` falls back to an iterative solver: see
# the user guide's section on solvers.
