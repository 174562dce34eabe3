"""The evaluation runner's cost over explaining alone, and its peak memory at 200 vs 2,000 images.

Run from the repository root (repeatable CPU timings need the malloc settings):

    MALLOC_MMAP_THRESHOLD_=4000000000 MALLOC_TRIM_THRESHOLD_=4000000000 \
        python benchmarks/bench_evaluation.py

A synthetic WSOL set (``make_wsol_dataset``, 64x64) is written to a temporary folder as PNG
files in wsolevaluation's metadata layout and read back lazily with
``ImageBoxDataset.from_wsol``, as a real benchmark would read ImageNet or CUB. Each
measurement runs in a fresh process (so peak RSS is its own) and times only the work, not
the imports:

- *explain only*: the baseline, the same chunks loaded and explained (``explain``), nothing
  kept;
- *runner*: ``evaluate_localization(..., out=DIR)``, serial: the same explanations plus the
  true class's maps where the prediction is wrong, boxes, IoU curves (v1 and v2, 100
  thresholds), Parquet parts and the summary.

It prints a Markdown table (paste it into benchmarks/README.md): images/s of both, their
ratio, and each process's peak RSS.
"""

from __future__ import annotations

import argparse
import json
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

CHUNK = 50
SIZE = 64


def _net():
    from collections import OrderedDict

    import torch
    from torch import nn

    torch.manual_seed(0)
    return nn.Sequential(
        OrderedDict(
            conv1=nn.Conv2d(3, 16, 3, padding=1),
            relu1=nn.ReLU(),
            pool1=nn.MaxPool2d(2),
            conv2=nn.Conv2d(16, 32, 3, padding=1),
            relu2=nn.ReLU(),
            pool2=nn.MaxPool2d(4),  # 8x8 maps
            gap=nn.AdaptiveAvgPool2d(1),
            flatten=nn.Flatten(),
            fc=nn.Linear(32, 3),
        )
    ).eval()


def _explainer(method: str):
    from sklearn_caf import GradCAMExplainer, L2CAFExplainer

    net = _net()
    if method == "gradcam":
        return GradCAMExplainer(model=net, layer="pool2")
    return L2CAFExplainer(model=net, layer="pool2")


def write_dataset(root: Path, n: int) -> None:
    from PIL import Image

    from sklearn_caf.datasets import make_wsol_dataset

    data = make_wsol_dataset(n, image_size=SIZE, n_classes=3, random_state=0)
    (root / "images").mkdir(parents=True)
    lines: dict[str, list[str]] = {"ids": [], "labels": [], "sizes": [], "boxes": []}
    for i in range(n):
        image, label, boxes = data[i]
        pixels = np.clip(np.rint(image.transpose(1, 2, 0) * 255), 0, 255).astype(np.uint8)
        path = f"images/{i:05d}.png"
        Image.fromarray(pixels).save(root / path)
        lines["ids"].append(path)
        lines["labels"].append(f"{path},{label}")
        lines["sizes"].append(f"{path},{SIZE},{SIZE}")
        # Inclusive last-pixel coordinates, as wsolevaluation's localization.txt holds them.
        lines["boxes"] += [
            f"{path},{x0:g},{y0:g},{x1 - 1:g},{y1 - 1:g}" for x0, y0, x1, y1 in boxes
        ]
    meta = root / "metadata"
    meta.mkdir()
    for name, key in (
        ("image_ids.txt", "ids"),
        ("class_labels.txt", "labels"),
        ("image_sizes.txt", "sizes"),
        ("localization.txt", "boxes"),
    ):
        (meta / name).write_text("\n".join(lines[key]) + "\n")


def worker(mode: str, method: str, n: int, root: Path) -> dict:
    import resource

    import torch

    from sklearn_caf.datasets import ImageBoxDataset
    from sklearn_caf.evaluation import evaluate_localization

    torch.set_num_threads(1)
    data = ImageBoxDataset.from_wsol(root / "metadata", root, image_size=SIZE, max_images=n)
    explainer = _explainer(method).fit(data.load([0])[0])
    compile_s = 0.0
    if mode == "runner":
        # The first IoU-curve call in a process compiles the numba kernel: timed apart.
        from sklearn_caf.metrics import box_iou_curves

        start = time.perf_counter()
        for multi in (False, True):
            box_iou_curves(np.ones((1, 4, 4)), np.array([[0.0, 0, 2, 2]]), multi_contour=multi)
        compile_s = time.perf_counter() - start
    start = time.perf_counter()
    if mode == "explain":
        for first in range(0, n, CHUNK):
            images = data.load(np.arange(first, min(first + CHUNK, n)))[0]
            explainer.explain(images)
    else:
        with tempfile.TemporaryDirectory() as out:
            evaluate_localization(
                {method: explainer}, data, batch_size=CHUNK, out=out, progress=False
            )
    seconds = time.perf_counter() - start
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return {"seconds": seconds, "peak_mb": peak_mb, "compile_s": compile_s}


def _run(mode: str, method: str, n: int, root: Path, repeats: int) -> dict:
    best = None
    for _ in range(repeats):
        out = subprocess.run(
            [sys.executable, __file__, "--worker", mode, method, str(n), str(root)],
            check=True,
            capture_output=True,
            text=True,
        ).stdout
        result = json.loads(out.strip().splitlines()[-1])
        if best is None or result["seconds"] < best["seconds"]:
            best = result
    return best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--worker", nargs=4, metavar=("MODE", "METHOD", "N", "ROOT"))
    parser.add_argument("--sizes", default="200,2000")
    parser.add_argument("--methods", default="gradcam,l2caf")
    parser.add_argument("--repeats", type=int, default=2)
    args = parser.parse_args()
    if args.worker:
        mode, method, n, root = args.worker
        print(json.dumps(worker(mode, method, int(n), Path(root))))
        return

    import torch

    sizes = [int(s) for s in args.sizes.split(",")]
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        write_dataset(root, max(sizes))
        print(
            f"Synthetic WSOL set, {SIZE}x{SIZE} PNG on disk, chunks of {CHUNK}, tiny CNN "
            f"(8x8 maps), 1 torch thread, CPU ({platform.machine()}), torch "
            f"{torch.__version__}; best of {args.repeats} fresh processes.\n"
        )
        print(
            "| method | images | explain only (img/s) | runner (img/s) | runner / explain "
            "| peak RSS explain (MB) | peak RSS runner (MB) | kernel compile (s) |"
        )
        print("|---|---:|---:|---:|---:|---:|---:|---:|")
        for method in args.methods.split(","):
            for n in sizes:
                base = _run("explain", method, n, root, args.repeats)
                runner = _run("runner", method, n, root, args.repeats)
                rate_b, rate_r = n / base["seconds"], n / runner["seconds"]
                print(
                    f"| {method} | {n} | {rate_b:.0f} | {rate_r:.0f} | {rate_r / rate_b:.2f} "
                    f"| {base['peak_mb']:.0f} | {runner['peak_mb']:.0f} "
                    f"| {runner['compile_s']:.1f} |",
                    flush=True,
                )


if __name__ == "__main__":
    main()
