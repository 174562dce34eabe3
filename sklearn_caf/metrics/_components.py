"""One-sweep component boxes of thresholded heatmaps, for MaxBoxAcc (numba kernel).

For every threshold of a grid, MaxBoxAcc needs the boxes of the 8-connected components of
``{pixel >= threshold}``. Labelling once per threshold costs ``T`` passes over the image. Here
the pixels are added from the highest level down (a counting sort on each pixel's threshold
index), and a union-find with per-root size and bounding box maintains the components, so that
after the pixels of level ``L`` are in, the union-find holds exactly the components at the
``L - 1``-th threshold. The cost is one near-linear pass over the pixels plus ``O(T log T)``
bookkeeping, whatever the number of thresholds.

- Version 1 (largest component): any change to the components only grows one component, so the
  largest one is tracked incrementally and its IoU read off at the end of each level.
- Version 2 (best IoU over all components): each *version* of a component (its state between
  two changes) is alive on a contiguous range of thresholds; when a component is about to change
  (or at the end) its IoU is written over that range with a range-max update in a reversed
  sparse table, pushed down once at the end.

Why numba rather than the alternatives (measured, see ``benchmarks/README.md``):
``skimage.morphology.max_tree`` on the level-quantized map builds the component tree in
compiled code, but the tree alone costs 15-20 times this whole sweep on a 224 x 224 map
(scikit-image 0.26), more than the per-threshold cv2 loop at 1,000 thresholds, and each
node's bounding box must then be accumulated over its subtree in child-before-parent order,
which numpy cannot vectorize (one ``ufunc.at`` per tree level, i.e. per threshold, or a
Python loop over nodes). A per-threshold ``scipy.ndimage.label`` is the cost this module
exists to avoid. numba compiles the whole sweep, IoUs included; it installs as two wheels
(numba, llvmlite; about 210 MB on disk) with numpy 2.4 and is an optional dependency (the
``eval`` extra). ``cache=True`` keeps the one-off compilation (15-25 s) out of later
processes; ``nogil=True`` lets threads run sweeps in parallel.
"""

import numpy as np
from numba import njit


@njit(cache=True, nogil=True)
def _find(parent, p):
    while parent[p] != p:
        parent[p] = parent[parent[p]]  # path halving
        p = parent[p]
    return p


@njit(cache=True, nogil=True)
def _best_iou(x0, y0, x1, y1, boxes):
    # The same operations, in the same order, as ``metrics._iou`` so that the values are
    # bit-identical to ``best_iou`` on the same boxes.
    best = 0.0
    area_a = (x1 - x0) * (y1 - y0)
    for j in range(boxes.shape[0]):
        width = min(x1, boxes[j, 2]) - max(x0, boxes[j, 0])
        height = min(y1, boxes[j, 3]) - max(y0, boxes[j, 1])
        if width < 0.0:
            width = 0.0
        if height < 0.0:
            height = 0.0
        inter = width * height
        area_b = (boxes[j, 2] - boxes[j, 0]) * (boxes[j, 3] - boxes[j, 1])
        union = area_a + area_b - inter
        iou = inter / union if union > 0.0 else 0.0
        if iou > best:
            best = iou
    return best


# Fields of a component's record (one row of an int32 array, so that a union touches two
# cache lines rather than one per field).
_SIZE, _ROW0, _ROW1, _COL0, _COL1, _FIRST, _BORN, _HAS_MAX = range(8)


@njit(cache=True, nogil=True)
def _root_iou(record, boxes):
    return _best_iou(
        float(record[_COL0]),
        float(record[_ROW0]),
        float(record[_COL1] + 1),
        float(record[_ROW1] + 1),
        boxes,
    )


@njit(cache=True, nogil=True)
def _range_max(table, log2, first, last, value):
    k = log2[last - first + 1]
    if value > table[k, first]:
        table[k, first] = value
    j = last - (1 << k) + 1
    if value > table[k, j]:
        table[k, j] = value


@njit(cache=True, nogil=True)
def iou_curves(maps, thresholds, boxes, multi_contour, v1, v2):
    """Fill the IoU curves of a batch of maps.

    Parameters
    ----------
    maps : float64 array of shape (n, height, width)
        Finite heatmaps; each is min-max normalized here, exactly as ``metrics._minmax`` does
        (same float operations), a constant map becoming 0.
    thresholds : float64 array of shape (n_thresholds,)
        Ascending thresholds; a pixel is kept at threshold ``tau`` when its normalized value is
        ``>= tau``.
    boxes : float64 array of shape (n, m, 4)
        Ground truth, padded with zero-area boxes (IoU 0).
    multi_contour : bool
        Also fill ``v2`` (best IoU over every component); otherwise it is left untouched.
    v1, v2 : float64 arrays of shape (n, n_thresholds), zero-filled
        Output: IoU of the largest component, best IoU over all components.
    """
    n_images, height, width = maps.shape
    n_pixels = height * width
    n_levels = thresholds.shape[0]
    # The union-find lives on a grid padded by one never-kept pixel on each side, so that the
    # 8 neighbours need no bound checks.
    stride = width + 2
    parent = np.full((height + 2) * stride, -1, np.int32)
    # Per root: size, bounding box, smallest (row-major) pixel (ties after the argmax), level
    # at which its current version began, whether it holds the argmax.
    records = np.empty((parent.shape[0], 8), np.int32)
    neighbours = np.array(
        [-stride - 1, -stride, -stride + 1, -1, 1, stride - 1, stride, stride + 1], np.int32
    )
    pixel_level = np.empty(n_pixels, np.int32)
    order = np.empty(n_pixels, np.int32)
    counts = np.empty(n_levels + 2, np.int64)
    log2 = np.zeros(n_levels + 1, np.int64)
    for length in range(2, n_levels + 1):
        log2[length] = log2[length // 2] + 1
    n_rows = log2[n_levels] + 1
    table = np.empty((n_rows, n_levels))

    for image in range(n_images):
        gt = boxes[image]
        heatmap = maps[image].ravel()
        lo = heatmap.min()
        span = heatmap.max() - lo
        # Level of a pixel = number of thresholds <= its normalized value (binary search): it
        # is kept at threshold index t exactly when its level is > t.
        counts[:] = 0
        peak = 0
        peak_value = -1.0
        for p in range(n_pixels):
            value = (heatmap[p] - lo) / span if span > 0 else 0.0
            if value > peak_value:
                peak_value = value
                peak = p
            # Branch-free upper bound (noisy maps make the branches unpredictable).
            base = 0
            length = n_levels
            while length > 0:
                half = length >> 1
                step = half + 1 if thresholds[base + half] <= value else 0
                base += step
                length = half if step == 0 else length - step
            pixel_level[p] = base
            counts[base] += 1
        # Counting sort, highest level first; counts becomes each level's start.
        position = 0
        for level in range(n_levels, -1, -1):
            count = counts[level]
            counts[level] = position
            position += count
        counts[n_levels + 1] = position
        for p in range(n_pixels):
            level = pixel_level[p]
            order[counts[level]] = p
            counts[level] += 1
        # counts[level] is now the end of `level` = the start of `level - 1`.

        if multi_contour:
            table[:] = 0.0
        best = -1
        best_size = 0
        best_has = False
        best_first = 0
        start = 0
        for level in range(n_levels, 0, -1):
            stop = counts[level]
            for i in range(start, stop):
                p = order[i]
                row = p // width
                col = p - row * width
                pixel = p + 2 * row + stride + 1
                root = -1
                for offset in neighbours:
                    q = pixel + offset
                    if parent[q] < 0:
                        continue
                    other = _find(parent, q)
                    if other == root:
                        continue
                    # `other` changes now: close the range of thresholds on which its current
                    # version was alive (`root`, if any, was born at this level).
                    rec_other = records[other]
                    if multi_contour and rec_other[_BORN] > level:
                        _range_max(
                            table, log2, level, rec_other[_BORN] - 1, _root_iou(rec_other, gt)
                        )
                    rec_other[_BORN] = level
                    if root < 0:
                        # The pixel joins its first neighbouring component; it never gets a
                        # record of its own (fewer cache lines touched than make-then-union).
                        parent[pixel] = other
                        rec_other[_SIZE] += 1
                        rec_other[_ROW0] = min(rec_other[_ROW0], row)
                        rec_other[_ROW1] = max(rec_other[_ROW1], row)
                        rec_other[_COL0] = min(rec_other[_COL0], col)
                        rec_other[_COL1] = max(rec_other[_COL1], col)
                        rec_other[_FIRST] = min(rec_other[_FIRST], p)
                        if p == peak:
                            rec_other[_HAS_MAX] = 1
                        root = other
                        continue
                    rec_root = records[root]
                    if rec_other[_SIZE] >= rec_root[_SIZE]:
                        big, small = other, root
                        a, b = rec_other, rec_root
                    else:
                        big, small = root, other
                        a, b = rec_root, rec_other
                    parent[small] = big
                    a[_SIZE] += b[_SIZE]
                    a[_ROW0] = min(a[_ROW0], b[_ROW0])
                    a[_ROW1] = max(a[_ROW1], b[_ROW1])
                    a[_COL0] = min(a[_COL0], b[_COL0])
                    a[_COL1] = max(a[_COL1], b[_COL1])
                    a[_FIRST] = min(a[_FIRST], b[_FIRST])
                    a[_HAS_MAX] = a[_HAS_MAX] | b[_HAS_MAX]
                    root = big
                if root < 0:  # no kept neighbour: a new component
                    root = pixel
                    parent[pixel] = pixel
                    new = records[pixel]
                    new[_SIZE] = 1
                    new[_ROW0] = row
                    new[_ROW1] = row
                    new[_COL0] = col
                    new[_COL1] = col
                    new[_FIRST] = p
                    new[_BORN] = level
                    new[_HAS_MAX] = p == peak
                # Every change grows one component, so the largest is tracked incrementally:
                # ties in size go to the component holding the argmax, then the first one in
                # row-major order (the rule of ``HeatmapBoxes``).
                rec_root = records[root]
                grown = rec_root[_SIZE]
                has = rec_root[_HAS_MAX] != 0
                if (
                    grown > best_size
                    or (grown == best_size and has and not best_has)
                    or (grown == best_size and has == best_has and rec_root[_FIRST] < best_first)
                ):
                    best = root
                    best_size = grown
                    best_has = has
                    best_first = rec_root[_FIRST]
            start = stop
            if best >= 0:
                v1[image, level - 1] = _root_iou(records[best], gt)

        if multi_contour:  # close the versions still alive at the lowest threshold
            for pixel in range(parent.shape[0]):
                if parent[pixel] == pixel:
                    record = records[pixel]
                    _range_max(table, log2, 0, record[_BORN] - 1, _root_iou(record, gt))
        parent[:] = -1
        if multi_contour:
            for k in range(n_rows - 1, 0, -1):
                half = 1 << (k - 1)
                for j in range(n_levels - (1 << k) + 1):
                    value = table[k, j]
                    if value > table[k - 1, j]:
                        table[k - 1, j] = value
                    if value > table[k - 1, j + half]:
                        table[k - 1, j + half] = value
            for t in range(n_levels):
                v2[image, t] = table[0, t]
