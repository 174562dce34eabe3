"""What folding batch norms into convolutions saves, on EfficientNet-Lite0 (CPU).

The PyTorch backend folds every ``conv -> batch norm`` pair of a traced split into one
convolution and, on the CPU, runs the activations in channels-last order, where either
reproduces the model (``sklearn_caf_torch._fold``). This times three variants of the same
fx split in one run, forced by replacing the binding's choice:

- ``as traced``: the graph torch.fx records, as before folding;
- ``folded``: batch norms folded, activations in the default (channels-first) order;
- ``folded + channels-last``: what the backend picks on the CPU.

For each: the trunk (input -> layer), one evaluation of the head with its gradient (what
every iteration of L2-CAF costs), Grad-CAM, and L2-CAF (fast, default solver), with the
largest difference of their maps from the traced graph's (L2-CAF: the worst image's
correlation, and the head evaluations its filters took, summed over the batch). Ratios
are to the traced graph in the same run. Run from the repository root:

    MALLOC_MMAP_THRESHOLD_=4000000000 MALLOC_TRIM_THRESHOLD_=4000000000 \\
        python benchmarks/bench_fold.py
"""

from __future__ import annotations

import argparse
import platform
import warnings

import numpy as np
import torch
from bench_explainers import _correlation, _images, _time  # same photos, same timing rule

from sklearn_caf import GradCAMExplainer, L2CAFExplainer
from sklearn_caf_torch._bound import TorchBoundModel
from sklearn_caf_torch.pretrained import EFFICIENTNET_LITE0_LAYER, efficientnet_lite0

_CHOSEN = TorchBoundModel._fastest
VARIANTS = {
    "as traced": lambda self, split, x: split,
    "folded": lambda self, split, x: split.folded(False) or split,
    "folded + channels-last": _CHOSEN,
}


def _head_evaluation(bound: TorchBoundModel, X: np.ndarray):
    with bound:
        x = bound.asarray(X)
        a, context = bound.trunk(x)
        target = bound.head(a, context).detach()
        f = torch.ones((a.shape[0], 1, *a.shape[2:]), dtype=a.dtype)

    def trunk() -> None:
        with bound:
            bound.trunk(x)

    def evaluate() -> None:
        with bound:
            bound.value_and_grad(
                lambda p: ((bound.head(a * p, context) - target) ** 2).sum((1,)), f
            )

    return trunk, evaluate


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--layers", default=f"{EFFICIENTNET_LITE0_LAYER},_blocks.10")
    parser.add_argument("--threads", type=int, default=None)
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    warnings.simplefilter("ignore")
    net = efficientnet_lite0()
    X = _images(args.batch)
    rows = []
    for layer in args.layers.split(","):
        base: dict = {}
        for name, choose in VARIANTS.items():
            TorchBoundModel._fastest = choose
            try:
                bound = TorchBoundModel(net, layer=layer, output=None, device="cpu")
                trunk, evaluate = _head_evaluation(bound, X)
                gradcam = GradCAMExplainer(model=net, layer=layer).fit(X[:1])
                l2caf = L2CAFExplainer(model=net, layer=layer, batch_size=args.batch)
                l2caf.fit(X[:1])
            finally:
                TorchBoundModel._fastest = _CHOSEN
            times = {
                "trunk": _time(trunk, args.repeats),
                "head": _time(evaluate, args.repeats),
                "gradcam": _time(lambda e=gradcam: e.transform(X), args.repeats),
                "l2caf": _time(lambda e=l2caf: e.transform(X), max(1, args.repeats - 3)),
            }
            explanation = l2caf.explain(X)
            maps = {"gradcam": gradcam.explain(X).maps[:, 0], "l2caf": explanation.maps[:, 0]}
            evaluations = int(np.sum(explanation.n_iter))
            base = base or {"times": times, "maps": maps}
            diff = np.abs(maps["gradcam"] - base["maps"]["gradcam"]).max()
            corr = _correlation(maps["l2caf"], base["maps"]["l2caf"]).min()
            solver = f"{l2caf.solver_}, {evaluations} evaluations"
            rows.append((layer, name, times, base["times"], solver, diff, corr))

    print(
        f"EfficientNet-Lite0, batch {args.batch}, 224x224, CPU "
        f"({platform.processor() or platform.machine()}, {torch.get_num_threads()} threads), "
        f"torch {torch.__version__}; best of {args.repeats} runs (L2-CAF: "
        f"{max(1, args.repeats - 3)}). ms per batch (ratio to the graph as traced).\n"
    )
    print(
        "| layer | graph | trunk | head eval. (value and gradient) | Grad-CAM "
        "| L2-CAF fast, default solver | max. Grad-CAM diff. | L2-CAF corr. (min) |"
    )
    print("|---|---|---:|---:|---:|---:|---:|---:|")
    for layer, name, times, base, solver, diff, corr in rows:
        cells = " | ".join(
            f"{1000 * times[k]:.0f} ({base[k] / times[k]:.2f}x)"
            for k in ("trunk", "head", "gradcam", "l2caf")
        )
        print(f"| `{layer}` | {name} | {cells} ({solver}) | {diff:.1e} | {corr:.4f} |")


if __name__ == "__main__":
    main()
