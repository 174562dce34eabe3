"""Synthetic images with known boxes: coloured squares and WSOL-style scenes."""

from __future__ import annotations

import numpy as np

from ._checks import _check_image_size
from ._image_box import ImageBoxDataset

# Colours of the squares of make_squares, class by class.
_SQUARE_COLOURS = np.array(
    [[1.0, 0.2, 0.2], [0.2, 1.0, 0.2], [0.2, 0.2, 1.0], [1.0, 1.0, 0.2], [0.2, 1.0, 1.0]]
)


def make_squares(
    n_samples: int = 100,
    *,
    size: int = 32,
    square: int = 8,
    n_classes: int = 2,
    noise: float = 0.5,
    distractor: bool = False,
    channels_last: bool = False,
    random_state=None,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Noisy images with one coloured square each: the class is the colour, the box is known.

    A toy weakly supervised localization problem: a classifier trained on the labels alone
    should look at the square, whose box is returned for scoring where it looks.

    Parameters
    ----------
    n_samples : int, default=100
        Number of images.
    size : int, default=32
        Height and width of the images.
    square : int, default=8
        Side of the square, in pixels.
    n_classes : int, default=2
        Number of colours (2 to 5: red, green, blue, yellow, cyan), balanced.
    noise : float, default=0.5
        The background is uniform noise in ``[0, noise]``, drawn per pixel and channel.
    distractor : bool, default=False
        Also draw a light grey square of the same size, not overlapping the coloured one:
        brighter than the object in every channel but the same in every class, so a model
        must learn to ignore it.
    channels_last : bool, default=False
        Return (n, size, size, 3) images (Keras) instead of (n, 3, size, size) (PyTorch).
    random_state : int, RandomState instance or None, default=None
        Seeds the positions and the noise.

    Returns
    -------
    images : ndarray of shape (n_samples, 3, size, size), float32
        Values in [0, 1].
    y : ndarray of shape (n_samples,), int64
        The class (colour) of each square.
    boxes : ndarray of shape (n_samples, 4), float64
        The squares as ``[x0, y0, x1, y1]`` in pixel-edge coordinates
        (:mod:`sklearn_caf.metrics`' convention).

    Examples
    --------
    >>> from sklearn_caf.datasets import make_squares
    >>> images, y, boxes = make_squares(4, size=16, square=4, random_state=0)
    >>> images.shape, y.tolist(), boxes.shape
    ((4, 3, 16, 16), [0, 1, 0, 1], (4, 4))
    """
    from sklearn.utils import check_random_state

    if not 2 <= n_classes <= len(_SQUARE_COLOURS):
        raise ValueError(f"n_classes must be in [2, {len(_SQUARE_COLOURS)}]; got {n_classes}.")
    if not 1 <= square <= size:
        raise ValueError(f"square must be in [1, size={size}]; got {square}.")
    if n_samples < 1:
        raise ValueError(f"n_samples must be at least 1; got {n_samples}.")
    if distractor and size < 2 * square:
        raise ValueError(f"a distractor needs size >= 2 * square; got {size} and {square}.")
    rng = check_random_state(random_state)
    y = np.arange(n_samples) % n_classes
    images = rng.uniform(0.0, noise, size=(n_samples, 3, size, size))
    corners = rng.randint(0, size - square + 1, size=(n_samples, 2))  # (row, column)
    for image, label, (top, left) in zip(images, y, corners, strict=True):
        if distractor:
            while True:  # rejection sampling: few tries, the squares are small
                row, col = rng.randint(0, size - square + 1, size=2)
                if abs(row - top) >= square or abs(col - left) >= square:
                    break
            image[:, row : row + square, col : col + square] = 0.9
        image[:, top : top + square, left : left + square] = _SQUARE_COLOURS[label, :, None, None]
    boxes = np.column_stack(
        [corners[:, 1], corners[:, 0], corners[:, 1] + square, corners[:, 0] + square]
    ).astype(np.float64)
    if channels_last:
        images = np.moveaxis(images, 1, -1)
    return np.ascontiguousarray(images, dtype=np.float32), y.astype(np.int64), boxes


#: Object colours of make_wsol_dataset, class by class (saturated, far apart in hue).
_WSOL_CLASS_COLOURS = {
    "red": (0.95, 0.15, 0.15),
    "green": (0.15, 0.85, 0.2),
    "blue": (0.2, 0.3, 1.0),
    "yellow": (0.95, 0.9, 0.1),
    "magenta": (0.9, 0.2, 0.9),
    "cyan": (0.1, 0.9, 0.9),
}


def _interpolation_matrix(size: int, cells: int) -> np.ndarray:
    """(size, cells) weights of linear interpolation from `cells` knots to `size` samples."""
    position = np.linspace(0, cells - 1, size)
    lower = np.minimum(position.astype(int), cells - 2)
    frac = position - lower
    weights = np.zeros((size, cells))
    weights[np.arange(size), lower] = 1 - frac
    weights[np.arange(size), lower + 1] = frac
    return weights


def _smooth_field(rng, rows: np.ndarray, cols: np.ndarray) -> np.ndarray:
    """A (3, height, width) field interpolated bilinearly from a random coarse grid."""
    coarse = rng.uniform(0.0, 1.0, size=(3, rows.shape[1], cols.shape[1]))
    return rows @ coarse @ cols.T


def _shape_mask(kind, height, width):
    """A (height, width) boolean mask of a filled rectangle, ellipse or triangle."""
    rows = (np.arange(height) + 0.5) / height
    cols = (np.arange(width) + 0.5) / width
    r, c = np.meshgrid(rows, cols, indexing="ij")
    if kind == 0:
        mask = np.ones((height, width), dtype=bool)
    elif kind == 1:
        mask = (r - 0.5) ** 2 + (c - 0.5) ** 2 <= 0.25
    else:  # apex at the top middle, base on the bottom edge
        mask = np.abs(c - 0.5) <= r / 2
    # Every shape touches all four sides of its box, so the box is the mask's tight box.
    mask[0, width // 2] = mask[-1, width // 2] = True
    mask[height // 2, 0] = mask[height // 2, -1] = True
    return mask


def make_wsol_dataset(
    n: int = 200,
    *,
    image_size=32,
    n_classes: int = 3,
    max_objects: int = 1,
    object_size: tuple[float, float] = (0.25, 0.5),
    n_clutter: int = 10,
    noise: float = 0.08,
    channels_last: bool = False,
    random_state=None,
) -> ImageBoxDataset:
    """Coloured objects on clutter, with known boxes: a small weakly supervised localization set.

    Each image shows one object (or up to ``max_objects`` of the same class) -- a rectangle,
    ellipse or triangle, of random size and aspect -- on a cluttered background. The class is
    the object's colour (red, green, blue, yellow, magenta, cyan). The background is built so
    that the object is the only reliable cue:

    - a smooth random colour field (dimmed, so the object stands out) plus pixel noise;
    - ``n_clutter`` distractors -- thin strokes and small blobs in the class colours and in
      white -- drawn independently of the label, so every class colour occurs in every image
      and only the large coloured shape tells the classes apart;
    - the object's position, size, shape and brightness are drawn independently of its class,
      and it is drawn last, over the clutter.

    So everything outside the boxes has the same distribution in every class: a model can
    only classify from the object, and an explainer that localizes the evidence finds it.
    A tiny CNN learns the classes in a few seconds of CPU training (a few hundred images,
    a few epochs), which is what the tests and the gallery do.

    Parameters
    ----------
    n : int, default=200
        Number of images; labels cycle ``0, 1, ..., n_classes - 1``.
    image_size : int or (int, int), default=32
        ``(height, width)`` of the images (an int for a square), at least 16. At 32 a CNN of
        three 3x3 convolutions (16-32 channels, one 2x2 pooling, global max pooling) reaches
        about 98% held-out accuracy after one epoch over 400 images, in about a second.
    n_classes : int, default=3
        Number of classes, 2 to 6.
    max_objects : int, default=1
        Each image holds between 1 and ``max_objects`` objects of its class, with disjoint
        boxes (fewer when they do not fit), one box each.
    object_size : (float, float), default=(0.25, 0.5)
        Smallest and largest side of an object, as fractions of the image's side.
    n_clutter : int, default=10
        Number of distractors per image.
    noise : float, default=0.08
        Amplitude of the uniform pixel noise.
    channels_last : bool, default=False
        Images (n, height, width, 3) (Keras) instead of (n, 3, height, width) (PyTorch).
    random_state : int, RandomState instance or None, default=None
        Seeds everything; the same seed gives the same dataset (and fingerprint).

    Returns
    -------
    ImageBoxDataset
        Built with :meth:`ImageBoxDataset.from_arrays`: float32 images with values in [0, 1],
        boxes in pixel-edge coordinates (the tight boxes of the objects), ``classes`` the
        colour names.

    Examples
    --------
    >>> from sklearn_caf.datasets import make_wsol_dataset
    >>> ds = make_wsol_dataset(6, image_size=32, n_classes=3, random_state=0)
    >>> ds
    ImageBoxDataset(format='arrays', n_images=6, n_classes=3, image_size=(32, 32), layout='NCHW')
    >>> ds.classes, ds.labels.tolist()
    (['red', 'green', 'blue'], [0, 1, 2, 0, 1, 2])
    >>> image, label, boxes = ds[0]
    >>> image.shape, image.dtype, boxes.shape
    ((3, 32, 32), dtype('float32'), (1, 4))
    """
    from sklearn.utils import check_random_state

    height, width = _check_image_size(image_size)
    if min(height, width) < 16:
        raise ValueError(f"image_size must be at least 16 on each side; got {image_size!r}.")
    if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n < 1:
        raise ValueError(f"n must be a positive int; got {n!r}.")
    if not 2 <= n_classes <= len(_WSOL_CLASS_COLOURS):
        raise ValueError(f"n_classes must be in [2, {len(_WSOL_CLASS_COLOURS)}]; got {n_classes}.")
    if (
        isinstance(max_objects, bool)
        or not isinstance(max_objects, (int, np.integer))
        or (max_objects < 1)
    ):
        raise ValueError(f"max_objects must be a positive int; got {max_objects!r}.")
    low, high = object_size
    if not 0 < low <= high <= 1:
        raise ValueError(
            f"object_size must be (low, high) with 0 < low <= high <= 1; got {object_size!r}."
        )
    if n_clutter < 0:
        raise ValueError(f"n_clutter must be non-negative; got {n_clutter}.")
    if noise < 0:
        raise ValueError(f"noise must be non-negative; got {noise}.")
    rng = check_random_state(random_state)
    names = list(_WSOL_CLASS_COLOURS)
    palette = np.array(list(_WSOL_CLASS_COLOURS.values()))
    clutter_palette = np.vstack([palette, [[0.95, 0.95, 0.95]]])
    labels = np.arange(n) % n_classes
    images = np.empty((n, 3, height, width), dtype=np.float32)
    all_boxes = []
    side = min(height, width)
    rows, cols = _interpolation_matrix(height, 4), _interpolation_matrix(width, 4)
    for i, label in enumerate(labels):
        image = 0.45 * _smooth_field(rng, rows, cols)
        image += rng.uniform(-noise, noise, size=image.shape)
        for _ in range(n_clutter):
            colour = clutter_palette[rng.randint(len(clutter_palette))] * rng.uniform(0.6, 1.0)
            if rng.rand() < 0.5:  # a thin stroke, horizontal or vertical
                length = rng.randint(side // 6, side // 2 + 1)
                thick = rng.randint(1, 3)
                h, w = (thick, length) if rng.rand() < 0.5 else (length, thick)
            else:  # a small blob
                h = w = rng.randint(2, max(3, side // 10) + 1)
            top, left = rng.randint(0, height - h + 1), rng.randint(0, width - w + 1)
            image[:, top : top + h, left : left + w] = colour[:, None, None]
        boxes = []
        for _ in range(rng.randint(1, max_objects + 1)):
            for _try in range(20):  # rejection sampling of a disjoint box
                h = max(3, round(rng.uniform(low, high) * height))
                w = max(3, round(rng.uniform(low, high) * width))
                top, left = rng.randint(0, height - h + 1), rng.randint(0, width - w + 1)
                box = (left, top, left + w, top + h)
                if all(
                    box[2] <= b[0] or b[2] <= box[0] or box[3] <= b[1] or b[3] <= box[1]
                    for b in boxes
                ):
                    break
            else:
                continue
            mask = _shape_mask(rng.randint(3), h, w)
            shade = palette[label] * rng.uniform(0.8, 1.0)
            texture = shade[:, None, None] + rng.uniform(-noise, noise, size=(3, h, w))
            region = image[:, top : top + h, left : left + w]
            region[:, mask] = texture[:, mask]
            boxes.append(box)
        all_boxes.append(np.asarray(boxes, dtype=np.float64))
        images[i] = np.clip(image, 0.0, 1.0)
    if channels_last:
        images = np.ascontiguousarray(np.moveaxis(images, 1, -1))
    return ImageBoxDataset.from_arrays(
        images,
        labels,
        all_boxes,
        channels_last=channels_last,
        classes=names[:n_classes],
    )
