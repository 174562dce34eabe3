"""Grad-CAM (GradCAMExplainer) on real models: hand-computed values, Captum's
LayerGradCam as an independent implementation (torch), targets, shapes and sanity checks.

Every test that does not need Captum runs on each installed backend (the ``kit``
fixture), on the torch reference models or their Keras twins (same weights)."""

import copy
from collections import OrderedDict

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from numpy.testing import assert_allclose, assert_array_equal
from scipy.stats import spearmanr

torch = pytest.importorskip("torch")
from conftest import (  # noqa: E402
    embedding_cnn,
    images,
    logits,
    make_explainer,
    mlp_head_cnn,
    tiny_cnn,
    tiny_resnet,
)
from torch import nn  # noqa: E402

from sklearn_caf import GradCAMExplainer  # noqa: E402

F = torch.nn.functional


def GradCAM(kit, **params):
    """A GradCAMExplainer on ``kit``'s backend (it takes NCHW images; see conftest)."""
    return make_explainer(kit, GradCAMExplainer, **params)


# -- A hand-weighted model: every Grad-CAM quantity can be written down ----------------------
CONV_W = np.array([[1.0, -1.0], [0.5, 2.0]])  # 1x1 conv, (out, in)
CONV_B = np.array([0.0, -0.1])
FC_W = np.array([[1.0, -2.0], [0.5, 0.5], [-1.0, 3.0]])  # (classes, channels)
FC_B = np.array([0.1, 0.0, -0.2])


def hand_cnn():
    """AvgPool2d(2) -> 1x1 conv (2 -> 2) -> ReLU -> GAP -> Linear(2, 3), set weights."""
    conv, fc = nn.Conv2d(2, 2, 1), nn.Linear(2, 3)
    with torch.no_grad():
        conv.weight.copy_(torch.tensor(CONV_W, dtype=torch.float32)[:, :, None, None])
        conv.bias.copy_(torch.tensor(CONV_B, dtype=torch.float32))
        fc.weight.copy_(torch.tensor(FC_W, dtype=torch.float32))
        fc.bias.copy_(torch.tensor(FC_B, dtype=torch.float32))
    return nn.Sequential(
        OrderedDict(
            down=nn.AvgPool2d(2),
            conv=conv,
            relu=nn.ReLU(),
            pool=nn.AdaptiveAvgPool2d(1),
            flatten=nn.Flatten(),
            fc=fc,
        )
    ).eval()


def hand_feature_maps(X):
    """The conv's output A (n, 2, H/2, W/2), by hand."""
    n, c, h, w = X.shape
    down = X.astype(np.float64).reshape(n, c, h // 2, 2, w // 2, 2).mean(axis=(3, 5))
    return np.einsum("kc,nchw->nkhw", CONV_W, down) + CONV_B[:, None, None]


def hand_gradcam(X, score_weights, layer, activation=np.maximum):
    """Eq. 4-5 by hand for a score ``s = score_weights . fc_logits`` (one row per image).

    layer="conv": y = FC_W mean(relu(A)) + b, so dy/dA_k = (w . FC_W)_k [A_k > 0] / (h w).
    layer="relu": the features are relu(A) and the gradient is (w . FC_W)_k / (h w).
    """
    a = hand_feature_maps(X)
    hw = a.shape[2] * a.shape[3]
    channel_w = score_weights @ FC_W  # (n, channels)
    if layer == "conv":
        grad = channel_w[:, :, None, None] * (a > 0) / hw
    else:
        a = np.maximum(a, 0)
        grad = np.broadcast_to(channel_w[:, :, None, None] / hw, a.shape)
    alpha = grad.mean(axis=(2, 3))
    cam = np.einsum("nk,nkhw->nhw", alpha, a)
    return np.abs(cam) if activation is np.abs else np.maximum(cam, 0)


def minmax_resized(maps, size):
    """Reference heatmaps: torch's bilinear resize, then min-max per map."""
    up = F.interpolate(
        torch.as_tensor(maps, dtype=torch.float64),
        size=size,
        mode="bilinear",
        align_corners=False,
    ).numpy()
    lo, hi = up.min(axis=(-2, -1), keepdims=True), up.max(axis=(-2, -1), keepdims=True)
    return np.where(hi > lo, (up - lo) / np.where(hi > lo, hi - lo, 1), 0)


@pytest.mark.parametrize("layer", ["conv", "relu"])
def test_maps_equal_hand_computed_gradcam(layer, kit):
    X = images(5, 8, channels=2, seed=1)
    targets = np.array([0, 1, 2, 2, 0])
    e = GradCAM(kit, model=hand_cnn(), layer=layer).fit(X).explain(X, targets=targets)
    expected = hand_gradcam(X, np.eye(3)[targets], layer)
    assert (expected > 0).any(axis=(1, 2)).all()  # the check is not 0 == 0
    assert e.maps.shape == (5, 1, 4, 4)
    assert e.maps.dtype == np.float32
    assert_allclose(e.maps[:, 0], expected, rtol=1e-5, atol=1e-7)
    assert_array_equal(e.targets, targets[:, None])
    assert_allclose(e.outputs, logits(hand_cnn(), X), rtol=1e-5, atol=1e-6)
    assert e.n_iter is None


def test_heatmaps_are_minmax_normalized_bilinear_resize(kit):
    X = images(4, (8, 12), channels=2, seed=2)
    e = GradCAM(kit, model=hand_cnn(), layer="conv", top_k=3).fit(X).explain(X)
    assert e.heatmaps.shape == (4, 3, 8, 12)
    assert e.heatmaps.dtype == np.float32
    assert_allclose(e.heatmaps, minmax_resized(e.maps, (8, 12)), atol=1e-6)
    # And from the hand-computed maps, for every one of the top-3 targets.
    for j in range(3):
        expected = hand_gradcam(X, np.eye(3)[e.targets[:, j]], "conv")
        assert_allclose(
            e.heatmaps[:, j], minmax_resized(expected[:, None], (8, 12))[:, 0], atol=1e-5
        )


@pytest.mark.parametrize("layer", ["conv", "relu"])
def test_gradcam_abs_equals_hand_computed(layer, kit):
    X = images(5, 8, channels=2, seed=3)
    targets = np.array([1, 0, 2, 1, 2])
    ex = GradCAM(kit, model=hand_cnn(), layer=layer, activation="abs").fit(X)
    e = ex.explain(X, targets=targets)
    expected = hand_gradcam(X, np.eye(3)[targets], layer, activation=np.abs)
    assert_allclose(e.maps[:, 0], expected, rtol=1e-5, atol=1e-7)
    # abs keeps the negative regions that ReLU zeroes: the two differ somewhere.
    relu = GradCAM(kit, model=hand_cnn(), layer=layer).fit(X).explain(X, targets=targets)
    assert not np.allclose(relu.maps, e.maps)
    assert_allclose(relu.maps, np.where(relu.maps > 0, e.maps, 0), rtol=1e-5, atol=1e-7)


@pytest.mark.parametrize("activation", ["relu", "abs"])
def test_embedding_gradcam_uses_the_gradient_of_the_summed_embedding(activation, kit):
    X = images(4, 8, channels=2, seed=4)
    ex = GradCAM(
        kit, model=hand_cnn(), layer="conv", objective="embedding", activation=activation
    ).fit(X)
    e = ex.explain(X)
    act = np.abs if activation == "abs" else np.maximum
    expected = hand_gradcam(X, np.ones((4, 3)), "conv", activation=act)
    assert e.targets is None
    assert e.maps.shape == (4, 1, 4, 4)
    assert_allclose(e.maps[:, 0], expected, rtol=1e-5, atol=1e-7)
    assert_allclose(ex.transform(X), minmax_resized(expected[:, None], (8, 8))[:, 0], atol=1e-5)


def test_embedding_objective_rejects_targets(kit):
    X = images(2, 8, channels=2)
    ex = GradCAM(kit, model=hand_cnn(), layer="conv", objective="embedding").fit(X)
    with pytest.raises(ValueError, match="targets"):
        ex.explain(X, targets=[0, 1])


# -- Captum's LayerGradCam as the reference implementation -----------------------------------
def captum_gradcam(model, layer, X, targets, relu=True):
    from captum.attr import LayerGradCam

    attr = LayerGradCam(model, model.get_submodule(layer)).attribute(
        torch.as_tensor(X), target=torch.as_tensor(targets), relu_attributions=relu
    )
    return attr.detach().numpy()[:, 0]


CAPTUM_CASES = [
    (tiny_cnn, "conv1"),
    (tiny_cnn, "relu1"),
    (tiny_cnn, "conv2"),
    (tiny_cnn, "relu2"),
    (mlp_head_cnn, "conv2"),
    (mlp_head_cnn, "relu2"),
    (tiny_resnet, "stem"),
    (tiny_resnet, "block1.conv1"),
    (tiny_resnet, "block1.conv2"),  # inside a block: the head reads the skip connection
    (tiny_resnet, "block1.out"),  # the block's output module
    (tiny_resnet, "block1"),  # a whole block
    (tiny_resnet, "block2.out"),
]


@pytest.mark.parametrize(
    ("factory", "layer"), CAPTUM_CASES, ids=[f"{f.__name__}-{lay}" for f, lay in CAPTUM_CASES]
)
def test_matches_captum_layer_gradcam(factory, layer):
    pytest.importorskip("captum")
    model = factory()
    X = images(4, 8, seed=5)
    e = GradCAMExplainer(model=model, layer=layer, top_k=2).fit(X).explain(X)
    assert e.maps.shape == (4, 2, 8, 8)
    refs = np.stack([captum_gradcam(model, layer, X, e.targets[:, j]) for j in range(2)], 1)
    assert (refs > 0).mean() > 0.05  # not a comparison of zeros
    assert_allclose(e.maps, refs, rtol=1e-5, atol=1e-5 * np.abs(refs).max())


def test_abs_matches_captum_without_relu():
    pytest.importorskip("captum")
    model = tiny_resnet()
    X = images(3, 8, seed=6)
    targets = np.array([4, 0, 2])
    e = GradCAMExplainer(model=model, layer="block1.conv2", activation="abs").fit(X)
    ref = captum_gradcam(model, "block1.conv2", X, targets, relu=False)
    assert (ref < 0).any()
    assert_allclose(e.explain(X, targets).maps[:, 0], np.abs(ref), rtol=1e-5, atol=1e-7)


def test_embedding_matches_captum_on_the_summed_embedding():
    pytest.importorskip("captum")
    from captum.attr import LayerGradCam

    model = embedding_cnn()
    X = images(3, 8, seed=7)
    e = GradCAMExplainer(model=model, layer="conv2", objective="embedding").fit(X).explain(X)
    summed = LayerGradCam(lambda x: model(x).sum(1, keepdim=True), model.conv2)
    ref = summed.attribute(torch.as_tensor(X), target=0, relu_attributions=True)
    assert_allclose(e.maps[:, 0], ref.detach().numpy()[:, 0], rtol=1e-5, atol=1e-7)


# -- Targets ---------------------------------------------------------------------------------
def test_top_k_targets_are_the_top_predictions_in_order(kit):
    model = tiny_cnn(n_classes=7)
    X = images(6, 8, seed=8)
    ex = GradCAM(kit, model=model, layer="relu2", top_k=3).fit(X)
    e = ex.explain(X)
    order = np.argsort(-logits(model, X), axis=1)[:, :3]
    assert_array_equal(e.targets, order)
    assert e.heatmaps.shape == (6, 3, 8, 8)
    assert ex.transform(X).shape == (6, 3, 8, 8)
    # The k-th map is the map of the k-th class.
    for j in range(3):
        single = ex.explain(X, targets=order[:, j])
        assert_allclose(e.maps[:, j], single.maps[:, 0], rtol=1e-6, atol=1e-7)


def test_given_targets_are_honoured(kit):
    # After tiny_cnn's last ReLU the head is GAP + fc, so Grad-CAM is CAM:
    # relu(sum_k W_ck A_k) / (h w), computed here from the model's own weights.
    model = tiny_cnn(n_classes=5)
    X = images(4, 8, seed=9)
    with torch.no_grad():
        A = model[:4](torch.as_tensor(X)).numpy().astype(np.float64)
    W = model.fc.weight.detach().numpy().astype(np.float64)

    def cam(t):
        return np.maximum(np.einsum("nk,nkhw->nhw", W[t], A), 0) / 64

    ex = GradCAM(kit, model=model, layer="relu2").fit(X)
    flat = ex.explain(X, targets=np.array([3, 1, 0, 4]))
    assert_array_equal(flat.targets, [[3], [1], [0], [4]])
    assert_allclose(flat.maps[:, 0], cam([3, 1, 0, 4]), rtol=1e-5, atol=1e-7)
    assert ex.transform(X, targets=[3, 1, 0, 4]).shape == (4, 8, 8)
    pairs = np.array([[3, 1], [1, 2], [0, 0], [4, 2]])
    e = ex.explain(X, targets=pairs)
    assert_array_equal(e.targets, pairs)
    assert ex.transform(X, targets=pairs).shape == (4, 2, 8, 8)
    for j in range(2):
        assert_allclose(e.maps[:, j], cam(pairs[:, j]), rtol=1e-5, atol=1e-7)
    # Different classes, different maps.
    assert not np.allclose(e.maps[0, 0], e.maps[0, 1])
    assert not np.allclose(e.maps[1, 0], e.maps[1, 1])


# -- Properties ------------------------------------------------------------------------------
FITTED: dict = {}


def fitted(kit, layer, activation):
    """One explainer per (layer, activation): fitting traces the model, so reuse it."""
    key = (kit.name, layer, activation)
    if key not in FITTED:
        X = images(1, 8)
        FITTED[key] = GradCAM(
            kit, model=tiny_cnn(), layer=layer, activation=activation, batch_size=3
        ).fit(X)
    return FITTED[key]


@given(
    layer=st.sampled_from(["conv1", "relu1", "conv2", "relu2"]),
    activation=st.sampled_from(["relu", "abs"]),
    n=st.integers(1, 5),
    h=st.integers(4, 16),
    w=st.integers(4, 16),
    top_k=st.integers(1, 3),
    seed=st.integers(0, 2**16),
)
def test_heatmaps_are_float32_in_unit_interval_at_input_size(
    layer, activation, n, h, w, top_k, seed, kit
):
    ex = fitted(kit, layer, activation).set_params(top_k=top_k)
    X = images(n, (h, w), seed=seed)
    e = ex.explain(X)
    assert e.heatmaps.shape == (n, top_k, h, w)
    assert e.heatmaps.dtype == np.float32
    assert e.heatmaps.min() >= 0 and e.heatmaps.max() <= 1
    assert e.maps.shape == (n, top_k, h, w)  # "same" convolutions keep the resolution
    assert (e.maps >= 0).all()
    # Every map that is not constant spans [0, 1].
    spans = e.maps.max(axis=(2, 3)) > e.maps.min(axis=(2, 3))
    assert_allclose(e.heatmaps.max(axis=(2, 3))[spans], 1, atol=1e-6)
    assert_allclose(e.heatmaps.min(axis=(2, 3))[spans], 0, atol=1e-6)


@given(n=st.integers(2, 6), batch_size=st.integers(1, 4), seed=st.integers(0, 2**16))
def test_batched_equals_one_by_one(n, batch_size, seed, kit):
    ex = fitted(kit, "conv2", "relu").set_params(batch_size=batch_size, top_k=2)
    X = images(n, 8, seed=seed)
    e = ex.explain(X)
    for i in range(n):
        single = ex.explain(X[i : i + 1])
        assert_array_equal(single.targets, e.targets[i : i + 1])
        assert_allclose(single.maps, e.maps[i : i + 1], rtol=1e-5, atol=1e-7)
        assert_allclose(single.heatmaps, e.heatmaps[i : i + 1], atol=1e-5)


def test_explain_images_of_another_size_than_fit(kit):
    model = tiny_cnn()
    ex = GradCAM(kit, model=model, layer="conv2").fit(images(2, 8))
    large = images(2, (12, 10), seed=11)
    e = ex.explain(large)
    assert e.heatmaps.shape == (2, 1, 12, 10)
    fresh = GradCAM(kit, model=model, layer="conv2").fit(large).explain(large)
    assert_allclose(e.maps, fresh.maps, rtol=1e-6)


# -- Sanity check (Adebayo et al. 2018): maps must depend on the weights ---------------------
def randomized_head(model, name="fc", seed=123):
    """A deep copy of ``model`` with the module ``name`` re-initialized."""
    clone = copy.deepcopy(model)
    torch.manual_seed(seed)
    clone.get_submodule(name).reset_parameters()
    return clone


@pytest.mark.parametrize("layer", ["conv2", "relu2"])
def test_randomizing_the_head_changes_the_maps(layer, kit):
    model = tiny_cnn(n_classes=5)
    X = images(8, 8, seed=10)
    targets = np.zeros(8, dtype=int)
    before = GradCAM(kit, model=model, layer=layer).fit(X).explain(X, targets).maps
    random = randomized_head(model)
    after = GradCAM(kit, model=random, layer=layer).fit(X).explain(X, targets).maps
    rho = np.array(
        [spearmanr(b.ravel(), a.ravel()).statistic for b, a in zip(before, after, strict=True)]
    )
    rho = np.nan_to_num(rho, nan=0.0)  # a constant (all-zero) map correlates with nothing
    assert (rho < 0.9).mean() >= 0.75, rho
    # Control: an identical copy gives identical maps.
    same = GradCAM(kit, model=copy.deepcopy(model), layer=layer).fit(X)
    assert_allclose(same.explain(X, targets).maps, before, rtol=1e-6)
