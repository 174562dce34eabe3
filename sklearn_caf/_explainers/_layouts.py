"""The layout of a layer's output: which axis holds the channels, or how tokens make a grid.

The method math reads feature maps with the channels on ``bound.channel_axis`` and every
other non-batch axis spatial. A backend's native layout (PyTorch NCHW, Keras NHWC) is only a
convention of the framework: a Swin or ConvNeXt block in PyTorch outputs channels last,
``(n, 7, 7, 768)``, and a vision transformer outputs tokens, ``(n, 1 + 14 * 14, 768)``.
Read with the native layout, the first would give maps over ``7 x 768`` cells (the channel
axis taken for space) and the second could not be explained at all.

:func:`resolve_layout` decides the layout from the shapes of one input and its feature map
(or takes the user's), and :class:`LayoutBound` presents the bound model to the method math
in a layout it reads: the channel axis moved (channels last), or the patch tokens reshaped to
their grid ``(n, h, w, channels)`` with the prefix tokens (class, distillation, register
tokens) carried unfiltered to the head.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np

LAYOUTS = ("auto", "channels_first", "channels_last", "nchw", "nhwc", "tokens")
_ALIASES = {"nchw": "channels_first", "nhwc": "channels_last"}

# Most prefix tokens a transformer puts before its patch tokens: a class token, a
# distillation token (DeiT) and up to 4 + 2 register tokens.
_MAX_PREFIX = 8
# Input size over feature-map size along each spatial axis is the layer's stride; a layout
# is plausible when the strides agree to within this factor (rounding and valid
# convolutions make them differ a little; a channel axis taken for space, a lot).
_STRIDE_SPREAD = 1.25


@dataclass(frozen=True)
class FeatureLayout:
    """How to read a layer's output: ``kind`` and, for tokens, the prefix and the grid."""

    kind: str  # "channels_first", "channels_last" or "tokens"
    prefix: int = 0
    grid: tuple[int, ...] | None = None

    @property
    def channel_axis(self) -> int:
        return 1 if self.kind == "channels_first" else -1


def _strides_agree(in_sizes: tuple[int, ...], out_sizes: tuple[int, ...]) -> bool:
    if len(in_sizes) != len(out_sizes) or not out_sizes:
        return False
    if any(o < 1 or o > i for i, o in zip(in_sizes, out_sizes, strict=True)):
        return False
    strides = [i / o for i, o in zip(in_sizes, out_sizes, strict=True)]
    return max(strides) <= _STRIDE_SPREAD * min(strides)


def _token_grids(n_tokens: int, in_sizes: tuple[int, ...]) -> list[tuple[int, tuple]]:
    """The (prefix, grid) pairs whose grid has the input's aspect at one patch size: those
    whose patch size divides the input, if any (what vision transformers take), else those
    where it leaves a partial patch."""
    exact, rounded = [], []
    height, width = in_sizes
    for prefix in range(min(_MAX_PREFIX, n_tokens - 1) + 1):
        cells = n_tokens - prefix
        for patch in range(1, min(height, width) + 1):
            for rounding in (math.floor, math.ceil):
                grid = (rounding(height / patch), rounding(width / patch))
                if grid[0] * grid[1] != cells:
                    continue
                divides = height % patch == 0 and width % patch == 0
                found = exact if divides else rounded
                if (prefix, grid) not in found:
                    found.append((prefix, grid))
    return exact or rounded


def _fix(layer: Any) -> str:
    return (
        f"pass layout='tokens' with grid=(h, w) and prefix_tokens=p (the class token and "
        f"others before the patch tokens), or pick another layer than {layer!r}"
    )


def resolve_layout(
    layout: str,
    grid: Any,
    prefix_tokens: Any,
    *,
    feature_shape: tuple[int, ...],
    input_sizes: tuple[int, ...],
    native_channel_axis: int,
    layer: Any,
) -> FeatureLayout:
    """The layout of a layer's output ``feature_shape`` (one image's, batch axis included)
    for inputs of spatial size ``input_sizes``; ``layout="auto"`` detects it."""
    layout = _ALIASES.get(layout, layout)
    ndim = len(feature_shape)
    native = "channels_first" if native_channel_axis % max(ndim, 2) == 1 else "channels_last"
    if grid is not None or prefix_tokens is not None:
        if layout not in ("tokens", "auto"):
            raise ValueError(
                f"grid and prefix_tokens describe token layouts; they need layout='tokens' "
                f"(or 'auto'), not layout={layout!r}."
            )
    tokens_expected = ndim == len(input_sizes) + 1 and len(input_sizes) == 2
    if layout == "tokens" or (layout == "auto" and (tokens_expected or grid is not None)):
        return _token_layout(feature_shape, input_sizes, grid, prefix_tokens, layer)
    if layout != "auto":
        if ndim < 3:
            raise ValueError(
                f"layer={layer!r} outputs shape {tuple(feature_shape)}; layout={layout!r} "
                f"needs feature maps (n, channels, *spatial) or (n, *spatial, channels)."
            )
        return FeatureLayout(layout)
    other = "channels_last" if native == "channels_first" else "channels_first"
    for kind in (native, other):
        spatial = feature_shape[2:] if kind == "channels_first" else feature_shape[1:-1]
        if _strides_agree(tuple(input_sizes), tuple(spatial)):
            return FeatureLayout(kind)
    # Neither reads as a downsampled image (an upsampling layer, pre-extracted features):
    # the framework's own convention, as the user can override.
    return FeatureLayout(native)


def _token_layout(feature_shape, input_sizes, grid, prefix_tokens, layer) -> FeatureLayout:
    if len(feature_shape) != 3:
        raise ValueError(
            f"layout='tokens' needs a layer that outputs tokens (n, n_tokens, channels); "
            f"layer={layer!r} outputs shape {tuple(feature_shape)}."
        )
    n_tokens = int(feature_shape[1])
    if grid is not None:
        grid = tuple(int(g) for g in grid)
        if len(grid) != 2 or min(grid) < 1:
            raise ValueError(f"grid must be two positive integers (h, w); got {grid!r}.")
        prefix = n_tokens - grid[0] * grid[1]
        if prefix_tokens is not None and int(prefix_tokens) != prefix:
            raise ValueError(
                f"layer={layer!r} outputs {n_tokens} tokens: grid={grid} leaves {prefix} "
                f"prefix tokens, not prefix_tokens={prefix_tokens}."
            )
        if prefix < 0:
            raise ValueError(
                f"grid={grid} has {grid[0] * grid[1]} cells but layer={layer!r} outputs "
                f"only {n_tokens} tokens (shape {tuple(feature_shape)})."
            )
        return FeatureLayout("tokens", prefix, grid)
    if len(input_sizes) != 2:
        raise ValueError(
            f"layer={layer!r} outputs tokens of shape {tuple(feature_shape)}; their grid is "
            f"found only for 2-D images: {_fix(layer)}."
        )
    found = _token_grids(n_tokens, tuple(input_sizes))
    if prefix_tokens is not None:
        found = [f for f in found if f[0] == int(prefix_tokens)]
    if len(found) != 1:
        what = (
            "no grid of patches"
            if not found
            else f"several grids ({', '.join(f'{p} prefix + {g}' for p, g in found)})"
        )
        raise ValueError(
            f"layer={layer!r} outputs {n_tokens} tokens of {feature_shape[2]} channels for "
            f"inputs of size {tuple(input_sizes)}: {what} fits them; {_fix(layer)}."
        )
    prefix, grid = found[0]
    return FeatureLayout("tokens", prefix, grid)


def apply_layout(bound: Any, layout: FeatureLayout) -> Any:
    """``bound`` read in ``layout``: its channel axis set (channels first or last), or
    wrapped to present tokens as their grid."""
    if layout.kind == "tokens":
        return LayoutBound(bound, layout)
    if bound.channel_axis != layout.channel_axis:
        bound.channel_axis = layout.channel_axis  # this bound model's own, not the class's
    return bound


class LayoutBound:
    """A bound model whose feature maps the method math reads: channels on
    ``channel_axis``, every other non-batch axis spatial. Everything else is the bound
    model's own."""

    def __init__(self, bound: Any, layout: FeatureLayout):
        self._bound = bound
        self.layout = layout
        self.channel_axis = layout.channel_axis

    def __getattr__(self, name: str) -> Any:
        return getattr(self._bound, name)

    def __enter__(self) -> LayoutBound:
        self._bound.__enter__()
        return self

    def __exit__(self, *exc_info: Any) -> None:
        self._bound.__exit__(*exc_info)

    def trunk(self, x: Any) -> tuple[Any, tuple]:
        a, context = self._bound.trunk(x)
        if self.layout.kind != "tokens":
            return a, context
        bound, prefix = self._bound, self.layout.prefix
        head, patches = _split_tokens(bound, a, prefix)
        grid = bound.reshape(patches, (-1, *self.layout.grid, int(a.shape[-1])))
        # The prefix tokens travel with the context: one row per image, taken with it.
        return grid, (*context, head) if prefix else context

    def head(self, a: Any, context: tuple) -> Any:
        if self.layout.kind != "tokens":
            return self._bound.head(a, context)
        bound, prefix = self._bound, self.layout.prefix
        cells = int(np.prod(self.layout.grid))
        tokens = bound.reshape(a, (-1, cells, int(a.shape[-1])))
        if prefix:
            *context, head = context
            tokens = bound.concat([head, tokens], axis=1)
        return self._bound.head(tokens, tuple(context))


def _split_tokens(bound: Any, a: Any, prefix: int) -> tuple[Any, Any]:
    split = getattr(bound, "split", None)
    if split is None or getattr(bound, "reshape", None) is None:
        raise ValueError(
            f"{type(bound).__name__} cannot explain token layers: its backend offers no "
            "split, reshape and concat operations."
        )
    if not prefix:
        return None, a
    head, patches = split(a, [prefix], axis=1)
    return head, patches
