"""The model patterns of test_torch_model_patterns.py that have a Keras form.

Keras records no graph of a subclassed model's ``call``, so Python control flow there (on
an optional argument, a shape, a tensor's value) never stops a split: the layer's call is
intercepted instead. Each pattern must give the maps of a Functional twin sharing its
layers (Grad-CAM, and L2-CAF fast = vanilla), and a layer called twice is a clear error.
"""

from __future__ import annotations

import warnings

import numpy as np
import pytest
from conftest import import_tensorflow
from numpy.testing import assert_allclose
from sklearn.exceptions import ConvergenceWarning

from sklearn_caf import GradCAMExplainer, L2CAFExplainer


@pytest.fixture(scope="module")
def keras():
    _, keras = import_tensorflow()
    pytest.importorskip("sklearn_caf_tensorflow")
    return keras


def _images(n=3, size=8, seed=0):
    return np.random.default_rng(seed).standard_normal((n, size, size, 3)).astype(np.float32)


def _net(keras, pattern):
    """A subclassed model with one of the patterns, and its Functional twin."""
    L, ops = keras.layers, keras.ops
    keras.utils.set_random_seed(0)

    class Net(keras.Model):
        def __init__(self):
            super().__init__()
            self.conv1 = L.Conv2D(6, 3, padding="same", name="conv1")
            self.conv2 = L.Conv2D(6, 3, padding="same", name="conv2")
            self.bn = L.BatchNormalization(name="bn")
            self.fc = L.Dense(5, name="fc")

        def body(self, x):
            h = ops.relu(self.conv1(x))
            h = ops.relu(self.bn(self.conv2(h)))
            return self.fc(ops.mean(h, axis=(1, 2)))

        def call(self, x, mask=None, **kwargs):
            if pattern == "optional" and mask is not None:
                x = x * mask
            if pattern == "shape" and x.shape[1] > 16:
                x = ops.average_pool(x, 2, 2)
            if pattern == "value" and float(ops.max(ops.abs(x))) > 1e6:
                x = x / 1e6
            if pattern == "twice":
                x = self.conv1(x)[..., :3]
            return self.body(x)

    net = Net()
    net(_images(1))
    for weight in net.bn.weights:  # non-trivial batch-norm statistics and affine
        weight.assign(np.random.default_rng(1).uniform(0.5, 1.5, weight.shape))
    x = keras.Input((None, None, 3))
    twin = keras.Model(x, net.body(x))
    return net, twin


PATTERNS = ["optional", "shape", "value", "kwargs"]


@pytest.mark.parametrize("tf_function", [True, False])
@pytest.mark.parametrize("pattern", PATTERNS)
def test_keras_patterns_equal_the_functional_twin(keras, pattern, tf_function):
    from sklearn_caf_tensorflow import TensorflowBackend

    if pattern == "value" and tf_function:
        pytest.skip("float() of a tensor cannot run inside tf.function; eager only")
    net, twin = _net(keras, pattern)
    X = _images()
    backend = TensorflowBackend(tf_function=tf_function)
    for layer in ("conv1",):  # the head holds conv2 and the batch norm
        gradcam = GradCAMExplainer(model=net, layer=layer, top_k=2, backend=backend).fit(X)
        assert gradcam.split_ == "intercept"
        got = gradcam.explain(X)
        want = GradCAMExplainer(model=twin, layer=layer, top_k=2).fit(X).explain(X)
        assert GradCAMExplainer(model=twin, layer=layer).fit(X).split_ == "graph"
        assert (want.maps > 0).mean() > 0.05
        assert_allclose(got.maps, want.maps, rtol=1e-5, atol=1e-6)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ConvergenceWarning)
            fast, vanilla = (
                L2CAFExplainer(
                    model=net,
                    layer=layer,
                    variant=variant,
                    solver="adam",
                    max_iter=20,
                    tol=0.0,
                    backend=backend,
                )
                .fit(X)
                .explain(X)
                .maps
                for variant in ("fast", "vanilla")
            )
        assert_allclose(fast, vanilla, rtol=1e-4, atol=1e-5)


def test_keras_layer_called_twice_is_a_clear_error(keras):
    net, _ = _net(keras, "twice")
    with pytest.raises(ValueError, match=r"layer='conv1' runs 2 times"):
        GradCAMExplainer(model=net, layer="conv1").fit(_images())
