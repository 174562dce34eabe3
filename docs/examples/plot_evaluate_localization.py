"""
=========================================
Evaluating localization on a dataset
=========================================

How well does each method find the object? Train a small CNN on a synthetic weakly
supervised localization set (:func:`sklearn_caf.datasets.make_wsol_dataset`: coloured
objects on clutter, the class is the colour, the boxes are known), then score class-oblivious
L2-CAF, class-specific L2-CAF and Grad-CAM with
:func:`sklearn_caf.evaluation.evaluate_localization`: top-1, top-5 and GT-known
localization at the CAM threshold, and MaxBoxAcc over all thresholds (v1 and v2).

The network only ever sees labels; the boxes are used for scoring alone.
"""

# %%
# Data and model
# --------------
from collections import OrderedDict

import numpy as np
import torch
from torch import nn

from sklearn_caf import GradCAMExplainer, L2CAFExplainer
from sklearn_caf.datasets import make_wsol_dataset
from sklearn_caf.evaluation import evaluate_localization
from sklearn_caf.plotting import plot_localization_examples, plot_threshold_curves

torch.manual_seed(0)
train = make_wsol_dataset(360, image_size=32, n_classes=3, random_state=0)
test = make_wsol_dataset(90, image_size=32, n_classes=3, random_state=1)
X_train = torch.as_tensor(train.load(np.arange(len(train)))[0])
y_train = torch.as_tensor(train.labels)

net = nn.Sequential(
    OrderedDict(
        conv1=nn.Conv2d(3, 16, 3, padding=1),
        relu1=nn.ReLU(),
        pool1=nn.MaxPool2d(2),
        conv2=nn.Conv2d(16, 32, 3, padding=1),
        relu2=nn.ReLU(),
        pool2=nn.MaxPool2d(2),  # 8x8 feature maps: the layer explained
        gap=nn.AdaptiveAvgPool2d(1),
        flatten=nn.Flatten(),
        fc=nn.Linear(32, 3),
    )
)

# %%
# Training (a few seconds on a CPU)
# ---------------------------------
optimizer = torch.optim.Adam(net.parameters(), lr=3e-3)
for _ in range(4):
    for batch in torch.randperm(len(train)).split(32):
        loss = nn.functional.cross_entropy(net(X_train[batch]), y_train[batch])
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
net.eval()

# %%
# Evaluation
# ----------
# One row per image, method and explained class in ``report.per_image``; the papers'
# metrics per method in ``report.summary``. With ``out="some/dir"`` the rows would also be
# written as Parquet parts, and an interrupted run would resume where it stopped.
explainers = {
    "l2caf-oblivious": L2CAFExplainer(model=net, layer="pool2"),
    "l2caf-specific": L2CAFExplainer(model=net, layer="pool2", objective="class-specific"),
    "gradcam": GradCAMExplainer(model=net, layer="pool2"),
}
report = evaluate_localization(explainers, test, batch_size=45, progress=False)
print(report.summary.round(3).to_string())

# %%
# The maps are computed on an 8x8 grid and upsampled 4x, which spreads them: at CAM's
# threshold (0.2 of the maximum) the boxes are too large, and the localization accuracies
# at that threshold are low. ``best_threshold`` (where MaxBoxAcc peaks) says where this
# network's maps should be cut -- the reason wsolevaluation reports MaxBoxAcc rather than
# one threshold's accuracy.

# %%
# A few rows: the box at the CAM threshold (0.2), its IoU and the correctness flags.
columns = ["image_id", "method", "true_label", "explained_class", "iou", "top1_loc"]
print(report.per_image[columns].head(6).to_string())

# %%
# Accuracy against the threshold
# ------------------------------
# MaxBoxAcc is the peak of each curve: the score at the best threshold for each method
# (v1: the largest component's box at IoU 0.5; v2: any component's box, averaged over IoU
# 0.3, 0.5 and 0.7).
fig = plot_threshold_curves(report)

# %%
# Worst and best localized images
# -------------------------------
# The true class's map, the ground truth in green and the map's box in red.
import matplotlib.pyplot as plt  # noqa: E402

sheet = plot_localization_examples(report, test, explainers, n_images=3)
fig, ax = plt.subplots(figsize=(9, 6))
ax.imshow(sheet)
ax.set_axis_off()
plt.show()
