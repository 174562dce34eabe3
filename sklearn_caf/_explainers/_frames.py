"""Clips: which rows of a layer's feature maps belong to which clip and frame.

A clip model takes ``X`` of shape ``(n, T, ...)`` and runs its per-frame CNN on the
``n * T`` frames at once (``x.flatten(0, 1)`` in PyTorch, ``TimeDistributed`` in Keras),
so the layer's feature maps have ``n * T`` rows, clip by clip: row ``i * T + t`` is frame
``t`` of clip ``i``. The head reads all of a clip's rows and gives that clip's output.

Per-frame explanations are computed on *units*, one per (clip, frame): unit ``u`` is row
``u`` of the feature maps (its own frame), and the head of unit ``u`` is the head of its
clip, every frame unfiltered except frame ``u % T``. The math of that (which rows get
which filter) is here, once, for every backend.
"""

from __future__ import annotations

from typing import Any

import numpy as np

SUPPORTED_FORMS = (
    "the per-frame CNN must run once on all n*T frames of the batch, clip by clip: in "
    "PyTorch on the flattened batch (x.flatten(0, 1) or x.view(n * T, ...) of an (n, T, ...) "
    "input), in Keras inside a TimeDistributed layer (layer path through it, e.g. "
    "'frames/cnn/conv3')"
)


class FrameRows:
    """Row bookkeeping for clips of ``n_frames`` frames (``None``: plain images).

    With ``n_frames=None`` every method is the identity of the image case, so the
    explainers run one code path for images and clips.
    """

    def __init__(self, n_frames: int | None):
        self.n_frames = n_frames

    @property
    def per_row(self) -> int:
        return self.n_frames or 1

    def rows(self, clips: np.ndarray) -> np.ndarray:
        """Feature-map rows of ``clips``: ``T`` consecutive rows per clip."""
        clips = np.asarray(clips, dtype=np.int64)
        if not self.n_frames:
            return clips
        return (clips[:, None] * self.n_frames + np.arange(self.n_frames)).reshape(-1)

    def clips_of(self, units: np.ndarray) -> np.ndarray:
        return np.asarray(units, dtype=np.int64) // self.per_row

    def select(self, units: np.ndarray, n_spatial: int) -> np.ndarray | None:
        """``(m * T, 1, ...)``: 1 on the row of each unit's own frame within its clip."""
        if not self.n_frames:
            return None
        frame = np.asarray(units, dtype=np.int64) % self.n_frames
        one_hot = (np.arange(self.n_frames)[None, :] == frame[:, None]).astype(np.float32)
        return one_hot.reshape(-1, *(1,) * n_spatial)

    def frame_level(self, context: tuple, n_clips: int) -> tuple[bool, ...]:
        """Which context tensors have one row per frame (the others: one per clip).

        With ``T == 1`` both readings select the same rows.
        """
        if not self.n_frames:
            return tuple(False for _ in context)
        flags = []
        for c in context:
            rows = int(c.shape[0])
            if rows not in (n_clips, n_clips * self.n_frames):
                raise ValueError(
                    f"the head reads a value with {rows} rows computed before the layer, "
                    f"neither one per clip ({n_clips}) nor one per frame "
                    f"({n_clips * self.n_frames}); such a clip model cannot be explained "
                    f"per frame ({SUPPORTED_FORMS})."
                )
            flags.append(rows != n_clips)
        return tuple(flags)

    def take_context(
        self, bound: Any, context: tuple, flags: tuple[bool, ...], clips: np.ndarray
    ) -> tuple:
        """The context of ``clips`` (one per problem row), per clip or per frame."""
        frame_rows = self.rows(clips)
        return tuple(
            bound.take(c, frame_rows if f else clips) for c, f in zip(context, flags, strict=True)
        )

    def multiplier(self, bound: Any, unit: Any, select: Any) -> Any:
        """Per-row spatial multipliers of the head's input: ``unit`` (one filter per problem
        row) on each row's own frame, 1 on the other frames of its clip."""
        if not self.n_frames:
            return unit
        return select * (bound.repeat(unit, self.n_frames) - 1) + 1


def check_frame_axis(frame_axis: int | None, ndim: int) -> None:
    """A clear error for a ``frame_axis`` that ``X`` (``ndim`` axes) cannot have."""
    if frame_axis is None:
        return
    if ndim < 4 or frame_axis > ndim - 1:
        raise ValueError(
            f"frame_axis={frame_axis} needs X of clips, (n_clips, T, ...) with frames on "
            f"axis frame_axis and images in the model's layout on the other axes (at least "
            f"4 axes in all); got X with {ndim} axes."
        )


def image_channel_axis(input_channel_axis: int, ndim: int, frame_axis: int | None) -> int:
    """The channel axis of ``X`` (``ndim`` axes), where each frame is an image in the
    model's layout (channels on ``input_channel_axis`` of a frame batch)."""
    if frame_axis is None:
        return input_channel_axis % ndim
    channel = input_channel_axis % (ndim - 1)  # in a batch of frames (n, *frame)
    return channel + 1 if channel >= frame_axis else channel


def layout_probe(x0: np.ndarray, frame_axis: int) -> tuple[np.ndarray, np.ndarray]:
    """Two batches of the same two clips in swapped order, to check the rows' layout.

    The second clip is the first played backwards at half intensity, so that the two
    differ frame by frame.
    """
    p = x0[:1]
    q = 0.5 * np.flip(p, axis=frame_axis)
    return np.concatenate([p, q]), np.concatenate([q, p])


def check_layout(first: np.ndarray, second: np.ndarray, n_frames: int, layer: Any) -> None:
    """The rows of the layer for ``layout_probe``'s two batches must be clip by clip.

    Raises when the rows are frame by frame (``x.transpose(0, 1).flatten(0, 1)``) or
    otherwise not ``i * T + t``. Clips whose features do not differ say nothing: passed.
    """
    a, b = first.reshape(2, n_frames, -1), second.reshape(2, n_frames, -1)
    scale = max(float(np.abs(a).max()), 1e-12)
    if np.abs(a[0] - a[1]).max() <= 1e-4 * scale:
        return
    if np.abs(b[::-1] - a).max() > 1e-3 * scale:
        raise ValueError(
            f"the rows of layer={layer!r} are not ordered clip by clip (row i * T + t for "
            f"frame t of clip i): swapping two clips in the batch does not swap their blocks "
            f"of rows. Per-frame explanations need that order: {SUPPORTED_FORMS}."
        )
