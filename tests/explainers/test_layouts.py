"""Feature-map layouts: channels first, channels last and transformer tokens.

A layer's output is read with the channels on the right axis, or tokens as their patch grid,
on both backends and for both explainers; the maps equal those of a hand-written wrapper
that exposes the same feature map in the backend's native layout (Grad-CAM to 1e-5, L2-CAF
to a correlation of 0.99). Shapes that cannot be read are refused with the shape and the fix.
"""

from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")
from conftest import (  # noqa: E402
    import_tensorflow,
    import_torchvision,
    tiny_vit,
    with_random_head,
)
from torch import nn  # noqa: E402

from sklearn_caf import GradCAMExplainer, L2CAFExplainer  # noqa: E402
from sklearn_caf._explainers._layouts import resolve_layout  # noqa: E402

# The hand-written wrappers read intermediate shapes, so they split with hooks (exact).
pytestmark = pytest.mark.filterwarnings("ignore::sklearn.exceptions.EfficiencyWarning")


def detect(feature_shape, input_sizes, native=1, layout="auto", grid=None, prefix=None):
    return resolve_layout(
        layout,
        grid,
        prefix,
        feature_shape=feature_shape,
        input_sizes=input_sizes,
        native_channel_axis=native,
        layer="x",
    )


# -- detection from the shapes --------------------------------------------------------------
@pytest.mark.parametrize(
    ("shape", "sizes", "native", "expected"),
    [
        ((1, 2048, 7, 7), (224, 224), 1, "channels_first"),  # ResNet-50 layer4
        ((1, 7, 7, 768), (224, 224), 1, "channels_last"),  # Swin-T norm
        ((1, 56, 56, 96), (224, 224), 1, "channels_last"),  # a channels-last stage 1
        ((1, 28, 40, 192), (224, 320), 1, "channels_last"),  # non-square input
        ((1, 192, 28, 40), (224, 320), 1, "channels_first"),
        ((1, 7, 7, 2048), (224, 224), -1, "channels_last"),  # Keras
        ((1, 2048, 7, 7), (224, 224), -1, "channels_first"),  # a channels-first Keras layer
        ((1, 8, 8, 8), (8, 8), 1, "channels_first"),  # ambiguous: the framework's own
        ((1, 8, 8, 8), (8, 8), -1, "channels_last"),
        ((1, 16, 6, 6, 6), (12, 12, 12), 1, "channels_first"),  # volumes
        ((1, 6, 6, 6, 64), (12, 12, 12), 1, "channels_last"),
        ((1, 4, 50), (100,), 1, "channels_first"),  # 1-D signals
    ],
)
def test_the_channel_axis_is_read_off_the_strides(shape, sizes, native, expected):
    assert detect(shape, sizes, native).kind == expected


@pytest.mark.parametrize(
    ("n_tokens", "sizes", "prefix", "grid"),
    [
        (197, (224, 224), 1, (14, 14)),  # ViT-B/16: a class token
        (198, (224, 224), 2, (14, 14)),  # DeiT: class and distillation tokens
        (201, (224, 224), 5, (14, 14)),  # a class token and 4 registers
        (196, (224, 224), 0, (14, 14)),  # no prefix (mean-pooled heads)
        (50, (224, 224), 1, (7, 7)),  # ViT-B/32
        (1 + 14 * 20, (224, 320), 1, (14, 20)),  # non-square input
    ],
)
def test_tokens_are_read_as_their_patch_grid(n_tokens, sizes, prefix, grid):
    layout = detect((1, n_tokens, 768), sizes)
    assert (layout.kind, layout.prefix, layout.grid) == ("tokens", prefix, grid)
    assert detect((1, n_tokens, 768), sizes, native=-1).grid == grid


def test_explicit_layouts_and_their_errors():
    assert detect((1, 8, 8, 8), (8, 8), layout="nhwc").kind == "channels_last"
    assert detect((1, 8, 8, 8), (8, 8), native=-1, layout="nchw").kind == "channels_first"
    given = detect((1, 27, 8), (12, 12), grid=(5, 5))
    assert (given.prefix, given.grid) == (2, (5, 5))
    with pytest.raises(ValueError, match=r"outputs 1000 tokens.*no grid.*layout='tokens'"):
        detect((1, 1000, 64), (100, 100))  # no patch size fits: refused, never guessed
    with pytest.raises(ValueError, match=r"prefix_tokens=3"):
        detect((1, 27, 8), (12, 12), grid=(5, 5), prefix=3)
    with pytest.raises(ValueError, match=r"has 36 cells but .* only 27 tokens"):
        detect((1, 27, 8), (12, 12), grid=(6, 6))
    with pytest.raises(ValueError, match=r"need layout='tokens'"):
        detect((1, 8, 8, 8), (8, 8), layout="nhwc", grid=(8, 8))
    with pytest.raises(ValueError, match=r"needs a layer that outputs tokens"):
        detect((1, 8, 8, 8), (8, 8), layout="tokens")
    with pytest.raises(ValueError, match=r"grid must be two positive integers"):
        detect((1, 27, 8), (12, 12), grid=(5, 0))


# -- PyTorch: a channels-last map -------------------------------------------------------------
class ChannelsLast(nn.Module):
    """Conv, then everything after it channels last (LayerNorm over channels, as Swin)."""

    def __init__(self, wrapped: bool = False):
        super().__init__()
        torch.manual_seed(0)
        self.conv = nn.Conv2d(3, 6, 3, stride=2, padding=1)
        self.norm = nn.LayerNorm(6)
        self.fmap = nn.Identity()
        self.fc = nn.Linear(6, 4)
        self.wrapped = wrapped

    def forward(self, x):
        f = self.norm(self.conv(x).permute(0, 2, 3, 1))  # (n, h, w, 6)
        if self.wrapped:  # the hand-written wrapper: the same map, channels first
            f = self.fmap(f.permute(0, 3, 1, 2)).permute(0, 2, 3, 1)
        return self.fc(torch.relu(f).mean(dim=(1, 2)))


def assert_same_l2caf_maps(got, want):
    """|f| of each row agrees: correlation >= 0.99, or equal where both are constant."""
    for g, w in zip(np.abs(got), np.abs(want), strict=True):
        if np.ptp(g) < 1e-6 and np.ptp(w) < 1e-6:
            np.testing.assert_allclose(g, w, atol=1e-5)
        else:
            assert float(np.corrcoef(g.ravel(), w.ravel())[0, 1]) >= 0.99


@pytest.mark.parametrize(
    ("cls", "params"),
    [
        (GradCAMExplainer, {}),
        (L2CAFExplainer, {}),
        (L2CAFExplainer, {"objective": "class-specific"}),
        (L2CAFExplainer, {"solver": "adam", "max_iter": 300}),
    ],
)
def test_a_channels_last_map_equals_its_channels_first_wrapper(cls, params):
    images = np.random.default_rng(0).standard_normal((3, 3, 16, 12)).astype(np.float32)
    net, wrapper = ChannelsLast().eval(), ChannelsLast(wrapped=True).eval()
    wrapper.load_state_dict(net.state_dict())
    kwargs = {"random_state": 0, **params} if cls is L2CAFExplainer else {}
    ours = cls(model=net, layer="norm", **kwargs)
    reference = cls(model=wrapper, layer="fmap", **kwargs)
    got, want = ours.fit(images).explain(images), reference.fit(images).explain(images)
    assert ours.layout_ == "channels_last" and reference.layout_ == "channels_first"
    assert got.maps.shape == want.maps.shape == (3, 1, 8, 6)
    if cls is GradCAMExplainer:
        np.testing.assert_allclose(got.maps, want.maps, atol=1e-5)
    else:
        assert_same_l2caf_maps(got.maps, want.maps)
    np.testing.assert_allclose(got.heatmaps, want.heatmaps, atol=1e-4)


def test_the_layout_survives_pickling_and_cloning():
    import pickle

    from sklearn.base import clone

    images = np.random.default_rng(1).standard_normal((2, 3, 16, 12)).astype(np.float32)
    explainer = GradCAMExplainer(model=ChannelsLast().eval(), layer="norm").fit(images)
    restored = pickle.loads(pickle.dumps(explainer))
    assert restored.layout_ == "channels_last"
    np.testing.assert_allclose(restored.transform(images), explainer.transform(images))
    assert clone(explainer).fit(images).layout_ == "channels_last"


def test_an_explicit_layout_overrides_detection():
    # The user's word is taken: read channels first, the channels-last map gives maps over
    # its (w, channels) axes; layout_ says so.
    images = np.random.default_rng(2).standard_normal((1, 3, 16, 12)).astype(np.float32)
    explainer = GradCAMExplainer(model=ChannelsLast().eval(), layer="norm", layout="nchw")
    assert explainer.fit(images).explain(images).maps.shape == (1, 1, 6, 6)
    assert explainer.layout_ == "channels_first"


# -- PyTorch: Swin-T (channels last) ---------------------------------------------------------
class SwinAsChannelsFirst(nn.Module):
    """torchvision's Swin-T with its last feature map exposed channels first at ``fmap``."""

    def __init__(self, swin):
        super().__init__()
        self.swin, self.fmap = swin, nn.Identity()

    def forward(self, x):
        s = self.swin
        f = self.fmap(s.norm(s.features(x)).permute(0, 3, 1, 2))
        return s.head(s.flatten(s.avgpool(f)))


@pytest.fixture(scope="module")
def swin():
    torchvision = import_torchvision()
    torch.manual_seed(0)
    return torchvision.models.swin_t().eval()


def test_swin_t_gives_maps_of_its_grid(swin):
    images = np.random.default_rng(3).standard_normal((2, 3, 224, 224)).astype(np.float32)
    wrapper = SwinAsChannelsFirst(swin).eval()
    for cls in (GradCAMExplainer, L2CAFExplainer):
        ours = cls(model=swin, layer="norm").fit(images)
        reference = cls(model=wrapper, layer="fmap").fit(images)
        got, want = ours.explain(images), reference.explain(images)
        assert ours.layout_ == "channels_last"
        assert got.maps.shape == (2, 1, 7, 7)
        if cls is GradCAMExplainer:
            np.testing.assert_allclose(got.maps, want.maps, atol=1e-5)
        else:
            assert_same_l2caf_maps(got.maps, want.maps)


# -- PyTorch: vision transformers (tokens) ---------------------------------------------------
def vit_last_block_wrapper(vit, grid):
    """A ViT whose last block's ``ln_1`` output is exposed at ``fmap`` as an NCHW grid (the
    class token dropped for the map and put back for the attention): the hand-written
    reshape wrapper users write for other libraries."""

    class Wrapped(nn.Module):
        def __init__(self):
            super().__init__()
            self.vit, self.fmap = vit, nn.Identity()

        def forward(self, x):
            v = self.vit
            x = v._process_input(x)
            n = x.shape[0]
            x = torch.cat([v.class_token.expand(n, -1, -1), x], dim=1)
            encoder = v.encoder
            x = encoder.dropout(x + encoder.pos_embedding)
            for block in encoder.layers[:-1]:
                x = block(x)
            last = encoder.layers[-1]
            y = last.ln_1(x)
            cls_token, patches = y[:, :1], y[:, 1:]
            g = patches.reshape(n, *grid, -1).permute(0, 3, 1, 2)
            g = self.fmap(g).permute(0, 2, 3, 1).reshape(n, grid[0] * grid[1], -1)
            y = torch.cat([cls_token, g], dim=1)
            y, _ = last.self_attention(y, y, y, need_weights=False)
            x = x + last.dropout(y)
            x = x + last.mlp(last.ln_2(x))
            return v.heads(encoder.ln(x)[:, 0])

    return Wrapped().eval()


@pytest.mark.parametrize(
    ("cls", "params"),
    [
        (GradCAMExplainer, {}),
        (L2CAFExplainer, {}),
        (L2CAFExplainer, {"objective": "class-specific"}),
        (L2CAFExplainer, {"solver": "adam"}),
    ],
)
def test_a_vision_transformer_is_explained_on_its_patch_grid(cls, params):
    vit = tiny_vit()
    images = np.random.default_rng(4).standard_normal((3, 3, 32, 32)).astype(np.float32)
    layer = "encoder.layers.encoder_layer_1.ln_1"
    kwargs = {"random_state": 0, **params} if cls is L2CAFExplainer else {}
    ours = cls(model=vit, layer=layer, **kwargs).fit(images)
    reference = cls(model=vit_last_block_wrapper(vit, (4, 4)), layer="fmap", **kwargs)
    got, want = ours.explain(images), reference.fit(images).explain(images)
    assert (ours.layout_, ours.grid_, ours.prefix_tokens_) == ("tokens", (4, 4), 1)
    assert got.maps.shape == want.maps.shape == (3, 1, 4, 4)
    if cls is GradCAMExplainer:
        np.testing.assert_allclose(got.maps, want.maps, atol=1e-5)
    else:
        assert_same_l2caf_maps(got.maps, want.maps)
    assert got.heatmaps.shape == (3, 1, 32, 32)


def test_vit_b_16_gradcam_on_its_14_by_14_grid():
    torchvision = import_torchvision()
    torch.manual_seed(0)
    vit = with_random_head(torchvision.models.vit_b_16()).eval()
    images = np.random.default_rng(5).standard_normal((1, 3, 224, 224)).astype(np.float32)
    layer = "encoder.layers.encoder_layer_11.ln_1"
    ours = GradCAMExplainer(model=vit, layer=layer).fit(images)
    reference = GradCAMExplainer(model=vit_last_block_wrapper(vit, (14, 14)), layer="fmap")
    got, want = ours.explain(images), reference.fit(images).explain(images)
    assert (ours.layout_, ours.grid_, ours.prefix_tokens_) == ("tokens", (14, 14), 1)
    np.testing.assert_allclose(got.maps, want.maps, atol=1e-5)


class DeiTStyle(nn.Module):
    """Class and distillation tokens before the patch tokens; the two heads averaged."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.patch = nn.Conv2d(3, 16, 8, stride=8)
        self.prefix = nn.Parameter(torch.randn(1, 2, 16) * 0.1)
        self.pos = nn.Parameter(torch.randn(1, 2 + 16, 16) * 0.1)
        self.block = nn.TransformerEncoderLayer(16, 2, 32, dropout=0.0, batch_first=True)
        self.norm = nn.LayerNorm(16)
        self.last = nn.TransformerEncoderLayer(16, 2, 32, dropout=0.0, batch_first=True)
        self.head, self.head_dist = nn.Linear(16, 5), nn.Linear(16, 5)

    def tokens(self, x):
        p = self.patch(x).flatten(2).transpose(1, 2)
        return self.block(torch.cat([self.prefix.expand(x.shape[0], -1, -1), p], 1) + self.pos)

    def forward(self, x):
        t = self.last(self.norm(self.tokens(x)))
        return (self.head(t[:, 0]) + self.head_dist(t[:, 1])) / 2


class DeiTWrapped(DeiTStyle):
    def __init__(self):
        super().__init__()
        self.fmap = nn.Identity()

    def forward(self, x):
        t = self.norm(self.tokens(x))
        g = self.fmap(t[:, 2:].reshape(x.shape[0], 4, 4, 16).permute(0, 3, 1, 2))
        t = torch.cat([t[:, :2], g.permute(0, 2, 3, 1).reshape(x.shape[0], 16, 16)], 1)
        t = self.last(t)
        return (self.head(t[:, 0]) + self.head_dist(t[:, 1])) / 2


@pytest.mark.parametrize("cls", [GradCAMExplainer, L2CAFExplainer])
def test_deit_style_two_prefix_tokens(cls):
    net, wrapper = DeiTStyle().eval(), DeiTWrapped().eval()
    wrapper.load_state_dict(net.state_dict())
    images = np.random.default_rng(6).standard_normal((2, 3, 32, 32)).astype(np.float32)
    kwargs = {"random_state": 0} if cls is L2CAFExplainer else {}
    ours = cls(model=net, layer="norm", **kwargs).fit(images)
    got = ours.explain(images)
    want = cls(model=wrapper, layer="fmap", **kwargs).fit(images).explain(images)
    assert (ours.grid_, ours.prefix_tokens_) == ((4, 4), 2)
    if cls is GradCAMExplainer:
        np.testing.assert_allclose(got.maps, want.maps, atol=1e-5)
    else:
        assert_same_l2caf_maps(got.maps, want.maps)


def test_the_user_is_untouched_and_errors_name_the_fix():
    vit = tiny_vit()
    images = np.random.default_rng(7).standard_normal((1, 3, 32, 32)).astype(np.float32)
    layer = "encoder.layers.encoder_layer_1.ln_1"
    with pytest.raises(ValueError, match=r"outputs 17 tokens.*prefix_tokens=3"):
        GradCAMExplainer(model=vit, layer=layer, grid=(4, 4), prefix_tokens=3).fit(images)
    with pytest.raises(ValueError, match=r"no grid of patches.*layout='tokens'"):
        GradCAMExplainer(model=vit, layer=layer, prefix_tokens=2).fit(images)
    maps = GradCAMExplainer(model=vit, layer=layer, grid=(4, 4)).fit(images).transform(images)
    assert maps.shape == (1, 32, 32)
    assert not vit.training and all(p.requires_grad for p in vit.parameters())


# -- Keras: ViT-style token layers -----------------------------------------------------------
def keras_vit(grid_layer: bool):
    tf, keras = import_tensorflow()
    L = keras.layers

    class ClassToken(L.Layer):
        def build(self, input_shape):
            self.token = self.add_weight(
                shape=(1, 1, input_shape[-1]), initializer="random_normal"
            )

        def call(self, x):
            return tf.concat([tf.repeat(self.token, tf.shape(x)[0], axis=0), x], axis=1)

    keras.utils.set_random_seed(0)
    inputs = keras.Input((32, 32, 3))
    x = L.Conv2D(16, 8, strides=8, name="patch")(inputs)
    x = L.Reshape((16, 16))(x)
    x = ClassToken(name="cls")(x)
    x = L.LayerNormalization(name="tokens")(x)
    if grid_layer:  # the hand-written wrapper: the patch tokens as a grid at "grid"
        cls_token = L.Lambda(lambda t: t[:, :1])(x)
        g = L.Reshape((4, 4, 16), name="grid")(L.Lambda(lambda t: t[:, 1:])(x))
        x = L.Concatenate(axis=1)([cls_token, L.Reshape((16, 16))(g)])
    x = L.MultiHeadAttention(2, 8, name="attention")(x, x)
    x = L.Lambda(lambda t: t[:, 0])(x)
    return keras.Model(inputs, L.Dense(5, name="head")(x))


@pytest.mark.parametrize("cls", [GradCAMExplainer, L2CAFExplainer])
def test_keras_token_layers_match_their_grid_wrapper(cls):
    net, wrapper = keras_vit(False), keras_vit(True)
    wrapper.set_weights(net.get_weights())
    images = np.random.default_rng(8).standard_normal((2, 32, 32, 3)).astype(np.float32)
    kwargs = {"random_state": 0} if cls is L2CAFExplainer else {}
    ours = cls(model=net, layer="tokens", **kwargs).fit(images)
    got = ours.explain(images)
    want = cls(model=wrapper, layer="grid", **kwargs).fit(images).explain(images)
    assert (ours.layout_, ours.grid_, ours.prefix_tokens_) == ("tokens", (4, 4), 1)
    assert got.maps.shape == want.maps.shape == (2, 1, 4, 4)
    if cls is GradCAMExplainer:
        np.testing.assert_allclose(got.maps, want.maps, atol=1e-5)
    else:
        assert_same_l2caf_maps(got.maps, want.maps)
