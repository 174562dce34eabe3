"""Batch norms folded into the convolutions before them (``sklearn_caf_torch._fold``).

The folded split must compute what the model computes, follow the model's tensors when
they change after ``fit``, leave the user's model exactly as it was, and leave alone every
pair it cannot fold exactly.
"""

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st
from numpy.testing import assert_allclose
from torch import nn

from sklearn_caf import GradCAMExplainer, L2CAFExplainer
from sklearn_caf_torch import TorchBackend
from sklearn_caf_torch._bound import TorchBoundModel
from sklearn_caf_torch._fold import FoldedConvBN


def _randomize_statistics(model, seed=0):
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.modules.batchnorm._BatchNorm) and m.running_mean is not None:
                m.running_mean.copy_(torch.rand(m.running_mean.shape, generator=g) - 0.5)
                m.running_var.copy_(torch.rand(m.running_var.shape, generator=g) + 0.5)
                if m.weight is not None:
                    m.weight.copy_(torch.rand(m.weight.shape, generator=g) + 0.5)
                    m.bias.copy_(torch.rand(m.bias.shape, generator=g) - 0.5)
    return model


class Plain(nn.Module):
    """Module convolutions and batch norms, with and without bias and affine parameters."""

    def __init__(self):
        super().__init__()
        self.conv1 = nn.Conv2d(3, 6, 3, padding=1, bias=True)
        self.bn1 = nn.BatchNorm2d(6)
        self.conv2 = nn.Conv2d(6, 6, 3, stride=2, padding=2, dilation=2, groups=3, bias=False)
        self.bn2 = nn.BatchNorm2d(6, affine=False)
        self.conv3 = nn.Conv2d(6, 8, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(8)
        self.fc = nn.Linear(8, 5)

    def forward(self, x):
        x = F.relu(self.bn1(self.conv1(x)))
        x = F.relu(self.bn2(self.conv2(x)))
        x = F.relu6(self.bn3(self.conv3(x)))
        return self.fc(x.mean((2, 3)))


class Functional(nn.Module):
    """EfficientNet's pattern: the convolution calls ``F.conv2d`` on its own weight."""

    def __init__(self):
        super().__init__()
        self.w1 = nn.Parameter(torch.randn(6, 3, 3, 3) * 0.3)
        self.bn1 = nn.BatchNorm2d(6)
        self.w2 = nn.Parameter(torch.randn(6, 1, 3, 3) * 0.3)
        self.bn2 = nn.BatchNorm2d(6)
        self.fc = nn.Linear(6, 4)

    def forward(self, x):
        x = F.relu(self.bn1(F.conv2d(x, self.w1, padding=1)))
        x = F.relu(self.bn2(F.conv2d(F.pad(x, (1, 1, 1, 1)), self.w2, groups=6)))
        return self.fc(x.mean((2, 3)))


class Volumes(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv1 = nn.Conv3d(1, 4, 3, padding=1)
        self.bn1 = nn.BatchNorm3d(4)
        self.conv2 = nn.Conv3d(4, 4, 3, padding="same")
        self.bn2 = nn.BatchNorm3d(4)
        self.fc = nn.Linear(4, 3)

    def forward(self, x):
        x = F.relu(self.bn1(self.conv1(x)))
        x = F.relu(self.bn2(self.conv2(x)))
        return self.fc(x.mean((2, 3, 4)))


class Signals(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv1 = nn.Conv1d(2, 4, 5, padding=2)
        self.bn1 = nn.BatchNorm1d(4)
        self.conv2 = nn.Conv1d(4, 4, 3, padding=1)
        self.bn2 = nn.BatchNorm1d(4)
        self.fc = nn.Linear(4, 3)

    def forward(self, x):
        x = F.relu(self.bn1(self.conv1(x)))
        x = F.relu(self.bn2(self.conv2(x)))
        return self.fc(x.mean(2))


class SharedConvOutput(nn.Module):
    """The convolution's value is also read before the batch norm: nothing may fold."""

    def __init__(self):
        super().__init__()
        self.conv1 = nn.Conv2d(3, 4, 3, padding=1)
        self.conv2 = nn.Conv2d(4, 4, 3, padding=1)
        self.bn2 = nn.BatchNorm2d(4)
        self.fc = nn.Linear(4, 3)

    def forward(self, x):
        x = F.relu(self.conv1(x))
        y = self.conv2(x)
        return self.fc(F.relu(self.bn2(y) + y).mean((2, 3)))


class BatchStatistics(nn.Module):
    """A batch norm without running statistics normalizes by the batch, even in eval mode."""

    def __init__(self):
        super().__init__()
        self.conv1 = nn.Conv2d(3, 4, 3, padding=1)
        self.conv2 = nn.Conv2d(4, 4, 3, padding=1)
        self.bn2 = nn.BatchNorm2d(4, track_running_stats=False)
        self.fc = nn.Linear(4, 3)

    def forward(self, x):
        x = F.relu(self.conv1(x))
        return self.fc(F.relu(self.bn2(self.conv2(x))).mean((2, 3)))


class Flattens(nn.Module):
    """``.view`` needs contiguous memory: channels-last activations make it fail."""

    def __init__(self):
        super().__init__()
        self.conv1 = nn.Conv2d(3, 4, 3, padding=1)
        self.bn1 = nn.BatchNorm2d(4)
        self.conv2 = nn.Conv2d(4, 4, 3, padding=1)
        self.bn2 = nn.BatchNorm2d(4)
        self.fc = nn.Linear(4 * 6 * 6, 3)

    def forward(self, x):
        x = F.relu(self.bn1(self.conv1(x)))
        x = F.relu(self.bn2(self.conv2(x)))
        return self.fc(x.view(x.size(0), -1))


def _model(cls, dtype=torch.float64):
    torch.manual_seed(0)
    return _randomize_statistics(cls()).to(dtype).eval()


def _inputs(shape, n=3, seed=0):
    return np.random.default_rng(seed).standard_normal((n, *shape))


def _folded_modules(bound):
    split = bound._split
    return [
        m for g in (split._trunk, split._head) for m in g.modules() if isinstance(m, FoldedConvBN)
    ]


def _bind(model, layer, X, split="auto"):
    bound = TorchBoundModel(model, layer=layer, output=None, device="cpu", split=split)
    with bound:
        x = bound.asarray(X)
        a, context = bound.trunk(x)
        out = bound.head(a, context)
        expected = model(x.clone())
    return bound, out, expected


CASES = [
    # model, layer, input shape, batch norms folded (trunk + head)
    (Plain, "bn1", (3, 8, 8), 3),
    (Plain, "conv2", (3, 8, 8), 2),  # bn2 reads the layer: in the head, its conv is not
    (Functional, "bn1", (3, 8, 8), 2),
    (Volumes, "bn1", (1, 5, 5, 5), 2),
    (Signals, "conv1", (2, 12), 1),
]


@pytest.mark.parametrize(("cls", "layer", "shape", "n_folded"), CASES)
def test_the_folded_split_computes_what_the_model_computes(cls, layer, shape, n_folded):
    model = _model(cls)
    bound, out, expected = _bind(model, layer, _inputs(shape))
    assert len(_folded_modules(bound)) == n_folded
    assert_allclose(out.detach().numpy(), expected.detach().numpy(), rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("split", ["fx", "export"])
def test_both_tracers_fold_and_the_maps_equal_the_unfolded_model(split):
    model = _model(Plain)
    X = _inputs((3, 8, 8))
    bound, _, _ = _bind(model, "bn1", X, split=split)
    assert len(_folded_modules(bound)) == 3
    # Hooks run the model as written: Grad-CAM's maps are the same to float64 rounding.
    maps = {}
    for method in (split, "hooks"):
        backend = TorchBackend(split=method)
        explainer = GradCAMExplainer(model=model, layer="conv2", backend=backend).fit(X)
        maps[method] = explainer.explain(X, targets=np.array([[0, 3]] * 3)).maps
    assert_allclose(maps[split], maps["hooks"], rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("cls", [SharedConvOutput, BatchStatistics])
def test_pairs_that_cannot_fold_exactly_are_left_alone(cls):
    model = _model(cls)
    bound, out, expected = _bind(model, "conv1", _inputs((3, 6, 6)))
    assert _folded_modules(bound) == []
    assert_allclose(out.detach().numpy(), expected.detach().numpy(), rtol=1e-12, atol=1e-12)


def test_a_view_that_needs_contiguous_memory_keeps_the_default_layout():
    model = _model(Flattens)
    bound, out, expected = _bind(model, "conv1", _inputs((3, 6, 6)))
    assert bound.split_method == "fx"  # not the hooks: only channels-last is given up
    assert not bound._split.channels_last
    assert len(_folded_modules(bound)) == 1  # conv2 -> bn2; bn1 reads the layer
    assert_allclose(out.detach().numpy(), expected.detach().numpy(), rtol=1e-12, atol=1e-12)


def test_channels_last_on_the_cpu_where_the_model_allows_it():
    bound, _, _ = _bind(_model(Plain, torch.float32), "bn1", _inputs((3, 8, 8)))
    assert bound._split.channels_last
    a, _ = bound.trunk(bound.asarray(_inputs((3, 8, 8))))
    assert a.is_contiguous(memory_format=torch.channels_last)


def _state(model):
    return (
        {k: (v.detach().clone(), v.stride()) for k, v in model.state_dict().items()},
        [name for name, _ in model.named_modules()],
        [m.training for m in model.modules()],
        [p.requires_grad for p in model.parameters()],
    )


def test_the_users_model_is_untouched():
    model = _model(Plain, torch.float32).train()
    before = _state(model)
    X = _inputs((3, 8, 8)).astype(np.float32)
    for make in (GradCAMExplainer, L2CAFExplainer):
        make(model=model, layer="bn1").fit(X).explain(X)
    after = _state(model)
    assert after[0].keys() == before[0].keys()
    for key, (value, stride) in before[0].items():
        assert torch.equal(after[0][key][0], value), key
        assert after[0][key][1] == stride, key  # no tensor turned channels-last
    assert after[1:] == before[1:]


@pytest.mark.parametrize("change", ["in-place", "new parameter", "load_state_dict"])
def test_a_model_changed_after_fit_is_folded_again(change):
    model = _model(Plain)
    X = _inputs((3, 8, 8))
    explainer = GradCAMExplainer(model=model, layer="bn1").fit(X)
    first = explainer.explain(X).maps
    with torch.no_grad():
        if change == "in-place":
            model.bn3.running_var.mul_(3.0)
            model.conv3.weight.add_(0.2)
        elif change == "new parameter":
            model.bn3.weight = nn.Parameter(model.bn3.weight.detach() * -2.0)
        else:
            state = model.state_dict()
            state["bn2.running_mean"] = state["bn2.running_mean"] + 1.0
            model.load_state_dict(state)
    again = explainer.explain(X).maps
    fresh = GradCAMExplainer(model=model, layer="bn1", backend=TorchBackend(split="hooks"))
    expected = fresh.fit(X).explain(X).maps
    assert not np.allclose(again, first)  # the change shows in the maps
    assert_allclose(again, expected, rtol=1e-10, atol=1e-12)


@settings(max_examples=20, deadline=None)
@given(
    channels=st.lists(st.integers(1, 4), min_size=2, max_size=4),
    kernel=st.sampled_from([1, 3]),
    bias=st.booleans(),
    affine=st.booleans(),
    depthwise=st.booleans(),
    cut=st.integers(0, 3),
    seed=st.integers(0, 2**16),
)
def test_any_conv_bn_stack_folds_exactly(channels, kernel, bias, affine, depthwise, cut, seed):
    torch.manual_seed(seed)
    layers, c_in = [], 2
    for c in channels:
        groups = c_in if depthwise and c % c_in == 0 else 1
        layers += [
            nn.Conv2d(c_in, c, kernel, padding=kernel // 2, groups=groups, bias=bias),
            nn.BatchNorm2d(c, affine=affine),
            nn.ReLU(),
        ]
        c_in = c
    model = _randomize_statistics(
        nn.Sequential(*layers, nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(c_in, 3)), seed
    )
    model = model.double().eval()
    layer = str(3 * min(cut, len(channels) - 1))  # a convolution: its own BN lies after it
    _, out, expected = _bind(model, layer, _inputs((2, 5, 5), seed=seed))
    assert_allclose(out.detach().numpy(), expected.detach().numpy(), rtol=1e-10, atol=1e-12)
