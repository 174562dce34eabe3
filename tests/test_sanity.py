"""Model-randomization sanity checks (sklearn_caf.sanity) and the backends' randomized copies.

The check must be able to fail: a model-independent "explainer" (a Sobel edge detector that
ignores its model) keeps identical maps under randomization, while Grad-CAM and L2-CAF change.
"""

from __future__ import annotations

import copy
from collections import OrderedDict

import numpy as np
import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st
from scipy import ndimage, stats
from sklearn.base import BaseEstimator, TransformerMixin

from sklearn_caf import GradCAMExplainer, L2CAFExplainer
from sklearn_caf.backend import get_backend, layer_seeds
from sklearn_caf.sanity import SIMILARITY_COLUMNS, map_similarities, model_randomization
from sklearn_caf.testing import check_backend

torch = pytest.importorskip("torch")
pytest.importorskip("skimage")
pytest.importorskip("pandas")
from conftest import images, tiny_cnn, tiny_resnet  # noqa: E402
from torch import nn  # noqa: E402

from sklearn_caf_torch import TorchBackend  # noqa: E402


class SobelEdges(TransformerMixin, BaseEstimator):
    """A model-independent baseline: the gradient magnitude of the image, min-max scaled.

    It takes a ``model`` like an explainer and ignores it, so it must fail the check.
    """

    def __init__(self, *, model=None, channel_axis=1):
        self.model = model
        self.channel_axis = channel_axis

    def fit(self, X, y=None):
        self.fitted_ = True
        return self

    def transform(self, X):
        gray = np.asarray(X, dtype=np.float64).mean(axis=self.channel_axis)
        edges = np.hypot(ndimage.sobel(gray, axis=1), ndimage.sobel(gray, axis=2))
        lo = edges.min(axis=(1, 2), keepdims=True)
        hi = edges.max(axis=(1, 2), keepdims=True)
        return ((edges - lo) / np.where(hi > lo, hi - lo, 1.0)).astype(np.float32)


def _state(net):
    """Everything the check must leave as it was on a torch model."""
    return (
        {k: v.clone() for k, v in net.state_dict().items()},
        [m.training for m in net.modules()],
        [p.requires_grad for p in net.parameters()],
        [(len(m._forward_hooks), len(m._forward_pre_hooks)) for m in net.modules()],
    )


def _assert_same_state(net, state):
    weights, training, grads, hooks = _state(net)
    assert weights.keys() == state[0].keys()
    for k in weights:
        assert torch.equal(weights[k], state[0][k]), k
    assert (training, grads, hooks) == state[1:]


def _user_model():
    """tiny_cnn in train mode with a frozen layer and a hook: flags a copy must keep."""
    net = tiny_cnn().train()
    net.conv1.weight.requires_grad_(False)
    net.fc.register_forward_hook(lambda m, i, o: None)
    return net


# -- Similarity measures ------------------------------------------------------------------------


def test_similarities_exact_values():
    ramp = np.arange(64, dtype=np.float64).reshape(8, 8)
    same = map_similarities(ramp, ramp)
    assert same == {"spearman": 1.0, "spearman_abs": 1.0, "ssim": 1.0, "hog": 1.0}
    # Reversed ranks: -1; of a signed map and its negative: -1, but +1 with absolute values.
    assert map_similarities(ramp, -ramp)["spearman"] == pytest.approx(-1.0)
    signed = ramp - 31.5
    result = map_similarities(np.abs(signed), np.abs(signed), maps=(signed, -signed))
    assert result["spearman"] == pytest.approx(-1.0)
    assert result["spearman_abs"] == pytest.approx(1.0)
    # A constant map has no ranking: NaN, not a number that looks like an answer.
    flat = map_similarities(ramp, np.zeros_like(ramp))
    assert np.isnan(flat["spearman"]) and np.isnan(flat["hog"])


def test_similarities_match_scipy_and_skimage():
    from skimage.feature import hog
    from skimage.metrics import structural_similarity

    rng = np.random.default_rng(0)
    a, b = rng.random((32, 32)), rng.random((32, 32))
    a[3:9, 4:12] += 2.0  # ties and a structure
    b = np.round(b * 4) / 4
    got = map_similarities(a, b)
    ua, ub = (a - a.min()) / np.ptp(a), (b - b.min()) / np.ptp(b)
    assert got["spearman"] == pytest.approx(stats.spearmanr(a.ravel(), b.ravel())[0], abs=1e-12)
    assert got["ssim"] == pytest.approx(structural_similarity(ua, ub, data_range=1.0))
    options = dict(orientations=9, pixels_per_cell=(4, 4), cells_per_block=(2, 2))
    expected = stats.pearsonr(hog(ua, **options), hog(ub, **options))[0]
    assert got["hog"] == pytest.approx(expected, abs=1e-12)


def test_similarities_reject_mismatched_maps():
    with pytest.raises(ValueError, match="2-D maps of one shape"):
        map_similarities(np.zeros((4, 4)), np.zeros((4, 5)))


# -- Backends: weighted layers and randomized copies -------------------------------------------


class _ForwardOrder(nn.Module):
    """Registers the classifier before the convolution: registration order is not forward."""

    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(4, 3)
        self.bn = nn.BatchNorm2d(4)
        self.conv = nn.Conv2d(3, 4, 3, padding=1)

    def forward(self, x):
        return self.fc(torch.relu(self.bn(self.conv(x))).mean((2, 3)))


def test_weighted_layers_torch_forward_order():
    backend = TorchBackend()
    assert backend.weighted_layers(tiny_cnn()) == ["conv1", "conv2", "fc"]
    assert backend.weighted_layers(_ForwardOrder()) == ["conv", "bn", "fc"]
    resnet = ["stem.0", "block1.conv1", "block1.conv2", "block2.conv1", "block2.conv2", "fc"]
    assert backend.weighted_layers(tiny_resnet()) == resnet


def test_weighted_layers_keras(kit):
    backend = get_backend(kit.model(tiny_resnet()))
    expected = ["stem.0", "block1.conv1", "block1.conv2", "block2.conv1", "block2.conv2", "fc"]
    assert backend.weighted_layers(kit.model(tiny_resnet())) == [kit.layer(n) for n in expected]


def _weights(kit, model, layer):
    if kit.name == "torch":
        return [p.detach().clone() for p in model.get_submodule(layer).parameters()]
    from sklearn_caf_tensorflow._split import resolve_layer

    return [np.array(v.numpy()) for v in resolve_layer(model, layer).weights]


def _equal_weights(a, b):
    return all(np.array_equal(np.asarray(x), np.asarray(y)) for x, y in zip(a, b, strict=True))


def test_randomized_copy_layers_and_seeds(kit):
    net = tiny_resnet()
    model = kit.model(net)
    backend = get_backend(model)
    names = backend.weighted_layers(model)
    top, below = names[-1], names[-2]
    before = {n: _weights(kit, model, n) for n in names}
    one = backend.randomized_copy(model, [top], random_state=3)
    two = backend.randomized_copy(model, [top, below], random_state=3)
    other = backend.randomized_copy(model, [top], random_state=4)
    assert not _equal_weights(_weights(kit, one, top), before[top])
    for n in names[:-1]:  # only the asked layer changes
        assert _equal_weights(_weights(kit, one, n), before[n])
    # A layer's random weights depend on the seed and its name only (nested cascades).
    assert _equal_weights(_weights(kit, two, top), _weights(kit, one, top))
    assert not _equal_weights(_weights(kit, two, below), before[below])
    assert not _equal_weights(_weights(kit, other, top), _weights(kit, one, top))
    for n in names:  # the model itself is untouched
        assert _equal_weights(_weights(kit, model, n), before[n])


def test_randomized_copy_torch_keeps_flags_device_and_rng():
    net = _user_model()
    state = _state(net)
    rng = torch.random.get_rng_state()
    clone = TorchBackend().randomized_copy(net, ["fc", "conv1"], random_state=0)
    assert torch.equal(torch.random.get_rng_state(), rng)  # the user's generator untouched
    _assert_same_state(net, state)
    assert [m.training for m in clone.modules()] == state[1]
    assert [p.requires_grad for p in clone.parameters()] == state[2]
    assert clone.fc.weight.device == net.fc.weight.device
    # Batch norm re-initialized from its own reset_parameters: unit scale, fresh statistics.
    bn = nn.Sequential(OrderedDict(conv=nn.Conv2d(3, 2, 1), bn=nn.BatchNorm2d(2)))
    with torch.no_grad():
        bn.bn.weight.fill_(3.0)
        bn.bn.running_mean.fill_(5.0)
    fresh = TorchBackend().randomized_copy(bn, ["bn"], random_state=0).bn
    assert torch.equal(fresh.weight, torch.ones(2))
    assert torch.equal(fresh.running_mean, torch.zeros(2))


@pytest.fixture(scope="module")
def keras_kit():
    """The TensorFlow kit alone, for the Keras-only tests (skips without TensorFlow)."""
    import conftest

    conftest.import_tensorflow()
    pytest.importorskip("sklearn_caf_tensorflow")
    return conftest.Kit("tensorflow")


def test_randomized_copy_keras_keeps_trainable_flags(keras_kit):
    kit = keras_kit
    model = kit.model(tiny_cnn())
    model.get_layer("conv1").trainable = False
    backend = get_backend(model)
    clone = backend.randomized_copy(model, ["fc"], random_state=0)
    assert clone is not model
    assert [(layer.name, layer.trainable) for layer in clone.layers] == [
        (layer.name, layer.trainable) for layer in model.layers
    ]
    model.get_layer("conv1").trainable = True


def test_randomized_copy_rejects_unknown_layers(kit):
    model = kit.model(tiny_cnn())
    backend = get_backend(model)
    with pytest.raises(ValueError, match=r"'fc2'.*Did you mean 'fc'.*'conv1', 'conv2', 'fc'"):
        backend.randomized_copy(model, ["fc2"], random_state=0)
    with pytest.raises(ValueError, match="more than once"):
        backend.randomized_copy(model, ["fc", "fc"], random_state=0)


def test_layer_seeds_validation():
    assert layer_seeds(["a"], 1)["a"] == layer_seeds(["b", "a"], 1)["a"]
    assert layer_seeds(["a"], 1) != layer_seeds(["a"], 2)
    with pytest.raises(ValueError, match="random_state"):
        layer_seeds(["a"], -1)


# -- check_backend on the new methods ----------------------------------------------------------


def _snapshot(model):
    return (
        tuple(m.training for m in model.modules()),
        tuple(p.requires_grad for p in model.parameters()),
        torch.is_grad_enabled(),
    )


def _factory():
    return _user_model(), "relu2", images(3), _snapshot


def test_check_backend_passes_with_randomized_copies():
    check_backend(TorchBackend(), _factory)


def _in_place(self, model, layers, random_state=None):
    for name in layers:
        model.get_submodule(name).reset_parameters()
    return model


def _randomizes_the_model_too(self, model, layers, random_state=None):
    clone = TorchBackend.randomized_copy(self, model, layers, random_state)
    for name in layers:
        model.get_submodule(name).load_state_dict(clone.get_submodule(name).state_dict())
    return clone


def _unseeded(self, model, layers, random_state=None):
    return TorchBackend.randomized_copy(self, model, layers, None)


def _not_random(self, model, layers, random_state=None):
    return copy.deepcopy(model)


def _keyerror(self, model, layers, random_state=None):
    for name in layers:
        model.get_submodule(name)
    return TorchBackend.randomized_copy(self, model, layers, random_state)


@pytest.mark.parametrize(
    ("method", "match"),
    [
        (_in_place, "a copy, not the model"),
        (_randomizes_the_model_too, "must not change"),
        (_unseeded, "same random_state"),
        (_not_random, "must change the model's output"),
        (_keyerror, "ValueError"),
    ],
)
def test_check_backend_detects_broken_randomized_copy(method, match):
    broken = type("Broken", (TorchBackend,), {"randomized_copy": method})
    with pytest.raises(AssertionError, match=match):
        check_backend(broken(), _factory)


class _NoWeightedLayers(TorchBackend):
    @property
    def weighted_layers(self):  # hasattr() is False: randomized_copy alone
        raise AttributeError("weighted_layers")


def test_check_backend_needs_both_methods():
    with pytest.raises(AssertionError, match="needs both"):
        check_backend(_NoWeightedLayers(), _factory)


# -- model_randomization: rows, steps, reproducibility -----------------------------------------


def _columns():
    return ["image", "target", "rank", "step", "layer", "n_randomized", *SIMILARITY_COLUMNS]


def test_cascading_and_independent_rows():
    net, X = tiny_cnn(), images(2, 12)
    explainer = GradCAMExplainer(model=net, layer="relu2")
    cascading, maps = model_randomization(explainer, X, random_state=0, return_maps=True)
    assert list(cascading.columns) == _columns()
    assert len(cascading) == 2 * 4
    first = cascading[cascading["image"] == 0]
    assert first["step"].tolist() == [0, 1, 2, 3]
    assert first["layer"].tolist() == ["original", "fc", "conv2", "conv1"]
    assert first["n_randomized"].tolist() == [0, 1, 2, 3]
    assert cascading.attrs == {"cascading": True, "layers": ["fc", "conv2", "conv1"]}
    # Step 0 refits on an exact copy: a deterministic explainer agrees with itself.
    original = cascading[cascading["step"] == 0]
    assert np.allclose(original[list(SIMILARITY_COLUMNS)].to_numpy(), 1.0)
    assert maps.heatmaps.shape == (4, 2, 1, 12, 12) and maps.layer == first["layer"].tolist()
    independent, imaps = model_randomization(
        explainer, X, cascading=False, random_state=0, return_maps=True
    )
    assert independent["n_randomized"].tolist() == [0, 1, 1, 1] * 2
    assert independent.attrs["cascading"] is False
    # Step 1 randomizes the same top layer with the same seed in both: identical maps.
    np.testing.assert_array_equal(imaps.heatmaps[:2], maps.heatmaps[:2])
    assert not np.allclose(imaps.heatmaps[3], maps.heatmaps[3])  # conv1 alone vs all three
    # Grad-CAM explains the class the trained model predicts, on every randomized model.
    assert (cascading["target"].to_numpy() == np.repeat(maps.targets[:, 0], 4)).all()


def test_random_state_reproducible_and_layers_subset():
    net, X = tiny_cnn(), images(2, 12)
    explainer = GradCAMExplainer(model=net, layer="relu2")
    a = model_randomization(explainer, X, layers=["conv1", "fc"], random_state=5)
    b = model_randomization(explainer, X, layers=("fc", "conv1"), random_state=5)
    c = model_randomization(explainer, X, layers=["conv1", "fc"], random_state=6)
    assert a["layer"].tolist()[:3] == ["original", "fc", "conv1"]  # from the output down
    assert a.equals(b)
    assert not a.equals(c)
    with pytest.raises(ValueError, match=r"'conv3'.*'conv1', 'conv2', 'fc'"):
        model_randomization(explainer, X, layers=["conv3"])


def test_rejects_estimators_without_model():
    class NoModel(TransformerMixin, BaseEstimator):
        def fit(self, X, y=None):
            return self

        def transform(self, X):
            return X

    with pytest.raises(TypeError, match="`model` parameter"):
        model_randomization(NoModel(), images(1))
    with pytest.raises(TypeError, match="fit and transform"):
        model_randomization(object(), images(1))
    with pytest.raises(ValueError, match="model=None"):
        model_randomization(SobelEdges(), images(1))


def test_edge_detector_fails_the_check():
    net, X = tiny_cnn(), images(3, 16)
    scores = model_randomization(SobelEdges(model=net), X, random_state=0)
    assert len(scores) == 3 * 4
    # Its maps never change: every similarity is exactly 1 at every step.
    np.testing.assert_array_equal(scores[list(SIMILARITY_COLUMNS)].to_numpy(), 1.0)
    assert scores["target"].isna().all()
    gradcam = model_randomization(GradCAMExplainer(model=net, layer="relu2"), X, random_state=0)
    assert (gradcam.loc[gradcam["step"] > 0, "spearman_abs"] < 0.9).all()


class _FailsOnCopies(GradCAMExplainer):
    """Grad-CAM that raises when fitted on any model but the first one it saw."""

    seen: list = []

    def fit(self, X, y=None):
        if _FailsOnCopies.seen and self.model is not _FailsOnCopies.seen[0]:
            raise RuntimeError("failed midway")
        _FailsOnCopies.seen.append(self.model)
        return super().fit(X, y)


def test_user_model_untouched_also_on_error():
    net, X = _user_model(), images(2, 12)
    state = _state(net)
    model_randomization(L2CAFExplainer(model=net, layer="relu2"), X, random_state=0)
    _assert_same_state(net, state)
    _FailsOnCopies.seen = []
    with pytest.raises(RuntimeError, match="failed midway"):
        model_randomization(_FailsOnCopies(model=net, layer="relu2"), X, random_state=0)
    _assert_same_state(net, state)


def test_keras_model_untouched_and_rows(keras_kit):
    kit = keras_kit
    net, X = tiny_cnn(), images(2, 12)
    model = kit.model(net)
    weights = [w.copy() for w in model.get_weights()]
    explainer = GradCAMExplainer(model=model, layer="relu2")
    scores, maps = model_randomization(explainer, kit.x(X), random_state=0, return_maps=True)
    assert all(np.array_equal(a, b) for a, b in zip(model.get_weights(), weights, strict=True))
    assert scores["layer"].tolist()[:4] == ["original", "fc", "conv2", "conv1"]
    # The twin has the torch model's weights: the trained maps agree across backends.
    _, torch_maps = model_randomization(
        GradCAMExplainer(model=net, layer="relu2"), X, random_state=0, return_maps=True
    )
    np.testing.assert_allclose(maps.heatmaps[0], torch_maps.heatmaps[0], atol=1e-4)
    assert np.allclose(scores.loc[scores["step"] == 0, list(SIMILARITY_COLUMNS)], 1.0)
    # Keras' Glorot-initialized random convolutions can switch Grad-CAM off entirely: a flat
    # map has no rank correlation (NaN), which is as far from 1 as it gets.
    assert not (scores.loc[scores["step"] > 0, "spearman_abs"] >= 0.99).any()
    # L2-CAF on the Keras model: unit-norm maps, and the classifier's randomization matters
    # to the class-specific objective.
    l2caf = L2CAFExplainer(model=model, layer="relu2", objective="class-specific")
    scores, maps = model_randomization(
        l2caf, kit.x(X), layers=["fc"], random_state=0, return_maps=True
    )
    norms = np.sqrt((maps.maps.astype(np.float64) ** 2).sum(axis=(-2, -1)))
    np.testing.assert_allclose(norms, 1.0, rtol=1e-5)
    assert not np.allclose(maps.maps[0], maps.maps[1], atol=1e-4)
    assert all(np.array_equal(a, b) for a, b in zip(model.get_weights(), weights, strict=True))


# -- Properties over small random CNNs ---------------------------------------------------------


def _random_cnn(width1, width2, kernel, seed, n_classes=4):
    torch.manual_seed(seed)
    return nn.Sequential(
        OrderedDict(
            conv1=nn.Conv2d(3, width1, kernel, padding=kernel // 2),
            relu1=nn.ReLU(),
            conv2=nn.Conv2d(width1, width2, kernel, padding=kernel // 2),
            relu2=nn.ReLU(),
            pool=nn.AdaptiveAvgPool2d(1),
            flatten=nn.Flatten(),
            fc=nn.Linear(width2, n_classes),
        )
    ).eval()


# Random weights may switch an L2-CAF filter off (a constant map, which stays unit-norm).
@pytest.mark.filterwarnings("ignore::sklearn_caf.DeadFilterWarning")
@settings(max_examples=min(8, settings.default.max_examples))  # 6 fits per example
@given(
    width1=st.integers(2, 5),
    width2=st.integers(2, 6),
    kernel=st.sampled_from([1, 3]),
    seed=st.integers(0, 2**16),
)
@example(width1=4, width2=2, kernel=1, seed=9480)  # one live channel at relu2 (found by CI)
def test_property_maps_valid_and_head_randomization_detected(width1, width2, kernel, seed):
    net = _random_cnn(width1, width2, kernel, seed)
    X = images(2, 8, seed=seed)
    # Class-specific L2-CAF: the class-oblivious objective can ignore the head (see
    # test_class_oblivious_l2caf_can_ignore_the_head).
    for explainer in (
        L2CAFExplainer(model=net, layer="relu2", objective="class-specific"),
        GradCAMExplainer(model=net, layer="relu2"),
    ):
        _, maps = model_randomization(
            explainer, X, layers=["fc"], random_state=seed, return_maps=True
        )
        assert ((maps.heatmaps >= 0) & (maps.heatmaps <= 1)).all()
        if isinstance(explainer, L2CAFExplainer):
            norms = np.sqrt((maps.maps.astype(np.float64) ** 2).sum(axis=(-2, -1)))
            np.testing.assert_allclose(norms, 1.0, rtol=1e-5)
        # Randomizing the head (step 1: the classifier) changes the maps of every image
        # whose trained map is not flat (a flat Grad-CAM map has nothing to change) and,
        # for L2-CAF's unit-norm filter, whose layer has two live channels or more: with
        # one, the class-specific optimum is -sign(v) A / ||A|| for that channel's map A
        # and a scalar v from the head, the same map whenever v keeps its sign.
        with torch.no_grad():
            live = (net[:4](torch.as_tensor(X)).abs().sum(dim=(2, 3)) > 0).sum(dim=1)
        for i in range(2):
            original, head = maps.maps[0, i], maps.maps[1, i]
            one_channel = isinstance(explainer, L2CAFExplainer) and live[i] <= 1
            if np.ptp(original) > 1e-6 and not one_channel:
                assert not np.allclose(original, head, atol=1e-6)
    baseline = model_randomization(SobelEdges(model=net), X, layers=["fc"], random_state=seed)
    np.testing.assert_array_equal(baseline[list(SIMILARITY_COLUMNS)].to_numpy(), 1.0)


def test_class_oblivious_l2caf_can_ignore_the_head():
    """What the check finds on a narrow layer: with 2 channels after GAP and a linear head,
    a unit-norm filter can reproduce the pooled features exactly (2 equations, 64 cells),
    so class-oblivious L2-CAF reaches zero loss whatever the classifier's weights are and
    its maps do not change when the head is randomized. The class-specific objective does
    depend on the head."""
    net, X = _random_cnn(2, 2, 1, seed=1), images(2, 8, seed=1)
    oblivious, maps = model_randomization(
        L2CAFExplainer(model=net, layer="relu2"),
        X,
        layers=["fc"],
        random_state=1,
        return_maps=True,
    )
    norms = np.sqrt((maps.maps.astype(np.float64) ** 2).sum(axis=(-2, -1)))
    np.testing.assert_allclose(norms, 1.0, rtol=1e-5)
    np.testing.assert_allclose(oblivious[list(SIMILARITY_COLUMNS)].to_numpy(), 1.0, atol=1e-4)
    specific = model_randomization(
        L2CAFExplainer(model=net, layer="relu2", objective="class-specific"),
        X,
        layers=["fc"],
        random_state=1,
    )
    assert (specific.loc[specific["step"] == 1, "spearman"] < 0.5).all()


# -- plot_model_randomization ------------------------------------------------------------------


def test_plot_model_randomization():
    matplotlib = pytest.importorskip("matplotlib")
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from sklearn_caf.plotting import plot_model_randomization

    net, X = tiny_cnn(), images(3, 12)
    _, gradcam = model_randomization(
        GradCAMExplainer(model=net, layer="relu2"), X, random_state=0, return_maps=True
    )
    _, edges = model_randomization(
        SobelEdges(model=net), X, layers=["fc"], random_state=0, return_maps=True
    )
    fig = plot_model_randomization({"Grad-CAM": gradcam, "edges": edges}, images=X, indices=[2, 0])
    axes = np.array(fig.axes).reshape(4, 4)  # 2 methods x 2 images, 4 columns
    assert [ax.get_title() for ax in axes[0]] == ["original", "fc", "conv2", "conv1"]
    assert axes[0, 0].get_ylabel() == "Grad-CAM\nimage 2"
    assert axes[3, 0].get_ylabel() == "edges\nimage 0"
    assert not axes[2, 2].axison  # the baseline has 2 steps; its last cells are empty
    shown = axes[1, 1].get_images()[0].get_array()
    assert shown.shape == (12, 12, 3)
    plt.close(fig)
    with pytest.raises(ValueError, match="indices"):
        plot_model_randomization(gradcam, indices=[3])
    with pytest.raises(ValueError, match="return_maps=True"):
        plot_model_randomization({"x": {"heatmaps": np.zeros((2, 8, 8)), "layer": ["a"]}})
