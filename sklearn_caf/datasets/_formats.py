"""Readers of the on-disk dataset formats: wsolevaluation metadata, CUB-200-2011, Pascal VOC.

Each reader checks every metadata file completely at construction -- without opening an
image -- and reports the first problem with its file and line. What can only be checked
against the pixels (a box inside an image whose size no file gives, a size that disagrees with
the file's) is checked when the image is read, with the same kind of message: the dataset
keeps, per image and per box, the file and line it came from (:class:`Provenance`).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np

from .._utils import import_optional
from ._checks import DatasetFormatError, _box_problem, _check_image_size

BOX_CONVENTIONS = ("edges", "inclusive", "one_based")


class Provenance:
    """Where each image, original size and box of an on-disk dataset was read from."""

    def __init__(self, files, image_src, size_src, box_src, clip_boxes):
        self.files = tuple(str(f) for f in files)
        # (file index, line) pairs; int32 halves what a pickled ImageNet-sized set carries.
        self.image_src = np.asarray(image_src, dtype=np.int32).reshape(-1, 2)
        self.size_src = np.asarray(size_src, dtype=np.int32).reshape(-1, 2)
        self.box_src = np.asarray(box_src, dtype=np.int32).reshape(-1, 2)
        self.clip_boxes = clip_boxes

    def _source(self, table, i):
        file, line = table[i]
        return self.files[file], (None if line < 0 else int(line))

    def image_source(self, i):
        return self._source(self.image_src, i)

    def size_source(self, i):
        return self._source(self.size_src, i)

    def where_image(self, i) -> str:
        file, line = self.image_source(i)
        return file if line is None else f"{file}, line {line}"

    def check_boxes(self, boxes, rows, height, width):
        """Boxes checked (or clipped) against an image size learnt from the image itself."""
        return _checked_boxes(
            boxes, height, width, self.clip_boxes, lambda k: self._source(self.box_src, rows[k])
        )

    def subset(self, positions, rows):
        tables = [self.image_src[positions], self.size_src[positions], self.box_src[rows]]
        # Keep only the files still referred to: a VOC set names one XML file per image.
        used, inverse = np.unique(np.concatenate([t[:, 0] for t in tables]), return_inverse=True)
        start = 0
        for table in tables:
            table[:, 0] = inverse[start : start + len(table)]
            start += len(table)
        return Provenance([self.files[f] for f in used], *tables, self.clip_boxes)


def _checked_boxes(boxes, height, width, clip, source_of):
    """Clip or check each row of `boxes`; `source_of(k)` gives the (file, line) of row k."""
    boxes = np.array(boxes, dtype=np.float64)
    if clip:
        boxes[:, 0::2] = np.clip(boxes[:, 0::2], 0, width)
        boxes[:, 1::2] = np.clip(boxes[:, 1::2], 0, height)
    for k in range(len(boxes)):
        problem = _box_problem(boxes[k : k + 1], height, width)
        if problem is not None:
            file, line = source_of(k)
            clipped = " after clipping" if clip else ""
            raise DatasetFormatError(file, line, f"the box{clipped} {problem}")
    return boxes


def _convert_boxes(boxes: np.ndarray, convention: str) -> np.ndarray:
    boxes = np.array(boxes, dtype=np.float64).reshape(-1, 4)
    if convention == "inclusive":
        boxes[:, 2:] += 1
    elif convention == "one_based":
        boxes[:, :2] -= 1
    return boxes


def _check_common(image_size, max_images, box_convention="edges"):
    size = _check_image_size(image_size)
    if max_images is not None and (
        isinstance(max_images, bool)
        or not isinstance(max_images, (int, np.integer))
        or max_images < 1
    ):
        raise ValueError(f"max_images must be a positive int or None; got {max_images!r}.")
    if box_convention not in BOX_CONVENTIONS:
        raise ValueError(
            f"box_convention must be one of {BOX_CONVENTIONS}; got {box_convention!r}."
        )
    return size


def _check_dir(path, name) -> Path:
    path = Path(path)
    if not path.is_dir():
        raise FileNotFoundError(f"{name} {str(path)!r} is not a folder.")
    return path


def _lines(path: Path):
    """(line number, stripped text) of the non-blank lines of a text file."""
    if not path.is_file():
        raise FileNotFoundError(f"the metadata file {str(path)!r} does not exist.")
    # Read as UTF-8 line by line, so that a decoding error names its line; a byte-order mark
    # (written by some Windows editors) is dropped rather than made part of the first id.
    with open(path, "rb") as f:
        for number, raw in enumerate(f, start=1):
            if number == 1 and raw.startswith(b"\xef\xbb\xbf"):
                raw = raw[3:]
            try:
                text = raw.decode("utf-8").strip()
            except UnicodeDecodeError as exc:
                raise DatasetFormatError(
                    path,
                    number,
                    f"the text is not valid UTF-8 (byte {raw[exc.start]:#04x} at column "
                    f"{exc.start + 1}); save the file as UTF-8.",
                ) from None
            if text:
                yield number, text


def _split(path, number, text, sep, n_fields, what):
    fields = text.rsplit(",", n_fields - 1) if sep == "," else text.split(maxsplit=n_fields - 1)
    if len(fields) != n_fields or not all(f.strip() for f in fields):
        raise DatasetFormatError(
            path, number, f"expected {what}; got {text!r} ({len(fields)} fields)."
        )
    return [f.strip() for f in fields]


def _number(path, number, text, field, kind):
    try:
        if kind is int:
            try:
                return int(field)
            except ValueError:  # "3.0" is an integer too
                value = float(field)
                if not value.is_integer():
                    raise
                return int(value)
        value = float(field)
        if not math.isfinite(value):
            raise ValueError
        return value
    except ValueError:
        raise DatasetFormatError(
            path,
            number,
            f"{field!r} is not {'an integer' if kind is int else 'a number'} (in {text!r}).",
        ) from None


def _read_classes(classes, what="classes"):
    """Class names from a sequence, or a file of one name a line (its first field)."""
    if classes is None:
        return None
    if isinstance(classes, (str, Path)):
        path = Path(classes)
        names = [text.split()[0] for _, text in _lines(path)]
    elif isinstance(classes, Sequence):
        names = [str(c) for c in classes]
    else:
        raise ValueError(f"{what} must be a sequence of names, a path or None; got {classes!r}.")
    if len(set(names)) != len(names):
        raise ValueError(f"{what} holds a name twice.")
    if not names:
        raise ValueError(f"{what} is empty.")
    return names


def _finish(
    cls,
    *,
    ids,
    labels,
    per_image_boxes,
    sizes,
    image_src,
    size_src,
    box_src,
    files,
    image_root,
    image_size,
    preprocess,
    classes,
    n_classes,
    fmt,
    clip_boxes,
):
    box_data = np.concatenate(per_image_boxes) if per_image_boxes else np.zeros((0, 4), np.float64)
    offsets = np.concatenate([[0], np.cumsum([len(b) for b in per_image_boxes])])
    provenance = Provenance(files, image_src, size_src, box_src, clip_boxes)
    return cls(
        ids=ids,
        labels=np.asarray(labels, dtype=np.int64),
        box_data=box_data,
        box_offsets=offsets,
        image_size=image_size,
        sizes=np.asarray(sizes, dtype=np.int64).reshape(-1, 2),
        image_root=image_root,
        preprocess=preprocess,
        classes=classes,
        n_classes=n_classes,
        format=fmt,
        provenance=provenance,
    )


# -- wsolevaluation -------------------------------------------------------------------------------
def read_wsol(
    cls,
    metadata_dir,
    image_root,
    *,
    image_size,
    preprocess,
    n_classes,
    classes,
    box_convention,
    clip_boxes,
    max_images,
):
    image_size = _check_common(image_size, max_images, box_convention)
    metadata_dir = _check_dir(metadata_dir, "metadata_dir")
    image_root = _check_dir(image_root, "image_root")
    classes = _read_classes(classes)
    if n_classes is not None and (
        isinstance(n_classes, bool)
        or not isinstance(n_classes, (int, np.integer))
        or n_classes < 1
    ):
        raise ValueError(f"n_classes must be a positive int or None; got {n_classes!r}.")
    if classes is not None and n_classes is not None and n_classes != len(classes):
        raise ValueError(f"n_classes={n_classes} disagrees with len(classes)={len(classes)}.")
    limit = len(classes) if classes is not None else n_classes

    ids_file = metadata_dir / "image_ids.txt"
    labels_file = metadata_dir / "class_labels.txt"
    sizes_file = metadata_dir / "image_sizes.txt"
    boxes_file = metadata_dir / "localization.txt"
    files = [ids_file, labels_file, sizes_file, boxes_file]

    position, id_lines = {}, []
    for number, text in _lines(ids_file):
        if text in position:
            raise DatasetFormatError(
                ids_file,
                number,
                f"{text!r} is listed twice (first on line {id_lines[position[text]]}).",
            )
        position[text] = len(id_lines)
        id_lines.append(number)
    if not position:
        raise DatasetFormatError(ids_file, None, "lists no image.")
    ids = list(position)

    def lookup(path, number, image_id, n_fields, what):
        if image_id not in position:
            # Paths may hold commas, so a line with an extra field reads as an unknown path
            # ("img,103"): name the field count when a shorter prefix is a listed image.
            parts = image_id.split(",")
            for k in range(1, len(parts)):
                if ",".join(parts[:k]).strip() in position:
                    raise DatasetFormatError(
                        path,
                        number,
                        f"the line has {n_fields + len(parts) - k} fields where {n_fields} "
                        f"are expected ({what}).",
                    )
            raise DatasetFormatError(
                path, number, f"{image_id!r} is not listed in {ids_file.name}."
            )
        return position[image_id]

    n = len(ids)
    labels = np.full(n, -1, np.int64)
    label_lines = np.zeros(n, np.int64)
    for number, text in _lines(labels_file):
        image_id, label = _split(labels_file, number, text, ",", 2, "'path,label'")
        i = lookup(labels_file, number, image_id, 2, "'path,label'")
        label = _number(labels_file, number, text, label, int)
        if label < 0 or (limit is not None and label >= limit):
            bound = f" and below {limit}" if limit is not None else ""
            raise DatasetFormatError(
                labels_file, number, f"unknown label {label}: labels must be >= 0{bound}."
            )
        if labels[i] >= 0:
            raise DatasetFormatError(
                labels_file,
                number,
                f"{image_id!r} has a second label (first on line {label_lines[i]}).",
            )
        labels[i], label_lines[i] = label, number

    sizes = np.full((n, 2), -1, np.int64)
    size_src = np.tile([2, -1], (n, 1))
    if sizes_file.is_file():
        for number, text in _lines(sizes_file):
            image_id, width, height = _split(
                sizes_file, number, text, ",", 3, "'path,width,height'"
            )
            i = lookup(sizes_file, number, image_id, 3, "'path,width,height'")
            width = _number(sizes_file, number, text, width, int)
            height = _number(sizes_file, number, text, height, int)
            if width < 1 or height < 1:
                raise DatasetFormatError(
                    sizes_file, number, f"the size must be positive; got {width} x {height}."
                )
            if sizes[i, 0] >= 0:
                raise DatasetFormatError(
                    sizes_file,
                    number,
                    f"{image_id!r} has a second size (first on line {size_src[i, 1]}).",
                )
            sizes[i] = (height, width)
            size_src[i] = (2, number)

    box_image, box_coords, box_lines = [], [], []
    for number, text in _lines(boxes_file):
        image_id, *coords = _split(boxes_file, number, text, ",", 5, "'path,x0,y0,x1,y1'")
        box_image.append(lookup(boxes_file, number, image_id, 5, "'path,x0,y0,x1,y1'"))
        box_coords.append([_number(boxes_file, number, text, c, float) for c in coords])
        box_lines.append(number)
    box_image = np.asarray(box_image, dtype=np.int64)
    box_lines = np.asarray(box_lines, dtype=np.int64)
    try:
        box_coords = _check_box_table(
            _convert_boxes(box_coords, box_convention),
            sizes[box_image],
            box_lines,
            boxes_file,
            clip_boxes,
        )
    except DatasetFormatError as error:
        if box_convention == "edges":
            raise
        read_as = {"inclusive": "x1 + 1, y1 + 1", "one_based": "x0 - 1, y0 - 1"}[box_convention]
        raise DatasetFormatError(
            error.path,
            error.line,
            f"{error.message.rstrip('.')}; read with box_convention={box_convention!r} "
            f"({read_as}).",
        ) from None
    box_counts = np.bincount(box_image, minlength=n)

    has_sizes = sizes_file.is_file()
    for i in np.flatnonzero((labels < 0) | (box_counts == 0) | (has_sizes & (sizes[:, 0] < 0))):
        listed = f"{ids[i]!r} (listed in {ids_file.name}, line {id_lines[i]})"
        if labels[i] < 0:
            raise DatasetFormatError(labels_file, None, f"no label for {listed}.")
        if has_sizes and sizes[i, 0] < 0:
            raise DatasetFormatError(sizes_file, None, f"no size for {listed}.")
        raise DatasetFormatError(boxes_file, None, f"no box for {listed}.")

    # Each image's boxes, in file order: a stable sort by image keeps the lines' order.
    order = np.argsort(box_image, kind="stable")
    box_offsets = np.concatenate([[0], np.cumsum(box_counts)])
    boxes = [box_coords[order[box_offsets[i] : box_offsets[i + 1]]] for i in range(n)]
    box_lines = [box_lines[order[box_offsets[i] : box_offsets[i + 1]]] for i in range(n)]

    keep = range(n if max_images is None else min(n, max_images))
    return _finish(
        cls,
        ids=[ids[i] for i in keep],
        labels=labels[list(keep)],
        per_image_boxes=[boxes[i] for i in keep],
        sizes=sizes[list(keep)],
        image_src=[(0, id_lines[i]) for i in keep],
        size_src=size_src[list(keep)],
        box_src=[(3, line) for i in keep for line in box_lines[i]],
        files=files,
        image_root=image_root,
        image_size=image_size,
        preprocess=preprocess,
        classes=classes,
        n_classes=n_classes,
        fmt="wsol",
        clip_boxes=clip_boxes,
    )


def _check_box_table(boxes, sizes, lines, path, clip):
    """Check (or clip) many boxes at once; `sizes` holds (height, width), -1 where unknown.

    Vectorized for the 75,000 lines of ImageNet's localization.txt; the first bad row (in
    file order) is reported by the per-box checks, so the messages are theirs.
    """
    boxes = np.array(boxes, dtype=np.float64).reshape(-1, 4)
    known = sizes[:, 0] >= 0
    limits = np.where(known[:, None], sizes[:, ::-1], np.inf)  # (width, height)
    if clip:
        boxes = np.maximum(boxes, 0)
        boxes[:, 0::2] = np.minimum(boxes[:, 0::2], limits[:, :1])
        boxes[:, 1::2] = np.minimum(boxes[:, 1::2], limits[:, 1:])
    with np.errstate(invalid="ignore"):
        bad = (
            ~np.isfinite(boxes).all(axis=1)
            | ~(boxes[:, 0] < boxes[:, 2])
            | ~(boxes[:, 1] < boxes[:, 3])
            | (boxes[:, :2] < 0).any(axis=1)
            | (boxes[:, 2:] > limits).any(axis=1)
        )
    if bad.any():
        k = int(np.flatnonzero(bad)[0])
        if known[k]:
            _checked_boxes(
                boxes[k : k + 1], sizes[k, 0], sizes[k, 1], clip, lambda _: (path, int(lines[k]))
            )
        _check_nonempty(boxes[k : k + 1], path, int(lines[k]), clip)
        raise AssertionError("unreachable: a bad box passed the per-box checks")
    return boxes


def _check_nonempty(box, path, number, clip):
    """Check (or clip at 0) a (1, 4) box whose image size is not known yet."""
    if clip:
        box = np.maximum(box, 0)
    x0, y0, x1, y1 = box[0]
    if x0 < 0 or y0 < 0:
        raise DatasetFormatError(
            path, number, f"the box {box[0].tolist()} is outside the image (negative)."
        )
    if not (x0 < x1 and y0 < y1):
        clipped = " after clipping" if clip else ""
        raise DatasetFormatError(
            path,
            number,
            f"the box{clipped} is empty (needs x0 < x1 and y0 < y1): {box[0].tolist()}.",
        )
    return box


# -- CUB-200-2011 ---------------------------------------------------------------------------------
def read_cub(cls, root, split, *, image_size, preprocess, clip_boxes, max_images):
    image_size = _check_common(image_size, max_images)
    if split not in ("train", "test", "all"):
        raise ValueError(f'split must be "train", "test" or "all"; got {split!r}.')
    root = _check_dir(root, "root")
    images_file = root / "images.txt"
    labels_file = root / "image_class_labels.txt"
    split_file = root / "train_test_split.txt"
    boxes_file = root / "bounding_boxes.txt"
    classes_file = root / "classes.txt"
    files = [images_file, labels_file, split_file, boxes_file]

    classes = None
    class_ids = None
    if classes_file.is_file():
        classes, class_ids = [], {}
        for number, text in _lines(classes_file):
            class_id, name = _split(classes_file, number, text, " ", 2, "'class_id name'")
            class_id = _number(classes_file, number, text, class_id, int)
            if class_id != len(classes) + 1:
                raise DatasetFormatError(
                    classes_file,
                    number,
                    f"class ids must be 1, 2, 3, ... in order; expected {len(classes) + 1}, "
                    f"got {class_id}.",
                )
            class_ids[class_id] = len(classes)
            classes.append(name)

    def read_table(path, n_fields, what, kind):
        table = {}
        for number, text in _lines(path):
            key, *values = _split(path, number, text, " ", n_fields, what)
            key = _number(path, number, text, key, int)
            if key in table:
                raise DatasetFormatError(
                    path,
                    number,
                    f"image id {key} is listed twice (first on line {table[key][0]}).",
                )
            if kind is not str:
                values = [_number(path, number, text, v, kind) for v in values]
            table[key] = (number, values)
        return table

    paths = read_table(images_file, 2, "'image_id path'", str)
    labels = read_table(labels_file, 2, "'image_id class_id'", int)
    is_train = read_table(split_file, 2, "'image_id is_training_image'", int)
    box_rows = {}
    for number, text in _lines(boxes_file):
        key, *coords = _split(boxes_file, number, text, " ", 5, "'image_id x y width height'")
        key = _number(boxes_file, number, text, key, int)
        x, y, w, h = (_number(boxes_file, number, text, c, float) for c in coords)
        box = np.array([[x, y, x + w, y + h]])
        box = _check_nonempty(box, boxes_file, number, clip_boxes)
        box_rows.setdefault(key, []).append((number, box[0]))

    for path, table in ((labels_file, labels), (split_file, is_train), (boxes_file, box_rows)):
        for key, entry in table.items():
            if key not in paths:
                number = entry[0] if isinstance(entry, tuple) else entry[0][0]
                raise DatasetFormatError(
                    path, number, f"image id {key} is not listed in {images_file.name}."
                )

    ids, label_list, per_image, image_src, box_src = [], [], [], [], []
    for key, (number, (rel_path,)) in paths.items():
        listed = f"image id {key} (listed in {images_file.name}, line {number})"
        if key not in labels:
            raise DatasetFormatError(labels_file, None, f"no class for {listed}.")
        if key not in is_train:
            raise DatasetFormatError(split_file, None, f"no train/test flag for {listed}.")
        if key not in box_rows:
            raise DatasetFormatError(boxes_file, None, f"no box for {listed}.")
        split_line, (flag,) = is_train[key]
        if flag not in (0, 1):
            raise DatasetFormatError(
                split_file, split_line, f"the flag must be 0 or 1; got {flag}."
            )
        label_line, (class_id,) = labels[key]
        if class_ids is not None:
            if class_id not in class_ids:
                raise DatasetFormatError(
                    labels_file,
                    label_line,
                    f"unknown class {class_id}: {classes_file.name} lists 1 to {len(classes)}.",
                )
            label = class_ids[class_id]
        else:
            if class_id < 1:
                raise DatasetFormatError(
                    labels_file, label_line, f"unknown class {class_id}: class ids start at 1."
                )
            label = class_id - 1
        if split != "all" and flag != (split == "train"):
            continue
        ids.append(rel_path)
        label_list.append(label)
        per_image.append(np.array([box for _, box in box_rows[key]]))
        image_src.append((0, number))
        box_src.extend((3, line) for line, _ in box_rows[key])
        if max_images is not None and len(ids) == max_images:
            break
    if not ids:
        raise DatasetFormatError(split_file, None, f"no image is in the {split!r} split.")
    n = len(ids)
    return _finish(
        cls,
        ids=ids,
        labels=label_list,
        per_image_boxes=per_image,
        sizes=np.full((n, 2), -1),
        image_src=image_src,
        size_src=np.tile([0, -1], (n, 1)),
        box_src=box_src,
        files=files,
        image_root=root / "images",
        image_size=image_size,
        preprocess=preprocess,
        classes=classes,
        n_classes=None,
        fmt="cub",
        clip_boxes=clip_boxes,
    )


# -- Pascal VOC XML -------------------------------------------------------------------------------
class _Element:
    __slots__ = ("children", "line", "tag", "text")

    def __init__(self, tag, line):
        self.tag, self.line, self.text, self.children = tag, line, "", []

    def find(self, tag):
        return next((c for c in self.children if c.tag == tag), None)

    def findall(self, tag):
        return [c for c in self.children if c.tag == tag]


def _parse_xml(path: Path) -> _Element:
    """A small element tree with the line of each start tag (ElementTree keeps none)."""
    from xml.parsers import expat

    parser = expat.ParserCreate()
    root = _Element("", 0)
    stack = [root]

    def start(tag, attrs):
        element = _Element(tag, parser.CurrentLineNumber)
        stack[-1].children.append(element)
        stack.append(element)

    def end(tag):
        stack.pop()

    def data(text):
        stack[-1].text += text

    parser.StartElementHandler = start
    parser.EndElementHandler = end
    parser.CharacterDataHandler = data
    try:
        parser.Parse(path.read_bytes(), True)
    except expat.ExpatError as exc:
        raise DatasetFormatError(
            path, exc.lineno, f"not well-formed XML: {expat.ErrorString(exc.code)}."
        ) from None
    return root.children[0]


def _child(path, element, tag, parent_name):
    child = element.find(tag)
    if child is None:
        raise DatasetFormatError(path, element.line, f"<{parent_name}> has no <{tag}>.")
    return child


def _xml_number(path, element, kind):
    text = element.text.strip()
    return _number(path, element.line, f"<{element.tag}>{text}</{element.tag}>", text, kind)


def read_voc(
    cls,
    annotations_dir,
    image_dir,
    *,
    classes,
    image_size,
    preprocess,
    box_convention,
    clip_boxes,
    max_images,
    image_ext,
):
    image_size = _check_common(image_size, max_images, box_convention)
    annotations_dir = _check_dir(annotations_dir, "annotations_dir")
    image_dir = _check_dir(image_dir, "image_dir")
    if isinstance(classes, Mapping):
        mapping = {}
        for name, label in classes.items():
            if isinstance(label, bool) or not isinstance(label, (int, np.integer)) or label < 0:
                raise ValueError(
                    f"classes maps names to non-negative int labels; {name!r} maps to {label!r}."
                )
            mapping[str(name)] = int(label)
        names = None
        if sorted(mapping.values()) == list(range(len(mapping))):
            names = [None] * len(mapping)
            for name, label in mapping.items():
                names[label] = name
    else:
        names = _read_classes(classes)
        mapping = None if names is None else {name: k for k, name in enumerate(names)}

    xml_files = sorted(annotations_dir.glob("*.xml"))
    if not xml_files:
        raise FileNotFoundError(f"annotations_dir {str(annotations_dir)!r} holds no *.xml file.")
    if max_images is not None:
        xml_files = xml_files[:max_images]

    # (xml index, image id, class name, filename line, boxes, box lines, size, size line)
    records = []
    seen = {}
    for k, path in enumerate(xml_files):
        root = _parse_xml(path)
        filename = _child(path, root, "filename", root.tag)
        image_id = filename.text.strip()
        if not image_id:
            raise DatasetFormatError(path, filename.line, "<filename> is empty.")
        if not Path(image_id).suffix:
            image_id += image_ext
        if image_id in seen:
            raise DatasetFormatError(
                path, filename.line, f"{image_id!r} is also annotated by {seen[image_id]}."
            )
        seen[image_id] = path.name
        size, size_line = (-1, -1), -1
        size_element = root.find("size")
        if size_element is not None:
            width = _xml_number(path, _child(path, size_element, "width", "size"), int)
            height = _xml_number(path, _child(path, size_element, "height", "size"), int)
            if width > 0 and height > 0:
                size, size_line = (height, width), size_element.line
        objects = root.findall("object")
        if not objects:
            raise DatasetFormatError(path, root.line, "no <object> in the annotation.")
        first_name = None
        boxes, box_lines = [], []
        for obj in objects:
            name_element = _child(path, obj, "name", "object")
            name = name_element.text.strip()
            if mapping is not None and name not in mapping:
                raise DatasetFormatError(
                    path, name_element.line, f"unknown class {name!r}: not in classes."
                )
            if first_name is None:
                first_name = name
            if name != first_name:
                continue
            bndbox = _child(path, obj, "bndbox", "object")
            coords = [
                _xml_number(path, _child(path, bndbox, tag, "bndbox"), float)
                for tag in ("xmin", "ymin", "xmax", "ymax")
            ]
            box = _convert_boxes(coords, box_convention)
            if size[0] > 0:
                box = _checked_boxes(
                    box,
                    size[0],
                    size[1],
                    clip_boxes,
                    lambda j, line=bndbox.line, path=path: (path, line),
                )
            else:
                box = _check_nonempty(box, path, bndbox.line, clip_boxes)
            boxes.append(box[0])
            box_lines.append(bndbox.line)
        records.append((k, image_id, first_name, filename.line, boxes, box_lines, size, size_line))

    if mapping is None:
        names = sorted({r[2] for r in records})
        mapping = {name: k for k, name in enumerate(names)}
    return _finish(
        cls,
        ids=[r[1] for r in records],
        labels=[mapping[r[2]] for r in records],
        per_image_boxes=[np.array(r[4]) for r in records],
        sizes=[r[6] for r in records],
        image_src=[(r[0], r[3]) for r in records],
        size_src=[(r[0], r[7]) for r in records],
        box_src=[(r[0], line) for r in records for line in r[5]],
        files=xml_files,
        image_root=image_dir,
        image_size=image_size,
        preprocess=preprocess,
        classes=names,
        n_classes=None if names is not None else max(mapping.values()) + 1,
        fmt="voc",
        clip_boxes=clip_boxes,
    )


def _nearest_indices(src: int, dst: int) -> np.ndarray:
    """OpenCV's ``INTER_NEAREST`` source index of each of `dst` pixels: ``floor(d / scale)``
    with ``scale = dst / src`` in float64, capped at ``src - 1``."""
    inverse = 1.0 / (dst / src)
    return np.minimum(np.floor(np.arange(dst) * inverse).astype(np.int64), src - 1)


def _read_mask(path: Path, size) -> np.ndarray:
    """A mask file as wsolevaluation reads it: grayscale, nearest-resized, ``> 0.5``."""
    Image = import_optional("PIL.Image", needed_by="Reading mask files")
    if not path.is_file():
        raise FileNotFoundError(f"the mask file {str(path)!r} does not exist.")
    with Image.open(path) as image:
        gray = np.asarray(image.convert("L"), dtype=np.float32)
    rows = _nearest_indices(gray.shape[0], size[0])
    cols = _nearest_indices(gray.shape[1], size[1])
    return gray[rows[:, None], cols[None, :]] > 0.5


def load_wsol_masks(metadata_dir, mask_root, *, image_size=224, image_ids=None):
    """Masks and ignore regions in wsolevaluation's OpenImages30k layout, for PxAP.

    ``metadata_dir/localization.txt`` holds ``path,mask_path,ignore_path`` lines: one line
    per instance mask, several for an image with several instances, the ignore mask named on
    the image's first line only (the others leave the field empty). Mask files are read as
    wsolevaluation's ``MaskEvaluator`` reads them: grayscale, resized to `image_size` with
    OpenCV's nearest-neighbour rule (``INTER_NEAREST``, reproduced without OpenCV), kept
    where ``> 0.5``; the instances are united, and the ignore region is the ignore mask
    minus the foreground. Pass the result to
    :meth:`ImageBoxDataset.from_arrays <sklearn_caf.datasets.ImageBoxDataset.from_arrays>`
    (``masks=``, ``ignore=``) or straight to
    :func:`~sklearn_caf.metrics.pixel_average_precision`.

    Parameters
    ----------
    metadata_dir : str or path
        The folder of ``localization.txt`` (e.g. ``metadata/OpenImages/test``).
    mask_root : str or path
        The folder the mask paths are relative to.
    image_size : int or (int, int), default=224
        ``(height, width)`` of the masks returned (an int for a square); the reference uses
        224.
    image_ids : sequence of str, default=None
        The images wanted, in this order; None is every image of ``localization.txt`` in the
        order of its first line.

    Returns
    -------
    ids : list of str
        The image paths.
    masks : ndarray of shape (n_images, height, width), bool
        The foreground of each image.
    ignore : ndarray of shape (n_images, height, width), bool
        The ignore region of each image (all False where none is named).

    Raises
    ------
    DatasetFormatError
        Naming the file and line: a line without three fields, an empty mask path, an
        ignore mask named twice for one image.
    FileNotFoundError
        If ``localization.txt``, a mask file or a folder is missing.
    KeyError
        If an id of `image_ids` has no line.

    Examples
    --------
    >>> import tempfile, pathlib
    >>> import numpy as np
    >>> from PIL import Image
    >>> from sklearn_caf.datasets import load_wsol_masks
    >>> root = pathlib.Path(tempfile.mkdtemp())
    >>> mask = np.zeros((4, 4), np.uint8)
    >>> mask[:2, :2] = 255
    >>> Image.fromarray(mask).save(root / "m.png")
    >>> _ = (root / "localization.txt").write_text("a.jpg,m.png,\\n")
    >>> ids, masks, ignore = load_wsol_masks(root, root, image_size=8)
    >>> ids, masks.shape, int(masks.sum()), bool(ignore.any())
    (['a.jpg'], (1, 8, 8), 16, False)
    """
    metadata_dir = _check_dir(metadata_dir, "metadata_dir")
    mask_root = _check_dir(mask_root, "mask_root")
    size = _check_image_size(image_size)
    path = metadata_dir / "localization.txt"
    mask_files: dict[str, list[str]] = {}
    ignore_files: dict[str, str] = {}
    for number, text in _lines(path):
        fields = text.rsplit(",", 2)
        if len(fields) != 3 or not fields[0].strip() or not fields[1].strip():
            raise DatasetFormatError(
                path, number, f"expected 'path,mask_path,ignore_path'; got {text!r}."
            )
        image_id, mask_path, ignore_path = (f.strip() for f in fields)
        if image_id in mask_files and ignore_path:
            raise DatasetFormatError(
                path,
                number,
                f"{image_id!r} already has its ignore mask on an earlier line; only its first "
                "line names one.",
            )
        if image_id not in mask_files:
            mask_files[image_id] = []
            if ignore_path:
                ignore_files[image_id] = ignore_path
        mask_files[image_id].append(mask_path)
    ids = list(mask_files) if image_ids is None else [str(i) for i in image_ids]
    missing = [i for i in ids if i not in mask_files]
    if missing:
        raise KeyError(f"{len(missing)} image_ids have no line in {str(path)!r}: {missing[:5]}")
    masks = np.zeros((len(ids), *size), dtype=bool)
    ignore = np.zeros((len(ids), *size), dtype=bool)
    for k, image_id in enumerate(ids):
        for mask_path in mask_files[image_id]:
            masks[k] |= _read_mask(mask_root / mask_path, size)
        if image_id in ignore_files:
            ignore[k] = _read_mask(mask_root / ignore_files[image_id], size) & ~masks[k]
    return ids, masks, ignore
