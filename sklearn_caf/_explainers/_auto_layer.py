"""``layer="auto"``: the last feature map of a model that its output still depends on.

The rule, for 2-D and N-D image models alike: run the model once on one image and list its
layers' outputs in the order they are made; keep the *spatial* ones (a feature map that
shrinks the input by one stride in either channel layout, or the tokens of a patch grid);
the answer is the last of them whose cells the output depends on, checked by the gradient
of the output's squared norm (not of its sum: a softmax sums to 1). That is the last
convolutional stage before global pooling in a CNN (ResNet's ``layer4``), and in a vision
transformer the last block's ``ln_1``: the class token reads the patch tokens there (in
attention) and nowhere after it, so every later token output has no gradient on the
patches.
"""

from __future__ import annotations

import warnings
from typing import Any

import numpy as np

from ..backend import BoundModel
from ._layouts import (
    FeatureLayout,
    _strides_agree,
    _token_grids,
    apply_layout,
)

# Candidates checked for a gradient, from the last one back.
_MAX_CHECKED = 32


def spatial_layout(
    shape: tuple[int, ...], input_sizes: tuple[int, ...], native_channel_axis: int
) -> FeatureLayout | None:
    """The layout in which ``shape`` (batch axis included) is a spatial feature map of an
    input of ``input_sizes``, or ``None`` when it is none (a vector, a pooled map)."""
    n_spatial = len(input_sizes)
    if len(shape) == n_spatial + 2:
        native = "channels_first" if native_channel_axis % len(shape) == 1 else "channels_last"
        other = "channels_last" if native == "channels_first" else "channels_first"
        for kind in (native, other):
            spatial = shape[2:] if kind == "channels_first" else shape[1:-1]
            if np.prod(spatial) > 1 and _strides_agree(tuple(input_sizes), tuple(spatial)):
                return FeatureLayout(kind)
        return None
    if len(shape) == 3 and n_spatial == 2:
        grids = _token_grids(int(shape[1]), tuple(input_sizes))
        if len(grids) == 1 and np.prod(grids[0][1]) > 1:
            prefix, grid = grids[0]
            return FeatureLayout("tokens", prefix, grid)
    return None


def _depends(gradient: np.ndarray, layout: FeatureLayout) -> bool:
    """Whether a gradient at a layer's output reaches any cell of its map."""
    if layout.kind == "tokens":
        gradient = gradient[:, layout.prefix :]
    return bool(np.any(gradient != 0) and np.all(np.isfinite(gradient)))


def _gradient_by_binding(backend, model, x, name, layout, output, device) -> np.ndarray:
    """The gradient of the output's squared norm at ``name``'s output, through a split."""
    bound: BoundModel = backend.bind(model, layer=name, output=output, device=device)
    bound = apply_layout(bound, layout)
    with bound:
        a, context = bound.trunk(bound.asarray(x))

        def total(features):
            out = bound.head(features, context)
            return bound.sum(out * out, axis=1)

        _, grad = bound.value_and_grad(total, a)
        return bound.to_numpy(grad)


def find_layer(
    backend: Any,
    model: Any,
    x: np.ndarray,
    *,
    input_sizes: tuple[int, ...],
    native_channel_axis: int,
    output: Any,
    device: Any,
) -> str:
    """The layer ``layer="auto"`` explains (see the module's docstring)."""
    list_outputs = getattr(backend, "layer_outputs", None)
    if list_outputs is None:
        raise ValueError(
            f"layer='auto' needs a backend that lists a model's layers; the {backend.name!r} "
            "backend cannot (no layer_outputs). Pass layer= a layer's name."
        )
    records = list_outputs(model, x, output=output, device=device)
    candidates = []
    for name, shape, _ in records:
        layout = spatial_layout(tuple(shape), input_sizes, native_channel_axis)
        if layout is not None:
            candidates.append((name, layout))
    if not candidates:
        raise ValueError(
            f"layer='auto' found no layer of the model whose output is a spatial feature map "
            f"of inputs of size {tuple(input_sizes)} (outputs seen: "
            f"{', '.join(f'{n} {tuple(s)}' for n, s, _ in records[-5:]) or 'none'}). Pass "
            "layer= a layer's name."
        )
    tail = candidates[-_MAX_CHECKED:]
    names = [name for name, _ in tail]
    gradients = {
        n: g
        for n, _, g in list_outputs(model, x, gradients_of=names, output=output, device=device)
        if g is not None
    }
    for name, layout in reversed(tail):
        gradient = gradients.get(name)
        if gradient is not None:
            if _depends(gradient, layout):
                return name
        else:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # splits tried on the way are not the user's
                try:
                    gradient = _gradient_by_binding(
                        backend, model, x, name, layout, output, device
                    )
                except ValueError:  # a layer the backend cannot split at
                    continue
            # Bound in its layout: tokens are already the grid, the prefix left out.
            if np.any(gradient != 0) and np.all(np.isfinite(gradient)):
                return name
    raise ValueError(
        f"layer='auto': the output of the model depends on none of its last {len(tail)} "
        f"spatial feature maps ({', '.join(names[-5:])}...). Pass layer= a layer's name."
    )
