"""What each way of splitting a PyTorch model costs, on EfficientNet-Lite0 (CPU).

The PyTorch backend splits a model at a layer with torch.fx, else torch.export, else
forward hooks on the real model (see ``sklearn_caf_torch.TorchBackend``). This forces each
method on the same model (``TorchBackend(split=...)``) and times, in one run:

- fit: splitting the model (tracing, exporting) plus the check against the model itself;
- Grad-CAM, and L2-CAF's fast variant with a fixed number of Adam iterations (the head is
  evaluated once per iteration, so the hooks' head, which reruns the trunk, costs the most
  there), and L2-CAF with ``solver="auto"`` (exact at the last layer).

Ratios are to Grad-CAM with the fx split, measured in the same run. Run from the
repository root:

    MALLOC_MMAP_THRESHOLD_=4000000000 MALLOC_TRIM_THRESHOLD_=4000000000 \\
        python benchmarks/bench_split.py
"""

from __future__ import annotations

import argparse
import platform
import time
import warnings

import torch
from bench_explainers import _images, _time  # same photos, same timing rule

from sklearn_caf import GradCAMExplainer, L2CAFExplainer
from sklearn_caf_torch import TorchBackend
from sklearn_caf_torch.pretrained import (
    EFFICIENTNET_LITE0_LAYER,
    efficientnet_lite0,
)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--iterations", type=int, default=50)
    parser.add_argument("--layers", default=f"{EFFICIENTNET_LITE0_LAYER},_blocks.10")
    args = parser.parse_args()
    warnings.simplefilter("ignore")  # ConvergenceWarning of the capped Adam runs

    net = efficientnet_lite0()
    X = _images(args.batch)
    rows = []
    for layer in args.layers.split(","):
        baseline = None
        for split in ("fx", "export", "hooks"):
            backend = TorchBackend(split=split)
            start = time.perf_counter()
            gradcam = GradCAMExplainer(model=net, layer=layer, backend=backend).fit(X[:1])
            t_fit = time.perf_counter() - start
            t_gradcam = _time(lambda e=gradcam: e.transform(X), args.repeats)
            baseline = baseline or t_gradcam
            adam = L2CAFExplainer(
                model=net,
                layer=layer,
                backend=backend,
                solver="adam",
                max_iter=args.iterations,
                tol=0.0,
                batch_size=args.batch,
            ).fit(X[:1])
            t_adam = _time(lambda e=adam: e.transform(X), max(1, args.repeats - 2))
            auto = L2CAFExplainer(
                model=net, layer=layer, backend=backend, batch_size=args.batch
            ).fit(X[:1])
            t_auto = _time(lambda e=auto: e.transform(X), max(1, args.repeats - 2))
            rows.append((layer, split, t_fit, t_gradcam, t_adam, auto.solver_, t_auto, baseline))

    print(
        f"EfficientNet-Lite0, batch {args.batch}, 224x224, CPU "
        f"({platform.processor() or platform.machine()}, {torch.get_num_threads()} threads), "
        f"torch {torch.__version__}; best of {args.repeats} runs; L2-CAF Adam with "
        f"{args.iterations} iterations. ms/image (ratio to Grad-CAM with the fx split at the "
        f"same layer).\n"
    )
    print("| layer | split | fit (s) | Grad-CAM | L2-CAF fast, Adam | L2-CAF fast, auto |")
    print("|---|---|---:|---:|---:|---:|")
    n = len(X)
    for layer, split, t_fit, t_gc, t_adam, solver, t_auto, base in rows:
        print(
            f"| `{layer}` | {split} | {t_fit:.2f} | {1000 * t_gc / n:.1f} ({t_gc / base:.2f}) "
            f"| {1000 * t_adam / n:.1f} ({t_adam / base:.1f}) "
            f"| {1000 * t_auto / n:.1f} ({t_auto / base:.1f}; {solver}) |"
        )


if __name__ == "__main__":
    main()
