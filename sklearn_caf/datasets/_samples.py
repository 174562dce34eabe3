"""The sample photos bundled with scikit-image and scikit-learn (no network)."""

from __future__ import annotations

import numpy as np

from .._utils import import_optional

# Names of the photos returned by :func:`load_sample_photos`, in order. The cat comes first
# so that the shortest demo still has an unambiguous ImageNet class in it.
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
    return import_optional(
        "skimage.data", needed_by="load_sample_photos (most of its photos)", extra="demo"
    )


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
