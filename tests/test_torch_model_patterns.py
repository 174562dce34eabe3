"""Everyday PyTorch model code, explained exactly: a conformance suite of model patterns.

Each pattern is explained at one or more layers; Grad-CAM must equal Captum's LayerGradCam
(an independent implementation that works on any model through hooks), L2-CAF's fast variant
must equal its vanilla one (the trunk's cached feature maps were not corrupted), the split
method must be the fastest exact one, and the user's model must be bit-identical afterwards.
"""

from __future__ import annotations

import functools
import pickle
import warnings
from types import SimpleNamespace

import numpy as np
import pytest
from numpy.testing import assert_allclose

torch = pytest.importorskip("torch")
captum_attr = pytest.importorskip("captum.attr")
basic_models = pytest.importorskip("captum.testing.helpers.basic_models")

from sklearn.exceptions import ConvergenceWarning, EfficiencyWarning  # noqa: E402

from sklearn_caf import FeatureMapExtractor, GradCAMExplainer, L2CAFExplainer  # noqa: E402

nn = torch.nn
F = torch.nn.functional


# -- Models --------------------------------------------------------------------------------------
class InplaceNet(nn.Module):
    """In-place ReLUs right after the explained layers, one after a batch norm."""

    def __init__(self):
        super().__init__()
        self.conv1 = nn.Conv2d(3, 6, 3, padding=1)
        self.relu1 = nn.ReLU(inplace=True)
        self.conv2 = nn.Conv2d(6, 6, 3, padding=1)
        self.bn = nn.BatchNorm2d(6)
        self.relu2 = nn.ReLU(inplace=True)
        self.fc = nn.Linear(6, 5)

    def forward(self, x):
        x = self.relu1(self.conv1(x))
        x = self.relu2(self.bn(self.conv2(x)))
        x = F.relu(x - 0.1, inplace=True)  # functional in-place, too
        return self.fc(torch.flatten(F.adaptive_avg_pool2d(x, 1), 1))


class OptionalMask(InplaceNet):
    """``forward(x, mask=None)`` with ``if mask is not None``."""

    def forward(self, x, mask=None):
        if mask is not None:
            x = x * mask
        return super().forward(x)


class ShapeBranch(InplaceNet):
    """Control flow on a shape: torch.fx cannot trace it."""

    def forward(self, x):
        if x.shape[-1] > 16:
            x = F.avg_pool2d(x, 2)
        return super().forward(x)


class AssertDim(InplaceNet):
    def forward(self, x):
        assert x.dim() == 4, "NCHW expected"
        return super().forward(x)


class ItemBranch(InplaceNet):
    """Control flow on a tensor's value: neither torch.fx nor torch.export can trace it."""

    def forward(self, x):
        if x.abs().max().item() > 1e6:
            x = x / 1e6
        return super().forward(x)


class Kwargs(InplaceNet):
    def forward(self, x, **kwargs):
        return super().forward(x)


class ReusedUntraceable(ItemBranch):
    """The explained layer runs twice; the model can only be split by hooks."""

    def forward(self, x):
        if x.abs().max().item() > 1e6:
            x = x / 1e6
        x = self.relu1(self.conv1(x))
        x = self.conv2(x)
        x = self.conv2(x)
        return self.fc(x.mean((2, 3)))


# A torchvision-style ResNet and VGG, written here (torchvision cannot be installed beside
# the CPU build of torch): in-place ReLUs, ``out += identity``, a downsampling shortcut,
# max pooling, ``torch.flatten``, dropout in the classifier.
class BasicBlock(nn.Module):
    def __init__(self, cin, cout, stride=1):
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.relu = nn.ReLU(inplace=True)
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.downsample = None
        if stride != 1 or cin != cout:
            self.downsample = nn.Sequential(
                nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout)
            )

    def forward(self, x):
        identity = x
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        if self.downsample is not None:
            identity = self.downsample(x)
        out += identity
        return self.relu(out)


class ResNet(nn.Module):
    def __init__(self, n_classes=6):
        super().__init__()
        self.conv1 = nn.Conv2d(3, 8, 3, 1, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(8)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(2)
        self.layer1 = nn.Sequential(BasicBlock(8, 8), BasicBlock(8, 8))
        self.layer2 = nn.Sequential(BasicBlock(8, 12, stride=2), BasicBlock(12, 12))
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(12, n_classes)

    def forward(self, x):
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        x = self.layer2(self.layer1(x))
        return self.fc(torch.flatten(self.avgpool(x), 1))


class VGG(nn.Module):
    def __init__(self, n_classes=6):
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(3, 8, 3, padding=1),
            nn.ReLU(inplace=True),
            nn.Conv2d(8, 8, 3, padding=1),
            nn.ReLU(inplace=True),
            nn.MaxPool2d(2),
            nn.Conv2d(8, 12, 3, padding=1),
            nn.ReLU(inplace=True),
        )
        self.avgpool = nn.AdaptiveAvgPool2d((2, 2))
        self.classifier = nn.Sequential(
            nn.Linear(48, 16), nn.ReLU(inplace=True), nn.Dropout(), nn.Linear(16, n_classes)
        )

    def forward(self, x):
        x = self.avgpool(self.features(x))
        return self.classifier(torch.flatten(x, 1))


def _build(cls, seed=0):
    torch.manual_seed(seed)
    model = cls()
    with torch.no_grad():  # batch norms with non-trivial statistics
        for m in model.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.running_mean.uniform_(-0.3, 0.3)
                m.running_var.uniform_(0.5, 1.5)
                m.weight.uniform_(0.5, 1.5)
                m.bias.uniform_(-0.2, 0.2)
    return model.eval()


def _images(n=3, size=8, seed=0):
    return np.random.default_rng(seed).standard_normal((n, 3, size, size)).astype(np.float32)


# -- The user's model, before and after ----------------------------------------------------------
_HOOK_DICTS = (
    "_forward_hooks",
    "_forward_pre_hooks",
    "_backward_hooks",
    "_backward_pre_hooks",
    "_forward_hooks_with_kwargs",
    "_forward_pre_hooks_with_kwargs",
)


def _snapshot(model):
    return SimpleNamespace(
        state={k: v.detach().clone() for k, v in model.state_dict().items()},
        training=[m.training for m in model.modules()],
        requires_grad=[p.requires_grad for p in model.parameters()],
        grads=[p.grad for p in model.parameters()],
        hooks=[tuple(len(getattr(m, name, {})) for name in _HOOK_DICTS) for m in model.modules()],
    )


def _assert_unchanged(model, before):
    after = _snapshot(model)
    assert after.state.keys() == before.state.keys()
    for key, value in before.state.items():
        assert torch.equal(after.state[key], value), key
    assert after.training == before.training
    assert after.requires_grad == before.requires_grad
    assert all(g is None for g in after.grads)
    assert after.hooks == before.hooks


# -- Checks shared by every pattern --------------------------------------------------------------
def _captum(model, layer, X, targets):
    attr = captum_attr.LayerGradCam(model, model.get_submodule(layer)).attribute(
        torch.as_tensor(X), target=torch.as_tensor(targets), relu_attributions=True
    )
    return attr.detach().numpy()[:, 0]


def _l2caf_maps(model, layer, X, variant, objective="class-oblivious"):
    # A few Adam steps suffice: fast and vanilla follow the same trajectory step by step,
    # so a corrupted cache shows at once.
    explainer = L2CAFExplainer(
        model=model,
        layer=layer,
        variant=variant,
        solver="adam",
        objective=objective,
        max_iter=20,
        tol=0.0,
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        return explainer.fit(X).explain(X).maps


def _fit_quietly(explainer, X, expect_fallback):
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        explainer.fit(X)
    fallbacks = [w for w in caught if issubclass(w.category, EfficiencyWarning)]
    assert len(fallbacks) == (1 if expect_fallback else 0), [str(w.message) for w in caught]
    return explainer


def _check_pattern(model, layer, X, split, capfd):
    before = _snapshot(model)
    hooks = split == "hooks"
    gradcam = _fit_quietly(GradCAMExplainer(model=model, layer=layer, top_k=2), X, hooks)
    assert gradcam.split_ == split
    e = gradcam.explain(X)
    reference = np.stack([_captum(model, layer, X, e.targets[:, j]) for j in range(2)], 1)
    assert (reference > 0).mean() > 0.05  # not a comparison of zeros
    assert_allclose(e.maps, reference, rtol=1e-4, atol=1e-5 * np.abs(reference).max())

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", EfficiencyWarning)
        # Tracing by torch.export is slow (seconds per fit): one objective there is enough.
        objectives = (
            ("class-oblivious", "class-specific") if split == "fx" else ("class-specific",)
        )
        for objective in objectives:
            fast = _l2caf_maps(model, layer, X, "fast", objective)
            vanilla = _l2caf_maps(model, layer, X, "vanilla", objective)
            assert_allclose(fast, vanilla, rtol=1e-4, atol=1e-4)
    _assert_unchanged(model, before)
    captured = capfd.readouterr()
    assert captured.err == "", captured.err  # no tracer's traceback or log lines


# -- The table of the issue ----------------------------------------------------------------------
PATTERNS = [
    (InplaceNet, "conv1", "fx"),  # the next op is an in-place ReLU
    (InplaceNet, "conv2", "fx"),
    (InplaceNet, "bn", "fx"),  # an in-place ReLU after a batch norm
    (InplaceNet, "relu2", "fx"),  # the in-place module itself
    (OptionalMask, "conv2", "fx"),  # torch.fx with the default None made concrete
    (ShapeBranch, "conv2", "export"),
    (AssertDim, "conv1", "export"),
    (ItemBranch, "conv2", "hooks"),
    (Kwargs, "conv2", "fx"),
]


@pytest.mark.parametrize(
    ("cls", "layer", "split"), PATTERNS, ids=[f"{c.__name__}-{lay}" for c, lay, _ in PATTERNS]
)
def test_model_patterns(cls, layer, split, capfd):
    _check_pattern(_build(cls), layer, _images(), split, capfd)


def test_shape_branch_on_the_other_path():
    """torch.export's graph is the one the first input took; an input taking the other
    branch is refused by its guards, never computed on the wrong graph."""
    model = _build(ShapeBranch)
    small, large = _images(2, 8), _images(2, 32, seed=1)
    explainer = GradCAMExplainer(model=model, layer="conv2").fit(small)
    assert explainer.split_ == "export"
    with pytest.raises(ValueError, match=r"another path through the model.*fit the"):
        explainer.transform(large)
    # Fitted on the large input, it explains it exactly (the branch pools it to 16 x 16).
    explainer.fit(large)
    e = explainer.explain(large)
    reference = _captum(model, "conv2", large, e.targets[:, 0])
    assert_allclose(e.maps[:, 0], reference, rtol=1e-4, atol=1e-5 * np.abs(reference).max())


@pytest.mark.parametrize("cls", [OptionalMask, ReusedUntraceable])
def test_layer_run_twice_is_a_clear_error(cls):
    class Twice(cls):
        def forward(self, x, mask=None):
            self.conv1(x)
            return super().forward(x)

    model = _build(Twice if cls is OptionalMask else cls)
    layer = "conv1" if cls is OptionalMask else "conv2"
    before = _snapshot(model)
    with pytest.raises(ValueError, match=rf"layer='{layer}' runs 2 times"):
        GradCAMExplainer(model=model, layer=layer).fit(_images())
    _assert_unchanged(model, before)


def test_fallback_warning_names_the_reasons():
    with pytest.warns(EfficiencyWarning, match=r"torch\.fx: TraceError.*torch\.export: ") as w:
        explainer = GradCAMExplainer(model=_build(ItemBranch), layer="conv2").fit(_images())
    assert explainer.split_ == "hooks"
    assert w[0].filename == __file__  # it points at the user's line, not into the backend


def test_hooks_fallback_pickles_and_keeps_explaining():
    model = _build(ItemBranch)
    X = _images()
    with pytest.warns(EfficiencyWarning):
        explainer = GradCAMExplainer(model=model, layer="conv2").fit(X)
    expected = explainer.transform(X)
    restored = pickle.loads(pickle.dumps(explainer))
    with pytest.warns(EfficiencyWarning):
        assert_allclose(restored.transform(X), expected, atol=1e-6)


# A short Adam run: these tests check the model is left as it was, not convergence.
@pytest.mark.filterwarnings("ignore:L2-CAF did not converge:sklearn.exceptions.ConvergenceWarning")
def test_hooks_do_not_leak_into_another_thread():
    """The fallback's hooks act only in the thread that set them: the same model called
    meanwhile from another thread computes its own output."""
    import threading

    model = _build(ItemBranch)
    X = torch.as_tensor(_images(4))
    with torch.no_grad():
        expected = model(X)
    results, stop = [], threading.Event()

    def call_model():
        while not stop.is_set():
            with torch.no_grad():
                results.append(torch.equal(model(X), expected))

    # Tracing (at fit) patches torch.nn.Module.__call__ process-wide while it runs: fit
    # first, then explain (hooks only) while the other thread runs the model.
    with pytest.warns(EfficiencyWarning):
        explainer = L2CAFExplainer(model=model, layer="conv2", solver="adam", max_iter=100)
        explainer.fit(X.numpy())
    worker = threading.Thread(target=call_model)
    worker.start()
    try:
        explainer.transform(X.numpy())
    finally:
        stop.set()
        worker.join()
    assert results and all(results)


def test_feature_extractor_uses_the_same_split():
    model = _build(ItemBranch)
    X = _images()
    with pytest.warns(EfficiencyWarning):
        extractor = FeatureMapExtractor(model=model, layer="conv2").fit(X)
    assert extractor.split_ == "hooks"
    features = extractor.transform(X)
    with torch.no_grad():
        expected = model.bn(model.conv2(model.relu1(model.conv1(torch.as_tensor(X)))))
    # conv2's output, before the batch norm and the in-place ReLU that follow it.
    with torch.no_grad():
        conv2 = model.conv2(model.relu1(model.conv1(torch.as_tensor(X))))
    assert_allclose(features, conv2.numpy(), rtol=1e-5, atol=1e-6)
    assert not np.allclose(features, expected.numpy())


# -- torchvision-style networks ------------------------------------------------------------------
NETWORKS = [
    (ResNet, "conv1"),  # in-place ReLU (after bn1) then max pooling
    (ResNet, "layer1.0.conv1"),  # inside a block: the head reads the skip connection
    (ResNet, "layer1.0.bn2"),  # the next op is ``out += identity``
    (ResNet, "layer1.1"),  # a whole block, ending in an in-place ReLU
    (ResNet, "layer2.0.downsample.1"),  # the shortcut's batch norm
    (ResNet, "layer2"),
    (VGG, "features.0"),
    (VGG, "features.2"),
    (VGG, "features.5"),
    (VGG, "features.6"),  # the in-place ReLU module itself
]


@pytest.mark.parametrize(
    ("cls", "layer"), NETWORKS, ids=[f"{c.__name__}-{lay}" for c, lay in NETWORKS]
)
def test_torchvision_style_networks(cls, layer, capfd):
    _check_pattern(_build(cls), layer, _images(3, 16), "fx", capfd)


# A short Adam run: these tests check the model is left as it was, not convergence.
@pytest.mark.filterwarnings("ignore:L2-CAF did not converge:sklearn.exceptions.ConvergenceWarning")
def test_resnet_in_train_mode_with_frozen_parameters_is_left_as_it_was(capfd):
    model = _build(ResNet).train()
    for p in model.layer1.parameters():
        p.requires_grad_(False)
    before = _snapshot(model)
    X = _images(3, 16)
    GradCAMExplainer(model=model, layer="layer1.0.bn2").fit_transform(X)
    L2CAFExplainer(model=model, layer="layer1.0.bn2", solver="adam", max_iter=60).fit_transform(X)
    _assert_unchanged(model, before)
    assert capfd.readouterr().err == ""


# -- Captum's own models and published expectations ----------------------------------------------
@functools.cache
def _arange_input():
    return torch.arange(16, dtype=torch.float32).view(1, 1, 4, 4).numpy()


@pytest.mark.parametrize("inplace", [False, True])
@pytest.mark.parametrize("frozen", [False, True])
@pytest.mark.parametrize(
    ("layer", "expected"),
    [("conv1", [[11.25, 13.5], [20.25, 22.5]]), ("relu1", [[0.0, 4.0], [28.0, 32.5]])],
)
def test_captum_one_conv_expectations(layer, expected, inplace, frozen):
    """Captum's tests/attr/layer/test_grad_cam.py: target 0 on arange(16)."""
    model = basic_models.BasicModel_ConvNet_One_Conv(inplace=inplace).eval()
    if frozen:
        for p in model.parameters():
            p.requires_grad_(False)
    before = _snapshot(model)
    explainer = GradCAMExplainer(model=model, layer=layer).fit(_arange_input())
    assert explainer.split_ == "fx"
    maps = explainer.explain(_arange_input(), targets=[0]).maps
    assert_allclose(maps[0, 0], expected, atol=1e-5)
    _assert_unchanged(model, before)


CAPTUM_MODELS = [
    ("BasicModel_ConvNet", "conv1", (1, 10, 10)),
    ("BasicModel_ConvNet", "relu2", (1, 10, 10)),
    ("BasicModel_ConvNetWithPaddingDilation", "conv1", (1, 6, 6)),
    ("BasicModel_ConvNet_MaxPool3d", "conv1", (1, 10, 10, 10)),
    ("BasicModel_ConvNet_MaxPool3d", "conv2", (1, 10, 10, 10)),
]


@pytest.mark.parametrize(
    ("name", "layer", "shape"), CAPTUM_MODELS, ids=[f"{n}-{lay}" for n, lay, _ in CAPTUM_MODELS]
)
def test_captum_basic_models(name, layer, shape):
    torch.manual_seed(0)
    model = getattr(basic_models, name)().eval()
    X = np.random.default_rng(1).uniform(0, 1, (3, *shape)).astype(np.float32)
    targets = np.array([0, 1, 2])
    explainer = GradCAMExplainer(model=model, layer=layer).fit(X)
    maps = explainer.explain(X, targets=targets).maps[:, 0]
    reference = _captum(model, layer, X, targets)
    assert_allclose(maps, reference, rtol=1e-4, atol=1e-6 + 1e-5 * np.abs(reference).max())


# -- Choosing the split ---------------------------------------------------------------------
def test_every_split_method_gives_the_same_maps():
    from sklearn_caf_torch import TorchBackend

    model = _build(ResNet)
    X = _images(3, 16)
    maps = {}
    for split in ("fx", "export", "hooks"):
        for make in (GradCAMExplainer, L2CAFExplainer):
            explainer = make(model=model, layer="layer1.0.bn2", backend=TorchBackend(split=split))
            with warnings.catch_warnings():
                warnings.simplefilter("error", EfficiencyWarning)  # chosen, so no warning
                maps[split, make] = explainer.fit(X).explain(X).maps
            assert explainer.split_ == split
    # The traced splits fold the batch norms into the convolutions (_fold.py), the hooks
    # run the model as written: the same maps up to float32 rounding, which L2-CAF's
    # iterations carry a little further than Grad-CAM's single backward pass.
    for make, atol in ((GradCAMExplainer, 1e-6), (L2CAFExplainer, 1e-4)):
        assert_allclose(maps["export", make], maps["fx", make], rtol=1e-5, atol=atol)
        assert_allclose(maps["hooks", make], maps["fx", make], rtol=1e-5, atol=atol)


@pytest.mark.parametrize("split", ["fx", "export"])
def test_a_chosen_split_that_cannot_work_is_a_clear_error(split):
    from sklearn_caf_torch import TorchBackend

    model = _build(ItemBranch)
    before = _snapshot(model)
    with pytest.raises(ValueError, match=rf"split='{split}'.*TorchBackend\(split='auto'\)"):
        GradCAMExplainer(model=model, layer="conv2", backend=TorchBackend(split=split)).fit(
            _images()
        )
    _assert_unchanged(model, before)


def test_split_parameter_is_checked():
    from sklearn_caf_torch import TorchBackend

    with pytest.raises(ValueError, match=r"split must be one of auto, fx, export, hooks"):
        TorchBackend(split="trace")
    assert repr(TorchBackend(split="hooks")) == "TorchBackend(split='hooks')"


@pytest.mark.parametrize("cls", [InplaceNet, ShapeBranch, ItemBranch])
def test_errors_inside_the_model_are_one_clear_error(cls, capfd):
    """A wrong channel count fails inside the model: one ValueError naming X, and nothing
    printed by torch.fx (whose GraphModule prints its own traceback when called)."""
    model = _build(cls)
    explainer = GradCAMExplainer(model=model, layer="conv2")
    with pytest.raises(ValueError, match=r"X \(per-image shape \(5, 8, 8\)\) cannot be run"):
        explainer.fit(np.zeros((2, 5, 8, 8), np.float32))
    assert capfd.readouterr().err == ""
    # After a good fit, a batch the traced graph cannot take: still no foreign output.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", EfficiencyWarning)  # ItemBranch: asserted elsewhere
        explainer.fit(_images())
    with pytest.raises(Exception, match=r"channels|Guard failed"):
        explainer.bound_.trunk(explainer.bound_.asarray(np.zeros((2, 5, 8, 8), np.float32)))
    assert capfd.readouterr().err == ""
