"""Images of every bit depth and mode read as 8-bit RGB scaled by their true range (issue 20)."""

from __future__ import annotations

import struct
import zlib

import numpy as np
import pytest

from sklearn_caf.datasets import DatasetFormatError, ImageBoxDataset

Image = pytest.importorskip("PIL.Image")


def _dataset(tmp_path, name, size=(8, 6)):
    width, height = size
    meta = tmp_path / "meta"
    meta.mkdir(exist_ok=True)
    (meta / "image_ids.txt").write_text(f"{name}\n")
    (meta / "class_labels.txt").write_text(f"{name},0\n")
    (meta / "image_sizes.txt").write_text(f"{name},{width},{height}\n")
    (meta / "localization.txt").write_text(f"{name},0,0,1,1\n")
    return ImageBoxDataset.from_wsol(meta, tmp_path, image_size=(height, width))


def _png16_rgb(path, rgb16):
    """A 16-bit-per-channel RGB PNG written by hand (Pillow cannot write one)."""
    height, width, _ = rgb16.shape
    raw = b"".join(b"\0" + rgb16[y].astype(">u2").tobytes() for y in range(height))

    def chunk(kind, data):
        body = kind + data
        return struct.pack(">I", len(data)) + body + struct.pack(">I", zlib.crc32(body))

    header = struct.pack(">IIBBBBB", width, height, 16, 2, 0, 0, 0)
    path.write_bytes(
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", header)
        + chunk(b"IDAT", zlib.compress(raw))
        + chunk(b"IEND", b"")
    )


@pytest.mark.parametrize("suffix", ["png", "tif"])
def test_16_bit_grayscale_is_scaled_by_its_range(tmp_path, suffix):
    values = np.tile(np.uint16([0, 1000, 32768, 65535]), (6, 2))  # 6 x 8
    Image.fromarray(values.astype("<u2")).save(tmp_path / f"g.{suffix}")
    image = _dataset(tmp_path, f"g.{suffix}")[0][0]
    expected = np.rint(values * (255 / 65535)) / 255
    for channel in image:
        np.testing.assert_allclose(channel, expected, atol=1e-6)
    assert image.max() == 1.0 and image.min() == 0.0  # not all white


def test_32_bit_integer_image_with_16_bit_values(tmp_path):
    values = np.tile(np.int32([0, 257, 65535, 12850]), (6, 2))
    Image.fromarray(values).save(tmp_path / "i.tif")  # 32-bit integer TIFF
    image = _dataset(tmp_path, "i.tif")[0][0]
    np.testing.assert_allclose(image[0], np.rint(values / 257) / 255, atol=1e-6)


def test_16_bit_rgb_png(tmp_path):
    rgb16 = np.zeros((6, 8, 3), np.uint16)
    rgb16[..., 0], rgb16[..., 1], rgb16[..., 2] = 65535, 32896, 0  # 255, 128, 0 in 8 bits
    _png16_rgb(tmp_path / "c.png", rgb16)
    image = _dataset(tmp_path, "c.png")[0][0]
    np.testing.assert_allclose(image[:, 0, 0], np.float32([255, 128, 0]) / 255, atol=1e-6)


@pytest.mark.parametrize(
    "mode, colour, expected",
    [
        ("P", (204, 102, 51), (204, 102, 51)),  # a web-palette colour
        ("LA", (90, 255), (90, 90, 90)),
        ("RGBA", (10, 20, 30, 0), (10, 20, 30)),
        ("CMYK", (0, 255, 255, 0), (255, 0, 0)),
        ("CMYK", (0, 0, 0, 0), (255, 255, 255)),
        ("1", 1, (255, 255, 255)),
    ],
)
def test_palette_alpha_and_cmyk_images(tmp_path, mode, colour, expected):
    suffix = "jpg" if mode == "CMYK" else "png"
    if mode == "P":
        image = Image.new("RGB", (8, 6), colour).convert("P")
    else:
        image = Image.new(mode, (8, 6), colour)
    image.save(tmp_path / f"x.{suffix}")
    got = _dataset(tmp_path, f"x.{suffix}")[0][0]
    atol = 3 / 255 if suffix == "jpg" else 1e-6
    np.testing.assert_allclose(got[:, 2, 3], np.float32(expected) / 255, atol=atol)


def test_undecodable_image_names_the_file(tmp_path):
    (tmp_path / "bad.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"\0" * 40)
    ds = _dataset(tmp_path, "bad.png")
    with pytest.raises(DatasetFormatError, match=r"bad\.png"):
        ds[0]


# -- metadata text --------------------------------------------------------------------------------
def test_metadata_with_a_utf8_bom_reads_the_first_id(tmp_path):
    Image.new("RGB", (8, 6), (1, 2, 3)).save(tmp_path / "é.png")
    ds = _dataset(tmp_path, "é.png")
    for name in ("image_ids.txt", "class_labels.txt", "localization.txt", "image_sizes.txt"):
        path = tmp_path / "meta" / name
        path.write_bytes(b"\xef\xbb\xbf" + path.read_bytes())
    ds = ImageBoxDataset.from_wsol(tmp_path / "meta", tmp_path, image_size=(6, 8))
    assert list(ds.ids) == ["é.png"]
    np.testing.assert_allclose(ds[0][0][:, 0, 0], np.float32([1, 2, 3]) / 255, atol=1e-6)


def test_metadata_that_is_not_utf8_names_the_file_and_line(tmp_path):
    Image.new("RGB", (8, 6)).save(tmp_path / "a.png")
    _dataset(tmp_path, "a.png")
    ids = tmp_path / "meta" / "image_ids.txt"
    ids.write_bytes(b"a.png\n\xe9t\xe9.png\n")  # Latin-1, line 2
    with pytest.raises(DatasetFormatError, match=r"image_ids\.txt, line 2: .*UTF-8") as info:
        ImageBoxDataset.from_wsol(tmp_path / "meta", tmp_path, image_size=(6, 8))
    assert info.value.line == 2
