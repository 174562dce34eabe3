"""load_wsol_masks: wsolevaluation's OpenImages30k mask layout, read as ``get_mask`` reads it."""

import numpy as np
import pytest
from PIL import Image

from sklearn_caf.datasets import DatasetFormatError, load_wsol_masks
from sklearn_caf.metrics import pixel_average_precision


def save(path, array):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.asarray(array, np.uint8)).save(path)


@pytest.fixture
def layout(tmp_path):
    rng = np.random.default_rng(0)
    meta, root = tmp_path / "meta", tmp_path / "masks"
    meta.mkdir()
    shapes = {"a.jpg": (37, 53), "b.jpg": (300, 410), "c.jpg": (5, 7)}
    files = {}
    for name, shape in shapes.items():
        stem = name[:-4]
        a = (rng.random(shape) < 0.3) * 255
        b = (rng.random(shape) < 0.2) * rng.integers(1, 256, shape)  # any non-zero grey counts
        ig = (rng.random(shape) < 0.4) * 255
        save(root / f"{stem}_1.png", a)
        save(root / f"{stem}_2.png", b)
        save(root / f"{stem}_ignore.png", ig)
        files[name] = (a, b, ig)
    (meta / "localization.txt").write_text(
        "a.jpg,a_1.png,a_ignore.png\n"
        "a.jpg,a_2.png,\n"
        "\n"
        "b.jpg,b_1.png,b_ignore.png\n"
        "c.jpg,c_1.png,\n"
        "c.jpg,c_2.png,\n"
    )
    return meta, root, files


def cv2_like_nearest(array, size):
    """Nearest-neighbour resize, OpenCV's rule: source index floor(d * src / dst)."""
    h, w = array.shape
    rows = np.minimum((np.arange(size[0]) * (h / size[0])).astype(int), h - 1)
    cols = np.minimum((np.arange(size[1]) * (w / size[1])).astype(int), w - 1)
    return array[rows][:, cols]


def test_masks_ignore_and_order(layout):
    meta, root, files = layout
    ids, masks, ignore = load_wsol_masks(meta, root, image_size=(24, 20))
    assert ids == ["a.jpg", "b.jpg", "c.jpg"]
    assert masks.shape == ignore.shape == (3, 24, 20) and masks.dtype == bool
    for k, name in enumerate(ids):
        a, b, ig = (cv2_like_nearest(x, (24, 20)) > 0.5 for x in files[name])
        fg = a | b if name != "b.jpg" else a  # b's second mask is not listed
        np.testing.assert_array_equal(masks[k], fg)
        expected_ignore = ig & ~fg if name != "c.jpg" else np.zeros_like(fg)
        np.testing.assert_array_equal(ignore[k], expected_ignore)
    assert not (masks & ignore).any()
    ids2, masks2, _ = load_wsol_masks(
        meta, root, image_size=(24, 20), image_ids=["c.jpg", "a.jpg"]
    )
    assert ids2 == ["c.jpg", "a.jpg"]
    np.testing.assert_array_equal(masks2, masks[[2, 0]])
    # Straight into the metric.
    maps = np.random.default_rng(1).random(masks.shape)
    assert 0 < pixel_average_precision(maps, masks, ignore=ignore) < 1


def test_same_masks_as_opencv(layout):
    """wsolevaluation's load_mask_image + get_mask, with OpenCV itself."""
    cv2 = pytest.importorskip("cv2", reason="the reference's reading needs OpenCV")
    meta, root, _ = layout
    for size in (224, (224, 224), (31, 17), (600, 450)):
        ids, masks, ignore = load_wsol_masks(meta, root, image_size=size)
        h, w = (size, size) if isinstance(size, int) else size
        lines = [line.split(",") for line in (meta / "localization.txt").read_text().split()]
        for k, image_id in enumerate(ids):
            fg = np.zeros((h, w), bool)
            ig = None
            for name, mask_path, ignore_path in lines:
                if name != image_id:
                    continue
                m = np.float32(cv2.imread(str(root / mask_path), cv2.IMREAD_GRAYSCALE))
                fg |= cv2.resize(m, (w, h), interpolation=cv2.INTER_NEAREST) > 0.5
                if ignore_path:
                    g = np.float32(cv2.imread(str(root / ignore_path), cv2.IMREAD_GRAYSCALE))
                    ig = cv2.resize(g, (w, h), interpolation=cv2.INTER_NEAREST) > 0.5
            np.testing.assert_array_equal(masks[k], fg)
            np.testing.assert_array_equal(ignore[k], np.zeros_like(fg) if ig is None else ig & ~fg)


def test_format_errors_name_the_file_and_line(layout, tmp_path):
    meta, root, _ = layout
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "localization.txt").write_text(
        "a.jpg,a_1.png,a_ignore.png\na.jpg,a_2.png,a_ignore.png\n"
    )
    with pytest.raises(DatasetFormatError, match=r"line 2: 'a.jpg' already has its ignore"):
        load_wsol_masks(bad, root)
    (bad / "localization.txt").write_text("a.jpg,a_1.png\n")
    with pytest.raises(DatasetFormatError, match=r"line 1: expected 'path,mask_path,ignore_path'"):
        load_wsol_masks(bad, root)
    (bad / "localization.txt").write_text("a.jpg,missing.png,\n")
    with pytest.raises(FileNotFoundError, match=r"missing\.png"):
        load_wsol_masks(bad, root)
    with pytest.raises(KeyError, match=r"d\.jpg"):
        load_wsol_masks(meta, root, image_ids=["a.jpg", "d.jpg"])
    with pytest.raises(ValueError, match="image_size"):
        load_wsol_masks(meta, root, image_size=0)


def test_masks_attach_to_a_dataset_on_disk(layout, tmp_path):
    from sklearn_caf.datasets import ImageBoxDataset

    meta, root, _ = layout
    images = tmp_path / "images"
    for name, (h, w) in {"a.jpg": (37, 53), "c.jpg": (5, 7)}.items():
        save(images / name, np.zeros((h, w, 3)))
    wsol = tmp_path / "wsol"
    wsol.mkdir()
    (wsol / "image_ids.txt").write_text("c.jpg\na.jpg\n")
    (wsol / "class_labels.txt").write_text("a.jpg,0\nc.jpg,1\n")
    (wsol / "localization.txt").write_text("a.jpg,0,0,9,9\nc.jpg,1,1,3,3\n")
    ds = ImageBoxDataset.from_wsol(wsol, images, image_size=(24, 20))
    ids, masks, ignore = load_wsol_masks(meta, root, image_size=ds.image_size, image_ids=ds.ids)
    assert ids == ds.ids
    masked = ds.with_masks(masks, ignore)
    assert masked.has_masks and masked.ids == ["c.jpg", "a.jpg"]
    np.testing.assert_array_equal(masked.load_masks([1])[0], masks[[1]])
    assert masked[0][0].shape == (3, 24, 20)  # the images are still read from disk
