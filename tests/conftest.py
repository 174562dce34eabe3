"""Shared test configuration: Hypothesis profile, small real models, and backend kits.

Every model here is deterministic (weights drawn under ``torch.manual_seed``), tiny (a
few channels, images of 8x8 to 16x16) and built from named children, so layers are
addressable by the explainers' ``layer=`` ("conv1", "relu2", "block1.out", ...). Test
modules import the factories (``from conftest import tiny_cnn, images``) to build models
inside Hypothesis tests, or use the fixtures at the end.
torch is optional: without it the model factories are simply not defined, and the test
modules that need them skip themselves with ``pytest.importorskip("torch")``.

Backend-dependent tests take the session fixture ``kit`` (parametrized over "torch" and
"tensorflow"; a framework that is not installed is skipped with the reason). The torch
models above are the references: ``kit.model(net)`` is ``net`` itself on torch and its
Keras twin (same architecture, same weights, NHWC) on TensorFlow, ``kit.x(X)`` puts NCHW
images in the backend's layout and ``kit.layer("block1.out")`` spells a layer path the
backend's way. Maps and heatmaps come out (n, k, h, w) from every backend, so the
expected values computed from the torch model hold for both.
"""

from __future__ import annotations

import importlib
import importlib.util
import os
import sys
from collections import OrderedDict
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, settings

# The tests live in folders that mirror the package's; a test module may import helpers
# from one in another folder (``from test_evaluate_cli import wsol_dir``), whichever folder
# pytest was pointed at.
for _folder in sorted(p for p in Path(__file__).parent.iterdir() if p.is_dir()):
    if _folder.name not in {"__pycache__"} and str(_folder) not in sys.path:
        sys.path.append(str(_folder))

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

    def dead_start_cnn(X: np.ndarray, *, revivable: bool = True, seed: int = 0) -> nn.Sequential:
        """A head that a uniform unit-norm filter switches off: L2-CAF's dead start.

        conv1-ReLU (the layer "relu1", h x w cells), then the head: a 1x1 conv with
        non-negative weights, a batch norm whose bias is calibrated on ``X``, ReLU, GAP,
        linear. The uniform filter scales every feature by ``1 / sqrt(h w)``; the bias puts
        every pre-ReLU unit below zero then, so the head's output is constant and the
        loss has no gradient at ``init="ones"``. With ``revivable`` a one-cell filter (full
        strength at one cell) switches some units on again; without, the bias keeps every
        unit off for every unit-norm filter (no filter has a gradient anywhere).
        """
        torch.manual_seed(seed)
        net = nn.Sequential(
            OrderedDict(
                conv1=nn.Conv2d(3, 4, 3, padding=1),
                relu1=nn.ReLU(),
                conv2=nn.Conv2d(4, 6, 1),
                bn=nn.BatchNorm2d(6),
                relu2=nn.ReLU(),
                pool=nn.AdaptiveAvgPool2d(1),
                flatten=nn.Flatten(),
                fc=nn.Linear(6, 5),
            )
        ).eval()
        with torch.no_grad():
            net.conv2.weight.abs_()
            net.conv2.bias.zero_()
            net.bn.running_mean.zero_()
            net.bn.running_var.fill_(1 - net.bn.eps)  # the batch norm is bias + identity
            a = net.conv2(net.relu1(net.conv1(torch.as_tensor(X))))  # (n, 6, h, w), >= 0
            cells = a.shape[2] * a.shape[3]
            peak = a.amax(dim=(0, 2, 3))
            # Uniform filter: every unit <= peak / sqrt(cells) < the threshold. A one-cell
            # filter reaches the peak itself, above it (when revivable); no filter on 2^k cells
            # puts a unit exactly at the threshold.
            threshold = 2.5 * peak / np.sqrt(cells) if revivable else 2 * peak
            net.bn.bias.copy_(-threshold)
        return net

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


# -- Backend kits: the same tests on every installed backend ----------------------------------
BACKENDS = ["torch", "tensorflow"]


def import_tensorflow():
    """TensorFlow and Keras 3 (after torch: the reverse order crashes in one process)."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "0")
    tf = pytest.importorskip("tensorflow")
    keras = pytest.importorskip("keras")
    if not keras.__version__.startswith("3"):
        pytest.skip(
            f"the TensorFlow backend needs Keras 3; keras {keras.__version__} is installed"
        )
    try:  # tiny models: intra-op threads only contend with pytest-xdist's workers
        tf.config.threading.set_intra_op_parallelism_threads(1)
    except RuntimeError:  # TensorFlow already ran something in this process
        pass
    return tf, keras


_TORCHVISION_OPS: list = []


def import_torchvision():
    """torchvision, or a skip where it is not installed.

    A torchvision wheel built for another torch (PyPI's CUDA build beside a CPU torch)
    fails at import on the two operators its C extension would register; its model
    definitions are pure Python and need neither, so the operators' schemas are defined
    first (without kernels: nothing here calls them).
    """
    pytest.importorskip("torch")
    try:
        import torchvision
    except RuntimeError as exc:
        if "torchvision::nms" not in str(exc):
            raise
        import torch

        for name in [m for m in sys.modules if m.split(".")[0] == "torchvision"]:
            del sys.modules[name]
        lib = torch.library.Library("torchvision", "DEF")
        lib.define("nms(Tensor dets, Tensor scores, float iou_threshold) -> Tensor")
        lib.define("qnms(Tensor qdets, Tensor scores, float iou_threshold) -> Tensor")
        _TORCHVISION_OPS.append(lib)  # a library object unregisters its ops when freed
        import torchvision
    except ImportError:
        pytest.skip("torchvision is not installed")
    return torchvision


def with_random_head(vit):
    """A torchvision ViT with its classifier re-drawn: torchvision zero-initializes it, and
    every map of such a model is zero (Grad-CAM) or dead (L2-CAF), agreeing with anything."""
    import torch

    torch.manual_seed(1)
    torch.nn.init.normal_(vit.heads.head.weight, std=0.5)
    return vit


def tiny_vit():
    """torchvision's VisionTransformer at 32 x 32 px: a 4 x 4 grid of patches after a class
    token, two blocks of width 16, five classes; seeded, eval mode."""
    import torch

    import_torchvision()
    from torchvision.models.vision_transformer import VisionTransformer

    torch.manual_seed(0)
    vit = VisionTransformer(
        image_size=32,
        patch_size=8,
        num_layers=2,
        num_heads=2,
        hidden_dim=16,
        mlp_dim=32,
        num_classes=5,
    )
    return with_random_head(vit).eval()


def keras_twin(net):
    """A Keras 3 copy of a torch model of this file: same layer names, same weights, NHWC.

    nn.Sequential becomes a Functional model (nested Sequentials: nested Functional models
    of the same name); TinyResNet's blocks become nested Functional models, so
    ``"block1.conv2"`` is ``"block1/conv2"`` there.
    """
    _, keras = import_tensorflow()
    L = keras.layers
    channels = _in_channels(net)

    def conv(m, name):
        layer = L.Conv2D(m.out_channels, m.kernel_size, padding="same", name=name)
        layer.build((None, None, None, m.in_channels))
        w = m.weight.detach().numpy().transpose(2, 3, 1, 0)  # (out,in,kh,kw) -> (kh,kw,in,out)
        layer.set_weights([w, m.bias.detach().numpy()])
        return layer

    def dense(m, name):
        layer = L.Dense(m.out_features, use_bias=m.bias is not None, name=name)
        layer.build((None, m.in_features))
        weights = [m.weight.detach().numpy().T]
        if m.bias is not None:
            weights.append(m.bias.detach().numpy())
        layer.set_weights(weights)
        return layer

    def apply(m, name, h):
        if isinstance(m, nn.Conv2d):
            return conv(m, name)(h)
        if isinstance(m, nn.Linear):
            return dense(m, name)(h)
        if isinstance(m, nn.ReLU):
            return L.ReLU(name=name)(h)
        if isinstance(m, nn.BatchNorm2d):  # inference: the running statistics
            layer = L.BatchNormalization(epsilon=m.eps, name=name)
            layer.build((None, None, None, m.num_features))
            layer.set_weights(
                [t.detach().numpy() for t in (m.weight, m.bias, m.running_mean, m.running_var)]
            )
            return layer(h)
        if isinstance(m, nn.AdaptiveAvgPool2d):
            return L.GlobalAveragePooling2D(name=name)(h)
        if isinstance(m, nn.AvgPool2d):
            return L.AveragePooling2D(m.kernel_size, name=name)(h)
        if isinstance(m, (nn.Flatten, nn.Identity)):  # GAP already gives (n, C)
            return L.Identity(name=name)(h)
        if isinstance(m, (nn.Sequential, ResidualBlock)):
            return sub_model(m, name, h.shape[-1])(h)
        if isinstance(m, TinyResNet):
            return sub_model(m, name, h.shape[-1])(h)
        raise TypeError(f"no Keras twin for {type(m).__name__}")

    def body(m, h):
        if isinstance(m, nn.Sequential):
            for name, child in m.named_children():
                h = apply(child, name, h)
            return h
        if isinstance(m, ResidualBlock):
            y = apply(m.conv2, "conv2", apply(m.relu, "relu", apply(m.conv1, "conv1", h)))
            return apply(m.out, "out", L.Add(name="add")([y, h]))
        if isinstance(m, TinyResNet):
            h = apply(m.block2, "block2", apply(m.block1, "block1", apply(m.stem, "stem", h)))
            return apply(m.fc, "fc", apply(m.pool, "pool", h))
        raise TypeError(f"no Keras twin for {type(m).__name__}")

    def sub_model(m, name, c):
        x = keras.Input((None, None, c))
        return keras.Model(x, body(m, x), name=name)

    x = keras.Input((None, None, channels), name="images")
    return keras.Model(x, body(net, x), name="net")


def _in_channels(net):
    for m in net.modules():
        if isinstance(m, nn.Conv2d):
            return m.in_channels
        if isinstance(m, nn.Linear):
            return m.in_features  # linear_head: pre-extracted features (n, C, h, w)
    raise TypeError("no input layer")


class Kit:
    """One backend's view of the shared torch test models (see the module docstring)."""

    def __init__(self, name):
        self.name = name
        self._twins = {}
        if name == "tensorflow":
            self.tf, self.keras = import_tensorflow()
            importlib.import_module("sklearn_caf_tensorflow")

    def __repr__(self):
        return self.name

    def model(self, net):
        if self.name == "torch":
            return net
        if id(net) not in self._twins:  # the net is kept alive with its twin
            self._twins[id(net)] = (net, keras_twin(net))
        return self._twins[id(net)][1]

    def x(self, X):
        return X if self.name == "torch" else np.ascontiguousarray(X.transpose(0, 2, 3, 1))

    def shape(self, chw):
        """A per-image (C, H, W) shape in the backend's layout."""
        return tuple(chw) if self.name == "torch" else (*chw[1:], chw[0])

    def layer(self, path):
        return path if path is None or self.name == "torch" else path.replace(".", "/")


@pytest.fixture(scope="session", params=BACKENDS)
def kit(request):
    if torch is None:
        pytest.skip("the reference models are torch models; torch is not installed")
    if request.param == "tensorflow":
        import_tensorflow()
        if importlib.util.find_spec("sklearn_caf_tensorflow") is None:
            pytest.skip("sklearn-caf-tensorflow is not installed")
    return Kit(request.param)


class _Explainer:
    """An explainer that takes NCHW images and converts them to its backend's layout."""

    def __init__(self, explainer, kit):
        self.explainer, self.kit = explainer, kit

    def fit(self, X, *args, **kwargs):
        self.explainer.fit(self.kit.x(X), *args, **kwargs)
        return self

    def explain(self, X, *args, **kwargs):
        return self.explainer.explain(self.kit.x(X), *args, **kwargs)

    def transform(self, X, *args, **kwargs):
        return self.explainer.transform(self.kit.x(X), *args, **kwargs)

    def fit_transform(self, X, *args, **kwargs):
        return self.explainer.fit_transform(self.kit.x(X), *args, **kwargs)

    def set_params(self, **params):
        self.explainer.set_params(**params)
        return self

    def __getattr__(self, name):
        return getattr(self.explainer, name)


def make_explainer(kit, cls, **params):
    """``cls(**params)`` on ``kit``'s backend: the torch ``model`` (or its twin) and
    ``layer`` spelled the backend's way; it takes NCHW images like the torch model."""
    params["model"] = kit.model(params["model"])
    params["layer"] = kit.layer(params.get("layer"))
    return _Explainer(cls(**params), kit)
