"""Explaining transformers: ms per image of Grad-CAM and L2-CAF on ViT-B/16 and Swin-T.

Random weights (the classifier re-drawn: torchvision zero-initializes a ViT's), batch 2,
CPU. Each model at its usual layer: ViT-B/16 at the last block's ``ln_1`` (tokens, a
14 x 14 grid after the class token), Swin-T at ``norm`` (channels last, 7 x 7). Ratios are
to our Grad-CAM in the same run.

    MALLOC_MMAP_THRESHOLD_=4000000000 MALLOC_TRIM_THRESHOLD_=4000000000 \\
        python benchmarks/bench_layouts.py

torchvision must be importable (its model definitions only; see tests/conftest.py's
``import_torchvision`` for a torchvision built for another torch).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from conftest import import_torchvision

from sklearn_caf import GradCAMExplainer, L2CAFExplainer


def models(torchvision):
    torch.manual_seed(0)
    vit = torchvision.models.vit_b_16()
    torch.nn.init.normal_(vit.heads.head.weight, std=0.01)
    swin = torchvision.models.swin_t()
    return [
        ("ViT-B/16", vit.eval(), "encoder.layers.encoder_layer_11.ln_1"),
        ("Swin-T", swin.eval(), "norm"),
    ]


def per_image(explainer, images, repeats):
    explainer.fit(images[:1])
    best = np.inf
    for _ in range(repeats):
        start = time.perf_counter()
        explanation = explainer.explain(images)
        best = min(best, time.perf_counter() - start)
    return 1000 * best / len(images), explanation


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torchvision = import_torchvision()
    images = np.random.default_rng(0).standard_normal((args.batch, 3, 224, 224))
    images = images.astype(np.float32)
    print("| model | layer | layout | method | ms/image | x Grad-CAM | iterations |")
    print("|---|---|---|---|---|---|---|")
    for name, model, layer in models(torchvision):
        methods = [
            ("Grad-CAM", GradCAMExplainer(model=model, layer=layer)),
            ("L2-CAF class-oblivious", L2CAFExplainer(model=model, layer=layer)),
            (
                "L2-CAF class-specific",
                L2CAFExplainer(model=model, layer=layer, objective="class-specific"),
            ),
        ]
        base = None
        for method, explainer in methods:
            repeats = args.repeats if method == "Grad-CAM" else 1
            ms, explanation = per_image(explainer, images, repeats)
            base = base or ms
            layout = explainer.layout_ + (f" {explainer.grid_}" if explainer.grid_ else "")
            n_iter = "" if explanation.n_iter is None else int(explanation.n_iter.mean())
            print(
                f"| {name} | `{layer}` | {layout} | {method} | {ms:.0f} | {ms / base:.1f} "
                f"| {n_iter} |"
            )


if __name__ == "__main__":
    main()
