"""BR-NPA's pictures and metric: RGB part maps, their overlay, and the sparsity."""

from __future__ import annotations

import numpy as np
import pytest

from sklearn_caf import BRNPAPooling
from sklearn_caf.metrics import attention_sparsity
from sklearn_caf.plotting import overlay_part_maps, part_map_rgb


def test_part_map_rgb_colours_and_brightness():
    maps = np.zeros((3, 2, 2))
    maps[0, 0, 0] = 0.6  # part 1 peaks at (0, 0): red
    maps[0, 0, 1] = 0.3
    maps[1, 1, 0] = 0.2  # part 2 at (1, 0): green
    maps[2, 1, 1] = 0.5  # part 3 at (1, 1): blue
    norms = np.array([[2.0, 2.0], [1.0, 0.5]])
    rgb = part_map_rgb(maps, norms)
    expected = np.zeros((2, 2, 3))
    expected[0, 0] = [1.0, 0, 0]  # map 0.6 / 0.6, norm 2 / 2
    expected[0, 1] = [0.5, 0, 0]  # 0.3 / 0.6 * 1
    expected[1, 0] = [0, 0.5, 0]  # 1 * norm 1 / 2
    expected[1, 1] = [0, 0, 0.25]  # 1 * 0.5 / 2
    np.testing.assert_allclose(rgb, expected)
    np.testing.assert_allclose(part_map_rgb(maps)[1, 1], [0, 0, 1.0])
    # Fewer than 3 parts leave the other channels black; an all-zero map stays black.
    two = part_map_rgb(np.stack([maps[0], np.zeros((2, 2))]))
    assert two[..., 1:].max() == 0 and two[0, 0, 0] == 1.0


def test_part_map_rgb_errors():
    with pytest.raises(ValueError, match="1 to 3 part maps"):
        part_map_rgb(np.zeros((4, 2, 2)))
    with pytest.raises(ValueError, match="non-negative"):
        part_map_rgb(-np.ones((1, 2, 2)))
    with pytest.raises(ValueError, match="feature_norms must have the maps' spatial shape"):
        part_map_rgb(np.ones((1, 2, 2)), np.ones((3, 3)))


def test_overlay_part_maps_resizes_and_blends():
    image = np.full((8, 8, 3), 200, dtype=np.uint8)
    X = np.random.default_rng(0).random((1, 5, 4, 4))
    parts = BRNPAPooling().fit(X).explain(X)
    out = overlay_part_maps(image, parts.maps[0], parts.feature_norms[0], alpha=0.5)
    assert out.shape == (8, 8, 3) and out.dtype == np.uint8
    np.testing.assert_array_equal(overlay_part_maps(image, parts.maps[0], alpha=0.0), image)
    with pytest.raises(ValueError, match="alpha must be in"):
        overlay_part_maps(image, parts.maps[0], alpha=2.0)


def test_attention_sparsity():
    maps = np.zeros((3, 2, 2, 2))
    maps[0] = 0.25  # uniform: 1
    maps[1, :, 0, 0] = 1.0  # both parts on one position: h * w = 4
    maps[2, 0, 0, 0] = 1.0  # parts on two positions -> mean map [.5, .5, 0, 0]
    maps[2, 1, 0, 1] = 1.0
    np.testing.assert_allclose(attention_sparsity(maps), [1.0, 4.0, 2.0])
    norms = np.ones((3, 2, 2))
    norms[2, 0, 0] = 3.0  # weighted mean map [1.5, .5, 0, 0]: max 1.5, mean 0.5
    np.testing.assert_allclose(attention_sparsity(maps, norms), [1.0, 4.0, 3.0])
    assert np.isnan(attention_sparsity(np.zeros((1, 1, 2, 2))))[0]
    with pytest.raises(ValueError, match="feature_norms must have shape"):
        attention_sparsity(maps, np.ones((3, 3, 3)))
    with pytest.raises(ValueError, match="maps must have shape"):
        attention_sparsity(np.ones((2, 2)))


def test_sparsity_of_a_focused_volume_exceeds_a_diffuse_one():
    rng = np.random.default_rng(1)
    diffuse = rng.random((4, 6, 8, 8)) + 1.0
    focused = diffuse * 0.01
    focused[:, :, 3, 3] += 5.0
    pool = BRNPAPooling().fit(diffuse)
    a, b = pool.explain(diffuse), pool.explain(focused)
    assert (
        attention_sparsity(b.maps, b.feature_norms)
        > 3 * attention_sparsity(a.maps, a.feature_norms)
    ).all()
