"""Cheaper trunks and heads: batch norm folded into the convolution before it.

Inside an explainer call the model is in eval mode (see ``_state.py``), so a batch norm
on its running statistics is an affine map per channel, and a convolution followed by it
is one convolution with scaled weights and a shifted bias. L2-CAF evaluates the head
dozens to hundreds of times per batch: on EfficientNet-Lite0 at ``_blocks.10`` folding
the 16 batch norms of the head, with activations in channels-last order on the CPU, makes
one evaluation about 1.25x cheaper, and the trunk 1.5-2x (``benchmarks/bench_fold.py``).

The user's model is never touched: a folded pair becomes a call of :class:`FoldedConvBN`,
a module of the split's own graph that reads the user's tensors by name at every call and
keeps the folded weights in a cache keyed on those tensors' identities and version
counters, so a model trained further between two calls is folded again (an in-place
update bumps the version; a new ``Parameter`` has another identity).

The folded split is checked against the model on the first input like any other split
(``TorchBoundModel._disagreement``); where it disagrees or fails (a ``.view`` that needs
contiguous memory, say), the binding falls back to the split as traced.
"""

from __future__ import annotations

import copy
import operator
from typing import Any

import torch
import torch.fx as fx
import torch.nn.functional as F

_CONVS = {1: F.conv1d, 2: F.conv2d, 3: F.conv3d}
_CONV_MODULES = (torch.nn.Conv1d, torch.nn.Conv2d, torch.nn.Conv3d)
_BN_MODULES = (torch.nn.BatchNorm1d, torch.nn.BatchNorm2d, torch.nn.BatchNorm3d)
_CONV_ARGS = ("input", "weight", "bias", "stride", "padding", "dilation", "groups")
_CONV_DEFAULTS = {"bias": None, "stride": 1, "padding": 0, "dilation": 1, "groups": 1}


def _aten(name: str) -> Any:
    return getattr(getattr(torch.ops.aten, name, None), "default", None)


_CONV_FUNCTIONS = {
    F.conv1d: 1,
    F.conv2d: 2,
    F.conv3d: 3,
    _aten("conv1d"): 1,
    _aten("conv2d"): 2,
    _aten("conv3d"): 3,
}
_CONV_FUNCTIONS.pop(None, None)


class FoldedConvBN(torch.nn.Module):
    """``bn(conv(x))`` as one convolution; its tensors are read from ``root`` by name.

    ``names`` maps ``weight``, ``bias``, ``bn_weight``, ``bn_bias``, ``mean``, ``var`` to
    attribute paths of ``root`` (``None`` for an absent bias or affine part).
    """

    def __init__(
        self,
        root: torch.nn.Module,
        names: dict[str, str | None],
        eps: float,
        dims: int,
        conv_kwargs: dict[str, Any],
        channels_last: bool,
    ):
        super().__init__()
        self.names, self.eps, self.dims = names, float(eps), dims
        self.conv_kwargs, self.channels_last = conv_kwargs, channels_last
        # The module owning each tensor, found once (the root's tree does not change after
        # tracing); the tensor itself is read at every call. A plain dict, so the owners
        # stay out of this module's tree.
        self._owners = {key: _owner(root, name) for key, name in names.items() if name is not None}
        # One tuple, replaced whole: threads sharing the split never see a torn entry.
        self._cache: tuple = ((), None, None)

    def folded(self) -> tuple[torch.Tensor, torch.Tensor]:
        """The folded weight and bias, recomputed when a source tensor changed."""
        sources = {key: None for key in self.names}
        sources.update({key: getattr(m, attr) for key, (m, attr) in self._owners.items()})
        try:
            key = tuple(
                (k, id(t), t._version, t.device, t.dtype)
                for k, t in sources.items()
                if t is not None
            )
        except RuntimeError:  # tensors made in inference mode have no version counter
            key = None
        cached_key, w, b = self._cache
        if key is not None and key == cached_key:
            return w, b
        with torch.no_grad():
            weight, var = sources["weight"], sources["var"]
            scale = torch.rsqrt(var + self.eps)
            if sources["bn_weight"] is not None:
                scale = scale * sources["bn_weight"]
            shift = -sources["mean"] * scale
            if sources["bias"] is not None:
                shift = shift + sources["bias"] * scale
            if sources["bn_bias"] is not None:
                shift = shift + sources["bn_bias"]
            w = weight * scale.reshape(-1, *([1] * (weight.dim() - 1))).to(weight.dtype)
            b = shift.to(weight.dtype)
            if self.channels_last and w.dim() == 4:
                w = w.contiguous(memory_format=torch.channels_last)
        if key is not None:
            self._cache = (key, w, b)
        return w, b

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        w, b = self.folded()
        return _CONVS[self.dims](x, w, b, **self.conv_kwargs)


def _owner(root: torch.nn.Module, name: str) -> tuple[torch.nn.Module, str]:
    module_path, _, attr = name.rpartition(".")
    return (root.get_submodule(module_path) if module_path else root), attr


def _attr_path(node: Any) -> str | None:
    """The attribute path a ``get_attr`` node reads; ``None`` for ``None``; else raises."""
    if node is None:
        return None
    if isinstance(node, fx.Node) and node.op == "get_attr":
        return node.target
    raise _NotFoldable


class _NotFoldable(Exception):
    pass


def _conv(node: fx.Node, modules: dict[str, torch.nn.Module]) -> tuple | None:
    """``(input, names, dims, conv_kwargs)`` of a convolution node, or ``None``."""
    if node.op == "call_module":
        m = modules.get(node.target)
        if not isinstance(m, _CONV_MODULES) or type(m).forward not in {
            c.forward for c in _CONV_MODULES
        }:
            return None
        if m.padding_mode != "zeros" or len(node.args) != 1 or node.kwargs:
            return None
        dims = len(m.kernel_size)
        names = {
            "weight": f"{node.target}.weight",
            "bias": f"{node.target}.bias" if m.bias is not None else None,
        }
        kwargs = dict(stride=m.stride, padding=m.padding, dilation=m.dilation, groups=m.groups)
        return node.args[0], names, dims, kwargs
    if node.op != "call_function" or node.target not in _CONV_FUNCTIONS:
        return None
    dims = _CONV_FUNCTIONS[node.target]
    bound = dict(_CONV_DEFAULTS)
    bound.update(zip(_CONV_ARGS, node.args, strict=False))
    bound.update(node.kwargs)
    try:
        names = {"weight": _attr_path(bound["weight"]), "bias": _attr_path(bound["bias"])}
    except _NotFoldable:
        return None
    if names["weight"] is None:
        return None
    kwargs = {k: bound[k] for k in ("stride", "padding", "dilation", "groups")}
    if any(isinstance(v, fx.Node) for v in kwargs.values()):
        return None
    return bound["input"], names, dims, kwargs


def _batch_norm(node: fx.Node, modules: dict[str, torch.nn.Module]) -> tuple | None:
    """``(input, names, eps, node whose value is the result)`` of a batch norm, or ``None``."""
    if node.op == "call_module":
        m = modules.get(node.target)
        if (
            not isinstance(m, _BN_MODULES)
            or type(m).forward is not torch.nn.modules.batchnorm._BatchNorm.forward
            or m.running_mean is None
            or len(node.args) != 1
            or node.kwargs
        ):
            return None
        names = {
            "bn_weight": f"{node.target}.weight" if m.weight is not None else None,
            "bn_bias": f"{node.target}.bias" if m.bias is not None else None,
            "mean": f"{node.target}.running_mean",
            "var": f"{node.target}.running_var",
        }
        return node.args[0], names, m.eps, node
    if node.op != "call_function":
        return None
    if node.target is _aten("batch_norm"):
        args = list(node.args) + [None] * (9 - len(node.args))
        inp, w, b, mean, var, training, _, eps = args[:8]
        result = node
    elif node.target is _aten("_native_batch_norm_legit_no_training"):
        args = list(node.args) + [None] * (7 - len(node.args))
        inp, w, b, mean, var, _, eps = args[:7]
        training = False
        users = list(node.users)
        if len(users) != 1 or users[0].target is not operator.getitem or users[0].args[1] != 0:
            return None
        result = users[0]
    else:
        return None
    if training or node.kwargs or eps is None:
        return None
    try:
        names = {
            "bn_weight": _attr_path(w),
            "bn_bias": _attr_path(b),
            "mean": _attr_path(mean),
            "var": _attr_path(var),
        }
    except _NotFoldable:
        return None
    if names["mean"] is None or names["var"] is None:
        return None
    return inp, names, eps, result


def fold_batch_norms(module: fx.GraphModule, channels_last: bool = False) -> fx.GraphModule | None:
    """A copy of ``module`` with every ``conv -> batch norm`` pair folded; ``None`` if none.

    The copy shares ``module``'s submodules and tensors (nothing is copied or changed);
    a pair is folded only where the convolution's value has no other use.
    """
    folded = fx.GraphModule(module, copy.deepcopy(module.graph))
    modules = dict(folded.named_modules())
    count = 0
    for node in list(folded.graph.nodes):
        bn = _batch_norm(node, modules)
        if bn is None:
            continue
        conv_node, bn_names, eps, result = bn
        if not isinstance(conv_node, fx.Node) or len(conv_node.users) != 1:
            continue
        conv = _conv(conv_node, modules)
        if conv is None:
            continue
        inp, conv_names, dims, kwargs = conv
        name = f"sklearn_caf_folded_{count}"
        folded.add_submodule(
            name,
            FoldedConvBN(folded, {**conv_names, **bn_names}, eps, dims, kwargs, channels_last),
        )
        with folded.graph.inserting_before(conv_node):
            new = folded.graph.call_module(name, (inp,))
        result.replace_all_uses_with(new)
        for dead in (result, node, conv_node):
            if dead in folded.graph.nodes and not dead.users:
                folded.graph.erase_node(dead)
        count += 1
    if not count:
        return None
    folded.graph.eliminate_dead_code()
    folded.recompile()
    return folded
