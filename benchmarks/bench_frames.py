"""Per-frame L2-CAF on a CNN + LSTM clip model: batched problems against a frame loop.

``L2CAFExplainer(frame_axis=1)`` solves the ``n * T`` per-frame problems of a batch
together (one problem row per clip and frame). The baseline is the straightforward
procedure: one frame of one clip at a time, the same head and the same Adam iterations
(``torch.optim.Adam``, a fixed number of iterations on both sides, ``tol=0``). Grad-CAM
per frame is the other reference. Ratios are against the batched L2-CAF of the same run.

    MALLOC_MMAP_THRESHOLD_=4000000000 MALLOC_TRIM_THRESHOLD_=4000000000 \\
        python benchmarks/bench_frames.py
"""

from __future__ import annotations

import platform
import time
import warnings

import numpy as np
import torch
from sklearn.exceptions import ConvergenceWarning
from torch import nn

from sklearn_caf import GradCAMExplainer, L2CAFExplainer

N, T, SIZE, N_ITER = 4, 8, 32, 200


class ClipNet(nn.Module):
    def __init__(self):
        super().__init__()
        self.cnn = nn.Sequential(
            nn.Conv2d(3, 16, 3, padding=1),
            nn.ReLU(),
            nn.MaxPool2d(2),
            nn.Conv2d(16, 32, 3, padding=1),
            nn.ReLU(),
        )
        self.lstm = nn.LSTM(32, 32, batch_first=True)
        self.fc = nn.Linear(32, 10)

    def head(self, a, n):
        h, _ = self.lstm(a.mean(dim=(2, 3)).view(n, -1, a.shape[1]))
        return self.fc(h[:, -1])

    def forward(self, x):
        return self.head(self.cnn(x.flatten(0, 1)), x.shape[0])


def frame_loop(net, X):
    """One (clip, frame) problem at a time: class-oblivious, filter of frame t only."""
    n, t = X.shape[:2]
    with torch.no_grad():
        a = net.cnn(torch.as_tensor(X).flatten(0, 1))
        a = a.view(n, t, *a.shape[1:])
        z0 = net(torch.as_tensor(X))
    h, w = a.shape[-2:]
    for i in range(n):
        for s in range(t):
            f = nn.Parameter(torch.ones(h, w))
            opt = torch.optim.Adam([f], lr=0.5)
            sched = torch.optim.lr_scheduler.LambdaLR(
                opt, lambda k: 1 + (1e-5 / 0.5 - 1) * k / (N_ITER - 1)
            )
            for _ in range(N_ITER):
                scale = [torch.ones(h, w)] * t
                scale[s] = f / f.norm()
                loss = ((net.head(a[i] * torch.stack(scale)[:, None], 1)[0] - z0[i]) ** 2).mean()
                opt.zero_grad()
                loss.backward()
                opt.step()
                sched.step()


def best_of(fn, repeats=3):
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times)


def main() -> None:
    torch.set_num_threads(2)
    torch.manual_seed(0)
    net = ClipNet().eval()
    X = np.random.default_rng(0).uniform(size=(N, T, 3, SIZE, SIZE)).astype(np.float32)
    l2caf = L2CAFExplainer(
        model=net, layer="cnn.4", frame_axis=1, solver="adam", max_iter=N_ITER, tol=0
    ).fit(X)
    gradcam = GradCAMExplainer(model=net, layer="cnn.4", frame_axis=1).fit(X)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        batched = best_of(lambda: l2caf.transform(X))
        loop = best_of(lambda: frame_loop(net, X), repeats=1)
        cam = best_of(lambda: gradcam.transform(X))
    print(
        f"CNN + LSTM clip model, {N} clips x {T} frames of {SIZE}x{SIZE}, layer cnn.4 "
        f"(32x16x16), L2-CAF class-oblivious Adam {N_ITER} iterations, CPU "
        f"({platform.machine()}, 2 threads), torch {torch.__version__}; best of 3 "
        f"(frame loop: 1 run).\n"
    )
    print("| method | s per batch | ratio to batched L2-CAF |")
    print("|---|---:|---:|")
    for name, seconds in (
        ("L2-CAF, frame_axis=1 (n*T problems batched)", batched),
        ("L2-CAF, one frame of one clip at a time (torch.optim.Adam loop)", loop),
        ("Grad-CAM, frame_axis=1", cam),
    ):
        print(f"| {name} | {seconds:.3f} | {seconds / batched:.2f} |")


if __name__ == "__main__":
    main()
