"""Tests for heatmap -> box (sklearn_caf.boxes) and IoU / localization (sklearn_caf.metrics)."""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp
from numpy.testing import assert_allclose, assert_array_equal
from scipy import ndimage
from sklearn.exceptions import NotFittedError
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import FunctionTransformer
from sklearn.utils.estimator_checks import (
    check_estimator_cloneable,
    check_estimator_repr,
    check_get_params_invariance,
    check_no_attributes_set_in_init,
    check_parameters_default_constructible,
    check_set_params,
)

from sklearn_caf.boxes import HeatmapBoxes, heatmap_to_box, heatmaps_to_boxes
from sklearn_caf.metrics import (
    best_iou,
    box_iou,
    box_iou_matrix,
    localization_accuracy,
    localization_correct,
)


def two_blobs():
    """6x8 map: a small bright blob (4 px, holds the max) and a large dim one (9 px)."""
    heatmap = np.zeros((6, 8))
    heatmap[1:3, 1:3] = 0.9
    heatmap[1, 1] = 1.0
    heatmap[2:5, 5:8] = 0.5
    return heatmap


# --------------------------------------------------------------------------- heatmap -> box


def test_largest_blob_wins_with_exact_box_and_score():
    box, score = heatmap_to_box(two_blobs())
    assert_array_equal(box, [5, 2, 8, 5])
    assert score == 0.5


def test_threshold_decides_which_pixels_survive():
    # At 60% of the max the dim blob is gone and the bright one is boxed.
    box, score = heatmap_to_box(two_blobs(), threshold=0.6)
    assert_array_equal(box, [1, 1, 3, 3])
    assert score == pytest.approx((1.0 + 3 * 0.9) / 4)
    # At 95% only the peak pixel is left.
    box, score = heatmap_to_box(two_blobs(), threshold=0.95)
    assert_array_equal(box, [1, 1, 2, 2])
    assert score == 1.0


def test_threshold_on_a_ramp():
    heatmap = np.tile(np.linspace(0, 1, 11), (3, 1))  # columns 0..10 with values 0.0..1.0
    for threshold, x0 in [(0.2, 2), (0.15, 2), (0.5, 5), (1.0, 10), (0.0, 0)]:
        box, _ = heatmap_to_box(heatmap, threshold=threshold)
        assert_array_equal(box, [x0, 0, 11, 3])


def test_single_pixel_box_convention():
    heatmap = np.zeros((6, 8))
    heatmap[3, 5] = 0.7
    box, score = heatmap_to_box(heatmap)
    assert_array_equal(box, [5, 3, 6, 4])
    assert score == 0.7


def test_diagonal_pixels_form_one_component():
    heatmap = np.zeros((6, 8))
    heatmap[[0, 1, 2], [0, 1, 2]] = 1.0  # 3 pixels touching only at corners
    heatmap[4, 6:8] = 1.0  # 2 pixels side by side
    box, score = heatmap_to_box(heatmap)
    assert_array_equal(box, [0, 0, 3, 3])
    assert score == 1.0


def test_size_tie_goes_to_the_component_with_the_max_then_the_first():
    heatmap = np.zeros((6, 8))
    heatmap[0, 0:2] = 0.5
    heatmap[4, 5:7] = [0.5, 1.0]
    assert_array_equal(heatmap_to_box(heatmap)[0], [5, 4, 7, 5])
    heatmap[4, 5:7] = 0.5
    heatmap[0, 0:2] = 0.5
    assert_array_equal(heatmap_to_box(heatmap)[0], [0, 0, 2, 1])


@pytest.mark.parametrize("value", [0.0, 0.3, 1.0])
def test_constant_map_gives_the_full_box(value):
    box, score = heatmap_to_box(np.full((6, 8), value))
    assert_array_equal(box, [0, 0, 8, 6])
    assert score == pytest.approx(value)


def test_integer_and_bool_maps_are_accepted():
    heatmap = np.zeros((6, 8), dtype=int)
    heatmap[2:4, 3:6] = 2
    assert_array_equal(heatmap_to_box(heatmap)[0], [3, 2, 6, 4])
    assert_array_equal(heatmap_to_box(heatmap > 0)[0], [3, 2, 6, 4])


def test_batch_matches_single_maps_and_does_not_connect_images():
    maps = np.zeros((3, 6, 8))
    maps[0] = two_blobs()
    maps[1, 5, 0:3] = 1.0  # touches image 2's top row only across the batch axis
    maps[2, 0, 0:2] = 1.0
    maps[2, 3:5, 4:6] = 0.8
    boxes, scores = heatmaps_to_boxes(maps)
    assert boxes.shape == (3, 4) and scores.shape == (3,)
    for i in range(3):
        box, score = heatmap_to_box(maps[i])
        assert_array_equal(boxes[i], box)
        assert scores[i] == score
    assert_array_equal(boxes[1:], [[0, 5, 3, 6], [4, 3, 6, 5]])


@pytest.mark.parametrize(
    "heatmap, match",
    [
        (np.zeros((2, 6, 8)), "heatmap must be a 2-D"),
        (np.zeros(8), "heatmap must be a 2-D"),
        (np.zeros((0, 8)), "heatmap is empty"),
        (np.full((6, 8), np.nan), "heatmap contains NaN"),
        (np.full((6, 8), np.inf), "heatmap contains NaN"),
        (-np.ones((6, 8)), "heatmap contains negative"),
        (np.full((6, 8), "a"), "heatmap must hold real numbers"),
        (np.ones((6, 8), dtype=complex), "heatmap must hold real numbers"),
        ([[0, 1], [0]], "heatmap must be a regular"),
    ],
)
def test_heatmap_to_box_rejects_bad_input(heatmap, match):
    with pytest.raises(ValueError, match=match):
        heatmap_to_box(heatmap)


@pytest.mark.parametrize("threshold", [-0.1, 1.5, "grad-cam", None])
def test_functions_reject_bad_threshold(threshold):
    with pytest.raises(ValueError, match="threshold"):
        heatmap_to_box(np.ones((2, 2)), threshold=threshold)
    with pytest.raises(ValueError, match="threshold"):
        heatmaps_to_boxes(np.ones((1, 2, 2)), threshold=threshold)


def test_heatmaps_to_boxes_rejects_bad_rank_and_empty_batch():
    with pytest.raises(ValueError, match="heatmaps must be a 3-D"):
        heatmaps_to_boxes(np.ones((6, 8)))
    with pytest.raises(ValueError, match="heatmaps is empty"):
        heatmaps_to_boxes(np.ones((0, 6, 8)))


@st.composite
def rectangles(draw):
    height, width = draw(st.integers(1, 20)), draw(st.integers(1, 20))
    r0, c0 = draw(st.integers(0, height - 1)), draw(st.integers(0, width - 1))
    r1, c1 = draw(st.integers(r0 + 1, height)), draw(st.integers(c0 + 1, width))
    value = draw(st.floats(0.01, 10))
    return (height, width), (c0, r0, c1, r1), value


@given(rectangles(), st.floats(0.01, 1))
def test_a_rectangular_blob_gives_back_its_rectangle(rectangle, threshold):
    shape, (c0, r0, c1, r1), value = rectangle
    heatmap = np.zeros(shape)
    heatmap[r0:r1, c0:c1] = value
    box, score = heatmap_to_box(heatmap, threshold=threshold)
    assert_array_equal(box, [c0, r0, c1, r1])
    assert score == pytest.approx(value)


heatmap_batches = hnp.arrays(
    np.float64,
    hnp.array_shapes(min_dims=3, max_dims=3, min_side=1, max_side=9),
    elements=st.sampled_from([0.0, 0.1, 0.25, 0.5, 1.0]),  # few values: ties and many blobs
)


@given(heatmap_batches, st.floats(0, 1))
def test_boxes_lie_inside_the_image_and_scores_in_the_kept_range(maps, threshold):
    boxes, scores = heatmaps_to_boxes(maps, threshold=threshold)
    n, height, width = maps.shape
    assert np.all((boxes[:, 0] >= 0) & (boxes[:, 2] <= width) & (boxes[:, 0] < boxes[:, 2]))
    assert np.all((boxes[:, 1] >= 0) & (boxes[:, 3] <= height) & (boxes[:, 1] < boxes[:, 3]))
    peaks = maps.reshape(n, -1).max(axis=1)
    assert np.all(scores <= peaks + 1e-12)
    assert np.all(scores >= threshold * peaks - 1e-12)


def reference_box(heatmap, threshold):
    """The rule written plainly, one image at a time, for comparison."""
    labels, _ = ndimage.label(heatmap >= threshold * heatmap.max(), structure=np.ones((3, 3)))
    sizes = np.bincount(labels.ravel())[1:]
    largest = np.flatnonzero(sizes == sizes.max()) + 1
    at_max = labels.ravel()[heatmap.argmax()]
    label = at_max if at_max in largest else largest[0]
    rows, cols = np.nonzero(labels == label)
    box = [cols.min(), rows.min(), cols.max() + 1, rows.max() + 1]
    return box, heatmap[labels == label].mean()


@given(heatmap_batches, st.floats(0, 1))
def test_batch_agrees_with_a_per_image_reference(maps, threshold):
    boxes, scores = heatmaps_to_boxes(maps, threshold=threshold)
    for i, heatmap in enumerate(maps):
        box, score = reference_box(heatmap, threshold)
        assert_array_equal(boxes[i], box)
        assert scores[i] == pytest.approx(score)


@given(heatmap_batches, st.randoms(use_true_random=False))
@settings(max_examples=50)
def test_permuting_the_batch_permutes_the_boxes(maps, rng):
    perm = list(range(len(maps)))
    rng.shuffle(perm)
    boxes, scores = heatmaps_to_boxes(maps)
    boxes_p, scores_p = heatmaps_to_boxes(maps[perm])
    assert_array_equal(boxes_p, boxes[perm])
    assert_array_equal(scores_p, scores[perm])


# --------------------------------------------------------------------------- HeatmapBoxes


def test_transformer_matches_the_function_and_outputs_pandas():
    pd = pytest.importorskip("pandas")
    maps = np.stack([two_blobs(), np.full((6, 8), 0.3)])
    est = HeatmapBoxes().set_output(transform="pandas")
    out = est.fit_transform(maps)
    assert isinstance(out, pd.DataFrame)
    assert list(out.columns) == ["x0", "y0", "x1", "y1", "score"]
    assert_allclose(out.to_numpy(), [[5, 2, 8, 5, 0.5], [0, 0, 8, 6, 0.3]])


def test_transformer_with_several_maps_per_image():
    maps = np.zeros((2, 3, 6, 8))
    maps[:, 0] = two_blobs()
    maps[0, 1, 3, 5] = 1.0
    maps[1, 1] = 0.3
    maps[:, 2, 0:2, 0:2] = 0.4
    est = HeatmapBoxes().fit(maps)
    assert est.heatmap_shape_ == (3, 6, 8) and est.n_targets_ == 3
    out = est.transform(maps)
    assert out.shape == (2, 15)
    names = est.get_feature_names_out()
    assert list(names[:6]) == ["x0_0", "y0_0", "x1_0", "y1_0", "score_0", "x0_1"]
    assert names[-1] == "score_2"
    for i in range(2):
        for t in range(3):
            box, score = heatmap_to_box(maps[i, t])
            assert_array_equal(out[i, 5 * t : 5 * t + 5], [*box, score])


def test_transformer_in_a_pipeline():
    # A stand-in for an explainer: images -> heatmaps by a channel mean.
    images = np.zeros((2, 6, 8, 3))
    images[0, 1:4, 2:5] = 1.0
    images[1, 5, 7] = 1.0
    pipe = make_pipeline(FunctionTransformer(lambda x: x.mean(axis=-1)), HeatmapBoxes())
    assert_array_equal(pipe.fit_transform(images), [[2, 1, 5, 4, 1], [7, 5, 8, 6, 1]])


@pytest.mark.parametrize("preset, value", [("cam", 0.2), ("gradcam", 0.15)])
def test_presets_equal_their_values(preset, value):
    rng = np.random.default_rng(0)
    maps = rng.random((5, 12, 12)) ** 3
    assert_array_equal(
        HeatmapBoxes(threshold=preset).fit_transform(maps),
        HeatmapBoxes(threshold=value).fit_transform(maps),
    )
    assert HeatmapBoxes(threshold=preset).get_params()["threshold"] == preset


def test_spatial_size_may_change_between_fit_and_transform():
    est = HeatmapBoxes().fit(np.ones((1, 6, 8)))
    assert_array_equal(est.transform(np.ones((2, 3, 4)))[:, :4], [[0, 0, 4, 3]] * 2)


def test_not_fitted():
    with pytest.raises(NotFittedError):
        HeatmapBoxes().transform(np.ones((1, 6, 8)))
    with pytest.raises(NotFittedError):
        HeatmapBoxes().get_feature_names_out()


@pytest.mark.parametrize(
    "X, match",
    [
        (np.ones((6, 8)), "X must be a 3-D or 4-D"),
        (np.ones((1, 1, 1, 6, 8)), "X must be a 3-D or 4-D"),
        (np.ones((0, 6, 8)), "X is empty"),
        (np.full((1, 6, 8), np.nan), "X contains NaN"),
        (-np.ones((1, 6, 8)), "X contains negative"),
        (np.full((1, 6, 8), "x"), "X must hold real numbers"),
    ],
)
def test_transformer_rejects_bad_input(X, match):
    with pytest.raises(ValueError, match=match):
        HeatmapBoxes().fit(X)
    est = HeatmapBoxes().fit(np.ones((1, 6, 8)))
    with pytest.raises(ValueError, match=match):
        est.transform(X)


def test_transformer_rejects_layout_changes_after_fit():
    with pytest.raises(ValueError, match="X must be 3-D as in fit"):
        HeatmapBoxes().fit(np.ones((1, 6, 8))).transform(np.ones((1, 2, 6, 8)))
    with pytest.raises(ValueError, match="X must be 4-D as in fit"):
        HeatmapBoxes().fit(np.ones((1, 2, 6, 8))).transform(np.ones((1, 6, 8)))
    with pytest.raises(ValueError, match="X has 3 heatmaps per image"):
        HeatmapBoxes().fit(np.ones((1, 2, 6, 8))).transform(np.ones((1, 3, 6, 8)))


@pytest.mark.parametrize("threshold", [-0.1, 1.01, "cams", [0.2]])
def test_transformer_rejects_bad_threshold(threshold):
    with pytest.raises(ValueError, match="'threshold' parameter of HeatmapBoxes"):
        HeatmapBoxes(threshold=threshold).fit(np.ones((1, 6, 8)))


@pytest.mark.parametrize(
    "check",
    [
        check_get_params_invariance,
        check_set_params,
        check_estimator_cloneable,
        check_estimator_repr,
        check_no_attributes_set_in_init,
        check_parameters_default_constructible,
    ],
)
def test_sklearn_data_free_checks(check):
    check("HeatmapBoxes", HeatmapBoxes())


# --------------------------------------------------------------------------- IoU


def test_iou_exact_values():
    assert box_iou([0, 0, 2, 2], [1, 1, 3, 3]) == pytest.approx(1 / 7)
    assert box_iou([0, 0, 2, 2], [0, 0, 2, 1]) == 0.5
    assert box_iou([0, 0, 4, 4], [1, 1, 3, 3]) == 0.25
    assert box_iou([0, 0, 2, 2], [2, 0, 4, 2]) == 0.0  # shared edge only
    assert box_iou([0, 0, 0, 0], [0, 0, 0, 0]) == 0.0  # zero-area union


def test_iou_shapes_and_broadcasting():
    a = np.array([[0, 0, 2, 2], [1, 1, 3, 3], [5, 5, 6, 6]])
    assert_allclose(box_iou(a, [0, 0, 2, 2]), [1, 1 / 7, 0])
    assert_allclose(box_iou(a, a[::-1]), [0, 1, 0])
    assert box_iou(a[0], a[0]).shape == ()
    assert_allclose(box_iou_matrix(a, a[:2]), [[1, 1 / 7], [1 / 7, 1], [0, 0]])
    assert box_iou_matrix(a[0], a).shape == (1, 3)


@pytest.mark.parametrize(
    "boxes, match",
    [
        ([0, 0, 1], "last axis"),
        ([[2, 0, 1, 1]], "x1 < x0"),
        ([[0, 2, 1, 1]], "x1 < x0 or y1 < y0"),
        ([[0, 0, np.nan, 1]], "NaN"),
        ([[0, 0, np.inf, 1]], "NaN"),
        (np.array(["0", "0", "1", "1"]), "real numbers"),
        ([[0, 0, 1, 1], [0, 0]], "must be an array"),
    ],
)
def test_iou_rejects_bad_boxes_naming_the_argument(boxes, match):
    good = [0, 0, 1, 1]
    with pytest.raises(ValueError, match=f"boxes_a.*{match}"):
        box_iou(boxes, good)
    with pytest.raises(ValueError, match=f"boxes_b.*{match}"):
        box_iou(good, boxes)
    with pytest.raises(ValueError, match=f"boxes_b.*{match}"):
        box_iou_matrix(good, boxes)


def test_iou_rejects_unbroadcastable_shapes_and_3d_matrix_input():
    with pytest.raises(ValueError, match="broadcastable"):
        box_iou(np.zeros((3, 4)), np.zeros((2, 4)))
    with pytest.raises(ValueError, match="boxes_a must be a 1-D or 2-D"):
        box_iou_matrix(np.zeros((2, 3, 4)), np.zeros((2, 4)))


@st.composite
def boxes(draw, n=None, positive=False):
    n = draw(st.integers(1, 8)) if n is None else n
    low = 1 if positive else 0
    xy = draw(hnp.arrays(np.int64, (n, 2), elements=st.integers(-20, 20)))
    wh = draw(hnp.arrays(np.int64, (n, 2), elements=st.integers(low, 15)))
    return np.hstack([xy, xy + wh]).astype(float)


@given(st.data())
def test_iou_is_symmetric_and_in_unit_interval(data):
    a = data.draw(boxes())
    b = data.draw(boxes(n=len(a)))
    iou = box_iou(a, b)
    assert_array_equal(iou, box_iou(b, a))
    assert np.all((iou >= 0) & (iou <= 1))


@given(boxes(positive=True))
def test_iou_with_itself_is_one_and_with_a_disjoint_copy_zero(a):
    assert_allclose(box_iou(a, a), 1.0)
    shifted = a + (a[:, 2] - a[:, 0] + 1)[:, None] * [1, 0, 1, 0]
    assert_array_equal(box_iou(a, shifted), 0.0)


@given(st.data())
def test_iou_matrix_agrees_with_pairwise_iou(data):
    a = data.draw(boxes())
    b = data.draw(boxes(n=len(a)))
    c = data.draw(boxes())
    assert_allclose(np.diag(box_iou_matrix(a, b)), box_iou(a, b))
    matrix = box_iou_matrix(a, c)
    assert matrix.shape == (len(a), len(c))
    assert_allclose(matrix, box_iou_matrix(c, a).T)


# --------------------------------------------------------------------------- localization

# Four images; the IoU of the first predicted box with the (single) ground truth is
# 1, 1/7, 0.5 (counts: >= 0.5) and 0.
PRED = np.array([[0, 0, 2, 2], [0, 0, 2, 2], [0, 0, 2, 2], [0, 0, 2, 2]])
TRUE = np.array([[0, 0, 2, 2], [1, 1, 3, 3], [0, 0, 2, 1], [5, 5, 6, 6]])
Y_TRUE = np.array([1, 2, 3, 4])


def test_gt_known_localization():
    assert_allclose(best_iou(PRED, TRUE), [1, 1 / 7, 0.5, 0])
    assert_array_equal(localization_correct(PRED, TRUE), [True, False, True, False])
    assert localization_accuracy(PRED, TRUE) == 0.5
    assert localization_accuracy(PRED, TRUE, iou_threshold=0.1) == 0.75
    assert localization_accuracy(PRED, TRUE, iou_threshold=0.0) == 1.0


def test_top1_localization_needs_the_right_class():
    y_pred = np.array([1, 2, 0, 4])  # right, right (bad box), wrong (good box), right (bad box)
    assert_array_equal(
        localization_correct(PRED, TRUE, y_true=Y_TRUE, y_pred=y_pred),
        [True, False, False, False],
    )
    assert localization_accuracy(PRED, TRUE, y_true=Y_TRUE, y_pred=y_pred) == 0.25
    assert localization_accuracy(PRED, TRUE, y_true=Y_TRUE, y_pred=y_pred[:, None]) == 0.25


def test_top_k_localization_uses_the_box_of_the_guess_with_the_true_class():
    good = [[0, 0, 2, 2], [1, 1, 3, 3], [0, 0, 2, 1], [5, 5, 6, 6]]  # IoU 1 with TRUE
    bad = [[9, 9, 10, 10]] * 4  # IoU 0 with TRUE
    pred = np.stack([bad, good, bad], axis=1)  # (4, 3, 4): only the second guess is well boxed
    y_pred = np.array(
        [
            [0, 1, 9],  # true class second, good box -> correct
            [2, 0, 9],  # true class first, bad box; good box has a wrong class -> wrong
            [0, 9, 3],  # true class third, bad box -> wrong
            [4, 4, 0],  # true class second (repeated), good box -> correct
        ]
    )
    correct = localization_correct(pred, TRUE, y_true=Y_TRUE, y_pred=y_pred)
    assert_array_equal(correct, [True, False, False, True])
    assert localization_accuracy(pred, TRUE, y_true=Y_TRUE, y_pred=y_pred) == 0.5
    # Top-1 is the first column: every first box is bad.
    top1 = localization_accuracy(pred[:, 0], TRUE, y_true=Y_TRUE, y_pred=y_pred[:, 0])
    assert top1 == 0.0
    # One class-agnostic box per image is shared by all guesses.
    assert_array_equal(
        localization_correct(PRED, TRUE, y_true=Y_TRUE, y_pred=y_pred),
        [True, False, True, False],  # every true class is guessed; the IoUs decide
    )


def test_several_ground_truth_boxes_per_image():
    true = [
        [[5, 5, 6, 6], [0, 0, 2, 2]],  # second box matches
        np.array([[1, 1, 3, 3]]),
        [0, 0, 2, 1],  # a single box given flat
        [[5, 5, 6, 6], [7, 7, 8, 8], [0, 0, 1, 1]],  # best IoU 0.25
    ]
    assert_allclose(best_iou(PRED, true), [1, 1 / 7, 0.5, 0.25])
    assert localization_accuracy(PRED, true) == 0.5
    padded = np.array([[[5, 5, 6, 6], [0, 0, 2, 2]], [[1, 1, 3, 3], [1, 1, 3, 3]]])
    assert_array_equal(localization_correct(PRED[:2], padded), [True, False])
    assert best_iou(np.stack([PRED, PRED], axis=1), true).shape == (4, 2)


def test_localization_errors_name_the_argument():
    with pytest.raises(ValueError, match="y_true and y_pred must be given together"):
        localization_accuracy(PRED, TRUE, y_true=Y_TRUE)
    with pytest.raises(ValueError, match="y_true and y_pred must be given together"):
        localization_accuracy(PRED, TRUE, y_pred=Y_TRUE)
    with pytest.raises(ValueError, match="pred_boxes must have shape \\(n_images, 4\\)"):
        localization_accuracy(np.zeros((4, 2, 4)), TRUE)
    with pytest.raises(ValueError, match="pred_boxes has 2 boxes per image but y_pred has 3"):
        localization_accuracy(np.zeros((4, 2, 4)), TRUE, y_true=Y_TRUE, y_pred=np.zeros((4, 3)))
    with pytest.raises(ValueError, match="inconsistent numbers of samples"):
        localization_accuracy(PRED, TRUE, y_true=Y_TRUE[:3], y_pred=Y_TRUE)
    with pytest.raises(ValueError, match="y_true must be 1-D"):
        localization_accuracy(PRED, TRUE, y_true=Y_TRUE[:, None], y_pred=Y_TRUE)
    with pytest.raises(ValueError, match="y_pred must have shape"):
        localization_accuracy(PRED, TRUE, y_true=Y_TRUE, y_pred=np.zeros((4, 1, 1)))
    with pytest.raises(ValueError, match="true_boxes has 3 images but pred_boxes has 4"):
        localization_accuracy(PRED, TRUE[:3])
    with pytest.raises(ValueError, match="true_boxes\\[1\\] is empty"):
        localization_accuracy(PRED[:2], [TRUE[0], np.zeros((0, 4))])
    with pytest.raises(ValueError, match="true_boxes\\[0\\] has boxes with x1 < x0"):
        localization_accuracy(PRED[:1], [[[2, 0, 1, 1]]])
    with pytest.raises(ValueError, match="pred_boxes is empty"):
        localization_accuracy(np.zeros((0, 4)), np.zeros((0, 4)))
    with pytest.raises(ValueError, match=r"pred_boxes.*last axis"):
        localization_accuracy(np.zeros((4, 3)), TRUE)
    with pytest.raises(ValueError, match="iou_threshold"):
        localization_accuracy(PRED, TRUE, iou_threshold=1.5)
