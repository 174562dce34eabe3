"""
=============================================
Explaining a Keras model
=============================================

The explainers take a Keras 3 model (on TensorFlow) exactly as they take a PyTorch one:
images in the model's own layout (NHWC here) and a layer by name. The backend,
``sklearn-caf-tensorflow``, is picked from the model. A small CNN is trained on
:func:`~sklearn_caf.datasets.make_squares` images (a coloured square on noise, the class
is its colour, with a brighter grey distractor square that is the same in every class),
then explained with class-specific L2-CAF and Grad-CAM; the boxes are scored against the
known squares.
"""

# %%
# Training a small Keras CNN (a few seconds on a CPU)
# ---------------------------------------------------
import keras
import matplotlib.pyplot as plt
import numpy as np

from sklearn_caf import GradCAMExplainer, HeatmapBoxes, L2CAFExplainer
from sklearn_caf.datasets import make_squares
from sklearn_caf.metrics import max_box_accuracy
from sklearn_caf.plotting import draw_box, overlay_heatmap

keras.utils.set_random_seed(0)
X, y, boxes = make_squares(
    600, size=32, n_classes=3, distractor=True, channels_last=True, random_state=0
)
X_train, y_train = X[:500], y[:500]
X_test, y_test, boxes_test = X[500:], y[500:], boxes[500:]

model = keras.Sequential(
    [
        keras.Input((32, 32, 3)),
        keras.layers.Conv2D(16, 3, padding="same", activation="relu", name="conv1"),
        keras.layers.MaxPooling2D(name="pool1"),
        keras.layers.Conv2D(32, 3, padding="same", activation="relu", name="conv2"),
        keras.layers.GlobalAveragePooling2D(name="gap"),
        keras.layers.Dense(3, name="logits"),
    ]
)
model.compile(
    optimizer=keras.optimizers.Adam(3e-3),
    loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
    metrics=["accuracy"],
)
model.fit(X_train, y_train, epochs=6, batch_size=32, verbose=0)
print("test accuracy:", model.evaluate(X_test, y_test, verbose=0)[1])

# %%
# Explaining it
# -------------
# ``layer="conv2"``: the last convolutional layer (16x16 feature maps). The head after it
# (global average pooling, a dense layer) is affine in L2-CAF's filter, so L2-CAF is solved
# exactly here too.
explainers = {
    "L2-CAF": L2CAFExplainer(model=model, layer="conv2", objective="class-specific"),
    "Grad-CAM": GradCAMExplainer(model=model, layer="conv2"),
}
# Localization is scored by MaxBoxAcc: the share of images whose box reaches IoU 0.5 with
# the true square, at the map threshold where that share is highest. (At CAM's fixed 20%,
# the maps, upsampled from 16x16, give boxes larger than the 8-pixel squares.)
heatmaps, cut = {}, {}
for name, explainer in explainers.items():
    heatmaps[name] = explainer.fit(X_test).transform(X_test, targets=y_test)
    result = max_box_accuracy(heatmaps[name], boxes_test)
    cut[name] = max(result.best_thresholds[0], 0.01)
    print(f"{name:>8}: MaxBoxAcc {result.score:.2f} at threshold {cut[name]:.2f}")
print("backend:", explainers["L2-CAF"].backend_, "solver:", explainers["L2-CAF"].solver_)

# %%
# The maps of the true class; the true square in green, the map's box (at its best
# threshold) in white. The grey
# distractor is brighter than the object in every channel, but does not tell the classes
# apart: a network that learned the task looks at the coloured square.
scale = 4
shown = np.arange(5)
pictures = np.clip(X_test[shown], 0, 1).repeat(scale, axis=1).repeat(scale, axis=2)
pictures = (pictures * 255).astype(np.uint8)
fig, axes = plt.subplots(len(shown), 3, figsize=(6.5, 2.2 * len(shown)))
for row, i in enumerate(shown):
    truth = boxes_test[i] * scale
    axes[row, 0].imshow(draw_box(pictures[row], truth, color=(0, 255, 0)))
    for col, (name, maps) in enumerate(heatmaps.items(), start=1):
        box = HeatmapBoxes(threshold=cut[name]).fit_transform(maps[i : i + 1])[0, :4] * scale
        overlay = draw_box(overlay_heatmap(pictures[row], maps[i]), truth, color=(0, 255, 0))
        axes[row, col].imshow(draw_box(overlay, box, color=(255, 255, 255)))
for ax, title in zip(axes[0], ["image", *heatmaps], strict=True):
    ax.set_title(title)
for ax in axes.ravel():
    ax.set_axis_off()
fig.tight_layout()
plt.show()
