"""ImageBoxDataset (arrays, wsolevaluation, CUB, VOC), NormalizeImage and make_wsol_dataset.

Every on-disk test writes a tiny dataset of real PNG/JPEG files (Pillow) into ``tmp_path``;
expected labels and boxes are written by hand, and box coordinates are chosen so that the
resize rule's scalings are exact in binary floating point.
"""

from __future__ import annotations

import pickle
import re
import shutil
import textwrap

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from sklearn_caf.datasets import (
    DatasetFormatError,
    ImageBoxDataset,
    NormalizeImage,
    make_wsol_dataset,
)

Image = pytest.importorskip("PIL.Image")


def write_image(path, height, width, colour=(200, 100, 50), mode="RGB"):
    """A uniform image of the given size, mode ("RGB", "L", "RGBA", "P") and format (suffix)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    rgb = Image.new("RGB", (width, height), tuple(colour))
    if mode == "L":
        image = rgb.convert("L")
    elif mode == "RGBA":
        image = rgb.convert("RGBA")
        image.putalpha(0)  # fully transparent: dropping alpha must keep the colour
    elif mode == "P":
        image = rgb.convert("P")
    else:
        image = rgb
    image.save(path)


def write(path, text):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(textwrap.dedent(text).lstrip("\n"))


# -- wsolevaluation layout ------------------------------------------------------------------------
def make_wsol(tmp_path, *, sizes=True):
    """Three images: an RGB PNG 40x32 (2 boxes), a grayscale JPEG 20x20, an RGBA PNG 16x8.

    Boxes are written as wsolevaluation writes them, inclusive (``x1, y1`` the last pixel):
    as pixel edges they are [4, 4, 36, 28], [0, 0, 20, 20], [0, 8, 8, 32], [2, 1, 10, 7].
    """
    images = tmp_path / "images"
    write_image(images / "val" / "a.png", 32, 40)
    write_image(images / "val" / "b.jpg", 20, 20, colour=(128, 128, 128), mode="L")
    write_image(images / "val" / "c,comma.png", 8, 16, colour=(10, 20, 30), mode="RGBA")
    meta = tmp_path / "meta"
    write(meta / "image_ids.txt", "val/a.png\nval/b.jpg\nval/c,comma.png\n\n")
    write(meta / "class_labels.txt", "val/a.png,2\nval/b.jpg,0\nval/c,comma.png,7\n")
    if sizes:
        write(meta / "image_sizes.txt", "val/a.png,40,32\nval/b.jpg,20,20\nval/c,comma.png,16,8\n")
    write(
        meta / "localization.txt",
        """
        val/a.png,4,4,35,27
        val/b.jpg,0,0,19,19
        val/a.png,0,8,7,31
        val/c,comma.png,2,1,9,6
        """,
    )
    return meta, images


def test_wsol_labels_boxes_ids_after_resize(tmp_path):
    meta, images = make_wsol(tmp_path)
    ds = ImageBoxDataset.from_wsol(meta, images, image_size=(8, 20))
    assert len(ds) == 3
    assert ds.ids == ["val/a.png", "val/b.jpg", "val/c,comma.png"]
    np.testing.assert_array_equal(ds.labels, [2, 0, 7])
    assert ds.labels.dtype == np.int64
    assert ds.n_classes == 8 and ds.classes is None
    assert ds.image_size == (8, 20)
    # a.png: 40 x 32 -> 20 x 8: x * 0.5, y * 0.25; two boxes, in localization.txt order.
    np.testing.assert_array_equal(ds.boxes[0], [[2, 1, 18, 7], [0, 2, 4, 8]])
    np.testing.assert_array_equal(ds.boxes[1], [[0, 0, 20, 8]])  # the whole image stays whole
    np.testing.assert_array_equal(ds.boxes[2], [[2.5, 1, 12.5, 7]])  # 16 x 8 -> x * 1.25
    assert all(b.dtype == np.float64 for b in ds.boxes)


def test_wsol_images_are_rgb_resized_and_scaled_by_default(tmp_path):
    meta, images = make_wsol(tmp_path)
    ds = ImageBoxDataset.from_wsol(meta, images, image_size=(8, 20))
    image, label, boxes = ds[0]
    assert image.shape == (3, 8, 20) and image.dtype == np.float32
    np.testing.assert_array_equal(image[:, 0, 0], np.float32([200, 100, 50]) / np.float32(255))
    assert label == 2 and isinstance(label, int)
    np.testing.assert_array_equal(boxes, ds.boxes[0])
    gray = ds[1][0]  # grayscale JPEG: the same value on the three channels
    assert gray.shape == (3, 8, 20)
    np.testing.assert_allclose(gray, 128 / 255, atol=2 / 255)
    np.testing.assert_array_equal(gray[0], gray[2])
    rgba = ds[2][0]  # transparent RGBA: the alpha channel is dropped, the colour kept
    np.testing.assert_array_equal(rgba[:, 3, 5], np.float32([10, 20, 30]) / np.float32(255))


def test_wsol_without_sizes_reads_headers_for_boxes(tmp_path):
    meta, images = make_wsol(tmp_path, sizes=False)
    ds = ImageBoxDataset.from_wsol(meta, images, image_size=(8, 20))
    np.testing.assert_array_equal(ds.boxes[0], [[2, 1, 18, 7], [0, 2, 4, 8]])
    np.testing.assert_array_equal(ds.boxes[2], [[2.5, 1, 12.5, 7]])


def test_wsol_load_batch(tmp_path):
    meta, images = make_wsol(tmp_path)
    ds = ImageBoxDataset.from_wsol(
        meta, images, image_size=6, preprocess=NormalizeImage(channels_last=True)
    )
    X, y, boxes = ds.load([2, 0, -1])
    assert X.shape == (3, 6, 6, 3) and X.dtype == np.float32
    np.testing.assert_array_equal(y, [7, 2, 7])
    assert len(boxes) == 3
    # The rule, as documented: x * (w / W), y * (h / H) (here 6 / 40 and 6 / 32).
    scale = np.array([6 / 40, 6 / 32, 6 / 40, 6 / 32])
    np.testing.assert_array_equal(boxes[1], np.array([[4, 4, 36, 28], [0, 8, 8, 32]]) * scale)
    np.testing.assert_array_equal(X[0], X[2])
    with pytest.raises(IndexError, match="index 3 is out of range"):
        ds.load([0, 3])
    with pytest.raises(ValueError, match="indices is empty"):
        ds.load([])


def test_threaded_load_equals_serial_load(tmp_path):
    meta, images = make_wsol(tmp_path)
    for k in range(12):  # noisy JPEGs, so that every image differs
        pixels = np.random.RandomState(k).randint(0, 256, size=(24, 30, 3), dtype=np.uint8)
        Image.fromarray(pixels).save(images / f"n{k}.jpg")
    write(meta / "image_ids.txt", "".join(f"n{k}.jpg\n" for k in range(12)))
    write(meta / "class_labels.txt", "".join(f"n{k}.jpg,{k % 3}\n" for k in range(12)))
    write(meta / "image_sizes.txt", "".join(f"n{k}.jpg,30,24\n" for k in range(12)))
    write(meta / "localization.txt", "".join(f"n{k}.jpg,0,{k},29,23\n" for k in range(12)))
    ds = ImageBoxDataset.from_wsol(meta, images, image_size=(16, 20))
    order = [5, 0, 11, 3, 3, 7, 1]
    X1, y1, b1 = ds.load(order)
    X4, y4, b4 = ds.load(order, n_threads=4)
    np.testing.assert_array_equal(X1, X4)
    np.testing.assert_array_equal(y1, y4)
    assert [b.tolist() for b in b1] == [b.tolist() for b in b4]
    assert not np.array_equal(X1[0], X1[1])
    with pytest.raises(ValueError, match="n_threads must be a positive int"):
        ds.load(order, n_threads=0)


def test_wsol_classes_file_and_n_classes(tmp_path):
    meta, images = make_wsol(tmp_path)
    names = tmp_path / "synsets.txt"
    write(names, "\n".join(f"n0{k} name {k}, other" for k in range(10)))
    ds = ImageBoxDataset.from_wsol(meta, images, classes=names)
    assert ds.n_classes == 10 and ds.classes[7] == "n07"
    ds = ImageBoxDataset.from_wsol(meta, images, n_classes=1000, image_size=(4, 4))
    assert ds.n_classes == 1000
    with pytest.raises(ValueError, match="disagrees with len"):
        ImageBoxDataset.from_wsol(meta, images, classes=names, n_classes=9)


def test_wsol_max_images_and_box_conventions(tmp_path):
    meta, images = make_wsol(tmp_path)
    ds = ImageBoxDataset.from_wsol(meta, images, image_size=(32, 40), max_images=1)
    assert ds.ids == ["val/a.png"]
    # The default reads the files as inclusive: "4,4,35,27" is the pixel-edge box below.
    np.testing.assert_array_equal(ds.boxes[0], [[4, 4, 36, 28], [0, 8, 8, 32]])
    explicit = ImageBoxDataset.from_wsol(
        meta, images, image_size=(32, 40), box_convention="inclusive", max_images=1
    )
    np.testing.assert_array_equal(explicit.boxes[0], ds.boxes[0])
    edges = ImageBoxDataset.from_wsol(
        meta, images, image_size=(32, 40), box_convention="edges", max_images=1
    )
    np.testing.assert_array_equal(edges.boxes[0], [[4, 4, 35, 27], [0, 8, 7, 31]])
    # 1-based: "0,0,19,19" starts left of the image. Every line is checked, also those of
    # images beyond max_images.
    with pytest.raises(
        DatasetFormatError,
        match=r"localization.txt, line 2: the box \[-1.0, -1.0.*"
        r"read with box_convention='one_based' \(x0 - 1, y0 - 1\)",
    ):
        ImageBoxDataset.from_wsol(meta, images, box_convention="one_based", max_images=1)


@pytest.mark.parametrize("sizes", [True, False])
def test_wsol_boxes_ending_on_the_last_pixel_are_whole_image_edges(tmp_path, sizes):
    """wsolevaluation's files end boxes at x1 = W - 1, y1 = H - 1 (inclusive), never at W."""
    meta, images = make_wsol(tmp_path, sizes=sizes)
    write(
        meta / "localization.txt",
        """
        val/a.png,0,0,39,31
        val/b.jpg,3,0,19,19
        val/a.png,39,31,39,31
        val/c,comma.png,0,7,15,7
        """,
    )
    ds = ImageBoxDataset.from_wsol(meta, images, image_size=(32, 40))
    # a.png is 40 x 32 and read at its own size: the whole image, then its last pixel.
    np.testing.assert_array_equal(ds.boxes[0], [[0, 0, 40, 32], [39, 31, 40, 32]])
    # b.jpg 20 x 20 -> 40 x 32; c 16 x 8 -> 40 x 32: the box reaches the right edge.
    np.testing.assert_array_equal(ds.boxes[1], [[3 * 2, 0, 40, 32]])
    np.testing.assert_array_equal(ds.boxes[2], [[0, 7 * 4, 40, 32]])
    # Read as edges, the same lines would miss the last row and column, and the single last
    # pixel (line 3) would be an empty box.
    with pytest.raises(DatasetFormatError, match=r"localization.txt, line 3: the box is empty"):
        ImageBoxDataset.from_wsol(meta, images, box_convention="edges")
    # An edge-convention file whose boxes reach x1 = W is outside the image when read inclusive.
    write(meta / "localization.txt", "val/a.png,0,0,40,32\nval/b.jpg,0,0,19,19\n")
    if sizes:
        with pytest.raises(DatasetFormatError, match=r"line 1: the box \[0.0, 0.0, 41.0, 33.0\]"):
            ImageBoxDataset.from_wsol(meta, images)


@given(
    width=st.integers(1, 500),
    height=st.integers(1, 500),
    out=st.tuples(st.integers(1, 300), st.integers(1, 300)),
    fractions=st.lists(st.floats(0, 1), min_size=4, max_size=4),
)
def test_resize_rule_scales_pixel_edges(tmp_path_factory, width, height, out, fractions):
    """Property: a box [x0, y0, x1, y1] of a W x H image becomes exactly
    [x0 * w / W, y0 * h / H, x1 * w / W, y1 * h / H]; the image's own edges map to 0 and w, h."""
    a, b, c, d = fractions
    x0, x1 = sorted((round(a * width), round(b * width)))
    y0, y1 = sorted((round(c * height), round(d * height)))
    x1, y1 = max(x1, x0 + 1), max(y1, y0 + 1)
    if x1 > width:
        x0, x1 = width - 1, width
    if y1 > height:
        y0, y1 = height - 1, height
    root = tmp_path_factory.mktemp("prop")
    write(root / "image_ids.txt", "i.png\n")
    write(root / "class_labels.txt", "i.png,0\n")
    write(root / "image_sizes.txt", f"i.png,{width},{height}\n")
    write(
        root / "localization.txt",
        f"i.png,{x0},{y0},{x1 - 1},{y1 - 1}\ni.png,0,0,{width - 1},{height - 1}\n",
    )
    h, w = out
    ds = ImageBoxDataset.from_wsol(root, root, image_size=out)
    boxes = ds.boxes[0]
    expected = [x0 * (w / width), y0 * (h / height), x1 * (w / width), y1 * (h / height)]
    np.testing.assert_array_equal(boxes[0], expected)
    np.testing.assert_allclose(boxes[1], [0, 0, w, h], rtol=1e-15)
    assert (boxes[0] >= 0).all() and boxes[0][2] <= w * (1 + 1e-15)


# -- laziness -------------------------------------------------------------------------------------
def test_construction_opens_no_image(tmp_path, monkeypatch):
    meta, images = make_wsol(tmp_path)
    opened = []
    real_open = Image.open
    monkeypatch.setattr(Image, "open", lambda *a, **k: opened.append(a) or real_open(*a, **k))
    ds = ImageBoxDataset.from_wsol(meta, images, image_size=8)
    ds.boxes, ds.fingerprint(), pickle.dumps(ds), repr(ds)
    assert opened == []
    ds[1]
    assert len(opened) == 1


def test_missing_image_is_an_error_at_access_only(tmp_path):
    meta, images = make_wsol(tmp_path)
    ds = ImageBoxDataset.from_wsol(meta, images, image_size=8)
    (images / "val" / "b.jpg").unlink()
    ds[0]
    message = re.escape(str(images / "val" / "b.jpg")) + r".*not found.*image_ids.txt, line 2"
    with pytest.raises(FileNotFoundError, match=message):
        ds[1]
    with pytest.raises(FileNotFoundError, match=message):
        ds.load([0, 1])


def test_cub_boxes_need_headers_not_pixels(tmp_path):
    root = make_cub(tmp_path)
    ds = ImageBoxDataset.from_cub(root, image_size=16)
    (root / "images" / "002.Wren" / "w1.png").unlink()
    with pytest.raises(FileNotFoundError, match=r"w1\.png.*images.txt, line 3"):
        ds.boxes  # noqa: B018


# -- malformed wsol metadata ----------------------------------------------------------------------
WSOL_CASES = [
    # (file, new content, expected error, message pattern after "<file>, line <n>: ")
    (
        "class_labels.txt",
        "val/a.png,2\nval/b.jpg\n",
        DatasetFormatError,
        r"class_labels.txt, line 2: expected 'path,label'",
    ),
    (
        "class_labels.txt",
        "val/a.png,2\nval/b.jpg,x\n",
        DatasetFormatError,
        r"class_labels.txt, line 2: 'x' is not an integer",
    ),
    (
        "class_labels.txt",
        "val/a.png,2\nval/b.jpg,-1\nval/c,comma.png,7\n",
        DatasetFormatError,
        r"class_labels.txt, line 2: unknown label -1",
    ),
    (
        "class_labels.txt",
        "val/a.png,2\nval/b.jpg,0\nval/zz.png,1\n",
        DatasetFormatError,
        r"class_labels.txt, line 3: 'val/zz.png' is not listed in image_ids.txt",
    ),
    (
        "class_labels.txt",
        "val/a.png,2\nval/b.jpg,0\n",
        DatasetFormatError,
        r"class_labels.txt: no label for 'val/c,comma.png' \(listed in image_ids.txt, line 3\)",
    ),
    (
        "class_labels.txt",
        "val/a.png,2\nval/b.jpg,0\nval/a.png,1\n",
        DatasetFormatError,
        r"class_labels.txt, line 3: 'val/a.png' has a second label \(first on line 1\)",
    ),
    (
        "image_ids.txt",
        "val/a.png\nval/b.jpg\nval/a.png\n",
        DatasetFormatError,
        r"image_ids.txt, line 3: 'val/a.png' is listed twice \(first on line 1\)",
    ),
    ("image_ids.txt", "\n\n", DatasetFormatError, r"image_ids.txt: lists no image"),
    (
        "image_sizes.txt",
        "val/a.png,40\n",
        DatasetFormatError,
        r"image_sizes.txt, line 1: expected 'path,width,height'",
    ),
    (
        "image_sizes.txt",
        "val/a.png,40,32\nval/b.jpg,20,20\n",
        DatasetFormatError,
        r"image_sizes.txt: no size for 'val/c,comma.png'",
    ),
    (
        "image_sizes.txt",
        "val/a.png,40,32\nval/b.jpg,0,20\nval/c,comma.png,16,8\n",
        DatasetFormatError,
        r"image_sizes.txt, line 2: the size must be positive",
    ),
    (
        "localization.txt",
        "val/a.png,4,4,35,27\nval/b.jpg,0,0,20,19\nval/c,comma.png,2,1,9,6\n",
        DatasetFormatError,
        r"localization.txt, line 2: the box \[0.0, 0.0, 21.0, 20.0\] is outside .*"
        r"read with box_convention='inclusive' \(x1 \+ 1, y1 \+ 1\)",
    ),
    (
        "localization.txt",
        "val/a.png,4,4,3,27\nval/b.jpg,0,0,19,19\nval/c,comma.png,2,1,9,6\n",
        DatasetFormatError,
        r"localization.txt, line 1: the box is empty",
    ),
    (
        "localization.txt",
        "val/a.png,4,4,36\n",
        DatasetFormatError,
        r"localization.txt, line 1: expected 'path,x0,y0,x1,y1'",
    ),
    (
        "localization.txt",
        "val/a.png,4,4,36,2e\n",
        DatasetFormatError,
        r"localization.txt, line 1: '2e' is not a number",
    ),
    (
        "localization.txt",
        "val/a.png,4,4,35,27\nval/c,comma.png,2,1,9,6\n",
        DatasetFormatError,
        r"localization.txt: no box for 'val/b.jpg' \(listed in image_ids.txt, line 2\)",
    ),
    (
        "localization.txt",
        "val/a.png,4,4,35,27\nval/b.jpg,0,0,19,19\nval/q.png,0,0,1,1\n",
        DatasetFormatError,
        r"localization.txt, line 3: 'val/q.png' is not listed in image_ids",
    ),
    (
        "localization.txt",
        "val/a.png,4,4,35,27\nval/b.jpg,0,0,19,19,7\nval/c,comma.png,2,1,9,6\n",
        DatasetFormatError,
        r"localization.txt, line 2: the line has 6 fields where 5 are expected "
        r"\('path,x0,y0,x1,y1'\)",
    ),
    (
        "localization.txt",
        "val/a.png,4,4,35,27\nval/b.jpg,0,0,19,19\nval/c,comma.png,2,1,9,6,0,0\n",
        DatasetFormatError,
        r"localization.txt, line 3: the line has 7 fields where 5 are expected",
    ),
    (
        "class_labels.txt",
        "val/a.png,2\nval/b.jpg,0,1\nval/c,comma.png,7\n",
        DatasetFormatError,
        r"class_labels.txt, line 2: the line has 3 fields where 2 are expected",
    ),
]


@pytest.mark.parametrize(("name", "content", "error", "pattern"), WSOL_CASES)
def test_wsol_malformed_file_names_file_and_line(tmp_path, name, content, error, pattern):
    meta, images = make_wsol(tmp_path)
    (meta / name).write_text(content)
    with pytest.raises(error, match=re.escape(str(meta)) + "/" + pattern) as info:
        ImageBoxDataset.from_wsol(meta, images, n_classes=8)
    assert info.value.path == str(meta / name)
    line = re.search(r"line (\d+):", pattern)
    assert info.value.line == (int(line.group(1)) if line else None)


def test_wsol_unknown_label_with_n_classes(tmp_path):
    meta, images = make_wsol(tmp_path)
    with pytest.raises(
        DatasetFormatError,
        match=r"class_labels.txt, line 3: unknown label 7: "
        r"labels must be >= 0 and below 5",
    ):
        ImageBoxDataset.from_wsol(meta, images, n_classes=5)


def test_wsol_missing_metadata_file(tmp_path):
    meta, images = make_wsol(tmp_path)
    (meta / "localization.txt").unlink()
    with pytest.raises(FileNotFoundError, match=r"localization.txt' does not exist"):
        ImageBoxDataset.from_wsol(meta, images)
    with pytest.raises(FileNotFoundError, match=r"image_root .* is not a folder"):
        ImageBoxDataset.from_wsol(meta, tmp_path / "nowhere")


def test_wsol_size_disagreeing_with_image_is_an_error_at_access(tmp_path):
    meta, images = make_wsol(tmp_path)
    write(meta / "image_sizes.txt", "val/a.png,40,32\nval/b.jpg,20,21\nval/c,comma.png,16,8\n")
    ds = ImageBoxDataset.from_wsol(meta, images, image_size=8)
    ds[0]
    with pytest.raises(
        DatasetFormatError,
        match=r"image_sizes.txt, line 2: the size of .*b\.jpg"
        r"' is given as width 20, height 21, but the image is 20 x 20",
    ):
        ds[1]


def test_unreadable_image_names_the_image_and_the_listing_line(tmp_path):
    meta, images = make_wsol(tmp_path)
    (images / "val" / "b.jpg").write_bytes(b"not a jpeg")
    ds = ImageBoxDataset.from_wsol(meta, images, image_size=8)
    with pytest.raises(
        DatasetFormatError,
        match=r"image_ids.txt, line 2: the image .*b\.jpg' "
        "cannot be read",
    ):
        ds[1]


def test_clip_boxes(tmp_path):
    meta, images = make_wsol(tmp_path)
    write(
        meta / "localization.txt",
        "val/a.png,-3,4,50,27\nval/b.jpg,0,0,19,19\nval/c,comma.png,2,1,9,6\n",
    )
    ds = ImageBoxDataset.from_wsol(meta, images, image_size=(32, 40), clip_boxes=True)
    np.testing.assert_array_equal(ds.boxes[0], [[0, 4, 40, 28]])
    write(
        meta / "localization.txt",
        "val/a.png,45,4,50,27\nval/b.jpg,0,0,19,19\nval/c,comma.png,2,1,9,6\n",
    )
    with pytest.raises(DatasetFormatError, match="line 1: the box after clipping is empty"):
        ImageBoxDataset.from_wsol(meta, images, clip_boxes=True)


# -- CUB-200-2011 ---------------------------------------------------------------------------------
def make_cub(tmp_path, *, classes=True):
    root = tmp_path / "CUB_200_2011"
    write_image(root / "images" / "001.Gull" / "g1.jpg", 40, 80)
    write_image(root / "images" / "001.Gull" / "g2.jpg", 20, 20, mode="L")
    write_image(root / "images" / "002.Wren" / "w1.png", 64, 32, mode="P")
    write(root / "images.txt", "1 001.Gull/g1.jpg\n2 001.Gull/g2.jpg\n3 002.Wren/w1.png\n")
    write(root / "image_class_labels.txt", "1 1\n2 1\n3 2\n")
    write(root / "train_test_split.txt", "1 0\n2 1\n3 0\n")
    write(root / "bounding_boxes.txt", "1 8.0 4.0 40.0 20.0\n2 0 0 20 20\n3 3.5 6.0 16.0 32.0\n")
    if classes:
        write(root / "classes.txt", "1 001.Gull\n2 002.Wren\n")
    return root


def test_cub_splits_labels_and_boxes(tmp_path):
    root = make_cub(tmp_path)
    test = ImageBoxDataset.from_cub(root, image_size=(10, 20))
    assert test.ids == ["001.Gull/g1.jpg", "002.Wren/w1.png"]
    np.testing.assert_array_equal(test.labels, [0, 1])
    assert test.classes == ["001.Gull", "002.Wren"] and test.n_classes == 2
    # g1 80 x 40 -> 20 x 10 (x 0.25): [8, 4, 48, 24] -> [2, 1, 12, 6]
    np.testing.assert_array_equal(test.boxes[0], [[2, 1, 12, 6]])
    # w1 32 x 64 -> 20 x 10: x * 0.625, y * 0.15625
    np.testing.assert_array_equal(test.boxes[1], [[2.1875, 0.9375, 12.1875, 5.9375]])
    train = ImageBoxDataset.from_cub(root, "train", image_size=4)
    assert train.ids == ["001.Gull/g2.jpg"]
    assert len(ImageBoxDataset.from_cub(root, "all")) == 3
    assert ImageBoxDataset.from_cub(root, "all", max_images=2).ids == test.ids[:1] + train.ids
    image = test[1][0]  # a palette PNG comes out RGB
    assert image.shape == (3, 10, 20)
    np.testing.assert_allclose(image[:, 5, 5], np.float32([200, 100, 50]) / 255, atol=0.03)
    with pytest.raises(ValueError, match='split must be "train", "test" or "all"'):
        ImageBoxDataset.from_cub(root, "val")


def test_cub_without_classes_file(tmp_path):
    root = make_cub(tmp_path, classes=False)
    ds = ImageBoxDataset.from_cub(root, "all")
    assert ds.classes is None and ds.n_classes == 2
    np.testing.assert_array_equal(ds.labels, [0, 0, 1])


CUB_CASES = [
    ("images.txt", "1 001.Gull/g1.jpg\n2\n", r"images.txt, line 2: expected 'image_id path'"),
    ("images.txt", "1 a.jpg\n1 b.jpg\n", r"images.txt, line 2: image id 1 is listed twice"),
    (
        "image_class_labels.txt",
        "1 1\n2 1\n3 3\n",
        r"image_class_labels.txt, line 3: unknown class 3: classes.txt lists 1 to 2",
    ),
    (
        "image_class_labels.txt",
        "1 1\n2 1\n3 2\n4 1\n",
        r"image_class_labels.txt, line 4: image id 4 is not listed in images.txt",
    ),
    (
        "image_class_labels.txt",
        "1 1\n3 2\n",
        r"image_class_labels.txt: no class for image id 2 \(listed in images.txt, line 2\)",
    ),
    (
        "train_test_split.txt",
        "1 0\n2 1\n",
        r"train_test_split.txt: no train/test flag for image id 3",
    ),
    (
        "train_test_split.txt",
        "1 0\n2 2\n3 0\n",
        r"train_test_split.txt, line 2: the flag must be 0 or 1",
    ),
    (
        "bounding_boxes.txt",
        "1 8 4 40 20\n2 0 0 20 20\n3 3.5 6 16 abc\n",
        r"bounding_boxes.txt, line 3: 'abc' is not a number",
    ),
    (
        "bounding_boxes.txt",
        "1 8 4 40 20\n2 0 0 20 20\n3 3.5 6 0 32\n",
        r"bounding_boxes.txt, line 3: the box is empty",
    ),
    (
        "bounding_boxes.txt",
        "1 8 4 40 20\n3 3.5 6 16 32\n",
        r"bounding_boxes.txt: no box for image id 2",
    ),
    ("classes.txt", "1 001.Gull\n3 002.Wren\n", r"classes.txt, line 2: class ids must be 1, 2, 3"),
]


@pytest.mark.parametrize(("name", "content", "pattern"), CUB_CASES)
def test_cub_malformed_file_names_file_and_line(tmp_path, name, content, pattern):
    root = make_cub(tmp_path)
    (root / name).write_text(content)
    with pytest.raises(DatasetFormatError, match=re.escape(str(root)) + "/" + pattern):
        ImageBoxDataset.from_cub(root, "all")


def test_cub_box_outside_image_is_an_error_at_access(tmp_path):
    root = make_cub(tmp_path)
    write(root / "bounding_boxes.txt", "1 8 4 40 20\n2 0 0 20 20\n3 3.5 6 16 60\n")
    ds = ImageBoxDataset.from_cub(root, image_size=8)  # no size in CUB: checked when read
    ds[0]
    with pytest.raises(
        DatasetFormatError,
        match=r"bounding_boxes.txt, line 3: the box "
        r"\[3.5, 6.0, 19.5, 66.0\] is outside the image \(width 32, height 64",
    ):
        ds[1]
    clipped = ImageBoxDataset.from_cub(root, image_size=(64, 32), clip_boxes=True)
    np.testing.assert_array_equal(clipped.boxes[1], [[3.5, 6, 19.5, 64]])
    np.testing.assert_array_equal(clipped[1][2], [[3.5, 6, 19.5, 64]])


# -- Pascal VOC XML -------------------------------------------------------------------------------
def voc_xml(filename, objects, size=(100, 50)):
    parts = ["<annotation>", f"  <filename>{filename}</filename>"]
    if size is not None:
        parts.append(
            f"  <size><width>{size[0]}</width><height>{size[1]}</height><depth>3</depth></size>"
        )
    for name, (x0, y0, x1, y1) in objects:
        parts += [
            "  <object>",
            f"    <name>{name}</name>",
            "    <bndbox>",
            f"      <xmin>{x0}</xmin><ymin>{y0}</ymin><xmax>{x1}</xmax><ymax>{y1}</ymax>",
            "    </bndbox>",
            "  </object>",
        ]
    return "\n".join([*parts, "</annotation>"]) + "\n"


def make_voc(tmp_path):
    ann, img = tmp_path / "Annotations", tmp_path / "JPEGImages"
    write_image(img / "ILSVRC2012_val_01.JPEG", 50, 100)
    write_image(img / "2007_02.jpg", 40, 40)
    write(
        ann / "ILSVRC2012_val_01.xml",
        voc_xml("ILSVRC2012_val_01", [("n02", (1, 1, 50, 25)), ("n02", (51, 26, 100, 50))]),
    )
    write(
        ann / "b.xml",
        voc_xml("2007_02.jpg", [("n01", (11, 1, 20, 40)), ("n02", (1, 1, 2, 2))], size=(40, 40)),
    )
    return ann, img


def test_voc_labels_boxes_and_imagenet_filenames(tmp_path):
    ann, img = make_voc(tmp_path)
    ds = ImageBoxDataset.from_voc(ann, img, classes=["n01", "n02"], image_size=(25, 50))
    # Files in name order: ILSVRC... before b.xml. ImageNet's filename gets ".JPEG".
    assert ds.ids == ["ILSVRC2012_val_01.JPEG", "2007_02.jpg"]
    np.testing.assert_array_equal(ds.labels, [1, 0])
    # 1-based inclusive [1, 1, 50, 25] is pixel edges [0, 0, 50, 25]; 100 x 50 -> 50 x 25.
    np.testing.assert_array_equal(ds.boxes[0], [[0, 0, 25, 12.5], [25, 12.5, 50, 25]])
    # Only the objects of the first object's class: the n02 object of b.xml is ignored.
    np.testing.assert_array_equal(ds.boxes[1], [[12.5, 0, 25, 25]])
    assert ds[0][0].shape == (3, 25, 50) and ds[1][0].shape == (3, 25, 50)


def test_voc_classes_forms(tmp_path):
    ann, img = make_voc(tmp_path)
    inferred = ImageBoxDataset.from_voc(ann, img)
    assert inferred.classes == ["n01", "n02"]
    mapping = ImageBoxDataset.from_voc(ann, img, classes={"n01": 5, "n02": 9})
    np.testing.assert_array_equal(mapping.labels, [9, 5])
    assert mapping.n_classes == 10 and mapping.classes is None
    synsets = tmp_path / "LOC_synset_mapping.txt"
    write(synsets, "n00 thing\nn01 tench, Tinca tinca\nn02 goldfish\n")
    from_file = ImageBoxDataset.from_voc(ann, img, classes=synsets)
    np.testing.assert_array_equal(from_file.labels, [2, 1])
    assert from_file.classes == ["n00", "n01", "n02"]


VOC_CASES = [
    (
        voc_xml("x.jpg", [("n01", (1, 1, 5, 5))]).replace("</bndbox>", "</bndbx>"),
        r"x.xml, line 8: not well-formed XML: mismatched tag",
    ),
    (
        voc_xml("x.jpg", [("n01", (1, 1, 5, 5)), ("cat", (1, 1, 5, 5))]),
        r"x.xml, line 11: unknown class 'cat': not in classes",
    ),
    (voc_xml("x.jpg", [("cat", (1, 1, 5, 5))]), r"x.xml, line 5: unknown class 'cat'"),
    (
        voc_xml("x.jpg", [("n01", (1, 1, 5, 5))]).replace("<filename>x.jpg</filename>", ""),
        r"x.xml, line 1: <annotation> has no <filename>",
    ),
    (voc_xml("x.jpg", [("n01", (1, 1, "5.x", 5))]), r"x.xml, line 7: '5.x' is not a number"),
    (voc_xml("x.jpg", [("n01", (1, 1, 101, 5))]), r"x.xml, line 6: the box .* is outside"),
    (voc_xml("x.jpg", [("n01", (5, 1, 4, 5))]), r"x.xml, line 6: the box is empty"),
    (voc_xml("x.jpg", []), r"x.xml, line 1: no <object> in the annotation"),
    (
        voc_xml("x.jpg", [("n01", (1, 1, 5, 5))]).replace("<xmax>5</xmax>", ""),
        r"x.xml, line 6: <bndbox> has no <xmax>",
    ),
    (
        voc_xml("2007_02.jpg", [("n01", (1, 1, 5, 5))]),
        r"x.xml, line 2: '2007_02.jpg' is also annotated by b.xml",
    ),
]


@pytest.mark.parametrize(("content", "pattern"), VOC_CASES)
def test_voc_malformed_file_names_file_and_line(tmp_path, content, pattern):
    ann, img = make_voc(tmp_path)
    write(ann / "x.xml", content)
    with pytest.raises(DatasetFormatError, match=re.escape(str(ann)) + "/" + pattern):
        ImageBoxDataset.from_voc(ann, img, classes=["n01", "n02"])


def test_voc_unknown_size_is_checked_at_access(tmp_path):
    ann, img = make_voc(tmp_path)
    write(ann / "b.xml", voc_xml("2007_02.jpg", [("n01", (11, 1, 20, 41))], size=(0, 0)))
    ds = ImageBoxDataset.from_voc(ann, img, image_size=20)
    with pytest.raises(DatasetFormatError, match=r"b.xml, line 6: the box .* is outside"):
        ds[1]


# -- from_arrays ----------------------------------------------------------------------------------
def test_from_arrays_items_and_layouts():
    rng = np.random.RandomState(0)
    images = rng.uniform(size=(3, 2, 6, 8)).astype(np.float64)
    ds = ImageBoxDataset.from_arrays(images, [0, 2, 1], [[0, 0, 8, 6], [1, 2, 3, 4], [0, 0, 1, 1]])
    assert ds.image_size == (6, 8) and ds.n_classes == 3 and ds.ids == ["0", "1", "2"]
    image, label, boxes = ds[-2]
    assert image.dtype == np.float32 and label == 2
    np.testing.assert_array_equal(image, images[1].astype(np.float32))
    np.testing.assert_array_equal(boxes, [[1, 2, 3, 4]])
    assert ds.preprocess is None and ds.image_root is None
    nhwc = ImageBoxDataset.from_arrays(
        images.transpose(0, 2, 3, 1),
        [0, 2, 1],
        [[[0, 0, 2, 3], [4, 0, 8, 6]], [[1, 2, 3, 4]], np.array([0, 0, 1, 1])],
        channels_last=True,
        classes=["a", "b", "c", "d"],
    )
    assert nhwc.image_size == (6, 8) and nhwc.n_classes == 4 and nhwc.classes[3] == "d"
    np.testing.assert_array_equal(nhwc[0][2], [[0, 0, 2, 3], [4, 0, 8, 6]])
    np.testing.assert_array_equal(nhwc[2][2], [[0, 0, 1, 1]])
    assert nhwc[0][0].shape == (6, 8, 2)
    assert [len(item[2]) for item in nhwc] == [2, 1, 1]


@pytest.mark.parametrize(
    ("images", "labels", "boxes", "message"),
    [
        (np.zeros((2, 3, 4)), [0, 1], [[0, 0, 1, 1]] * 2, r"images must be a 4-D array"),
        (np.zeros((0, 3, 4, 4)), [], np.zeros((0, 4)), r"images is empty"),
        (np.zeros((2, 3, 4, 4)), [0], [[0, 0, 1, 1]] * 2, r"labels must have shape \(2,\)"),
        (np.zeros((2, 3, 4, 4)), [0, -1], [[0, 0, 1, 1]] * 2, r"labels must be non-negative"),
        (np.zeros((2, 3, 4, 4)), [0, 0.5], [[0, 0, 1, 1]] * 2, r"labels must be integers"),
        (np.zeros((2, 3, 4, 4)), [0, 1], [[0, 0, 1, 1]] * 3, r"boxes must be an \(n, 4\) array"),
        (np.zeros((2, 3, 4, 4)), [0, 1], [[0, 0, 1, 1]], r"boxes must be an \(n, 4\)"),
        (
            np.zeros((2, 3, 4, 4)),
            [0, 1],
            [[[0, 0, 1, 1]], np.zeros((0, 4))],
            r"boxes\[1\] must be an \(m, 4\) array with m >= 1",
        ),
        (np.zeros((2, 3, 4, 4)), [0, 1], [[0, 0, 1, 1], [1, 0, 1, 3]], r"boxes\[1\] is empty"),
        (
            np.zeros((2, 3, 4, 4)),
            [0, 1],
            [[0, 0, 1, 1], [0, 0, 5, 3]],
            r"boxes\[1\] \[0.0, 0.0, 5.0, 3.0\] is outside the image \(width 4, height 4",
        ),
        (
            np.zeros((2, 3, 4, 4)),
            [0, 1],
            [[0, 0, 1, 1], [0, 0, np.nan, 3]],
            r"boxes\[1\] has a non-finite coordinate",
        ),
    ],
)
def test_from_arrays_rejects_bad_input(images, labels, boxes, message):
    with pytest.raises(ValueError, match=message):
        ImageBoxDataset.from_arrays(images, labels, boxes)


def test_from_arrays_label_bounds():
    images = np.zeros((2, 3, 4, 4))
    with pytest.raises(ValueError, match=r"labels must be below n_classes=2; got 2"):
        ImageBoxDataset.from_arrays(images, [0, 2], [[0, 0, 1, 1]] * 2, n_classes=2)
    with pytest.raises(ValueError, match=r"labels must be below len\(classes\)=1"):
        ImageBoxDataset.from_arrays(images, [0, 1], [[0, 0, 1, 1]] * 2, classes=["a"])


def test_indexing_errors():
    ds = make_wsol_dataset(3, image_size=16, random_state=0)
    with pytest.raises(IndexError, match="index 3 is out of range for a dataset of 3 images"):
        ds[3]
    with pytest.raises(IndexError, match="index -4"):
        ds[-4]
    with pytest.raises(TypeError, match=r"indices must be integers; got slice.*subset"):
        ds[0:2]
    assert ds[np.int64(2)][1] == 2
    assert len(list(ds)) == 3


# -- subset, repr ---------------------------------------------------------------------------------
def test_subset_of_arrays_and_of_disk_sets(tmp_path):
    ds = make_wsol_dataset(6, image_size=16, max_objects=3, random_state=1)
    sub = ds.subset([4, 1])
    assert sub.ids == ["4", "1"] and len(sub) == 2
    np.testing.assert_array_equal(sub.labels, ds.labels[[4, 1]])
    for a, b in zip(sub.boxes, [ds.boxes[4], ds.boxes[1]], strict=True):
        np.testing.assert_array_equal(a, b)
    np.testing.assert_array_equal(sub[0][0], ds[4][0])
    assert sub.n_classes == ds.n_classes and sub.classes == ds.classes
    assert len(ds.subset(slice(None, None, 2))) == 3
    assert len(ds.subset(ds.labels == 0)) == 2
    with pytest.raises(ValueError, match=r"a boolean indices must have shape \(6,\)"):
        ds.subset([True, False])
    with pytest.raises(ValueError, match="selects no image"):
        ds.subset([])

    meta, images = make_wsol(tmp_path)
    disk = ImageBoxDataset.from_wsol(meta, images, image_size=(8, 20))
    sub = disk.subset([2, 0])
    assert sub.ids == ["val/c,comma.png", "val/a.png"]
    np.testing.assert_array_equal(sub.boxes[1], disk.boxes[0])
    np.testing.assert_array_equal(sub[0][0], disk[2][0])
    (images / "val" / "a.png").unlink()
    with pytest.raises(FileNotFoundError, match=r"a\.png.*image_ids.txt, line 1"):
        sub[1]


def test_subset_of_voc_keeps_only_its_files(tmp_path):
    ann, img = make_voc(tmp_path)
    for k in range(30):  # many annotation files, as in ImageNet (one per image)
        write_image(img / f"z{k}.png", 10, 10)
        write(ann / f"z{k}.xml", voc_xml(f"z{k}.png", [("n01", (1, 1, 5, 5))], size=(10, 10)))
    ds = ImageBoxDataset.from_voc(ann, img, image_size=8)
    sub = ds.subset([1])
    assert sub.ids == ["2007_02.jpg"]
    assert len(pickle.dumps(sub)) < len(pickle.dumps(ds)) / 2
    (img / "2007_02.jpg").unlink()
    with pytest.raises(FileNotFoundError, match=r"2007_02\.jpg.*b\.xml, line 2"):
        sub[0]


def test_repr(tmp_path):
    ds = make_wsol_dataset(5, image_size=(16, 24), channels_last=True, random_state=0)
    assert repr(ds) == (
        "ImageBoxDataset(format='arrays', n_images=5, n_classes=3, image_size=(16, 24), "
        "layout='NHWC')"
    )
    root = make_cub(tmp_path)
    ds = ImageBoxDataset.from_cub(root, image_size=8, preprocess=NormalizeImage(mean="imagenet"))
    assert repr(ds) == (
        f"ImageBoxDataset(format='cub', n_images=2, n_classes=2, image_size=(8, 8), "
        f"image_root={str(root / 'images')!r}, "
        "preprocess=NormalizeImage(mean=(0.485, 0.456, 0.406)))"
    )


# -- NormalizeImage -------------------------------------------------------------------------------
def test_normalize_image_values_and_layouts():
    image = np.array([[[0, 51, 255], [255, 102, 0]]], dtype=np.uint8)  # (1, 2, 3)
    x = NormalizeImage()(image)
    assert x.shape == (3, 1, 2) and x.dtype == np.float32
    np.testing.assert_array_equal(x[:, 0, 0], np.float32([0, 51, 255]) / np.float32(255))
    y = NormalizeImage(mean=(0.5, 0.2, 0.0), std=(0.5, 0.1, 2.0), channels_last=True)(image)
    assert y.shape == (1, 2, 3)
    np.testing.assert_allclose(y[0, 1], [(1 - 0.5) / 0.5, (0.4 - 0.2) / 0.1, 0.0], rtol=1e-6)
    imagenet = NormalizeImage(mean="imagenet", std="imagenet")
    assert imagenet.mean == (0.485, 0.456, 0.406) and imagenet.std == (0.229, 0.224, 0.225)
    np.testing.assert_allclose(imagenet(image)[0, 0, 1], (1 - 0.485) / 0.229, rtol=1e-6)
    assert NormalizeImage(mean="imagenet") == NormalizeImage(mean=[0.485, 0.456, 0.406])
    assert NormalizeImage() != NormalizeImage(channels_last=True)
    assert repr(NormalizeImage(std=(1, 1, 1), channels_last=True)) == (
        "NormalizeImage(std=(1.0, 1.0, 1.0), channels_last=True)"
    )
    assert pickle.loads(pickle.dumps(imagenet)) == imagenet


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"mean": "coco"}, r'mean must be 3 floats, "imagenet", "inception" or None'),
        ({"mean": (0.5, 0.5)}, r"mean must be 3 finite floats"),
        ({"std": (0.5, 0.0, 0.5)}, r"std must be positive"),
    ],
)
def test_normalize_image_rejects_bad_stats(kwargs, message):
    with pytest.raises(ValueError, match=message):
        NormalizeImage(**kwargs)


def test_constructor_arguments_are_checked(tmp_path):
    meta, images = make_wsol(tmp_path)
    with pytest.raises(ValueError, match=r"image_size must be a positive int or a \(height, "):
        ImageBoxDataset.from_wsol(meta, images, image_size=(0, 4))
    with pytest.raises(ValueError, match="max_images must be a positive int or None"):
        ImageBoxDataset.from_wsol(meta, images, max_images=0)
    with pytest.raises(ValueError, match="box_convention must be one of"):
        ImageBoxDataset.from_wsol(meta, images, box_convention="xywh")
    with pytest.raises(ValueError, match="n_classes must be a positive int or None"):
        ImageBoxDataset.from_wsol(meta, images, n_classes=0)


def test_preprocess_output_shapes_must_agree(tmp_path):
    meta, images = make_wsol(tmp_path)
    ds = ImageBoxDataset.from_wsol(meta, images, image_size=4, preprocess=_odd_shapes)
    assert ds[0][0].shape == (2,)
    with pytest.raises(ValueError, match="preprocess returned images of different shapes"):
        ds.load([0, 1])


def test_non_finite_pixels_are_refused_naming_the_image(tmp_path):
    # In memory: at construction; float64 beyond float32's range is infinite once cast.
    X = np.zeros((4, 3, 8, 8))
    X[2, 1, 3, 3] = np.nan
    with pytest.raises(ValueError, match=r"images\[2\] holds NaN or infinite pixels"):
        ImageBoxDataset.from_arrays(X, [0, 0, 0, 0], [[0, 0, 4, 4]] * 4)
    X[2, 1, 3, 3] = 1e300
    with pytest.raises(ValueError, match=r"images\[2\] holds NaN or infinite"):
        ImageBoxDataset.from_arrays(X, [0, 0, 0, 0], [[0, 0, 4, 4]] * 4)
    # A memmap: as its images are read, by load, indexing and subsets.
    mm = np.lib.format.open_memmap(tmp_path / "x.npy", mode="w+", dtype=np.float32, shape=X.shape)
    mm[:] = 0
    mm[3, 0, 0, 0] = -np.inf
    ds = ImageBoxDataset.from_arrays(mm, [0, 0, 0, 0], [[0, 0, 4, 4]] * 4)
    assert ds.load([0, 1, 2])[0].shape == (3, 3, 8, 8)
    with pytest.raises(ValueError, match=r"image 3 \(id '3'\) of the dataset holds NaN"):
        ds.load([0, 3])
    with pytest.raises(ValueError, match=r"image 3 \(id '3'\)"):
        ds[-1]
    with pytest.raises(ValueError, match=r"\(id '3'\)"):
        ds.subset([1, 3]).load([1])
    # On disk: after preprocess, the file named by its id.
    meta, images = make_wsol(tmp_path)
    ds = ImageBoxDataset.from_wsol(meta, images, image_size=4, preprocess=_nan_preprocess)
    with pytest.raises(ValueError, match=r"image 0 \(id '.+'\).*after preprocess="):
        ds.load([0, 1])


def _nan_preprocess(image):
    return np.full((3, 4, 4), np.nan, dtype=np.float32)


def _odd_shapes(image):
    return np.zeros(2 if image[0, 0, 0] == 200 else 3)


def _load_in_worker(payload):
    return pickle.loads(payload).load([1, 0])


def test_a_pickled_dataset_reads_in_another_process(tmp_path):
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor

    meta, images = make_wsol(tmp_path)
    ds = ImageBoxDataset.from_wsol(meta, images, image_size=(8, 20))
    context = multiprocessing.get_context("spawn")  # a fresh interpreter, as a Dask worker
    with ProcessPoolExecutor(1, mp_context=context) as pool:
        X, y, boxes = pool.submit(_load_in_worker, pickle.dumps(ds)).result()
    X_here, y_here, boxes_here = ds.load([1, 0])
    np.testing.assert_array_equal(X, X_here)
    np.testing.assert_array_equal(y, y_here)
    for a, b in zip(boxes, boxes_here, strict=True):
        np.testing.assert_array_equal(a, b)


def test_concurrent_reads_agree_with_serial_ones(tmp_path):
    from concurrent.futures import ThreadPoolExecutor

    root = make_cub(tmp_path)
    write(root / "bounding_boxes.txt", "1 8 4 80 20\n2 -2 0 20 20\n3 3.5 6 16 60\n")
    serial = ImageBoxDataset.from_cub(root, "all", image_size=(8, 4), clip_boxes=True)
    expected = [serial[i] for i in range(3)]
    for _ in range(5):
        ds = ImageBoxDataset.from_cub(root, "all", image_size=(8, 4), clip_boxes=True)
        with ThreadPoolExecutor(4) as pool:
            items = list(pool.map(ds.__getitem__, [k % 3 for k in range(24)]))
        for k, (image, _, boxes) in enumerate(items):
            np.testing.assert_array_equal(image, expected[k % 3][0])
            np.testing.assert_array_equal(boxes, expected[k % 3][2])
    # [8, 4, 88, 24] clipped to the 80 x 40 image, then scaled to 4 x 8.
    scale = np.array([4 / 80, 8 / 40, 4 / 80, 8 / 40])
    np.testing.assert_array_equal(expected[0][2], [np.array([8, 4, 80, 24]) * scale])
    np.testing.assert_array_equal(
        expected[1][2], [np.array([0, 0, 18, 20]) * ([4 / 20, 8 / 20] * 2)]
    )


def test_importing_datasets_imports_no_pillow():
    import subprocess
    import sys

    code = "import sys, sklearn_caf.datasets; print('PIL' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


# -- pickling and fingerprints --------------------------------------------------------------------
def test_on_disk_datasets_pickle_without_pixels(tmp_path):
    small_meta, small_images = make_wsol(tmp_path / "small")
    ds = ImageBoxDataset.from_wsol(small_meta, small_images, image_size=(8, 20))
    payload = pickle.dumps(ds)
    # Bigger images do not make a bigger pickle: only paths and metadata travel.
    meta, images = make_wsol(tmp_path / "big")
    write_image(images / "val" / "a.png", 320, 400)
    write(meta / "image_sizes.txt", "val/a.png,400,320\nval/b.jpg,20,20\nval/c,comma.png,16,8\n")
    big = ImageBoxDataset.from_wsol(meta, images, image_size=(8, 20))
    assert abs(len(pickle.dumps(big)) - len(payload)) < 16
    assert len(payload) < 4000
    clone = pickle.loads(payload)
    assert clone.fingerprint() == ds.fingerprint()
    assert clone.ids == ds.ids and repr(clone) == repr(ds)
    np.testing.assert_array_equal(clone[0][0], big[0][0])  # resized: same uniform colour
    for a, b in zip(clone.boxes, ds.boxes, strict=True):
        np.testing.assert_array_equal(a, b)


def test_format_errors_pickle_with_their_location():
    error = DatasetFormatError("/d: x/localization.txt", 3, "the box is empty.")
    clone = pickle.loads(pickle.dumps(error))
    assert clone.message == "the box is empty."
    assert (clone.path, clone.line, str(clone)) == (
        "/d: x/localization.txt",
        3,
        "/d: x/localization.txt, line 3: the box is empty.",
    )
    assert isinstance(clone, ValueError)


def test_fingerprint_is_stable():
    images = np.arange(2 * 3 * 4 * 4, dtype=np.float32).reshape(2, 3, 4, 4)
    ds = ImageBoxDataset.from_arrays(images, [0, 1], [[0, 0, 2, 2], [1, 1, 4, 3]])
    # A literal: the same in every process, platform and session (resumed runs rely on it).
    assert ds.fingerprint() == FINGERPRINT
    assert pickle.loads(pickle.dumps(ds)).fingerprint() == FINGERPRINT


FINGERPRINT = "f477080a358016acf31cf4262e7fb87776b24e9ceb264825f699df828c471b9a"


def test_fingerprint_sensitivity_arrays():
    images = np.zeros((2, 3, 4, 4), dtype=np.float32)
    boxes = [[0, 0, 2, 2], [1, 1, 4, 3]]
    base = ImageBoxDataset.from_arrays(images, [0, 1], boxes).fingerprint()
    assert ImageBoxDataset.from_arrays(images.copy(), [0, 1], boxes).fingerprint() == base
    changed_pixel = images.copy()
    changed_pixel[1, 2, 3, 3] = 1e-6
    variants = [
        ImageBoxDataset.from_arrays(changed_pixel, [0, 1], boxes),
        ImageBoxDataset.from_arrays(images, [1, 1], boxes),
        ImageBoxDataset.from_arrays(images, [0, 1], [[0, 0, 2, 2], [1, 1, 4, 2.5]]),
        ImageBoxDataset.from_arrays(
            images, [0, 1], [[[0, 0, 2, 2]], [[1, 1, 4, 3], [0, 0, 1, 1]]]
        ),
        ImageBoxDataset.from_arrays(images.astype(np.float64), [0, 1], boxes),
        ImageBoxDataset.from_arrays(images, [0, 1], boxes, n_classes=3),
        ImageBoxDataset.from_arrays(images, [0, 1], boxes, classes=["x", "y"]),
        ImageBoxDataset.from_arrays(images, [0, 1], boxes).subset([1, 0]),
    ]
    prints = [base] + [v.fingerprint() for v in variants]
    assert len(set(prints)) == len(prints)


def test_fingerprint_sensitivity_on_disk(tmp_path):
    root = make_cub(tmp_path)
    ds = ImageBoxDataset.from_cub(root, image_size=8)
    base = ds.fingerprint()
    ds[0], ds.boxes
    assert ds.fingerprint() == base
    moved = tmp_path / "moved"
    shutil.copytree(root, moved)
    assert ImageBoxDataset.from_cub(moved, image_size=8).fingerprint() == base
    variants = [
        ImageBoxDataset.from_cub(root, image_size=(8, 9)),
        ImageBoxDataset.from_cub(root, "all", image_size=8),
        ImageBoxDataset.from_cub(root, image_size=8, preprocess=NormalizeImage(std="imagenet")),
        ImageBoxDataset.from_cub(
            root, image_size=8, preprocess=NormalizeImage(channels_last=True)
        ),
        ImageBoxDataset.from_cub(root, image_size=8, preprocess=_odd_shapes),
    ]
    write(moved / "bounding_boxes.txt", "1 8.0 4.0 40.0 20.5\n2 0 0 20 20\n3 3.5 6.0 16.0 32.0\n")
    variants.append(ImageBoxDataset.from_cub(moved, image_size=8))
    prints = [base] + [v.fingerprint() for v in variants]
    assert len(set(prints)) == len(prints)
    assert (
        ImageBoxDataset.from_cub(root, image_size=8, preprocess=NormalizeImage()).fingerprint()
        == base
    )


# -- make_wsol_dataset ----------------------------------------------------------------------------
def test_make_wsol_dataset_is_deterministic():
    a = make_wsol_dataset(12, image_size=(20, 24), max_objects=2, random_state=3)
    b = make_wsol_dataset(12, image_size=(20, 24), max_objects=2, random_state=3)
    c = make_wsol_dataset(12, image_size=(20, 24), max_objects=2, random_state=4)
    Xa, ya, Ba = a.load(range(12))
    Xb, yb, Bb = b.load(range(12))
    np.testing.assert_array_equal(Xa, Xb)
    np.testing.assert_array_equal(ya, yb)
    for p, q in zip(Ba, Bb, strict=True):
        np.testing.assert_array_equal(p, q)
    assert a.fingerprint() == b.fingerprint() != c.fingerprint()
    assert not np.array_equal(Xa, c.load(range(12))[0])
    nhwc = make_wsol_dataset(
        12, image_size=(20, 24), max_objects=2, channels_last=True, random_state=3
    )
    np.testing.assert_array_equal(nhwc.load(range(12))[0], Xa.transpose(0, 2, 3, 1))
    assert nhwc.image_size == (20, 24)


def test_make_wsol_dataset_contents():
    ds = make_wsol_dataset(60, image_size=32, n_classes=4, max_objects=3, random_state=0)
    X, y, boxes = ds.load(range(60))
    assert X.shape == (60, 3, 32, 32) and X.dtype == np.float32
    assert X.min() >= 0 and X.max() <= 1
    np.testing.assert_array_equal(y, np.arange(60) % 4)
    assert ds.classes == ["red", "green", "blue", "yellow"]
    counts = [len(b) for b in boxes]
    assert min(counts) == 1 and max(counts) == 3
    for b in boxes:
        assert (b[:, :2] >= 0).all() and (b[:, 2] <= 32).all() and (b[:, 3] <= 32).all()
        sides = b[:, 2:] - b[:, :2]
        assert (sides >= 8).all() and (sides <= 16).all()  # object_size (0.25, 0.5) of 32
        for i in range(len(b)):  # disjoint boxes
            for j in range(i):
                p, q = b[i], b[j]
                assert p[2] <= q[0] or q[2] <= p[0] or p[3] <= q[1] or q[3] <= p[1]


def test_make_wsol_dataset_boxes_are_the_objects_tight_boxes():
    # Without clutter, the bright object pixels (> the dimmed background + noise) are the
    # object's: their tight box must be the given box.
    ds = make_wsol_dataset(30, image_size=(24, 40), n_clutter=0, random_state=0)
    X, _, boxes = ds.load(range(30))
    for image, (box,) in zip(X, boxes, strict=True):
        rows, cols = np.nonzero(image.max(axis=0) > 0.6)
        np.testing.assert_array_equal(
            box, [cols.min(), rows.min(), cols.max() + 1, rows.max() + 1]
        )


def test_make_wsol_dataset_object_is_the_only_cue():
    """Outside the boxes the images carry no class information; inside they do."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import cross_val_score

    ds = make_wsol_dataset(600, image_size=24, n_classes=3, random_state=0)
    X, y, boxes = ds.load(range(len(ds)))
    inside = np.zeros(X.shape[:1] + X.shape[2:], dtype=bool)
    for mask, (box,) in zip(inside, boxes, strict=True):
        x0, y0, x1, y1 = box.astype(int)
        mask[y0:y1, x0:x1] = True

    def colour_features(region):
        # Mean and spread of each channel, and the fraction of strongly coloured pixels.
        feats = []
        for image, keep in zip(X, region, strict=True):
            pixels = image[:, keep]
            feats.append(np.r_[pixels.mean(1), pixels.std(1), (pixels > 0.7).mean(1)])
        return np.array(feats)

    model = LogisticRegression(max_iter=2000)
    outside = cross_val_score(model, colour_features(~inside), y, cv=3).mean()
    within = cross_val_score(model, colour_features(inside), y, cv=3).mean()
    assert within > 0.95
    assert outside < 0.45  # chance is 1/3


def test_make_wsol_dataset_is_learnt_and_localized_by_a_tiny_cnn():
    torch = pytest.importorskip("torch")
    from torch import nn

    from sklearn_caf import GradCAMExplainer
    from sklearn_caf.boxes import heatmaps_to_boxes
    from sklearn_caf.metrics import box_iou

    ds = make_wsol_dataset(450, n_classes=3, random_state=0)
    X, y, boxes = ds.load(range(len(ds)))
    train, test = slice(0, 300), slice(300, None)
    torch.manual_seed(0)
    net = nn.Sequential(
        nn.Conv2d(3, 16, 3, padding=1),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Conv2d(16, 32, 3, padding=1),
        nn.ReLU(),
        nn.Conv2d(32, 32, 3, padding=1),
        nn.ReLU(),
        nn.AdaptiveMaxPool2d(1),
        nn.Flatten(),
        nn.Linear(32, 3),
    )
    optimizer = torch.optim.Adam(net.parameters(), lr=1e-2)
    x_train, y_train = torch.from_numpy(X[train]), torch.from_numpy(y[train])
    generator = torch.Generator().manual_seed(0)
    for _ in range(2):  # two epochs: a few seconds of CPU
        for batch in torch.randperm(300, generator=generator).split(32):
            optimizer.zero_grad()
            nn.functional.cross_entropy(net(x_train[batch]), y_train[batch]).backward()
            optimizer.step()
    net.eval()
    with torch.no_grad():
        accuracy = (net(torch.from_numpy(X[test])).argmax(1).numpy() == y[test]).mean()
    assert accuracy > 0.9
    heatmaps = GradCAMExplainer(model=net, layer="6").fit(X[test]).transform(X[test])
    # MaxBoxAcc-style: the best box threshold localizes nearly every object (about 0.95).
    accuracies = []
    for threshold in (0.2, 0.3, 0.4, 0.5, 0.6):
        found, _ = heatmaps_to_boxes(heatmaps, threshold)
        accuracies.append(np.mean(box_iou(found, np.vstack(boxes[test])) >= 0.5))
    assert max(accuracies) > 0.85


def test_make_wsol_dataset_rejects_bad_arguments():
    with pytest.raises(ValueError, match="n must be a positive int"):
        make_wsol_dataset(0)
    with pytest.raises(ValueError, match=r"n_classes must be in \[2, 6\]"):
        make_wsol_dataset(4, n_classes=7)
    with pytest.raises(ValueError, match="image_size must be at least 16"):
        make_wsol_dataset(4, image_size=8)
    with pytest.raises(ValueError, match="object_size must be"):
        make_wsol_dataset(4, object_size=(0.5, 0.25))
    with pytest.raises(ValueError, match="max_objects must be a positive int"):
        make_wsol_dataset(4, max_objects=0)


def _batch_of_normalized(images):
    """A batch function: (n, height, width, 3) -> (n, 3, height, width)."""
    return np.stack([NormalizeImage()(image) for image in images])


def _batch_as_given(images):
    """A batch function that does not raise on one image but returns a 4-D array."""
    return np.asarray(images, dtype=np.float32)[None].transpose(0, 3, 1, 2)


def _one_of_batch(image):
    return _batch_of_normalized(image[None])[0]


@pytest.mark.parametrize("batch_fn", [_batch_of_normalized, _batch_as_given])
def test_a_batch_preprocess_is_refused_saying_so(tmp_path, batch_fn):
    meta, images = make_wsol(tmp_path)
    with pytest.raises(ValueError) as info:
        ImageBoxDataset.from_wsol(meta, images, image_size=(4, 6), preprocess=batch_fn)
    message = str(info.value)
    assert f"preprocess=tests.datasets.test_datasets.{batch_fn.__name__}" in message or (
        batch_fn.__name__ in message
    )
    assert "one image, a (height, width, 3) uint8 RGB array of shape (4, 6, 3)" in message
    assert "takes a batch" in message and "image[None])[0]" in message
    # Wrapped as the message says, it gives NormalizeImage's pixels.
    wrapped = ImageBoxDataset.from_wsol(meta, images, image_size=(4, 6), preprocess=_one_of_batch)
    plain = ImageBoxDataset.from_wsol(meta, images, image_size=(4, 6))
    np.testing.assert_array_equal(wrapped.load([0, 1])[0], plain.load([0, 1])[0])


def test_efficientnet_lite_batch_preprocess_is_refused(tmp_path):
    pretrained = pytest.importorskip("sklearn_caf_torch.pretrained")
    meta, images = make_wsol(tmp_path)
    with pytest.raises(ValueError, match=r"preprocess_efficientnet_lite raised ValueError.*"
                       r"takes a batch"):  # fmt: skip
        ImageBoxDataset.from_wsol(
            meta, images, image_size=8, preprocess=pretrained.preprocess_efficientnet_lite
        )
    with pytest.raises(TypeError, match="preprocess must be a callable"):
        ImageBoxDataset.from_wsol(meta, images, image_size=8, preprocess="imagenet")


def test_normalize_image_inception_preset():
    image = np.array([[[0, 255, 51]]], dtype=np.uint8)
    x = NormalizeImage(mean="inception", std="inception")(image)
    np.testing.assert_allclose(x.ravel(), [-1.0, 1.0, 51 / 255 * 2 - 1], rtol=1e-6)
    assert NormalizeImage(mean="inception").mean == (0.5, 0.5, 0.5)
    assert NormalizeImage(std="imagenet").std == (0.229, 0.224, 0.225)
    with pytest.raises(ValueError, match='"imagenet", "inception" or None'):
        NormalizeImage(mean="caffe")


@pytest.mark.parametrize("sizes", [True, False])
def test_original_sizes_and_boxes(tmp_path, sizes):
    """The images' own frame, from image_sizes.txt or from the files' headers."""
    meta, images = make_wsol(tmp_path, sizes=sizes)
    ds = ImageBoxDataset.from_wsol(meta, images, image_size=(5, 7))
    own = ds.original_sizes()
    assert own.dtype == np.int64 and own.shape == (len(ds), 2)
    for i, (height, width) in enumerate(own.tolist()):
        with Image.open(images / ds.ids[i]) as image:
            assert (width, height) == image.size
        scaled = ds.original_boxes([i])[0] * [7 / width, 5 / height, 7 / width, 5 / height]
        np.testing.assert_allclose(scaled, ds.boxes[i], rtol=1e-12)
    assert ds.original_sizes([-1]).tolist() == own[-1:].tolist()
    sub = ds.subset([1, 0])
    assert [b.tolist() for b in sub.original_boxes()] == [
        b.tolist() for b in ds.original_boxes([1, 0])
    ]
    arrays = ImageBoxDataset.from_arrays(np.zeros((2, 3, 6, 9)), [0, 1], [[0, 0, 2, 3]] * 2)
    assert arrays.original_sizes().tolist() == [[6, 9], [6, 9]]
    assert arrays.original_boxes([1])[0].tolist() == [[0, 0, 2, 3]]
