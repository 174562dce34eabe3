"""deletion_insertion's cost against the bare forward passes it needs, and against RISE's loop.

Run from the repository root (repeatable CPU timings need the malloc settings):

    MALLOC_MMAP_THRESHOLD_=4000000000 MALLOC_TRIM_THRESHOLD_=4000000000 \
        python benchmarks/bench_deletion_insertion.py

EfficientNet-Lite0 (ImageNet weights, the ``demo`` extra) on two sample photos at 160x160,
Grad-CAM at ``_head_relu6``, ``n_steps=20``: 42 forward passes per image. Three timings, the
best of ``--repeats`` each, interleaved:

- *forward passes*: the baseline, the same 84 perturbed images built beforehand with
  NumPy, run through the model in batches of ``--batch-size`` under ``torch.no_grad()``;
- *deletion_insertion*: the library call on a fitted explainer, everything included (the
  model's top-1 pass, the maps, the blur, building the perturbed images on the device);
- *RISE-style loop*: one image and one step at a time (batch of 1), perturbing a copy on
  the host, as the authors' ``CausalMetric`` does.

It prints a Markdown table (paste it into benchmarks/README.md).
"""

from __future__ import annotations

import argparse
import platform
import time

import numpy as np


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--batch-size", type=int, default=42)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()

    import torch
    from scipy.ndimage import gaussian_filter

    from sklearn_caf import GradCAMExplainer
    from sklearn_caf.datasets import load_sample_photos
    from sklearn_caf.evaluation import deletion_insertion
    from sklearn_caf.evaluation._faithfulness import pixel_counts, saliency_ranks
    from sklearn_caf_torch.pretrained import (
        EFFICIENTNET_LITE0_LAYER,
        efficientnet_lite0,
        preprocess_efficientnet_lite,
    )

    torch.set_num_threads(args.threads)
    n_steps, sigma = 20, 3.5
    _, photos = load_sample_photos()
    X = preprocess_efficientnet_lite(photos[:2], size=160)
    net = efficientnet_lite0()
    explainer = GradCAMExplainer(model=net, layer=EFFICIENTNET_LITE0_LAYER).fit(X[:1])
    table = deletion_insertion(
        explainer, X, n_steps=n_steps, blur_sigma=sigma, batch_size=args.batch_size
    )
    targets = table["target"].to_numpy()
    heatmaps = explainer.transform(X, targets=targets)
    ranks = saliency_ranks(heatmaps)[:, None]  # (n, 1, H, W)
    counts = pixel_counts(ranks[0].size, n_steps)
    blurred = gaussian_filter(X, sigma=(0, 0, sigma, sigma), mode="nearest")
    perturbed = []
    for i in range(len(X)):
        for c in counts:
            mask = ranks[i] < c
            perturbed.append(np.where(mask, 0.0, X[i]))
            perturbed.append(np.where(mask, X[i], blurred[i]))
    perturbed = np.stack(perturbed).astype(np.float32)
    # The baseline runs the same images as the library: same probabilities.
    with torch.no_grad():
        p = torch.softmax(net(torch.as_tensor(perturbed)), 1).numpy()
    p = p[np.arange(len(p)), np.repeat(targets, 2 * len(counts))].reshape(len(X), -1, 2)
    np.testing.assert_allclose(p[..., 0], np.stack(table["deletion_curve"]), atol=1e-4)
    np.testing.assert_allclose(p[..., 1], np.stack(table["insertion_curve"]), atol=1e-4)

    def forward_passes():
        with torch.no_grad():
            for lo in range(0, len(perturbed), args.batch_size):
                net(torch.as_tensor(perturbed[lo : lo + args.batch_size]))

    def library():
        deletion_insertion(
            explainer, X, n_steps=n_steps, blur_sigma=sigma, batch_size=args.batch_size
        )

    def rise_loop():
        with torch.no_grad():
            for i in range(len(X)):
                order = np.argsort(ranks[i].ravel())
                for start, finish in ((X[i], np.zeros_like(X[i])), (blurred[i], X[i])):
                    image = start.copy().reshape(3, -1)
                    for k in range(len(counts)):
                        torch.softmax(net(torch.as_tensor(image.reshape(1, *X.shape[1:]))), 1)
                        if k + 1 < len(counts):
                            moved = order[counts[k] : counts[k + 1]]
                            image[:, moved] = finish.reshape(3, -1)[:, moved]

    timings: dict[str, list[float]] = {"forward": [], "library": [], "rise": []}
    for _ in range(args.repeats):
        for name, fn in (("forward", forward_passes), ("library", library), ("rise", rise_loop)):
            t = time.perf_counter()
            fn()
            timings[name].append(time.perf_counter() - t)
    best = {k: min(v) for k, v in timings.items()}
    print(
        f"EfficientNet-Lite0, 2 photos at 160x160, n_steps={n_steps} "
        f"({len(perturbed)} forward passes), batch {args.batch_size}, CPU "
        f"({platform.machine()}, {args.threads} threads), torch {torch.__version__}; "
        f"best of {args.repeats}.\n"
    )
    print("| | seconds | ratio to the forward passes |")
    print("|---|---:|---:|")
    print(f"| forward passes alone (baseline) | {best['forward']:.2f} | 1.00 |")
    print(
        f"| `deletion_insertion` | {best['library']:.2f} | "
        f"{best['library'] / best['forward']:.2f} |"
    )
    print(
        f"| RISE-style loop (batch of 1) | {best['rise']:.2f} | "
        f"{best['rise'] / best['forward']:.2f} |"
    )


if __name__ == "__main__":
    main()
