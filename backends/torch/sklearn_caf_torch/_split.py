"""Splitting a module's traced graph at one layer into a trunk and a head."""

from __future__ import annotations

import difflib

import torch
from torch import fx


class _LayerAsLeaf(fx.Tracer):
    """Traces ``model`` keeping ``layer`` as one call, so its output is a single node."""

    def __init__(self, layer: str | None):
        super().__init__()
        self.layer = layer

    def is_leaf_module(self, m: torch.nn.Module, qualname: str) -> bool:
        return qualname == self.layer or super().is_leaf_module(m, qualname)


def _unknown_layer(model: torch.nn.Module, layer: str) -> ValueError:
    names = [name for name, _ in model.named_modules() if name]
    close = difflib.get_close_matches(layer, names, n=5)
    hint = f" Did you mean {', '.join(map(repr, close))}?" if close else ""
    return ValueError(
        f"layer={layer!r} is not a submodule of the model.{hint} Layers are dotted module "
        f"paths as in model.named_modules(), e.g. {names[-1]!r}."
    )


def split_graph(
    model: torch.nn.Module, layer: str | None
) -> tuple[fx.GraphModule, fx.GraphModule]:
    """``(trunk, head)`` graph modules sharing ``model``'s submodules (no copies).

    ``trunk(x)`` returns ``(a, *context)``: the layer's output and the values computed
    before it that the head also reads (a skip connection around the layer, say).
    ``head(a, *context, input_like)`` returns the model's output; ``input_like`` is any
    tensor of the input's shape (only its shape is read). The model must be in eval mode:
    ``self.training`` branches are resolved while tracing.
    """
    if layer is not None:
        try:
            model.get_submodule(layer)
        except AttributeError:
            raise _unknown_layer(model, layer) from None
    tracer = _LayerAsLeaf(layer)
    try:
        graph = tracer.trace(model)
    except Exception as exc:
        raise ValueError(
            f"the model could not be traced with torch.fx to split it at layer={layer!r} "
            f"({type(exc).__name__}: {exc}). Tracing fails on data-dependent Python control "
            f"flow in forward() and on forward hooks that read their inputs' values; wrap the "
            f"model so that the part from the input to the layer and the part after it are "
            f"plain calls."
        ) from exc
    root = fx.GraphModule(tracer.root, graph)
    nodes = list(graph.nodes)
    if layer is None:
        starts = [n for n in nodes if n.op == "placeholder"]
        if len(starts) != 1:
            raise ValueError(
                f"layer=None filters the model's input, which needs a forward() with one "
                f"input; this one takes {len(starts)}."
            )
    else:
        starts = [n for n in nodes if n.op == "call_module" and n.target == layer]
        if len(starts) != 1:
            raise ValueError(
                f"layer={layer!r} runs {len(starts)} times in one forward pass; name a layer "
                f"that runs exactly once (a module reused in several places has no single "
                f"feature map)."
            )
    start = starts[0]

    after = {start}
    for node in nodes[nodes.index(start) + 1 :]:
        if any(inp in after for inp in node.all_input_nodes):
            after.add(node)
    out_node = next(n for n in nodes if n.op == "output")
    if out_node not in after:
        raise ValueError(f"the model's output does not depend on layer={layer!r}.")
    # Values the head reads from before the layer: per-image ones (they depend on the
    # input) are passed in as context; constants (parameters read in forward()) are
    # recomputed inside the head, so that selecting rows never touches them.
    # Values that only read the input's shape (``x.size(0)`` for a reshape, say) are
    # recomputed in the head from a stand-in input of the right shape, so they follow the
    # head's batch size when rows are selected.
    from_input: set = set()
    shape_only: set = set()
    for node in nodes:
        if node.op == "placeholder" or any(inp in from_input for inp in node.all_input_nodes):
            from_input.add(node)
            if node.op != "placeholder" and _reads_shape_only(node, shape_only):
                shape_only.add(node)
    context = []
    for node in nodes:
        if node in after and node is not start:
            for inp in node.all_input_nodes:
                if inp in after or inp not in from_input or inp in shape_only:
                    continue
                if inp not in context:
                    context.append(inp)

    trunk = fx.Graph()
    env: dict = {}
    for node in nodes:
        if node.op == "output":
            break
        if node not in after or node is start:
            env[node] = trunk.node_copy(node, lambda n: env[n])
    trunk.output((env[start], *(env[n] for n in context)))

    head = fx.Graph()
    env = {start: head.placeholder("features")}
    for i, node in enumerate(context):
        env[node] = head.placeholder(f"context_{i}")
    # The head's last positional argument stands in for the model's input (its shape);
    # further inputs of forward() keep their defaults.
    inputs = [n for n in nodes if n.op == "placeholder"]
    like = head.placeholder("input_like", default_value=None)
    if inputs[0] is not start:
        env[inputs[0]] = like
    for node in inputs[1:]:
        env[node] = head.node_copy(node)
    for node in nodes:
        if node in env or node.op in ("output", "placeholder"):
            continue
        if (node in after) or node not in from_input or node in shape_only:
            env[node] = head.node_copy(node, lambda n: env[n])
    head.node_copy(out_node, lambda n: env[n])
    return _pruned(root, trunk), _pruned(root, head)


_SHAPE_METHODS = {"size", "dim"}
_SHAPE_ATTRS = {"shape", "ndim", "dtype", "device"}


def _reads_shape_only(node: fx.Node, shape_only: set) -> bool:
    """Whether ``node`` depends on the input only through its shape."""
    if node.op == "call_method" and node.target in _SHAPE_METHODS:
        return True
    if node.op == "call_function" and node.target is getattr:
        return node.args[1] in _SHAPE_ATTRS
    if node.op == "call_function" and getattr(node.target, "__module__", "") in (
        "_operator",
        "operator",
    ):
        deps = [n for n in node.all_input_nodes if n.op != "get_attr"]
        return all(n in shape_only for n in deps)
    return False


def _pruned(root: torch.nn.Module, graph: fx.Graph) -> fx.GraphModule:
    module = fx.GraphModule(root, graph)
    module.graph.eliminate_dead_code()
    module.recompile()
    return module
