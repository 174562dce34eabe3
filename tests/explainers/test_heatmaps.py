"""Resizing and normalizing raw maps (sklearn_caf._explainers._heatmaps); torch as reference."""

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from numpy.testing import assert_allclose, assert_array_equal

from sklearn_caf._explainers._heatmaps import minmax_normalize, resize_maps, to_heatmaps

torch = pytest.importorskip("torch")
F = torch.nn.functional


def torch_resize(maps, size, mode):
    """torch's interpolate (align_corners=False) on (n, k, *spatial) float64 maps."""
    return F.interpolate(
        torch.as_tensor(maps, dtype=torch.float64),
        size=tuple(size),
        mode=mode,
        align_corners=False,
    ).numpy()


@given(
    seed=st.integers(0, 2**32 - 1),
    h=st.integers(1, 7),
    w=st.integers(1, 7),
    factor_h=st.integers(1, 5),
    factor_w=st.integers(1, 5),
    extra_h=st.integers(0, 3),
    extra_w=st.integers(0, 3),
)
def test_bilinear_upsampling_matches_torch(seed, h, w, factor_h, factor_w, extra_h, extra_w):
    maps = np.random.default_rng(seed).standard_normal((2, 3, h, w))
    size = (h * factor_h + extra_h, w * factor_w + extra_w)  # integer and fractional ratios
    assert_allclose(resize_maps(maps, size), torch_resize(maps, size, "bilinear"), atol=1e-12)


@given(
    seed=st.integers(0, 2**32 - 1),
    h=st.integers(1, 6),
    w=st.integers(1, 6),
    size=st.tuples(st.integers(1, 14), st.integers(1, 14)),
)
def test_bilinear_matches_torch_up_and_down(seed, h, w, size):
    # Without antialiasing torch downsamples with the same half-pixel formula.
    maps = np.random.default_rng(seed).standard_normal((1, 2, h, w))
    assert_allclose(resize_maps(maps, size), torch_resize(maps, size, "bilinear"), atol=1e-12)


@given(
    seed=st.integers(0, 2**32 - 1),
    shape=st.tuples(st.integers(1, 4), st.integers(1, 4), st.integers(1, 4)),
    size=st.tuples(st.integers(1, 9), st.integers(1, 9), st.integers(1, 9)),
)
def test_trilinear_volumes_match_torch(seed, shape, size):
    maps = np.random.default_rng(seed).standard_normal((2, 1, *shape))
    assert_allclose(resize_maps(maps, size), torch_resize(maps, size, "trilinear"), atol=1e-12)


def test_known_upsampling_values():
    # 1-D [0, 1] to 4 samples, half-pixel centres: sources -0.25, 0.25, 0.75, 1.25 -> clamped.
    assert_allclose(resize_maps(np.array([[0.0, 1.0]]), (4,)), [[0.0, 0.25, 0.75, 1.0]])


@given(seed=st.integers(0, 2**32 - 1), h=st.integers(1, 8), w=st.integers(1, 8))
def test_same_size_is_the_identity(seed, h, w):
    maps = np.random.default_rng(seed).standard_normal((3, 2, h, w))
    assert_array_equal(resize_maps(maps, (h, w)), maps)


def test_only_the_trailing_axes_are_resized():
    maps = np.random.default_rng(0).standard_normal((2, 3, 4, 5))
    out = resize_maps(maps, (8, 10))
    assert out.shape == (2, 3, 8, 10)
    for i in range(2):
        for j in range(3):
            assert_allclose(out[i, j], resize_maps(maps[i, j], (8, 10)))


def test_minmax_normalize_constant_map_gives_zeros():
    maps = np.stack([np.full((4, 4), 3.5), np.arange(16.0).reshape(4, 4)])[None]
    out = minmax_normalize(maps, 2)
    assert out.dtype == np.float32
    assert_array_equal(out[0, 0], np.zeros((4, 4)))
    assert_allclose(out[0, 1], np.arange(16.0).reshape(4, 4) / 15, rtol=1e-6)


@given(seed=st.integers(0, 2**32 - 1), offset=st.floats(-1e3, 1e3), scale=st.floats(1e-3, 1e3))
def test_minmax_normalize_each_map_spans_zero_to_one(seed, offset, scale):
    maps = offset + scale * np.random.default_rng(seed).standard_normal((3, 2, 5, 4))
    out = minmax_normalize(maps, 2)
    assert out.shape == maps.shape
    assert_allclose(out.min(axis=(2, 3)), 0, atol=1e-6)
    assert_allclose(out.max(axis=(2, 3)), 1, atol=1e-6)
    for a, b in zip(maps.reshape(6, -1), out.reshape(6, -1), strict=True):
        assert_allclose(b, (a - a.min()) / (a.max() - a.min()), atol=1e-6)


def test_to_heatmaps_is_minmax_of_the_resized_map():
    raw = np.abs(np.random.default_rng(1).standard_normal((2, 1, 3, 3)))
    expected = torch_resize(raw, (12, 12), "bilinear")
    lo = expected.min(axis=(2, 3), keepdims=True)
    expected = (expected - lo) / (expected.max(axis=(2, 3), keepdims=True) - lo)
    out = to_heatmaps(raw, (12, 12))
    assert out.dtype == np.float32
    assert_allclose(out, expected, atol=1e-6)
