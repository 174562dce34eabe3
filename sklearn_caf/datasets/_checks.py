"""Checks shared by the dataset and its file readers: the format error, image sizes, boxes."""

from __future__ import annotations

import numpy as np


class DatasetFormatError(ValueError):
    """A metadata file (or an image) of a dataset on disk is malformed.

    The message starts with the file and, where there is one, the line (1-based):
    ``"/data/CUB_200_2011/bounding_boxes.txt, line 12: ..."``. The same are kept as the
    attributes ``path`` (str), ``line`` (int or None) and ``message`` (str, the rest), for
    tools that report them.

    Parameters
    ----------
    path : str or path-like
        The malformed file.
    line : int or None
        The line (1-based) where the problem is, or ``None`` when it is not one line.
    message : str
        What is wrong, without the file and line.
    """

    def __init__(self, path, line: int | None, message: str):
        self.path = str(path)
        self.line = line
        self.message = message
        where = self.path if line is None else f"{self.path}, line {line}"
        super().__init__(f"{where}: {message}")

    def __reduce__(self):  # keep the attributes across processes (joblib / Dask workers)
        return type(self), (self.path, self.line, self.message)


def _check_image_size(image_size) -> tuple[int, int]:
    if isinstance(image_size, (int, np.integer)) and not isinstance(image_size, bool):
        image_size = (int(image_size), int(image_size))
    try:
        height, width = image_size
        if any(
            isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < 1
            for v in (height, width)
        ):
            raise TypeError
    except (TypeError, ValueError):
        raise ValueError(
            "image_size must be a positive int or a (height, width) pair of positive ints; "
            f"got {image_size!r}."
        ) from None
    return int(height), int(width)


def _box_problem(boxes: np.ndarray, height: int, width: int) -> str | None:
    """Why some box of an (m, 4) array is not a box inside a height x width image, or None."""
    if not np.isfinite(boxes).all():
        return f"has a non-finite coordinate: {boxes.tolist()}."
    for x0, y0, x1, y1 in boxes.tolist():
        if not (x0 < x1 and y0 < y1):
            return f"is empty (needs x0 < x1 and y0 < y1): {[x0, y0, x1, y1]}."
        if x0 < 0 or y0 < 0 or x1 > width or y1 > height:
            return (
                f"{[x0, y0, x1, y1]} is outside the image (width {width}, height {height}; "
                "pixel-edge coordinates, so x1 <= width)."
            )
    return None
