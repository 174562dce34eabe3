"""BR-NPA: Algorithm 1 (exact values, properties, ablations), BRNPAPooling, FeatureMapExtractor
and the PyTorch layer (agreement with the core, gradients)."""

from __future__ import annotations

import doctest
import importlib
from collections import OrderedDict

import numpy as np
import pytest
from hypothesis import assume, given
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp
from sklearn.base import clone
from sklearn.exceptions import NotFittedError
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import Pipeline
from sklearn.utils._param_validation import InvalidParameterError
from sklearn.utils.estimator_checks import (
    check_estimator_cloneable,
    check_estimator_repr,
    check_get_params_invariance,
    check_no_attributes_set_in_init,
    check_parameters_default_constructible,
    check_set_params,
)

from sklearn_caf import BRNPAPooling, FeatureMapExtractor
from sklearn_caf._explainers._brnpa import EPS, NumpyOps, representative_vectors

SQRT2 = np.sqrt(2.0)


def _torch():
    return pytest.importorskip("torch")


def _volume():
    """C=2 channels on a 2x2 grid, channels first (1, 2, 2, 2)::

    (0, 0): [2, 0]   norm 2        (0, 1): [1, 1]  norm sqrt(2)
    (1, 0): [0, 1]   norm 1        (1, 1): [0, 0]  norm 0
    """
    X = np.zeros((1, 2, 2, 2))
    X[0, :, 0, 0] = [2.0, 0.0]
    X[0, :, 0, 1] = [1.0, 1.0]
    X[0, :, 1, 0] = [0.0, 1.0]
    return X


# -- exact values, computed by hand ------------------------------------------------------------


def test_exact_values_on_a_hand_made_volume():
    # Part 1 starts at (0, 0), the largest norm. Cosines to [2, 0]: 1, 1/sqrt2, 0, 0; their
    # sum is 1 + 1/sqrt2, so the weights are 2 - sqrt2 and sqrt2 - 1, and the vector is
    # (2 - sqrt2) [2, 0] + (sqrt2 - 1) [1, 1] = [3 - sqrt2, sqrt2 - 1].
    # Activations become (1 - s) a: 0, (1 - 1/sqrt2) sqrt2 = sqrt2 - 1, 1, 0. Part 2 starts
    # at (1, 0) = [0, 1]: cosines 0, 1/sqrt2, 1, 0 -> weights 0, sqrt2 - 1, 2 - sqrt2, 0,
    # vector [sqrt2 - 1, 1]. Activations: 0, (sqrt2 - 1)(1 - 1/sqrt2) ~ 0.12, 0, 0, so
    # part 3 starts at (0, 1) = [1, 1]: cosines 1/sqrt2, 1, 1/sqrt2, 0, sum 1 + sqrt2 ->
    # weights 1 - 1/sqrt2, sqrt2 - 1, 1 - 1/sqrt2, 0 and vector [1, 1/sqrt2].
    X = _volume()
    pool = BRNPAPooling(n_parts=3).fit(X)
    parts = pool.explain(X)
    expected_maps = np.array(
        [
            [[2 - SQRT2, SQRT2 - 1], [0, 0]],
            [[0, SQRT2 - 1], [2 - SQRT2, 0]],
            [[1 - 1 / SQRT2, SQRT2 - 1], [1 - 1 / SQRT2, 0]],
        ]
    )
    expected_vectors = np.array([[3 - SQRT2, SQRT2 - 1], [SQRT2 - 1, 1], [1, 1 / SQRT2]])
    # The 1e-5 added to the norms moves these by about 1e-5.
    np.testing.assert_allclose(parts.maps[0], expected_maps, atol=3e-5)
    np.testing.assert_allclose(parts.vectors[0], expected_vectors, atol=3e-5)
    np.testing.assert_allclose(pool.transform(X), expected_vectors.reshape(1, 6), atol=3e-5)
    np.testing.assert_array_equal(parts.locations[0], [[0, 0], [1, 0], [0, 1]])
    np.testing.assert_allclose(parts.feature_norms[0], [[2, SQRT2], [1, 0]], atol=2e-5)
    np.testing.assert_allclose(
        parts.part_norms[0], np.linalg.norm(expected_vectors, axis=1), atol=3e-5
    )


def test_epsilon_sits_in_the_norm_and_the_cosine_denominator():
    # Two parallel vectors [2, 0] and [1, 0]: with the authors' 1e-5 in each norm, the
    # cosines are 4 / (2 + e)^2 and 2 / ((1 + e)(2 + e)), not exactly 1.
    x = np.array([[[2.0, 0.0], [1.0, 0.0]]])  # (n=1, L=2, C=2)
    result = representative_vectors(x, 1)
    s = np.array([4 / (2 + EPS) ** 2, 2 / ((1 + EPS) * (2 + EPS))])
    np.testing.assert_allclose(result.norms[0], [2 + EPS, 1 + EPS], rtol=1e-15)
    np.testing.assert_allclose(result.weights[0, 0], s / s.sum(), rtol=1e-13)
    np.testing.assert_allclose(result.vectors[0, 0], (s / s.sum()) @ x[0], rtol=1e-13)


def test_activation_update_uses_similarities():
    # Positions [3, 2], [2, 1], [1, 0] (norms 3.61, 2.24, 1). Part 1 starts at [3, 2];
    # cosines to it: 1, 0.992, 0.832. The authors' update (1 - s) a leaves activations
    # 0, 0.017, 0.168, so part 2 starts at [1, 0]. The paper's pseudo-code, (1 - w) a with
    # w = s / sum(s) = 0.354, 0.351, 0.295, would leave 2.33, 1.45, 0.70 and start part 2
    # at [3, 2] again.
    x = np.array([[[3.0, 2.0], [2.0, 1.0], [1.0, 0.0]]])
    np.testing.assert_array_equal(representative_vectors(x, 2).indices[0], [0, 2])


def test_all_zero_features_give_uniform_maps():
    X = np.zeros((2, 3, 2, 2))
    parts = BRNPAPooling(n_parts=2).fit(X).explain(X)
    np.testing.assert_allclose(parts.maps, 0.25)
    np.testing.assert_array_equal(parts.vectors, 0.0)


def test_dtype_follows_input():
    X = _volume()
    pool = BRNPAPooling().fit(X)
    assert pool.transform(X).dtype == np.float64
    assert pool.transform(X.astype(np.float32)).dtype == np.float32
    assert pool.transform(X.astype(np.int64)).dtype == np.float64


# -- ablations (paper's Table 4) ---------------------------------------------------------------


def test_no_refinement_returns_the_selected_vectors():
    X = _volume()
    parts = BRNPAPooling(n_parts=3, refine=False).fit(X).explain(X)
    np.testing.assert_array_equal(parts.vectors[0], [[2, 0], [0, 1], [1, 1]])
    expected = np.zeros((3, 2, 2))
    expected[0, 0, 0] = expected[1, 1, 0] = expected[2, 0, 1] = 1.0
    np.testing.assert_array_equal(parts.maps[0], expected)
    # Same starting positions as with refinement: the activation update is unchanged.
    np.testing.assert_array_equal(
        parts.locations, BRNPAPooling(n_parts=3).fit(X).explain(X).locations
    )


def test_random_selection_is_seeded_and_draws_distinct_positions():
    rng = np.random.default_rng(0)
    X = rng.random((20, 4, 3, 3))
    pool = BRNPAPooling(n_parts=4, selection="random", random_state=0).fit(X)
    first = pool.explain(X)
    np.testing.assert_array_equal(first.locations, pool.explain(X).locations)
    flat = first.locations[..., 0] * 3 + first.locations[..., 1]
    assert all(len(set(row)) == 4 for row in flat)
    active = BRNPAPooling(n_parts=4).fit(X).explain(X).locations
    assert not np.array_equal(first.locations, active)
    np.testing.assert_allclose(first.maps.sum(axis=(2, 3)), 1.0)
    other = clone(pool).set_params(random_state=1).fit(X).explain(X).locations
    assert not np.array_equal(first.locations, other)


def test_random_selection_of_more_parts_than_positions_is_an_error():
    X = np.random.default_rng(0).random((2, 4, 3, 3))
    pool = BRNPAPooling(n_parts=9, selection="random", random_state=0).fit(X)
    assert pool.explain(X).locations.shape == (2, 9, 2)  # every position once: fine
    with pytest.raises(ValueError, match=r"n_parts=10 distinct .* 9 positions"):
        pool.set_params(n_parts=10).explain(X)
    # The activation rule may select a position again, as in the authors' algorithm.
    assert BRNPAPooling(n_parts=10).fit(X).explain(X).locations.shape == (2, 10, 2)


# -- properties ---------------------------------------------------------------------------------

_values = st.one_of(st.just(0.0), st.floats(0.5, 10.0, allow_nan=False, width=32))


@st.composite
def feature_maps(draw, elements=_values):
    shape = (
        draw(st.integers(1, 4)),
        draw(st.integers(1, 5)),
        draw(st.integers(1, 4)),
        draw(st.integers(1, 4)),
    )
    return draw(hnp.arrays(np.float64, shape, elements=elements))


@given(X=feature_maps(), n_parts=st.integers(1, 4))
def test_weights_sum_to_one_and_shapes(X, n_parts):
    pool = BRNPAPooling(n_parts=n_parts).fit(X)
    parts = pool.explain(X)
    n, c, h, w = X.shape
    assert pool.transform(X).shape == (n, n_parts * c)
    assert parts.maps.shape == (n, n_parts, h, w)
    assert len(pool.get_feature_names_out()) == n_parts * c
    np.testing.assert_allclose(parts.maps.sum(axis=(2, 3)), 1.0, rtol=1e-9)
    assert (parts.maps >= 0).all()


@given(X=feature_maps())
def test_part_one_is_centred_on_the_highest_norm(X):
    parts = BRNPAPooling(n_parts=1).fit(X).explain(X)
    n = X.shape[0]
    peak = parts.maps[:, 0].reshape(n, -1).argmax(axis=1)
    norms = parts.feature_norms.reshape(n, -1)
    np.testing.assert_allclose(norms[np.arange(n), peak], norms.max(axis=1), rtol=1e-12)
    start = parts.locations[:, 0]
    np.testing.assert_allclose(
        parts.feature_norms[np.arange(n), start[:, 0], start[:, 1]], norms.max(axis=1)
    )


@given(X=feature_maps(), data=st.data())
def test_batch_equivariance(X, data):
    perm = data.draw(st.permutations(range(X.shape[0])))
    pool = BRNPAPooling(n_parts=3).fit(X)
    np.testing.assert_allclose(pool.transform(X[perm]), pool.transform(X)[perm], rtol=1e-12)
    np.testing.assert_allclose(
        pool.attention_maps(X[perm]), pool.attention_maps(X)[perm], rtol=1e-12
    )


@given(X=feature_maps(), scale=st.floats(0.1, 10.0))
def test_maps_invariant_to_positive_scaling(X, scale):
    pool = BRNPAPooling(n_parts=3).fit(X)
    parts, scaled = pool.explain(X), pool.explain(scale * X)
    # Near-ties in the activation may be broken differently by the 1e-5 in the norms; the
    # maps are only comparable when the same positions were selected (nearly always).
    assume(np.array_equal(parts.locations, scaled.locations))
    np.testing.assert_allclose(scaled.maps, parts.maps, atol=1e-3)
    np.testing.assert_allclose(scaled.vectors, scale * parts.vectors, atol=1e-3 * scale * 10)


def test_maps_exactly_invariant_without_epsilon():
    # Scaling by a power of two is exact in floating point, so without the 1e-5 every
    # quantity is scaled exactly and the maps are bitwise equal.
    X = np.random.default_rng(1).random((5, 6, 4, 4)) + 0.1
    flat = np.moveaxis(X.reshape(5, 6, -1), 1, -1)
    a = representative_vectors(flat, 3, eps=0.0)
    b = representative_vectors(8.0 * flat, 3, eps=0.0)
    np.testing.assert_array_equal(a.weights, b.weights)
    np.testing.assert_array_equal(a.indices, b.indices)


def test_channels_last_equals_channels_first():
    X = np.random.default_rng(2).random((3, 5, 4, 6))
    first = BRNPAPooling().fit(X)
    last = BRNPAPooling(channel_axis=-1).fit(np.moveaxis(X, 1, -1))
    np.testing.assert_array_equal(first.transform(X), last.transform(np.moveaxis(X, 1, -1)))
    np.testing.assert_array_equal(
        first.attention_maps(X), last.attention_maps(np.moveaxis(X, 1, -1))
    )


def test_any_number_of_spatial_axes_and_sizes():
    rng = np.random.default_rng(3)
    pool = BRNPAPooling(n_parts=2).fit(rng.random((2, 4, 5)))  # 1-D maps
    assert pool.attention_maps(rng.random((2, 4, 7))).shape == (2, 2, 7)
    pool = BRNPAPooling(n_parts=2).fit(rng.random((2, 4, 8, 8)))
    assert pool.attention_maps(rng.random((2, 4, 3, 5))).shape == (2, 2, 3, 5)


# -- the scikit-learn API -----------------------------------------------------------------------

_CHECKS = [
    check_get_params_invariance,
    check_set_params,
    check_estimator_cloneable,
    check_estimator_repr,
    check_no_attributes_set_in_init,
    check_parameters_default_constructible,
]


@pytest.mark.parametrize("check", _CHECKS, ids=lambda c: c.__name__)
@pytest.mark.parametrize("estimator", [BRNPAPooling, FeatureMapExtractor], ids=str)
def test_sklearn_checks(estimator, check):
    check(estimator.__name__, estimator())


def test_feature_names_and_pandas_output():
    pytest.importorskip("pandas")
    X = _volume()
    pool = BRNPAPooling(n_parts=2).fit(X)
    assert list(pool.get_feature_names_out()) == [
        "part1_channel0",
        "part1_channel1",
        "part2_channel0",
        "part2_channel1",
    ]
    assert list(pool.get_feature_names_out(["r", "g"])) == [
        "part1_r",
        "part1_g",
        "part2_r",
        "part2_g",
    ]
    frame = pool.set_output(transform="pandas").transform(X)
    assert list(frame.columns) == list(pool.get_feature_names_out())
    with pytest.raises(ValueError, match="input_features must name the 2 channels"):
        pool.get_feature_names_out(["a"])


@pytest.mark.parametrize(
    ("X", "params", "match"),
    [
        (-_volume(), {}, "must be non-negative"),
        (np.zeros((3, 4)), {}, "must be feature maps of shape"),
        (np.zeros((1, 2, 2, 2)), {"channel_axis": 0}, "channel_axis must name a non-batch"),
        (np.zeros((1, 2, 2, 2)), {"channel_axis": 4}, "channel_axis must name a non-batch"),
        (np.full((1, 2, 2, 2), np.nan), {}, "NaN or infinite"),
        (np.zeros((1, 2, 2, 2), dtype=object), {}, "must hold numbers"),
    ],
)
def test_errors_name_the_problem(X, params, match):
    with pytest.raises(ValueError, match=match):
        BRNPAPooling(**params).fit(X)


def test_parameter_validation_and_not_fitted():
    with pytest.raises(InvalidParameterError, match="n_parts"):
        BRNPAPooling(n_parts=0).fit(_volume())
    with pytest.raises(InvalidParameterError, match="selection"):
        BRNPAPooling(selection="max").fit(_volume())
    with pytest.raises(NotFittedError):
        BRNPAPooling().transform(_volume())
    pool = BRNPAPooling().fit(_volume())
    with pytest.raises(ValueError, match="X has 3 channels on axis 1, but BRNPAPooling was"):
        pool.transform(np.zeros((1, 3, 2, 2)))


@pytest.mark.parametrize(
    "module",
    ["sklearn_caf._explainers._brnpa", "sklearn_caf.features", "sklearn_caf_torch.brnpa"],
)
def test_docstring_examples(module):
    if "torch" in module or module.endswith("features"):
        _torch()
    mod = importlib.import_module(module)
    finder, runner = doctest.DocTestFinder(), doctest.DocTestRunner(verbose=False)
    for test in finder.find(mod):
        runner.run(test)
    assert runner.failures == 0 and runner.tries > 0


# -- tensors, the feature extractor and the pipeline -------------------------------------------


def test_transformer_accepts_torch_tensors():
    torch = _torch()
    X = np.random.default_rng(4).random((3, 5, 4, 4)).astype(np.float32)
    pool = BRNPAPooling().fit(torch.as_tensor(X))
    tensor = torch.as_tensor(X).requires_grad_(True)
    np.testing.assert_array_equal(pool.transform(tensor), pool.transform(X))


def _cnn(seed=0, n_classes=2):
    torch = _torch()
    nn = torch.nn
    torch.manual_seed(seed)
    return nn.Sequential(
        OrderedDict(
            conv1=nn.Conv2d(3, 6, 3, padding=1),
            relu1=nn.ReLU(),
            conv2=nn.Conv2d(6, 8, 3, padding=1, stride=2),
            relu2=nn.ReLU(),
            pool=nn.AdaptiveAvgPool2d(1),
            flatten=nn.Flatten(),
            fc=nn.Linear(8, n_classes),
        )
    ).eval()


def _images(n=12, size=8, seed=0):
    return np.random.default_rng(seed).random((n, 3, size, size), dtype=np.float32)


def test_feature_map_extractor_matches_the_trunk_and_batches():
    torch = _torch()
    net, X = _cnn(), _images()
    with torch.no_grad():
        expected = net[:4](torch.as_tensor(X)).numpy()
    extractor = FeatureMapExtractor(model=net, layer="relu2", batch_size=5).fit(X)
    features = extractor.transform(X)
    assert features.shape == (12, 8, 4, 4) and features.dtype == np.float32
    assert extractor.layer_shape_ == (8, 4, 4) and extractor.channel_axis_ == 1
    np.testing.assert_allclose(features, expected, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(
        FeatureMapExtractor(model=net, layer="relu2", batch_size=12).fit_transform(X),
        features,
        rtol=1e-5,
        atol=1e-6,
    )
    assert net.training is False and all(p.requires_grad for p in net.parameters())


def test_feature_map_extractor_errors_and_clone():
    net = _cnn()
    with pytest.raises(ValueError, match="model must be given"):
        FeatureMapExtractor().fit(_images())
    with pytest.raises(ValueError, match="layer"):
        FeatureMapExtractor(model=net, layer="nope").fit(_images())
    with pytest.raises(NotFittedError):
        FeatureMapExtractor(model=net).transform(_images())
    extractor = FeatureMapExtractor(model=net, layer="relu2").fit(_images())
    with pytest.raises(ValueError, match="layout seen in fit"):
        extractor.transform(np.zeros((2, 3, 8, 8, 1), dtype=np.float32))
    assert clone(extractor).model is net


def test_pipeline_from_the_issue():
    # Images whose class is which half holds a bright blob; a frozen random CNN's features
    # pooled by BR-NPA separate them linearly.
    rng = np.random.default_rng(5)
    X = rng.random((40, 3, 8, 8), dtype=np.float32) * 0.2
    y = np.arange(40) % 2
    for i, label in enumerate(y):
        X[i, :, 2:5, (1 if label == 0 else 5) : (3 if label == 0 else 7)] += 1.0
    feature_extractor = FeatureMapExtractor(model=_cnn(), layer="relu2")
    clf = Pipeline(
        [
            ("features", feature_extractor),
            ("pool", BRNPAPooling(n_parts=3)),
            ("clf", LogisticRegression(max_iter=1000)),
        ]
    ).fit(X, y)
    assert clf.score(X, y) >= 0.9
    features = clf["features"].transform(X)
    maps = clf["pool"].attention_maps(features)
    assert maps.shape == (40, 3, 4, 4)
    assert clf["pool"].get_feature_names_out()[0] == "part1_channel0"
    assert clf["clf"].coef_.shape == (1, 3 * 8)
    assert clone(clf)["features"].model is feature_extractor.model


# -- the PyTorch layer --------------------------------------------------------------------------


def test_torch_layer_agrees_with_the_transformer():
    torch = _torch()
    from sklearn_caf_torch.brnpa import BRNPAPool2d

    X = np.random.default_rng(6).random((4, 7, 5, 6))
    X[:, :, 0, 0] = 0.0  # a zero vector in each map
    pool = BRNPAPooling(n_parts=3).fit(X)
    for dtype, tol in ((torch.float64, 1e-12), (torch.float32, 2e-5)):
        vectors, maps = BRNPAPool2d(3, return_maps=True)(torch.as_tensor(X, dtype=dtype))
        np.testing.assert_allclose(vectors.detach().numpy(), pool.transform(X), rtol=tol)
        np.testing.assert_allclose(maps.detach().numpy(), pool.attention_maps(X), rtol=tol)
    layer = BRNPAPool2d(3, refine=False)
    np.testing.assert_allclose(
        layer(torch.as_tensor(X)).numpy(),
        BRNPAPooling(n_parts=3, refine=False).fit(X).transform(X),
        rtol=1e-12,
    )
    parts = BRNPAPool2d(3).parts(torch.as_tensor(X))
    expected = pool.explain(X)
    np.testing.assert_array_equal(
        parts.indices.numpy(), expected.locations[..., 0] * 6 + expected.locations[..., 1]
    )
    np.testing.assert_allclose(parts.feature_norms.numpy(), expected.feature_norms, rtol=1e-12)


def test_torch_layer_gradients_flow_and_are_correct():
    torch = _torch()
    from sklearn_caf_torch.brnpa import BRNPAPool2d

    torch.manual_seed(0)
    x = (torch.rand(2, 4, 3, 3, dtype=torch.float64) + 0.1).requires_grad_(True)
    layer = BRNPAPool2d(3, return_maps=True)
    assert torch.autograd.gradcheck(lambda t: layer(t), (x,))
    vectors, maps = layer(x)
    (vectors.sum() + (maps**2).sum()).backward()
    assert x.grad is not None and torch.isfinite(x.grad).all() and (x.grad != 0).any()
    # The all-zero map's uniform fallback keeps gradients finite too.
    zero = torch.zeros(1, 4, 3, 3, dtype=torch.float64, requires_grad=True)
    BRNPAPool2d(2)(zero).sum().backward()
    assert torch.isfinite(zero.grad).all()


def test_torch_layer_in_a_network_and_errors():
    torch = _torch()
    from sklearn_caf_torch.brnpa import BRNPAPool2d

    torch.manual_seed(0)
    net = torch.nn.Sequential(
        torch.nn.Conv2d(3, 4, 3, padding=1),
        torch.nn.ReLU(),
        BRNPAPool2d(2),
        torch.nn.Linear(8, 3),
    )
    loss = torch.nn.functional.cross_entropy(net(torch.rand(5, 3, 6, 6)), torch.arange(5) % 3)
    loss.backward()
    assert net[0].weight.grad.abs().sum() > 0
    assert "n_parts=2" in repr(net[2])
    torch.manual_seed(1)
    a = BRNPAPool2d(2, selection="random").parts(torch.rand(3, 4, 5, 5)).indices
    assert (a[:, 0] != a[:, 1]).all()
    with pytest.raises(ValueError, match="n_parts must be a positive int"):
        BRNPAPool2d(0)
    with pytest.raises(ValueError, match="selection must be"):
        BRNPAPool2d(2, selection="max")
    with pytest.raises(ValueError, match=r"\(n, C, H, W\)"):
        BRNPAPool2d(2)(torch.rand(2, 3, 4))


def test_core_ops_namespace_is_shared():
    # The torch layer runs the core's function, not a copy of it.
    _torch()
    import sklearn_caf_torch.brnpa as torch_brnpa

    assert torch_brnpa.representative_vectors is representative_vectors
    assert set(vars(NumpyOps)) - {"__module__", "__doc__", "__dict__", "__weakref__"} <= set(
        dir(importlib.import_module("sklearn_caf_torch._ops").TorchOps)
    )
