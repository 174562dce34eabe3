"""The lazy (image, label, boxes) dataset behind :mod:`sklearn_caf.datasets`.

An :class:`ImageBoxDataset` holds what defines the data -- image ids, labels, ground-truth
boxes in the images' original coordinates, the original sizes where the metadata gives them --
and, for sets on disk, only the root folder of the images: pixels are read (Pillow) when an
image is asked for, so a 50,000-image benchmark costs a few megabytes and pickles cheaply.

Boxes are stored flat (one ``(total_boxes, 4)`` array plus offsets) rather than as a list of
small arrays, so that pickling a dataset for a process worker costs one array, not 50,000.
"""

from __future__ import annotations

import functools
import hashlib
import operator
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np

from .._utils import import_optional
from ._checks import DatasetFormatError, _box_problem
from ._formats import read_cub, read_voc, read_wsol

__all__ = ["DatasetFormatError", "ImageBoxDataset", "NormalizeImage"]

#: Channel means and standard deviations of ImageNet, in [0, 1] units (torchvision's values).
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
#: Inception's scaling to [-1, 1] (Keras' ``preprocess_input`` of Inception, Xception...).
INCEPTION_MEAN = (0.5, 0.5, 0.5)
INCEPTION_STD = (0.5, 0.5, 0.5)
_STAT_PRESETS = {
    "imagenet": (IMAGENET_MEAN, IMAGENET_STD),
    "inception": (INCEPTION_MEAN, INCEPTION_STD),
}


# Pillow modes whose samples are wider than 8 bits, with the largest value of their range.
_HIGH_DEPTH = {"I;16": 65535, "I;16L": 65535, "I;16B": 65535, "I;16N": 65535}


def _to_rgb(image):
    """An 8-bit RGB Pillow image from one in any mode, high bit depths scaled by their range.

    ``image.convert("RGB")`` clips 16-bit samples at 255 (a 16-bit grayscale PNG reads as
    white). Samples of the 16-bit modes are divided by 65535; those of mode ``"I"`` (32-bit
    integers; Pillow opens 16-bit PNG and TIFF images so) by 65535 when they fit in 16 bits,
    else by 2**32 - 1 (negative samples clipped at 0); those of mode ``"F"`` are taken in
    [0, 1] when they fit, else in [0, 65535]. Palette, 1-bit, LA, RGBA (alpha dropped, the
    colour kept), CMYK, YCbCr, LAB and HSV images go through Pillow's own conversion.
    16-bit RGB images are decoded by Pillow to 8 bits per channel (the high byte), which is
    their true range too.
    """
    mode = image.mode
    if mode not in _HIGH_DEPTH and mode not in ("I", "F"):
        return image.convert("RGB")
    Image = _pillow()
    values = np.asarray(image).astype(np.float64)
    if mode in _HIGH_DEPTH:
        top = _HIGH_DEPTH[mode]
    elif mode == "I":
        top = 65535 if values.size == 0 or values.max() <= 65535 else 2**32 - 1
    else:
        top = 1.0 if values.size == 0 or (values.min() >= 0 and values.max() <= 1) else 65535
    if not np.isfinite(values).all():
        raise ValueError("the image holds NaN or infinite samples")
    gray = np.clip(np.rint(values * (255 / top)), 0, 255).astype(np.uint8)
    return Image.fromarray(gray).convert("RGB")


def _pillow():
    return import_optional("PIL.Image", needed_by="Reading images from disk")


class NormalizeImage:
    """Turn a resized RGB image into a model-ready float32 array: scale, normalize, lay out.

    The ``preprocess`` of :class:`ImageBoxDataset`'s constructors receives each image as a
    ``(height, width, 3)`` uint8 RGB array (already resized to ``image_size``) and returns the
    array the model takes. This is the usual one: ``(pixel / 255 - mean) / std`` per channel,
    in channels-first (PyTorch) or channels-last (Keras) layout. ``NormalizeImage()`` -- no
    mean, no std, channels first -- is the constructors' default.

    Presets, the same as ``sklearn-caf evaluate --preprocess``'s:

    - ``--preprocess '[0,1]'`` (the default): ``NormalizeImage()``, values in [0, 1];
    - ``--preprocess imagenet``: ``NormalizeImage(mean="imagenet", std="imagenet")``;
    - ``--preprocess inception``: ``NormalizeImage(mean="inception", std="inception")``,
      values in [-1, 1];
    - ``--preprocess efficientnet-lite``: ``NormalizeImage(mean=(127 / 255,) * 3,
      std=(128 / 255,) * 3)``, ``(pixel - 127) / 128``.

    Parameters
    ----------
    mean : sequence of 3 floats, "imagenet", "inception" or None, default=None
        Per-channel mean subtracted after scaling to [0, 1]; ``"imagenet"`` is
        ``(0.485, 0.456, 0.406)``, ``"inception"`` is ``(0.5, 0.5, 0.5)``. None subtracts
        nothing.
    std : sequence of 3 floats, "imagenet", "inception" or None, default=None
        Per-channel standard deviation divided by; ``"imagenet"`` is
        ``(0.229, 0.224, 0.225)``, ``"inception"`` is ``(0.5, 0.5, 0.5)``. None divides by
        nothing.
    channels_last : bool, default=False
        Return ``(height, width, 3)`` (Keras) instead of ``(3, height, width)`` (PyTorch).
    bgr : bool, default=False
        Reverse the channels to BGR first (Caffe-trained models: keras.applications'
        ResNet50 and VGG); ``mean`` and ``std`` are then in BGR order.

    Examples
    --------
    >>> import numpy as np
    >>> from sklearn_caf.datasets import NormalizeImage
    >>> image = np.full((2, 4, 3), 255, dtype=np.uint8)
    >>> NormalizeImage()(image).shape
    (3, 2, 4)
    >>> x = NormalizeImage(mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5), channels_last=True)(image)
    >>> x.shape, x.dtype, float(x.max())
    ((2, 4, 3), dtype('float32'), 1.0)

    EfficientNet-Lite's ``(pixel - 127) / 128`` is ``mean=127/255, std=128/255``:

    >>> lite = NormalizeImage(mean=(127 / 255,) * 3, std=(128 / 255,) * 3)
    """

    def __init__(self, mean=None, std=None, *, channels_last: bool = False, bgr: bool = False):
        self.mean = self._check_stat(mean, "mean", 0)
        self.std = self._check_stat(std, "std", 1)
        if self.std is not None and min(self.std) <= 0:
            raise ValueError(f"std must be positive; got {self.std}.")
        self.channels_last = bool(channels_last)
        self.bgr = bool(bgr)

    @staticmethod
    def _check_stat(value, name, which):
        if value is None:
            return None
        if isinstance(value, str):
            if value not in _STAT_PRESETS:
                raise ValueError(
                    f'{name} must be 3 floats, "imagenet", "inception" or None; got {value!r}.'
                )
            return _STAT_PRESETS[value][which]
        stat = np.asarray(value, dtype=np.float64)
        if stat.shape != (3,) or not np.isfinite(stat).all():
            raise ValueError(f"{name} must be 3 finite floats (one per channel); got {value!r}.")
        return tuple(float(v) for v in stat)

    def __call__(self, image: np.ndarray) -> np.ndarray:
        x = np.asarray(image, dtype=np.float32) / np.float32(255)
        if self.bgr:
            x = x[..., ::-1]
        if self.mean is not None:
            x -= np.asarray(self.mean, dtype=np.float32)
        if self.std is not None:
            x /= np.asarray(self.std, dtype=np.float32)
        if not self.channels_last:
            x = x.transpose(2, 0, 1)
        return np.ascontiguousarray(x)

    def __repr__(self) -> str:
        args = [f"{k}={getattr(self, k)!r}" for k in ("mean", "std") if getattr(self, k)]
        if self.channels_last:
            args.append("channels_last=True")
        if self.bgr:
            args.append("bgr=True")
        return f"NormalizeImage({', '.join(args)})"

    def __eq__(self, other) -> bool:
        return type(other) is type(self) and repr(other) == repr(self)

    def __hash__(self) -> int:
        return hash(repr(self))


def _preprocess_problem(fn, image, result=None, error=None) -> str:
    """The message when ``preprocess`` fails on, or returns a batch for, one image."""
    name = _callable_name(fn)
    if error is not None:
        what = f"raised {type(error).__name__}: {str(error).splitlines()[0] if str(error) else ''}"
    else:
        what = f"returned an array of shape {np.shape(result)}, a batch"
    return (
        f"preprocess={name} {what} when called on one image, a (height, width, 3) uint8 RGB "
        f"array of shape {image.shape}. preprocess is called once per image and must return "
        "that one model-ready image (e.g. (3, height, width)); a function that takes a batch "
        "(n, height, width, 3) -- such as sklearn_caf_torch.pretrained."
        "preprocess_efficientnet_lite -- does not fit. Wrap it, at module level so that it "
        "pickles: def one_image(image): return batch_function(image[None])[0]; or use "
        "NormalizeImage (EfficientNet-Lite's (x - 127) / 128 is "
        "NormalizeImage(mean=(127 / 255,) * 3, std=(128 / 255,) * 3))."
    )


def _apply_preprocess(fn, image: np.ndarray) -> np.ndarray:
    """``fn(image)`` as float32, refusing a batch function with a message that says so."""
    try:
        result = fn(image)
    except Exception as exc:
        if isinstance(fn, NormalizeImage):
            raise
        raise ValueError(_preprocess_problem(fn, image, error=exc)) from exc
    result = np.asarray(result, dtype=np.float32)
    if result.ndim >= 4:
        raise ValueError(_preprocess_problem(fn, image, result=result))
    return result


def _callable_name(fn) -> str:
    """A stable, address-free name of a preprocess callable, for fingerprints."""
    if isinstance(fn, NormalizeImage):
        return f"sklearn_caf.datasets.{fn!r}"
    if isinstance(fn, functools.partial):
        return f"partial({_callable_name(fn.func)}, {fn.args!r}, {sorted(fn.keywords.items())!r})"
    target = fn if hasattr(fn, "__qualname__") else type(fn)
    return f"{getattr(target, '__module__', '?')}.{target.__qualname__}"


class ImageBoxDataset:
    """A lazy, indexable dataset of (image, label, ground-truth boxes), for evaluation.

    Build one with a constructor: :meth:`from_arrays` (images in memory, model-ready),
    :meth:`from_wsol` (the metadata of the standard WSOL benchmark code, clovaai/wsolevaluation,
    for ImageNet and CUB; its OpenImages set is scored with masks, not boxes),
    :meth:`from_cub` (CUB-200-2011's own files) or :meth:`from_voc` (Pascal VOC XML, also the
    format of ImageNet's validation boxes), or use
    :func:`~sklearn_caf.datasets.make_wsol_dataset` for a synthetic set.

    **Images on disk** are read only when asked for (``ds[i]``, :meth:`load`): opened with
    Pillow, converted to RGB (grayscale is repeated on the three channels, an alpha channel is
    dropped, palette and CMYK images are converted), resized to ``image_size`` with bilinear
    interpolation (the aspect ratio is not kept), and passed to ``preprocess``. The default
    ``preprocess``, :class:`NormalizeImage()`, returns float32 ``(3, height, width)`` arrays
    (channels first, the PyTorch layout) with values ``pixel / 255`` in [0, 1];
    ``NormalizeImage(mean="imagenet", std="imagenet", channels_last=True)`` gives the usual
    ImageNet normalization in the Keras layout. Any callable taking a ``(height, width, 3)``
    uint8 array -- one image, not a batch -- and returning that one image works; it must be
    picklable (a module-level function or an object, not a lambda) for the dataset to reach
    process workers. A batch function (one that takes ``(n, height, width, 3)``, such as
    ``sklearn_caf_torch.pretrained.preprocess_efficientnet_lite``) is refused at construction
    with an error that says how to wrap it. The preprocess counts in :meth:`fingerprint`: a
    run folder resumes only with the same one.

    **Boxes** are ``[x0, y0, x1, y1]`` in the library's pixel-edge convention (see
    :mod:`sklearn_caf.boxes`: ``x1 - x0`` is the width in pixels). Resizing an image of width
    ``W`` and height ``H`` to ``image_size = (h, w)`` maps a box to
    ``[x0 * w / W, y0 * h / H, x1 * w / W, y1 * h / H]`` exactly: in pixel-edge coordinates a
    resize is a pure scaling (the edge at 0 stays at 0, the edge at ``W`` goes to ``w``), with no
    half-pixel offset, and the result is not rounded, so boxes stay float64.

    A dataset is a sequence: ``len(ds)``, ``ds[i] -> (image, label, boxes)``, iteration. It is
    not an estimator; its state never changes after construction.

    Attributes
    ----------
    ids : list of str
        The image ids: paths relative to the image folder for sets on disk, ``"0", "1", ...``
        for :meth:`from_arrays`.
    labels : ndarray of shape (n_images,), int64
        The class of each image.
    boxes : list of ndarray of shape (m_i, 4), float64
        The ground-truth boxes of each image, in the coordinates of the model-ready
        (resized) image.
    image_size : tuple of (int, int)
        ``(height, width)`` of the model-ready images.
    n_classes : int
        ``len(classes)`` where the class names are known, else ``labels.max() + 1`` unless
        given.
    classes : list of str or None
        The class names, ``classes[label]``, where known (CUB's ``classes.txt``, VOC's names).

    Examples
    --------
    >>> import numpy as np
    >>> from sklearn_caf.datasets import ImageBoxDataset
    >>> images = np.zeros((2, 3, 8, 8), dtype=np.float32)
    >>> ds = ImageBoxDataset.from_arrays(images, [0, 1], [[0, 0, 4, 4], [2, 2, 8, 6]])
    >>> len(ds), ds.image_size, ds.n_classes
    (2, (8, 8), 2)
    >>> image, label, boxes = ds[1]
    >>> image.shape, label, boxes
    ((3, 8, 8), 1, array([[2., 2., 8., 6.]]))
    >>> X, y, B = ds.load([0, 1])
    >>> X.shape, y.tolist(), len(B)
    ((2, 3, 8, 8), [0, 1], 2)
    """

    def __init__(
        self,
        *,
        ids,
        labels,
        box_data,
        box_offsets,
        image_size,
        sizes=None,
        images=None,
        image_root=None,
        preprocess=None,
        classes=None,
        n_classes=None,
        channels_last=False,
        format="arrays",
        provenance=None,
        masks=None,
        ignore=None,
    ):
        # Not for direct use: the from_* constructors check their input and call this.
        self._ids = list(ids)
        self._labels = np.asarray(labels, dtype=np.int64)
        self._box_data = np.asarray(box_data, dtype=np.float64).reshape(-1, 4)
        self._box_offsets = np.asarray(box_offsets, dtype=np.int64)
        self._image_size = tuple(image_size)
        n = len(self._ids)
        # Original (height, width); -1 where the metadata does not give it (read from the file).
        self._sizes = np.full((n, 2), -1, np.int64) if sizes is None else np.asarray(sizes)
        self._images = images
        self._image_root = None if image_root is None else Path(image_root)
        self._preprocess = NormalizeImage() if preprocess is None else preprocess
        if images is None and not isinstance(self._preprocess, NormalizeImage):
            if not callable(self._preprocess):
                raise TypeError(
                    "preprocess must be a callable taking one (height, width, 3) uint8 image "
                    f"or None; got {type(self._preprocess).__name__}."
                )
            # One call on a blank image now: a batch function is refused before any run.
            _apply_preprocess(self._preprocess, np.zeros((*self._image_size, 3), np.uint8))
        self._classes = None if classes is None else list(classes)
        self._n_classes = n_classes
        self._channels_last = channels_last
        self._format = format
        # For error messages raised at access: where each image, size and box came from.
        self._provenance = provenance
        # Pixel masks at image_size (boolean (n, height, width)), or None: PxAP's ground truth.
        self._masks = masks
        self._ignore = ignore
        # What reading an image teaches (its size; its boxes checked or clipped against it),
        # kept apart from the metadata so that the fingerprint never depends on access.
        # Clipped boxes go into a dict (one atomic assignment per image, before its size is
        # recorded), so that threads reading images concurrently never see a half update.
        self._read_sizes = self._sizes.copy()
        self._clipped_boxes = {}

    def __getstate__(self):
        state = self.__dict__.copy()
        if np.array_equal(self._read_sizes, self._sizes):  # nothing learnt: do not ship twice
            state["_read_sizes"] = None
        return state

    def __setstate__(self, state):
        self.__dict__.update(state)
        if self._read_sizes is None:
            self._read_sizes = self._sizes.copy()

    # -- constructors -------------------------------------------------------------------------
    @classmethod
    def from_arrays(
        cls,
        images,
        labels,
        boxes,
        *,
        channels_last: bool = False,
        classes: Sequence[str] | None = None,
        n_classes: int | None = None,
        masks=None,
        ignore=None,
    ) -> ImageBoxDataset:
        """A dataset of images already in memory and model-ready.

        Parameters
        ----------
        images : array-like of shape (n, channels, height, width) or (n, height, width, channels)
            The images exactly as the model takes them; ``ds[i]`` returns ``images[i]`` as
            float32, without resizing or ``preprocess``. A NumPy memmap stays on disk.
        labels : array-like of shape (n,), int
            The class of each image, non-negative.
        boxes : array-like of shape (n, 4), or list of n array-likes of shape (m_i, 4)
            One box per image, or one or more per image, ``[x0, y0, x1, y1]`` in pixel-edge
            coordinates of the images as given.
        channels_last : bool, default=False
            Whether ``images`` is (n, height, width, channels) (Keras) rather than
            (n, channels, height, width) (PyTorch); it says where ``image_size`` is read.
        classes : sequence of str, optional
            Class names, ``classes[label]``.
        n_classes : int, optional
            Number of classes, when some do not occur in ``labels``.
        masks : array-like of shape (n, height, width), bool, optional
            Ground-truth foreground masks (0/1 or boolean) at the images' size, for PxAP
            (:func:`~sklearn_caf.metrics.pixel_average_precision`); see :meth:`load_masks`.
        ignore : array-like of shape (n, height, width), bool, optional
            Regions left out of PxAP's counts (OpenImages30k's ignore boxes); needs
            ``masks``.

        Returns
        -------
        ImageBoxDataset

        Raises
        ------
        ValueError
            If the shapes disagree, a label is negative or not below ``n_classes``, a box is
            empty or outside its image, an image holds NaN or infinite pixels (a memmap's
            images are checked as they are loaded), or a mask is not boolean.

        Examples
        --------
        >>> import numpy as np
        >>> from sklearn_caf.datasets import ImageBoxDataset
        >>> images = np.zeros((2, 8, 10, 3))
        >>> boxes = [[[0, 0, 2, 2], [5, 5, 10, 8]], [[1, 1, 9, 7]]]
        >>> ds = ImageBoxDataset.from_arrays(images, [1, 0], boxes, channels_last=True)
        >>> ds.image_size, [b.shape for b in ds.boxes]
        ((8, 10), [(2, 4), (1, 4)])
        """
        if not isinstance(images, np.ndarray):
            images = np.asarray(images)
        if images.ndim != 4:
            layout = (
                "(n, height, width, channels)" if channels_last else "(n, channels, height, width)"
            )
            raise ValueError(f"images must be a 4-D array {layout}; got shape {images.shape}.")
        if images.dtype.kind not in "biuf":
            raise ValueError(f"images must hold real numbers; got dtype {images.dtype}.")
        n = images.shape[0]
        if n == 0:
            raise ValueError("images is empty; expected at least one image.")
        image_size = images.shape[1:3] if channels_last else images.shape[2:4]
        labels = _check_labels(labels, n, n_classes, classes)
        box_data, offsets = _check_array_boxes(boxes, n, image_size)
        masks, ignore = _check_masks(masks, ignore, (n, *image_size))
        if images.dtype.kind == "f" and not isinstance(images, np.memmap):
            # In memory: checked now, a block at a time (a memmap is checked as it is read).
            for start in range(0, n, 256):
                block = images[start : start + 256].reshape(min(256, n - start), -1)
                with np.errstate(over="ignore"):  # beyond float32's range: inf, refused
                    finite = np.isfinite(block.astype(np.float32, copy=False)).all(axis=1)
                if not finite.all():
                    bad = (start + np.flatnonzero(~finite)).tolist()
                    raise ValueError(
                        f"images[{bad[0]}] holds NaN or infinite pixels (as float32"
                        f"{'; also images' + str(bad[1:6]) if len(bad) > 1 else ''}); a model "
                        "cannot explain them. Fix or drop these images."
                    )
        return cls(
            ids=[str(i) for i in range(n)],
            labels=labels,
            box_data=box_data,
            box_offsets=offsets,
            image_size=tuple(int(s) for s in image_size),
            images=images,
            classes=classes,
            n_classes=n_classes,
            channels_last=bool(channels_last),
            preprocess=None,
            masks=masks,
            ignore=ignore,
        )

    @classmethod
    def from_wsol(
        cls,
        metadata_dir,
        image_root,
        *,
        image_size=224,
        preprocess: Callable | None = None,
        n_classes: int | None = None,
        classes=None,
        box_convention: str = "inclusive",
        clip_boxes: bool = False,
        max_images: int | None = None,
    ) -> ImageBoxDataset:
        """A dataset in the metadata layout of clovaai/wsolevaluation (ImageNet, CUB).

        ``metadata_dir`` (e.g. ``metadata/ILSVRC/test``) holds four text files, keyed by the
        image's path relative to ``image_root``:

        - ``image_ids.txt``: one path a line; it sets the order of the dataset.
        - ``class_labels.txt``: ``path,label`` (0-based integer labels).
        - ``localization.txt``: ``path,x0,y0,x1,y1``, one line per box, several lines for an
          image with several boxes; ``x1, y1`` is the box's last pixel (see
          ``box_convention``).
        - ``image_sizes.txt`` (optional): ``path,width,height`` of the original images; with
          it boxes are checked against the image at construction and ``ds.boxes`` needs no
          file access, without it the image headers are read on first need.

        Fields are split at the last commas, so paths may hold commas. Blank lines are
        skipped. Nothing is read from the images at construction.

        Parameters
        ----------
        metadata_dir : str or path
            The folder of the four files.
        image_root : str or path
            The folder the paths are relative to.
        image_size : int or (int, int), default=224
            ``(height, width)`` the images are resized to (an int for a square).
        preprocess : callable, default=None
            Called on **one** resized ``(height, width, 3)`` uint8 RGB image at a time;
            returns that image model-ready (e.g. ``(3, height, width)``). None is
            :class:`NormalizeImage()`: float32, (3, height, width), values in [0, 1]. It is
            tried once on a blank image at construction: a function that takes a batch
            ``(n, height, width, 3)`` (it raises, or returns a 4-D array) is refused with a
            ValueError that says how to wrap it.
        n_classes : int, optional
            Number of classes (1000 for ImageNet); labels must be below it. By default
            ``max(label) + 1`` (or ``len(classes)``).
        classes : sequence of str, path or None, default=None
            Class names, ``classes[label]``; a path is read as one name a line (the first
            whitespace-separated field, e.g. ImageNet's ``LOC_synset_mapping.txt``).
        box_convention : {"inclusive", "edges", "one_based"}, default="inclusive"
            How the files' coordinates are meant; boxes are converted to the library's
            pixel edges (``x1`` one past the last column). ``"inclusive"``: 0-based with
            ``x1, y1`` the box's last pixel, so 1 is added to them. This is what
            wsolevaluation's metadata holds: of the 104,803 boxes of its CUB and ImageNet
            files none reaches ``x1 = W`` or ``y1 = H`` and 15,099 end at ``W - 1`` or
            ``H - 1``, and its evaluator scores them with the ``+1`` IoU of inclusive
            boxes. ``"edges"``: pixel edges already (files written by other tools); a
            box's ``x1`` may then equal the image's width. ``"one_based"``: 1-based
            inclusive as in Pascal VOC (1 is subtracted from ``x0, y0``).
        clip_boxes : bool, default=False
            Clip boxes that stick out of their image instead of raising. A box that is empty
            after clipping still raises.
        max_images : int, optional
            Keep only the first ``max_images`` images of ``image_ids.txt``.

        Returns
        -------
        ImageBoxDataset

        Raises
        ------
        DatasetFormatError
            Naming the file and line: a line that does not parse, a duplicate id, an id
            missing from one of the files or unknown to ``image_ids.txt``, a label out of
            range, an empty box or a box outside its image.
        FileNotFoundError
            If a metadata file is missing; a missing image raises it at access.

        Examples
        --------
        >>> import tempfile, pathlib
        >>> import numpy as np
        >>> from PIL import Image
        >>> from sklearn_caf.datasets import ImageBoxDataset
        >>> root = pathlib.Path(tempfile.mkdtemp())
        >>> Image.fromarray(np.zeros((20, 40, 3), np.uint8)).save(root / "a.png")
        >>> _ = (root / "image_ids.txt").write_text("a.png\\n")
        >>> _ = (root / "class_labels.txt").write_text("a.png,3\\n")
        >>> _ = (root / "image_sizes.txt").write_text("a.png,40,20\\n")
        >>> _ = (root / "localization.txt").write_text("a.png,10,4,29,15\\n")
        >>> ds = ImageBoxDataset.from_wsol(root, root, image_size=(10, 20), n_classes=5)
        >>> ds.boxes[0].tolist()
        [[5.0, 2.0, 15.0, 8.0]]
        >>> ds[0][0].shape
        (3, 10, 20)
        """
        return read_wsol(
            cls,
            metadata_dir,
            image_root,
            image_size=image_size,
            preprocess=preprocess,
            n_classes=n_classes,
            classes=classes,
            box_convention=box_convention,
            clip_boxes=clip_boxes,
            max_images=max_images,
        )

    @classmethod
    def from_cub(
        cls,
        root,
        split: str = "test",
        *,
        image_size=224,
        preprocess: Callable | None = None,
        clip_boxes: bool = False,
        max_images: int | None = None,
    ) -> ImageBoxDataset:
        """CUB-200-2011 from its own files.

        ``root`` is the ``CUB_200_2011`` folder: ``images.txt`` (``id path``, paths relative to
        ``images/``), ``image_class_labels.txt`` (``id class_id``, 1-based),
        ``train_test_split.txt`` (``id is_training``), ``bounding_boxes.txt``
        (``id x y width height``) and, optional, ``classes.txt`` (``class_id name``). Labels
        are ``class_id - 1``; a box ``x y width height`` is ``[x, y, x + width, y + height]``
        in pixel edges. CUB gives no image sizes: boxes are checked against the image when it
        is read, and the first use of ``ds.boxes`` reads every image's header.

        Parameters
        ----------
        root : str or path
            The ``CUB_200_2011`` folder.
        split : {"test", "train", "all"}, default="test"
            Which images, by ``train_test_split.txt`` (the WSOL benchmark evaluates on
            ``"test"``, 5,794 images).
        image_size : int or (int, int), default=224
            ``(height, width)`` the images are resized to.
        preprocess : callable, default=None
            As in :meth:`from_wsol`; None is :class:`NormalizeImage()`.
        clip_boxes : bool, default=False
            Clip boxes that stick out of their image instead of raising.
        max_images : int, optional
            Keep only the first ``max_images`` images of the split, in ``images.txt`` order.

        Returns
        -------
        ImageBoxDataset

        Raises
        ------
        DatasetFormatError
            Naming the file and line: a line that does not parse, a duplicate or unknown id,
            an image with no label, split or box, a class not in ``classes.txt``, an empty box;
            a box outside its image at access.

        Examples
        --------
        >>> import tempfile, pathlib
        >>> import numpy as np
        >>> from PIL import Image
        >>> from sklearn_caf.datasets import ImageBoxDataset
        >>> root = pathlib.Path(tempfile.mkdtemp())
        >>> (root / "images" / "001.Gull").mkdir(parents=True)
        >>> Image.fromarray(np.zeros((40, 40, 3), np.uint8)).save(root / "images/001.Gull/g.jpg")
        >>> _ = (root / "images.txt").write_text("1 001.Gull/g.jpg\\n")
        >>> _ = (root / "image_class_labels.txt").write_text("1 1\\n")
        >>> _ = (root / "train_test_split.txt").write_text("1 0\\n")
        >>> _ = (root / "bounding_boxes.txt").write_text("1 4.0 8.0 20.0 10.0\\n")
        >>> ds = ImageBoxDataset.from_cub(root, image_size=20)
        >>> ds.ids, ds.labels, ds.boxes[0]
        (['001.Gull/g.jpg'], array([0]), array([[ 2.,  4., 12.,  9.]]))
        """
        return read_cub(
            cls,
            root,
            split,
            image_size=image_size,
            preprocess=preprocess,
            clip_boxes=clip_boxes,
            max_images=max_images,
        )

    @classmethod
    def from_voc(
        cls,
        annotations_dir,
        image_dir,
        *,
        classes=None,
        image_size=224,
        preprocess: Callable | None = None,
        box_convention: str = "one_based",
        clip_boxes: bool = False,
        max_images: int | None = None,
        image_ext: str = ".JPEG",
    ) -> ImageBoxDataset:
        """A dataset annotated in Pascal VOC XML, one file per image (also ImageNet's val boxes).

        Every ``*.xml`` of ``annotations_dir`` is read, in file-name order. From each:
        ``<filename>`` (the image, relative to ``image_dir``; ImageNet's files omit the
        extension, so ``image_ext`` is appended to a name without one), ``<size>`` (width
        and height; 0 or absent means unknown: read from the image) and every ``<object>``'s
        ``<name>`` and ``<bndbox>`` (``xmin ymin xmax ymax``). The image's label is its first
        object's class; its boxes are those of the objects of that class (the others are
        ignored, as in the WSOL benchmarks, where one class is named per image).

        Parameters
        ----------
        annotations_dir : str or path
            The folder of the XML files.
        image_dir : str or path
            The folder the ``<filename>`` entries are relative to.
        classes : sequence of str, mapping of str to int, path or None, default=None
            The class names: a sequence gives ``label = classes.index(name)``; a mapping gives
            the label of each name; a path is read as one name a line (the first
            whitespace-separated field: ImageNet's ``LOC_synset_mapping.txt`` maps synsets
            to the usual 0-999 labels). A name not in it raises. None takes the sorted names
            found in the files -- which depend on the files present, so pass the list to
            compare runs.
        image_size : int or (int, int), default=224
            ``(height, width)`` the images are resized to.
        preprocess : callable, default=None
            As in :meth:`from_wsol`; None is :class:`NormalizeImage()`.
        box_convention : {"one_based", "inclusive", "edges"}, default="one_based"
            As in :meth:`from_wsol`. Pascal VOC's boxes are 1-based and inclusive (the
            default). Sets that count from 0 in this format (some exports, possibly ImageNet's)
            report a box outside the image for a box touching the left or top border; pick
            the convention that matches or set ``clip_boxes``.
        clip_boxes : bool, default=False
            Clip boxes that stick out of their image instead of raising.
        max_images : int, optional
            Keep only the first ``max_images`` XML files.
        image_ext : str, default=".JPEG"
            Appended to a ``<filename>`` that has no extension.

        Returns
        -------
        ImageBoxDataset

        Raises
        ------
        DatasetFormatError
            Naming the file and line: XML that does not parse, a missing element, a
            coordinate that is not a number, an unknown class, an image with no object, an
            empty box or a box outside its image, two files naming the same image.

        Examples
        --------
        >>> import tempfile, pathlib
        >>> from sklearn_caf.datasets import ImageBoxDataset
        >>> root = pathlib.Path(tempfile.mkdtemp())
        >>> _ = (root / "a.xml").write_text(
        ...     "<annotation><filename>a.jpg</filename>"
        ...     "<size><width>100</width><height>50</height></size>"
        ...     "<object><name>dog</name><bndbox><xmin>1</xmin><ymin>1</ymin>"
        ...     "<xmax>50</xmax><ymax>25</ymax></bndbox></object></annotation>")
        >>> ds = ImageBoxDataset.from_voc(root, root, classes=["cat", "dog"], image_size=(25, 50))
        >>> ds.ids, ds.labels, ds.boxes[0]
        (['a.jpg'], array([1]), array([[ 0. ,  0. , 25. , 12.5]]))
        """
        return read_voc(
            cls,
            annotations_dir,
            image_dir,
            classes=classes,
            image_size=image_size,
            preprocess=preprocess,
            box_convention=box_convention,
            clip_boxes=clip_boxes,
            max_images=max_images,
            image_ext=image_ext,
        )

    # -- the sequence -------------------------------------------------------------------------
    def __len__(self) -> int:
        return len(self._ids)

    def _index(self, i) -> int:
        try:
            i = operator.index(i)
        except TypeError:
            raise TypeError(
                f"dataset indices must be integers; got {type(i).__name__}. "
                "Use ds.load(indices) for a batch or ds.subset(indices) for a smaller dataset."
            ) from None
        n = len(self)
        if not -n <= i < n:
            raise IndexError(f"index {i} is out of range for a dataset of {n} images.")
        return i % n

    def __getitem__(self, i) -> tuple[np.ndarray, int, np.ndarray]:
        i = self._index(i)
        return self._image(i), int(self._labels[i]), self._resized_boxes(i)

    def __iter__(self):
        for i in range(len(self)):
            yield self[i]

    def load(
        self, indices, *, n_threads: int = 1
    ) -> tuple[np.ndarray, np.ndarray, list[np.ndarray]]:
        """Read a batch: the images stacked, their labels and their boxes.

        Parameters
        ----------
        indices : array-like of int
            Positions in the dataset (negative ones count from the end).
        n_threads : int, default=1
            Read and preprocess images on disk in this many threads (Pillow decodes and
            resizes without holding the GIL, so this speeds up JPEG-heavy sets on several
            cores). ``preprocess`` must then be thread-safe, as :class:`NormalizeImage` is.

        Returns
        -------
        images : ndarray of shape (k, ...), float32
            The model-ready images, stacked.
        labels : ndarray of shape (k,), int64
            Their classes.
        boxes : list of k ndarrays of shape (m_i, 4), float64
            Ground-truth boxes at the model-ready size.

        Examples
        --------
        >>> from sklearn_caf.datasets import make_wsol_dataset
        >>> ds = make_wsol_dataset(6, image_size=16, random_state=0)
        >>> X, y, boxes = ds.load([4, 0])
        >>> X.shape, X.dtype, y.shape, len(boxes)
        ((2, 3, 16, 16), dtype('float32'), (2,), 2)
        """
        positions = [self._index(i) for i in np.asarray(indices).reshape(-1).tolist()]
        if not positions:
            raise ValueError("indices is empty; expected at least one index.")
        if (
            isinstance(n_threads, bool)
            or not isinstance(n_threads, (int, np.integer))
            or (n_threads < 1)
        ):
            raise ValueError(f"n_threads must be a positive int; got {n_threads!r}.")
        if self._images is not None:
            with np.errstate(over="ignore"):
                images = [np.asarray(self._images[positions], dtype=np.float32)]
            self._check_finite(images[0], positions)
        elif n_threads > 1 and len(positions) > 1:
            from concurrent.futures import ThreadPoolExecutor

            with ThreadPoolExecutor(min(n_threads, len(positions))) as pool:
                images = list(pool.map(self._image, positions))
        else:
            images = [self._image(i) for i in positions]
        shapes = {image.shape for image in images}
        if len(shapes) > 1:
            raise ValueError(
                f"preprocess returned images of different shapes {sorted(shapes)}; they must "
                "all have one shape to be stacked into a batch."
            )
        return (
            images[0] if self._images is not None else np.stack(images),
            self._labels[positions].copy(),
            [self._resized_boxes(i) for i in positions],
        )

    def subset(self, indices) -> ImageBoxDataset:
        """A dataset of some of the images, in the given order; they keep their ids.

        Parameters
        ----------
        indices : array-like of int, or of bool of length ``len(self)``, or slice
            The positions to keep (a boolean mask keeps where True).

        Returns
        -------
        ImageBoxDataset
            Same format, image size, preprocess and classes.

        Examples
        --------
        >>> from sklearn_caf.datasets import make_wsol_dataset
        >>> ds = make_wsol_dataset(10, image_size=16, random_state=0)
        >>> small = ds.subset(range(0, 10, 2))
        >>> len(small), small.ids
        (5, ['0', '2', '4', '6', '8'])
        """
        n = len(self)
        if isinstance(indices, slice):
            positions = np.arange(n)[indices]
        else:
            indices = np.asarray(indices)
            if indices.dtype == bool:
                if indices.shape != (n,):
                    raise ValueError(
                        f"a boolean indices must have shape ({n},); got {indices.shape}."
                    )
                positions = np.flatnonzero(indices)
            else:
                positions = np.array(
                    [self._index(i) for i in indices.reshape(-1).tolist()], dtype=np.int64
                )
        if positions.size == 0:
            raise ValueError("indices selects no image; a dataset needs at least one.")
        counts = np.diff(self._box_offsets)[positions]
        rows = np.concatenate(
            [np.arange(self._box_offsets[i], self._box_offsets[i + 1]) for i in positions]
        )
        provenance = None
        if self._provenance is not None:
            provenance = self._provenance.subset(positions, rows)
        return type(self)(
            ids=[self._ids[i] for i in positions],
            labels=self._labels[positions],
            box_data=self._box_data[rows],
            box_offsets=np.concatenate([[0], np.cumsum(counts)]),
            image_size=self._image_size,
            sizes=self._sizes[positions].copy(),
            images=None if self._images is None else self._images[positions],
            image_root=self._image_root,
            preprocess=self._preprocess,
            classes=self._classes,
            n_classes=self.n_classes,
            channels_last=self._channels_last,
            format=self._format,
            provenance=provenance,
            masks=None if self._masks is None else self._masks[positions],
            ignore=None if self._ignore is None else self._ignore[positions],
        )

    # -- attributes ---------------------------------------------------------------------------
    @property
    def ids(self) -> list[str]:
        return list(self._ids)

    @property
    def labels(self) -> np.ndarray:
        return self._labels.copy()

    @property
    def boxes(self) -> list[np.ndarray]:
        return [self._resized_boxes(i) for i in range(len(self))]

    @property
    def image_size(self) -> tuple[int, int]:
        return self._image_size

    @property
    def has_masks(self) -> bool:
        """Whether the dataset carries pixel masks (PxAP's ground truth)."""
        return self._masks is not None

    def with_masks(self, masks, ignore=None) -> ImageBoxDataset:
        """The same dataset carrying pixel masks (PxAP's ground truth), for any format.

        Parameters
        ----------
        masks : array-like of shape (n_images, height, width), bool
            Foreground masks at ``image_size`` (0/1 or boolean), in the dataset's order; e.g.
            from :func:`~sklearn_caf.datasets.load_wsol_masks` with ``image_ids=ds.ids`` and
            ``image_size=ds.image_size``.
        ignore : array-like of shape (n_images, height, width), bool, optional
            Regions left out of PxAP's counts.

        Returns
        -------
        ImageBoxDataset
            A new dataset; this one is unchanged. The masks count in its fingerprint.

        Examples
        --------
        >>> import numpy as np
        >>> from sklearn_caf.datasets import make_wsol_dataset
        >>> ds = make_wsol_dataset(2, image_size=16, random_state=0)
        >>> masked = ds.with_masks(np.ones((2, 16, 16), bool))
        >>> ds.has_masks, masked.has_masks
        (False, True)
        """
        masks, ignore = _check_masks(masks, ignore, (len(self), *self._image_size))
        if masks is None:
            raise ValueError("masks must be an array of shape (n_images, height, width).")
        new = self.subset(slice(None))
        new._masks, new._ignore = masks, ignore
        return new

    def load_masks(self, indices=None) -> tuple[np.ndarray, np.ndarray]:
        """The foreground masks and ignore regions of some images, at ``image_size``.

        Parameters
        ----------
        indices : array-like of int, default=None
            Positions in the dataset; None is every image.

        Returns
        -------
        masks : ndarray of shape (k, height, width), bool
            The foreground of each image.
        ignore : ndarray of shape (k, height, width), bool
            The regions PxAP leaves out (all False where none were given).

        Raises
        ------
        ValueError
            If the dataset has no masks (:attr:`has_masks` is False).

        Examples
        --------
        >>> import numpy as np
        >>> from sklearn_caf.datasets import ImageBoxDataset
        >>> masks = np.zeros((1, 4, 4), bool)
        >>> masks[0, 1:3, 1:3] = True
        >>> ds = ImageBoxDataset.from_arrays(np.zeros((1, 3, 4, 4)), [0], [[1, 1, 3, 3]],
        ...                                  masks=masks)
        >>> m, ignore = ds.load_masks([0])
        >>> int(m.sum()), bool(ignore.any())
        (4, False)
        """
        if self._masks is None:
            raise ValueError(
                "this dataset has no masks; build it with ImageBoxDataset.from_arrays(..., "
                "masks=...) to score PxAP."
            )
        positions = self._positions(indices)
        masks = np.asarray(self._masks[positions], dtype=bool)
        if self._ignore is None:
            return masks, np.zeros_like(masks)
        return masks, np.asarray(self._ignore[positions], dtype=bool)

    @property
    def n_classes(self) -> int:
        if self._classes is not None:
            return len(self._classes)
        if self._n_classes is not None:
            return int(self._n_classes)
        return int(self._labels.max()) + 1

    @property
    def classes(self) -> list[str] | None:
        return None if self._classes is None else list(self._classes)

    @property
    def preprocess(self):
        """The callable applied to each resized image (None for :meth:`from_arrays`)."""
        return None if self._images is not None else self._preprocess

    @property
    def image_root(self) -> Path | None:
        """The folder the ids are relative to (None for :meth:`from_arrays`)."""
        return self._image_root

    def original_sizes(self, indices=None) -> np.ndarray:
        """``(height, width)`` of each image in its own pixels, before resizing.

        From the metadata where it gives them (``image_sizes.txt``, VOC's ``<size>``), else
        from the image file's header (read once, on first need). For :meth:`from_arrays`, the
        images as given: ``image_size``.

        Parameters
        ----------
        indices : array-like of int, default=None
            Positions in the dataset; None is every image.

        Returns
        -------
        sizes : ndarray of shape (k, 2), int64
            ``(height, width)`` per image.

        Examples
        --------
        >>> from sklearn_caf.datasets import make_wsol_dataset
        >>> make_wsol_dataset(2, image_size=16, random_state=0).original_sizes().tolist()
        [[16, 16], [16, 16]]
        """
        positions = self._positions(indices)
        if self._images is not None:
            return np.tile(np.asarray(self._image_size, np.int64), (len(positions), 1))
        return np.array([self._original_size(i) for i in positions], dtype=np.int64).reshape(-1, 2)

    def original_boxes(self, indices=None) -> list[np.ndarray]:
        """The ground-truth boxes in each image's own pixels (pixel edges, not resized).

        The boxes of the metadata converted to pixel edges (see ``box_convention``) and, with
        ``clip_boxes=True``, clipped to the image; :attr:`boxes` are these scaled to
        ``image_size``. For :meth:`from_arrays`, the boxes as given.

        Parameters
        ----------
        indices : array-like of int, default=None
            Positions in the dataset; None is every image.

        Returns
        -------
        boxes : list of ndarray of shape (m_i, 4), float64
            The boxes of each image, ``[x0, y0, x1, y1]`` in its own pixels.

        Examples
        --------
        >>> import numpy as np
        >>> from sklearn_caf.datasets import ImageBoxDataset
        >>> ds = ImageBoxDataset.from_arrays(np.zeros((1, 3, 8, 8)), [0], [[0, 0, 4, 4]])
        >>> ds.original_boxes()[0].tolist()
        [[0.0, 0.0, 4.0, 4.0]]
        """
        out = []
        for i in self._positions(indices):
            if self._images is None:
                self._original_size(i)  # first: it may clip the boxes
            boxes = self._clipped_boxes.get(i)
            if boxes is None:
                boxes = self._box_data[self._box_offsets[i] : self._box_offsets[i + 1]]
            out.append(boxes.copy())
        return out

    def _positions(self, indices) -> list[int]:
        if indices is None:
            return list(range(len(self)))
        return [self._index(i) for i in np.asarray(indices).reshape(-1).tolist()]

    def fingerprint(self) -> str:
        """A stable hash of what defines the data, to recognize a dataset across runs.

        It covers the format, ids, labels, boxes in the original coordinates, the original
        sizes where the metadata gives them, ``image_size``, the class names and the
        preprocess's qualified name (with the parameters of a :class:`NormalizeImage` or a
        ``functools.partial``) -- and, for :meth:`from_arrays`, the pixels. It does not cover
        where the images live (a moved dataset keeps its fingerprint), the pixels of images on
        disk, or the body of a prepress function. It is the same in every process and session
        (SHA-256, not Python's ``hash``).

        Returns
        -------
        str
            64 hexadecimal digits.

        Examples
        --------
        >>> from sklearn_caf.datasets import make_wsol_dataset
        >>> a = make_wsol_dataset(4, image_size=16, random_state=0)
        >>> b = make_wsol_dataset(4, image_size=16, random_state=0)
        >>> a.fingerprint() == b.fingerprint() != a.subset([0, 1]).fingerprint()
        True
        """
        h = hashlib.sha256()

        def add(tag: str, payload: bytes) -> None:
            # Length-prefixed fields, so that no two different datasets concatenate alike.
            h.update(f"{tag}:{len(payload)}:".encode())
            h.update(payload)

        add("format", self._format.encode())
        add("ids", "\n".join(self._ids).encode())
        add("labels", self._labels.astype("<i8").tobytes())
        add("boxes", self._box_data.astype("<f8").tobytes())
        add("offsets", self._box_offsets.astype("<i8").tobytes())
        add("sizes", self._sizes.astype("<i8").tobytes())
        add("image_size", repr(self._image_size).encode())
        add("classes", repr(self._classes).encode())
        add("n_classes", str(self.n_classes).encode())
        if self._masks is not None:  # absent: the fingerprints of mask-less sets are unchanged
            add("masks", np.packbits(self._masks).tobytes())
            if self._ignore is not None:
                add("ignore", np.packbits(self._ignore).tobytes())
        if self._images is not None:
            add("layout", str(self._channels_last).encode())
            pixels = hashlib.sha256()
            for image in self._images:  # one image at a time: a memmap stays on disk
                pixels.update(np.ascontiguousarray(image).tobytes())
            add("dtype", self._images.dtype.str.encode())
            add("pixels", pixels.digest())
        else:
            add("preprocess", _callable_name(self._preprocess).encode())
        return h.hexdigest()

    def __repr__(self) -> str:
        parts = [
            f"format={self._format!r}",
            f"n_images={len(self)}",
            f"n_classes={self.n_classes}",
            f"image_size={self._image_size}",
        ]
        if self._image_root is not None:
            parts.append(f"image_root={str(self._image_root)!r}")
            parts.append(f"preprocess={self._preprocess!r}")
        else:
            layout = "NHWC" if self._channels_last else "NCHW"
            parts.append(f"layout={layout!r}")
        return f"ImageBoxDataset({', '.join(parts)})"

    # -- reading ------------------------------------------------------------------------------
    def _image(self, i: int) -> np.ndarray:
        if self._images is not None:
            with np.errstate(over="ignore"):
                image = np.asarray(self._images[i], dtype=np.float32)
        else:
            rgb = self._read_rgb(i)
            image = _apply_preprocess(self._preprocess, rgb)
        self._check_finite(image[None], [i])
        return image

    def _check_finite(self, images: np.ndarray, positions: list[int]) -> None:
        """Refuse NaN or infinite pixels (after the cast to float32), naming the images."""
        finite = np.isfinite(images.reshape(len(images), -1)).all(axis=1)
        if finite.all():
            return
        bad = [positions[k] for k in np.flatnonzero(~finite)]
        shown = ", ".join(f"{i} (id {self._ids[i]!r})" for i in bad[:5])
        more = f" and {len(bad) - 5} more" if len(bad) > 5 else ""
        where = (
            "as given" if self._images is not None else f"after preprocess={self._preprocess!r}"
        )
        raise ValueError(
            f"image {shown}{more} of the dataset holds NaN or infinite pixels ({where}); a "
            "model cannot explain them. Fix or drop these images."
        )

    def _path(self, i: int) -> Path:
        return self._image_root / self._ids[i]

    def _read_rgb(self, i: int) -> np.ndarray:
        Image = _pillow()
        path = self._path(i)
        try:
            with Image.open(path) as image:
                self._check_original_size(i, image.size[1], image.size[0])
                rgb = _to_rgb(image)
        except FileNotFoundError:
            raise FileNotFoundError(
                f"image {str(path)!r} not found (listed in {self._provenance.where_image(i)})."
            ) from None
        except (OSError, SyntaxError, ValueError) as exc:  # Pillow: unidentified, truncated
            file, line = self._provenance.image_source(i)
            raise DatasetFormatError(
                file, line, f"the image {str(path)!r} cannot be read: {exc}"
            ) from None
        height, width = self._image_size
        if rgb.size != (width, height):
            rgb = rgb.resize((width, height), Image.Resampling.BILINEAR)
        return np.asarray(rgb, dtype=np.uint8)

    def _check_original_size(self, i: int, height: int, width: int) -> None:
        known = self._sizes[i]
        if self._read_sizes[i, 0] >= 0 and known[0] < 0:
            return  # learnt and checked at an earlier read
        if known[0] >= 0:
            if (known[0], known[1]) != (height, width):
                file, line = self._provenance.size_source(i)
                raise DatasetFormatError(
                    file,
                    line,
                    f"the size of {str(self._path(i))!r} is given as width {known[1]}, "
                    f"height {known[0]}, but the image is {width} x {height}.",
                )
            return
        rows = slice(self._box_offsets[i], self._box_offsets[i + 1])
        checked = self._provenance.check_boxes(
            self._box_data[rows], np.arange(rows.start, rows.stop), height, width
        )
        if not np.array_equal(checked, self._box_data[rows]):
            self._clipped_boxes[i] = checked
        self._read_sizes[i] = (height, width)

    def _original_size(self, i: int) -> tuple[int, int]:
        if self._read_sizes[i, 0] < 0:
            Image = _pillow()
            path = self._path(i)
            try:
                with Image.open(path) as image:  # reads the header only
                    self._check_original_size(i, image.size[1], image.size[0])
            except FileNotFoundError:
                raise FileNotFoundError(
                    f"image {str(path)!r} not found (listed in {self._provenance.where_image(i)})."
                ) from None
        return int(self._read_sizes[i, 0]), int(self._read_sizes[i, 1])

    def _resized_boxes(self, i: int) -> np.ndarray:
        if self._images is not None:
            return self._box_data[self._box_offsets[i] : self._box_offsets[i + 1]].copy()
        height, width = self._original_size(i)  # first: it may clip the boxes
        boxes = self._clipped_boxes.get(i)
        if boxes is None:
            boxes = self._box_data[self._box_offsets[i] : self._box_offsets[i + 1]]
        boxes = boxes.copy()
        boxes[:, 0::2] *= self._image_size[1] / width
        boxes[:, 1::2] *= self._image_size[0] / height
        return boxes


def _check_labels(labels, n, n_classes, classes) -> np.ndarray:
    array = np.asarray(labels)
    if array.shape != (n,):
        raise ValueError(f"labels must have shape ({n},), one per image; got {array.shape}.")
    if array.dtype.kind == "f" and np.all(np.mod(array, 1) == 0):
        array = array.astype(np.int64)
    if array.dtype.kind not in "iu":
        raise ValueError(f"labels must be integers; got dtype {array.dtype}.")
    if array.min() < 0:
        raise ValueError(f"labels must be non-negative; got {array.min()}.")
    limit = len(classes) if classes is not None else n_classes
    if limit is not None and array.max() >= limit:
        what = f"len(classes)={limit}" if classes is not None else f"n_classes={limit}"
        raise ValueError(f"labels must be below {what}; got {array.max()}.")
    return array.astype(np.int64)


def _check_masks(masks, ignore, shape):
    """`masks` and `ignore` as boolean arrays of `shape` (None stays None)."""
    if masks is None:
        if ignore is not None:
            raise ValueError("ignore needs masks: pass the foreground masks too.")
        return None, None
    out = []
    for name, values in (("masks", masks), ("ignore", ignore)):
        if values is None:
            out.append(None)
            continue
        arr = np.asarray(values)
        if arr.shape != shape:
            raise ValueError(
                f"{name} must have shape {shape}, (n, height, width) of the images; got "
                f"{arr.shape}."
            )
        if arr.dtype != bool:
            if arr.dtype.kind not in "biuf" or not np.isin(arr, (0, 1)).all():
                raise ValueError(f"{name} must be boolean (or hold only 0 and 1).")
            arr = arr.astype(bool)
        out.append(arr.copy())
    return out[0], out[1]


def _check_array_boxes(boxes, n, image_size) -> tuple[np.ndarray, np.ndarray]:
    try:
        as_array = np.asarray(boxes, dtype=np.float64)
    except (ValueError, TypeError):
        as_array = None
    if as_array is not None and as_array.ndim == 2:
        if as_array.shape != (n, 4):
            raise ValueError(
                f"boxes must be an (n, 4) array or a list of n (m_i, 4) arrays with n={n}; "
                f"got shape {as_array.shape}."
            )
        per_image = [row[None] for row in as_array]
    else:
        if len(boxes) != n:
            raise ValueError(
                f"boxes must hold one entry per image ({n}); got {len(boxes)} entries."
            )
        per_image = []
        for i, b in enumerate(boxes):
            b = np.asarray(b, dtype=np.float64)
            if b.ndim == 1 and b.shape == (4,):
                b = b[None]
            if b.ndim != 2 or b.shape[1] != 4 or b.shape[0] == 0:
                raise ValueError(
                    f"boxes[{i}] must be an (m, 4) array with m >= 1; got shape {b.shape}."
                )
            per_image.append(b)
    height, width = image_size
    for i, b in enumerate(per_image):
        problem = _box_problem(b, height, width)
        if problem is not None:
            raise ValueError(f"boxes[{i}] {problem}")
    data = np.concatenate(per_image)
    offsets = np.concatenate([[0], np.cumsum([len(b) for b in per_image])])
    return data, offsets
