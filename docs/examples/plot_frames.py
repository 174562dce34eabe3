"""
==========================================
Per-frame maps of a CNN + LSTM clip model
==========================================

The L2-CAF paper explains recurrent video models with one filter per frame (its Sec. 4.3
and Fig. 9): the filter of frame ``t`` multiplies that frame's feature maps while the
other frames pass unfiltered. Here a small CNN runs on every frame of a synthetic clip --
a coloured disc moving over clutter, the class is the disc's colour -- an LSTM fuses the
frames, and :class:`~sklearn_caf.L2CAFExplainer` and
:class:`~sklearn_caf.GradCAMExplainer` with ``frame_axis=1`` give one map per frame.
"""

# %%
# Synthetic clips
# ---------------
# Each clip has T = 6 frames of 24x24 pixels: grey clutter blobs and noise, and a disc of
# one colour (the class) crossing the frame along a random straight line.
import matplotlib.pyplot as plt
import numpy as np
import torch
from torch import nn

from sklearn_caf import GradCAMExplainer, L2CAFExplainer
from sklearn_caf.plotting import overlay_heatmap

T, SIZE, N_CLASSES = 6, 24, 3
COLOURS = np.array([[1.0, 0.2, 0.2], [0.2, 0.9, 0.2], [0.2, 0.4, 1.0]])


def make_clips(n, seed):
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:SIZE, :SIZE]
    clips = np.empty((n, T, SIZE, SIZE, 3), dtype=np.float32)
    labels = rng.integers(N_CLASSES, size=n)
    for i in range(n):
        background = np.repeat(0.3 + 0.1 * rng.standard_normal((SIZE, SIZE, 1)), 3, axis=2)
        for _ in range(6):  # grey blobs
            cy, cx = rng.uniform(0, SIZE, 2)
            r = rng.uniform(2, 5)
            blob = ((yy - cy) ** 2 + (xx - cx) ** 2 < r**2)[..., None]
            background = np.where(blob, rng.uniform(0.05, 0.6), background)
        start = rng.uniform(4, SIZE - 4, size=2)
        end = SIZE - start  # through the centre, to the opposite side
        for t in range(T):
            cy, cx = start + (end - start) * t / (T - 1)
            disc = ((yy - cy) ** 2 + (xx - cx) ** 2 < 4**2)[..., None]
            clips[i, t] = np.where(disc, COLOURS[labels[i]], background)
    clips = np.clip(clips + 0.03 * rng.standard_normal(clips.shape), 0, 1)
    # PyTorch layout: (n, T, channels, height, width)
    return clips.transpose(0, 1, 4, 2, 3).astype(np.float32), labels


X_train, y_train = make_clips(300, seed=0)
X_test, y_test = make_clips(40, seed=1)

# %%
# A per-frame CNN and an LSTM
# ---------------------------
# The CNN runs on the n*T frames at once (``x.flatten(0, 1)``), the form the explainers
# support; ``cnn.4`` (the last ReLU, 12x12 maps) is the layer explained.


class ClipNet(nn.Module):
    def __init__(self):
        super().__init__()
        self.cnn = nn.Sequential(
            nn.Conv2d(3, 8, 3, padding=1),
            nn.ReLU(),
            nn.MaxPool2d(2),
            nn.Conv2d(8, 16, 3, padding=1),
            nn.ReLU(),
        )
        self.lstm = nn.LSTM(16, 16, batch_first=True)
        self.fc = nn.Linear(16, N_CLASSES)

    def forward(self, x):
        n, t = x.shape[:2]
        a = self.cnn(x.flatten(0, 1))  # (n * T, 16, 12, 12)
        h, _ = self.lstm(a.mean(dim=(2, 3)).view(n, t, -1))
        return self.fc(h.mean(dim=1))  # the LSTM's outputs, averaged over the frames


torch.manual_seed(0)
net = ClipNet()
optimizer = torch.optim.Adam(net.parameters(), lr=5e-3)
Xt, yt = torch.as_tensor(X_train), torch.as_tensor(y_train)
for _ in range(6):  # a few seconds on a CPU
    for batch in torch.randperm(len(Xt)).split(32):
        loss = nn.functional.cross_entropy(net(Xt[batch]), yt[batch])
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
net.eval()
with torch.no_grad():
    accuracy = (net(torch.as_tensor(X_test)).argmax(1).numpy() == y_test).mean()
print(f"test accuracy: {accuracy:.2f}")

# %%
# One map per frame
# -----------------
# ``transform`` gives ``(n_clips, T, H, W)``. L2-CAF solves the T problems of every clip
# together (one problem row per frame); Grad-CAM pools each frame's gradient on its own.
clips = X_test[[np.flatnonzero(y_test == c)[0] for c in (0, 2)]]  # a red and a blue disc
l2caf = L2CAFExplainer(
    model=net, layer="cnn.4", frame_axis=1, objective="class-specific", solver="lbfgs"
)
gradcam = GradCAMExplainer(model=net, layer="cnn.4", frame_axis=1)
maps = {
    "L2-CAF": l2caf.fit(clips).transform(clips),
    "Grad-CAM": gradcam.fit(clips).transform(clips),
}
print({name: m.shape for name, m in maps.items()})

# %%
# The maps follow the disc from frame to frame. (For green discs this small network
# leans on the grey clutter instead -- it reads green as "neither red nor blue"; try
# ``y_test == 1`` to see both methods show it.)
#
# As in the paper's Fig. 9: the frames in a row, each method's maps under them.
fig, axes = plt.subplots(2 * 3, T, figsize=(1.6 * T, 1.7 * 6))
for i, clip in enumerate(clips):
    frames = (clip.transpose(0, 2, 3, 1) * 255).astype(np.uint8)
    rows = [("frames", None), *maps.items()]
    for r, (name, heat) in enumerate(rows):
        for t in range(T):
            ax = axes[3 * i + r, t]
            image = frames[t] if heat is None else overlay_heatmap(frames[t], heat[i, t])
            ax.imshow(image)
            ax.set_xticks([])
            ax.set_yticks([])
            if t == 0:
                ax.set_ylabel(name if r else f"clip {i}", fontsize=8)
fig.tight_layout()
plt.show()
