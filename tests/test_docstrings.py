"""Every fitted attribute and every result field is documented in its "Attributes" section.

numpydoc's validation in the docs build checks parameters, not attributes; this checks the
attributes on real fitted estimators (tiny torch and Keras models), so that an attribute
added to ``fit`` without a line in the docstring fails here.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
from numpydoc.docscrape import ClassDoc

from sklearn_caf import (
    BRNPAParts,
    BRNPAPooling,
    Explanation,
    FeatureMapExtractor,
    GradCAMExplainer,
    HeatmapBoxes,
    L2CAFExplainer,
)
from sklearn_caf.datasets import ModelPreset
from sklearn_caf.evaluation import LocalizationReport
from sklearn_caf.metrics import MaxBoxAccuracy

torch = pytest.importorskip("torch")
from conftest import images, tiny_cnn  # noqa: E402


def documented_attributes(cls) -> set[str]:
    return {item.name.split(":")[0].strip() for item in ClassDoc(cls)["Attributes"]}


def fitted_attributes(estimator) -> set[str]:
    # vars(): what fit set on the instance; scikit-learn's convention is a trailing "_"
    # for fitted state and a leading "_" for private state.
    return {k for k in vars(estimator) if k.endswith("_") and not k.startswith("_")}


def _fitted_estimators(kit):
    net = kit.model(tiny_cnn())
    X = kit.x(images(2, size=8))
    layer = kit.layer("relu2")
    heatmaps = np.random.default_rng(0).random((2, 8, 8)).astype(np.float32)
    features = FeatureMapExtractor(model=net, layer=layer).fit(X)
    yield features
    yield L2CAFExplainer(model=net, layer=layer).fit(X)
    yield GradCAMExplainer(model=net, layer=layer).fit(X)
    yield HeatmapBoxes().fit(heatmaps)
    yield BRNPAPooling(channel_axis=features.channel_axis_).fit(features.transform(X))


@pytest.mark.parametrize(
    "name",
    ["FeatureMapExtractor", "L2CAFExplainer", "GradCAMExplainer", "HeatmapBoxes", "BRNPAPooling"],
)
def test_fitted_attributes_documented(kit, name):
    (estimator,) = [e for e in _fitted_estimators(kit) if type(e).__name__ == name]
    fitted = fitted_attributes(estimator)
    assert fitted, f"{name} set no fitted attribute: the check would be empty"
    missing = fitted - documented_attributes(type(estimator))
    assert not missing, f"{name}: fitted attributes missing from its Attributes section: {missing}"


@pytest.mark.parametrize(
    "cls",
    [Explanation, BRNPAParts, MaxBoxAccuracy, LocalizationReport, ModelPreset],
    ids=lambda c: c.__name__,
)
def test_result_fields_documented(cls):
    fields = {f.name for f in dataclasses.fields(cls)}
    missing = fields - documented_attributes(cls)
    assert not missing, f"{cls.__name__}: fields missing from its Attributes section: {missing}"


def test_torch_brnpa_output_fields_documented():
    from sklearn_caf_torch.brnpa import BRNPAOutput

    missing = set(BRNPAOutput._fields) - documented_attributes(BRNPAOutput)
    assert not missing, f"BRNPAOutput: fields missing from its Attributes section: {missing}"


def test_the_check_sees_a_removed_line(monkeypatch):
    # The check is not vacuous: the same class with one Attributes entry removed fails it.
    doc = GradCAMExplainer.__doc__
    start = doc.index("    n_outputs_ : int")
    end = doc.index("    split_ : str or None")

    class Stripped(GradCAMExplainer):
        __doc__ = doc[:start] + doc[end:]

    assert "n_outputs_" in documented_attributes(GradCAMExplainer)
    assert "n_outputs_" not in documented_attributes(Stripped)
    net = tiny_cnn()
    fitted = fitted_attributes(Stripped(model=net, layer="relu2").fit(images(2, size=8)))
    assert fitted - documented_attributes(Stripped) == {"n_outputs_"}
