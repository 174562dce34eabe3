"""Array layout helpers shared by the explainers and the evaluation."""

from __future__ import annotations


def spatial_axes(ndim: int, channel_axis: int) -> tuple[int, ...]:
    """The spatial axes of an ``ndim``-D batch: every axis but the batch (0) and channel one."""
    channel = channel_axis % ndim
    return tuple(ax for ax in range(1, ndim) if ax != channel)
