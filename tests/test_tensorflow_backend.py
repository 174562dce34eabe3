"""The TensorFlow backend: conformance, splitting Keras 3 models (Functional, Sequential,
nested), compiled steps without retracing, devices, model integrity, bad inputs, and
tf-keras-vis's Gradcam as an independent implementation.

TensorFlow is optional: every test skips with the reason when it (or the backend) is not
installed. conftest.py imports torch first when it is there (the other order crashes).
"""

from __future__ import annotations

import numpy as np
import pytest
from conftest import import_tensorflow
from numpy.testing import assert_allclose, assert_array_equal
from sklearn.exceptions import ConvergenceWarning

from sklearn_caf import GradCAMExplainer, L2CAFExplainer
from sklearn_caf.backend import get_backend
from sklearn_caf.testing import check_backend


@pytest.fixture(scope="module")
def tfk():
    tf, keras = import_tensorflow()
    pytest.importorskip("sklearn_caf_tensorflow")
    return tf, keras


def _images(n=3, size=8, channels=3, seed=0):
    rng = np.random.default_rng(seed)
    return rng.standard_normal((n, size, size, channels)).astype(np.float32)


def _functional(keras, seed=0, n_classes=3):
    """conv1-BN-ReLU, conv2-Dropout + skip, ReLU, GAP, Dense: state, context and dropout."""
    L = keras.layers
    keras.utils.set_random_seed(seed)
    x = keras.Input((None, None, 3), name="images")
    h = L.ReLU(name="relu1")(
        L.BatchNormalization(name="bn")(L.Conv2D(4, 3, padding="same", name="conv1")(x))
    )
    y = L.Dropout(0.5, name="drop")(L.Conv2D(4, 3, padding="same", name="conv2")(h))
    z = L.ReLU(name="relu2")(L.Add(name="add")([y, h]))
    out = L.Dense(n_classes, name="fc")(L.GlobalAveragePooling2D(name="pool")(z))
    model = keras.Model(x, out, name="functional")
    bn = model.get_layer("bn")  # non-trivial moving statistics
    bn.moving_mean.assign(np.linspace(-0.5, 0.5, 4).astype(np.float32))
    bn.moving_variance.assign(np.linspace(0.5, 1.5, 4).astype(np.float32))
    return model


def _nested(keras, seed=0):
    """A backbone model (with a skip connection inside) used as a layer of an outer model."""
    L = keras.layers
    keras.utils.set_random_seed(seed)
    x = keras.Input((None, None, 3))
    h = L.Conv2D(4, 3, padding="same", activation="relu", name="conv1")(x)
    y = L.Conv2D(4, 3, padding="same", name="conv2")(h)
    out = L.ReLU(name="out")(L.Add(name="add")([y, h]))
    backbone = keras.Model(x, out, name="backbone")
    inp = keras.Input((None, None, 3), name="images")
    feats = backbone(inp)
    logits = L.Dense(3, name="fc")(L.GlobalAveragePooling2D(name="pool")(feats))
    return keras.Model(inp, logits, name="outer")


def _snapshot(model):
    """Everything explaining must leave as it was: weights, flags, tracked layers."""
    return (
        tuple((v.path, v.numpy().tobytes()) for v in model.variables),
        tuple((layer.name, bool(layer.trainable)) for layer in model._flatten_layers()),
        len(model.layers),
        len(model.weights),
        bool(model.trainable),
    )


def _split_output(model, layer, x, output=None):
    from sklearn_caf_tensorflow import TensorflowBackend

    bound = TensorflowBackend().bind(model, layer=layer, output=output, device="cpu")
    with bound:
        a, context = bound.trunk(bound.asarray(x))
        return bound.to_numpy(bound.head(a, context)), a, context


def _reference(model, x):
    out = model(x, training=False)
    return np.asarray(out).reshape(len(x), -1)


# -- Conformance ---------------------------------------------------------------------------------
@pytest.mark.parametrize("layer", ["conv2", "relu1", "bn"])
def test_check_backend_tensorflow(tfk, layer):
    from sklearn_caf_tensorflow import TensorflowBackend

    _, keras = tfk
    model = _functional(keras)
    check_backend(TensorflowBackend(), lambda: (model, layer, _images(), _snapshot))


def test_check_backend_nested_and_eager(tfk):
    from sklearn_caf_tensorflow import TensorflowBackend

    _, keras = tfk
    model = _nested(keras)
    check_backend(TensorflowBackend, lambda: (model, "backbone/conv2", _images(), _snapshot))
    check_backend(
        TensorflowBackend(tf_function=False),
        lambda: (model, "backbone/conv1", _images(), _snapshot),
        device="cpu",
    )


def test_detection(tfk):
    from sklearn_caf_tensorflow import TensorflowBackend

    _, keras = tfk
    model = _functional(keras)
    assert isinstance(get_backend(model), TensorflowBackend)
    assert isinstance(get_backend(model, backend="tensorflow"), TensorflowBackend)
    assert not TensorflowBackend().accepts(keras.layers.Dense(2))
    with pytest.raises(TypeError, match="not a tensorflow model"):
        get_backend(np.zeros(3), backend="tensorflow")


# -- Splitting -----------------------------------------------------------------------------------
@pytest.mark.parametrize("layer", ["conv1", "bn", "relu1", "conv2", "drop", "add", "relu2", None])
def test_split_functional(tfk, layer):
    _, keras = tfk
    model = _functional(keras)
    x = _images(4)
    out, _, context = _split_output(model, layer, x)
    assert_allclose(out, _reference(model, x), rtol=1e-5, atol=1e-6)
    # Inside the skip connection the head reads relu1's output: the trunk passes it on.
    assert len(context) == (1 if layer in ("conv2", "drop") else 0)


@pytest.mark.parametrize(
    "layer", ["backbone", "backbone/conv1", "backbone/conv2", "backbone/add", "backbone/out"]
)
def test_split_nested(tfk, layer):
    _, keras = tfk
    model = _nested(keras)
    x = _images(4, seed=1)
    out, a, context = _split_output(model, layer, x)
    assert_allclose(out, _reference(model, x), rtol=1e-5, atol=1e-6)
    assert tuple(a.shape) == (4, 8, 8, 4)
    assert len(context) == (1 if layer == "backbone/conv2" else 0)


@pytest.mark.parametrize("built", [True, False])
@pytest.mark.parametrize("layer", ["conv1", "relu1", "backbone/conv2", "backbone/out"])
def test_split_sequential(tfk, layer, built):
    """A Sequential holding a nested Sequential and a nested Functional backbone; ``built``:
    with an Input, or never called before (its layers are built by the first pass)."""
    _, keras = tfk
    L = keras.layers
    keras.utils.set_random_seed(3)
    backbone = _nested(keras).get_layer("backbone")
    stack = [
        L.Conv2D(3, 3, padding="same", name="conv1"),
        keras.Sequential([L.ReLU(name="relu")], name="block"),
        L.ReLU(name="relu1"),
        backbone,
        L.GlobalAveragePooling2D(name="pool"),
        L.Dense(3, name="fc"),
    ]
    model = keras.Sequential(([keras.Input((None, None, 3))] if built else []) + stack)
    x = _images(3, seed=2)
    out, _, _ = _split_output(model, layer, x)
    assert_allclose(out, _reference(model, x), rtol=1e-5, atol=1e-6)
    out, _, _ = _split_output(model, "block/relu", x)
    assert_allclose(out, _reference(model, x), rtol=1e-5, atol=1e-6)


def test_explainers_on_a_never_called_sequential(tfk):
    _, keras = tfk
    L = keras.layers
    keras.utils.set_random_seed(4)
    model = keras.Sequential(
        [
            L.Conv2D(4, 3, padding="same", name="conv"),
            L.ReLU(name="relu"),
            L.GlobalAveragePooling2D(),
            L.Dense(3),
        ]
    )
    x = _images(2)
    heatmaps = L2CAFExplainer(model=model, layer="relu").fit_transform(x)
    assert heatmaps.shape == (2, 8, 8)
    assert GradCAMExplainer(model=model, layer="conv").fit_transform(x).shape == (2, 8, 8)


@pytest.mark.filterwarnings("ignore::sklearn.exceptions.ConvergenceWarning")
def test_nested_explainers_equal_the_flat_model(tfk):
    """Maps through "backbone/out" equal those of the same network built flat."""
    _, keras = tfk
    L = keras.layers
    nested = _nested(keras)
    x = keras.Input((None, None, 3))
    h = nested.get_layer("backbone").get_layer("conv1")(x)
    y = nested.get_layer("backbone").get_layer("conv2")(h)
    out = L.ReLU(name="out")(L.Add()([y, h]))
    flat = keras.Model(x, nested.get_layer("fc")(L.GlobalAveragePooling2D()(out)))
    X = _images(3, seed=5)
    for layer, flat_layer in (("backbone/out", "out"), ("backbone/conv2", "conv2")):
        for make in (
            lambda m, lay: GradCAMExplainer(model=m, layer=lay, top_k=2),
            lambda m, lay: L2CAFExplainer(model=m, layer=lay, solver="adam", max_iter=100),
        ):
            e_nested = make(nested, layer).fit(X).explain(X)
            e_flat = make(flat, flat_layer).fit(X).explain(X)
            assert_allclose(e_nested.maps, e_flat.maps, atol=1e-5)


def test_structured_outputs(tfk):
    _, keras = tfk
    L = keras.layers
    x = keras.Input((None, None, 3))
    p = L.GlobalAveragePooling2D()(L.Conv2D(4, 3, padding="same", name="conv")(x))
    model = keras.Model(x, {"logits": L.Dense(3)(p), "embedding": L.Dense(5)(p)})
    X = _images(2)
    out, _, _ = _split_output(model, "conv", X, output="embedding")
    assert_allclose(out, np.asarray(model(X)["embedding"]), rtol=1e-5, atol=1e-6)
    with pytest.raises(ValueError, match="output="):
        _split_output(model, "conv", X)
    with pytest.raises(ValueError, match="output='nope'"):
        _split_output(model, "conv", X, output="nope")


# -- Compiled steps ------------------------------------------------------------------------------
def _tracing_count(fn):
    return fn.tf_function.experimental_get_tracing_count()


@pytest.mark.parametrize("variant", ["fast", "vanilla"])
def test_adam_step_is_not_retraced_per_batch(tfk, variant):
    _, keras = tfk
    model = _functional(keras)
    X = _images(12, seed=6)
    ex = L2CAFExplainer(
        model=model,
        layer="conv2",
        solver="adam",
        variant=variant,
        max_iter=60,
        check_every=10,
        tol=1e-3,
        batch_size=4,
    ).fit(X)
    ex.explain(X[:4])
    step = ex._solver_parts(ex.bound_, vanilla=variant == "vanilla")[1]
    # One compiled call per stretch between checks: the first stretch is 1 iteration, the
    # next ones 10, so the second call relaxes the number of iterations (None).
    warm = _tracing_count(step)
    assert 1 <= warm <= 2
    ex.explain(X)  # three more batches, rows dropped as they converge
    ex.set_params(batch_size=3).explain(X[:7])  # other batch sizes
    settled = _tracing_count(step)
    assert settled <= 3  # each varying dimension (iterations, batch size) relaxed once
    # A shorter last stretch (47 = 1 + 4 * 10 + 6) and new batch sizes: no new trace.
    with pytest.warns(ConvergenceWarning, match="did not converge within max_iter=47"):
        ex.set_params(batch_size=5, max_iter=47, tol=0).explain(X[:6])
    assert _tracing_count(step) == settled
    assert ex._solver_parts(ex.bound_, vanilla=variant == "vanilla")[1] is step


def test_gradcam_is_not_retraced_per_batch(tfk):
    _, keras = tfk
    ex = GradCAMExplainer(model=_functional(keras), layer="conv2", batch_size=2)
    X = _images(9, seed=7)
    ex.fit(X).explain(X)  # batches of 2, then 1: the first shape, then a relaxed trace
    cam = ex._cam(ex.bound_)
    warm = _tracing_count(cam)
    assert warm <= 2
    ex.explain(X[::-1])
    ex.set_params(top_k=2, batch_size=3).explain(X)
    assert _tracing_count(cam) == warm


@pytest.mark.filterwarnings("ignore::sklearn.exceptions.ConvergenceWarning")
def test_eager_and_compiled_agree(tfk):
    from sklearn_caf_tensorflow import TensorflowBackend

    _, keras = tfk
    model = _functional(keras)
    X = _images(3, seed=8)
    common = dict(model=model, layer="conv2", solver="adam", max_iter=50)
    compiled = L2CAFExplainer(**common).fit(X).explain(X)
    eager = L2CAFExplainer(**common, backend=TensorflowBackend(tf_function=False)).fit(X)
    assert_allclose(eager.explain(X).maps, compiled.maps, atol=1e-5)


# -- Devices -------------------------------------------------------------------------------------
def test_devices(tfk):
    tf, keras = tfk
    model = _functional(keras)
    X = _images(2)
    assert (
        L2CAFExplainer(model=model, layer="relu2", device="cpu").fit(X).bound_.device == "/CPU:0"
    )
    auto = GradCAMExplainer(model=model, layer="relu2").fit(X).bound_.device
    assert ("GPU" in auto) == bool(tf.config.list_logical_devices("GPU"))
    for bad in ("gpu0", "tpu", 3):
        with pytest.raises(ValueError, match="device must be"):
            GradCAMExplainer(model=model, layer="relu2", device=bad).fit(X)
    if not tf.config.list_logical_devices("GPU"):
        with pytest.raises(ValueError, match="not available"):
            GradCAMExplainer(model=model, layer="relu2", device="gpu:0").fit(X)


# -- Model integrity -----------------------------------------------------------------------------
_EXPLAINERS = {
    "l2caf-exact-fast": dict(cls=L2CAFExplainer, layer="relu2", solver="exact"),
    "l2caf-adam-fast": dict(cls=L2CAFExplainer, layer="conv2", solver="adam", max_iter=10),
    "l2caf-adam-vanilla": dict(
        cls=L2CAFExplainer, layer="conv2", solver="adam", variant="vanilla", max_iter=10
    ),
    "l2caf-specific": dict(
        cls=L2CAFExplainer, layer="relu1", objective="class-specific", top_k=2, max_iter=10
    ),
    "gradcam": dict(cls=GradCAMExplainer, layer="relu1", top_k=2),
    "gradcam-embedding": dict(
        cls=GradCAMExplainer, layer="conv2", objective="embedding", activation="abs"
    ),
}


@pytest.mark.filterwarnings("ignore::sklearn.exceptions.ConvergenceWarning")
@pytest.mark.parametrize("name", list(_EXPLAINERS))
@pytest.mark.parametrize("nested", [False, True])
def test_model_intact_after_explaining(tfk, name, nested):
    _, keras = tfk
    model = _nested(keras) if nested else _functional(keras)
    model.get_layer("fc").trainable = False  # a user's frozen layer stays frozen
    params = dict(_EXPLAINERS[name])
    cls = params.pop("cls")
    if nested:
        params["layer"] = "backbone/" + ("out" if params["layer"].startswith("relu") else "conv2")
    x = _images(3)
    before, reference = _snapshot(model), _reference(model, x)
    heatmaps = cls(model=model, **params).fit_transform(x)
    assert np.isfinite(heatmaps).all()
    assert _snapshot(model) == before
    assert_array_equal(_reference(model, x), reference)


# -- Bad inputs ----------------------------------------------------------------------------------
def test_unknown_layer_paths(tfk):
    _, keras = tfk
    X = _images(2)
    with pytest.raises(ValueError, match=r"layer='conv3' is not a layer.*'conv1'"):
        GradCAMExplainer(model=_functional(keras), layer="conv3").fit(X)
    with pytest.raises(ValueError, match=r"layer='backbone/conv9'.*'backbone/conv1'"):
        GradCAMExplainer(model=_nested(keras), layer="backbone/conv9").fit(X)
    with pytest.raises(ValueError, match=r"layer='fc/kernel' is not a layer"):
        GradCAMExplainer(model=_nested(keras), layer="fc/kernel").fit(X)


def test_channels_first_images_are_rejected(tfk):
    _, keras = tfk
    model = _functional(keras)
    L = keras.layers
    fixed = keras.Sequential(
        [
            keras.Input((8, 8, 3)),
            L.Conv2D(2, 3, name="conv"),
            L.GlobalAveragePooling2D(),
            L.Dense(2),
        ]
    )
    nchw = _images(2).transpose(0, 3, 1, 2)
    for net, layer in ((model, "conv2"), (fixed, "conv")):
        for explainer in (GradCAMExplainer, L2CAFExplainer):
            with pytest.raises(ValueError, match=r"channels-first.*transpose\(0, 2, 3, 1\)"):
                explainer(model=net, layer=layer).fit(nchw)


def test_non_spatial_and_reused_layers_are_rejected(tfk):
    _, keras = tfk
    L = keras.layers
    X = _images(2)
    with pytest.raises(ValueError, match="spatial feature maps"):
        L2CAFExplainer(model=_functional(keras), layer="pool").fit(X)
    with pytest.raises(ValueError, match="spatial feature maps"):
        GradCAMExplainer(model=_functional(keras), layer="fc").fit(X)
    x = keras.Input((None, None, 3))
    conv = L.Conv2D(3, 3, padding="same", name="shared")
    model = keras.Model(x, L.Dense(2)(L.GlobalAveragePooling2D()(conv(conv(x)))))
    with pytest.raises(ValueError, match="runs 2 times"):
        GradCAMExplainer(model=model, layer="shared").fit(X)


def _subclassed(keras, seed=0):
    """A subclassed model (no recorded graph) and a functional twin sharing its layers.

    ``net.mode`` makes its ``call`` fail on purpose: ``"before"`` the layer ``conv``,
    ``"after"`` it; ``"twice"`` runs ``conv`` a second time, ``"skip"`` not at all.
    """
    L = keras.layers
    keras.utils.set_random_seed(seed)

    class Net(keras.Model):
        def __init__(self):
            super().__init__()
            self.conv = L.Conv2D(3, 3, padding="same", name="conv")
            self.conv2 = L.Conv2D(4, 3, padding="same", name="conv2")
            self.fc = L.Dense(3, name="fc")
            self.mode = None

        def call(self, x):
            if self.mode == "before":
                raise RuntimeError("failing before the layer")
            h = x if self.mode == "skip" else self.conv(x)
            if self.mode == "after":
                raise RuntimeError("failing after the layer")
            if self.mode == "twice":
                h = self.conv(h)
            return self.fc(keras.ops.mean(keras.ops.relu(self.conv2(h)), axis=(1, 2)))

    net = Net()
    net(_images(1))
    x = keras.Input((None, None, 3))
    h = net.conv2(net.conv(x))
    twin = keras.Model(x, net.fc(keras.ops.mean(keras.ops.relu(h), axis=(1, 2))))
    return net, twin


def _layer_dicts(model):
    """Each layer's instance attributes (names and identities): interception leaves none."""
    return [
        (layer.name, sorted((k, id(v)) for k, v in vars(layer).items()))
        for layer in [model, *model._flatten_layers()]
    ]


@pytest.mark.filterwarnings("ignore::sklearn.exceptions.ConvergenceWarning")
@pytest.mark.parametrize("tf_function", [True, False])
@pytest.mark.parametrize("layer", ["conv", "conv2"])
def test_subclassed_model_split_by_interception(tfk, layer, tf_function):
    """A layer inside a subclassed model: the same maps as the functional twin's (fast and
    vanilla L2-CAF, Grad-CAM), compiled or eager; layer=None still works."""
    from sklearn_caf_tensorflow import TensorflowBackend

    _, keras = tfk
    net, twin = _subclassed(keras)
    X = _images(3, seed=9)
    backend = TensorflowBackend(tf_function=tf_function)
    for make in (
        lambda m, b: GradCAMExplainer(model=m, layer=layer, top_k=2, backend=b),
        lambda m, b: L2CAFExplainer(model=m, layer=layer, solver="adam", max_iter=60, backend=b),
        lambda m, b: L2CAFExplainer(
            model=m,
            layer=layer,
            variant="vanilla",
            objective="class-specific",
            max_iter=30,
            backend=b,
        ),
    ):
        got = make(net, backend).fit(X).explain(X)
        want = make(twin, None).fit(X).explain(X)
        assert_allclose(got.maps, want.maps, atol=1e-5)
        assert_array_equal(getattr(got, "n_iter", 0), getattr(want, "n_iter", 0))
    assert GradCAMExplainer(model=net, layer=None).fit_transform(X).shape == (3, 8, 8)


@pytest.mark.filterwarnings("ignore::sklearn.exceptions.ConvergenceWarning")
@pytest.mark.parametrize("name", list(_EXPLAINERS))
def test_subclassed_model_intact_also_after_errors(tfk, name):
    _, keras = tfk
    net, _ = _subclassed(keras)
    net.fc.trainable = False  # a user's frozen layer stays frozen
    params = dict(_EXPLAINERS[name])
    cls = params.pop("cls")
    params["layer"] = "conv"
    if params.get("solver") == "exact":  # the head after conv is not affine: probe, then Adam
        params.update(solver="auto", max_iter=10)
    x = _images(3)
    before, dicts, reference = _snapshot(net), _layer_dicts(net), _reference(net, x)
    ex = cls(model=net, **params).fit(x)
    assert np.isfinite(ex.transform(x)).all()
    assert _snapshot(net) == before and _layer_dicts(net) == dicts
    assert_array_equal(_reference(net, x), reference)
    for mode in ("before", "after"):  # errors inside the trunk's or the head's pass
        net.mode = mode
        with pytest.raises(RuntimeError, match=f"failing {mode}"):
            ex.transform(_images(2, seed=1))  # new shapes: traced again, so the call runs
        net.mode = None
        assert _snapshot(net) == before and _layer_dicts(net) == dicts
    assert "call" not in vars(net.conv)


def test_subclassed_model_bad_layers(tfk):
    _, keras = tfk
    net, _ = _subclassed(keras)
    X = _images(2)
    net.mode = "twice"
    with pytest.raises(ValueError, match="layer='conv' runs 2 times"):
        GradCAMExplainer(model=net, layer="conv").fit(X)
    net.mode = None
    with pytest.raises(ValueError, match="layer='nope' is not a layer"):
        GradCAMExplainer(model=net, layer="nope").fit(X)
    net.mode = "skip"
    with pytest.raises(ValueError, match="layer='conv' runs 0 times"):
        L2CAFExplainer(model=net, layer="conv").fit(X)
    assert "call" not in vars(net.conv)


def test_subclassed_model_layers_by_attribute_name(tfk):
    """``self.c2 = Conv2D(...)`` is named "conv2d_N" by Keras; ``layer="c2"`` finds it, and an
    unknown layer's error suggests the convolutions (by attribute), not the dense layer."""
    _, keras = tfk
    L = keras.layers

    class Net(keras.Model):
        def __init__(self):
            super().__init__()
            self.c1 = L.Conv2D(3, 3, padding="same")
            self.c2 = L.Conv2D(4, 3, padding="same")
            self.dense_1 = L.Dense(3)

        def call(self, x):
            h = keras.ops.relu(self.c2(self.c1(x)))
            return self.dense_1(keras.ops.mean(h, axis=(1, 2)))

    keras.utils.set_random_seed(0)
    net = Net()
    X = _images(2)
    net(X)
    assert net.c2.name != "c2"
    by_attribute = GradCAMExplainer(model=net, layer="c2").fit(X).explain(X).maps
    by_name = GradCAMExplainer(model=net, layer=net.c2.name).fit(X).explain(X).maps
    assert_array_equal(by_attribute, by_name)
    with pytest.raises(ValueError, match=r"layer='c3' is not a layer") as info:
        GradCAMExplainer(model=net, layer="c3").fit(X)
    message = str(info.value)
    assert "Did you mean 'c1', 'c2'?" in message or "Did you mean 'c2', 'c1'?" in message
    assert "feature maps: 'c1', 'c2'." in message
    assert "dense" not in message
    # (Not "dense_2": Keras's automatic names depend on the layers made before.)
    with pytest.raises(ValueError, match=r"layer='dense_9x' is not a layer") as info:
        GradCAMExplainer(model=net, layer="dense_9x").fit(X)
    assert "Did you mean" not in str(info.value)  # not the dense layer
    assert "feature maps: 'c1', 'c2'." in str(info.value)


def test_layer_inside_a_subclassed_block_of_a_functional_model(tfk):
    """The path goes through a subclassed model: intercepted at the inner layer."""
    _, keras = tfk
    block, _ = _subclassed(keras)
    x = keras.Input((None, None, 3))
    outer = keras.Model(x, keras.layers.Dense(2, name="head")(block(x)))
    X = _images(3, seed=4)
    inner = keras.Input((None, None, 3))
    h = block.conv2(block.conv(inner))
    flat = keras.Model(
        inner, outer.get_layer("head")(block.fc(keras.ops.mean(keras.ops.relu(h), axis=(1, 2))))
    )
    got = GradCAMExplainer(model=outer, layer=f"{block.name}/conv").fit(X).explain(X)
    want = GradCAMExplainer(model=flat, layer="conv").fit(X).explain(X)
    assert_allclose(got.maps, want.maps, atol=1e-6)


# -- tf-keras-vis's Gradcam ----------------------------------------------------------------------
@pytest.mark.filterwarnings("ignore::UserWarning")  # tf-keras-vis's own, about Keras 3
@pytest.mark.parametrize("layer", ["conv1", "relu1", "conv2", "relu2"])
def test_matches_tf_keras_vis_gradcam(tfk, layer):
    pytest.importorskip("tf_keras_vis")
    from tf_keras_vis.gradcam import Gradcam
    from tf_keras_vis.utils.scores import CategoricalScore

    _, keras = tfk
    model = _functional(keras, n_classes=4)
    X = _images(4, seed=9)
    e = GradCAMExplainer(model=model, layer=layer, top_k=2).fit(X).explain(X)
    gradcam = Gradcam(model, clone=True)
    for j in range(2):
        # Its raw CAM: no upsampling, no normalization; its default ReLU as ours.
        ref = gradcam(
            CategoricalScore(list(e.targets[:, j])),
            X,
            penultimate_layer=layer,
            seek_penultimate_conv_layer=False,
            expand_cam=False,
            normalize_cam=False,
        )
        ref = np.asarray(ref)
        assert (ref > 0).mean() > 0.05
        assert_allclose(e.maps[:, j], ref, rtol=1e-5, atol=1e-5 * np.abs(ref).max())
