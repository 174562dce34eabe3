"""Deletion and insertion (RISE): exact curves of a linear model, endpoints, AUCs, a trained
model on which Grad-CAM and L2-CAF beat a random map, and the evaluation runner's option."""

from __future__ import annotations

import math

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pd = pytest.importorskip("pandas")
from conftest import images, linear_head, make_explainer, tiny_cnn  # noqa: E402
from hypothesis import given  # noqa: E402
from hypothesis import strategies as st  # noqa: E402
from sklearn.base import BaseEstimator  # noqa: E402
from torch import nn  # noqa: E402

from sklearn_caf import GradCAMExplainer, L2CAFExplainer  # noqa: E402
from sklearn_caf.evaluation import deletion_insertion  # noqa: E402
from sklearn_caf.evaluation._faithfulness import saliency_ranks  # noqa: E402

COLUMNS = [
    "image",
    "target",
    "deletion_auc",
    "insertion_auc",
    "deletion_curve",
    "insertion_curve",
    "fraction",
]


class FixedMap(BaseEstimator):
    """An "explainer" whose maps are given: any estimator with a model and transform works."""

    def __init__(self, *, model=None, maps=None, channels_last=False):
        self.model = model
        self.maps = maps
        self.channels_last = channels_last

    def fit(self, X, y=None):
        self.n_seen_ = len(X)
        return self

    def transform(self, X):
        return np.asarray(self.maps, dtype=np.float32)[: len(X)]


class RandomMap(BaseEstimator):
    """A model-independent map of uniform noise: the baseline every method must beat."""

    def __init__(self, *, model=None, spatial_axes=(2, 3), random_state=None):
        self.model = model
        self.spatial_axes = spatial_axes
        self.random_state = random_state

    def fit(self, X, y=None):
        self.fitted_ = True
        return self

    def transform(self, X):
        rng = np.random.default_rng(self.random_state)
        shape = (len(X), *(X.shape[ax] for ax in self.spatial_axes))
        return rng.random(shape).astype(np.float32)


def softmax(z):
    z = np.asarray(z, dtype=np.float64)
    e = np.exp(z - z.max(axis=-1, keepdims=True))
    return e / e.sum(axis=-1, keepdims=True)


def order_by_hand(heatmap):
    """Pixels (flat row-major index) most salient first, ties to the lower index."""
    flat = np.asarray(heatmap).ravel()
    return sorted(range(flat.size), key=lambda i: (-flat[i], i))


def blur_by_hand(image_chw, sigma):
    """A per-channel Gaussian blur with edge replication, written out (not scipy's)."""
    radius = int(4.0 * sigma + 0.5)  # scipy's truncate=4.0
    offsets = np.arange(-radius, radius + 1)
    kernel = np.exp(-0.5 * (offsets / sigma) ** 2)
    kernel /= kernel.sum()
    out = np.asarray(image_chw, dtype=np.float64)
    for axis in (1, 2):
        pad = [(0, 0)] * 3
        pad[axis] = (radius, radius)
        padded = np.pad(out, pad, mode="edge")
        n = out.shape[axis]
        out = sum(
            w * np.take(padded, np.arange(k, k + n), axis=axis) for k, w in enumerate(kernel)
        )
    return out


# -- a linear model on pixel means: the exact curves -----------------------------------------
def test_linear_model_gives_the_exact_curves(kit):
    # logit_j = sum_c W[j, c] * mean over pixels of channel c + b_j: moving pixel p from value
    # v to value u changes logit j by sum_c W[j, c] * (u_c - v_c) / P.
    C, H, W = 3, 4, 5
    P = H * W
    weight = np.array([[1.5, -2.0, 0.5], [-0.5, 1.0, 2.5]])
    bias = np.array([0.2, -0.1])
    net = linear_head(weight, bias)
    X = images(2, (H, W), channels=C, seed=3) * 3
    # Integer-valued maps with ties: the order (and its tie-breaking) is part of the answer.
    maps = np.random.default_rng(0).integers(0, 4, size=(2, H, W)).astype(np.float32)
    baseline_c = np.array([0.3, -0.7, 1.1])
    sigma = 1.3
    n_steps = 3  # 20 pixels: steps of equal size, 7, 7, then the 6 left
    counts = [0, 7, 14, 20]
    explainer = FixedMap(model=kit.model(net), maps=maps)
    baseline = baseline_c[:, None, None] if kit.name == "torch" else baseline_c
    table = deletion_insertion(
        explainer,
        kit.x(X),
        targets=[0, 1],
        n_steps=n_steps,
        baseline=baseline,
        blur_sigma=sigma,
        batch_size=3,
    )
    assert list(table.columns) == COLUMNS
    for i in range(2):
        order = order_by_hand(maps[i])
        x = X[i].reshape(C, P).astype(np.float64)
        blurred = blur_by_hand(X[i], sigma).reshape(C, P)
        deletion, insertion = [], []
        for count in counts:
            moved = order[:count]
            deleted = x.copy()
            deleted[:, moved] = baseline_c[:, None]
            inserted = blurred.copy()
            inserted[:, moved] = x[:, moved]
            for curve, image in ((deletion, deleted), (insertion, inserted)):
                curve.append(softmax(weight @ image.mean(axis=1) + bias)[i])
        row = table.iloc[i]
        assert row["target"] == i
        np.testing.assert_allclose(row["fraction"], np.array(counts) / P)
        np.testing.assert_allclose(row["deletion_curve"], deletion, rtol=0, atol=2e-6)
        np.testing.assert_allclose(row["insertion_curve"], insertion, rtol=0, atol=2e-6)
        # AUC: the trapezoid rule over the fraction of pixels, written out.
        dx = np.diff(counts) / P
        expected = np.sum(dx * (np.array(deletion[1:]) + np.array(deletion[:-1])) / 2)
        assert row["deletion_auc"] == pytest.approx(expected, abs=2e-6)
        assert row["insertion_auc"] == pytest.approx(
            np.trapezoid(insertion, np.array(counts) / P), abs=2e-6
        )


def test_auc_is_the_trapezoid_rule_on_a_hand_made_curve():
    from sklearn_caf.evaluation._faithfulness import _trapezoid, pixel_counts

    # 10 pixels in 4 steps of equal size: 0, 3, 6, 9, 10 pixels moved.
    counts = pixel_counts(10, 4)
    np.testing.assert_array_equal(counts, [0, 3, 6, 9, 10])
    curve = np.array([0.9, 0.6, 0.2, 0.1, 0.0])
    x = counts / 10
    by_hand = 0.3 * (0.9 + 0.6) / 2 + 0.3 * (0.6 + 0.2) / 2 + 0.3 * (0.2 + 0.1) / 2 + 0.1 * 0.05
    assert _trapezoid(curve, x) == pytest.approx(by_hand, abs=1e-15)
    assert _trapezoid(curve, x) == pytest.approx(np.trapezoid(curve, x), abs=1e-15)
    # A constant curve's area is the constant: the x-axis spans [0, 1].
    assert _trapezoid(np.full(5, 0.37), x) == pytest.approx(0.37)


def test_steps_move_the_same_number_of_pixels():
    from sklearn_caf.evaluation._faithfulness import pixel_counts

    # RISE's rule, for a step given in pixels or derived from n_steps: every step moves the
    # same number of pixels, the last one what is left (224 x 224 images, 100-pixel steps:
    # 100, 200, ..., 50100, 50176 -- not 99, 199, ...).
    counts = pixel_counts(224 * 224, step=100)
    assert len(counts) == 503
    np.testing.assert_array_equal(counts[:4], [0, 100, 200, 300])
    np.testing.assert_array_equal(counts[-2:], [50100, 50176])
    np.testing.assert_array_equal(pixel_counts(224 * 224, 502), counts)
    counts = pixel_counts(224 * 224, 100)  # steps of 502
    assert len(counts) == 101 and set(np.diff(counts)[:-1]) == {502}
    assert counts[-1] - counts[-2] == 50176 - 99 * 502
    np.testing.assert_array_equal(pixel_counts(12, 4), [0, 3, 6, 9, 12])
    # More steps than sqrt(P) can need fewer: 10 pixels in 6 steps of 2 is 5 steps.
    np.testing.assert_array_equal(pixel_counts(10, 6), [0, 2, 4, 6, 8, 10])
    np.testing.assert_array_equal(pixel_counts(10, step=20), [0, 10])


def test_ties_are_broken_in_row_major_order():
    maps = np.array([[[0.5, 1.0], [0.5, 1.0]]])
    np.testing.assert_array_equal(saliency_ranks(maps), [[[2, 0], [3, 1]]])
    np.testing.assert_array_equal(saliency_ranks(np.zeros((1, 2, 3))).ravel(), np.arange(6))


# -- the endpoints on a real CNN, both backends ----------------------------------------------
def model_probabilities(kit, net, X):
    """Softmax of the model's output on NCHW images, computed by the framework directly."""
    if kit.name == "torch":
        with torch.no_grad():
            return softmax(net(torch.as_tensor(X, dtype=torch.float32)).numpy())
    model = kit.model(net)
    return softmax(np.asarray(model(kit.x(X.astype(np.float32)), training=False)))


def test_endpoints_of_the_curves(kit):
    net = tiny_cnn(n_classes=4, seed=1)
    X = images(3, 12, seed=2)
    explainer = make_explainer(kit, GradCAMExplainer, model=net, layer="relu2")
    table = deletion_insertion(explainer.explainer, kit.x(X), n_steps=6, blur_sigma=2.0)
    p = model_probabilities(kit, net, X)
    targets = p.argmax(axis=1)
    np.testing.assert_array_equal(table["target"], targets)
    rows = np.arange(3)
    deletion = np.stack(table["deletion_curve"])
    insertion = np.stack(table["insertion_curve"])
    # Step 0 of deletion is the image itself; the last step the all-baseline (zero) image.
    np.testing.assert_allclose(deletion[:, 0], p[rows, targets], atol=1e-6)
    p_zero = model_probabilities(kit, net, np.zeros_like(X))
    np.testing.assert_allclose(deletion[:, -1], p_zero[rows, targets], atol=1e-6)
    # Insertion starts at the blurred image and ends at the original.
    blurred = np.stack([blur_by_hand(x, 2.0) for x in X]).astype(np.float32)
    p_blur = model_probabilities(kit, net, blurred)
    np.testing.assert_allclose(insertion[:, 0], p_blur[rows, targets], atol=1e-5)
    np.testing.assert_allclose(insertion[:, -1], p[rows, targets], atol=1e-6)
    np.testing.assert_allclose(table["fraction"][0], np.arange(7) / 6, atol=1e-2)


def test_unfitted_explainer_is_fitted_on_a_clone_and_the_model_is_untouched():
    net = tiny_cnn(n_classes=3).train()
    net.conv1.weight.requires_grad_(False)
    before = {k: v.clone() for k, v in net.state_dict().items()}
    explainer = L2CAFExplainer(model=net, layer="relu2", objective="class-specific")
    X = images(2, 8)
    table = deletion_insertion(explainer, X, targets=[2, 0], n_steps=4)
    assert not hasattr(explainer, "bound_")
    assert table["target"].tolist() == [2, 0]
    assert net.training and not net.conv1.weight.requires_grad and net.conv2.weight.requires_grad
    for k, v in net.state_dict().items():
        assert torch.equal(v, before[k])


def test_class_oblivious_maps_follow_the_top1_class():
    net = tiny_cnn(n_classes=3)
    X = images(3, 8)
    explainer = L2CAFExplainer(model=net, layer="relu2").fit(X)
    table = deletion_insertion(explainer, X, n_steps=4)
    with torch.no_grad():
        top1 = net(torch.as_tensor(X)).argmax(1).numpy()
    np.testing.assert_array_equal(table["target"], top1)
    # targets pick the probability followed; the (class-independent) map is the same.
    other = deletion_insertion(explainer, X, targets=(top1 + 1) % 3, n_steps=4)
    with torch.no_grad():
        p = torch.softmax(net(torch.as_tensor(X)), 1).numpy()
    np.testing.assert_allclose(
        np.stack(other["deletion_curve"])[:, 0], p[np.arange(3), (top1 + 1) % 3], atol=1e-6
    )


# -- a trained model: Grad-CAM and L2-CAF beat a random map ----------------------------------
def wsol_images(n, rng, size=16, side=5):
    """Noise with one coloured square: the class is the colour (the channel), the square's
    place is random (and known)."""
    X = rng.normal(0.0, 0.3, size=(n, 3, size, size)).astype(np.float32)
    y = rng.integers(0, 3, size=n)
    for i in range(n):
        r, c = rng.integers(0, size - side + 1, size=2)
        X[i, y[i], r : r + side, c : c + side] += 2.0
    return X, y


@pytest.fixture(scope="module")
def trained():
    rng = np.random.default_rng(0)
    X, y = wsol_images(192, rng)
    net = tiny_cnn(n_classes=3, seed=0).train()
    opt = torch.optim.Adam(net.parameters(), lr=0.05)
    xt, yt = torch.as_tensor(X), torch.as_tensor(y)
    for _ in range(60):
        opt.zero_grad()
        nn.functional.cross_entropy(net(xt), yt).backward()
        opt.step()
    net.eval()
    X_test, y_test = wsol_images(48, rng)
    with torch.no_grad():
        accuracy = (net(torch.as_tensor(X_test)).argmax(1).numpy() == y_test).mean()
    assert accuracy > 0.95
    return net, X_test, y_test


def test_random_map_has_a_worse_deletion_auc_than_the_methods(kit, trained):
    net, X, y = trained
    spatial = (2, 3) if kit.name == "torch" else (1, 2)
    explainers = {
        "gradcam": make_explainer(kit, GradCAMExplainer, model=net, layer="relu2").explainer,
        "l2caf": make_explainer(
            kit, L2CAFExplainer, model=net, layer="relu2", objective="class-specific"
        ).explainer,
        "random": RandomMap(model=kit.model(net), spatial_axes=spatial, random_state=0),
    }
    auc = {
        name: deletion_insertion(e, kit.x(X), targets=y, n_steps=16)
        for name, e in explainers.items()
    }
    deletion = {name: t["deletion_auc"].to_numpy() for name, t in auc.items()}
    for method in ("gradcam", "l2caf"):
        # By a wide margin on average, and on most images one by one. (Insertion says little
        # here: the blur keeps the square's colour, which is all this model looks for.)
        assert deletion[method].mean() < deletion["random"].mean() - 0.2
        assert (deletion[method] < deletion["random"]).mean() > 0.9


# -- checks of the arguments -----------------------------------------------------------------
@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"n_steps": 0}, "n_steps must be a positive integer"),
        ({"n_steps": 2.5}, "n_steps must be a positive integer"),
        ({"n_steps": 257}, "n_steps=257 is more than the 256 pixels"),
        ({"step": 0}, r"step must be a positive integer \(pixels\) or None"),
        ({"step": 1.5}, r"step must be a positive integer \(pixels\) or None"),
        ({"step": 4, "n_steps": 8}, "give n_steps or step, not both"),
        ({"protocol": "RISE"}, r"protocol must be one of \('sklearn-caf', 'rise'\)"),
        ({"blur_sigma": -1.0}, "blur_sigma must be a number >= 0"),
        ({"blur_sigma": "wide"}, "blur_sigma must be a number >= 0"),
        ({"batch_size": 0}, "batch_size must be a positive integer or None"),
        ({"baseline": np.zeros(5)}, "baseline must be a number or an array that broadcasts"),
        ({"baseline": math.nan}, "baseline must be finite"),
        ({"baseline": "grey"}, "baseline must be a number or an array of numbers"),
        ({"targets": [0, 7]}, r"targets must be class indices in \[0, 3\)"),
        ({"targets": [0]}, r"targets must hold one class index per image, shape \(2,\)"),
        ({"targets": [[0, 1], [1, 2]]}, "targets must hold one class per image"),
    ],
)
def test_bad_arguments_name_the_parameter(kwargs, match):
    net = tiny_cnn(n_classes=3)
    explainer = GradCAMExplainer(model=net, layer="relu2")
    with pytest.raises(ValueError, match=match):
        deletion_insertion(explainer, images(2, 16), **kwargs)


def test_maps_of_the_wrong_shape_and_explainers_without_a_model_are_refused():
    net = tiny_cnn(n_classes=3)
    with pytest.raises(ValueError, match=r"expected one map per image .*\(2, 8, 8\)"):
        deletion_insertion(FixedMap(model=net, maps=np.zeros((2, 4, 4))), images(2, 8))
    with pytest.raises(TypeError, match="explainer must have a model"):
        deletion_insertion(FixedMap(maps=np.zeros((2, 8, 8))), images(2, 8))


def test_probabilities_as_outputs_are_flagged():
    net = nn.Sequential(tiny_cnn(n_classes=3), nn.Softmax(dim=1)).eval()
    with pytest.warns(UserWarning, match="look like probabilities"):
        deletion_insertion(FixedMap(model=net, maps=np.zeros((2, 8, 8))), images(2, 8), n_steps=2)


# -- evaluate_localization(faithfulness=...) -------------------------------------------------
@pytest.fixture(scope="module")
def wsol():
    pytest.importorskip("pyarrow")
    from sklearn_caf.datasets import make_wsol_dataset

    data = make_wsol_dataset(6, random_state=0)
    net = tiny_cnn(n_classes=data.n_classes, seed=2)
    return data, net


FAITH = {"n_steps": 8, "blur_sigma": 3.0}


def test_evaluate_localization_adds_the_faithfulness_columns(wsol):
    from sklearn_caf.evaluation import FAITHFULNESS_SUMMARY, evaluate_localization

    data, net = wsol
    explainers = {"gradcam": GradCAMExplainer(model=net, layer="relu2")}
    report = evaluate_localization(
        explainers, data, batch_size=4, progress=False, faithfulness=FAITH
    )
    rows = report.per_image
    for column in ("deletion_auc", "insertion_auc", "deletion_curve", "insertion_curve"):
        assert column in rows.columns
    top1 = rows["explains_top1"].to_numpy()
    assert top1.sum() == 6  # one top-1 map per image; the true class's extra maps get NaN
    assert rows.loc[~top1, "deletion_auc"].isna().all()
    assert rows.loc[~top1, "deletion_curve"].isna().all()
    assert set(FAITHFULNESS_SUMMARY) <= set(report.summary.columns)
    # The same numbers as deletion_insertion on the same images and classes.
    images_, _, _ = data.load(np.arange(6))
    top_rows = rows[top1].sort_values("image_index")
    direct = deletion_insertion(
        explainers["gradcam"], images_, targets=top_rows["explained_class"].to_numpy(), **FAITH
    )
    np.testing.assert_allclose(top_rows["deletion_auc"], direct["deletion_auc"], atol=1e-6)
    np.testing.assert_allclose(top_rows["insertion_auc"], direct["insertion_auc"], atol=1e-6)
    np.testing.assert_allclose(
        np.stack(top_rows["deletion_curve"]), np.stack(direct["deletion_curve"]), atol=1e-6
    )
    for name in FAITHFULNESS_SUMMARY:
        assert report.summary.loc["gradcam", name] == pytest.approx(direct[name].mean())
    # Without the option: no such columns, as before.
    plain = evaluate_localization(explainers, data, batch_size=4, progress=False)
    assert "deletion_auc" not in plain.per_image.columns
    assert "deletion_auc" not in plain.summary.columns


def test_faithfulness_runs_resume_and_refuse_a_changed_option(wsol, tmp_path):
    from sklearn_caf.evaluation import evaluate_localization, load_report

    data, net = wsol
    explainers = {"gradcam": GradCAMExplainer(model=net, layer="relu2")}

    def run(**kwargs):
        return evaluate_localization(
            explainers, data, batch_size=4, progress=False, out=tmp_path, **kwargs
        )

    full = run(faithfulness=FAITH)
    parts = sorted(tmp_path.glob("part-*.parquet"))
    assert len(parts) == 2
    parts[1].unlink()  # as if the run had been killed after the first chunk
    partial = load_report(tmp_path)
    assert not partial.complete
    assert "deletion_auc" in partial.summary.columns
    resumed = run(faithfulness=FAITH)
    assert resumed.complete
    pd.testing.assert_frame_equal(resumed.per_image, full.per_image)
    pd.testing.assert_frame_equal(resumed.summary, full.summary)
    with pytest.raises(ValueError, match=r"differs in: faithfulness\.n_steps"):
        run(faithfulness={**FAITH, "n_steps": 4})
    with pytest.raises(ValueError, match=r"differs in: faithfulness"):
        run()
    # batch_size only changes how the work is cut: the run resumes.
    run(faithfulness={**FAITH, "batch_size": 5})


@pytest.mark.parametrize(
    ("faithfulness", "task", "match"),
    [
        ("yes", "classification", "faithfulness must be True, False or a dict"),
        ({"steps": 4}, "classification", r"faithfulness got unknown options \['steps'\]"),
        ({"n_steps": -1}, "classification", "n_steps must be a positive integer"),
        ({"blur_sigma": -2}, "classification", "blur_sigma must be a number >= 0"),
        (True, "retrieval", "faithfulness .* needs task='classification'"),
    ],
)
def test_bad_faithfulness_options_are_refused(wsol, faithfulness, task, match):
    from sklearn_caf.evaluation import evaluate_localization

    data, net = wsol
    explainers = {"l2caf": L2CAFExplainer(model=net, layer="relu2")}
    with pytest.raises(ValueError, match=match):
        evaluate_localization(explainers, data, task=task, faithfulness=faithfulness)


# -- plot_deletion_insertion -----------------------------------------------------------------
def test_plot_draws_the_mean_curves_of_tables_and_reports(wsol):
    pytest.importorskip("matplotlib")
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from sklearn_caf.evaluation import evaluate_localization
    from sklearn_caf.plotting import plot_deletion_insertion

    data, net = wsol
    X, _, _ = data.load(np.arange(4))
    table = deletion_insertion(GradCAMExplainer(model=net, layer="relu2"), X, n_steps=5)
    fig = plot_deletion_insertion({"gradcam": table, "again": table})
    deletion_ax, insertion_ax = fig.axes
    line = deletion_ax.get_lines()[0]
    np.testing.assert_allclose(line.get_xdata(), table["fraction"][0])
    np.testing.assert_allclose(line.get_ydata(), np.stack(table["deletion_curve"]).mean(0))
    np.testing.assert_allclose(
        insertion_ax.get_lines()[1].get_ydata(), np.stack(table["insertion_curve"]).mean(0)
    )
    auc = table["deletion_auc"].mean()
    assert deletion_ax.get_legend().get_texts()[0].get_text() == f"gradcam (AUC {auc:.3f})"
    plt.close(fig)

    explainers = {"gradcam": GradCAMExplainer(model=net, layer="relu2")}
    report = evaluate_localization(
        explainers, data, batch_size=6, progress=False, faithfulness=FAITH
    )
    fig = plot_deletion_insertion(report)
    rows = report.per_image[report.per_image["explains_top1"]]
    np.testing.assert_allclose(
        fig.axes[0].get_lines()[0].get_ydata(), np.stack(rows["deletion_curve"]).mean(0)
    )
    plt.close(fig)
    plain = evaluate_localization(explainers, data, batch_size=6, progress=False)
    with pytest.raises(ValueError, match="faithfulness=True"):
        plot_deletion_insertion(plain)
    with pytest.raises(ValueError, match=r"results\['x'\] must be a table"):
        plot_deletion_insertion({"x": table[["image", "deletion_auc"]]})
    with pytest.raises(ValueError, match="axes must hold two Axes"):
        plot_deletion_insertion(table, axes=[deletion_ax])


# -- sklearn-caf evaluate --faithfulness -----------------------------------------------------
def test_the_command_line_adds_faithfulness(tmp_path, monkeypatch, capsys):
    pytest.importorskip("matplotlib")
    PIL_Image = pytest.importorskip("PIL.Image")
    from test_evaluate_cli import _args, wsol_dir

    from sklearn_caf.cli import main
    from sklearn_caf.evaluation import load_report

    root = wsol_dir.__wrapped__(tmp_path, monkeypatch)
    out = root / "run"
    args = _args(root, out, "--methods", "gradcam", "--examples", "0", "--quiet")
    assert main([*args, "--faithfulness", "4"]) == 0
    report = load_report(out)
    assert report.config["faithfulness"]["n_steps"] == 4
    assert report.summary["deletion_auc"].notna().all()
    assert PIL_Image.open(out / "deletion_insertion.png").size == (1000, 400)
    capsys.readouterr()
    assert main([*args, "--faithfulness", "5"]) == 2  # a changed option is refused
    assert "faithfulness.n_steps" in capsys.readouterr().err
    assert main([*args, "--task", "retrieval", "--faithfulness", "4"]) == 2
    assert "needs --task classification" in capsys.readouterr().err


def test_images_in_another_layout_than_fit_are_refused():
    net = tiny_cnn(n_classes=3)
    explainer = GradCAMExplainer(model=net, layer="relu2").fit(images(1, 8))
    with pytest.raises(ValueError, match="X must have the layout seen in fit"):
        deletion_insertion(explainer, images(2, 8).transpose(0, 2, 3, 1))


def test_top_k_does_not_change_the_result():
    # With top_k > 1 only the top-1 map is computed and scored, exactly as with top_k=1.
    net = tiny_cnn(n_classes=4, seed=3)
    X = images(3, 8, seed=1)
    one = deletion_insertion(GradCAMExplainer(model=net, layer="relu2"), X, n_steps=4)
    three = deletion_insertion(GradCAMExplainer(model=net, layer="relu2", top_k=3), X, n_steps=4)
    pd.testing.assert_frame_equal(one, three)


# -- properties ------------------------------------------------------------------------------
@given(
    seed=st.integers(0, 2**16),
    size=st.tuples(st.integers(2, 6), st.integers(2, 6)),
    n_steps=st.integers(1, 4),
    sigma=st.floats(0.0, 2.0),
)
def test_properties_on_random_linear_models_and_maps(seed, size, n_steps, sigma):
    rng = np.random.default_rng(seed)
    net = linear_head(rng.normal(size=(3, 2)), rng.normal(size=3))
    X = rng.normal(size=(2, 2, *size)).astype(np.float32)
    maps = rng.integers(0, 3, size=(2, *size)).astype(np.float32)  # ties on purpose
    kwargs = {"n_steps": n_steps, "blur_sigma": sigma}
    table = deletion_insertion(FixedMap(model=net, maps=maps), X, **kwargs)
    deletion = np.stack(table["deletion_curve"])
    insertion = np.stack(table["insertion_curve"])
    assert ((deletion >= 0) & (deletion <= 1)).all() and (
        (insertion >= 0) & (insertion <= 1)
    ).all()
    # Both curves pass through the untouched image: deletion first, insertion last.
    np.testing.assert_allclose(deletion[:, 0], insertion[:, -1], atol=1e-6)
    # An AUC lies between the curve's extremes.
    for auc, curves in ((table["deletion_auc"], deletion), (table["insertion_auc"], insertion)):
        assert (auc >= curves.min(axis=1) - 1e-12).all()
        assert (auc <= curves.max(axis=1) + 1e-12).all()
    # Only the order of the map matters: a strictly increasing transform changes nothing.
    warped = deletion_insertion(FixedMap(model=net, maps=maps**3 * 5 - 2), X, **kwargs)
    pd.testing.assert_frame_equal(table, warped)


# -- protocol="rise": RISE's CausalMetric, rule by rule ---------------------------------------
def rise_kernel_by_hand(klen=11, nsig=5.0):
    """RISE's gkern: scipy's gaussian_filter of a centred klen x klen impulse, written out.

    gaussian_filter is separable; in 1-D it correlates with exp(-j^2 / 2 sigma^2), j in
    [-r, r], r = int(4 sigma + 0.5), normalized, the signal extended by half-sample
    reflection (period 2 klen): the impulse at c reappears wherever the reflection maps to c.
    """
    r = int(4.0 * nsig + 0.5)
    j = np.arange(-r, r + 1)
    w = np.exp(-0.5 * (j / nsig) ** 2)
    w /= w.sum()
    c = klen // 2
    line = np.zeros(klen)
    for i in range(klen):
        for p in range(i - r, i + r + 1):
            q = p % (2 * klen)
            if (q if q < klen else 2 * klen - 1 - q) == c:
                line[i] += w[p - i + r]
    return np.outer(line, line)


def rise_substrate_by_hand(image_chw, kernel):
    """conv2d(x, kern, padding=klen // 2) of one image, channel by channel, zero padded."""
    k = kernel.shape[0]
    pad = k // 2
    C, H, W = image_chw.shape
    padded = np.pad(np.asarray(image_chw, np.float64), [(0, 0), (pad, pad), (pad, pad)])
    out = np.zeros((C, H, W))
    for dy in range(k):
        for dx in range(k):
            out += kernel[dy, dx] * padded[:, dy : dy + H, dx : dx + W]
    return out


def rise_auc(arr):
    return (arr.sum() - arr[0] / 2 - arr[-1] / 2) / (arr.shape[0] - 1)


def test_rise_kernel_is_gkern_and_narrower_than_its_sigma():
    from sklearn_caf.evaluation._faithfulness import rise_kernel

    kernel = rise_kernel(5.0)
    assert kernel.shape == (11, 11) and kernel.dtype == np.float32
    np.testing.assert_allclose(kernel, rise_kernel_by_hand(11, 5.0), rtol=1e-6, atol=1e-9)
    assert kernel.sum() == pytest.approx(1.0, abs=1e-6)
    # The reflected tails pile up inside the square: an effective std of about 3.1 px.
    offsets = np.arange(11) - 5
    std = np.sqrt((kernel.sum(axis=0) * offsets**2).sum())
    assert 3.0 < std < 3.2


def test_rise_protocol_reproduces_causal_metric(kit):
    """Every point of RISE's deletion and insertion curves and its AUCs, on maps with ties,
    a step that does not divide the pixel count, from RISE's rules written out here."""
    net = tiny_cnn(n_classes=4, seed=1)
    C, H, W = 3, 12, 12
    P = H * W
    X = images(3, (H, W), channels=C, seed=5) * 2
    rng = np.random.default_rng(1)
    maps = rng.integers(0, 4, size=(3, H, W)).astype(np.float32)  # many ties
    step = 10  # 15 steps: 14 of 10 pixels, then 4
    explainer = FixedMap(model=kit.model(net), maps=maps)
    table = deletion_insertion(explainer, kit.x(X), step=step, protocol="rise", batch_size=4)
    p = model_probabilities(kit, net, X)
    np.testing.assert_array_equal(table["target"], p.argmax(axis=1))
    kernel = rise_kernel_by_hand(11, 5.0)
    n_steps = (P + step - 1) // step
    for i in range(3):
        c = int(p[i].argmax())
        order = np.flip(np.argsort(maps[i].reshape(-1, P), axis=1), axis=-1)[0]
        image = X[i].reshape(C, P).astype(np.float64)
        blurred = rise_substrate_by_hand(X[i], kernel).reshape(C, P)
        curves = {}
        for mode, start, finish in (
            ("deletion", image.copy(), np.zeros_like(image)),
            ("insertion", blurred.copy(), image),
        ):
            scores = np.empty(n_steps + 1)
            for k in range(n_steps + 1):
                probs = model_probabilities(kit, net, start.reshape(1, C, H, W).astype(np.float32))
                scores[k] = probs[0, c]
                coords = order[step * k : step * (k + 1)]
                start[:, coords] = finish[:, coords]
            curves[mode] = scores
        row = table.iloc[i]
        assert len(row["deletion_curve"]) == n_steps + 1 == 16
        np.testing.assert_allclose(row["deletion_curve"], curves["deletion"], atol=2e-6)
        np.testing.assert_allclose(row["insertion_curve"], curves["insertion"], atol=2e-6)
        np.testing.assert_allclose(row["fraction"], np.arange(16) / 15)
        assert row["deletion_auc"] == pytest.approx(rise_auc(curves["deletion"]), abs=2e-6)
        assert row["insertion_auc"] == pytest.approx(rise_auc(curves["insertion"]), abs=2e-6)
    # The protocols differ on these maps: ties, blur and steps are each a part of the answer.
    ours = deletion_insertion(explainer, kit.x(X), step=step, batch_size=4)
    gap = np.abs(np.stack(ours["insertion_curve"]) - np.stack(table["insertion_curve"]))
    assert gap.max() > 1e-3


def test_rise_order_is_the_reverse_of_argsort_not_row_major():
    from sklearn_caf.evaluation._faithfulness import rise_ranks

    maps = np.array([[[0.5, 1.0], [0.5, 1.0]]], dtype=np.float32)
    # 4 pixels (NumPy sorts so few stably): ties come last-first, the reverse of ours.
    np.testing.assert_array_equal(rise_ranks(maps), [[[3, 1], [2, 0]]])
    np.testing.assert_array_equal(saliency_ranks(maps), [[[2, 0], [3, 1]]])
    big = np.random.default_rng(0).integers(0, 3, size=(2, 16, 16)).astype(np.float32)
    ranks = rise_ranks(big)
    for i in range(2):
        order = np.flip(np.argsort(big[i].ravel()))
        np.testing.assert_array_equal(ranks[i].ravel()[order], np.arange(256))


def test_rise_protocol_through_the_runner(wsol):
    from sklearn_caf.evaluation import evaluate_localization

    data, net = wsol
    explainers = {"gradcam": GradCAMExplainer(model=net, layer="relu2")}
    options = {"step": 100, "protocol": "rise", "blur_sigma": 5.0}
    report = evaluate_localization(
        explainers, data, batch_size=4, progress=False, faithfulness=options
    )
    assert report.config["faithfulness"]["protocol"] == "rise"
    assert report.config["faithfulness"]["step"] == 100
    rows = report.per_image
    top_rows = rows[rows["explains_top1"].to_numpy()].sort_values("image_index")
    images_, _, _ = data.load(np.arange(6))
    targets = top_rows["explained_class"].to_numpy()
    direct = deletion_insertion(explainers["gradcam"], images_, targets=targets, **options)
    ours = deletion_insertion(explainers["gradcam"], images_, targets=targets, step=100)
    for name in ("deletion_auc", "insertion_auc"):
        np.testing.assert_allclose(top_rows[name], direct[name], atol=1e-6)
    assert np.abs(top_rows["insertion_auc"].to_numpy() - ours["insertion_auc"]).max() > 1e-4
