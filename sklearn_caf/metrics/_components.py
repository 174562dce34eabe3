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


# --------------------------------------------------------------------------------------------
# The "wsol" protocol: wsolevaluation's BoxEvaluator (Choe et al., CVPR 2020), exactly.
#
# The reference thresholds the uint8 map ``u8 = (map * 255).astype(uint8)`` at every level
# ``k = int(t * 255)`` (kept: ``u8 > k``) and runs ``cv2.findContours(RETR_TREE)`` on the mask.
# Only 256 masks exist, one per level ``k``; three sweeps over the levels give every mask's
# contours at once:
#
# A. Outer contours (v2): the 8-connected components of ``{u8 > k}``, their boxes, by a
#    union-find adding pixels from the highest level down (as ``iou_curves``).
# B. Hole contours (v2): the 4-connected background components ``{u8 <= k}`` that do not reach
#    the image border, by a union-find adding pixels from the lowest level up with an
#    "outside" component. A hole contour passes through the foreground pixels around the hole,
#    so its ``cv2.boundingRect`` is the hole's pixel box grown by one pixel on each side.
# C. Largest contour (v1): ``cv2.contourArea`` of an outer contour (through pixel centres) is
#    the area of the polygon around the component *with its holes filled*; over the 2 x 2
#    windows of pixel centres it is ``n4 + n3 / 2`` (windows with 4 or 3 filled pixels). A
#    pixel is filled at level ``k`` when it is not reachable from outside the image through
#    background pixels, i.e. when its "exit level" ``e`` (the smallest ``k`` at which a
#    4-path of background joins it to the border; a priority flood) is ``> k``. A union-find
#    over the filled pixels, from the highest exit level down, keeps each filled set's doubled
#    area ``n3 + 2 n4`` and box. Holes and nested components have smaller contour areas than
#    their enclosing outer contour, so the largest contour is the largest filled set; ties go
#    to the component found last by OpenCV's raster scan (``findContours`` lists top-level
#    contours in reverse order of discovery and ``max`` keeps the first), i.e. the one whose
#    first pixel in row-major order comes last.

_WSOL_LEVELS = 256


@njit(cache=True, nogil=True)
def _wsol_iou(x0, y0, x1, y1, boxes):
    """Best ``+1`` IoU of the inclusive box ``[x0, y0, x1, y1]`` with inclusive boxes."""
    best = 0.0
    area_a = (x1 - x0 + 1.0) * (y1 - y0 + 1.0)
    for j in range(boxes.shape[0]):
        width = min(x1, boxes[j, 2]) - max(x0, boxes[j, 0]) + 1.0
        height = min(y1, boxes[j, 3]) - max(y0, boxes[j, 1]) + 1.0
        if width < 0.0:
            width = 0.0
        if height < 0.0:
            height = 0.0
        inter = width * height
        area_b = (boxes[j, 2] - boxes[j, 0] + 1.0) * (boxes[j, 3] - boxes[j, 1] + 1.0)
        union = area_a + area_b - inter
        iou = inter / union if union > 0.0 else 0.0
        if iou > best:
            best = iou
    return best


@njit(cache=True, nogil=True)
def _wsol_box_iou(row0, row1, col0, col1, grow, height, width, boxes):
    """IoU of ``cv2.boundingRect`` of pixels ``[row0, row1] x [col0, col1]`` grown by `grow`.

    The reference's box is ``[x, y, x + w, y + h]`` clipped to ``W - 1``/``H - 1``.
    """
    x0 = col0 - grow
    y0 = row0 - grow
    x1 = min(col1 + grow + 1, width - 1)
    y1 = min(row1 + grow + 1, height - 1)
    return _wsol_iou(float(x0), float(y0), float(x1), float(y1), boxes)


@njit(cache=True, nogil=True)
def _close_table(table, log2, n_rows, n_levels, out):
    for k in range(n_rows - 1, 0, -1):
        half = 1 << (k - 1)
        for j in range(n_levels - (1 << k) + 1):
            value = table[k, j]
            if value > table[k - 1, j]:
                table[k - 1, j] = value
            if value > table[k - 1, j + half]:
                table[k - 1, j + half] = value
    for t in range(n_levels):
        if table[0, t] > out[t]:
            out[t] = table[0, t]


@njit(cache=True, nogil=True)
def _bucket_order(keys, n_levels, descending, order, starts):
    """Pixels sorted by key (counting sort); ``starts[l]:starts[l + 1]`` hold key ``l``
    (``descending``: key ``n_levels - 1 - l``)."""
    starts[:] = 0
    for p in range(keys.shape[0]):
        key = keys[p]
        slot = n_levels - 1 - key if descending else key
        starts[slot + 1] += 1
    for slot in range(n_levels):
        starts[slot + 1] += starts[slot]
    fill = starts[:n_levels].copy()
    for p in range(keys.shape[0]):
        key = keys[p]
        slot = n_levels - 1 - key if descending else key
        order[fill[slot]] = p
        fill[slot] += 1


@njit(cache=True, nogil=True)
def _wsol_v2(u8, keys, gt, height, width, order, starts, parent, rec, n8, n4, table, log2):
    """Sweeps A and B of :func:`wsol_iou_curves`: every contour's box into ``table``."""
    n_levels = _WSOL_LEVELS
    stride = width + 2
    size = parent.shape[0]
    table[:] = 0.0
    # A. Outer contours: fg at level k is u8 > k; pixel of value u joins at level u - 1.
    _bucket_order(keys, n_levels, True, order, starts)
    parent[:] = -1
    for slot in range(n_levels - 1):  # values 255 .. 1
        level = n_levels - 2 - slot
        for i in range(starts[slot], starts[slot + 1]):
            p = order[i]
            row = p // width
            col = p - row * width
            pixel = p + 2 * row + stride + 1
            root = -1
            for offset in n8:
                q = pixel + offset
                if parent[q] < 0:
                    continue
                other = _find(parent, q)
                if other == root:
                    continue
                r = rec[other]
                if r[4] > level:
                    iou = _wsol_box_iou(r[0], r[1], r[2], r[3], 0, height, width, gt)
                    _range_max(table, log2, level + 1, r[4], iou)
                r[4] = level
                if root < 0:
                    root = other
                else:
                    a = rec[root]
                    parent[other] = root
                    a[0] = min(a[0], r[0])
                    a[1] = max(a[1], r[1])
                    a[2] = min(a[2], r[2])
                    a[3] = max(a[3], r[3])
            if root < 0:
                root = pixel
                rec[root, 4] = level
                rec[root, 0] = row
                rec[root, 1] = row
                rec[root, 2] = col
                rec[root, 3] = col
            parent[pixel] = root
            a = rec[root]
            a[0] = min(a[0], row)
            a[1] = max(a[1], row)
            a[2] = min(a[2], col)
            a[3] = max(a[3], col)
    for pixel in range(size):
        if parent[pixel] == pixel:
            r = rec[pixel]
            iou = _wsol_box_iou(r[0], r[1], r[2], r[3], 0, height, width, gt)
            _range_max(table, log2, 0, r[4], iou)

    # B. Holes: bg at level k is u8 <= k; pixel of value u joins at level u. The padding
    # is the outside component (root 0, never a hole).
    _bucket_order(keys, n_levels, False, order, starts)
    parent[:] = -1
    for row in range(height + 2):
        parent[row * stride] = 0
        parent[row * stride + width + 1] = 0
    for col in range(stride):
        parent[col] = 0
        parent[(height + 1) * stride + col] = 0
    for level in range(n_levels):
        for i in range(starts[level], starts[level + 1]):
            p = order[i]
            row = p // width
            col = p - row * width
            pixel = p + 2 * row + stride + 1
            root = -1
            for offset in n4:
                q = pixel + offset
                if parent[q] < 0:
                    continue
                other = _find(parent, q)
                if other == root:
                    continue
                if other != 0:
                    r = rec[other]
                    if r[4] < level:
                        iou = _wsol_box_iou(r[0], r[1], r[2], r[3], 1, height, width, gt)
                        _range_max(table, log2, r[4], level - 1, iou)
                    r[4] = level
                if root < 0:
                    root = other
                elif root == 0 or other == 0:
                    parent[other if root == 0 else root] = 0
                    root = 0
                else:
                    a = rec[root]
                    r = rec[other]
                    parent[other] = root
                    a[0] = min(a[0], r[0])
                    a[1] = max(a[1], r[1])
                    a[2] = min(a[2], r[2])
                    a[3] = max(a[3], r[3])
            if root < 0:
                root = pixel
                rec[root, 4] = level
                rec[root, 0] = row
                rec[root, 1] = row
                rec[root, 2] = col
                rec[root, 3] = col
            parent[pixel] = root
            if root != 0:
                a = rec[root]
                a[0] = min(a[0], row)
                a[1] = max(a[1], row)
                a[2] = min(a[2], col)
                a[3] = max(a[3], col)


@njit(cache=True, nogil=True)
def wsol_iou_curves(maps, boxes, want_v1, want_v2, v1, v2):
    """IoU curves of wsolevaluation's BoxEvaluator at every uint8 level, v1 and v2.

    Parameters
    ----------
    maps : uint8 array of shape (n, height, width)
        ``(normalized map * 255).astype(uint8)``.
    boxes : float64 array of shape (n, m, 4)
        Inclusive ground truth ``[x0, y0, x1, y1]`` (padding: boxes of IoU 0).
    want_v1, want_v2 : bool
        Which curves to compute (sweep C for v1, sweeps A and B for v2); the other one is
        left as the empty mask's IoU.
    v1, v2 : float64 arrays of shape (n, 256)
        Output: at level ``k`` (mask ``u8 > k``), the IoU of the largest contour's box and the
        best IoU over every contour's box; an empty mask scores the box ``[0, 0, 0, 0]``.
    """
    n_images, height, width = maps.shape
    n_pixels = height * width
    n_levels = _WSOL_LEVELS
    stride = width + 2
    size = (height + 2) * stride
    parent = np.empty(size, np.int32)
    # Per root: row0, row1, col0, col1, born level, first pixel, doubled area.
    rec = np.empty((size, 7), np.int64)
    n8 = np.array(
        [-stride - 1, -stride, -stride + 1, -1, 1, stride - 1, stride, stride + 1], np.int32
    )
    n4 = np.array([-stride, -1, 1, stride], np.int32)
    order = np.empty(n_pixels, np.int32)
    starts = np.empty(n_levels + 1, np.int64)
    exit_level = np.empty(n_pixels, np.int32)
    keys = np.empty(n_pixels, np.int32)
    head = np.empty(n_levels, np.int32)
    link = np.empty(n_pixels, np.int32)
    windows = np.empty((height + 1) * (width + 1), np.int8)
    # Filled sets: how many roots have each doubled area; the list of roots.
    same_area = np.empty(2 * (height + 1) * (width + 1) + 1, np.int32)
    roots = np.empty(n_pixels, np.int32)
    slot_of = np.empty(size, np.int32)
    log2 = np.zeros(n_levels + 1, np.int64)
    for length in range(2, n_levels + 1):
        log2[length] = log2[length // 2] + 1
    n_rows = log2[n_levels] + 1
    table = np.empty((n_rows, n_levels))

    for image in range(n_images):
        gt = boxes[image]
        u8 = maps[image].ravel()
        empty_iou = _wsol_iou(0.0, 0.0, 0.0, 0.0, gt)
        top = 0
        for p in range(n_pixels):
            keys[p] = u8[p]
            if u8[p] > top:
                top = u8[p]
        for k in range(n_levels):
            v1[image, k] = empty_iou
            v2[image, k] = empty_iou if k >= top else 0.0
        if top == 0:
            continue
        if want_v2:
            _wsol_v2(u8, keys, gt, height, width, order, starts, parent, rec, n8, n4, table, log2)
            _close_table(table, log2, n_rows, n_levels, v2[image])
        if not want_v1:
            continue

        # C. Exit levels by a priority flood from the border (4-connected, minimax of u8).
        head[:] = -1
        for p in range(n_pixels):
            exit_level[p] = -1
        for p in range(n_pixels):
            row = p // width
            col = p - row * width
            if row == 0 or col == 0 or row == height - 1 or col == width - 1:
                exit_level[p] = u8[p]
                link[p] = head[u8[p]]
                head[u8[p]] = p
        for level in range(n_levels):
            while head[level] >= 0:
                p = head[level]
                head[level] = link[p]
                row = p // width
                col = p - row * width
                for d in range(4):
                    if d == 0:
                        if row == 0:
                            continue
                        q = p - width
                    elif d == 1:
                        if col == 0:
                            continue
                        q = p - 1
                    elif d == 2:
                        if col == width - 1:
                            continue
                        q = p + 1
                    else:
                        if row == height - 1:
                            continue
                        q = p + width
                    if exit_level[q] >= 0:
                        continue
                    e = max(level, np.int32(u8[q]))
                    exit_level[q] = e
                    link[q] = head[e]
                    head[e] = q
        # Filled sets at level k: exit level > k; a pixel of exit level e joins at e - 1.
        _bucket_order(exit_level, n_levels, True, order, starts)
        parent[:] = -1
        windows[:] = 0
        best = -1
        best_area = -1
        best_first = -1
        n_roots = 0
        same_area[:] = 0
        for slot in range(n_levels - 1):
            level = n_levels - 2 - slot
            rescan = False
            for i in range(starts[slot], starts[slot + 1]):
                p = order[i]
                row = p // width
                col = p - row * width
                pixel = p + 2 * row + stride + 1
                root = -1
                for offset in n8:
                    q = pixel + offset
                    if parent[q] < 0:
                        continue
                    other = _find(parent, q)
                    if other == root:
                        continue
                    if root < 0:
                        root = other
                    else:
                        a = rec[root]
                        r = rec[other]
                        parent[other] = root
                        a[0] = min(a[0], r[0])
                        a[1] = max(a[1], r[1])
                        a[2] = min(a[2], r[2])
                        a[3] = max(a[3], r[3])
                        a[5] = min(a[5], r[5])
                        same_area[r[6]] -= 1
                        same_area[a[6]] -= 1
                        a[6] += r[6]
                        same_area[a[6]] += 1
                        # `other` is no root any more: swap-remove it from the list.
                        last = roots[n_roots - 1]
                        roots[slot_of[other]] = last
                        slot_of[last] = slot_of[other]
                        n_roots -= 1
                        if other == best:
                            best = root
                if root < 0:
                    root = pixel
                    rec[root, 0] = row
                    rec[root, 1] = row
                    rec[root, 2] = col
                    rec[root, 3] = col
                    rec[root, 5] = p
                    rec[root, 6] = 0
                    same_area[0] += 1
                    roots[n_roots] = root
                    slot_of[root] = n_roots
                    n_roots += 1
                parent[pixel] = root
                a = rec[root]
                a[0] = min(a[0], row)
                a[1] = max(a[1], row)
                a[2] = min(a[2], col)
                a[3] = max(a[3], col)
                a[5] = min(a[5], p)
                same_area[a[6]] -= 1
                # The four 2 x 2 windows of pixel centres around the pixel.
                for w in (
                    row * (width + 1) + col,
                    row * (width + 1) + col + 1,
                    (row + 1) * (width + 1) + col,
                    (row + 1) * (width + 1) + col + 1,
                ):
                    if windows[w] >= 2:
                        a[6] += 1
                    windows[w] += 1
                same_area[a[6]] += 1
                if root == best:
                    if same_area[a[6]] > 1:
                        rescan = True  # another set of the same area may come first
                    best_area = a[6]
                    best_first = a[5]
                elif a[6] > best_area or (a[6] == best_area and a[5] > best_first):
                    best = root
                    best_area = a[6]
                    best_first = a[5]
            if rescan:
                best_area = -1
                for j in range(n_roots):
                    r = rec[roots[j]]
                    if r[6] > best_area or (r[6] == best_area and r[5] > best_first):
                        best = roots[j]
                        best_area = r[6]
                        best_first = r[5]
            if best >= 0:
                r = rec[best]
                v1[image, level] = _wsol_box_iou(r[0], r[1], r[2], r[3], 0, height, width, gt)
