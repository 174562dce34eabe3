"""Pictures as NumPy arrays: colormaps, overlays, boxes, grids and part maps (no matplotlib)."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from .._explainers import resize_maps
from .._utils import import_optional


def _jet(values: np.ndarray) -> np.ndarray:
    # The classic piecewise-linear "jet" (dark blue, blue, cyan, yellow, red, dark red): each
    # channel is a trapezoid of the value. Built in so that the colormap everyone uses for
    # saliency needs no plotting library.
    x = values[..., np.newaxis]
    centres = np.array([0.75, 0.5, 0.25])  # red, green, blue
    return np.clip(1.5 - np.abs(4.0 * x - 4.0 * centres), 0.0, 1.0)


def apply_colormap(values: np.ndarray, cmap: str = "jet") -> np.ndarray:
    """Map values in [0, 1] to RGB colours.

    Parameters
    ----------
    values : array-like of shape (...)
        Values, clipped to [0, 1]. NaN is treated as 0.
    cmap : str, default="jet"
        ``"jet"`` is built in; any other name is looked up in matplotlib's colormaps.

    Returns
    -------
    rgb : ndarray of shape (..., 3), float64
        Colours in [0, 1].

    Raises
    ------
    ImportError
        If ``cmap`` is not ``"jet"`` and matplotlib is not installed.

    Examples
    --------
    >>> from sklearn_caf.plotting import apply_colormap
    >>> apply_colormap([0.0, 0.5, 1.0])
    array([[0. , 0. , 0.5],
           [0.5, 1. , 0.5],
           [0.5, 0. , 0. ]])
    """
    values = np.clip(np.nan_to_num(np.asarray(values, dtype=np.float64)), 0.0, 1.0)
    if cmap == "jet":
        return _jet(values)
    matplotlib = import_optional("matplotlib", needed_by=f"cmap={cmap!r} (only 'jet' is built in)")
    return np.asarray(matplotlib.colormaps[cmap](values), dtype=np.float64)[..., :3]


def _check_image(image: np.ndarray, name: str = "image") -> np.ndarray:
    image = np.asarray(image)
    if image.ndim == 2:  # grayscale photos are common; show them in colour space
        image = np.repeat(image[..., np.newaxis], 3, axis=2)
    if image.ndim != 3 or image.shape[2] not in (3, 4):
        raise ValueError(
            f"{name} must be an RGB array of shape (height, width, 3); got shape {image.shape}."
        )
    if image.dtype != np.uint8:
        raise ValueError(f"{name} must be uint8 (values 0-255); got dtype {image.dtype}.")
    return np.ascontiguousarray(image[..., :3])


def overlay_heatmap(
    image: np.ndarray, heatmap: np.ndarray, *, alpha: float = 0.5, cmap: str = "jet"
) -> np.ndarray:
    """Blend a coloured heatmap onto an image.

    Parameters
    ----------
    image : ndarray of shape (height, width, 3) or (height, width), uint8
        The photo. A fourth (alpha) channel is dropped; grayscale is shown as RGB.
    heatmap : array-like of shape (h, w)
        Values in [0, 1] (clipped), e.g. one map of an explainer's ``transform``. Resized
        bilinearly to the image when its shape differs, with the same convention as the
        explainers' own upsampling.
    alpha : float in [0, 1], default=0.5
        Weight of the heatmap: 0 returns the image, 1 the coloured heatmap alone.
    cmap : str, default="jet"
        Colormap; see :func:`apply_colormap`.

    Returns
    -------
    overlay : ndarray of shape (height, width, 3), uint8
        ``(1 - alpha) * image + alpha * colours``, rounded.

    Examples
    --------
    >>> import numpy as np
    >>> from sklearn_caf.plotting import overlay_heatmap
    >>> image = np.zeros((4, 6, 3), dtype=np.uint8)
    >>> heatmap = np.zeros((2, 3))
    >>> heatmap[0, 0] = 1.0
    >>> out = overlay_heatmap(image, heatmap, alpha=0.5)
    >>> out.shape, out.dtype
    ((4, 6, 3), dtype('uint8'))
    >>> out[0, 0], out[3, 5]  # dark red where the map is 1, dark blue where it is 0
    (array([64,  0,  0], dtype=uint8), array([ 0,  0, 64], dtype=uint8))

    A map at a layer's resolution (7x7) on a photo:

    .. plot::

       >>> import matplotlib.pyplot as plt
       >>> import numpy as np
       >>> from sklearn_caf.datasets import load_sample_photos
       >>> from sklearn_caf.plotting import overlay_heatmap
       >>> names, photos = load_sample_photos()
       >>> cat = photos[names.index("chelsea")]
       >>> yy, xx = np.mgrid[0:7, 0:7]
       >>> heatmap = np.exp(-((xx - 3.5) ** 2 + (yy - 2.5) ** 2) / 3)
       >>> fig, axes = plt.subplots(1, 2, figsize=(7, 2.8))
       >>> _ = axes[0].imshow(heatmap, cmap="jet")
       >>> _ = axes[1].imshow(overlay_heatmap(cat, heatmap, alpha=0.5))
       >>> for ax in axes:
       ...     ax.set_axis_off()
    """
    image = _check_image(image)
    if not 0.0 <= alpha <= 1.0:
        raise ValueError(f"alpha must be in [0, 1]; got {alpha}.")
    heatmap = np.asarray(heatmap, dtype=np.float64)
    if heatmap.ndim != 2:
        raise ValueError(f"heatmap must be 2-D (height, width); got shape {heatmap.shape}.")
    if heatmap.shape != image.shape[:2]:
        heatmap = resize_maps(heatmap, image.shape[:2])
    colours = apply_colormap(heatmap, cmap) * 255.0
    blended = (1.0 - alpha) * image + alpha * colours
    return np.clip(np.rint(blended), 0, 255).astype(np.uint8)


def draw_box(
    image: np.ndarray,
    box: Sequence[float],
    color: tuple[int, int, int] = (0, 255, 0),
    width: int = 2,
) -> np.ndarray:
    """Draw a rectangle's outline on a copy of an image.

    Parameters
    ----------
    image : ndarray of shape (height, width, 3) or (height, width), uint8
        The image.
    box : sequence of 4 numbers
        ``[x0, y0, x1, y1]`` in pixel-edge coordinates, as returned by
        :func:`sklearn_caf.boxes.heatmaps_to_boxes`: the box covers columns ``x0`` to
        ``x1 - 1`` and rows ``y0`` to ``y1 - 1``. The outline is drawn on the outermost
        ``width`` pixels inside it, so it never covers pixels outside the box. Parts outside
        the image are clipped.
    color : tuple of 3 ints, default=(0, 255, 0)
        RGB colour of the outline.
    width : int, default=2
        Thickness of the outline in pixels.

    Returns
    -------
    out : ndarray of shape (height, width, 3), uint8
        A copy of ``image`` with the outline drawn.

    Examples
    --------
    >>> import numpy as np
    >>> from sklearn_caf.plotting import draw_box
    >>> out = draw_box(np.zeros((5, 6, 3), dtype=np.uint8), [1, 1, 5, 4], width=1)
    >>> (out[..., 1] > 0).astype(int)
    array([[0, 0, 0, 0, 0, 0],
           [0, 1, 1, 1, 1, 0],
           [0, 1, 0, 0, 1, 0],
           [0, 1, 1, 1, 1, 0],
           [0, 0, 0, 0, 0, 0]])

    .. plot::

       >>> import matplotlib.pyplot as plt
       >>> from sklearn_caf.datasets import load_sample_photos
       >>> from sklearn_caf.plotting import draw_box
       >>> names, photos = load_sample_photos()
       >>> cat = photos[names.index("chelsea")]
       >>> _ = plt.imshow(draw_box(cat, [120, 20, 330, 230], color=(255, 255, 0), width=4))
       >>> _ = plt.axis("off")
    """
    Image, ImageDraw = _pillow("draw_box")
    image = _check_image(image)
    if len(box) != 4:
        raise ValueError(f"box must be [x0, y0, x1, y1]; got {box!r}.")
    if width < 1:
        raise ValueError(f"width must be at least 1; got {width}.")
    height, img_width = image.shape[:2]
    x0, y0, x1, y1 = (round(float(v)) for v in box)
    # PIL's rectangle takes inclusive corners; pixel-edge x1/y1 are one past the last pixel.
    x0, y0 = max(x0, 0), max(y0, 0)
    x1, y1 = min(x1, img_width) - 1, min(y1, height) - 1
    if x1 < x0 or y1 < y0:  # entirely outside the image
        return image.copy()
    color = tuple(int(c) for c in color)
    pil = Image.fromarray(image)
    draw = ImageDraw.Draw(pil)
    if min(x1 - x0, y1 - y0) + 1 <= 2 * width:
        # Every pixel of so small a box is on its outline; PIL would draw the thick outline
        # beyond the corners instead.
        draw.rectangle([x0, y0, x1, y1], fill=color)
    else:
        draw.rectangle([x0, y0, x1, y1], outline=color, width=int(width))
    return np.asarray(pil).copy()


def _pillow(needed_by: str) -> tuple:
    """Pillow's ``Image`` and ``ImageDraw`` modules."""
    return (
        import_optional("PIL.Image", needed_by=needed_by),
        import_optional("PIL.ImageDraw", needed_by=needed_by),
    )


def _default_font(size: int):
    ImageFont = import_optional("PIL.ImageFont", needed_by="image_grid's titles")
    try:
        return ImageFont.load_default(size=size)
    except TypeError:  # Pillow < 10.1 has only the fixed bitmap font
        return ImageFont.load_default()


def image_grid(
    images: Sequence[np.ndarray],
    ncols: int,
    *,
    captions: Sequence[str] | None = None,
    pad: int = 4,
    caption_height: int = 16,
    background: int = 255,
) -> np.ndarray:
    """Tile images into a grid (a contact sheet), each with an optional caption below.

    Parameters
    ----------
    images : sequence of ndarray of shape (height, width, 3), uint8
        The tiles, row by row. Each cell is as large as the largest tile; smaller tiles are
        placed at its top left.
    ncols : int
        Tiles per row.
    captions : sequence of str, default=None
        One caption per tile, drawn under it and cut to the tile's width.
    pad : int, default=4
        Space between and around the tiles, in pixels.
    caption_height : int, default=16
        Height of the caption strip under each tile; unused without captions.
    background : int, default=255
        Grey level of the background (white).

    Returns
    -------
    sheet : ndarray of shape (H, W, 3), uint8
        The grid: ``ceil(len(images) / ncols)`` rows of ``ncols`` cells.

    Examples
    --------
    >>> import numpy as np
    >>> from sklearn_caf.plotting import image_grid
    >>> tiles = [np.zeros((10, 20, 3), dtype=np.uint8)] * 5
    >>> image_grid(tiles, ncols=2, pad=1).shape
    (34, 43, 3)
    """
    Image, ImageDraw = _pillow("image_grid")
    tiles = [_check_image(im, "images[i]") for im in images]
    if not tiles:
        raise ValueError("images is empty.")
    if ncols < 1:
        raise ValueError(f"ncols must be at least 1; got {ncols}.")
    if captions is not None and len(captions) != len(tiles):
        raise ValueError(f"got {len(captions)} captions for {len(tiles)} images.")
    cell_h = max(t.shape[0] for t in tiles)
    cell_w = max(t.shape[1] for t in tiles)
    strip = caption_height if captions is not None else 0
    nrows = -(-len(tiles) // ncols)
    sheet = np.full(
        (pad + nrows * (cell_h + strip + pad), pad + ncols * (cell_w + pad), 3),
        background,
        dtype=np.uint8,
    )
    for i, tile in enumerate(tiles):
        top = pad + (i // ncols) * (cell_h + strip + pad)
        left = pad + (i % ncols) * (cell_w + pad)
        sheet[top : top + tile.shape[0], left : left + tile.shape[1]] = tile
    if captions is None:
        return sheet
    pil = Image.fromarray(sheet)
    draw = ImageDraw.Draw(pil)
    font = _default_font(max(caption_height - 4, 8))
    for i, text in enumerate(captions):
        top = pad + (i // ncols) * (cell_h + strip + pad) + cell_h + 1
        left = pad + (i % ncols) * (cell_w + pad)
        text = str(text)
        if draw.textlength(text, font=font) > cell_w:
            # Shorten rather than spill into the next cell. ASCII dots, because Pillow's
            # fallback bitmap font has no ellipsis glyph.
            while text and draw.textlength(text + "...", font=font) > cell_w:
                text = text[:-1]
            text += "..."
        draw.text((left, top), text, fill=(0, 0, 0), font=font)
    return np.asarray(pil).copy()


def part_map_rgb(maps: np.ndarray, feature_norms: np.ndarray | None = None) -> np.ndarray:
    """BR-NPA's picture of ranked parts: part 1 in red, part 2 in green, part 3 in blue.

    Each part's map is scaled to a peak of 1 and multiplied by the feature norm scaled to a
    peak of 1, so that salient positions are bright and parts resting on weak features
    (which matter little to the decision) stay dark, as in the paper's figures.

    Parameters
    ----------
    maps : array-like of shape (n_parts, h, w), n_parts <= 3
        One image's attention maps, part 1 first (``BRNPAPooling.explain(X).maps[i]``).
    feature_norms : array-like of shape (h, w), default=None
        The feature norms (``BRNPAParts.feature_norms[i]``). ``None``: no brightness
        weighting.

    Returns
    -------
    rgb : ndarray of shape (h, w, 3), float64
        Colours in [0, 1]; channels of missing parts are 0.

    See Also
    --------
    overlay_part_maps : The same colours blended on the photo.

    Examples
    --------
    >>> import numpy as np
    >>> from sklearn_caf.plotting import part_map_rgb
    >>> maps = np.array([[[1.0, 0.0]], [[0.0, 1.0]]])   # 2 parts on a 1x2 map
    >>> part_map_rgb(maps, feature_norms=np.array([[4.0, 2.0]]))
    array([[[1. , 0. , 0. ],
            [0. , 0.5, 0. ]]])

    Three parts on a 7x7 map, the third on weak features (so it stays dark):

    .. plot::

       >>> import matplotlib.pyplot as plt
       >>> import numpy as np
       >>> from sklearn_caf.plotting import part_map_rgb
       >>> yy, xx = np.mgrid[0:7, 0:7]
       >>> def blob(cy, cx):
       ...     return np.exp(-((xx - cx) ** 2 + (yy - cy) ** 2) / 2)
       >>> maps = np.stack([blob(2, 2), blob(4, 5), blob(6, 1)])
       >>> norms = 1.0 * blob(2, 2) + 0.8 * blob(4, 5) + 0.2 * blob(6, 1)
       >>> _ = plt.imshow(part_map_rgb(maps, norms))
       >>> _ = plt.axis("off")
    """
    maps = np.asarray(maps, dtype=np.float64)
    if maps.ndim != 3 or not 1 <= maps.shape[0] <= 3:
        raise ValueError(
            f"maps must be 1 to 3 part maps of shape (n_parts, height, width); got shape "
            f"{maps.shape}."
        )
    if not np.isfinite(maps).all() or (maps < 0).any():
        raise ValueError("maps must hold finite, non-negative weights.")
    peaks = maps.max(axis=(1, 2), keepdims=True)
    scaled = np.divide(maps, peaks, out=np.zeros_like(maps), where=peaks > 0)
    if feature_norms is not None:
        norms = np.asarray(feature_norms, dtype=np.float64)
        if norms.shape != maps.shape[1:]:
            raise ValueError(
                f"feature_norms must have the maps' spatial shape {maps.shape[1:]}; got "
                f"{norms.shape}."
            )
        peak = norms.max()
        scaled = scaled * (norms / peak if peak > 0 else 0.0)
    rgb = np.zeros((*maps.shape[1:], 3))
    rgb[..., : maps.shape[0]] = np.moveaxis(scaled, 0, -1)
    return np.clip(rgb, 0.0, 1.0)


def overlay_part_maps(
    image: np.ndarray,
    maps: np.ndarray,
    feature_norms: np.ndarray | None = None,
    *,
    alpha: float = 0.7,
) -> np.ndarray:
    """Blend BR-NPA's RGB part map (:func:`part_map_rgb`) onto an image.

    Parameters
    ----------
    image : ndarray of shape (height, width, 3) or (height, width), uint8
        The photo.
    maps : array-like of shape (n_parts, h, w), n_parts <= 3
        One image's attention maps, part 1 first; resized bilinearly to the image.
    feature_norms : array-like of shape (h, w), default=None
        The feature norms that set the brightness.
    alpha : float in [0, 1], default=0.7
        Weight of the part colours: 0 returns the image, 1 the colours alone (on black).

    Returns
    -------
    overlay : ndarray of shape (height, width, 3), uint8
        The picture with the part maps blended on it.

    Examples
    --------
    >>> import numpy as np
    >>> from sklearn_caf.plotting import overlay_part_maps
    >>> image = np.full((4, 4, 3), 100, dtype=np.uint8)
    >>> maps = np.zeros((3, 2, 2))
    >>> maps[0, 0, 0] = maps[1, 1, 1] = maps[2, 0, 1] = 1.0
    >>> overlay_part_maps(image, maps, alpha=1.0)[0, 0]
    array([255,   0,   0], dtype=uint8)

    .. plot::

       >>> import matplotlib.pyplot as plt
       >>> import numpy as np
       >>> from sklearn_caf.datasets import load_sample_photos
       >>> from sklearn_caf.plotting import overlay_part_maps
       >>> names, photos = load_sample_photos()
       >>> cat = photos[names.index("chelsea")]
       >>> yy, xx = np.mgrid[0:7, 0:7]
       >>> def blob(cy, cx):
       ...     return np.exp(-((xx - cx) ** 2 + (yy - cy) ** 2) / 1.5)
       >>> maps = np.stack([blob(2, 2.5), blob(2, 4.5), blob(5, 3.5)])
       >>> _ = plt.imshow(overlay_part_maps(cat, maps, maps.sum(0)))
       >>> _ = plt.axis("off")
    """
    image = _check_image(image)
    if not 0.0 <= alpha <= 1.0:
        raise ValueError(f"alpha must be in [0, 1]; got {alpha}.")
    rgb = part_map_rgb(maps, feature_norms)
    if rgb.shape[:2] != image.shape[:2]:
        rgb = np.moveaxis(resize_maps(np.moveaxis(rgb, -1, 0), image.shape[:2]), 0, -1)
    blended = (1.0 - alpha) * image + alpha * 255.0 * np.clip(rgb, 0.0, 1.0)
    return np.clip(np.rint(blended), 0, 255).astype(np.uint8)


# -- pictures of an evaluation report (sklearn_caf.evaluation) --------------------------------
def display_image(image: np.ndarray) -> np.ndarray:
    """A model-ready image (CHW or HWC, any range) as a uint8 RGB picture, min-max scaled.

    Parameters
    ----------
    image : ndarray of shape (channels, height, width) or (height, width, channels)
        One image as a model takes it (1 or 3 channels), e.g. ``dataset[i][0]``. The
        layout is guessed from where the 1 or 3 channels are.

    Returns
    -------
    picture : ndarray of shape (height, width, 3), uint8
        The image as 8-bit RGB, ready for ``plt.imshow`` or saving.

    Examples
    --------
    >>> import numpy as np
    >>> from sklearn_caf.plotting import display_image
    >>> display_image(np.linspace(-1, 1, 3 * 4 * 5).reshape(3, 4, 5)).shape
    (4, 5, 3)
    """
    image = np.asarray(image, dtype=np.float64)
    if image.ndim != 3:
        raise ValueError(f"image must be 3-D (CHW or HWC); got shape {image.shape}.")
    if image.shape[0] in (1, 3) and image.shape[-1] not in (1, 3):
        image = image.transpose(1, 2, 0)
    if image.shape[-1] == 1:
        image = np.repeat(image, 3, axis=2)
    lo, hi = image.min(), image.max()
    scaled = (image - lo) / (hi - lo) if hi > lo else np.zeros_like(image)
    return np.rint(scaled[..., :3] * 255).astype(np.uint8)
