"""
=====================================================
Attention of a retrieval network (embeddings)
=====================================================

A retrieval network outputs an embedding, not class logits: there is no class whose
gradient Grad-CAM could follow. The L2-CAF paper (its Fig. 6 and Table 3) compares, on
such networks:

- class-oblivious L2-CAF (Eq. 1), which needs no class: the filter that keeps the
  embedding unchanged;
- Grad-CAM of the embedding (Eq. 6): the gradient of the sum of its dimensions, then a
  ReLU;
- Grad-CAM-abs (Eq. 7): the same with an absolute value, which keeps the regions that
  lower some dimensions.

A small CNN is trained here with a triplet loss on a synthetic set with known boxes
(:func:`~sklearn_caf.datasets.make_wsol_dataset`: the class is the object's colour), so
the object is what the embedding must encode; the boxes are used only for scoring. The
last section explains the same network in Keras.
"""

# %%
# Training an embedding network (a few seconds on a CPU)
# ------------------------------------------------------
from collections import OrderedDict

import matplotlib.pyplot as plt
import numpy as np
import torch
from torch import nn

from sklearn_caf import GradCAMExplainer, HeatmapBoxes, L2CAFExplainer
from sklearn_caf.datasets import make_wsol_dataset
from sklearn_caf.metrics import max_box_accuracy, recall_at_k
from sklearn_caf.plotting import draw_box, overlay_heatmap

torch.manual_seed(0)
torch.set_num_threads(2)
train = make_wsol_dataset(300, image_size=32, n_classes=4, random_state=0)
test = make_wsol_dataset(80, image_size=32, n_classes=4, random_state=1)
X_train, y_train, _ = train.load(np.arange(len(train)))
X_test, y_test, boxes_test = test.load(np.arange(len(test)))

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
        embed=nn.Linear(32, 16),  # the raw embedding (unit-normalized only for distances)
    )
)
X_t, y_t = torch.as_tensor(X_train), torch.as_tensor(y_train)
optimizer = torch.optim.Adam(net.parameters(), lr=3e-3)
triplet = nn.TripletMarginLoss(margin=0.5)
rng = np.random.default_rng(0)
for _ in range(60):
    # Random triplets: an anchor, a positive of its class, a negative of another class.
    anchor = rng.integers(len(y_train), size=32)
    positive = np.array([rng.choice(np.flatnonzero(y_train == y_train[a])) for a in anchor])
    negative = np.array([rng.choice(np.flatnonzero(y_train != y_train[a])) for a in anchor])
    emb = nn.functional.normalize(net(X_t[np.concatenate([anchor, positive, negative])]))
    loss = triplet(*emb.split(32))
    optimizer.zero_grad()
    loss.backward()
    optimizer.step()
net.eval()
with torch.no_grad():
    embeddings = net(torch.as_tensor(X_test)).numpy()
print(f"Recall@1 on the test set: {recall_at_k(embeddings, y_test, k=1):.2f}")

# %%
# Three explanations of the embedding
# -----------------------------------
explainers = {
    "L2-CAF": L2CAFExplainer(model=net, layer="pool2"),  # class-oblivious, the default
    "Grad-CAM": GradCAMExplainer(model=net, layer="pool2", objective="embedding"),
    "Grad-CAM-abs": GradCAMExplainer(
        model=net, layer="pool2", objective="embedding", activation="abs"
    ),
}
heatmaps = {name: e.fit_transform(X_test) for name, e in explainers.items()}

# %%
# Localization: MaxBoxAcc (the share of test images whose map's box reaches IoU 0.5 with
# the true box, at the best threshold of the map) and that threshold.
best_threshold = {}
for name, maps in heatmaps.items():
    result = max_box_accuracy(maps, boxes_test)
    best_threshold[name] = max(result.best_thresholds[0], 0.01)
    print(f"{name:>12}: MaxBoxAcc {result.score:.2f} at {result.best_thresholds[0]:.2f}")

# %%
# The maps, as in the paper's Fig. 6
# ----------------------------------
# Ground-truth box in green, the map's box at its best threshold in white; the 32x32
# images are enlarged 4x for display.
shown = [0, 1, 2, 3, 5]
scale = 4
pictures = np.clip(X_test[shown].transpose(0, 2, 3, 1), 0, 1)
pictures = (pictures.repeat(scale, axis=1).repeat(scale, axis=2) * 255).astype(np.uint8)
fig, axes = plt.subplots(len(shown), 4, figsize=(8, 2.1 * len(shown)))
for row, i in enumerate(shown):
    truth = boxes_test[i][0] * scale
    axes[row, 0].imshow(draw_box(pictures[row], truth, color=(0, 255, 0)))
    for col, (name, maps) in enumerate(heatmaps.items(), start=1):
        box = HeatmapBoxes(threshold=best_threshold[name]).fit_transform(maps[i : i + 1])[0, :4]
        overlay = draw_box(overlay_heatmap(pictures[row], maps[i]), truth, color=(0, 255, 0))
        axes[row, col].imshow(draw_box(overlay, box * scale, color=(255, 255, 255)))
for ax, title in zip(axes[0], ["image", *heatmaps], strict=True):
    ax.set_title(title)
for ax in axes.ravel():
    ax.set_axis_off()
fig.tight_layout()
plt.show()

# %%
# Grad-CAM's ReLU keeps only the regions that raise the *sum* of the embedding's
# dimensions, which has no particular meaning for an embedding: parts of the object that
# lower it are cut away. Grad-CAM-abs keeps both signs, and L2-CAF, which asks which
# region reproduces the whole embedding, needs no such choice.

# %%
# The same on a Keras model
# -------------------------
# The explainers take a Keras embedding network the same way: here the trained network's
# weights are copied into its Keras twin (NHWC images, kernels transposed), and the three
# explanations are computed again by the TensorFlow backend.
import keras  # noqa: E402

weights = {name: [p.detach().numpy() for p in m.parameters()] for name, m in net.named_children()}
twin = keras.Sequential(
    [
        keras.Input((32, 32, 3)),
        keras.layers.Conv2D(16, 3, padding="same", activation="relu", name="conv1"),
        keras.layers.MaxPooling2D(name="pool1"),
        keras.layers.Conv2D(32, 3, padding="same", activation="relu", name="conv2"),
        keras.layers.MaxPooling2D(name="pool2"),
        keras.layers.GlobalAveragePooling2D(name="gap"),
        keras.layers.Dense(16, name="embed"),
    ]
)
for name in ("conv1", "conv2"):
    kernel, bias = weights[name]
    twin.get_layer(name).set_weights([kernel.transpose(2, 3, 1, 0), bias])
twin.get_layer("embed").set_weights([weights["embed"][0].T, weights["embed"][1]])
X_test_nhwc = X_test.transpose(0, 2, 3, 1)
keras_explainers = {
    "L2-CAF": L2CAFExplainer(model=twin, layer="pool2"),
    "Grad-CAM": GradCAMExplainer(model=twin, layer="pool2", objective="embedding"),
    "Grad-CAM-abs": GradCAMExplainer(
        model=twin, layer="pool2", objective="embedding", activation="abs"
    ),
}
for name, explainer in keras_explainers.items():
    keras_maps = explainer.fit_transform(X_test_nhwc)
    gap = np.abs(keras_maps - heatmaps[name]).max()
    print(
        f"{name:>12} on Keras: MaxBoxAcc {max_box_accuracy(keras_maps, boxes_test).score:.2f}, "
        f"largest difference from the PyTorch maps {gap:.1e}"
    )
