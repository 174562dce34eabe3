"""Datasets: sample photos, synthetic images with known boxes, and WSOL benchmark sets.

The photos are the ones bundled inside the scikit-learn and scikit-image distributions, so
loading them needs no network (scikit-image fetches its larger data sets with pooch; those
are not used here). :class:`ImageBoxDataset` reads the weakly supervised localization
benchmarks (wsolevaluation metadata, CUB-200-2011, Pascal VOC / ImageNet XML) lazily from
disk; :func:`make_wsol_dataset` makes a synthetic one.
"""

from . import _samples
from ._checks import DatasetFormatError
from ._formats import load_wsol_masks
from ._image_box import ImageBoxDataset, NormalizeImage
from ._presets import ModelPreset, model_preset
from ._samples import load_sample_photos
from ._synthetic import make_squares, make_wsol_dataset

#: Names of the photos returned by :func:`load_sample_photos`, in order. The cat comes first
#: so that the shortest demo still has an unambiguous ImageNet class in it.
SAMPLE_PHOTO_NAMES = _samples.SAMPLE_PHOTO_NAMES

__all__ = [
    "SAMPLE_PHOTO_NAMES",
    "DatasetFormatError",
    "ImageBoxDataset",
    "ModelPreset",
    "NormalizeImage",
    "load_sample_photos",
    "load_wsol_masks",
    "make_squares",
    "make_wsol_dataset",
    "model_preset",
]
