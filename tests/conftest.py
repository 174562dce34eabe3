"""Shared test configuration: Hypothesis profile and small, real PyTorch models.

Every model here is deterministic (weights drawn under ``torch.manual_seed``), tiny (a
few channels, images of 8x8 to 16x16) and built from named children, so layers are
addressable by the explainers' ``layer=`` ("conv1", "relu2", "block1.out", ...). Test
modules import the factories (``from conftest import tiny_cnn, images``) to build models
inside Hypothesis tests, or use the fixtures at the end.
torch is optional: without it the model factories are simply not defined, and the test
modules that need them skip themselves with ``pytest.importorskip("torch")``.
"""

from __future__ import annotations

import os
from collections import OrderedDict

import numpy as np
import pytest
from hypothesis import HealthCheck, settings

# -- Hypothesis -------------------------------------------------------------------------------
# deadline=None: the first example of a test pays for tracing a model with torch.fx.
settings.register_profile(
    "sklearn-caf",
    deadline=None,
    max_examples=15,
    suppress_health_check=[HealthCheck.too_slow],
)
settings.register_profile(
    "sklearn-caf-thorough", parent=settings.get_profile("sklearn-caf"), max_examples=200
)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "sklearn-caf"))


# -- Small torch models (test_l2caf.py, test_gradcam.py, test_heatmaps.py) -------------------
try:
    import torch
    from torch import nn
except ImportError:  # pragma: no cover - the torch-free run of the suite
    torch = None

if torch is not None:
    # The models are tiny: intra-op threads only contend with pytest-xdist's workers.
    torch.set_num_threads(1)

    def tiny_cnn(n_classes: int = 5, seed: int = 0, in_channels: int = 3) -> nn.Sequential:
        """Conv-ReLU-Conv-ReLU-GAP-Flatten-Linear; the head after "relu2" is affine."""
        torch.manual_seed(seed)
        return nn.Sequential(
            OrderedDict(
                conv1=nn.Conv2d(in_channels, 4, 3, padding=1),
                relu1=nn.ReLU(),
                conv2=nn.Conv2d(4, 6, 3, padding=1),
                relu2=nn.ReLU(),
                pool=nn.AdaptiveAvgPool2d(1),
                flatten=nn.Flatten(),
                fc=nn.Linear(6, n_classes),
            )
        ).eval()

    def mlp_head_cnn(n_classes: int = 5, seed: int = 0, in_channels: int = 3) -> nn.Sequential:
        """tiny_cnn's trunk, then GAP -> Linear -> ReLU -> Linear: a head that is not affine
        in the filter, so L2-CAF's ``solver="auto"`` must fall back to Adam.

        fc1 has no bias: with one, the small pooled features of a unit-norm filter never
        switch the ReLU, and the head is affine wherever the filter can be.
        """
        torch.manual_seed(seed)
        return nn.Sequential(
            OrderedDict(
                conv1=nn.Conv2d(in_channels, 4, 3, padding=1),
                relu1=nn.ReLU(),
                conv2=nn.Conv2d(4, 6, 3, padding=1),
                relu2=nn.ReLU(),
                pool=nn.AdaptiveAvgPool2d(1),
                flatten=nn.Flatten(),
                fc1=nn.Linear(6, 8, bias=False),
                relu3=nn.ReLU(),
                fc=nn.Linear(8, n_classes),
            )
        ).eval()

    def embedding_cnn(dim: int = 16, seed: int = 0, in_channels: int = 3) -> nn.Sequential:
        """A retrieval network: tiny_cnn's trunk, then a Linear to a raw ``dim``-d embedding."""
        torch.manual_seed(seed)
        return nn.Sequential(
            OrderedDict(
                conv1=nn.Conv2d(in_channels, 4, 3, padding=1),
                relu1=nn.ReLU(),
                conv2=nn.Conv2d(4, 6, 3, padding=1),
                relu2=nn.ReLU(),
                pool=nn.AdaptiveAvgPool2d(1),
                flatten=nn.Flatten(),
                embed=nn.Linear(6, dim),
            )
        ).eval()

    def linear_head(weight, bias) -> nn.Sequential:
        """GAP -> Flatten -> Linear with the given (d, C) weight and (d,) bias.

        With ``layer=None`` the explainers filter the input itself, i.e. pre-extracted
        feature maps (n, C, h, w), and the output is exactly ``M f + b`` with
        ``M = W A / (h w)``: the L2-CAF optima are known in closed form. The leading
        ``nn.Identity`` named "features" gives the same problem with ``layer="features"``.
        """
        weight = torch.as_tensor(np.asarray(weight), dtype=torch.float32)
        fc = nn.Linear(weight.shape[1], weight.shape[0])
        with torch.no_grad():
            fc.weight.copy_(weight)
            fc.bias.copy_(torch.as_tensor(np.asarray(bias), dtype=torch.float32))
        return nn.Sequential(
            OrderedDict(
                features=nn.Identity(), pool=nn.AdaptiveAvgPool2d(1), flatten=nn.Flatten(), fc=fc
            )
        ).eval()

    class ResidualBlock(nn.Module):
        """conv-ReLU-conv, plus the identity, then the block's own output module "out"."""

        def __init__(self, channels: int):
            super().__init__()
            self.conv1 = nn.Conv2d(channels, channels, 3, padding=1)
            self.relu = nn.ReLU()
            self.conv2 = nn.Conv2d(channels, channels, 3, padding=1)
            self.out = nn.ReLU()

        def forward(self, x):
            return self.out(self.conv2(self.relu(self.conv1(x))) + x)

    class TinyResNet(nn.Module):
        """A torchvision-free ResNet: stem, two residual blocks, GAP, fc."""

        def __init__(self, n_classes: int = 5, in_channels: int = 3):
            super().__init__()
            self.stem = nn.Sequential(nn.Conv2d(in_channels, 4, 3, padding=1), nn.ReLU())
            self.block1 = ResidualBlock(4)
            self.block2 = ResidualBlock(4)
            self.pool = nn.AdaptiveAvgPool2d(1)
            self.fc = nn.Linear(4, n_classes)

        def forward(self, x):
            x = self.block2(self.block1(self.stem(x)))
            return self.fc(torch.flatten(self.pool(x), 1))

    def tiny_resnet(n_classes: int = 5, seed: int = 0, in_channels: int = 3) -> TinyResNet:
        torch.manual_seed(seed)
        return TinyResNet(n_classes, in_channels).eval()

    def images(n: int = 4, size: int | tuple = 8, channels: int = 3, seed: int = 0) -> np.ndarray:
        """Random float32 images (n, channels, H, W), NCHW like torch models expect."""
        h, w = (size, size) if isinstance(size, int) else size
        return np.random.default_rng(seed).standard_normal((n, channels, h, w)).astype(np.float32)

    def logits(model, X) -> np.ndarray:
        """The model's output on X, as NumPy (a reference computed without the library)."""
        with torch.no_grad():
            return model(torch.as_tensor(X)).numpy()

    @pytest.fixture
    def cnn():
        return tiny_cnn()

    @pytest.fixture
    def mlp_cnn():
        return mlp_head_cnn()

    @pytest.fixture
    def embed_cnn():
        return embedding_cnn()

    @pytest.fixture
    def resnet():
        return tiny_resnet()
