"""Fitted estimators survive pickling (joblib.dump of a pipeline, a process pool).

A bound model holds traced graphs and compiled functions that do not pickle; the
estimators drop it and bind the (pickled) model again when they are loaded.
"""

import pickle

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from conftest import images, make_explainer, mlp_head_cnn, tiny_cnn  # noqa: E402
from sklearn.pipeline import Pipeline  # noqa: E402

from sklearn_caf import (  # noqa: E402
    FeatureMapExtractor,
    GradCAMExplainer,
    HeatmapBoxes,
    L2CAFExplainer,
)


@pytest.mark.parametrize(
    ("cls", "params"),
    [
        (L2CAFExplainer, {"objective": "class-specific", "top_k": 2}),  # exact solver
        (L2CAFExplainer, {"solver": "adam", "max_iter": 120}),  # compiled Adam steps
        (GradCAMExplainer, {"top_k": 2}),
        (FeatureMapExtractor, {}),
    ],
)
def test_fitted_estimators_pickle_and_give_the_same_output(kit, cls, params):
    X = images(3, 8, seed=3)
    est = make_explainer(kit, cls, model=mlp_head_cnn(), layer="conv2", **params).fit(X)
    expected = est.transform(X)
    loaded = pickle.loads(pickle.dumps(est.explainer))
    assert "bound_" in vars(loaded)
    np.testing.assert_allclose(loaded.transform(kit.x(X)), expected, rtol=1e-5, atol=1e-6)
    # The original still works after being pickled (nothing was taken from it).
    np.testing.assert_allclose(est.transform(X), expected, rtol=1e-5, atol=1e-6)


def test_a_fitted_pipeline_pickles():
    net, X = tiny_cnn(), images(2, 8, seed=1)
    pipe = Pipeline(
        [("explain", L2CAFExplainer(model=net, layer="relu2")), ("boxes", HeatmapBoxes())]
    ).fit(X)
    loaded = pickle.loads(pickle.dumps(pipe))
    np.testing.assert_array_equal(loaded.transform(X), pipe.transform(X))
    # The loaded pipeline explains its own copy of the model, not the original.
    assert loaded["explain"].model is not net
