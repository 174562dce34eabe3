"""Splitting a Keras 3 model at one layer into a trunk and a head, by walking its graph.

A model is flattened into a straight list of operations on numbered values: the nodes of a
Functional model's graph in topological order, the layers of a Sequential model in turn,
and, where the layer path goes through a nested model (``"backbone/conv5_block3_out"``),
that model's own operations inline. The split then only selects operations: nothing is
copied and no Keras model is created, so nothing registers itself in the user's model.
tf-keras-vis and Xplique build a ``keras.Model`` from an inner model's tensors instead,
which fails with "Graph disconnected" for nested models.

A subclassed model records no graph of its ``call``, so a layer inside one (or reached
through one) is split at by intercepting that layer's call instead (:class:`InterceptSplit`):
the trunk runs the model until the layer has run, the head reruns the whole model with the
layer's output replaced.
"""

from __future__ import annotations

import difflib
import itertools
import threading
from collections.abc import Callable, Sequence
from typing import Any

import keras

SEP = "/"


CLIP_HINT = (
    "A clip model is explained per frame (frame_axis=1) when its per-frame CNN runs once "
    "on all frames: inside a TimeDistributed layer (the layer path goes through it, e.g. "
    "'frames/cnn/conv3'), not once per frame in a Python loop."
)


def _is_functional(model: Any) -> bool:
    return hasattr(model, "_nodes_by_depth") and hasattr(model, "_outputs_struct")


def _is_sequential(model: Any) -> bool:
    return isinstance(model, keras.Sequential)


def _single_positional(values: list) -> tuple[tuple, dict]:
    return (values[0],), {}


class Op:
    """One call of a Keras operation: reads ``in_keys``, writes ``out_keys``."""

    __slots__ = ("fill", "in_keys", "operation", "out_keys", "whole")

    def __init__(
        self, operation: Any, fill: Callable, in_keys: list, out_keys: list, whole: bool = False
    ):
        self.operation, self.fill, self.in_keys, self.out_keys = (
            operation,
            fill,
            in_keys,
            out_keys,
        )
        self.whole = whole  # one value holding the whole (possibly nested) output

    def run(self, env: dict) -> None:
        args, kwargs = self.fill([env[k] for k in self.in_keys])
        if "training" in getattr(self.operation, "_call_context_args", ()):
            kwargs["training"] = False  # inference: dropout off, frozen batch statistics
        out = self.operation(*args, **kwargs)
        if self.whole:
            env[self.out_keys[0]] = out
            return
        for key, value in zip(self.out_keys, keras.tree.flatten(out), strict=True):
            env[key] = value


def _node_fill(node: Any) -> Callable:
    tensors = node.input_tensors

    def fill(values: list) -> tuple[tuple, dict]:
        return node.arguments.fill_in({id(t): v for t, v in zip(tensors, values, strict=True)})

    return fill


class _Flattener:
    """Builds the flat list of operations of a model, descending along ``path``."""

    def __init__(self, path: Sequence[str] | None):
        self.path = list(path) if path else None
        self.ops: list[Op] = []
        self.hits: list = []  # output keys of each call of the target layer
        self._keys = itertools.count()

    def key(self) -> int:
        return next(self._keys)

    def _visit(self, operation: Any, fill: Callable, in_keys: list, n_out: int, depth: int):
        """Add one call (expanding it when the path goes through it); its output keys."""
        path = self.path
        on_path = path is not None and depth < len(path) and operation.name == path[depth]
        if on_path and depth < len(path) - 1:
            if isinstance(operation, keras.layers.TimeDistributed):
                return self.expand_frames(operation, in_keys, depth + 1)
            if not isinstance(operation, keras.Model) or not (
                _is_functional(operation) or _is_sequential(operation)
            ):
                raise _NotDescendable(SEP.join(path[: depth + 1]), operation)
            return self.expand(operation, in_keys, depth + 1)
        out_keys = [self.key() for _ in range(n_out)]
        self.ops.append(Op(operation, fill, in_keys, out_keys))
        if on_path:
            self.hits.append(out_keys)
        return out_keys

    def expand_frames(self, wrapper: Any, in_keys: list, depth: int) -> list:
        """A ``TimeDistributed`` layer on the path, as its layer on the flattened frames.

        Keras runs the wrapped layer once per frame (T calls on n rows); here it runs once
        on the n*T frames, clip by clip, like a PyTorch clip model's ``x.flatten(0, 1)``
        (the same values in inference: each frame is computed on its own either way), so
        that the layer inside has one feature map of n*T rows.
        """
        merge, merged, split = _MergeFrames(), self.key(), self.key()
        self.ops.append(Op(merge, _single_positional, in_keys[:1], [merged]))
        (inner,) = self._visit(wrapper.layer, _single_positional, [merged], 1, depth)
        self.ops.append(Op(_SplitFrames(merge), _single_positional, [inner], [split]))
        return [split]

    def expand(self, model: Any, in_keys: list, depth: int = 0) -> list:
        """Output keys of ``model`` applied to the values ``in_keys``."""
        if _is_sequential(model):
            key = in_keys[0]
            for layer in model.layers:
                (key,) = self._visit(layer, _single_positional, [key], 1, depth)
            return [key]
        if not _is_functional(model):
            if self.path is None and depth == 0:  # layer=None: the model as one call
                key = self.key()
                self.ops.append(Op(model, _single_positional, in_keys, [key], whole=True))
                return [key]
            raise _NotDescendable(None, model)
        env = {id(t): k for t, k in zip(keras.tree.flatten(model.inputs), in_keys, strict=True)}
        for level in sorted(model._nodes_by_depth, reverse=True):
            for node in model._nodes_by_depth[level]:
                if not node.operation or node.is_input:
                    continue
                if any(id(t) not in env for t in node.input_tensors):
                    continue  # not computable from the inputs (as Keras skips it)
                outs = self._visit(
                    node.operation,
                    _node_fill(node),
                    [env[id(t)] for t in node.input_tensors],
                    len(node.outputs),
                    depth,
                )
                for t, k in zip(node.outputs, outs, strict=True):
                    env[id(t)] = k
        return [env[id(t)] for t in keras.tree.flatten(model.outputs)]


class _MergeFrames:
    """``(n, T, ...) -> (n * T, ...)``: the frames of every clip, clip by clip."""

    def __init__(self):
        self.frames: int | None = None

    def __call__(self, x: Any) -> Any:
        if x.shape[1] is None:
            raise ValueError(
                "a TimeDistributed layer on the path to the explained layer needs a known "
                "number of frames (axis 1 of its input)."
            )
        self.frames = int(x.shape[1])
        shape = keras.ops.shape(x)
        return keras.ops.reshape(x, (-1, *shape[2:]))


class _SplitFrames:
    """``(n * T, ...) -> (n, T, ...)``, the inverse of a :class:`_MergeFrames`."""

    def __init__(self, merge: _MergeFrames):
        self.merge = merge

    def __call__(self, y: Any) -> Any:
        shape = keras.ops.shape(y)
        return keras.ops.reshape(y, (-1, self.merge.frames, *shape[1:]))


class _NotDescendable(Exception):
    def __init__(self, prefix: str | None, model: Any):
        super().__init__(prefix)
        self.prefix, self.model = prefix, model


def _children(model: Any) -> list:
    """The layers inside ``model``; a ``TimeDistributed`` layer's one is the layer it wraps."""
    if isinstance(model, keras.layers.TimeDistributed):
        return [model.layer]
    return list(getattr(model, "layers", []))


def _has_children(layer: Any) -> bool:
    return isinstance(layer, (keras.Model, keras.layers.TimeDistributed))


def layer_paths(model: Any, prefix: str = "") -> list[str]:
    """Every addressable layer path of ``model`` (nested models' layers with ``/``)."""
    paths = []
    for layer in _children(model):
        path = prefix + layer.name
        paths.append(path)
        if _has_children(layer):
            paths.extend(layer_paths(layer, path + SEP))
    return paths


def _attribute_names(model: Any) -> dict[int, str]:
    """id(layer) -> the attribute a subclassed model holds it in (``self.c2 = Conv2D()``).

    Keras names such a layer itself (``"conv2d_1"``) unless given ``name=``; the attribute is
    the name its user sees in their own code. Functional and Sequential models hold their
    layers in no attribute, so they have none.
    """
    if _is_functional(model) or _is_sequential(model):
        return {}
    names: dict[int, str] = {}
    for key, value in vars(model).items():
        if not key.startswith("_") and isinstance(value, keras.layers.Layer):
            names.setdefault(id(value), key)
    return names


def _child(model: Any, name: str) -> Any:
    """The layer of ``model`` called ``name``: its Keras name, else its attribute name."""
    layers = _children(model)
    for layer in layers:
        if layer.name == name:
            return layer
    by_attribute = {v: k for k, v in _attribute_names(model).items()}
    if name in by_attribute:
        for layer in layers:
            if id(layer) == by_attribute[name]:
                return layer
    return None


def _spatial_type_names() -> tuple:
    names = (
        "Conv1D Conv2D Conv3D Conv1DTranspose Conv2DTranspose Conv3DTranspose DepthwiseConv1D "
        "DepthwiseConv2D SeparableConv1D SeparableConv2D MaxPooling1D MaxPooling2D "
        "MaxPooling3D AveragePooling1D AveragePooling2D AveragePooling3D"
    ).split()
    return tuple(getattr(keras.layers, n) for n in names if hasattr(keras.layers, n))


def _gives_feature_maps(layer: Any) -> bool:
    """Whether ``layer`` outputs feature maps (n, ..., channels), the layers one explains."""
    if isinstance(layer, keras.Model):
        return False
    try:  # known for a layer of a Functional model's graph
        return len(layer.output.shape) >= 3
    except Exception:  # a layer of a subclassed model: no recorded output; judge by type
        return isinstance(layer, _spatial_type_names())


def explainable_paths(model: Any, prefix: str = "") -> list[str]:
    """Paths of the layers that give feature maps, spelled as a user would: a layer of a
    subclassed model by the attribute that holds it, where there is one."""
    aliases = _attribute_names(model)
    paths = []
    for layer in _children(model):
        path = prefix + aliases.get(id(layer), layer.name)
        if _has_children(layer):
            paths.extend(explainable_paths(layer, path + SEP))
        elif _gives_feature_maps(layer):
            paths.append(path)
    return paths


def _unknown_layer(model: Any, layer: str) -> ValueError:
    # Suggest the layers that can be explained (feature maps), not dense layers that
    # merely have a similar name; every name is a fallback for a model without any.
    names = explainable_paths(model) or layer_paths(model)
    close = difflib.get_close_matches(layer, names, n=5, cutoff=0.5)
    hint = f" Did you mean {', '.join(map(repr, close))}?" if close else ""
    shown = ", ".join(map(repr, names[-8:]))
    more = f" (last {len(names[-8:])} of {len(names)})" if len(names) > 8 else ""
    listing = f" Layers that give feature maps{more}: {shown}." if names else ""
    return ValueError(
        f"layer={layer!r} is not a layer of the model.{hint} Layers are names as in "
        f"model.layers (or, in a subclassed model, the attribute that holds the layer), "
        f"with '/' to enter a nested model (\"backbone/conv5_block3_out\").{listing}"
    )


def canonical_path(model: Any, layer: str) -> str:
    """``layer`` with every attribute name replaced by the layer's Keras name."""
    current, names = model, []
    for name in layer.split(SEP):
        found = _child(current, name)
        if found is None:
            raise _unknown_layer(model, layer)
        names.append(found.name)
        current = found
    return SEP.join(names)


def resolve_layer(model: Any, layer: str) -> Any:
    """The layer object at path ``layer``; ValueError naming it when there is none."""
    current = model
    for name in layer.split(SEP):
        current = _child(current, name)
        if current is None:
            raise _unknown_layer(model, layer)
    return current


def make_split(model: Any, layer: str | None) -> Split | InterceptSplit:
    """A :class:`Split` by the model's graph where Keras records one along ``layer``'s
    path, else an :class:`InterceptSplit` (subclassed models)."""
    path = None if layer is None else canonical_path(model, layer)
    try:
        return Split(model, path)
    except _NotDescendable:
        return InterceptSplit(model, path, spelled=layer)


class Split:
    """The operations of the trunk and the head, and the values that flow between them.

    Raises ``_NotDescendable`` where ``layer``'s path goes through a model whose graph
    Keras does not record (a subclassed model): :func:`make_split` then intercepts.
    """

    def __init__(self, model: Any, layer: str | None):
        self.method = "graph" if layer is not None else "input"
        if layer is not None:
            resolve_layer(model, layer)
        flat = _Flattener(None if layer is None else layer.split(SEP))
        self.input_key = flat.key()
        outputs = flat.expand(model, [self.input_key])
        if len(getattr(model, "inputs", None) or [None]) != 1:
            raise ValueError("the model must take a single input tensor to be explained.")
        if layer is None:
            start = self.input_key
        else:
            if len(flat.hits) != 1:
                raise ValueError(
                    f"layer={layer!r} runs {len(flat.hits)} times in one forward pass; name a "
                    f"layer that runs exactly once (a layer reused in several places has no "
                    f"single feature map). {CLIP_HINT}"
                )
            (hit,) = flat.hits
            if len(hit) != 1:
                raise ValueError(
                    f"layer={layer!r} returns {len(hit)} tensors; name a layer with one "
                    f"output (a feature map)."
                )
            start = hit[0]
        self.output_keys = outputs
        self.output_struct = model._outputs_struct if _is_functional(model) else None

        after, head = {start}, []
        for op in flat.ops:
            if any(k in after for k in op.in_keys):
                head.append(op)
                after.update(op.out_keys)
        if not all(k in after for k in outputs):
            raise ValueError(f"the model's output does not depend on layer={layer!r}.")
        # Values the head reads from before the layer (a skip connection around it): the
        # trunk returns them as per-sample context, so that the head recomputes nothing.
        context: list = []
        for op in head:
            for k in op.in_keys:
                if k not in after and k not in context:
                    context.append(k)
        self.start_key, self.context_keys = start, context
        in_head = {id(op) for op in head}
        trunk_ops = [op for op in flat.ops if id(op) not in in_head]
        self.trunk_ops = _needed(trunk_ops, {start, *context})
        self.head_ops = _needed(head, set(outputs))

    def trunk(self, x: Any) -> tuple[Any, tuple]:
        env = {self.input_key: x}
        for op in self.trunk_ops:
            op.run(env)
        return env[self.start_key], tuple(env[k] for k in self.context_keys)

    def head(self, a: Any, context: tuple) -> Any:
        env = {self.start_key: a, **dict(zip(self.context_keys, context, strict=True))}
        for op in self.head_ops:
            op.run(env)
        values = [env[k] for k in self.output_keys]
        if self.output_struct is not None:
            return keras.tree.pack_sequence_as(self.output_struct, values)
        return values[0]


def _needed(ops: list[Op], wanted: set) -> list[Op]:
    """The operations of ``ops`` that the values ``wanted`` depend on, in order."""
    needed, kept = set(wanted), []
    for op in reversed(ops):
        if any(k in needed for k in op.out_keys):
            kept.append(op)
            needed.update(op.in_keys)
    return kept[::-1]


class _LayerRan(Exception):
    """Ends the trunk's forward pass once the intercepted layer has run (the rest of the
    model is not needed). Keras may re-raise it with a longer message (same class)."""


class InterceptSplit:
    """Trunk and head of a model whose graph Keras does not record, by intercepting
    ``layer``'s ``call`` while the trunk or the head runs.

    The trunk runs the model on the images and stops as soon as the layer has run; its
    context is the images themselves. The head reruns the whole model from the images with
    the layer's output replaced by the given feature maps, so it recomputes the trunk: the
    fast L2-CAF variant costs as much as the vanilla one on such a model (and Grad-CAM one
    more trunk pass). The layer must run exactly once per forward pass.

    The interception is an instance attribute ``call`` on the layer object (Keras's
    ``__call__`` looks ``self.call`` up at every call), set only while trunk or head calls
    run and removed after the last: between calls, and after an error, the layer is
    exactly as it was (no attribute, wrapper or variable left; Keras's
    attribute tracking is bypassed, so nothing is tracked either). Each thread sees only its
    own interception (see :class:`_Patched`), so threads may share the model. Under ``tf.function``
    the interception happens at trace time, which is when Python code runs, so the
    compiled graph holds the substituted call and no interception is needed when it runs.
    """

    method = "intercept"

    def __init__(self, model: Any, layer: str, spelled: str | None = None):
        self.model, self.path = model, spelled or layer  # errors name it as the user did
        self.target = resolve_layer(model, layer)
        self._checked = False

    def _intercept(self, replacement: Callable) -> _Patched:
        return _Patched(self.target, replacement)

    def _run_model(self, x: Any) -> Any:
        kwargs = {}
        if "training" in getattr(self.model, "_call_context_args", ()):
            kwargs["training"] = False  # inference: dropout off, frozen batch statistics
        return self.model(x, **kwargs)

    def trunk(self, x: Any) -> tuple[Any, tuple]:
        captured: list = []
        # The first pass (in fit) runs the whole model, to check that the layer runs
        # exactly once; later passes stop right after the layer.
        stop = self._checked

        def capture(*args: Any, **kwargs: Any) -> Any:
            out = original(*args, **kwargs)
            captured.append(out)
            if stop:
                raise _LayerRan("trunk done")
            return out

        with self._intercept(capture) as original:
            try:
                self._run_model(x)
            except _LayerRan:
                pass
        if len(captured) != 1:
            raise ValueError(
                f"layer={self.path!r} runs {len(captured)} times in one forward pass of the "
                f"model; name a layer that runs exactly once (a layer reused in several "
                f"places has no single feature map). {CLIP_HINT}"
            )
        (a,) = captured
        if not keras.ops.is_tensor(a):
            raise ValueError(
                f"layer={self.path!r} returns a {type(a).__name__}; name a layer with one "
                f"output (a feature map)."
            )
        self._checked = True
        return a, (x,)

    def head(self, a: Any, context: tuple) -> Any:
        (x,) = context
        calls = []

        def substitute(*args: Any, **kwargs: Any) -> Any:
            calls.append(None)
            return a

        with self._intercept(substitute):
            out = self._run_model(x)
        if len(calls) != 1:
            raise ValueError(
                f"layer={self.path!r} runs {len(calls)} times in one forward pass of the "
                f"model; name a layer that runs exactly once."
            )
        return out


class _Patched:
    """``layer.call`` replaced by ``replacement`` inside the block, for the current thread.

    Several threads may intercept one layer at once (explainers sharing a model in a thread
    pool): the first one in puts a :class:`_Dispatcher` in the layer's ``__dict__``, which
    calls each thread's own replacement (and the layer's own ``call`` for threads that
    intercept nothing), and the last one out removes it. On exit the layer's ``__dict__`` is
    as before, also when an error was raised.
    """

    def __init__(self, layer: Any, replacement: Callable):
        self.layer, self.replacement = layer, replacement

    def __enter__(self) -> Callable:
        """Returns the layer's own ``call`` (for a replacement that wraps it)."""
        dispatcher = _Dispatcher.acquire(self.layer)
        dispatcher.push(self.replacement)
        self.dispatcher = dispatcher
        return dispatcher.original

    def __exit__(self, *exc_info: Any) -> None:
        self.dispatcher.pop()
        _Dispatcher.release(self.layer)


class _Dispatcher:
    """The ``call`` of an intercepted layer: the innermost replacement of the calling thread,
    or the layer's own ``call``."""

    _MISSING = object()
    _lock = threading.Lock()
    _installed: dict[int, list] = {}  # id(layer) -> [dispatcher, number of interceptions]

    def __init__(self, layer: Any):
        self.saved = layer.__dict__.get("call", self._MISSING)
        self.original = layer.call
        self.local = threading.local()

    @classmethod
    def acquire(cls, layer: Any) -> _Dispatcher:
        with cls._lock:
            entry = cls._installed.get(id(layer))
            if entry is None:
                entry = cls._installed[id(layer)] = [cls(layer), 0]
                # object.__setattr__: Keras's (and TensorFlow's AutoTrackable) __setattr__
                # would track the attribute; this writes the instance dict only.
                object.__setattr__(layer, "call", entry[0])
            entry[1] += 1
            return entry[0]

    @classmethod
    def release(cls, layer: Any) -> None:
        with cls._lock:
            entry = cls._installed[id(layer)]
            entry[1] -= 1
            if entry[1] == 0:
                del cls._installed[id(layer)]
                if entry[0].saved is cls._MISSING:
                    object.__delattr__(layer, "call")
                else:
                    object.__setattr__(layer, "call", entry[0].saved)

    def push(self, replacement: Callable) -> None:
        stack = self.local.__dict__.setdefault("stack", [])
        stack.append(replacement)

    def pop(self) -> None:
        self.local.stack.pop()

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        stack = self.local.__dict__.get("stack")
        if stack:
            return stack[-1](*args, **kwargs)
        return self.original(*args, **kwargs)
