"""Splitting a model at one layer into a trunk (input -> layer) and a head (layer -> output).

Three ways, tried in this order by :class:`~sklearn_caf_torch._bound.TorchBoundModel`:

``"fx"``
    torch.fx's symbolic tracer, with the layer kept as one call. Fast and exact; fails on
    Python control flow that reads tensor values or shapes.
``"export"``
    ``torch.export`` on the first real input: the graph that input takes, with guards that
    refuse an input taking another path. Handles shape-dependent control flow and
    assertions; fails on control flow that reads tensor values (``.item()``).
``"hooks"``
    Forward hooks on the real model, as Captum does: the trunk runs the model until the
    layer has run; the head runs the whole model again with the layer's output replaced.
    Always exact, but the head recomputes the trunk at every call.

Every split clones the tensors a later in-place operation would mutate (the cached feature
maps, the context the head reads, the input), so that a ``ReLU(inplace=True)`` after the
layer can neither corrupt a cached value nor write into a leaf that autograd tracks.
"""

from __future__ import annotations

import contextlib
import difflib
import inspect
import io
import logging
import operator
import threading
import warnings
from collections.abc import Callable
from typing import Any

import torch
from torch import fx
from torch.utils import _pytree as pytree

from ._fold import fold_batch_norms


class TraceFailure(Exception):
    """A tracer could not split the model; the message says why (shown in the fallback
    warning). Errors that no other split method could avoid are ``ValueError`` instead."""


class _LayerAsLeaf(fx.Tracer):
    """Traces ``model`` keeping ``layer`` as one call, so its output is a single node."""

    def __init__(self, layer: str | None):
        super().__init__()
        self.layer = layer

    def is_leaf_module(self, m: torch.nn.Module, qualname: str) -> bool:
        return qualname == self.layer or super().is_leaf_module(m, qualname)


def check_layer(model: torch.nn.Module, layer: str) -> None:
    """A ``ValueError`` naming close matches when ``layer`` is not a submodule of ``model``."""
    try:
        model.get_submodule(layer)
    except AttributeError:
        names = [name for name, _ in model.named_modules() if name]
        close = difflib.get_close_matches(layer, names, n=5)
        hint = f" Did you mean {', '.join(map(repr, close))}?" if close else ""
        example = f", e.g. {names[-1]!r}" if names else ""
        raise ValueError(
            f"layer={layer!r} is not a submodule of the model.{hint} Layers are dotted module "
            f"paths as in model.named_modules(){example}."
        ) from None


def _runs_more_than_once(layer: str, count: int) -> ValueError:
    return ValueError(
        f"layer={layer!r} runs {count} times in one forward pass; name a layer that runs "
        f"exactly once (a module reused in several places has no single feature map). "
        f"{CLIP_HINT}"
    )


CLIP_HINT = (
    "A clip model is explained per frame (frame_axis=1) when its per-frame CNN runs once "
    "on all frames of the batch, flattened clip by clip (x.flatten(0, 1) or "
    "x.view(n * T, ...) of an (n, T, ...) input), not once per frame in a Python loop."
)


def _no_dependency(layer: str | None) -> ValueError:
    return ValueError(f"the model's output does not depend on layer={layer!r}.")


# torch.fx's tracer patches torch.nn.Module.__call__ process-wide while it runs: two
# explainers fitted at once in two threads must not trace at the same time.
_TRACE_LOCK = threading.RLock()


@contextlib.contextmanager
def _quiet():
    """Silence what tracers print or log while they try (partial graphs, symbolic-shape
    warnings): their reason for giving up reaches the user in our own warning or error."""
    with _TRACE_LOCK:
        previous = logging.root.manager.disable
        logging.disable(logging.CRITICAL)
        try:
            with contextlib.redirect_stderr(io.StringIO()), warnings.catch_warnings():
                # torch.export's advice to the model's author (an LSTM's flat weights, say);
                # the split is checked against the model's own output anyway.
                warnings.filterwarnings(
                    "ignore", message="The tensor attributes .* were assigned during export"
                )
                yield
        finally:
            logging.disable(previous)


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0] if text else ''}".rstrip(": ")


# -- In-place operations -------------------------------------------------------------------------

_INPLACE_OPERATORS = {
    operator.iadd,
    operator.isub,
    operator.imul,
    operator.itruediv,
    operator.ifloordiv,
    operator.imod,
    operator.ipow,
    operator.imatmul,
    operator.iand,
    operator.ior,
    operator.ixor,
    operator.ilshift,
    operator.irshift,
    operator.setitem,
}


def _inplace_argument(fn: Callable, node: fx.Node) -> bool:
    """``inplace=True`` given to a function that takes it (``F.relu(x, True)`` too)."""
    if node.kwargs.get("inplace"):
        return True
    try:
        params = list(inspect.signature(fn).parameters)
    except (TypeError, ValueError):
        return False
    if "inplace" not in params:
        return False
    position = params.index("inplace")
    return len(node.args) > position and bool(node.args[position])


def _mutates(node: fx.Node, modules: dict[str, torch.nn.Module]) -> bool:
    """Whether ``node`` may write into one of its inputs (conservatively: True if unsure)."""
    if node.op == "call_module":
        return bool(getattr(modules.get(node.target), "inplace", False))
    if node.op == "call_method":
        return node.target.endswith("_") and not node.target.startswith("_")
    if node.op != "call_function":
        return False
    target = node.target
    if target in _INPLACE_OPERATORS:
        return True
    schema = getattr(target, "_schema", None)  # aten operators, as torch.export records them
    if schema is not None:
        return bool(schema.is_mutable)
    name = getattr(target, "__name__", "")
    return (name.endswith("_") and not name.startswith("_")) or _inplace_argument(target, node)


def _graph_mutates(module: fx.GraphModule) -> bool:
    modules = dict(module.named_modules())
    return any(_mutates(node, modules) for node in module.graph.nodes)


def _clone(t: Any) -> Any:
    return t.clone() if isinstance(t, torch.Tensor) else t


# -- Graph splits (fx and export) ----------------------------------------------------------------


class GraphSplit:
    """A trunk and a head cut out of one traced graph; see :func:`split_graph`."""

    def __init__(
        self,
        trunk: fx.GraphModule,
        head: fx.GraphModule,
        method: str,
        out_spec: Any = None,
    ):
        self.method = method
        self._trunk, self._head, self._out_spec = trunk, head, out_spec
        # Clone only where a graph writes in place: the copy is a pass over the feature maps,
        # which costs as much as a small head.
        self._trunk_mutates = _graph_mutates(trunk)
        self._head_mutates = _graph_mutates(head)
        self.channels_last = False

    def folded(self, channels_last: bool) -> GraphSplit | None:
        """This split with its batch norms folded into the convolutions before them (and
        4-D activations in channels-last order if asked); ``None`` when nothing folds."""
        trunk = fold_batch_norms(self._trunk, channels_last) or self._trunk
        head = fold_batch_norms(self._head, channels_last) or self._head
        if trunk is self._trunk and head is self._head:
            return None
        split = GraphSplit(trunk, head, self.method, self._out_spec)
        split.channels_last = channels_last
        return split

    def trunk(self, x: torch.Tensor) -> tuple[torch.Tensor, tuple[torch.Tensor, ...]]:
        if self._trunk_mutates:
            x = x.clone()  # vanilla L2-CAF runs the trunk again on the same input
        if self.channels_last and x.dim() == 4:
            x = x.contiguous(memory_format=torch.channels_last)
        # ``forward`` rather than ``__call__``: a GraphModule's __call__ prints torch.fx's own
        # traceback to stderr before re-raising; the caller reports errors its own way.
        try:
            a, *context = self._trunk.forward(x)
        except AssertionError as exc:
            if self.method != "export" or not str(exc).startswith("Guard failed"):
                raise
            raise ValueError(
                f"X (per-image shape {tuple(x.shape[1:])}) does not fit the graph "
                f"torch.export recorded at fit ({exc}): it has another shape, or takes "
                f"another path through the model; fit the explainer on images like these."
            ) from None
        return a, tuple(context)

    def head(self, a: torch.Tensor, context: tuple, like: torch.Tensor) -> Any:
        if self._head_mutates:
            a, context = a.clone(), tuple(_clone(c) for c in context)
        if self.channels_last and a.dim() == 4:
            a = a.contiguous(memory_format=torch.channels_last)
        out = self._head.forward(a, *context, like)
        if self._out_spec is not None:
            out = pytree.tree_unflatten(list(out), self._out_spec)
        return out


def fx_split(model: torch.nn.Module, layer: str) -> GraphSplit:
    """Split with torch.fx's symbolic tracer; ``TraceFailure`` when it cannot trace."""
    # Optional arguments keep their defaults, so ``if mask is not None:`` is decided now.
    signature = inspect.signature(model.forward)
    concrete = {
        name: p.default
        for i, (name, p) in enumerate(signature.parameters.items())
        if i > 0 and p.default is not inspect.Parameter.empty
    }
    tracer = _LayerAsLeaf(layer)
    try:
        with _quiet():
            graph = tracer.trace(model, concrete_args=concrete or None)
    except Exception as exc:
        raise TraceFailure(_first_line(exc)) from exc
    nodes = list(graph.nodes)
    starts = [n for n in nodes if n.op == "call_module" and n.target == layer]
    if len(starts) != 1:
        if len(starts) > 1:
            raise _runs_more_than_once(layer, len(starts))
        raise TraceFailure(f"layer={layer!r} is not called in the traced graph")
    root = fx.GraphModule(tracer.root, graph)
    trunk, head = _split_or_fail(root, starts[0], layer)
    return GraphSplit(trunk, head, "fx")


def _split_or_fail(root: fx.GraphModule, start: fx.Node, layer: str) -> tuple:
    try:
        return split_graph(root, start, layer)
    except KeyError as exc:  # the head reads the shape of a value it cannot recompute
        raise TraceFailure(f"the head reads the shape of an intermediate value ({exc})") from exc


_SYMBOLIC_SIZE_OPS = ("sym_size", "sym_numel", "sym_stride", "sym_storage_offset")


def export_split(model: torch.nn.Module, layer: str, x: torch.Tensor) -> GraphSplit:
    """Split the graph ``torch.export`` records on ``x``; ``TraceFailure`` when it cannot."""
    from torch.export import Dim

    # Export cannot make a dimension of size 1 dynamic: show it two images.
    example = x if x.shape[0] > 1 else torch.cat([x, x])
    try:
        with _quiet():
            program = torch.export.export(
                model, (example,), dynamic_shapes=({0: Dim("batch")},), strict=False
            )
            root = program.module()
    except Exception as exc:
        raise TraceFailure(_first_line(exc)) from exc
    graph = root.graph
    calls: dict[str, list[fx.Node]] = {}
    for node in graph.nodes:
        for key, (path, _) in (node.meta.get("nn_module_stack") or {}).items():
            if path == layer:
                calls.setdefault(key, []).append(node)
    if len(calls) > 1:
        raise _runs_more_than_once(layer, len(calls))
    region = set(next(iter(calls.values()), ()))
    exits = [n for n in region if any(user not in region for user in n.users)]
    if len(exits) != 1:
        raise TraceFailure(
            f"layer={layer!r} has {len(exits)} outputs in the exported graph; one is needed"
        )
    out_spec = getattr(getattr(graph._codegen, "pytree_info", None), "out_spec", None)
    graph._codegen = fx.graph.CodeGen()  # plain positional calls for the split graphs
    trunk, head = _split_or_fail(root, exits[0], layer)
    return GraphSplit(trunk, head, "export", out_spec)


def split_graph(
    root: fx.GraphModule, start: fx.Node, layer: str | None
) -> tuple[fx.GraphModule, fx.GraphModule]:
    """``(trunk, head)`` graph modules sharing ``root``'s submodules (no copies).

    ``start`` is the node whose value is the layer's output. ``trunk(x)`` returns
    ``(a, *context)``: the layer's output and the values computed before it that the head
    also reads (a skip connection around the layer, say). ``head(a, *context, input_like)``
    returns the model's output; ``input_like`` is any tensor of the input's shape (only its
    shape is read). The model must be in eval mode: ``self.training`` branches are resolved
    while tracing.
    """
    graph = root.graph
    nodes = list(graph.nodes)
    after = {start}
    for node in nodes[nodes.index(start) + 1 :]:
        if any(inp in after for inp in node.all_input_nodes):
            after.add(node)
    out_node = next(n for n in nodes if n.op == "output")
    if out_node not in after:
        raise _no_dependency(layer)
    # Values the head reads from before the layer: per-image ones (they depend on the
    # input) are passed in as context; constants (parameters read in forward()) are
    # recomputed inside the head, so that selecting rows never touches them.
    # Values that only read the input's shape (``x.size(0)`` for a reshape, say) are
    # recomputed in the head from a stand-in input of the right shape, so they follow the
    # head's batch size when rows are selected.
    from_input: set = set()
    shape_only: set = set()
    # So are values made from the shape alone (an LSTM's zero initial state, sized by the
    # batch): as context they would have the trunk's batch on some axis, not the head's.
    for node in nodes:
        if node.op == "placeholder" or any(inp in from_input for inp in node.all_input_nodes):
            from_input.add(node)
            if node.op != "placeholder" and (
                _reads_shape_only(node, shape_only)
                or all(inp in shape_only for inp in node.all_input_nodes if inp in from_input)
            ):
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
    if node.op == "call_function" and getattr(node.target, "__name__", "").startswith(
        _SYMBOLIC_SIZE_OPS
    ):
        return True  # torch.export's aten.sym_size.int and friends
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


# -- Without a graph: the input itself, or hooks on the real model --------------------------------


class InputSplit:
    """``layer=None``: the trunk is the identity, the head the whole model."""

    method = "input"

    def __init__(self, model: torch.nn.Module):
        self.model = model

    def trunk(self, x: torch.Tensor) -> tuple[torch.Tensor, tuple]:
        return x, ()

    def head(self, a: torch.Tensor, context: tuple, like: torch.Tensor) -> Any:
        # The model may write into its input in place (``x.relu_()``); ``a`` is the cached
        # feature map or a leaf that autograd tracks.
        return self.model(a.clone())


class _StopForward(BaseException):
    """Raised by the trunk's hook once the layer has run: the rest is the head's work."""


class HookSplit:
    """Forward hooks on the real model: exact for any model, the trunk recomputed per head.

    The trunk's context is the input itself. Hooks are registered for one call and removed
    in ``finally``; they act only in the thread that registered them, so another thread
    running the same model at the same time is not affected.
    """

    method = "hooks"

    def __init__(self, model: torch.nn.Module, layer: str, reason: str):
        self.model, self.layer, self.reason = model, layer, reason
        self.module = model.get_submodule(layer)

    @contextlib.contextmanager
    def _hook(self, fn: Callable[[Any], Any]):
        owner = threading.get_ident()

        def hook(module, args, output):
            if threading.get_ident() == owner:
                return fn(output)
            return None

        handle = self.module.register_forward_hook(hook)
        try:
            yield
        finally:
            handle.remove()

    def check(self, x: torch.Tensor) -> None:
        """The layer must run exactly once, and the output must depend on it."""
        calls: list[torch.Tensor] = []

        def seen(output):
            calls.append(output)

        with self._hook(seen):
            self.model(x.clone())
        if len(calls) != 1:
            if len(calls) > 1:
                raise _runs_more_than_once(self.layer, len(calls))
            raise ValueError(f"layer={self.layer!r} does not run when the model is called.")
        if not isinstance(calls[0], torch.Tensor):
            raise ValueError(
                f"layer={self.layer!r} returns a {type(calls[0]).__name__}; name a layer that "
                f"returns a tensor of feature maps."
            )
        a = calls[0].detach().clone().requires_grad_(True)
        with torch.enable_grad():
            out = self.head(a, (x,), x)
        if not any(t.requires_grad for t in pytree.tree_leaves(out) if torch.is_tensor(t)):
            raise _no_dependency(self.layer)

    def trunk(self, x: torch.Tensor) -> tuple[torch.Tensor, tuple]:
        found: list[torch.Tensor] = []

        def stop(output):
            found.append(output)
            raise _StopForward

        with self._hook(stop), contextlib.suppress(_StopForward):
            self.model(x.clone())
        return found[0], (x,)

    def head(self, a: torch.Tensor, context: tuple, like: torch.Tensor) -> Any:
        (x,) = context
        # Downstream in-place operations write into the clone, never into ``a``.
        with self._hook(lambda output: a.clone()):
            return self.model(x.clone())
