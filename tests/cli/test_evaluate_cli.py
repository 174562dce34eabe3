"""``sklearn-caf evaluate``: a whole run on a dataset on disk, resuming, and one-line errors."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("torch")
pd = pytest.importorskip("pandas")
pytest.importorskip("pyarrow")
pytest.importorskip("matplotlib")
Image = pytest.importorskip("PIL.Image")

from sklearn_caf.cli import main  # noqa: E402
from sklearn_caf.evaluation import load_report  # noqa: E402

ROOT = Path(__file__).resolve().parents[2]

_FACTORY = textwrap.dedent(
    """
    from collections import OrderedDict
    import torch
    from torch import nn


    def net():
        torch.manual_seed(0)
        return nn.Sequential(OrderedDict(conv=nn.Conv2d(3, 6, 3, padding=1), relu=nn.ReLU(),
                                        pool=nn.AvgPool2d(4), gap=nn.AdaptiveAvgPool2d(1),
                                        flatten=nn.Flatten(), fc=nn.Linear(6, 3))).eval()


    def broken():
        raise RuntimeError("no weights here")
    """
)


@pytest.fixture
def wsol_dir(tmp_path, monkeypatch):
    """Eight 40x48 PNGs with a coloured rectangle each, in wsolevaluation's metadata layout."""
    rng = np.random.default_rng(0)
    images = tmp_path / "images"
    meta = tmp_path / "metadata"
    (images / "train").mkdir(parents=True)
    meta.mkdir()
    ids, labels, sizes, boxes = [], [], [], []
    for i in range(8):
        label = i % 3
        pixels = rng.integers(0, 60, (40, 48, 3), dtype=np.uint8)
        x0, y0 = int(rng.integers(0, 24)), int(rng.integers(0, 20))
        pixels[y0 : y0 + 16, x0 : x0 + 20, label] = 230
        path = f"train/img_{i}.png"
        Image.fromarray(pixels).save(images / path)
        ids.append(path)
        labels.append(f"{path},{label}")
        sizes.append(f"{path},48,40")
        boxes.append(f"{path},{x0},{y0},{x0 + 19},{y0 + 15}")  # inclusive, as wsolevaluation
    for name, lines in (
        ("image_ids.txt", ids),
        ("class_labels.txt", labels),
        ("image_sizes.txt", sizes),
        ("localization.txt", boxes),
    ):
        (meta / name).write_text("\n".join(lines) + "\n")
    (tmp_path / "tinymodels.py").write_text(_FACTORY)
    monkeypatch.syspath_prepend(str(tmp_path))
    return tmp_path


def _args(root: Path, out: Path, *extra: str) -> list[str]:
    return [
        "evaluate",
        "--dataset", str(root / "metadata"),
        "--image-root", str(root / "images"),
        "--format", "wsol",
        "--model", "tinymodels:net",
        "--layer", "pool",
        "--image-size", "32",
        "--batch-size", "3",
        "--out", str(out),
        *extra,
    ]  # fmt: skip


def test_evaluate_writes_every_output_and_resumes(wsol_dir, capsys):
    out = wsol_dir / "run"
    args = _args(wsol_dir, out, "--methods", "l2caf-oblivious,gradcam", "--examples", "2")
    assert main(args) == 0
    printed = capsys.readouterr().out
    assert "l2caf-oblivious" in printed and "gradcam" in printed and "top1_loc" in printed
    assert "protocol 'wsol' (wsolevaluation's BoxEvaluator" in printed

    report = load_report(out)
    assert report.complete and report.n_images == 8
    assert report.config["protocol"] == "wsol"
    summary = pd.read_csv(out / "summary.csv", index_col="method")
    # The CSV names the box protocol of max_box_acc and max_box_acc_v2.
    assert summary.pop("protocol").tolist() == ["wsol", "wsol"]
    pd.testing.assert_frame_equal(summary, report.summary, check_exact=False, rtol=1e-12)
    per_image = pd.read_parquet(out / "per_image.parquet")
    assert per_image["image_id"].tolist() == report.per_image["image_id"].tolist()
    assert per_image["image_id"].iloc[0] == "train/img_0.png"
    curves = Image.open(out / "curves.png")
    assert curves.size == (1000, 400)
    sheet = np.asarray(Image.open(out / "contact_sheet.png"))
    assert sheet.ndim == 3 and sheet.shape[1] > 4 * 32  # two methods x (2 worst + 2 best)

    parts = {p: p.stat().st_mtime_ns for p in out.glob("part-*.parquet")}
    assert len(parts) == 3
    assert main([*args, "--quiet"]) == 0  # resumes: nothing recomputed
    assert {p: p.stat().st_mtime_ns for p in out.glob("part-*.parquet")} == parts

    capsys.readouterr()
    assert main([*args, "--box-threshold", "0.3", "--quiet"]) == 2
    err = capsys.readouterr().err.strip()
    assert "different configuration" in err and "box_threshold" in err
    assert len(err.splitlines()) == 1
    # Another box protocol is another configuration: never mixed into the same run.
    assert main([*args, "--protocol", "sklearn-caf"]) == 2
    err = capsys.readouterr().err.strip()
    assert "different configuration" in err and "protocol" in err
    other = wsol_dir / "run-sklearn-caf"
    assert main([*_args(wsol_dir, other, "--methods", "gradcam", "--examples", "0"),
                 "--protocol", "sklearn-caf", "--quiet"]) == 0  # fmt: skip
    assert pd.read_csv(other / "summary.csv")["protocol"].tolist() == ["sklearn-caf"]
    assert load_report(other).config["protocol"] == "sklearn-caf"


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"--methods": "gradcam,saliency"}, "unknown method 'saliency'"),
        ({"--dataset": "missing"}, "--dataset .*missing' does not exist"),
        ({"--image-root": "missing"}, "--image-root .*missing' does not exist"),
        ({"--out": "notadir.txt/run"}, "--out .* is not a writable directory"),
        ({"--out": "/proc/self"}, "--out '/proc/self' is not a writable directory"),  # even root
        (
            {"--model": "tinymodels"},
            r"--model must be 'efficientnet-lite0' \(the built-in model\) or 'package.module",
        ),
        ({"--model": "no_such_module:net"}, "cannot import 'no_such_module'"),
        ({"--model": "tinymodels:nothing"}, "has no function 'nothing'"),
        ({"--model": "tinymodels:broken"}, "failed: RuntimeError: no weights here"),
        ({"--layer": "nope"}, "nope"),
        ({"--box-threshold": "1.5"}, r"--box-threshold must be in \[0, 1\]"),
        ({"--task": "retrieval", "--methods": "l2caf-specific"}, "whole embedding"),
        ({"--format": "cub"}, "--dataset .*cub"),
    ],
)
def test_foreseeable_errors_are_one_line_with_status_2(wsol_dir, capsys, change, message):
    (wsol_dir / "notadir.txt").write_text("a file")
    out = wsol_dir / "run"
    args = _args(wsol_dir, out, "--quiet")
    for option, value in change.items():
        if option in args:
            at = args.index(option)
            args[at + 1] = (
                str(wsol_dir / value)
                if option in ("--dataset", "--image-root", "--out")
                else value
            )
        else:
            args += [option, value]
    assert main(args) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1, err
    assert err.startswith("sklearn-caf evaluate: error: ")
    import re

    assert re.search(message, err), err
    assert not list(out.glob("part-*.parquet"))


def test_a_malformed_dataset_is_an_error_before_computing(wsol_dir, capsys):
    labels = wsol_dir / "metadata" / "class_labels.txt"
    labels.write_text(labels.read_text().replace("train/img_3.png,0", "train/img_3.png,zero"))
    assert main(_args(wsol_dir, wsol_dir / "run", "--quiet")) == 2
    err = capsys.readouterr().err.strip()
    assert "class_labels.txt" in err and len(err.splitlines()) == 1


def test_the_command_does_not_import_torch_until_the_model_needs_it(tmp_path):
    code = (
        "import sys\n"
        "from sklearn_caf.cli import main\n"
        f"status = main(['evaluate', '--dataset', {str(tmp_path)!r}, '--format', 'voc', "
        f"'--out', {str(tmp_path / 'o')!r}, '--methods', 'gradcam,bogus'])\n"
        "assert status == 2, status\n"
        "assert 'torch' not in sys.modules and 'tensorflow' not in sys.modules\n"
    )
    env = {"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin"}
    result = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stderr
    assert "unknown method 'bogus'" in result.stderr


def test_scheduler_runs_the_chunks_on_a_dask_cluster(wsol_dir, capsys):
    """--scheduler ADDRESS: the same per-image rows as a serial run (an in-process cluster
    here, so that the test does not pay for starting worker processes)."""
    distributed = pytest.importorskip("distributed")
    serial, on_dask = wsol_dir / "serial", wsol_dir / "dask"
    assert main([*_args(wsol_dir, serial, "--methods", "gradcam"), "--quiet"]) == 0
    with distributed.LocalCluster(
        n_workers=1, threads_per_worker=1, processes=False, dashboard_address=None
    ) as cluster:
        args = _args(
            wsol_dir, on_dask, "--methods", "gradcam", "--scheduler", cluster.scheduler_address
        )
        assert main([*args, "--quiet"]) == 0
    pd.testing.assert_frame_equal(load_report(on_dask).per_image, load_report(serial).per_image)
    capsys.readouterr()
    args = _args(wsol_dir, wsol_dir / "x", "--scheduler", "tcp://127.0.0.1:9")
    assert main(args) == 2
    err = capsys.readouterr().err.strip()
    assert "--scheduler 'tcp://127.0.0.1:9': cannot connect" in err and len(err.splitlines()) == 1


# -- one truth: the CLI and the API ------------------------------------------------------------
def _api_run(root: Path, out: Path, preprocess=None):
    """What the CLI's run below is from Python: the same dataset, model and explainers."""
    import tinymodels

    from sklearn_caf import GradCAMExplainer, L2CAFExplainer
    from sklearn_caf.datasets import ImageBoxDataset
    from sklearn_caf.evaluation import evaluate_localization

    dataset = ImageBoxDataset.from_wsol(
        root / "metadata", root / "images", image_size=32, preprocess=preprocess
    )
    explainers = {
        "l2caf-oblivious": L2CAFExplainer(model=tinymodels.net(), layer="pool"),
        "gradcam": GradCAMExplainer(model=tinymodels.net(), layer="pool"),
    }
    return evaluate_localization(explainers, dataset, out=out, progress=False)


def _cli_args(root: Path, out: Path, *extra: str) -> list[str]:
    """The CLI's defaults, as a user types it: no --batch-size, no --box-threshold."""
    return [
        "evaluate",
        "--dataset", str(root / "metadata"),
        "--image-root", str(root / "images"),
        "--format", "wsol",
        "--model", "tinymodels:net",
        "--layer", "pool",
        "--image-size", "32",
        "--methods", "l2caf-oblivious,gradcam",
        "--examples", "0",
        "--out", str(out),
        *extra,
    ]  # fmt: skip


def _parts(out: Path) -> dict:
    return {p.name: p.stat().st_mtime_ns for p in out.glob("part-*.parquet")}


def _summary_csv(out):
    """summary.csv without its protocol column (the summary's, which the CSV adds)."""
    table = pd.read_csv(out / "summary.csv", index_col="method")
    assert (table.pop("protocol") == "wsol").all()
    return table


@pytest.mark.parametrize(
    ("option", "preprocess"),
    [
        ([], None),
        (["--preprocess", "imagenet"], {"mean": "imagenet", "std": "imagenet"}),
        (["--preprocess", "inception"], {"mean": "inception", "std": "inception"}),
    ],
)
def test_cli_and_api_give_the_same_tables_and_resume_each_other(
    wsol_dir, capsys, option, preprocess
):
    from sklearn_caf.datasets import NormalizeImage

    normalize = None if preprocess is None else NormalizeImage(**preprocess)
    cli_out, api_out = wsol_dir / "cli", wsol_dir / "api"
    assert main(_cli_args(wsol_dir, cli_out, *option)) == 0
    err = capsys.readouterr().err
    if option:
        assert "no --preprocess" not in err
    else:  # the default for a custom model is said, with its Python equivalent
        assert "--model tinymodels:net with no --preprocess" in err
        assert "preprocess=NormalizeImage()" in err
    api = _api_run(wsol_dir, api_out, normalize)

    cli = load_report(cli_out)
    pd.testing.assert_frame_equal(cli.summary, api.summary, check_exact=True)
    pd.testing.assert_frame_equal(
        _summary_csv(cli_out),
        api.summary,
        check_exact=False,
        rtol=1e-12,
    )
    pd.testing.assert_frame_equal(cli.per_image, api.per_image, check_exact=True)
    assert cli.summary["top1_acc"].notna().all()

    # The CLI's run folder resumes from Python, and the API's from the CLI: nothing recomputed.
    cli_parts, api_parts = _parts(cli_out), _parts(api_out)
    assert cli_parts and api_parts
    resumed = _api_run(wsol_dir, cli_out, normalize)
    assert _parts(cli_out) == cli_parts
    pd.testing.assert_frame_equal(resumed.summary, api.summary, check_exact=True)
    assert main(_cli_args(wsol_dir, api_out, *option, "--quiet")) == 0
    assert _parts(api_out) == api_parts
    pd.testing.assert_frame_equal(
        _summary_csv(api_out),
        api.summary,
        check_exact=False,
        rtol=1e-12,
    )


def test_another_preprocessing_is_another_run(wsol_dir, capsys):
    """The preprocessing is part of the run: a folder written with one is refused with
    another, on both paths (never silently mixed)."""
    out = wsol_dir / "run"
    assert main(_cli_args(wsol_dir, out, "--preprocess", "imagenet", "--quiet")) == 0
    assert main(_cli_args(wsol_dir, out, "--quiet")) == 2
    assert "different configuration" in capsys.readouterr().err
    with pytest.raises(ValueError, match="different configuration"):
        _api_run(wsol_dir, out)


_PREPROCESSORS = textwrap.dedent(
    """
    import numpy as np


    def halves(image):
        return (image.astype(np.float32) / 510).transpose(2, 0, 1)


    def batch(images):
        return np.stack([halves(image) for image in images])
    """
)


def test_preprocess_function_and_bad_specs(wsol_dir, capsys):
    (wsol_dir / "prep.py").write_text(_PREPROCESSORS)
    import prep

    out = wsol_dir / "fn"
    assert main(_cli_args(wsol_dir, out, "--preprocess", "prep:halves", "--quiet")) == 0
    pd.testing.assert_frame_equal(
        load_report(out).summary,
        _api_run(wsol_dir, wsol_dir / "fn-api", prep.halves).summary,
        check_exact=True,
    )
    for spec, message in [
        (
            "prep:batch",
            r"--preprocess 'prep:batch': preprocess=prep\.batch raised .*takes a batch",
        ),
        ("caffe", r"--preprocess 'caffe' is neither a preset \(\[0,1\], imagenet, inception"),
        ("prep:nothing", "has no function 'nothing'"),
    ]:
        capsys.readouterr()
        assert main(_cli_args(wsol_dir, wsol_dir / "bad", "--preprocess", spec)) == 2
        err = capsys.readouterr().err.strip()
        assert len(err.splitlines()) == 1, err
        import re

        assert re.search(message, err), err


# -- boxes in the images' own pixels ---------------------------------------------------------
def test_per_image_boxes_are_in_the_images_own_pixels(wsol_dir):
    """The 48 x 40 photos are explained at 32 x 32: x0... are in photo pixels, model_x0... in
    the model's, true_boxes the metadata's boxes (pixel edges), and the IoU is the same in
    both frames (a resize scales both boxes alike)."""
    from sklearn_caf.datasets import ImageBoxDataset
    from sklearn_caf.metrics import best_iou

    out = wsol_dir / "run"
    assert main(_cli_args(wsol_dir, out, "--methods", "gradcam", "--quiet")) == 0
    rows = pd.read_parquet(out / "per_image.parquet")
    own = rows[["x0", "y0", "x1", "y1"]].to_numpy()
    model = rows[["model_x0", "model_y0", "model_x1", "model_y1"]].to_numpy()
    np.testing.assert_allclose(own, model * [48 / 32, 40 / 32, 48 / 32, 40 / 32], rtol=1e-12)
    assert own.max() > 32  # really the photos' frame
    lines = (wsol_dir / "metadata" / "localization.txt").read_text().split()
    written = {path: [float(v) for v in box] for path, *box in (line.split(",") for line in lines)}
    truth = []
    for image_id, boxes in zip(rows["image_id"], rows["true_boxes"], strict=True):
        x0, y0, x1, y1 = written[image_id]  # inclusive, as wsolevaluation: + 1 at the end
        assert np.stack(boxes).tolist() == [[x0, y0, x1 + 1, y1 + 1]]
        truth.append(np.stack(boxes))
    np.testing.assert_allclose(rows["iou"], best_iou(own, truth), rtol=1e-9)
    ds = ImageBoxDataset.from_wsol(wsol_dir / "metadata", wsol_dir / "images", image_size=32)
    resized = [ds.boxes[i] for i in rows["image_index"]]
    np.testing.assert_allclose(rows["iou"], best_iou(model, resized), rtol=1e-12)


# -- help, errors and interruptions ----------------------------------------------------------
def test_every_option_has_help_and_says_its_default():
    from sklearn_caf.cli._main import _build_parser

    parser = _build_parser()
    evaluate = parser._subparsers._group_actions[0].choices["evaluate"]
    for action in evaluate._actions:
        if not action.option_strings or action.dest == "help":
            continue
        assert action.help, f"{action.option_strings[0]} has no help"
        if action.default not in (None, False) and not action.required:
            assert "default" in action.help, f"{action.option_strings[0]} hides its default"


def test_an_unknown_model_name_points_at_the_built_in_one(wsol_dir, capsys):
    args = _args(wsol_dir, wsol_dir / "out")
    args[args.index("tinymodels:net")] = "resnet50"
    assert main(args) == 2
    err = capsys.readouterr().err
    assert "'efficientnet-lite0' (the built-in model) or 'package.module:function'" in err


def test_ctrl_c_says_how_to_resume(wsol_dir, capsys, monkeypatch):
    import sklearn_caf.cli._evaluate as evaluate

    def interrupted(args):
        raise KeyboardInterrupt

    monkeypatch.setattr(evaluate, "_run", interrupted)
    assert main(_args(wsol_dir, wsol_dir / "out")) == 130
    err = capsys.readouterr().err
    assert "interrupted; run the same command again to resume" in err
    assert "Traceback" not in err


def test_a_full_disk_while_writing_the_outputs_is_one_line_and_leaves_no_tmp(
    wsol_dir, capsys, monkeypatch
):
    import errno

    import pandas as pd

    def full(self, path, *args, **kwargs):
        Path(path).write_bytes(b"PAR1")  # half written
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(pd.DataFrame, "to_parquet", full)
    out = wsol_dir / "run"
    assert main(_args(wsol_dir, out, "--quiet")) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1, err
    assert "per_image.parquet" in err and "No space left on device" in err, err
    assert not [p.name for p in out.iterdir() if p.name.endswith(".tmp")]


def test_a_missing_image_is_one_line_naming_it_with_status_2(wsol_dir, capsys):
    (wsol_dir / "images" / "train" / "img_5.png").unlink()
    out = wsol_dir / "run"
    assert main(_args(wsol_dir, out, "--quiet")) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1, err
    assert "img_5.png" in err and "not found" in err, err
    assert not [p.name for p in out.iterdir() if p.name.endswith(".tmp")]
