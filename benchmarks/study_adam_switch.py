"""When could ``adam-lbfgs`` leave Adam? A map-stability rule, measured offline.

``solver="adam-lbfgs"`` runs a fixed number of the authors' Adam iterations (150
class-oblivious, 100 class-specific) before L-BFGS. This study asks whether a per-filter
rule on the map, "switch once the map correlates at >= ``tau`` with the map ``lag``
iterations earlier" (checked every 10 iterations), could switch earlier on average while
every filter is already in the basin of the 1000-iteration optimum.

It records the first 300 iterations of ``solver="adam", max_iter=1000, tol=0`` on
EfficientNet-Lite0 (the iterations of the library's own ``AdamStep``), then, for each rule,
reports each image's switch iteration and the worst correlation, at that point, with the
1000-iteration map (``bench_explainers``'s cached reference). Nothing here changes the
library. Run from the repository root:

    python benchmarks/study_adam_switch.py
"""

from __future__ import annotations

import argparse
import warnings

import numpy as np
import torch
from bench_explainers import _correlation, _images, _reference

from sklearn_caf import L2CAFExplainer
from sklearn_caf._explainers.l2caf import _adam
from sklearn_caf_torch.pretrained import efficientnet_lite0

N_ITER = 300


class _Enough(Exception):
    pass


def _trajectory(net, X: np.ndarray, layer: str, objective: str) -> np.ndarray:
    """The parameters after each of the first ``N_ITER`` Adam iterations, (N_ITER, n, p)."""
    explainer = L2CAFExplainer(
        model=net, layer=layer, objective=objective, solver="adam", max_iter=1000, tol=0
    ).fit(X[:1])
    original, record = _adam.AdamStep.__call__, []

    def recording(self, x, *args):
        result = original(self, x, *args)
        record.append(result[1].detach().clone())
        if len(record) == N_ITER:
            raise _Enough
        return result

    _adam.AdamStep.__call__ = recording
    try:
        explainer.explain(X)
    except _Enough:
        pass
    finally:
        _adam.AdamStep.__call__ = original
    return torch.stack(record).reshape(N_ITER, len(X), -1).numpy()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--layers", default="_blocks.10,_blocks.12")
    args = parser.parse_args()
    warnings.simplefilter("ignore")
    net = efficientnet_lite0()
    X = _images(args.batch)
    print("| layer | objective | rule (lag, tau) | switch per image | mean | worst corr. |")
    print("|---|---|---|---|---:|---:|")
    for layer in args.layers.split(","):
        for objective in ("class-oblivious", "class-specific"):
            traj = _trajectory(net, X, layer, objective)
            reference = _reference(net, X, layer, objective, True).reshape(len(X), -1)
            at_ref = np.stack([_correlation(traj[t], reference) for t in range(N_ITER)])
            fixed = 150 if objective == "class-oblivious" else 100
            print(
                f"| `{layer}` | {objective} | fixed {fixed} (today) | - | {fixed} "
                f"| {at_ref[fixed - 1].min():.3f} |"
            )
            for lag, tau in ((10, 0.999), (10, 0.9995), (20, 0.9995), (10, 0.9999)):
                switch = []
                for i in range(len(X)):
                    t_switch = N_ITER
                    for t in range(max(2 * lag, 20), N_ITER + 1, 10):
                        pair = traj[[t - 1, t - 1 - lag], i]
                        if _correlation(pair[:1], pair[1:])[0] >= tau:
                            t_switch = t
                            break
                    switch.append(t_switch)
                worst = min(at_ref[t - 1, i] for i, t in enumerate(switch))
                print(
                    f"| `{layer}` | {objective} | {lag}, {tau} | {', '.join(map(str, switch))} "
                    f"| {np.mean(switch):.0f} | {worst:.3f} |"
                )


if __name__ == "__main__":
    main()
