"""MaxBoxAcc: the one-sweep kernel vs per-threshold loops, on 224 x 224 heatmaps, CPU.

Three ways to get, for every threshold of a grid, the box(es) of a map's thresholded
components and their IoU with the ground truth:

- ``sweep``: :func:`sklearn_caf.metrics.box_iou_curves` with ``protocol="sklearn-caf"``
  (one union-find sweep per image, numba); ``v1`` (largest component) and ``v2`` (every
  component) are timed separately.
- ``wsol-pair``: :func:`sklearn_caf.metrics.box_iou_curve_pair` with ``protocol="wsol"``
  (three sweeps over the 256 uint8 levels, numba; v1 and v2 together), against
  ``wsol-ref``: wsolevaluation's ``BoxEvaluator`` rules verbatim with OpenCV (per threshold,
  ``cv2.threshold``, ``findContours(RETR_TREE)``, ``max(key=contourArea)`` or every contour,
  ``boundingRect`` as ``[x, y, x + w, y + h]`` clipped to ``W - 1``, ``[0, 0, 0, 0]`` for an
  empty mask, the ``+1`` IoU against inclusive ground truth), v1 and v2 each; the curves
  must be identical (asserted).
- ``cv2``: the loop of the standard WSOL code (clovaai/wsolevaluation,
  ``compute_bboxes_from_scoremaps``): per threshold, threshold the uint8 map with
  ``cv2.threshold`` (``> int(tau * max)``), ``cv2.findContours`` (``RETR_TREE``), the largest
  contour by ``cv2.contourArea`` (v1) or every contour (v2), ``cv2.boundingRect``; the IoUs of
  all thresholds' boxes are then computed in one numpy call per image, as there.
- ``ndimage``: one ``scipy.ndimage.label`` (8-connectivity) per threshold, the largest
  component's box from ``find_objects`` (the straightforward implementation of our rule; the
  test suite checks the sweep against it exactly).

Maps look like real ones: bilinear upsamplings (the explainers' own resize) of random 7 x 7
and 14 x 14 maps, some with Gaussian noise added. One or two ground-truth boxes per image,
near the map's peak. Times are per image, the best of ``--repeat`` runs over the whole set
(the figure least disturbed by other processes), in CPU time of this process
(``time.process_time``: every method is single-threaded, so it is robust to a busy machine)
and in wall time. Ratios are against the sweep.

The cv2 loop and our components can disagree (uint8 quantization and ``>`` vs ``>=``;
``contourArea`` is a polygon area, not a pixel count, so a thin component counts as nothing;
``RETR_TREE`` also returns the contours of holes). The benchmark reports how often, on the
same maps, and runs the cv2 loop a second time on our exact masks (``cv2-mask``) to
separate the thresholding from the contour-vs-component difference.

Needs ``opencv-python-headless`` (benchmark only) and numba (the ``eval`` extra). Run from
the repository root::

    MALLOC_MMAP_THRESHOLD_=4000000000 MALLOC_TRIM_THRESHOLD_=4000000000 \\
        python benchmarks/bench_max_box_accuracy.py
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time

import numpy as np
from scipy import ndimage

from sklearn_caf._explainers._heatmaps import minmax_normalize, resize_maps
from sklearn_caf.metrics import box_iou_curve_pair, box_iou_curves
from sklearn_caf.metrics._boxes import _check_true_boxes, _iou

EIGHT = np.ones((3, 3), dtype=bool)


def make_maps(n: int, seed: int, noisy: bool) -> tuple[np.ndarray, list[np.ndarray]]:
    """Upsampled random 7x7 / 14x14 maps (alternately), with ground truth near the object.

    Ground truth: the box of the map's largest component at a random threshold in
    [0.3, 0.7] of the clean map, its sides jittered by up to 15 %, and for a third of the
    images a second, random box.
    """
    rng = np.random.default_rng(seed)
    maps, boxes = [], []
    for i in range(n):
        grid = 7 if i % 2 == 0 else 14
        clean = minmax_normalize(resize_maps(rng.random((1, grid, grid)) ** 2, (224, 224)), 2)
        clean = clean[0].astype(np.float64)
        labels, _ = ndimage.label(clean >= rng.uniform(0.3, 0.7), structure=EIGHT)
        rows, cols = ndimage.find_objects(labels)[np.bincount(labels.ravel())[1:].argmax()]
        box = np.array([cols.start, rows.start, cols.stop, rows.stop], dtype=np.float64)
        side = np.r_[box[2] - box[0], box[3] - box[1]]
        box += rng.uniform(-0.15, 0.15, 4) * np.r_[side, side]
        gt = [np.clip(np.sort(box.reshape(2, 2), axis=0).ravel(), 0, 224)]
        if i % 3 == 0:
            x = np.sort(rng.uniform(0, 224, 2))
            y = np.sort(rng.uniform(0, 224, 2))
            gt.append([x[0], y[0], x[1] + 1, y[1] + 1])
        heatmap = clean + rng.normal(0, 0.05, clean.shape) if noisy else clean
        maps.append(heatmap)
        boxes.append(np.asarray(gt, dtype=np.float64))
    return minmax_normalize(np.stack(maps), 2).astype(np.float64), boxes


def best_ious(pred: np.ndarray, gt: np.ndarray) -> np.ndarray:
    """Best IoU of each predicted box (k, 4) with the ground truth (m, 4)."""
    return _iou(pred[:, None], gt[None]).max(axis=1)


def cv2_curves(maps, boxes, thresholds, multi_contour, masks=False):
    """The wsolevaluation loop; ``masks=True`` thresholds like us (``>= tau``) in float."""
    import cv2

    curves = np.zeros((len(maps), len(thresholds)))
    for i, heatmap in enumerate(maps):
        image = (heatmap * 255).astype(np.uint8)
        preds, owner = [], []
        for t, tau in enumerate(thresholds):
            if masks:
                binary = (heatmap >= tau).astype(np.uint8) * 255
            else:
                _, binary = cv2.threshold(image, int(tau * image.max()), 255, cv2.THRESH_BINARY)
            contours = cv2.findContours(binary, cv2.RETR_TREE, cv2.CHAIN_APPROX_SIMPLE)[0]
            if len(contours) == 0:
                continue
            if not multi_contour:
                contours = [max(contours, key=cv2.contourArea)]
            for contour in contours:
                x, y, w, h = cv2.boundingRect(contour)
                preds.append((x, y, x + w, y + h))  # pixel-edge convention, like ours
                owner.append(t)
        if preds:
            ious = best_ious(np.asarray(preds, dtype=np.float64), boxes[i])
            np.maximum.at(curves[i], np.asarray(owner), ious)
    return curves


def wsol_reference_curves(maps, boxes, thresholds, multi_contour):
    """wsolevaluation's BoxEvaluator, rule for rule (pixel-edge ground truth read inclusive)."""
    import cv2

    curves = np.zeros((len(maps), len(thresholds)))
    for i, heatmap in enumerate(maps):
        height, width = heatmap.shape
        image = np.expand_dims((heatmap * 255).astype(np.uint8), 2)
        gt = np.asarray(boxes[i], dtype=np.float64).reshape(-1, 4) - [0, 0, 1, 1]
        preds, counts = [], []
        for tau in thresholds:
            _, binary = cv2.threshold(image, int(tau * np.max(image)), 255, cv2.THRESH_BINARY)
            contours = cv2.findContours(binary, cv2.RETR_TREE, cv2.CHAIN_APPROX_SIMPLE)[0]
            if len(contours) == 0:
                preds.append((0, 0, 0, 0))
                counts.append(1)
                continue
            if not multi_contour:
                contours = [max(contours, key=cv2.contourArea)]
            for contour in contours:
                x, y, w, h = cv2.boundingRect(contour)
                preds.append((x, y, min(x + w, width - 1), min(y + h, height - 1)))
            counts.append(len(contours))
        a, b = np.asarray(preds, dtype=np.float64)[:, None], gt[None]
        iw = np.maximum(0, np.minimum(a[..., 2], b[..., 2]) - np.maximum(a[..., 0], b[..., 0]) + 1)
        ih = np.maximum(0, np.minimum(a[..., 3], b[..., 3]) - np.maximum(a[..., 1], b[..., 1]) + 1)
        inter = iw * ih
        union = (a[..., 2] - a[..., 0] + 1) * (a[..., 3] - a[..., 1] + 1)
        union = union + (b[..., 2] - b[..., 0] + 1) * (b[..., 3] - b[..., 1] + 1) - inter
        ious = np.where(union > 0, inter / np.where(union > 0, union, 1), 0.0).max(axis=1)
        starts = np.concatenate([[0], np.cumsum(counts)[:-1]])
        curves[i] = np.maximum.reduceat(ious, starts)
    return curves


def ndimage_curves(maps, boxes, thresholds):
    curves = np.zeros((len(maps), len(thresholds)))
    for i, heatmap in enumerate(maps):
        peak = heatmap.argmax()
        preds = np.zeros((len(thresholds), 4))
        kept = np.zeros(len(thresholds), dtype=bool)
        for t, tau in enumerate(thresholds):
            labels, n = ndimage.label(heatmap >= tau, structure=EIGHT)
            if n == 0:
                continue
            sizes = np.bincount(labels.ravel())[1:]
            holds_peak = np.arange(1, n + 1) == labels.ravel()[peak]
            largest = np.lexsort((np.arange(n), ~holds_peak, -sizes))[0]
            rows, cols = ndimage.find_objects(labels)[largest]
            preds[t] = cols.start, rows.start, cols.stop, rows.stop
            kept[t] = True
        curves[i, kept] = best_ious(preds[kept], boxes[i])
    return curves


def timed(fn, repeat, n):
    cpu, wall, out = [], [], None
    for _ in range(repeat):
        c0, w0 = time.process_time(), time.perf_counter()
        out = fn()
        cpu.append(time.process_time() - c0)
        wall.append(time.perf_counter() - w0)
    return out, 1e3 * min(cpu) / n, 1e3 * min(wall) / n


def numba_start_up() -> dict:
    """Seconds from a fresh interpreter to the first curve: empty cache, then warm cache."""
    code = (
        "import time; t = time.perf_counter(); import numpy as np; "
        "from sklearn_caf.metrics import box_iou_curves; "
        "box_iou_curves(np.eye(4)[None], [[0, 0, 1, 1]], multi_contour=True); "
        "print(time.perf_counter() - t)"
    )
    with tempfile.TemporaryDirectory() as cache:
        env = dict(os.environ, NUMBA_CACHE_DIR=cache)
        cold, warm = (
            float(
                subprocess.run(
                    [sys.executable, "-c", code],
                    env=env,
                    check=True,
                    capture_output=True,
                    text=True,
                ).stdout
            )
            for _ in range(2)
        )
    return {"first_call_s_empty_cache": cold, "first_call_s_cached": warm}


def bench_kind(maps, boxes, n_thresholds, args) -> dict:
    padded = _check_true_boxes(boxes, len(maps))
    n = len(maps)
    thresholds = np.arange(n_thresholds) / n_thresholds
    run = {"n_thresholds": n_thresholds, "methods": {}}
    sweep = {}
    for version, multi in (("v1", False), ("v2", True)):
        curves, cpu, wall = timed(
            lambda multi=multi: box_iou_curves(
                maps, padded, thresholds=thresholds, multi_contour=multi, protocol="sklearn-caf"
            ),
            args.repeat,
            n,
        )
        sweep[version] = curves
        run["methods"][f"sweep-{version}"] = {"cpu_ms": cpu, "wall_ms": wall}
    for version, multi in (("v1", False), ("v2", True)):
        curves, cpu, wall = timed(
            lambda multi=multi: cv2_curves(maps, boxes, thresholds, multi), args.repeat, n
        )
        run["methods"][f"cv2-{version}"] = {"cpu_ms": cpu, "wall_ms": wall}
        mask_curves = cv2_curves(maps, boxes, thresholds, multi, masks=True)
        for name, other in ((f"cv2-{version}", curves), (f"cv2-mask-{version}", mask_curves)):
            ours, theirs = sweep[version] >= 0.5, other >= 0.5
            run["methods"].setdefault(name, {}).update(
                {
                    "pairs_box_differs": float((other != sweep[version]).mean()),
                    "pairs_correct_differs": float((ours != theirs).mean()),
                    "images_with_a_difference": float((ours != theirs).any(axis=1).mean()),
                    "max_box_acc": float(theirs.mean(axis=0).max()),
                    "max_box_acc_sweep": float(ours.mean(axis=0).max()),
                }
            )
    (wsol_v1, wsol_v2), cpu, wall = timed(
        lambda: box_iou_curve_pair(maps, padded, thresholds=thresholds, protocol="wsol"),
        args.repeat,
        n,
    )
    run["methods"]["wsol-pair"] = {"cpu_ms": cpu, "wall_ms": wall}
    for version, multi in (("v1", False), ("v2", True)):
        _, cpu, wall = timed(
            lambda multi=multi: box_iou_curves(
                maps, padded, thresholds=thresholds, multi_contour=multi, protocol="wsol"
            ),
            args.repeat,
            n,
        )
        run["methods"][f"wsol-{version}"] = {"cpu_ms": cpu, "wall_ms": wall}
    for version, multi, ours in (("v1", False, wsol_v1), ("v2", True, wsol_v2)):
        curves, cpu, wall = timed(
            lambda multi=multi: wsol_reference_curves(maps, boxes, thresholds, multi), 1, n
        )
        assert np.array_equal(curves, ours), (
            f"protocol='wsol' and the reference disagree ({version})"
        )
        run["methods"][f"wsol-ref-{version}"] = {"cpu_ms": cpu, "wall_ms": wall, "identical": True}
    if n_thresholds < args.skip_ndimage_at:
        curves, cpu, wall = timed(lambda: ndimage_curves(maps, boxes, thresholds), args.repeat, n)
        assert np.array_equal(curves, sweep["v1"]), "sweep and ndimage loop disagree"
        run["methods"]["ndimage-v1"] = {"cpu_ms": cpu, "wall_ms": wall, "identical": True}
    for version in ("v1", "v2"):
        base = run["methods"][f"sweep-{version}"]["cpu_ms"]
        for name, row in run["methods"].items():
            if name.endswith(version) and "cpu_ms" in row and not name.startswith("wsol"):
                row["ratio_to_sweep"] = row["cpu_ms"] / base
    # The wsol rows against the wsol kernel: the reference per version against ours.
    run["methods"]["wsol-pair"]["ratio_to_sweep"] = 1.0
    for version in ("v1", "v2"):
        ours = run["methods"][f"wsol-{version}"]
        ours["ratio_to_sweep"] = 1.0
        row = run["methods"][f"wsol-ref-{version}"]
        row["ratio_to_sweep"] = row["cpu_ms"] / ours["cpu_ms"]
    return run


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n-smooth", type=int, default=40)
    parser.add_argument("--n-noisy", type=int, default=10)
    parser.add_argument("--thresholds", type=int, nargs="+", default=[100, 1000])
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--skip-ndimage-at",
        type=int,
        default=1000,
        help="skip the (slow) ndimage loop at this many thresholds and above",
    )
    parser.add_argument("--json", help="also write the results to this file")
    args = parser.parse_args()

    box_iou_curves(np.eye(3)[None], [[0, 0, 1, 1]], multi_contour=True)  # compile / load
    box_iou_curves(np.eye(3)[None], [[0, 0, 1, 1]], protocol="sklearn-caf")
    results = {
        "machine": platform.processor() or platform.machine(),
        "python": platform.python_version(),
        "start_up": numba_start_up(),
        "runs": [],
    }
    print(
        "ms/image: CPU time (wall time); ratio = CPU time / the sweep's "
        "(wsol-ref rows: / the wsol kernel's for that version)"
    )
    for kind, n, noisy in (("smooth", args.n_smooth, False), ("noisy", args.n_noisy, True)):
        if n == 0:
            continue
        maps, boxes = make_maps(n, args.seed + noisy, noisy)
        for n_thresholds in args.thresholds:
            run = bench_kind(maps, boxes, n_thresholds, args)
            run.update(kind=kind, n_images=n)
            results["runs"].append(run)
            print(f"\n{kind} maps ({n}), {n_thresholds} thresholds")
            for name, row in run["methods"].items():
                if "cpu_ms" in row:
                    print(
                        f"  {name:12s} {row['cpu_ms']:8.2f} ({row['wall_ms']:8.2f})  "
                        f"x{row['ratio_to_sweep']:.1f}"
                    )
            for name, row in run["methods"].items():
                if "pairs_correct_differs" in row:
                    print(
                        f"  {name:12s} vs sweep: IoU differs on "
                        f"{100 * row['pairs_box_differs']:.1f}% of (image, threshold) pairs, "
                        f"correct at 0.5 on {100 * row['pairs_correct_differs']:.2f}% "
                        f"({100 * row['images_with_a_difference']:.0f}% of images); "
                        f"MaxBoxAcc {row['max_box_acc']:.3f} vs {row['max_box_acc_sweep']:.3f}"
                    )
    print("\nstart-up, fresh interpreter to first curve (s):", results["start_up"])
    if args.json:
        with open(args.json, "w") as f:
            json.dump(results, f, indent=2)


if __name__ == "__main__":
    main()
