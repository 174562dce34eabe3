"""Sample photos to explain, available offline, and synthetic images with known boxes.

The photos are the ones bundled inside the scikit-learn and scikit-image distributions, so
loading them needs no network (scikit-image fetches its larger data sets with pooch; those
are not used here).
"""

from __future__ import annotations

import numpy as np

__all__ = ["SAMPLE_PHOTO_NAMES", "load_sample_photos", "make_squares"]

#: Names of the photos returned by :func:`load_sample_photos`, in order. The cat comes first
#: so that the shortest demo still has an unambiguous ImageNet class in it.
SAMPLE_PHOTO_NAMES = (
    "chelsea",
    "coffee",
    "astronaut",
    "rocket",
    "motorcycle",
    "china",
    "flower",
)


def _skimage_data():
    try:
        import skimage.data
    except ImportError as exc:
        raise ImportError(
            "load_sample_photos needs scikit-image for most of its photos: "
            "pip install scikit-image."
        ) from exc
    return skimage.data


def _sklearn_photo(name: str) -> np.ndarray:
    from sklearn.datasets import load_sample_image

    return load_sample_image(f"{name}.jpg")


def load_sample_photos() -> tuple[list[str], list[np.ndarray]]:
    """Seven colour photos shipped with scikit-image and scikit-learn.

    ======================  ==========  =========================================
    name                    source      content
    ======================  ==========  =========================================
    ``chelsea``             skimage     a tabby cat (``skimage.data.chelsea``)
    ``coffee``              skimage     a cup of espresso (``skimage.data.coffee``)
    ``astronaut``           skimage     Eileen Collins (``skimage.data.astronaut``)
    ``rocket``              skimage     a Falcon 9 launch (``skimage.data.rocket``)
    ``motorcycle``          skimage     a motorcycle in a studio, the left view of
                                        ``skimage.data.stereo_motorcycle``
    ``china``               sklearn     a Chinese temple (``china.jpg``)
    ``flower``              sklearn     a flower (``flower.jpg``)
    ======================  ==========  =========================================

    Returns
    -------
    names : list of str
        :data:`SAMPLE_PHOTO_NAMES`, as a list.
    images : list of ndarray of shape (height, width, 3), uint8
        The RGB photos at their original, differing sizes (300 to 741 pixels on a side).

    Raises
    ------
    ImportError
        If scikit-image is not installed.

    Examples
    --------
    >>> from sklearn_caf.datasets import load_sample_photos
    >>> names, images = load_sample_photos()
    >>> names[0], images[0].shape, images[0].dtype
    ('chelsea', (300, 451, 3), dtype('uint8'))
    """
    data = _skimage_data()
    loaders = {
        "chelsea": data.chelsea,
        "coffee": data.coffee,
        "astronaut": data.astronaut,
        "rocket": data.rocket,
        "motorcycle": lambda: data.stereo_motorcycle()[0],
        "china": lambda: _sklearn_photo("china"),
        "flower": lambda: _sklearn_photo("flower"),
    }
    images = [np.ascontiguousarray(loaders[name](), dtype=np.uint8) for name in SAMPLE_PHOTO_NAMES]
    return list(SAMPLE_PHOTO_NAMES), images


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
