"""Parity: the same CNN in PyTorch and in Keras (weights copied, conv kernels transposed)
gives the same maps from both backends, for a classification and an embedding head.

The torch models are conftest.py's; ``keras_twin`` copies them (kernels (out, in, kh, kw)
-> (kh, kw, in, out), dense (out, in) -> (in, out)). torch gets NCHW images, Keras the
same images transposed to NHWC; both backends return maps as (n, k, h, w).
"""

from __future__ import annotations

import warnings

import numpy as np
import pytest
from numpy.testing import assert_array_less

torch = pytest.importorskip("torch")
from conftest import embedding_cnn, images, import_tensorflow, keras_twin, tiny_cnn  # noqa: E402
from sklearn.exceptions import ConvergenceWarning  # noqa: E402

from sklearn_caf import GradCAMExplainer, L2CAFExplainer  # noqa: E402


@pytest.fixture(scope="module")
def twins():
    import_tensorflow()
    pytest.importorskip("sklearn_caf_tensorflow")
    nets = {"classification": tiny_cnn(n_classes=10, seed=3), "embedding": embedding_cnn(seed=4)}
    return {head: (net, keras_twin(net)) for head, net in nets.items()}


def _both(twins, head, make, X, **explain):
    net, keras_net = twins[head]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        e_torch = make(net).fit(X).explain(X, **explain)
        nhwc = X.transpose(0, 2, 3, 1)
        e_tf = make(keras_net).fit(nhwc).explain(nhwc, **explain)
    assert e_tf.heatmaps.shape == e_torch.heatmaps.shape
    return e_torch, e_tf


GRADCAM = [
    ("classification", "conv2", dict(objective="class", top_k=3)),
    ("classification", "relu1", dict(objective="class", activation="abs", top_k=2)),
    ("embedding", "conv2", dict(objective="embedding")),
    ("embedding", "relu2", dict(objective="embedding", activation="abs")),
]


@pytest.mark.parametrize(("head", "layer", "params"), GRADCAM)
def test_gradcam_parity(twins, head, layer, params):
    X = images(4, 16, seed=11)
    e_torch, e_tf = _both(
        twins, head, lambda m: GradCAMExplainer(model=m, layer=layer, **params), X
    )
    if e_torch.targets is not None:
        np.testing.assert_array_equal(e_tf.targets, e_torch.targets)
    scale = max(np.abs(e_torch.maps).max(), 1e-12)
    assert np.abs(e_tf.maps - e_torch.maps).max() / scale <= 1e-4
    assert np.abs(e_tf.heatmaps - e_torch.heatmaps).max() <= 1e-4


L2CAF = [
    ("classification", "relu2", dict(objective="class-oblivious", solver="adam")),
    ("classification", "relu2", dict(objective="class-oblivious", solver="exact")),
    ("classification", "relu2", dict(objective="class-specific", top_k=2, solver="adam")),
    ("classification", "relu2", dict(objective="class-specific", top_k=2, solver="exact")),
    ("classification", "conv2", dict(objective="class-specific", solver="adam")),
    ("classification", "conv2", dict(variant="vanilla", solver="adam")),
    ("embedding", "relu2", dict(objective="class-oblivious", solver="adam")),
    ("embedding", "relu2", dict(objective="class-oblivious", solver="exact")),
    ("embedding", "conv1", dict(objective="class-oblivious", solver="adam")),
]


@pytest.mark.parametrize(("head", "layer", "params"), L2CAF)
def test_l2caf_parity(
    twins, head, layer, params
):  # A fixed, seed-independent start (init="ones") and a fixed number of Adam steps.
    X = images(4, 12, seed=12)
    e_torch, e_tf = _both(
        twins,
        head,
        lambda m: L2CAFExplainer(model=m, layer=layer, init="ones", max_iter=150, tol=0, **params),
        X,
    )
    np.testing.assert_array_equal(e_tf.n_iter, e_torch.n_iter)
    if e_torch.targets is not None:
        np.testing.assert_array_equal(e_tf.targets, e_torch.targets)
    assert_array_less(np.abs(e_tf.heatmaps - e_torch.heatmaps).max(), 1e-3)
