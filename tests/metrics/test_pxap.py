"""PxAP against wsolevaluation's ``MaskEvaluator`` rules, written here independently with
``np.histogram`` (its bins, its ignore mask, its set-wide accumulation and its AP sum)."""

import numpy as np
import pytest

from sklearn_caf.metrics import (
    DEFAULT_THRESHOLDS,
    pixel_average_precision,
    pixel_average_precision_from_histograms,
    pixel_precision_recall_curve,
    pixel_score_histograms,
)


def reference_normalize(cam):
    """``normalize_scoremap``: NaN or constant maps become zeros, else min-max."""
    cam = np.array(cam, dtype=np.float64)
    if np.isnan(cam).any() or cam.min() == cam.max():
        return np.zeros_like(cam)
    cam -= cam.min()
    cam /= cam.max()
    return cam


def reference_pxap(maps, masks, ignores, thresholds):
    """``MaskEvaluator.accumulate`` over the images, then ``compute`` (in percent).

    Returns ``(auc, precision, recall)`` with precision and recall in the reference's order:
    edges ``>= 2, >= 1, >= t_(n-1), ..., >= t_0``.
    """
    edges = np.append(np.asarray(thresholds, dtype=np.float64), [1.0, 2.0, 3.0])
    true_hist = np.zeros(len(thresholds) + 2)
    false_hist = np.zeros(len(thresholds) + 2)
    for scoremap, mask, ignore in zip(maps, masks, ignores, strict=True):
        fg = mask > 0.5
        ignore_mask = np.logical_and(ignore > 0.5, np.logical_not(fg))
        gt = fg.astype(np.uint8) + 255 * ignore_mask.astype(np.uint8)
        true_hist += np.histogram(scoremap[gt == 1], bins=edges)[0]
        false_hist += np.histogram(scoremap[gt == 0], bins=edges)[0]
    tp = true_hist[::-1].cumsum()
    fn = true_hist.sum() - tp
    fp = false_hist[::-1].cumsum()
    if ((tp + fn) <= 0).all():
        raise RuntimeError("No positive ground truth in the eval set.")
    if ((tp + fp) <= 0).all():
        raise RuntimeError("No positive prediction in the eval set.")
    non_zero = (tp + fp) != 0
    with np.errstate(invalid="ignore", divide="ignore"):
        precision = tp / (tp + fp)
    recall = tp / (tp + fn)
    auc = (precision[1:] * np.diff(recall))[non_zero[1:]].sum() * 100
    return auc, precision, recall


def check_against_reference(maps, masks, ignores=None, thresholds=DEFAULT_THRESHOLDS):
    maps = np.asarray(maps, dtype=np.float64)
    masks = np.asarray(masks, dtype=bool)
    ref_ignores = np.zeros_like(masks) if ignores is None else np.asarray(ignores, dtype=bool)
    normalized = np.stack([reference_normalize(m) for m in maps])
    auc, precision, recall = reference_pxap(normalized, masks, ref_ignores, thresholds)
    got = pixel_average_precision(maps, masks, ignore=ignores, thresholds=thresholds)
    assert got * 100 == auc  # to the last bit: the same sums in the same order
    # The same number from the maps the reference reads, without our normalization.
    got_raw = pixel_average_precision(
        normalized, masks, ignore=ignores, thresholds=thresholds, normalize=False
    )
    assert got_raw == pytest.approx(auc / 100, rel=1e-12, abs=1e-15)
    cur_p, cur_r, cur_t = pixel_precision_recall_curve(
        maps, masks, ignore=ignores, thresholds=thresholds
    )
    np.testing.assert_array_equal(cur_t, np.append(thresholds, 1.0))
    np.testing.assert_array_equal(cur_p, precision[1:][::-1])
    np.testing.assert_array_equal(cur_r, recall[1:][::-1])
    return got


def blob(h, w, cy, cx, sigma, rng, noise=0.05):
    yy, xx = np.mgrid[:h, :w]
    g = np.exp(-((yy - cy) ** 2 + (xx - cx) ** 2) / (2 * sigma**2))
    return g + noise * rng.random((h, w))


def test_blobs_with_masks_and_ignore_regions():
    rng = np.random.default_rng(0)
    n, h, w = 12, 40, 48
    maps, masks, ignores = [], [], []
    for i in range(n):
        cy, cx = rng.integers(5, h - 5), rng.integers(5, w - 5)
        maps.append(blob(h, w, cy, cx, rng.uniform(2, 10), rng))
        yy, xx = np.mgrid[:h, :w]
        masks.append((yy - cy) ** 2 + (xx - cx) ** 2 < rng.uniform(9, 80))
        ig = np.zeros((h, w), dtype=bool)
        if i % 2:  # an ignore box overlapping the object: its foreground still counts
            y0, x0 = rng.integers(0, h - 10), rng.integers(0, w - 10)
            ig[y0 : y0 + 12, x0 : x0 + 15] = True
        ignores.append(ig)
    pxap = check_against_reference(maps, masks, ignores)
    assert 0.3 < pxap < 1.0
    # The ignore regions change the number (they are not silently dropped).
    assert pixel_average_precision(maps, masks) != pxap


@pytest.mark.parametrize("interval", [0.01, 0.001, 0.05])
def test_ties_on_the_threshold_grid(interval):
    """Maps whose values are multiples of 0.01 sit on (or next to) the float grid's edges."""
    rng = np.random.default_rng(1)
    thresholds = np.arange(0, 1, interval)
    levels = rng.integers(0, 101, size=(6, 16, 16)) / 100
    levels[:, 0, 0], levels[:, 0, 1] = 0.0, 1.0  # normalization leaves them unchanged
    masks = rng.random((6, 16, 16)) < levels  # foreground likelier where the map is high
    ignores = rng.random((6, 16, 16)) < 0.1
    check_against_reference(levels, masks, ignores, thresholds)
    check_against_reference(levels, masks, None, thresholds)


def test_few_levels_many_ties():
    rng = np.random.default_rng(2)
    maps = rng.integers(0, 4, size=(10, 9, 11)).astype(float)
    masks = rng.random((10, 9, 11)) < 0.4
    check_against_reference(maps, masks, rng.random((10, 9, 11)) < 0.2)


def test_empty_full_and_constant():
    rng = np.random.default_rng(3)
    h, w = 12, 12
    maps = [blob(h, w, 6, 6, 3, rng), blob(h, w, 2, 9, 2, rng), np.full((h, w), 7.0)]
    maps += [np.zeros((h, w)), blob(h, w, 9, 3, 4, rng)]
    masks = [np.zeros((h, w), bool), np.ones((h, w), bool), np.zeros((h, w), bool)]
    masks += [np.ones((h, w), bool), np.zeros((h, w), bool)]
    masks[4][7:11, 1:6] = True
    ignores = [np.zeros((h, w), bool)] * 4 + [np.ones((h, w), bool)]  # all ignored but fg
    check_against_reference(maps, masks, ignores)
    # A constant map alone: every pixel at score 0, one point of the curve.
    check_against_reference([np.full((h, w), 3.0)], [masks[4]])


def test_full_masks_give_precision_one():
    rng = np.random.default_rng(4)
    maps = rng.random((3, 8, 8))
    assert check_against_reference(maps, np.ones((3, 8, 8), bool)) == pytest.approx(1.0)


def test_perfect_and_inverted_maps():
    mask = np.zeros((1, 10, 10), bool)
    mask[0, 2:6, 3:8] = True
    assert pixel_average_precision(mask.astype(float), mask) == 1.0
    inverted = check_against_reference((~mask).astype(float), mask)
    assert inverted == pytest.approx(mask.mean())  # everything kept at t = 0 only


def test_pixels_below_the_first_threshold_count_nowhere():
    maps = np.array([[[0.0, 0.2, 0.6, 1.0]]])
    masks = np.array([[[True, False, True, True]]])
    check_against_reference(maps, masks, thresholds=[0.5])
    _, recall, _ = pixel_precision_recall_curve(maps, masks, thresholds=[0.5])
    np.testing.assert_array_equal(recall, [1.0, 0.5])  # the pixel at 0 is not a false negative


def test_errors_name_the_parameter():
    maps = np.random.default_rng(5).random((2, 4, 4))
    masks = np.zeros((2, 4, 4), bool)
    with pytest.raises(ValueError, match="masks has no foreground"):
        pixel_average_precision(maps, masks)
    masks[0, 1, 1] = True
    with pytest.raises(ValueError, match="no foreground"):
        pixel_average_precision(
            maps, masks, ignore=np.ones_like(masks) & ~masks, thresholds=[0.99]
        )
    with pytest.raises(ValueError, match="masks must have the shape"):
        pixel_average_precision(maps, masks[:1])
    with pytest.raises(ValueError, match="ignore must be boolean"):
        pixel_average_precision(maps, masks, ignore=np.full((2, 4, 4), 0.5))
    with pytest.raises(ValueError, match="thresholds must be strictly increasing"):
        pixel_average_precision(maps, masks, thresholds=[0.5, 0.1])
    with pytest.raises(ValueError, match=r"thresholds must hold values in \[0, 1\)"):
        pixel_average_precision(maps, masks, thresholds=[0.0, 1.0])
    with pytest.raises(ValueError, match="normalize=False"):
        pixel_average_precision(maps * 2, masks, normalize=False)
    with pytest.raises(ValueError, match="heatmaps"):
        pixel_average_precision(maps[0], masks[0])
    with pytest.raises(ValueError, match="NaN"):
        pixel_average_precision(np.full((2, 4, 4), np.nan), masks)


def test_reference_raises_where_we_raise():
    """Our errors are the reference's two RuntimeErrors."""
    maps = np.zeros((1, 3, 3))
    with pytest.raises(RuntimeError, match="No positive ground truth"):
        reference_pxap(maps, np.zeros((1, 3, 3)), np.zeros((1, 3, 3)), DEFAULT_THRESHOLDS)
    with pytest.raises(ValueError):
        pixel_average_precision(maps, np.zeros((1, 3, 3), bool))


def test_histograms_summed_over_chunks_give_the_same_pxap():
    rng = np.random.default_rng(6)
    maps = rng.random((9, 10, 12)) ** 3
    masks = rng.random((9, 10, 12)) < maps
    ignores = rng.random((9, 10, 12)) < 0.15
    whole = check_against_reference(maps, masks, ignores)
    true_hist, false_hist = pixel_score_histograms(maps, masks, ignore=ignores)
    assert true_hist.shape == false_hist.shape == (9, len(DEFAULT_THRESHOLDS) + 1)
    # Every counted pixel is in exactly one bin (the grid starts at 0).
    np.testing.assert_array_equal(true_hist.sum(axis=1), masks.sum(axis=(1, 2)))
    np.testing.assert_array_equal(false_hist.sum(axis=1), (~masks & ~ignores).sum(axis=(1, 2)))
    assert pixel_average_precision_from_histograms(true_hist, false_hist) == whole
    parts = [
        pixel_score_histograms(maps[s], masks[s], ignore=ignores[s])
        for s in (slice(0, 4), slice(4, 9))
    ]
    summed = [parts[0][k].sum(axis=0) + parts[1][k].sum(axis=0) for k in (0, 1)]
    assert pixel_average_precision_from_histograms(*summed) == whole
    with pytest.raises(ValueError, match="one shape"):
        pixel_average_precision_from_histograms(true_hist, false_hist[:, 1:])
    with pytest.raises(ValueError, match="false_hist must hold non-negative"):
        pixel_average_precision_from_histograms(true_hist, -false_hist)
