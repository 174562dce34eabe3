"""The backend protocol: what a deep-learning framework provides to sklearn-caf.

The math of every method lives in the core and is written once against two small
protocols: :class:`Backend` (recognises a framework's models and binds one at a layer)
and :class:`BoundModel` (a model split at that layer, with the handful of tensor ops
the methods need). A backend is found through the entry-point group
``sklearn_caf.backends``; :func:`get_backend` picks one for a model without importing
any framework just to look.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from importlib.metadata import entry_points
from typing import Any, Protocol, runtime_checkable

import numpy as np

__all__ = [
    "Backend",
    "BoundModel",
    "available_backends",
    "get_backend",
    "register_backend",
    "select_output",
]

ENTRY_POINT_GROUP = "sklearn_caf.backends"

# Backends registered in this process (name -> class or instance); entry points fill the rest.
_REGISTERED: dict[str, Any] = {}


@runtime_checkable
class Backend(Protocol):
    """A deep-learning framework, seen from sklearn-caf.

    Attributes
    ----------
    name : str
        Short name used by ``backend=`` and shown in errors (``"torch"``).
    framework : str
        The top-level module of the framework (``"torch"``). The registry only asks a
        backend to look at a model when this module is already imported.
    """

    name: str
    framework: str

    def accepts(self, model: Any) -> bool:
        """Whether ``model`` is a model of this framework. Never imports anything."""

    def bind(self, model: Any, *, layer: str | None, output: Any, device: str) -> BoundModel:
        """Split ``model`` at ``layer`` (``None``: at the input) and return a bound model.

        Raises ``ValueError`` naming ``layer`` when it does not exist or cannot be split at.
        """


@runtime_checkable
class BoundModel(Protocol):
    """A model split into a trunk (input -> layer) and a head (layer -> output).

    Used as a context manager: inside ``with bound:`` the model is in inference mode
    with its parameters frozen; on exit every flag is restored exactly, also when an
    error was raised. Tensors are the framework's own, on ``bound.device``.

    Attributes
    ----------
    channel_axis : int
        Axis of the channels in the layer's feature maps (1 for NCHW, -1 for NHWC).
    input_channel_axis : int
        Axis of the channels in the model's input images.
    device : object
        The device the computations run on.
    """

    channel_axis: int
    input_channel_axis: int
    device: Any

    def __enter__(self) -> BoundModel: ...

    def __exit__(self, *exc_info: Any) -> None: ...

    def asarray(self, x: Any) -> Any:
        """A float32 tensor on the device from a NumPy array or a framework tensor."""

    def to_numpy(self, t: Any) -> np.ndarray:
        """A NumPy copy of a tensor (a host transfer: used only outside inner loops)."""

    def trunk(self, x: Any) -> tuple[Any, tuple[Any, ...]]:
        """Feature maps ``a`` at the layer, plus the per-sample values the head also reads."""

    def head(self, a: Any, context: tuple[Any, ...]) -> Any:
        """The model's output, shape (n, d), from (possibly filtered) feature maps."""

    def value_and_grad(self, fn: Callable[[Any], Any], x: Any) -> tuple[Any, Any]:
        """``fn(x)`` (per-sample values, shape (n,)) and the gradient of their sum wrt ``x``."""

    # Optional: ``compile(fn)``. ``fn`` is a pure function of tensors (and Python numbers)
    # that the core calls many times with the same structure: L2-CAF's Adam iterations
    # between two convergence checks, Grad-CAM's map. The backend returns a callable
    # computing the same, compiled where it can (``tf.function``: traced once, not per
    # batch size). The core caches the compiled function per explainer and bound model. A
    # backend without it runs ``fn`` as is.
    #
    # Optional: ``fori_loop(n, body, init)``, ``jax.lax.fori_loop``'s semantics:
    # ``body(i, carry) -> carry`` for ``i = 0 .. n - 1``, ``carry`` a tuple of tensors whose
    # shapes do not change, ``n`` an int (or a scalar tensor inside a compiled function).
    # ``i`` is an integer scalar (a Python int, or an int tensor when compiled) meant for
    # indexing tensors (``step_sizes[i]``), not for arithmetic with float tensors.
    # A compiling backend makes it one loop of the compiled function (``tf.while_loop``),
    # so that a whole stretch of Adam iterations is one call; without it the core loops in
    # Python.

    # Optional: ``repeat(x, repeats)``, ``np.repeat(x, repeats, axis=0)`` for a Python int
    # ``repeats`` (also inside a compiled function, where the number of rows may be
    # unknown). L2-CAF on clip models (``frame_axis``) needs it to give each frame of a
    # clip its own filter; a backend without it cannot run that.

    # Tensor ops the core's math is written with (NumPy semantics, ``axis`` keywords).
    def take(self, x: Any, rows: np.ndarray) -> Any:
        """Rows ``rows`` (an integer NumPy array) of ``x`` along axis 0."""

    def sum(self, x: Any, axis: int | tuple[int, ...], keepdims: bool = False) -> Any: ...

    def mean(self, x: Any, axis: int | tuple[int, ...], keepdims: bool = False) -> Any: ...

    def sqrt(self, x: Any) -> Any: ...

    def abs(self, x: Any) -> Any: ...

    def relu(self, x: Any) -> Any: ...

    def expand_dims(self, x: Any, axis: int) -> Any: ...

    def zeros_like(self, x: Any) -> Any: ...


def select_output(out: Any, output: Any, *, is_tensor: Callable[[Any], bool]) -> Any:
    """The tensor that ``output=`` picks from a model's raw output, for backends.

    Every explainer's ``output`` parameter means the same on every backend: ``None`` (the
    model returns a tensor), an index into a tuple or list, a key into a dict, or a
    callable applied to whatever the model returns.

    Parameters
    ----------
    out : object
        What the model (or its head) returned.
    output : None, int, str or callable
        The explainer's ``output`` parameter.
    is_tensor : callable
        Whether an object is a tensor of the backend's framework.

    Returns
    -------
    tensor
        The selected tensor, unchanged.

    Examples
    --------
    >>> import numpy as np
    >>> from sklearn_caf.backend import select_output
    >>> raw = {"logits": np.zeros((2, 3)), "features": np.ones((2, 5))}
    >>> select_output(raw, "logits", is_tensor=lambda t: isinstance(t, np.ndarray)).shape
    (2, 3)
    """
    if callable(output):
        out = output(out)
    elif output is not None:
        try:
            out = out[output]
        except (KeyError, IndexError, TypeError) as exc:
            keys = list(out.keys()) if isinstance(out, dict) else f"indices 0..{len(out) - 1}"
            raise ValueError(f"output={output!r} is not in the model's output ({keys}).") from exc
    if not is_tensor(out):
        hint = f" keys {list(out)}" if isinstance(out, dict) else ""
        raise ValueError(
            f"the model returns a {type(out).__name__}{hint}; pick the tensor to explain with "
            f"output= (an index, a key or a callable)."
        )
    return out


def register_backend(name: str, backend: Any) -> None:
    """Make ``backend`` (a class or an instance) available under ``name`` in this process.

    Third-party backends normally register through the entry-point group
    ``sklearn_caf.backends`` instead; this is for backends defined at run time.
    """
    _instantiate(backend)  # fails now, naming what is missing, rather than at first use
    _REGISTERED[name] = backend


def _entry_points() -> dict[str, Any]:
    return {ep.name: ep for ep in entry_points(group=ENTRY_POINT_GROUP)}


def available_backends() -> list[str]:
    """Names of the backends installed (entry points) or registered in this process."""
    return sorted(set(_entry_points()) | set(_REGISTERED))


def _instantiate(obj: Any) -> Backend:
    backend = obj() if isinstance(obj, type) else obj
    missing = [
        attr for attr in ("name", "framework", "accepts", "bind") if not hasattr(backend, attr)
    ]
    if missing:
        raise TypeError(
            f"backend must implement the sklearn_caf.backend.Backend protocol; "
            f"{backend!r} lacks {', '.join(missing)}."
        )
    return backend


def _resolve(name: str) -> Any:
    """The registered object (class or instance) for ``name``, loading its entry point."""
    if name in _REGISTERED:
        return _REGISTERED[name]
    eps = _entry_points()
    if name not in eps:
        raise ValueError(
            f"backend={name!r} is not installed; installed backends: "
            f"{available_backends() or 'none'}. Install one from a checkout (the backends "
            f"are not on PyPI yet): `pip install -e ./backends/torch`."
        )
    return eps[name].load()


def get_backend(model: Any, backend: str | Backend | type | None = None) -> Backend:
    """The backend for ``model``: the one named by ``backend``, else the first that accepts it.

    Detection never imports a framework: a backend is asked only when its framework
    module is already in ``sys.modules`` (a model of it could not exist otherwise). This is
    why a backend's entry point must be importable without importing its framework.

    Parameters
    ----------
    model : object
        The user's model.
    backend : str, Backend class or instance, default=None
        Force a backend. ``None`` detects it from ``model``'s type.

    Returns
    -------
    Backend
        An instance.

    Examples
    --------
    >>> from sklearn_caf.backend import get_backend
    >>> get_backend(object())  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    TypeError: model must be a model of an installed backend's framework; ...
    """
    if backend is not None:
        chosen = _instantiate(_resolve(backend) if isinstance(backend, str) else backend)
        if not chosen.accepts(model):
            raise TypeError(
                f"model of type {type(model).__qualname__} is not a {chosen.name} model "
                f"(backend={chosen.name!r})."
            )
        return chosen
    names = available_backends()
    for name in names:
        obj = _resolve(name)
        if getattr(obj, "framework", None) not in sys.modules:
            continue
        candidate = _instantiate(obj)
        if candidate.accepts(model):
            return candidate
    raise TypeError(
        f"model must be a model of an installed backend's framework; got an object of type "
        f"{type(model).__module__}.{type(model).__qualname__}. Installed backends: "
        f"{', '.join(names) if names else 'none; in a checkout: pip install -e ./backends/torch'}."
    )
