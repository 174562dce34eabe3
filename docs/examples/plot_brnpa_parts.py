"""
=========================================
BR-NPA part maps on a known object
=========================================

Train a small CNN whose global average pooling is replaced by BR-NPA pooling
(:class:`sklearn_caf_torch.brnpa.BRNPAPool2d`) on synthetic images where the object's
position is known, then look at the ranked part maps.

Each image holds a coloured square (its colour is the class) and a light grey distractor
that is brighter than the square in every channel but says nothing about the class
(:func:`sklearn_caf.datasets.make_squares`). An untrained network's most active features
sit on the distractor; training on the labels alone moves BR-NPA's first part onto the
object.

Set ``SKLEARN_CAF_EXAMPLE_QUICK=1`` for a short run (the test suite does).
"""

# %%
# Data and model
# --------------
import os

import numpy as np
import torch
from torch import nn

from sklearn_caf.datasets import make_squares
from sklearn_caf.metrics import attention_sparsity
from sklearn_caf.plotting import image_grid, overlay_part_maps
from sklearn_caf_torch.brnpa import BRNPAPool2d

quick = os.environ.get("SKLEARN_CAF_EXAMPLE_QUICK") == "1"
n_train, epochs = (512, 2) if quick else (1024, 4)
X, y, boxes = make_squares(n_train + 256, n_classes=3, distractor=True, random_state=0)
X_train, y_train = torch.as_tensor(X[:n_train]), torch.as_tensor(y[:n_train])
X_test, y_test, boxes_test = torch.as_tensor(X[n_train:]), y[n_train:], boxes[n_train:]

torch.manual_seed(0)
net = nn.Sequential(
    nn.Conv2d(3, 16, 3, padding=1),
    nn.ReLU(),
    nn.MaxPool2d(2),
    nn.Conv2d(16, 32, 3, padding=1),
    nn.ReLU(),
    BRNPAPool2d(n_parts=3),  # in place of AdaptiveAvgPool2d(1) + Flatten
    nn.Linear(3 * 32, 3),  # the classifier sees the 3 ranked part vectors
)
trunk, pool = net[:5], net[5]


def first_part_hit_rate():
    """Share of test images whose part 1 starts inside the object's box."""
    with torch.no_grad():
        index = pool.parts(trunk(X_test)).indices[:, 0].numpy()
    cy, cx = 2 * (index // 16) + 1, 2 * (index % 16) + 1  # centre of the 2x2 pixel cell
    b = boxes_test
    return float(((cx >= b[:, 0]) & (cx < b[:, 2]) & (cy >= b[:, 1]) & (cy < b[:, 3])).mean())


print(f"before training: part 1 on the object in {first_part_hit_rate():.0%} of test images")

# %%
# Training
# --------
optimizer = torch.optim.Adam(net.parameters(), lr=3e-3)
for _ in range(epochs):
    for batch in torch.randperm(n_train).split(32):
        loss = nn.functional.cross_entropy(net(X_train[batch]), y_train[batch])
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
net.eval()
with torch.no_grad():
    accuracy = float((net(X_test).argmax(1).numpy() == y_test).mean())
    parts = pool.parts(trunk(X_test))
print(f"test accuracy {accuracy:.0%}")
print(f"after training: part 1 on the object in {first_part_hit_rate():.0%} of test images")
sparsity = attention_sparsity(parts.maps.numpy(), parts.feature_norms.numpy())
print(f"sparsity (max / mean of the norm-weighted mean map): median {np.median(sparsity):.1f}")

# %%
# Part maps
# ---------
# Part 1 in red, part 2 in green, part 3 in blue, brighter where the features are stronger.
# The object is the coloured square; the grey square is the distractor.
images = (X[n_train : n_train + 8].transpose(0, 2, 3, 1) * 255).astype(np.uint8)
tiles, captions = [], []
for i, image in enumerate(images):
    big = np.kron(image, np.ones((4, 4, 1), dtype=np.uint8))  # 128x128 for visibility
    tiles += [big, overlay_part_maps(big, parts.maps[i].numpy(), parts.feature_norms[i].numpy())]
    captions += [f"class {y_test[i]}", "parts 1/2/3 = R/G/B"]
sheet = image_grid(tiles, ncols=4, captions=captions)

try:
    import matplotlib.pyplot as plt
except ImportError:  # without matplotlib, the sheet goes to a PNG file instead
    from PIL import Image

    Image.fromarray(sheet).save("brnpa_parts.png")
else:
    fig, ax = plt.subplots(figsize=(8, 8))
    ax.imshow(sheet)
    ax.set_axis_off()
