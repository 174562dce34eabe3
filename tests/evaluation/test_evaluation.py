"""The evaluation runner: exact rows and metrics, resuming (kill -9 included), Dask, retrieval."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from collections import OrderedDict
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pd = pytest.importorskip("pandas")
pytest.importorskip("pyarrow")
from torch import nn  # noqa: E402

from sklearn_caf import GradCAMExplainer, HeatmapBoxes, L2CAFExplainer  # noqa: E402
from sklearn_caf.datasets import ImageBoxDataset, make_wsol_dataset  # noqa: E402
from sklearn_caf.evaluation import (  # noqa: E402
    CLASSIFICATION_SUMMARY,
    RETRIEVAL_SUMMARY,
    evaluate_localization,
    load_report,
    model_fingerprint,
)
from sklearn_caf.metrics import best_iou, box_iou_curve_pair  # noqa: E402

ROOT = Path(__file__).resolve().parents[2]
CURVES = ["iou_curve_v1", "iou_curve_v2"]


def pooled_cnn(n_out: int = 3, seed: int = 0) -> nn.Sequential:
    """Conv-ReLU-AvgPool(4)-GAP-Linear: 8x8 feature maps at 32 px, an affine head."""
    torch.manual_seed(seed)
    return nn.Sequential(
        OrderedDict(
            conv=nn.Conv2d(3, 6, 3, padding=1),
            relu=nn.ReLU(),
            pool=nn.AvgPool2d(4),
            gap=nn.AdaptiveAvgPool2d(1),
            flatten=nn.Flatten(),
            fc=nn.Linear(6, n_out),
        )
    ).eval()


def methods(net) -> dict:
    return {
        "l2caf-oblivious": L2CAFExplainer(model=net, layer="pool"),
        "l2caf-specific": L2CAFExplainer(model=net, layer="pool", objective="class-specific"),
        "gradcam": GradCAMExplainer(model=net, layer="pool"),
    }


def assert_same_rows(a: pd.DataFrame, b: pd.DataFrame) -> None:
    assert list(a.columns) == list(b.columns)
    assert len(a) == len(b)
    plain = [c for c in a.columns if c not in (*CURVES, "pred_top5", "embedding")]
    pd.testing.assert_frame_equal(
        a[plain].reset_index(drop=True), b[plain].reset_index(drop=True), check_exact=True
    )
    for column in {*CURVES, "pred_top5", "embedding"} & set(a.columns):
        np.testing.assert_array_equal(np.stack(a[column]), np.stack(b[column]))


@pytest.fixture(scope="module")
def wsol():
    return make_wsol_dataset(12, image_size=32, n_classes=3, random_state=0)


# -- a model whose every map and IoU is known -------------------------------------------------
def _blob_dataset():
    """Four 16x16 one-channel images of binary blobs, and their labels and boxes.

    The model is GAP -> Linear(1, 2) with weights (1, -1): logits (m, -m) with m the mean
    pixel, so class 0 is always predicted. Explained on the input itself (layer=None),
    Grad-CAM's class-0 map is the image (alpha = 1/256 > 0) and its class-1 map is
    ReLU(-image) = 0, a constant map; class-oblivious L2-CAF's filter is the image too (the
    closest the filtered output can get to the original is f proportional to x).
    """
    X = np.zeros((4, 1, 16, 16), dtype=np.float32)
    X[0, 0, 2:6, 2:6] = 1  # box [2, 2, 6, 6] = ground truth: IoU 1
    X[1, 0, 8:12, 8:12] = 1  # ground truth [8, 8, 12, 14]: IoU 16/24
    X[2, 0, 0:4, 0:4] = 1  # label 1: predicted class 0 is wrong
    X[3, 0, 10:14, 1:5] = 1  # the largest blob, away from the ground truth ...
    X[3, 0, 2:4, 10:12] = 1  # ... which boxes this small one
    labels = [0, 0, 1, 0]
    boxes = [[2, 2, 6, 6], [8, 8, 12, 14], [0, 0, 4, 4], [10, 2, 12, 4]]
    net = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(1, 2)).eval()
    with torch.no_grad():
        net[2].weight.copy_(torch.tensor([[1.0], [-1.0]]))
        net[2].bias.zero_()
    return ImageBoxDataset.from_arrays(X, labels, boxes), net


def test_exact_rows_and_summary_of_a_known_model():
    data, net = _blob_dataset()
    report = evaluate_localization(
        {"gradcam": GradCAMExplainer(model=net), "l2caf": L2CAFExplainer(model=net)},
        data,
        batch_size=3,
        progress=False,
        protocol="sklearn-caf",  # the library's boxes: the values below are hand-checked
    )
    rows = report.per_image
    assert list(rows.columns) == [
        "image_index", "image_id", "method", "true_label", "pred_top5", "explained_class",
        "explains_top1", "explains_true", "x0", "y0", "x1", "y1",
        "model_x0", "model_y0", "model_x1", "model_y1", "true_boxes", "iou", "loc_correct",
        "top1_correct", "top5_correct", "top1_loc", "top5_loc", "gt_known_loc",
        *CURVES, "protocol",
    ]  # fmt: skip
    assert set(rows["protocol"]) == {"sklearn-caf"}
    assert report.config["protocol"] == "sklearn-caf"
    assert report.summary.attrs["protocol"] == "sklearn-caf"
    # Image by image, methods in order; image 2 has Grad-CAM's class-0 and class-1 maps.
    assert rows["image_index"].tolist() == [0, 0, 1, 1, 2, 2, 2, 3, 3]
    assert rows["method"].tolist() == ["gradcam", "l2caf"] * 2 + ["gradcam"] * 2 + [
        "l2caf",
        "gradcam",
        "l2caf",
    ]
    assert rows["image_id"].tolist() == ["0", "0", "1", "1", "2", "2", "2", "3", "3"]
    assert rows["explained_class"].tolist() == [0, -1, 0, -1, 0, 1, -1, 0, -1]
    assert rows["explains_top1"].tolist() == [True] * 5 + [False] + [True] * 3
    assert rows["explains_true"].tolist() == [True] * 4 + [False] + [True] * 4
    assert all(list(p) == [0, 1] for p in rows["pred_top5"])
    boxes = rows[["x0", "y0", "x1", "y1"]].to_numpy()
    expected_boxes = [
        [2, 2, 6, 6], [2, 2, 6, 6], [8, 8, 12, 12], [8, 8, 12, 12],
        [0, 0, 4, 4], [0, 0, 16, 16], [0, 0, 4, 4], [1, 10, 5, 14], [1, 10, 5, 14],
    ]  # fmt: skip
    np.testing.assert_array_equal(boxes, expected_boxes)
    # Arrays have no other frame: the model's box is the image's, the truth as given.
    model = ["model_x0", "model_y0", "model_x1", "model_y1"]
    np.testing.assert_array_equal(rows[model].to_numpy(), expected_boxes)
    given = [[[2, 2, 6, 6]], [[8, 8, 12, 14]], [[0, 0, 4, 4]], [[10, 2, 12, 4]]]
    assert [np.stack(b).tolist() for b in rows["true_boxes"]] == [
        given[i] for i in rows["image_index"]
    ]
    np.testing.assert_allclose(rows["iou"], [1, 1, 2 / 3, 2 / 3, 1, 1 / 16, 1, 0, 0])

    # Curves: at 0 every pixel is kept (the whole image); above 0, the blobs (nothing for
    # the constant class-1 map).
    whole = np.array([1 / 16, 24 / 256, 1 / 16, 4 / 256])
    above_v1 = {"gradcam": [1, 2 / 3, 0, 0], "l2caf": [1, 2 / 3, 1, 0]}
    above_v2 = {"gradcam": [1, 2 / 3, 0, 1], "l2caf": [1, 2 / 3, 1, 1]}
    for method in ("gradcam", "l2caf"):
        true_rows = rows[(rows["method"] == method) & rows["explains_true"]]
        v1, v2 = (np.stack(true_rows[c]) for c in CURVES)
        assert v1.shape == (4, 100)
        np.testing.assert_allclose(v1[:, 0], whole)
        np.testing.assert_allclose(v2[:, 0], whole)
        np.testing.assert_allclose(v1[:, 1:], np.repeat([above_v1[method]], 99, 0).T)
        np.testing.assert_allclose(v2[:, 1:], np.repeat([above_v2[method]], 99, 0).T)

    summary = report.summary
    assert list(summary.columns) == list(CLASSIFICATION_SUMMARY)
    assert summary.index.tolist() == ["gradcam", "l2caf"]
    # gradcam: top-1 right on 0, 1, 3; localized on 0, 1. l2caf also localizes image 2's
    # true class (its one map of the whole output), which top-1 does not count.
    np.testing.assert_allclose(
        summary.loc["gradcam"], [0.75, 1, 0.5, 0.5, 0.5, 0.5, (0.75 + 0.75 + 0.5) / 3, 0.01]
    )
    np.testing.assert_allclose(
        summary.loc["l2caf"], [0.75, 1, 0.5, 0.75, 0.75, 0.75, (1 + 1 + 0.75) / 3, 0.01]
    )
    assert report.complete and report.n_images == 4


def test_rows_agree_with_heatmap_boxes_and_the_curves(wsol):
    """The box at box_threshold is HeatmapBoxes' box; the v1 curve at that threshold its IoU."""
    net = pooled_cnn()
    explainer = GradCAMExplainer(model=net, layer="pool", top_k=2)
    report = evaluate_localization(
        {"g": explainer}, wsol, batch_size=5, progress=False, protocol="sklearn-caf"
    )
    rows = report.per_image
    X = wsol.load(np.arange(len(wsol)))[0]
    fitted = GradCAMExplainer(model=net, layer="pool").fit(X)
    maps = fitted.transform(X[rows["image_index"]], targets=rows["explained_class"].to_numpy())
    boxes = HeatmapBoxes(threshold=0.2).fit_transform(maps)[:, :4]
    np.testing.assert_array_equal(rows[["model_x0", "model_y0", "model_x1", "model_y1"]], boxes)
    np.testing.assert_array_equal(rows[["x0", "y0", "x1", "y1"]].to_numpy(), boxes)
    truth = [wsol.boxes[i] for i in rows["image_index"]]
    np.testing.assert_allclose(rows["iou"], best_iou(boxes, truth))
    nonconstant = np.ptp(maps.reshape(len(maps), -1), axis=1) > 0
    np.testing.assert_allclose(
        np.stack(rows["iou_curve_v1"])[nonconstant, 20], rows["iou"][nonconstant]
    )
    # top_k=2: two predicted classes per image, plus the true class where it is not among them.
    per_image = rows.groupby("image_index").size()
    expected = [
        2 + (lab not in top[:2])
        for lab, top in zip(
            wsol.labels, rows.groupby("image_index")["pred_top5"].first(), strict=True
        )
    ]
    assert per_image.tolist() == expected
    # The v2 curve is never below v1 (the largest component is one of the components).
    assert (np.stack(rows["iou_curve_v2"]) >= np.stack(rows["iou_curve_v1"]) - 1e-12).all()

    # The default protocol, "wsol": the curves of box_iou_curve_pair(protocol="wsol"), and
    # every table says so.
    default = evaluate_localization({"g": explainer}, wsol, batch_size=5, progress=False)
    v1, v2 = box_iou_curve_pair(maps, truth, protocol="wsol")
    np.testing.assert_array_equal(np.stack(default.per_image["iou_curve_v1"]), v1)
    np.testing.assert_array_equal(np.stack(default.per_image["iou_curve_v2"]), v2)
    assert set(default.per_image["protocol"]) == {"wsol"}
    assert default.config["protocol"] == "wsol"
    assert default.summary.attrs["protocol"] == "wsol"
    assert not np.array_equal(v1, np.stack(rows["iou_curve_v1"]))  # the protocols differ


def test_explainers_given_are_not_changed_and_fitted_ones_are_used(wsol):
    net = pooled_cnn()
    unfitted = GradCAMExplainer(model=net, layer="pool")
    fitted = GradCAMExplainer(model=net, layer="pool").fit(wsol.load([0])[0])
    a = evaluate_localization({"m": unfitted}, wsol, progress=False)
    b = evaluate_localization({"m": fitted}, wsol, progress=False)
    assert not hasattr(unfitted, "bound_")
    assert_same_rows(a.per_image, b.per_image)


# -- resuming ---------------------------------------------------------------------------------
def test_out_writes_parts_resumes_and_refuses_another_configuration(wsol, tmp_path):
    net = pooled_cnn()
    fresh = evaluate_localization(methods(net), wsol, batch_size=5, progress=False)
    out = tmp_path / "run"
    first = evaluate_localization(methods(net), wsol, batch_size=5, out=out, progress=False)
    parts = sorted(out.glob("part-*.parquet"))
    assert [p.name for p in parts] == [f"part-{i:06d}.parquet" for i in range(3)]
    assert_same_rows(first.per_image, fresh.per_image)
    pd.testing.assert_frame_equal(first.summary, fresh.summary)
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["n_chunks"] == 3 and manifest["batch_size"] == 5
    assert manifest["dataset"]["fingerprint"] == wsol.fingerprint()
    assert "model" not in manifest["explainers"]["gradcam"]["params"]
    assert manifest["explainers"]["gradcam"]["model"] == model_fingerprint(net)

    # A lost chunk and a temporary file of a killed write: only that chunk is recomputed.
    before = {p.name: p.stat().st_mtime_ns for p in parts}
    parts[1].unlink()
    (out / ".part-000001.parquet.123-abc.tmp").write_bytes(b"half a file")
    partial = load_report(out)
    assert not partial.complete and partial.n_images == 7
    resumed = evaluate_localization(methods(net), wsol, batch_size=5, out=out, progress=False)
    assert_same_rows(resumed.per_image, fresh.per_image)
    after = {p.name: p.stat().st_mtime_ns for p in out.glob("part-*.parquet")}
    assert after["part-000000.parquet"] == before["part-000000.parquet"]
    assert after["part-000002.parquet"] == before["part-000002.parquet"]
    assert not list(out.glob(".*.tmp"))

    changed = [
        ({**methods(net), "gradcam": GradCAMExplainer(model=net, layer="conv")}, {}, "layer"),
        (methods(pooled_cnn(seed=1)), {}, "sha256"),
        (methods(net), {"box_threshold": 0.3}, "box_threshold"),
        (methods(net), {"thresholds": [0.1, 0.5]}, "thresholds"),
        (methods(net), {"batch_size": 4}, "batch_size"),
    ]
    for explainers, kwargs, what in changed:
        with pytest.raises(ValueError, match=f"different configuration.*{what}"):
            evaluate_localization(
                explainers, wsol, **{"batch_size": 5, **kwargs}, out=out, progress=False
            )
    other_data = make_wsol_dataset(12, image_size=32, n_classes=3, random_state=1)
    with pytest.raises(ValueError, match=r"different configuration.*dataset\.fingerprint"):
        evaluate_localization(methods(net), other_data, batch_size=5, out=out, progress=False)


_KILL_SCRIPT = textwrap.dedent(
    """
    import os, sys, time
    from collections import OrderedDict
    import torch
    from torch import nn
    torch.set_num_threads(1)
    from sklearn_caf import GradCAMExplainer, L2CAFExplainer
    from sklearn_caf.datasets import make_wsol_dataset
    from sklearn_caf.evaluation import evaluate_localization


    class SlowGradCAM(GradCAMExplainer):
        # Slow (in the killed process only) so that the test can kill it mid-run.
        def explain(self, X, targets=None):
            time.sleep(float(os.environ.get("KILLRUN_SLEEP", "0")))
            return super().explain(X, targets)


    def setup():
        torch.manual_seed(0)
        net = nn.Sequential(OrderedDict(conv=nn.Conv2d(3, 6, 3, padding=1), relu=nn.ReLU(),
                                        pool=nn.AvgPool2d(4), gap=nn.AdaptiveAvgPool2d(1),
                                        flatten=nn.Flatten(), fc=nn.Linear(6, 3))).eval()
        data = make_wsol_dataset(20, image_size=32, n_classes=3, random_state=0)
        return {"gradcam": SlowGradCAM(model=net, layer="pool"),
                "l2caf": L2CAFExplainer(model=net, layer="pool")}, data


    if __name__ == "__main__":
        import killrun  # the classes as the test process names them (killrun.SlowGradCAM)

        explainers, data = killrun.setup()
        evaluate_localization(explainers, data, batch_size=2, out=sys.argv[1], progress=False)
    """
)


def test_a_run_killed_with_sigkill_resumes_to_the_serial_rows(tmp_path, monkeypatch):
    (tmp_path / "killrun.py").write_text(_KILL_SCRIPT)
    monkeypatch.syspath_prepend(str(tmp_path))
    import killrun

    out = tmp_path / "run"
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(ROOT), *sys.path]),
        "KILLRUN_SLEEP": "0.15",
    }
    proc = subprocess.Popen([sys.executable, str(tmp_path / "killrun.py"), str(out)], env=env)
    try:
        deadline = time.monotonic() + 120
        while len(list(out.glob("part-*.parquet"))) < 3 and time.monotonic() < deadline:
            assert proc.poll() is None, "the run ended before it could be killed"
            time.sleep(0.02)
        proc.send_signal(signal.SIGKILL)
        assert proc.wait(30) == -signal.SIGKILL
    finally:
        if proc.poll() is None:
            proc.kill()
    n_parts = len(list(out.glob("part-*.parquet")))
    assert 3 <= n_parts < 10
    assert not load_report(out).complete
    assert (out / ".lock").exists()  # the killed run's lock: released by the kernel

    explainers, data = killrun.setup()
    resumed = evaluate_localization(explainers, data, batch_size=2, out=out, progress=False)
    serial = evaluate_localization(explainers, data, batch_size=2, progress=False)
    assert resumed.complete
    assert_same_rows(resumed.per_image, serial.per_image)
    assert resumed.per_image.groupby("method")["image_index"].nunique().tolist() == [20, 20]
    pd.testing.assert_frame_equal(resumed.summary, serial.summary)


# -- scale-out --------------------------------------------------------------------------------
def test_dask_local_cluster_gives_the_serial_rows(wsol):
    distributed = pytest.importorskip("distributed")
    import joblib

    net = pooled_cnn()
    serial = evaluate_localization(methods(net), wsol, batch_size=3, progress=False)
    with (
        distributed.LocalCluster(
            processes=True, n_workers=2, threads_per_worker=1, dashboard_address=None
        ) as cluster,
        distributed.Client(cluster) as client,
        joblib.parallel_backend("dask"),
    ):
        report = evaluate_localization(methods(net), wsol, batch_size=3, progress=False)
        workers = client.run(os.getpid)
    assert len(set(workers.values())) == 2
    assert_same_rows(report.per_image, serial.per_image)
    pd.testing.assert_frame_equal(report.summary, serial.summary)


# -- retrieval --------------------------------------------------------------------------------
def test_retrieval_rows_and_metrics(wsol):
    torch.manual_seed(3)
    net = pooled_cnn(n_out=8, seed=3)
    report = evaluate_localization(
        {
            "l2caf": L2CAFExplainer(model=net, layer="pool"),
            "gradcam-abs": GradCAMExplainer(
                model=net, layer="pool", objective="embedding", activation="abs"
            ),
        },
        wsol,
        task="retrieval",
        batch_size=5,
        progress=False,
    )
    rows = report.per_image
    assert list(report.summary.columns) == list(RETRIEVAL_SUMMARY)
    assert {"nn_label", "embedding", "retrieval_correct", "retrieval_loc"} <= set(rows.columns)
    assert "pred_top5" not in rows.columns
    assert (rows["explained_class"] == -1).all() and len(rows) == 2 * len(wsol)
    X = wsol.load(np.arange(len(wsol)))[0]
    with torch.no_grad():
        emb = net(torch.from_numpy(X)).numpy().astype(np.float64)
    unit = emb / np.linalg.norm(emb, axis=1, keepdims=True)
    sim = unit @ unit.T
    np.fill_diagonal(sim, -np.inf)
    nn_label = wsol.labels[sim.argmax(axis=1)]
    for method, m_rows in rows.groupby("method", sort=False):
        np.testing.assert_array_equal(m_rows["nn_label"], nn_label)
        np.testing.assert_allclose(np.stack(m_rows["embedding"]), emb, rtol=1e-5, atol=1e-6)
        ok = nn_label == wsol.labels
        summary = report.summary.loc[method]
        assert summary["recall_at_1"] == pytest.approx(ok.mean())
        assert summary["retrieval_loc"] == pytest.approx((ok & (m_rows["iou"] >= 0.5)).mean())
        assert summary["gt_known_loc"] == pytest.approx((m_rows["iou"] >= 0.5).mean())
    metrics = pytest.importorskip("sklearn_caf.metrics")
    if hasattr(metrics, "recall_at_k"):
        assert report.summary["recall_at_1"].iloc[0] == pytest.approx(
            metrics.recall_at_k(emb, wsol.labels, k=1)
        )
        assert report.summary["nmi"].iloc[0] == pytest.approx(
            metrics.clustering_nmi(emb, wsol.labels, random_state=0)
        )

    with pytest.raises(ValueError, match="task='retrieval' needs maps of the whole embedding"):
        evaluate_localization(
            {"g": GradCAMExplainer(model=net, layer="pool")}, wsol, task="retrieval"
        )


# -- a Keras model through the runner ---------------------------------------------------------
def test_keras_model_gives_the_torch_rows():
    from conftest import keras_twin

    net = pooled_cnn()
    twin = keras_twin(net)
    data = make_wsol_dataset(6, image_size=32, n_classes=3, random_state=2)
    data_nhwc = make_wsol_dataset(
        6, image_size=32, n_classes=3, random_state=2, channels_last=True
    )
    torch_report = evaluate_localization(
        {"gradcam": GradCAMExplainer(model=net, layer="pool")}, data, progress=False
    )
    keras_report = evaluate_localization(
        {"gradcam": GradCAMExplainer(model=twin, layer="pool")}, data_nhwc, progress=False
    )
    a, b = torch_report.per_image, keras_report.per_image
    assert a["pred_top5"].map(list).tolist() == b["pred_top5"].map(list).tolist()
    np.testing.assert_array_equal(a[["x0", "y0", "x1", "y1"]], b[["x0", "y0", "x1", "y1"]])
    np.testing.assert_allclose(a["iou"], b["iou"])
    pd.testing.assert_frame_equal(torch_report.summary, keras_report.summary)


# -- errors -----------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"task": "segmentation"}, "task must be"),
        ({"box_threshold": 1.5}, "box_threshold must be"),
        ({"thresholds": [0.5, 0.2]}, "strictly increasing"),
        ({"thresholds": [0.5, 2.0]}, r"\[0, 1\]"),
        ({"batch_size": 0}, "batch_size must be"),
        ({"n_jobs": 1.5}, "n_jobs must be"),
        ({"protocol": "opencv"}, "protocol must be one of"),
    ],
)
def test_bad_arguments_are_refused(wsol, kwargs, message):
    with pytest.raises(ValueError, match=message):
        evaluate_localization({"g": GradCAMExplainer(model=pooled_cnn())}, wsol, **kwargs)


def test_bad_explainers_and_datasets_are_refused(wsol, tmp_path):
    with pytest.raises(ValueError, match="non-empty dict"):
        evaluate_localization({}, wsol)
    with pytest.raises(TypeError, match=r"explainers\['g'\] must be an explainer"):
        evaluate_localization({"g": HeatmapBoxes()}, wsol)
    with pytest.raises(TypeError, match="ImageBoxDataset"):
        evaluate_localization({"g": GradCAMExplainer(model=pooled_cnn())}, np.zeros((2, 3)))
    with pytest.raises(ValueError, match="model has 2 outputs"):
        evaluate_localization(
            {"g": GradCAMExplainer(model=pooled_cnn(n_out=2), layer="pool")}, wsol
        )
    with pytest.raises(FileNotFoundError, match=r"manifest\.json is missing"):
        load_report(tmp_path)
    (tmp_path / "part-000000.parquet").write_bytes(b"")
    with pytest.raises(ValueError, match=r"no manifest\.json"):
        evaluate_localization(
            {"g": GradCAMExplainer(model=pooled_cnn(), layer="pool")}, wsol, out=tmp_path
        )


class _NaNOnMarker(nn.Module):
    """pooled_cnn whose outputs (where="outputs") or features at "poison" (where="maps",
    cleaned before the head: the outputs stay finite, the maps do not; they used to be
    normalized into all-zero heatmaps) are NaN for the images marked by x[:, 0, 0, 0] == 7."""

    def __init__(self, where):
        super().__init__()
        self.net, self.where = pooled_cnn(), where
        self.poison = nn.Identity()

    def forward(self, x):
        nan = torch.where((x[:, 0, 0, 0] == 7.0)[:, None], float("nan"), 0.0)
        h = self.net.pool(self.net.relu(self.net.conv(x)))
        if self.where == "maps":
            h = torch.nan_to_num(self.poison(h + nan[:, :, None, None]))
        y = self.net.fc(self.net.flatten(self.net.gap(h)))
        return y + nan if self.where == "outputs" else y  # added: others' gradients finite


# max_iter=5 keeps the L2-CAF case short; its filters need not converge.
@pytest.mark.filterwarnings("ignore:L2-CAF did not converge:sklearn.exceptions.ConvergenceWarning")
def test_non_finite_outputs_or_maps_are_errors_naming_the_image(wsol, tmp_path):
    # As the issue measured it: NaN logits gave pred_top5 = [0, 1, 2] and whole-image boxes.
    X, y, boxes = wsol.load(np.arange(8))
    X = X.copy()
    X[5, 0, 0, 0] = 7.0
    data = ImageBoxDataset.from_arrays(X, y, boxes)
    specific = {"objective": "class-specific", "max_iter": 5}
    cases = [
        ("outputs", "net.pool", GradCAMExplainer, {}, r"model outputs \(logits\)"),
        ("outputs", "net.pool", L2CAFExplainer, specific, r"model outputs \(logits\)"),
        ("maps", "poison", GradCAMExplainer, {}, "maps"),
    ]
    for where, layer, kind, params, what in cases:
        net = _NaNOnMarker(where).eval()
        explainer = kind(model=net, layer=layer, **params)
        with pytest.raises(ValueError, match=rf"the {what} of image 5 \(id '5'\).*not finite"):
            evaluate_localization({"m": explainer}, data, batch_size=4, progress=False)
    # What was done before stays, and is resumable.
    out = tmp_path / "run"
    net = _NaNOnMarker("outputs").eval()
    with pytest.raises(ValueError, match="image 5"):
        evaluate_localization(
            {"m": GradCAMExplainer(model=net, layer="net.pool")},
            data,
            batch_size=4,
            out=out,
            progress=False,
        )
    partial = load_report(out)
    assert not partial.complete and partial.n_images == 4


def test_model_fingerprint_hashes_weights():
    a, b = pooled_cnn(seed=0), pooled_cnn(seed=0)
    assert model_fingerprint(a) == model_fingerprint(b)
    assert model_fingerprint(a)["kind"] == "weights"
    assert model_fingerprint(a)["n_values"] == sum(p.numel() for p in a.parameters())
    with torch.no_grad():
        b.fc.bias[0] += 1e-6
    assert model_fingerprint(a)["sha256"] != model_fingerprint(b)["sha256"]
    assert model_fingerprint(object())["kind"] == "class"
    assert "architecture" in model_fingerprint(a)


def test_model_fingerprint_covers_the_torch_architecture(wsol, tmp_path):
    # Same weights, another pooling or activation: the weights' hash agrees, the
    # architecture's does not; the same model rebuilt agrees on both.
    a = pooled_cnn()
    assert model_fingerprint(a) == model_fingerprint(pooled_cnn())
    variants = {"pool": nn.MaxPool2d(4), "relu": nn.LeakyReLU(0.01)}
    for name, module in variants.items():
        b = pooled_cnn()
        setattr(b, name, module)
        fa, fb = model_fingerprint(a), model_fingerprint(b)
        assert fa["sha256"] == fb["sha256"]
        assert fa["architecture"] != fb["architecture"], name
    c = pooled_cnn()
    c.pool.ceil_mode = True  # not in AvgPool2d's extra_repr
    assert model_fingerprint(c)["architecture"] != model_fingerprint(a)["architecture"]
    # Traced models (torch.fx): their generated code is hashed too.
    b = pooled_cnn()
    b.pool = nn.MaxPool2d(4)
    traced = [torch.fx.symbolic_trace(m) for m in (a, pooled_cnn(), b)]
    assert model_fingerprint(traced[0]) == model_fingerprint(traced[1])
    assert (
        model_fingerprint(traced[0])["architecture"]
        != model_fingerprint(traced[2])["architecture"]
    )

    # As the issue measured it: a resume with the other architecture is refused.
    out = tmp_path / "run"
    gradcam = {"gradcam": GradCAMExplainer(model=a, layer="pool")}
    evaluate_localization(gradcam, wsol, batch_size=5, out=out, progress=False)
    (out / "part-000002.parquet").unlink()
    with pytest.raises(ValueError, match=r"different configuration.*model\.architecture"):
        evaluate_localization(
            {"gradcam": GradCAMExplainer(model=b, layer="pool")},
            wsol,
            batch_size=5,
            out=out,
            progress=False,
        )


def test_model_fingerprint_covers_the_keras_architecture():
    from conftest import import_tensorflow

    _, keras = import_tensorflow()
    L = keras.layers

    def build(pool, act):
        images = keras.Input((16, 16, 3), name="images")
        h = L.Conv2D(4, 3, padding="same", name="conv")(images)
        h = act(name="act")(h)
        h = pool(2, name="pool")(h)
        h = L.GlobalAveragePooling2D(name="gap")(h)
        return keras.Model(images, L.Dense(3, name="fc")(h))

    reference = build(L.AveragePooling2D, L.ReLU)
    weights = reference.get_weights()

    def fingerprint(pool, act):
        model = build(pool, act)
        model.set_weights(weights)
        return model_fingerprint(model)

    a = model_fingerprint(reference)
    assert a == fingerprint(L.AveragePooling2D, L.ReLU)  # rebuilt (another model name)
    for other in (fingerprint(L.MaxPooling2D, L.ReLU), fingerprint(L.AveragePooling2D, L.ELU)):
        assert other["sha256"] == a["sha256"]
        assert other["architecture"] != a["architecture"]


def test_the_manifest_names_explainers_by_their_public_path(wsol, tmp_path):
    # Runs resume across a regrouping of the private modules: the manifest records where
    # users import each explainer from, and a manifest written before the regrouping
    # (explainers under sklearn_caf._l2caf and sklearn_caf._gradcam) still resumes.
    net = pooled_cnn()
    out = tmp_path / "run"
    first = evaluate_localization(methods(net), wsol, batch_size=5, out=out, progress=False)
    manifest_path = out / "manifest.json"
    manifest = json.loads(manifest_path.read_text())
    classes = {name: e["class"] for name, e in manifest["explainers"].items()}
    assert set(classes.values()) <= {"sklearn_caf.L2CAFExplainer", "sklearn_caf.GradCAMExplainer"}
    former = {
        "sklearn_caf.L2CAFExplainer": "sklearn_caf._l2caf.L2CAFExplainer",
        "sklearn_caf.GradCAMExplainer": "sklearn_caf._gradcam.GradCAMExplainer",
    }
    for explainer in manifest["explainers"].values():
        explainer["class"] = former[explainer["class"]]
    manifest_path.write_text(json.dumps(manifest, indent=2) + "\n")
    (out / "part-000001.parquet").unlink()
    resumed = evaluate_localization(methods(net), wsol, batch_size=5, out=out, progress=False)
    assert resumed.complete
    assert_same_rows(resumed.per_image, first.per_image)
    assert resumed.config["explainers"] == first.config["explainers"]


def test_a_list_of_explainers_is_refused_in_one_short_line(wsol):
    # The message names what was given, not the repr of the models inside (a 20-line dump).
    net = pooled_cnn()
    with pytest.raises(
        ValueError,
        match=r"non-empty dict.*got a list of 2 \(GradCAMExplainer, L2CAFExplainer\)\.$",
    ) as error:
        evaluate_localization(
            [GradCAMExplainer(model=net, layer="pool"), L2CAFExplainer(model=net, layer="pool")],
            wsol,
            progress=False,
        )
    assert "\n" not in str(error.value) and len(str(error.value)) < 250
    with pytest.raises(ValueError, match=r"got an empty dict\.$"):
        evaluate_localization({}, wsol, progress=False)


def test_pxap_is_reported_for_a_dataset_with_masks(wsol, tmp_path):
    """PxAP of the true class's maps, counts summed over chunks, as pixel_average_precision."""
    from sklearn_caf.metrics import pixel_average_precision

    X, y, boxes = wsol.load(np.arange(len(wsol)))
    rng = np.random.default_rng(0)
    masks = np.zeros((len(wsol), 32, 32), bool)
    for i, b in enumerate(boxes):
        x0, y0, x1, y1 = b[0].astype(int)
        masks[i, y0:y1, x0:x1] = True
    masks ^= rng.random(masks.shape) < 0.05
    ignore = rng.random(masks.shape) < 0.1
    data = ImageBoxDataset.from_arrays(X, y, boxes, masks=masks, ignore=ignore)
    net = pooled_cnn()
    explainer = GradCAMExplainer(model=net, layer="pool", top_k=2)
    report = evaluate_localization(
        {"g": explainer}, data, batch_size=5, progress=False, out=tmp_path / "run"
    )
    assert "pxap" in report.summary.columns
    fitted = GradCAMExplainer(model=net, layer="pool").fit(X)
    maps = fitted.transform(X, targets=y)
    expected = pixel_average_precision(maps.reshape(len(X), 32, 32), masks, ignore=ignore)
    assert report.summary.loc["g", "pxap"] == expected
    assert load_report(tmp_path / "run").summary.loc["g", "pxap"] == expected
    assert 0 < expected < 1
    # Without masks: no PxAP column.
    plain = evaluate_localization({"g": explainer}, wsol, batch_size=5, progress=False)
    assert "pxap" not in plain.summary.columns
