"""Masks and ignore regions carried by ImageBoxDataset (PxAP's ground truth)."""

import pickle

import numpy as np
import pytest

from sklearn_caf.datasets import ImageBoxDataset


def make(n=3, masks=True, ignore=True):
    rng = np.random.default_rng(0)
    images = rng.random((n, 3, 6, 5)).astype(np.float32)
    m = rng.random((n, 6, 5)) < 0.4 if masks else None
    ig = rng.random((n, 6, 5)) < 0.2 if ignore else None
    ds = ImageBoxDataset.from_arrays(
        images, list(range(n)), [[0, 0, 5, 6]] * n, masks=m, ignore=ig
    )
    return ds, m, ig


def test_masks_round_trip_subset_and_pickle():
    ds, m, ig = make()
    assert ds.has_masks
    got_m, got_ig = ds.load_masks()
    np.testing.assert_array_equal(got_m, m)
    np.testing.assert_array_equal(got_ig, ig)
    sub = ds.subset([2, 0])
    np.testing.assert_array_equal(sub.load_masks()[0], m[[2, 0]])
    np.testing.assert_array_equal(sub.load_masks([1])[1], ig[[0]])
    back = pickle.loads(pickle.dumps(ds))
    np.testing.assert_array_equal(back.load_masks([-1])[0], m[[-1]])


def test_no_ignore_is_all_false_and_no_masks_is_an_error():
    ds, m, _ = make(ignore=False)
    got_m, got_ig = ds.load_masks([1])
    np.testing.assert_array_equal(got_m, m[[1]])
    assert got_ig.shape == (1, 6, 5) and not got_ig.any()
    plain, _, _ = make(masks=False, ignore=False)
    assert not plain.has_masks
    with pytest.raises(ValueError, match="no masks"):
        plain.load_masks()


def test_masks_count_in_the_fingerprint_only_when_present():
    ds, m, ig = make()
    plain, _, _ = make(masks=False, ignore=False)
    same_images = ImageBoxDataset.from_arrays(
        np.random.default_rng(0).random((3, 3, 6, 5)).astype(np.float32),
        [0, 1, 2],
        [[0, 0, 5, 6]] * 3,
    )
    assert plain.fingerprint() == same_images.fingerprint()
    assert ds.fingerprint() != plain.fingerprint()
    flipped = m.copy()
    flipped[0, 0, 0] ^= True
    other = ImageBoxDataset.from_arrays(
        np.random.default_rng(0).random((3, 3, 6, 5)).astype(np.float32),
        [0, 1, 2],
        [[0, 0, 5, 6]] * 3,
        masks=flipped,
        ignore=ig,
    )
    assert other.fingerprint() != ds.fingerprint()


def test_mask_errors_name_the_parameter():
    images = np.zeros((2, 3, 4, 4))
    boxes = [[0, 0, 4, 4]] * 2
    with pytest.raises(ValueError, match=r"masks must have shape \(2, 4, 4\)"):
        ImageBoxDataset.from_arrays(images, [0, 0], boxes, masks=np.zeros((2, 4, 5)))
    with pytest.raises(ValueError, match="ignore must be boolean"):
        ImageBoxDataset.from_arrays(
            images, [0, 0], boxes, masks=np.zeros((2, 4, 4)), ignore=np.full((2, 4, 4), 2)
        )
    with pytest.raises(ValueError, match="ignore needs masks"):
        ImageBoxDataset.from_arrays(images, [0, 0], boxes, ignore=np.zeros((2, 4, 4)))


def test_with_masks_adds_masks_to_any_dataset():
    from sklearn_caf.datasets import make_wsol_dataset

    ds = make_wsol_dataset(4, image_size=16, random_state=0)
    m = np.random.default_rng(1).random((4, 16, 16)) < 0.5
    masked = ds.with_masks(m.astype(int), ignore=~m)
    assert not ds.has_masks and masked.has_masks
    np.testing.assert_array_equal(masked.load_masks([3, 1])[0], m[[3, 1]])
    np.testing.assert_array_equal(masked.load_masks()[1], ~m)
    assert masked.ids == ds.ids and masked.labels.tolist() == ds.labels.tolist()
    assert masked.fingerprint() != ds.fingerprint()
    np.testing.assert_array_equal(masked.subset([2]).load_masks()[0], m[[2]])
    with pytest.raises(ValueError, match=r"masks must have shape \(4, 16, 16\)"):
        ds.with_masks(m[:3])
    with pytest.raises(ValueError, match="masks must be an array"):
        ds.with_masks(None)
