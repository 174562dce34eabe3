"""Per-frame explanations of clip models (``frame_axis``; the L2-CAF paper, Sec. 4.3).

A clip model runs its per-frame CNN on the n*T frames at once (torch: ``x.flatten(0, 1)``,
Keras: ``TimeDistributed``) and fuses the frames. L2-CAF gives one filter per frame: the
filter multiplies that frame's feature maps, the other frames pass unfiltered. The
answers are checked against a linear fusion solved in closed form here, and against a
one-frame-at-a-time reference loop on a real LSTM model; Grad-CAM against Captum.
"""

import warnings
from collections import OrderedDict

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

torch = pytest.importorskip("torch")
from sklearn.exceptions import ConvergenceWarning  # noqa: E402
from sklearn.utils._param_validation import InvalidParameterError  # noqa: E402
from torch import nn  # noqa: E402

from sklearn_caf import GradCAMExplainer, L2CAFExplainer  # noqa: E402

T, H = 3, 4  # frames per clip, frame size (4x4 feature maps: 16 filter cells)


def clips(n=2, t=T, size=H, seed=0):
    return np.random.default_rng(seed).uniform(0, 1, size=(n, t, 3, size, size)).astype(np.float32)


def per_frame_cnn(channels, last_relu=True):
    layers = OrderedDict(
        conv1=nn.Conv2d(3, 4, 3, padding=1),
        relu1=nn.ReLU(),
        conv2=nn.Conv2d(4, channels, 3, padding=1),
    )
    if last_relu:
        layers["relu2"] = nn.ReLU()
    return nn.Sequential(layers)


class LinearFusion(nn.Module):
    """Per-frame CNN -> global average pool -> one linear layer over all frames' features:
    each frame's L2-CAF problem is affine in its filter. Explained at "cnn.conv2", whose
    feature maps (24 channels, no ReLU) have full rank on the 16 cells, as the 20 outputs'
    weights: a unique optimum per frame."""

    def __init__(self, t=T, channels=24, dim=20, seed=0):
        super().__init__()
        torch.manual_seed(seed)
        self.cnn = per_frame_cnn(channels, last_relu=False)
        self.fuse = nn.Linear(t * channels, dim)

    def forward(self, x):
        n, t = x.shape[:2]
        a = self.cnn(x.flatten(0, 1))
        return self.fuse(a.mean(dim=(2, 3)).reshape(n, t * a.shape[1]))


class LSTMClip(nn.Module):
    """Per-frame CNN -> global average pool -> LSTM over the frames -> logits."""

    def __init__(self, channels=6, hidden=5, n_classes=3, seed=0):
        super().__init__()
        torch.manual_seed(seed)
        self.cnn = per_frame_cnn(channels)
        self.lstm = nn.LSTM(channels, hidden, batch_first=True)
        self.fc = nn.Linear(hidden, n_classes)

    def head(self, a, n):
        """From the layer's feature maps (n*T rows) to the logits: the reference's head."""
        h, _ = self.lstm(a.mean(dim=(2, 3)).view(n, -1, a.shape[1]))
        return self.fc(h[:, -1])

    def forward(self, x):
        return self.head(self.cnn(x.flatten(0, 1)), x.shape[0])


class FrameLoop(LSTMClip):
    """The same model with its CNN called once per frame in a Python loop: not supported."""

    def forward(self, x):
        feats = [self.cnn(x[:, t]) for t in range(x.shape[1])]
        return self.head(torch.stack(feats, 1).flatten(0, 1), x.shape[0])


class FrameMajor(LSTMClip):
    """Frames flattened time-major (row t * n + i): the rows are not clip by clip."""

    def forward(self, x):
        n, t = x.shape[:2]
        a = self.cnn(x.transpose(0, 1).flatten(0, 1))
        a = a.view(t, n, *a.shape[1:]).transpose(0, 1).flatten(0, 1)
        return self.head(a, n)


class ChannelsFirstClip(LSTMClip):
    """Takes clips as (n, C, T, H, W), as 3-D convolutions do: ``frame_axis=2``."""

    def forward(self, x):
        return super().forward(x.transpose(1, 2))


def features(model, X):
    with torch.no_grad():
        return model.cnn(torch.as_tensor(X).flatten(0, 1)).numpy().astype(np.float64)


# -- Closed form: linear fusion ----------------------------------------------------------------


def closed_form(model, X, objective, targets=None):
    """Each frame's optimum by hand. With frame t's filter f, the logits are
    ``z(f) = M_t f + c`` with ``M_t = W_t A_t / hw`` (W_t: the fusion's columns of frame t,
    A_t: its feature maps, channels x cells) and ``z(1) = z0``:
    class-oblivious minimizes ``||M_t (f - 1)||^2`` on the unit sphere (a trust-region
    problem: ``f = (Q - mu I)^-1 g`` with ``Q = M^T M``, ``g = Q 1``, ``mu < lambda_min``
    and ``||f|| = 1``, solved for mu by bisection in the eigenbasis), class-specific
    minimizes ``w^T M_t f`` with ``w = 1 - 2 e_c``: ``f = -M^T w / ||M^T w||``."""
    n, t = X.shape[:2]
    a = features(model, X).reshape(n, t, -1, H * H)
    w = model.fuse.weight.detach().numpy().astype(np.float64).reshape(-1, t, a.shape[2])
    out = np.empty((n, t, H * H))
    for i in range(n):
        for s in range(t):
            m = w[:, s] @ a[i, s] / (H * H)
            if objective == "class-specific":
                g = m.T @ (1 - 2 * np.eye(m.shape[0])[targets[i]])
                out[i, s] = -g / np.linalg.norm(g)
                continue
            q = m.T @ m
            lam, vec = np.linalg.eigh(q)
            gv = vec.T @ (q @ np.ones(H * H))
            assert lam[0] > 1e-9 * lam[-1]  # positive definite: a unique optimum

            def norm(mu, lam=lam, gv=gv):
                return np.linalg.norm(gv / (lam - mu))

            lo, hi = lam[0] - np.linalg.norm(gv) - 1.0, lam[0] - 1e-15 * lam[-1]
            if norm(hi) <= 1:  # the unconstrained optimum 1 is outside: never for ||1|| = 4
                raise AssertionError("interior solution")
            for _ in range(200):
                mid = 0.5 * (lo + hi)
                lo, hi = (mid, hi) if norm(mid) < 1 else (lo, mid)
            out[i, s] = vec @ (gv / (lam - 0.5 * (lo + hi)))
    return out.reshape(n, t, H, H)


@pytest.mark.parametrize("objective", ["class-oblivious", "class-specific"])
@pytest.mark.parametrize("solver", ["exact", "adam"])
def test_linear_fusion_matches_the_closed_form(objective, solver):
    model = LinearFusion().eval()
    X = clips(2)
    targets = np.array([4, 11]) if objective == "class-specific" else None
    expected = closed_form(model, X, objective, targets)
    ex = L2CAFExplainer(
        model=model,
        layer="cnn.conv2",
        frame_axis=1,
        objective=objective,
        solver=solver,
        max_iter=2000,
        tol=1e-9,
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        e = ex.fit(X).explain(X, targets)
    assert ex.solver_ == solver
    assert e.maps.shape == (2, 1, T, H, H)
    assert e.solvers.shape == e.n_iter.shape == (2, 1, T)
    assert (e.solvers == solver).all()
    atol = 1e-5 if solver == "exact" else 2e-3
    np.testing.assert_allclose(e.maps[:, 0], expected, atol=atol)
    if solver == "exact":
        assert (e.n_iter == 0).all()


def test_auto_picks_exact_for_linear_fusion_but_not_for_an_lstm():
    X = clips(1)
    assert (
        L2CAFExplainer(model=LinearFusion().eval(), layer="cnn.conv2", frame_axis=1).fit(X).solver_
        == "exact"
    )
    # Filtering one frame moves an LSTM clip's output by little: a head that is nearly,
    # not exactly, affine must not be solved in closed form.
    lstm = L2CAFExplainer(model=LSTMClip().eval(), layer="cnn.relu2", frame_axis=1).fit(X)
    assert lstm.solver_ == "adam-lbfgs"
    with pytest.raises(ValueError, match="affine"):
        L2CAFExplainer(
            model=LSTMClip().eval(), layer="cnn.relu2", frame_axis=1, solver="exact"
        ).fit(X)


# -- A real LSTM: the one-frame-at-a-time reference loop ---------------------------------------

N_ITER, LR, FINAL = 60, 0.5, 1e-3


def reference_loop(model, X, objective, targets=None):
    """For every clip and every frame, on its own: the frame's feature maps multiplied by
    f / ||f||, the other frames unfiltered, the head by hand, torch.optim.Adam with the
    authors' linear decay; the filter starts at ones."""
    n, t = X.shape[:2]
    with torch.no_grad():
        a = model.cnn(torch.as_tensor(X).flatten(0, 1)).view(n, t, -1, H, H)
        z0 = model(torch.as_tensor(X))
    out = np.empty((n, t, H, H))
    for i in range(n):
        for s in range(t):
            f = nn.Parameter(torch.ones(H, H))
            opt = torch.optim.Adam([f], lr=LR)
            sched = torch.optim.lr_scheduler.LambdaLR(
                opt, lambda k: (LR + (FINAL - LR) * k / (N_ITER - 1)) / LR
            )
            for _ in range(N_ITER):
                scale = [torch.ones(H, H)] * t
                scale[s] = f / f.norm()
                z = model.head((a[i] * torch.stack(scale)[:, None]), 1)[0]
                if objective == "class-oblivious":
                    loss = ((z - z0[i]) ** 2).mean()
                else:
                    c = int(targets[i])
                    loss = z.sum() - 2 * z[c]
                opt.zero_grad()
                loss.backward()
                opt.step()
                sched.step()
            out[i, s] = (f / f.norm()).detach().numpy()
    return out


def lstm_explainer(model, objective, **params):
    return L2CAFExplainer(
        model=model,
        layer="cnn.relu2",
        frame_axis=1,
        objective=objective,
        solver="adam",
        max_iter=N_ITER,
        tol=0,
        learning_rate=LR,
        final_learning_rate=FINAL,
        **params,
    )


@pytest.mark.parametrize("objective", ["class-oblivious", "class-specific"])
@pytest.mark.parametrize("variant", ["fast", "vanilla"])
def test_lstm_maps_equal_a_one_frame_at_a_time_loop(objective, variant):
    model = LSTMClip().eval()
    X = clips(2, seed=1)
    targets = np.array([2, 0]) if objective == "class-specific" else None
    expected = reference_loop(model, X, objective, targets)
    ex = lstm_explainer(model, objective, variant=variant)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        e = ex.fit(X).explain(X, targets)
    assert e.maps.shape == (2, 1, T, H, H) and e.n_iter.shape == (2, 1, T)
    np.testing.assert_allclose(e.maps[:, 0], expected, atol=2e-4)
    # The filters differ from frame to frame: each frame had its own problem.
    assert np.abs(e.maps[0, 0, 0] - e.maps[0, 0, 1]).max() > 1e-2


def test_top_k_maps_are_per_clip_targets_and_per_frame():
    model = LSTMClip().eval()
    X = clips(2, seed=2)
    ex = lstm_explainer(model, "class-specific", top_k=2)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        e = ex.fit(X).explain(X)
        single = ex.explain(X, e.targets[:, 1])
        assert ex.transform(X).shape == (2, 2, T, H, H)
    assert e.maps.shape == (2, 2, T, H, H) and e.heatmaps.shape == (2, 2, T, H, H)
    np.testing.assert_allclose(e.maps[:, 1], single.maps[:, 0], atol=1e-5)


# -- Grad-CAM per frame ------------------------------------------------------------------------


def test_gradcam_per_frame_matches_captum():
    captum_attr = pytest.importorskip("captum.attr")
    model = LSTMClip().eval()
    X = clips(3, seed=3)
    ex = GradCAMExplainer(model=model, layer="cnn.relu2", frame_axis=1, top_k=2).fit(X)
    e = ex.explain(X)
    assert e.maps.shape == (3, 2, T, H, H)
    cam = captum_attr.LayerGradCam(model, model.cnn.relu2)
    for j in range(2):
        target = torch.as_tensor(e.targets[:, j])
        # Captum's gradient of each clip's logit wrt the layer's n*T rows, pooled per row.
        ref = cam.attribute(torch.as_tensor(X), target=target, relu_attributions=True)
        np.testing.assert_allclose(
            e.maps[:, j], ref.detach().numpy().reshape(3, T, H, H), rtol=1e-4, atol=1e-6
        )
    assert ex.transform(X).shape == (3, 2, T, H, H)


def test_gradcam_per_frame_by_hand():
    """alpha_t = the spatial mean of d z_c / d A_t for frame t, map_t = relu(sum alpha A_t)."""
    model = LSTMClip().eval()
    X = clips(2, seed=4)
    e = GradCAMExplainer(model=model, layer="cnn.relu2", frame_axis=1).fit(X).explain(X)
    a = torch.as_tensor(features(model, X).astype(np.float32)).requires_grad_(True)
    z = model.head(a, 2)
    z[torch.arange(2), torch.as_tensor(e.targets[:, 0])].sum().backward()
    alpha = a.grad.mean(dim=(2, 3), keepdim=True)
    ref = torch.relu((alpha * a).sum(1)).detach().numpy().reshape(2, T, H, H)
    np.testing.assert_allclose(e.maps[:, 0], ref, rtol=1e-4, atol=1e-6)


# -- Shapes, validation and errors -------------------------------------------------------------


def test_shapes_and_the_model_is_unchanged():
    model = LSTMClip()  # left in training mode on purpose
    model.fc.weight.requires_grad_(False)
    state = {k: v.clone() for k, v in model.state_dict().items()}
    X = clips(3, seed=5)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        for ex in (
            L2CAFExplainer(model=model, layer="cnn.relu2", frame_axis=1, max_iter=20),
            GradCAMExplainer(model=model, layer="cnn.relu2", frame_axis=1),
        ):
            heat = ex.fit(X).transform(X)
            assert heat.shape == (3, T, H, H) and heat.dtype == np.float32
            assert heat.min() >= 0 and heat.max() <= 1
            assert ex.n_frames_ == T and ex.layer_shape_ == (6, H, H)
            e = ex.explain(X[:1])
            assert e.maps.shape == (1, 1, T, H, H)
            assert e.outputs.shape == (1, 3)
    assert model.training and not model.fc.weight.requires_grad
    assert model.cnn.conv1.weight.requires_grad
    for k, v in model.state_dict().items():
        assert torch.equal(v, state[k]), k
    assert not any(m._forward_hooks or m._forward_pre_hooks for m in model.modules())


def test_heatmaps_upsample_to_the_frame_size():
    model = LSTMClip().eval()
    X = np.random.default_rng(6).uniform(size=(2, T, 3, 8, 8)).astype(np.float32)
    # A strided CNN: 8x8 frames -> 4x4 maps -> 8x8 heatmaps.
    model.cnn.conv1.stride = (2, 2)
    ex = GradCAMExplainer(model=model, layer="cnn.relu2", frame_axis=1).fit(X)
    e = ex.explain(X)
    assert e.maps.shape == (2, 1, T, 4, 4) and e.heatmaps.shape == (2, 1, T, 8, 8)


def test_frame_axis_2_equals_frame_axis_1_on_moved_clips():
    X = clips(2, seed=7)
    first = GradCAMExplainer(model=LSTMClip().eval(), layer="cnn.relu2", frame_axis=1)
    second = GradCAMExplainer(model=ChannelsFirstClip().eval(), layer="cnn.relu2", frame_axis=2)
    Xt = np.ascontiguousarray(X.transpose(0, 2, 1, 3, 4))
    np.testing.assert_allclose(
        second.fit(Xt).transform(Xt), first.fit(X).transform(X), rtol=1e-5, atol=1e-6
    )


def test_frame_axis_validation():
    X = clips(1)
    model = LSTMClip().eval()
    with pytest.raises(InvalidParameterError, match="frame_axis"):
        GradCAMExplainer(model=model, layer="cnn.relu2", frame_axis=0).fit(X)
    with pytest.raises(ValueError, match="frame_axis=5"):
        GradCAMExplainer(model=model, layer="cnn.relu2", frame_axis=5).fit(X)
    with pytest.raises(ValueError, match="needs X of clips"):
        GradCAMExplainer(model=model, layer="cnn.relu2", frame_axis=1).fit(X[:, 0, 0])
    # Without frame_axis, the layer gives T rows per input: the error says what to pass.
    with pytest.raises(ValueError, match="frame_axis=1"):
        GradCAMExplainer(model=model, layer="cnn.relu2").fit(X)
    ex = GradCAMExplainer(model=model, layer="cnn.relu2", frame_axis=1).fit(X)
    with pytest.raises(ValueError, match="T=3 frames"):
        ex.transform(clips(1, t=4))


def test_a_python_loop_over_frames_is_refused_with_the_supported_forms():
    X = clips(1)
    for cls in (L2CAFExplainer, GradCAMExplainer):
        with pytest.raises(ValueError, match=r"runs 3 times.*flatten\(0, 1\)"):
            cls(model=FrameLoop().eval(), layer="cnn.relu2", frame_axis=1).fit(X)


def test_frames_flattened_time_major_are_refused():
    with pytest.raises(ValueError, match="clip by clip"):
        GradCAMExplainer(model=FrameMajor().eval(), layer="cnn.relu2", frame_axis=1).fit(clips(1))


@given(
    n=st.integers(1, 3),
    t=st.integers(1, 4),
    batch_size=st.integers(1, 3),
    seed=st.integers(0, 2**16),
)
def test_batches_and_frames_are_independent_problems(n, t, batch_size, seed):
    """A clip's per-frame maps do not depend on the other clips of its batch and are
    unit-norm filters; with one frame per clip they are the image model's maps."""
    model = LinearFusion(t=t, seed=seed % 7).eval()
    X = clips(n, t=t, seed=seed)
    ex = L2CAFExplainer(model=model, layer="cnn.conv2", frame_axis=1, batch_size=batch_size)
    e = ex.fit(X).explain(X)
    assert e.maps.shape == (n, 1, t, H, H)
    np.testing.assert_allclose(np.linalg.norm(e.maps.reshape(n * t, -1), axis=1), 1, atol=1e-5)
    np.testing.assert_allclose(
        e.maps, np.concatenate([ex.explain(X[i : i + 1]).maps for i in range(n)]), atol=1e-5
    )
    if t == 1:
        image_model = nn.Sequential(model.cnn, nn.AdaptiveAvgPool2d(1), nn.Flatten(), model.fuse)
        ref = L2CAFExplainer(model=image_model, layer="0.conv2").fit(X[:, 0]).explain(X[:, 0])
        np.testing.assert_allclose(e.maps[:, :, 0], ref.maps, atol=1e-5)


# -- Keras: TimeDistributed, parity with torch on the same weights -------------------------------


def keras_twin(model, t=T, size=H, loop=False):
    """The Keras copy of an ``LSTMClip``: the per-frame CNN inside ``TimeDistributed`` (or,
    with ``loop=True``, called once per frame), the same weights."""
    from conftest import import_tensorflow

    _, keras = import_tensorflow()
    L = keras.layers

    def conv(m, name):
        layer = L.Conv2D(m.out_channels, 3, padding="same", name=name)
        layer.build((None, None, None, m.in_channels))
        w = m.weight.detach().numpy().transpose(2, 3, 1, 0)
        layer.set_weights([w, m.bias.detach().numpy()])
        return layer

    cnn = keras.Sequential(
        [
            keras.Input((size, size, 3)),
            conv(model.cnn.conv1, "conv1"),
            L.ReLU(name="relu1"),
            conv(model.cnn.conv2, "conv2"),
            L.ReLU(name="relu2"),
        ],
        name="cnn",
    )
    inp = keras.Input((t, size, size, 3))
    if loop:
        x = keras.ops.stack([cnn(inp[:, s]) for s in range(t)], axis=1)
    else:
        x = L.TimeDistributed(cnn, name="frames")(inp)
    x = L.TimeDistributed(L.GlobalAveragePooling2D(), name="pool")(x)
    lstm = L.LSTM(model.lstm.hidden_size, name="lstm")
    x = lstm(x)
    fc = L.Dense(model.fc.out_features, name="fc")
    out = fc(x)
    p = {k: v.detach().numpy() for k, v in model.lstm.named_parameters()}
    # torch's gates (i, f, g, o) are Keras's (i, f, c, o); Keras has one bias.
    lstm.set_weights([p["weight_ih_l0"].T, p["weight_hh_l0"].T, p["bias_ih_l0"] + p["bias_hh_l0"]])
    fc.set_weights([model.fc.weight.detach().numpy().T, model.fc.bias.detach().numpy()])
    return keras.Model(inp, out)


def nhwc(X):
    return np.ascontiguousarray(X.transpose(0, 1, 3, 4, 2))


@pytest.fixture(scope="module")
def twins():
    model = LSTMClip().eval()
    return model, keras_twin(model)


def test_keras_twin_computes_the_torch_model(twins):
    model, kmodel = twins
    X = clips(2, seed=8)
    with torch.no_grad():
        expected = model(torch.as_tensor(X)).numpy()
    np.testing.assert_allclose(np.asarray(kmodel(nhwc(X))), expected, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize(
    ("objective", "variant"),
    [("class-oblivious", "fast"), ("class-specific", "fast"), ("class-oblivious", "vanilla")],
)
def test_keras_l2caf_per_frame_equals_torch(twins, objective, variant):
    model, kmodel = twins
    X = clips(2, seed=1)
    targets = np.array([2, 0]) if objective == "class-specific" else None
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        expected = lstm_explainer(model, objective, variant=variant).fit(X).explain(X, targets)
        ex = L2CAFExplainer(
            model=kmodel,
            layer="frames/cnn/relu2",
            frame_axis=1,
            objective=objective,
            solver="adam",
            max_iter=N_ITER,
            tol=0,
            learning_rate=LR,
            final_learning_rate=FINAL,
            variant=variant,
        )
        got = ex.fit(nhwc(X)).explain(nhwc(X), targets)
    assert ex.split_ == "graph"
    assert got.maps.shape == (2, 1, T, H, H)
    np.testing.assert_allclose(got.maps, expected.maps, atol=2e-4)
    np.testing.assert_allclose(got.heatmaps, expected.heatmaps, atol=2e-3)


def test_keras_gradcam_per_frame_equals_torch(twins):
    model, kmodel = twins
    X = clips(3, seed=3)
    expected = GradCAMExplainer(model=model, layer="cnn.relu2", frame_axis=1, top_k=2)
    got = GradCAMExplainer(model=kmodel, layer="frames/cnn/relu2", frame_axis=1, top_k=2)
    e, g = expected.fit(X).explain(X), got.fit(nhwc(X)).explain(nhwc(X))
    np.testing.assert_array_equal(g.targets, e.targets)
    np.testing.assert_allclose(g.maps, e.maps, rtol=1e-3, atol=1e-5)
    assert got.transform(nhwc(X)).shape == (3, 2, T, H, H)


def test_keras_model_is_unchanged_and_loops_are_refused(twins):
    model, kmodel = twins
    X = nhwc(clips(2, seed=9))
    before = [w.copy() for w in kmodel.get_weights()]
    names = [layer.name for layer in kmodel.layers]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        L2CAFExplainer(model=kmodel, layer="frames/cnn/relu2", frame_axis=1, max_iter=5).fit(
            X
        ).transform(X)
    assert [layer.name for layer in kmodel.layers] == names
    for w, b in zip(kmodel.get_weights(), before, strict=True):
        np.testing.assert_array_equal(w, b)
    np.testing.assert_allclose(
        np.asarray(kmodel(X)),
        model(torch.as_tensor(clips(2, seed=9))).detach().numpy(),
        rtol=1e-4,
        atol=1e-5,
    )
    looped = keras_twin(model, loop=True)
    with pytest.raises(ValueError, match=r"runs 3 times.*TimeDistributed"):
        GradCAMExplainer(model=looped, layer="cnn/relu2", frame_axis=1).fit(X)
