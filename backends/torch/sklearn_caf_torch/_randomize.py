"""Randomized copies of a torch model for the model-randomization sanity check.

See :func:`sklearn_caf.sanity.model_randomization`. The user's model is only read: the copy
is a ``copy.deepcopy``, re-initialized in place, and the global random generators are left
as they were (the seeding happens inside ``torch.random.fork_rng``).
"""

from __future__ import annotations

import copy
from collections.abc import Sequence

import torch
from torch import fx

from sklearn_caf.backend import check_layer_names, layer_seeds

from . import _state
from ._split import _quiet


def _owns_weights(module: torch.nn.Module) -> bool:
    return next(module.parameters(recurse=False), None) is not None


def _call_order(model: torch.nn.Module) -> list[str] | None:
    """Module paths in the order the traced forward pass first uses them; None when fx
    cannot trace ``forward``."""
    tracer = fx.Tracer()
    try:
        # fx replaces torch.nn.Module.__call__ process-wide while it traces (see _state.py).
        with _state.tracing(), _quiet():
            graph = tracer.trace(model)
    except Exception:
        return None
    order: dict[str, None] = {}
    for node in graph.nodes:
        if node.op == "call_module":
            order.setdefault(str(node.target), None)
        elif node.op == "get_attr":  # a parameter used by a functional call: its module
            order.setdefault(str(node.target).rpartition(".")[0], None)
    return list(order)


def weighted_layers(model: torch.nn.Module) -> list[str]:
    """Paths of the modules that own parameters, in forward order."""
    owners = [name for name, m in model.named_modules() if name and _owns_weights(m)]
    if not owners and _owns_weights(model):
        return [""]  # a single layer (nn.Linear) is its own only weighted layer
    order = _call_order(model)
    if order is None:
        return owners  # registration order: the forward order of most models
    rank = {name: i for i, name in enumerate(order)}

    # Modules fx keeps as leaves (nn.Conv2d...) are ranked directly; a weighted module
    # inside a leaf it did not enter takes its parent's rank; unused modules go last.
    def key(name: str) -> tuple[int, int]:
        path = name
        while path and path not in rank:
            path = path.rpartition(".")[0]
        return (rank.get(path, len(rank)), owners.index(name))

    return sorted(owners, key=key)


def _user_flags(model: torch.nn.Module, clone: torch.nn.Module) -> None:
    """Give ``clone`` the user's train/eval and requires_grad flags: an explainer call in
    another thread may hold ``model`` frozen while it is copied (see _state.py)."""
    with _state._LOCK:
        for m, c in zip(model.modules(), clone.modules(), strict=True):
            entry = _state._MODULES.get(id(m))
            c.training = m.training if entry is None else entry[1]
        for p, c in zip(model.parameters(), clone.parameters(), strict=True):
            entry = _state._PARAMETERS.get(id(p))
            c.requires_grad_(p.requires_grad if entry is None else entry[1])


def _reinitialize(module: torch.nn.Module) -> None:
    reset = getattr(module, "reset_parameters", None)
    if callable(reset):
        reset()
        return
    # No initializer of its own: redraw each parameter from a normal distribution with the
    # parameter's own mean and spread, which keeps its scale and destroys what it learned.
    for p in module.parameters(recurse=False):
        mean = float(p.mean()) if p.numel() else 0.0
        std = float(p.std(unbiased=False)) if p.numel() > 1 else abs(mean)
        p.normal_(mean, std)


def randomized_copy(
    model: torch.nn.Module, layers: Sequence[str], random_state: int | None = None
) -> torch.nn.Module:
    """A deep copy of ``model`` with ``layers`` re-initialized; see the protocol."""
    valid = weighted_layers(model)
    layers = check_layer_names(layers, valid)
    clone = copy.deepcopy(model)
    _user_flags(model, clone)
    seeds = layer_seeds(layers, random_state)
    # torch.manual_seed seeds every CUDA device too: fork them all, so that the user's
    # generators are untouched.
    devices = list(range(torch.cuda.device_count())) if torch.cuda.is_available() else []
    with torch.random.fork_rng(devices=devices), torch.no_grad():
        for name in layers:
            torch.manual_seed(seeds[name])
            _reinitialize(clone.get_submodule(name))
    return clone
