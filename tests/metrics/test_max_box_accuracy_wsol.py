"""MaxBoxAcc, ``protocol="wsol"``: every curve point against wsolevaluation's rules, written
here independently with OpenCV (``cv2.findContours``, ``contourArea``, ``boundingRect``)."""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from sklearn_caf.metrics import (
    DEFAULT_THRESHOLDS,
    box_iou_curve_pair,
    box_iou_curves,
    max_box_accuracy,
)

pytest.importorskip("numba", reason="the kernels need numba (the eval extra)")
cv2 = pytest.importorskip("cv2", reason="the reference rules need OpenCV (the test extra)")


def reference_curves(heatmap, true_boxes, thresholds, multi_contour):
    """wsolevaluation's ``compute_bboxes_from_scoremaps`` + ``BoxEvaluator.accumulate``.

    `true_boxes` are pixel edges; the reference reads inclusive ``[x0, y0, x1 - 1, y1 - 1]``.
    """
    height, width = heatmap.shape
    lo, hi = heatmap.min(), heatmap.max()
    scoremap = np.zeros_like(heatmap) if lo == hi else (heatmap - lo) / (hi - lo)
    image = np.expand_dims((scoremap * 255).astype(np.uint8), 2)
    gt = np.array(true_boxes, dtype=np.int64).reshape(-1, 4)
    gt[:, 2:] -= 1
    out = []
    for threshold in thresholds:
        _, mask = cv2.threshold(
            src=image, thresh=int(threshold * np.max(image)), maxval=255, type=cv2.THRESH_BINARY
        )
        contours = cv2.findContours(mask, cv2.RETR_TREE, cv2.CHAIN_APPROX_SIMPLE)[0]
        if len(contours) == 0:
            boxes = np.array([[0, 0, 0, 0]])
        else:
            if not multi_contour:
                contours = [max(contours, key=cv2.contourArea)]
            boxes = []
            for contour in contours:
                x, y, w, h = cv2.boundingRect(contour)
                boxes.append([x, y, min(x + w, width - 1), min(y + h, height - 1)])
            boxes = np.array(boxes)
        a, b = boxes[:, None], gt[None]
        inter = np.maximum(
            0, np.minimum(a[..., 2], b[..., 2]) - np.maximum(a[..., 0], b[..., 0]) + 1
        )
        inter *= np.maximum(
            0, np.minimum(a[..., 3], b[..., 3]) - np.maximum(a[..., 1], b[..., 1]) + 1
        )
        area_a = (a[..., 2] - a[..., 0] + 1) * (a[..., 3] - a[..., 1] + 1)
        area_b = (b[..., 2] - b[..., 0] + 1) * (b[..., 3] - b[..., 1] + 1)
        union = area_a + area_b - inter
        iou = np.where(union > 0, inter / np.where(union > 0, union, 1), 0.0)
        out.append(iou.max())
    return np.array(out)


def blobs(rng, shape, noise):
    yy, xx = np.mgrid[: shape[0], : shape[1]]
    heatmap = np.zeros(shape)
    for _ in range(rng.integers(1, 4)):
        cy, cx = rng.uniform(-0.1, 1.1, 2) * shape  # centres outside too: border-touching
        heatmap += rng.uniform(0.3, 1) * np.exp(
            -((yy - cy) ** 2 + (xx - cx) ** 2) / (2 * rng.uniform(2, shape[0] / 3) ** 2)
        )
    return heatmap + rng.normal(0, noise, shape)


def ring(rng, shape):
    yy, xx = np.mgrid[: shape[0], : shape[1]]
    radius = np.hypot(yy - shape[0] / 2 + rng.uniform(-3, 3), xx - shape[1] / 2)
    return np.exp(-((radius - rng.uniform(4, shape[0] / 3)) ** 2) / 6) + rng.normal(0, 0.02, shape)


def sparse(rng, shape):
    heatmap = np.zeros(shape)
    heatmap[rng.integers(0, shape[0], 6), rng.integers(0, shape[1], 6)] = rng.random(6)
    heatmap[3, 2:22] = 0.5  # a 20-pixel line (contour area 0) ...
    heatmap[8:11, 20:23] = 0.5  # ... and a 3 x 3 square (area 4) at the same level
    return heatmap


FAMILIES = {
    "blobs": lambda rng, shape: blobs(rng, shape, 0.01),
    "noisy-blobs": lambda rng, shape: blobs(rng, shape, 0.2),
    "rings": ring,
    "sparse-peaks-lines": sparse,
    "ties": lambda rng, shape: rng.integers(0, 4, shape).astype(float),
    "binary-noise": lambda rng, shape: (rng.random(shape) < 0.45).astype(float),
    "uniform-noise": lambda rng, shape: rng.random(shape),
}


def random_gt(rng, n, shape):
    # One to three pixel-edge boxes per image (several ground truths, as in ImageNet).
    out = []
    for _ in range(n):
        boxes = []
        for _ in range(rng.integers(1, 4)):
            x0, y0 = rng.integers(0, shape[1] - 2), rng.integers(0, shape[0] - 2)
            x1, y1 = rng.integers(x0 + 1, shape[1] + 1), rng.integers(y0 + 1, shape[0] + 1)
            boxes.append([x0, y0, x1, y1])
        out.append(boxes)
    return out


def assert_matches_reference(maps, gt, thresholds):
    v1, v2 = box_iou_curve_pair(maps, gt, thresholds=thresholds, protocol="wsol")
    for i, heatmap in enumerate(maps):
        np.testing.assert_array_equal(v1[i], reference_curves(heatmap, gt[i], thresholds, False))
        np.testing.assert_array_equal(v2[i], reference_curves(heatmap, gt[i], thresholds, True))


@pytest.mark.parametrize("family", sorted(FAMILIES))
def test_every_curve_point_matches_the_reference(family):
    rng = np.random.default_rng(sorted(FAMILIES).index(family))
    shape = (32, 36)
    maps = np.stack([FAMILIES[family](rng, shape) for _ in range(6)])
    assert_matches_reference(maps, random_gt(rng, len(maps), shape), DEFAULT_THRESHOLDS)


@settings(max_examples=150, deadline=None)
@given(
    maps=hnp.arrays(
        np.int64,
        st.tuples(st.integers(1, 3), st.integers(1, 9), st.integers(1, 9)),
        elements=st.integers(0, 4),  # few levels: ties, holes, thin and diagonal shapes
    ),
    seed=st.integers(0, 2**16),
)
def test_property_every_curve_point_matches_the_reference(maps, seed):
    rng = np.random.default_rng(seed)
    gt = random_gt(rng, len(maps), (max(maps.shape[1], 3), max(maps.shape[2], 3)))
    assert_matches_reference(maps.astype(np.float64), gt, np.linspace(0, 1, 23))


def test_full_size_cam_like_maps_on_a_fine_grid():
    rng = np.random.default_rng(10)
    maps = np.stack([blobs(rng, (224, 224), 0.01) for _ in range(2)])
    assert_matches_reference(maps, random_gt(rng, 2, (224, 224)), np.arange(0, 1, 0.004))


def test_constant_zero_single_pixel_and_border_maps():
    shape = (12, 14)
    maps = np.zeros((6, *shape))
    maps[1] = 3.5  # constant: normalizes to zeros, every mask empty: box [0, 0, 0, 0]
    maps[2, 5, 6] = 1.0  # a single-pixel peak
    maps[3, 0, :] = 1.0  # the top row (touching the border)
    maps[3, :, -1] = 0.5
    maps[4] = 1.0  # everything but one corner pixel
    maps[4, -1, -1] = 0.0
    maps[5, 2:9, 2:9] = 1.0  # a square with a one-pixel hole and a peak inside the hole
    maps[5, 4:7, 4:7] = 0.0
    maps[5, 5, 5] = 0.7
    gt = [[[0, 0, 1, 1]], [[0, 0, 1, 1], [2, 2, 6, 6]], [[6, 5, 7, 6]], [[0, 0, 14, 1]]]
    gt += [[[0, 0, 14, 12]], [[4, 4, 7, 7]]]
    thresholds = np.concatenate([DEFAULT_THRESHOLDS, [0.999, 1.0]])
    assert_matches_reference(maps, gt, thresholds)
    # An empty mask scores the one-pixel box [0, 0, 0, 0]: the constant map against a
    # ground truth on the top-left pixel is correct at every threshold.
    np.testing.assert_array_equal(box_iou_curves(maps[1:2], [[0, 0, 1, 1]]), 1.0)


def test_contour_area_not_pixel_count_picks_the_box():
    # A 20-pixel line (polygon area 0) loses to a 9-pixel square (area 4) in the reference;
    # the library's own protocol boxes the component with most pixels.
    heatmap = np.zeros((1, 16, 30))
    heatmap[0, 2, 2:22] = 1.0
    heatmap[0, 8:11, 20:23] = 1.0
    square, line = [[20, 8, 23, 11]], [[2, 2, 22, 3]]
    wsol = box_iou_curves(heatmap, square, thresholds=[0.5])
    np.testing.assert_array_equal(wsol, reference_curves(heatmap[0], square, [0.5], False)[None])
    assert wsol[0, 0] > 0.5
    assert box_iou_curves(heatmap, line, thresholds=[0.5], protocol="sklearn-caf")[0, 0] == 1.0
    assert box_iou_curves(heatmap, square, thresholds=[0.5], protocol="sklearn-caf")[0, 0] == 0


def test_hole_contours_count_in_v2():
    # A ring whose hole is the ground truth: only the hole contour's box matches it.
    heatmap = np.zeros((1, 20, 20))
    heatmap[0, 2:18, 2:18] = 1.0
    heatmap[0, 6:14, 6:14] = 0.0
    gt = [[5, 5, 15, 15]]  # the hole grown by one pixel: the hole contour's pixels
    v1, v2 = box_iou_curve_pair(heatmap, gt, thresholds=[0.5])
    assert v2[0, 0] > v1[0, 0]
    np.testing.assert_array_equal(v2[0], reference_curves(heatmap[0], gt, [0.5], True))
    _, ours = box_iou_curve_pair(heatmap, gt, thresholds=[0.5], protocol="sklearn-caf")
    assert ours[0, 0] < v2[0, 0]


def test_ground_truth_edges_are_read_as_the_reference_inclusive_boxes():
    # Edges [x0, y0, x1, y1] cover the same pixels as inclusive [x0, y0, x1 - 1, y1 - 1]; the
    # reference's box of a 4 x 4 blob is [2, 2, 6, 6] inclusive (one pixel larger): 16 / 25.
    heatmap = np.zeros((1, 10, 10))
    heatmap[0, 2:6, 2:6] = 1.0
    np.testing.assert_array_equal(box_iou_curves(heatmap, [[2, 2, 6, 6]], thresholds=[0.5]), 0.64)
    np.testing.assert_array_equal(
        box_iou_curves(heatmap, [[2, 2, 6, 6]], thresholds=[0.5], protocol="sklearn-caf"), 1.0
    )


def test_max_box_accuracy_uses_the_protocol():
    rng = np.random.default_rng(11)
    shape = (24, 24)
    maps = np.stack([blobs(rng, shape, 0.05) for _ in range(8)])
    gt = random_gt(rng, 8, shape)
    for multi, deltas in ((False, (0.5,)), (True, (0.3, 0.5, 0.7))):
        curves = np.stack(
            [
                reference_curves(m, g, DEFAULT_THRESHOLDS, multi)
                for m, g in zip(maps, gt, strict=True)
            ]
        )
        expected = np.stack([(curves >= d).mean(axis=0) for d in deltas])
        result = max_box_accuracy(maps, gt, iou_thresholds=deltas, multi_contour=multi)
        np.testing.assert_array_equal(result.accuracy, expected)
        assert result.score == expected.max(axis=1).mean()


def test_protocol_is_checked():
    with pytest.raises(ValueError, match="protocol"):
        box_iou_curves(np.zeros((1, 3, 3)), [[0, 0, 1, 1]], protocol="opencv")
    with pytest.raises(ValueError, match="protocol"):
        max_box_accuracy(np.zeros((1, 3, 3)), [[0, 0, 1, 1]], protocol=None)
