"""The explainers as scikit-learn estimators: checks, clone, validation, pipelines, errors."""

from __future__ import annotations

import functools
from collections import OrderedDict

import numpy as np
import pytest
import sklearn
from sklearn.base import clone
from sklearn.exceptions import NotFittedError
from sklearn.pipeline import Pipeline
from sklearn.utils._param_validation import InvalidParameterError
from sklearn.utils._set_output import _get_output_config
from sklearn.utils.estimator_checks import (
    check_estimator_cloneable,
    check_estimator_repr,
    check_get_params_invariance,
    check_no_attributes_set_in_init,
    check_parameters_default_constructible,
    check_set_params,
)

from sklearn_caf import GradCAMExplainer, HeatmapBoxes, L2CAFExplainer

EXPLAINERS = [L2CAFExplainer, GradCAMExplainer]


def _torch():
    return pytest.importorskip("torch")


def _net(seed=0, n_classes=4):
    """conv-ReLU-GAP-Flatten-Linear: the head after "act" is affine."""
    torch = _torch()
    nn = torch.nn
    torch.manual_seed(seed)
    return nn.Sequential(
        OrderedDict(
            conv=nn.Conv2d(3, 5, 3, padding=1),
            act=nn.ReLU(),
            pool=nn.AdaptiveAvgPool2d(1),
            flatten=nn.Flatten(),
            fc=nn.Linear(5, n_classes),
        )
    ).eval()


@functools.cache
def _square_class():
    torch = _torch()

    class Square(torch.nn.Module):
        def forward(self, x):
            return x * x

    return Square


def _square_head_net(seed=0):
    """A head that squares the filtered maps: not affine in the filter."""
    torch = _torch()
    nn = torch.nn
    torch.manual_seed(seed)
    return nn.Sequential(
        OrderedDict(
            conv=nn.Conv2d(3, 5, 3, padding=1),
            act=nn.ReLU(),
            square=_square_class()(),
            pool=nn.AdaptiveAvgPool2d(1),
            flatten=nn.Flatten(),
            fc=nn.Linear(5, 4),
        )
    ).eval()


def _images(n=4, size=8, channels=3, seed=0):
    return np.random.default_rng(seed).random((n, channels, size, size), dtype=np.float32)


def _least_likely(model, X):
    """Per-image class that is not the top-1 prediction (so targets=y visibly matter)."""
    torch = _torch()
    with torch.no_grad():
        return model(torch.as_tensor(X)).numpy().argmin(axis=1)


# -- scikit-learn's data-free checks ------------------------------------------------------------

_CHECKS = [
    check_get_params_invariance,
    check_set_params,
    check_estimator_cloneable,
    check_estimator_repr,
    check_no_attributes_set_in_init,
    check_parameters_default_constructible,
]


@pytest.mark.parametrize("check", _CHECKS, ids=lambda c: c.__name__)
@pytest.mark.parametrize("explainer", EXPLAINERS, ids=lambda e: e.__name__)
def test_sklearn_checks_default(explainer, check):
    check(explainer.__name__, explainer())


@pytest.mark.parametrize("check", _CHECKS, ids=lambda c: c.__name__)
@pytest.mark.parametrize("explainer", EXPLAINERS, ids=lambda e: e.__name__)
def test_sklearn_checks_with_model(explainer, check):
    check(explainer.__name__, explainer(model=_net(), layer="act", top_k=2))


# -- clone --------------------------------------------------------------------------------------


@pytest.mark.parametrize("explainer", EXPLAINERS, ids=lambda e: e.__name__)
def test_clone_shares_model(explainer):
    net = _net()
    original = explainer(model=net, layer="act", top_k=3, batch_size=7)
    copy = clone(original)
    assert copy is not original
    assert copy.model is net
    params = copy.get_params(deep=False)
    assert params == {**original.get_params(deep=False), "model": net}
    assert not hasattr(copy, "bound_")


def test_clone_copies_other_params():
    init = np.ones((8, 8))
    original = L2CAFExplainer(model=_net(), layer="act", init=init)
    copy = clone(original)
    assert copy.init is not init
    np.testing.assert_array_equal(copy.init, init)


def test_clone_of_fitted_explainer_is_unfitted():
    fitted = GradCAMExplainer(model=_net(), layer="act").fit(_images(2))
    copy = clone(fitted)
    assert copy.model is fitted.model
    with pytest.raises(NotFittedError):
        copy.transform(_images(2))


@pytest.mark.parametrize("explainer", EXPLAINERS, ids=lambda e: e.__name__)
def test_clone_keeps_metadata_request(explainer):
    with sklearn.config_context(enable_metadata_routing=True):
        original = explainer(model=_net(), layer="act").set_transform_request(targets=True)
        copy = clone(original)
        assert copy.get_metadata_routing().transform.requests == {"targets": True}
        # A deep copy, not shared: changing the clone leaves the original alone.
        copy.set_transform_request(targets=False)
        assert original.get_metadata_routing().transform.requests == {"targets": True}


@pytest.mark.parametrize("explainer", EXPLAINERS, ids=lambda e: e.__name__)
def test_clone_keeps_set_output(explainer):
    net = _net()
    X = _images(2)
    original = explainer(model=net, layer="act")
    assert original.set_output(transform="pandas") is original
    copy = clone(original)
    assert copy.model is net
    assert _get_output_config("transform", copy) == _get_output_config("transform", original)
    # Heatmaps cannot be DataFrames: the explainer's own output stays a NumPy array.
    heatmaps = copy.fit_transform(X)
    assert isinstance(heatmaps, np.ndarray)
    np.testing.assert_array_equal(heatmaps, explainer(model=net, layer="act").fit_transform(X))


# -- fitted state and parameter validation -----------------------------------------------------


@pytest.mark.parametrize("method", ["transform", "explain"])
@pytest.mark.parametrize("explainer", EXPLAINERS, ids=lambda e: e.__name__)
def test_not_fitted(explainer, method):
    with pytest.raises(NotFittedError):
        getattr(explainer(model=_net(), layer="act"), method)(_images(2))


@pytest.mark.parametrize(
    ("explainer", "param", "value"),
    [
        (L2CAFExplainer, "objective", "x"),
        (L2CAFExplainer, "top_k", 0),
        (L2CAFExplainer, "max_iter", 0),
        (L2CAFExplainer, "batch_size", 0),
        (L2CAFExplainer, "variant", "slow"),
        (L2CAFExplainer, "solver", "newton"),
        (L2CAFExplainer, "init", "zeros"),
        (L2CAFExplainer, "tol", -1.0),
        (L2CAFExplainer, "learning_rate", 0.0),
        (L2CAFExplainer, "layer", 3),
        (GradCAMExplainer, "objective", "x"),
        (GradCAMExplainer, "activation", "tanh"),
        (GradCAMExplainer, "top_k", 0),
        (GradCAMExplainer, "batch_size", 0),
    ],
)
def test_invalid_parameters(explainer, param, value):
    with pytest.raises(InvalidParameterError, match=f"'{param}' parameter"):
        explainer(model=_net(), **{"layer": "act", param: value}).fit(_images(2))


# -- pipelines ---------------------------------------------------------------------------------


def test_pipeline_pandas_boxes():
    pd = pytest.importorskip("pandas")
    X = _images(5)
    pipe = Pipeline(
        [
            ("explain", L2CAFExplainer(model=_net(), layer="act")),
            ("boxes", HeatmapBoxes(threshold=0.2)),
        ]
    ).set_output(transform="pandas")
    boxes = pipe.fit_transform(X)
    assert isinstance(boxes, pd.DataFrame)
    assert list(boxes.columns) == ["x0", "y0", "x1", "y1", "score"]
    assert len(boxes) == 5
    heatmaps = L2CAFExplainer(model=_net(), layer="act").fit_transform(X)
    np.testing.assert_allclose(
        boxes.to_numpy(), HeatmapBoxes(threshold=0.2).fit_transform(heatmaps)
    )


def _boxes_of(heatmaps):
    return HeatmapBoxes(threshold=0.2).fit_transform(heatmaps)


@pytest.mark.parametrize(
    "explainer",
    [
        lambda net: L2CAFExplainer(model=net, layer="act", objective="class-specific"),
        lambda net: GradCAMExplainer(model=net, layer="act"),
    ],
    ids=["l2caf", "gradcam"],
)
def test_pipeline_fit_transform_uses_y_as_targets(explainer):
    net = _net()
    X = _images(6, seed=1)
    y = _least_likely(net, X)
    direct = explainer(net).fit(X)
    expected = direct.transform(X, targets=y)
    top1 = direct.transform(X)
    assert not np.allclose(expected, top1), "y must change the maps for this test to mean much"
    pipe = Pipeline([("explain", explainer(net))])
    np.testing.assert_allclose(pipe.fit_transform(X, y), expected, atol=1e-6)
    pipe = Pipeline([("explain", explainer(net)), ("boxes", HeatmapBoxes(threshold=0.2))])
    np.testing.assert_allclose(pipe.fit_transform(X, y), _boxes_of(expected), atol=1e-6)


def test_pipeline_fit_transform_ignores_y_when_class_oblivious():
    net = _net()
    X = _images(4)
    expected = L2CAFExplainer(model=net, layer="act").fit_transform(X)
    pipe = Pipeline([("explain", L2CAFExplainer(model=net, layer="act"))])
    np.testing.assert_allclose(pipe.fit_transform(X, np.arange(4) % 4), expected, atol=1e-6)


@pytest.mark.parametrize(
    "explainer",
    [
        lambda net: L2CAFExplainer(model=net, layer="act", objective="class-specific"),
        lambda net: GradCAMExplainer(model=net, layer="act"),
    ],
    ids=["l2caf", "gradcam"],
)
def test_pipeline_metadata_routing_targets(explainer):
    net = _net()
    X = _images(6, seed=1)
    y = _least_likely(net, X)
    expected = explainer(net).fit(X).transform(X, targets=y)
    with sklearn.config_context(enable_metadata_routing=True):
        step = explainer(net).set_transform_request(targets=True)
        pipe = Pipeline([("explain", step), ("boxes", HeatmapBoxes(threshold=0.2))]).fit(X)
        routed = pipe.transform(X, targets=y)
        np.testing.assert_allclose(pipe[:1].transform(X, targets=y), expected, atol=1e-6)
        without = pipe.transform(X)
    np.testing.assert_allclose(routed, _boxes_of(expected), atol=1e-6)
    assert not np.allclose(routed, without)


def test_metadata_routing_unrequested_targets_rejected():
    net = _net()
    X = _images(3)
    with sklearn.config_context(enable_metadata_routing=True):
        pipe = Pipeline([("explain", GradCAMExplainer(model=net, layer="act"))]).fit(X)
        with pytest.raises((TypeError, ValueError), match="targets"):
            pipe.transform(X, targets=np.zeros(3, dtype=int))


# -- bad input ---------------------------------------------------------------------------------


@pytest.fixture
def fitted():
    net = _net()
    return L2CAFExplainer(model=net, layer="act", objective="class-specific").fit(_images(4))


def test_bad_X_rank():
    with pytest.raises(ValueError, match=r"X must be a batch of images.*\(4, 8\)"):
        L2CAFExplainer(model=_net(), layer="act").fit(_images(4)[:, 0, 0])


def test_bad_X_rank_in_transform(fitted):
    with pytest.raises(ValueError, match="X must"):
        fitted.transform(_images(4)[:, 0])


def test_bad_X_channels_vs_fit(fitted):
    X = np.concatenate([_images(4), _images(4)], axis=1)
    with pytest.raises(ValueError, match=r"X must have the layout seen in fit"):
        fitted.transform(X)


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
@pytest.mark.parametrize("stage", ["fit", "transform"])
def test_bad_X_not_finite(fitted, bad, stage):
    X = _images(4)
    X[1, 2, 3, 4] = bad
    estimator = clone(fitted) if stage == "fit" else fitted
    with pytest.raises(ValueError, match="X contains NaN or infinite"):
        getattr(estimator, stage)(X)


@pytest.mark.parametrize("stage", ["fit", "transform"])
def test_bad_X_empty(fitted, stage):
    estimator = clone(fitted) if stage == "fit" else fitted
    with pytest.raises(ValueError, match="X is an empty batch"):
        getattr(estimator, stage)(_images(4)[:0])


def test_bad_X_strings():
    with pytest.raises(ValueError, match="X must hold numbers"):
        GradCAMExplainer(model=_net(), layer="act").fit(["a", "b", "c"])
    with pytest.raises(ValueError, match="X must hold numbers"):
        GradCAMExplainer(model=_net(), layer="act").fit(np.full((2, 3, 8, 8), "x"))


@pytest.mark.parametrize("explainer", EXPLAINERS, ids=lambda e: e.__name__)
def test_model_none(explainer):
    with pytest.raises(ValueError, match="model must be given"):
        explainer(layer="act").fit(_images(2))


@pytest.mark.parametrize("explainer", EXPLAINERS, ids=lambda e: e.__name__)
def test_model_foreign(explainer):
    from sklearn_caf.backend import available_backends

    with pytest.raises(TypeError, match="Installed backends") as info:
        explainer(model=object(), layer="act").fit(_images(2))
    for name in available_backends():
        assert name in str(info.value)


@pytest.mark.parametrize("explainer", EXPLAINERS, ids=lambda e: e.__name__)
def test_unknown_layer(explainer):
    with pytest.raises(ValueError, match=r"layer='akt'.*Did you mean 'act'"):
        explainer(model=_net(), layer="akt").fit(_images(2))


@pytest.mark.parametrize(
    ("targets", "match"),
    [
        ([0, 1, 2, 4], r"targets must be class indices in \[0, 4\)"),
        ([0, 1, 2, -1], r"targets must be class indices in \[0, 4\)"),
        ([0, 1, 2], r"targets must hold one class index per image"),
        (np.zeros((4, 1, 1), dtype=int), r"targets must hold one class index per image"),
        (np.zeros((4, 0), dtype=int), r"targets must hold one class index per image"),
        ([0.5, 1, 2, 3], r"targets must be integer class indices"),
        (["a", "b", "c", "d"], r"targets must be integer class indices"),
    ],
)
def test_bad_targets(fitted, targets, match):
    with pytest.raises(ValueError, match=match):
        fitted.transform(_images(4), targets=targets)


@pytest.mark.parametrize(
    "explainer",
    [
        functools.partial(L2CAFExplainer, objective="class-specific"),
        functools.partial(GradCAMExplainer, objective="class"),
    ],
    ids=["L2CAFExplainer", "GradCAMExplainer"],
)
def test_top_k_larger_than_the_classes(explainer):
    """top_k=9 on a 4-class model is an error naming both numbers, not 4 maps."""
    X = _images(2)
    with pytest.raises(ValueError, match=r"top_k=9 .* number of classes .* \(4\)"):
        explainer(model=_net(), layer="act", top_k=9).fit(X)
    ex = explainer(model=_net(), layer="act", top_k=4).fit(X)
    assert ex.explain(X).maps.shape[1] == 4  # as many as there are: fine
    ex.set_params(top_k=5)  # set after fit
    with pytest.raises(ValueError, match=r"top_k=5 .* \(4\)"):
        ex.transform(X)
    # Explicit targets do not use top_k.
    assert ex.explain(X, targets=[[0, 1], [2, 3]]).maps.shape[1] == 2


def test_top_k_is_ignored_where_the_whole_output_is_explained():
    X = _images(2)
    assert L2CAFExplainer(model=_net(), layer="act", top_k=9).fit_transform(X).shape == (2, 8, 8)
    ex = GradCAMExplainer(model=_net(), layer="act", objective="embedding", top_k=9)
    assert ex.fit_transform(X).shape == (2, 8, 8)


def test_integral_float_targets_accepted(fitted):
    X = _images(4)
    np.testing.assert_array_equal(
        fitted.transform(X, targets=[0.0, 1.0, 2.0, 3.0]),
        fitted.transform(X, targets=[0, 1, 2, 3]),
    )


def test_targets_with_class_oblivious():
    explainer = L2CAFExplainer(model=_net(), layer="act").fit(_images(2))
    with pytest.raises(ValueError, match=r"targets.*objective='class-oblivious'"):
        explainer.transform(_images(2), targets=[0, 1])


def test_targets_with_gradcam_embedding():
    explainer = GradCAMExplainer(model=_net(), layer="act", objective="embedding").fit(_images(2))
    with pytest.raises(ValueError, match=r"targets.*objective='embedding'"):
        explainer.transform(_images(2), targets=[0, 1])


@pytest.mark.parametrize("layer", ["fc", "flatten"])
@pytest.mark.parametrize("explainer", EXPLAINERS, ids=lambda e: e.__name__)
def test_layer_not_spatial(explainer, layer):
    with pytest.raises(ValueError, match=f"layer='{layer}' must output spatial feature maps"):
        explainer(model=_net(), layer=layer).fit(_images(2))


def test_solver_exact_non_affine_head():
    with pytest.raises(ValueError, match=r"solver='exact' needs a head that is affine"):
        L2CAFExplainer(model=_square_head_net(), layer="act", solver="exact").fit(_images(2))
    # "auto" falls back to Adam then L-BFGS on the same model; "exact" works on an affine head.
    auto = L2CAFExplainer(model=_square_head_net(), layer="act").fit(_images(2))
    assert auto.solver_ == "adam-lbfgs"
    assert L2CAFExplainer(model=_net(), layer="act", solver="exact").fit(_images(2)).solver_ == (
        "exact"
    )


def test_solver_exact_with_vanilla():
    with pytest.raises(ValueError, match=r"solver='exact'.*variant='vanilla'"):
        L2CAFExplainer(model=_net(), layer="act", solver="exact", variant="vanilla").fit(
            _images(2)
        )


@pytest.mark.parametrize("shape", [(3, 3), (8,), (1, 8, 8)])
def test_init_wrong_shape(shape):
    with pytest.raises(ValueError, match=r"init must be .* shape \(8, 8\)"):
        L2CAFExplainer(model=_net(), layer="act", init=np.ones(shape)).fit(_images(2))


# -- framework tensors as X --------------------------------------------------------------------


@pytest.mark.parametrize(
    "explainer",
    [
        lambda net: L2CAFExplainer(model=net, layer="act"),
        lambda net: L2CAFExplainer(
            model=net, layer="act", objective="class-specific", solver="adam", max_iter=30
        ),
        lambda net: GradCAMExplainer(model=net, layer="act", top_k=2),
    ],
    ids=["l2caf-exact", "l2caf-adam", "gradcam"],
)
@pytest.mark.filterwarnings("ignore::sklearn.exceptions.ConvergenceWarning")
def test_torch_tensor_input(explainer):
    torch = _torch()
    net = _net()
    X = _images(3)
    expected = explainer(net).fit_transform(X)
    tensor = torch.as_tensor(X)
    from_tensor = explainer(net).fit(tensor).transform(tensor)
    np.testing.assert_array_equal(from_tensor, expected)
    assert torch.equal(tensor, torch.as_tensor(X))  # the input is not modified
