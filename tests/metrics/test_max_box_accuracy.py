"""MaxBoxAcc, ``protocol="sklearn-caf"``: the one-sweep kernel against a per-threshold
``ndimage.label`` reference (``protocol="wsol"`` is tested against OpenCV in
``test_max_box_accuracy_wsol.py``)."""

import functools
import subprocess
import sys
import textwrap

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp
from scipy import ndimage

from sklearn_caf import metrics
from sklearn_caf.boxes import HeatmapBoxes
from sklearn_caf.metrics import (
    DEFAULT_THRESHOLDS,
    MaxBoxAccuracy,
    best_iou,
    max_box_accuracy_from_curves,
)

# The library's own protocol throughout this module.
box_iou_curves = functools.partial(metrics.box_iou_curves, protocol="sklearn-caf")
max_box_accuracy = functools.partial(metrics.max_box_accuracy, protocol="sklearn-caf")

pytest.importorskip("numba", reason="the one-sweep kernel needs numba (the eval extra)")

EIGHT = np.ones((3, 3), dtype=bool)


def reference_curves(maps, true_boxes, thresholds):
    """Straightforward MaxBoxAcc IoUs: one 8-connected labelling per threshold."""
    maps = np.asarray(maps, dtype=np.float64)
    v1 = np.zeros((len(maps), len(thresholds)))
    v2 = np.zeros_like(v1)
    for i, heatmap in enumerate(maps):
        lo, hi = heatmap.min(), heatmap.max()
        norm = (heatmap - lo) / (hi - lo) if hi > lo else np.zeros_like(heatmap)
        peak = norm.argmax()  # first maximum in row-major order
        gt = np.atleast_2d(np.asarray(true_boxes[i], dtype=np.float64))
        for t, tau in enumerate(thresholds):
            labels, n = ndimage.label(norm >= tau, structure=EIGHT)
            if n == 0:
                continue
            slices = ndimage.find_objects(labels)
            boxes = np.array([[c.start, r.start, c.stop, r.stop] for r, c in slices], float)
            ious = best_iou(boxes, [gt] * n)
            sizes = np.bincount(labels.ravel())[1:]
            holds_peak = np.arange(1, n + 1) == labels.ravel()[peak]
            # Largest; ties to the component holding the peak, then the first label (labels
            # are numbered in row-major order of their first pixel).
            largest = np.lexsort((np.arange(n), ~holds_peak, -sizes))[0]
            v1[i, t] = ious[largest]
            v2[i, t] = ious.max()
    return v1, v2


def reference_accuracy(curves, iou_thresholds, correct=None):
    keep = np.ones(len(curves), bool) if correct is None else np.asarray(correct, bool)
    return np.array([[np.mean((c >= d) & keep) for c in curves.T] for d in iou_thresholds])


def random_boxes(rng, n, height, width, m_max=3):
    """A list of (m_i, 4) boxes per image, fractional coordinates, inside the map."""
    out = []
    for _ in range(n):
        m = rng.integers(1, m_max + 1)
        x = np.sort(rng.uniform(0, width, (m, 2)), axis=1)
        y = np.sort(rng.uniform(0, height, (m, 2)), axis=1)
        out.append(np.column_stack([x[:, 0], y[:, 0], x[:, 1] + 0.5, y[:, 1] + 0.5]))
    return out


def smooth_maps(rng, n, size=(40, 56), grid=(5, 7)):
    """Bilinear upsamplings of coarse random maps, like a CNN's heatmaps."""
    zoom = (size[0] / grid[0], size[1] / grid[1])
    return np.stack([ndimage.zoom(rng.random(grid), zoom, order=1) for _ in range(n)])


def assert_matches_reference(maps, boxes, thresholds):
    v1, v2 = reference_curves(maps, boxes, thresholds)
    np.testing.assert_array_equal(box_iou_curves(maps, boxes, thresholds=thresholds), v1)
    np.testing.assert_array_equal(
        box_iou_curves(maps, boxes, thresholds=thresholds, multi_contour=True), v2
    )
    return v1, v2


# ---------------------------------------------------------------------------------------------
# Exactness against the per-threshold reference.


def test_hand_made_curves():
    heatmap = np.zeros((1, 4, 6))
    heatmap[0, 1:3, 1:3] = 0.5  # weaker blob on the box, 4 pixels
    heatmap[0, 1, 4] = 1.0  # one-pixel peak off the box
    true = [[1, 1, 3, 3]]
    thresholds = [0.0, 0.25, 0.5, 0.75, 1.0]
    # tau=0: the full map (IoU 4/24); up to 0.5 the blob (largest) is kept, exactly at 0.5
    # included; above, only the peak, off the box.
    v1 = box_iou_curves(heatmap, true, thresholds=thresholds)
    np.testing.assert_array_equal(v1, [[4 / 24, 1.0, 1.0, 0.0, 0.0]])
    v2 = box_iou_curves(heatmap, true, thresholds=thresholds, multi_contour=True)
    np.testing.assert_array_equal(v2, [[4 / 24, 1.0, 1.0, 0.0, 0.0]])
    # With the ground truth on the peak, v2 finds it where v1 boxes the blob.
    on_peak = box_iou_curves(heatmap, [[4, 1, 5, 2]], thresholds=thresholds, multi_contour=True)
    np.testing.assert_array_equal(on_peak, [[1 / 24, 1.0, 1.0, 1.0, 1.0]])
    on_peak_v1 = box_iou_curves(heatmap, [[4, 1, 5, 2]], thresholds=thresholds)
    np.testing.assert_array_equal(on_peak_v1, [[1 / 24, 0.0, 0.0, 1.0, 1.0]])


def test_random_integer_maps_with_ties_match_reference():
    # Few distinct values: many equal pixels, components of equal size, values equal to
    # thresholds; non-square maps, several boxes per image.
    rng = np.random.default_rng(0)
    thresholds = np.r_[0.0, np.arange(1, 8) / 8, 1.0, 0.3]
    for height, width in [(1, 1), (1, 9), (9, 1), (6, 11), (13, 7)]:
        maps = rng.integers(0, 9, (6, height, width)).astype(np.float64)
        assert_matches_reference(maps, random_boxes(rng, 6, height, width), thresholds)


def test_smooth_and_noisy_maps_match_reference_on_the_default_grid():
    rng = np.random.default_rng(1)
    maps = np.concatenate([smooth_maps(rng, 4), rng.random((2, 40, 56))])
    maps[3] += rng.normal(0, 0.05, maps[3].shape)  # a noisy smooth map
    assert_matches_reference(maps, random_boxes(rng, 6, 40, 56), DEFAULT_THRESHOLDS)


def test_constant_and_single_pixel_maps():
    thresholds = np.array([0.0, 0.01, 0.5, 1.0])
    maps = np.zeros((4, 5, 7))
    maps[1] = 3.0  # constant, not zero
    maps[2, 4, 6] = 2.0  # zero everywhere but one pixel (a corner)
    maps[3, 2, 3] = -1.0  # one pixel below the rest
    true = [[0, 0, 7, 5], [0, 0, 7, 5], [6, 4, 7, 5], [0, 0, 7, 5]]
    v1, v2 = assert_matches_reference(maps, true, thresholds)
    # A constant map normalizes to 0: only tau = 0 keeps pixels, the whole map.
    np.testing.assert_array_equal(v1[:2], [[1, 0, 0, 0], [1, 0, 0, 0]])
    np.testing.assert_array_equal(v1[2], [1 / 35, 1, 1, 1])
    np.testing.assert_array_equal(v1[3], [1, 1, 1, 1])  # the ring around the hole: full box
    np.testing.assert_array_equal(v2, v1)


@settings(max_examples=60, deadline=None)
@given(
    maps=hnp.arrays(
        np.float64,
        st.tuples(st.integers(1, 3), st.integers(1, 9), st.integers(1, 9)),
        elements=st.integers(0, 6).map(float),
    ),
    thresholds=st.lists(
        st.sampled_from([0.0, 1 / 6, 0.25, 1 / 3, 0.5, 2 / 3, 0.7, 5 / 6, 1.0]),
        min_size=1,
        max_size=6,
    ),
    seed=st.integers(0, 2**16),
)
def test_property_matches_reference(maps, thresholds, seed):
    height, width = maps.shape[1:]
    boxes = random_boxes(np.random.default_rng(seed), len(maps), height, width)
    assert_matches_reference(maps, boxes, np.array(thresholds))


@pytest.mark.parametrize("iou_thresholds", [(0.5,), (0.3, 0.5, 0.7), 0.4])
@pytest.mark.parametrize("multi_contour", [False, True])
@pytest.mark.parametrize("with_correct", [False, True])
def test_max_box_accuracy_matches_reference(iou_thresholds, multi_contour, with_correct):
    rng = np.random.default_rng(2)
    maps = np.concatenate([smooth_maps(rng, 8, (24, 30), (4, 5)), rng.random((2, 24, 30))])
    boxes = random_boxes(rng, 10, 24, 30)
    thresholds = np.arange(0, 1, 0.05)
    correct = rng.random(10) < 0.7 if with_correct else None
    result = max_box_accuracy(
        maps,
        boxes,
        thresholds=thresholds,
        iou_thresholds=iou_thresholds,
        multi_contour=multi_contour,
        correct=correct,
    )
    curves = reference_curves(maps, boxes, thresholds)[int(multi_contour)]
    deltas = np.atleast_1d(iou_thresholds)
    expected = reference_accuracy(curves, deltas, correct)
    assert isinstance(result, MaxBoxAccuracy)
    np.testing.assert_array_equal(result.accuracy, expected)
    assert result.score == pytest.approx(expected.max(axis=1).mean(), abs=0, rel=1e-15)
    np.testing.assert_array_equal(result.best_thresholds, thresholds[expected.argmax(axis=1)])
    np.testing.assert_array_equal(result.thresholds, thresholds)
    np.testing.assert_array_equal(result.iou_thresholds, deltas)
    # The same from the stored curves (what the runner does with its per-image table).
    from_curves = max_box_accuracy_from_curves(
        list(curves), thresholds=thresholds, iou_thresholds=iou_thresholds, correct=correct
    )
    np.testing.assert_array_equal(from_curves.accuracy, result.accuracy)
    assert from_curves.score == result.score
    column = np.empty(len(curves), dtype=object)  # as a DataFrame's list column gives it
    column[:] = list(curves)
    from_column = max_box_accuracy_from_curves(
        column, thresholds=thresholds, iou_thresholds=iou_thresholds, correct=correct
    )
    np.testing.assert_array_equal(from_column.accuracy, result.accuracy)


@pytest.mark.parametrize("tau", [0.0, 0.15, 0.2, 0.5, 0.73, 1.0])
def test_one_point_of_the_curve_is_heatmap_boxes_plus_best_iou(tau):
    # HeatmapBoxes keeps pixels >= tau * max; on a min-max normalized map max = 1 and min = 0,
    # so that is the curve's rule ">= tau" on the normalized map.
    rng = np.random.default_rng(3)
    raw = np.concatenate([smooth_maps(rng, 6, (28, 28), (7, 7)), rng.random((2, 28, 28))])
    lo = raw.min(axis=(1, 2), keepdims=True)
    maps = (raw - lo) / (raw.max(axis=(1, 2), keepdims=True) - lo)
    boxes = random_boxes(rng, 8, 28, 28)
    boxed = HeatmapBoxes(threshold=tau).fit_transform(maps)[:, :4]
    expected = best_iou(boxed, boxes)
    np.testing.assert_array_equal(box_iou_curves(maps, boxes, thresholds=[tau])[:, 0], expected)
    np.testing.assert_array_equal(box_iou_curves(raw, boxes, thresholds=[tau])[:, 0], expected)


def test_defaults():
    np.testing.assert_array_equal(DEFAULT_THRESHOLDS, np.arange(0, 1, 0.01))
    maps = np.random.default_rng(4).random((2, 6, 6))
    result = max_box_accuracy(maps, [[0, 0, 3, 3], [1, 1, 6, 6]])
    assert result.accuracy.shape == (1, 100)
    np.testing.assert_array_equal(result.thresholds, DEFAULT_THRESHOLDS)
    np.testing.assert_array_equal(result.iou_thresholds, [0.5])


def test_threshold_order_is_the_callers():
    rng = np.random.default_rng(5)
    maps, boxes = smooth_maps(rng, 3, (16, 20), (4, 5)), random_boxes(rng, 3, 16, 20)
    thresholds = np.array([0.9, 0.1, 0.5, 0.3, 0.5])
    for multi in (False, True):
        shuffled = box_iou_curves(maps, boxes, thresholds=thresholds, multi_contour=multi)
        order = np.argsort(thresholds)
        ascending = box_iou_curves(maps, boxes, thresholds=thresholds[order], multi_contour=multi)
        np.testing.assert_array_equal(shuffled[:, order], ascending)


def test_best_threshold_is_the_first_maximum():
    result = max_box_accuracy_from_curves(
        [[0.2, 0.6, 0.6, 0.1]], thresholds=[0.1, 0.2, 0.3, 0.4], iou_thresholds=(0.5, 0.15)
    )
    np.testing.assert_array_equal(result.accuracy, [[0, 1, 1, 0], [1, 1, 1, 0]])
    np.testing.assert_array_equal(result.best_thresholds, [0.2, 0.1])
    assert result.score == 1.0


# ---------------------------------------------------------------------------------------------
# Properties.

map_batches = hnp.arrays(
    np.float64,
    st.tuples(st.integers(1, 3), st.integers(1, 12), st.integers(1, 12)),
    elements=st.integers(0, 64).map(lambda v: v / 64),
)


@settings(max_examples=40, deadline=None)
@given(maps=map_batches, seed=st.integers(0, 2**16))
def test_property_bounds_and_v2_dominates_v1(maps, seed):
    rng = np.random.default_rng(seed)
    boxes = random_boxes(rng, len(maps), *maps.shape[1:])
    thresholds = np.sort(rng.random(7))
    v1 = box_iou_curves(maps, boxes, thresholds=thresholds)
    v2 = box_iou_curves(maps, boxes, thresholds=thresholds, multi_contour=True)
    assert ((v1 >= 0) & (v1 <= 1)).all() and (v2 >= v1).all()
    correct = rng.random(len(maps)) < 0.5
    deltas = (0.3, 0.5, 0.7)
    r1 = max_box_accuracy(maps, boxes, thresholds=thresholds, iou_thresholds=deltas)
    r2 = max_box_accuracy(
        maps, boxes, thresholds=thresholds, iou_thresholds=deltas, multi_contour=True
    )
    rc = max_box_accuracy(
        maps, boxes, thresholds=thresholds, iou_thresholds=deltas, correct=correct
    )
    for r in (r1, r2, rc):
        assert ((r.accuracy >= 0) & (r.accuracy <= 1)).all() and 0 <= r.score <= 1
    assert (r2.accuracy >= r1.accuracy).all() and (rc.accuracy <= r1.accuracy).all()
    # A stricter IoU threshold never helps.
    assert (np.diff(r1.accuracy, axis=0) <= 0).all()


@settings(max_examples=40, deadline=None)
@given(
    maps=map_batches,
    scale_exponent=st.integers(-4, 6),
    offset=st.integers(-1000, 1000),
    seed=st.integers(0, 2**16),
)
def test_property_invariant_to_affine_rescaling(maps, scale_exponent, offset, seed):
    # a * map + b with a > 0: the same normalized map. Dyadic a and integer b keep every
    # operation exact in float64, so the curves are equal bit for bit (with arbitrary reals
    # they agree up to the rounding of the normalization).
    rng = np.random.default_rng(seed)
    boxes = random_boxes(rng, len(maps), *maps.shape[1:])
    thresholds = np.arange(0, 1, 1 / 16)
    for multi in (False, True):
        base = box_iou_curves(maps, boxes, thresholds=thresholds, multi_contour=multi)
        moved = box_iou_curves(
            maps * 2.0**scale_exponent + offset, boxes, thresholds=thresholds, multi_contour=multi
        )
        np.testing.assert_array_equal(moved, base)


def test_integer_and_float32_maps():
    maps = np.zeros((1, 5, 5), dtype=np.uint8)
    maps[0, 1:3, 1:4] = 200
    expected = box_iou_curves(maps.astype(np.float64), [[1, 1, 4, 3]], thresholds=[0.5])
    np.testing.assert_array_equal(expected, [[1.0]])
    np.testing.assert_array_equal(box_iou_curves(maps, [[1, 1, 4, 3]], thresholds=[0.5]), expected)
    np.testing.assert_array_equal(
        box_iou_curves(maps.astype(np.float32), [[1, 1, 4, 3]], thresholds=[0.5]), expected
    )


# ---------------------------------------------------------------------------------------------
# Errors.


def test_errors():
    maps = np.zeros((2, 4, 4))
    boxes = [[0, 0, 2, 2], [1, 1, 3, 3]]
    bad = maps.copy()
    bad[1, 2, 2] = np.nan
    with pytest.raises(ValueError, match=r"heatmaps contains NaN.*image 1"):
        max_box_accuracy(bad, boxes)
    with pytest.raises(ValueError, match="heatmaps must be a non-empty 3-D"):
        box_iou_curves(maps[0], boxes[0])
    with pytest.raises(ValueError, match="true_boxes has 1 images but heatmaps has 2"):
        box_iou_curves(maps, [boxes[0]])
    with pytest.raises(ValueError, match=r"thresholds must hold values in \[0, 1\]"):
        box_iou_curves(maps, boxes, thresholds=[0.5, 1.5])
    with pytest.raises(ValueError, match="thresholds must be a non-empty 1-D"):
        box_iou_curves(maps, boxes, thresholds=[])
    with pytest.raises(ValueError, match="iou_thresholds must hold values"):
        max_box_accuracy(maps, boxes, iou_thresholds=(0.5, 2))
    with pytest.raises(ValueError, match=r"correct must be a boolean array of shape \(2,\)"):
        max_box_accuracy(maps, boxes, correct=[True])
    with pytest.raises(ValueError, match="correct must hold booleans"):
        max_box_accuracy(maps, boxes, correct=[2, 0])
    with pytest.raises(ValueError, match="iou_curves has 3 thresholds per image but thresholds"):
        max_box_accuracy_from_curves([[0.1, 0.2, 0.3]])
    with pytest.raises(ValueError, match=r"iou_curves must hold IoUs in \[0, 1\]"):
        max_box_accuracy_from_curves([[0.1, np.nan]], thresholds=[0.1, 0.2])
    with pytest.raises(ValueError, match="iou_curves must hold curves of equal length"):
        max_box_accuracy_from_curves([[0.1, 0.2], [0.3]], thresholds=[0.1, 0.2])


def run_python(code):
    return subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)], capture_output=True, text=True, check=False
    )


def test_numba_is_optional():
    # The core imports without numba; MaxBoxAcc then says what to install.
    result = run_python(
        """
        import sys
        import numpy as np
        import sklearn_caf, sklearn_caf.metrics as m
        print("numba imported:", "numba" in sys.modules)
        sys.modules["numba"] = None  # as if it were not installed
        try:
            m.max_box_accuracy(np.zeros((1, 3, 3)), [[0, 0, 1, 1]])
        except ImportError as exc:
            print("ImportError:", exc)
        """
    )
    assert result.returncode == 0, result.stderr
    assert "numba imported: False" in result.stdout
    assert "pip install numba" in result.stdout and "sklearn-caf[eval]" in result.stdout


def test_both_curves_from_one_sweep():
    # The runner stores v1 and v2 per image; the private helper gives both from one sweep.
    from sklearn_caf.metrics._boxes import _check_true_boxes
    from sklearn_caf.metrics._max_box_acc import _iou_curve_pair

    rng = np.random.default_rng(6)
    maps, boxes = smooth_maps(rng, 3, (16, 20), (4, 5)), random_boxes(rng, 3, 16, 20)
    v1, v2 = _iou_curve_pair(maps, _check_true_boxes(boxes, 3), DEFAULT_THRESHOLDS)
    np.testing.assert_array_equal(v1, box_iou_curves(maps, boxes))
    np.testing.assert_array_equal(v2, box_iou_curves(maps, boxes, multi_contour=True))
