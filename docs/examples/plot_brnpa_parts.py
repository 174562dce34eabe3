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
from sklearn_caf.plotting import draw_box, image_grid, part_map_rgb
from sklearn_caf_torch.brnpa import BRNPAPool2d

quick = os.environ.get("SKLEARN_CAF_EXAMPLE_QUICK") == "1"
n_train, epochs = (512, 2) if quick else (768, 3)
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
with torch.no_grad():
    parts_before = pool.parts(trunk(X_test))

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
# Part maps, before and after training
# ------------------------------------
# Each row: the test image (the object's box in white), then the ranked parts of the
# untrained and of the trained network: part 1 in red, part 2 in green, part 3 in blue,
# brighter where the features are stronger (:func:`~sklearn_caf.plotting.part_map_rgb`).
# The parts are drawn on black rather than blended on the image, so the squares' own
# colours cannot be mistaken for the part code; the white outline is the object's box,
# the grey square in the image is the distractor. Where parts overlap their colours add
# up: magenta is parts 1 and 3 on the same cells, white all three.
scale = 4  # 32x32 images and 16x16 part maps shown at 128x128
images = (X[n_train : n_train + 6].transpose(0, 2, 3, 1) * 255).astype(np.uint8)
tiles, captions = [], []
for i, image in enumerate(images):
    box = boxes_test[i] * scale
    tiles.append(draw_box(np.kron(image, np.ones((scale, scale, 1), np.uint8)), box, (255,) * 3))
    captions.append(f"image, class {y_test[i]}")
    for stage, found in (("untrained", parts_before), ("trained", parts)):
        rgb = part_map_rgb(found.maps[i].numpy(), found.feature_norms[i].numpy())
        rgb = np.kron((rgb * 255).astype(np.uint8), np.ones((2 * scale, 2 * scale, 1), np.uint8))
        tiles.append(draw_box(rgb, box, (255,) * 3))
        captions.append(f"{stage} network")
sheet = image_grid(tiles, ncols=3, captions=captions, caption_height=18)

try:
    import matplotlib.pyplot as plt
except ImportError:  # without matplotlib, the sheet goes to a PNG file instead
    from PIL import Image

    Image.fromarray(sheet).save("brnpa_parts.png")
else:
    fig, ax = plt.subplots(figsize=(7.5, 7.5 * sheet.shape[0] / sheet.shape[1]))
    ax.imshow(sheet)
    ax.set_axis_off()
    fig.subplots_adjust(left=0, right=1, top=1, bottom=0)
    plt.show()
