"""The backend protocol: what a deep-learning framework provides to sklearn-caf.

The math of every method lives in the core and is written once against two small
protocols: :class:`Backend` (recognises a framework's models and binds one at a layer)
and :class:`BoundModel` (a model split at that layer, with the handful of tensor ops
the methods need). A backend is found through the entry-point group
``sklearn_caf.backends``; :func:`get_backend` picks one for a model without importing
any framework just to look.
"""

from __future__ import annotations

import difflib
import sys
import zlib
from collections.abc import Callable, Sequence
from importlib.metadata import entry_points
from typing import Any, Protocol, runtime_checkable

import numpy as np

__all__ = [
    "Backend",
    "BoundModel",
    "available_backends",
    "check_layer_names",
    "get_backend",
    "layer_seeds",
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
        """Whether ``model`` is a model of this framework. Never imports anything.

        Parameters
        ----------
        model : object
            Any object; the answer is ``False`` for objects of other frameworks.

        Returns
        -------
        accepted : bool
            Whether this backend can run ``model``.
        """

    def bind(self, model: Any, *, layer: str | None, output: Any, device: str) -> BoundModel:
        """Split ``model`` at ``layer`` (``None``: at the input) and return a bound model.

        Raises ``ValueError`` naming ``layer`` when it does not exist or cannot be split at.

        Parameters
        ----------
        model : object
            A model this backend :meth:`accepts`. Never modified.
        layer : str or None
            Where to split: a layer's name or path in the framework's own naming;
            ``None`` splits at the input (the trunk is the identity).
        output : None, int, str or callable
            Which model output the head returns when the model returns several: a tuple
            index, a dict key, or a callable mapping the output to an ``(n, d)`` tensor.
        device : str
            Where to compute (``"auto"``, ``"cpu"``, ``"cuda:1"``...).

        Returns
        -------
        bound : BoundModel
            The model split into a trunk and a head, with the tensor operations.
        """

    # Optional, for the model-randomization sanity check (sklearn_caf.sanity); a backend
    # without them explains as usual, and model_randomization says what is missing. When a
    # backend has them, check_backend checks them.
    #
    # ``weighted_layers(model) -> list[str]``: the names (as ``bind``'s ``layer`` spells
    # them) of the layers that own learnable weights (convolutions, dense/linear, batch
    # norm...; not containers), in forward order.
    #
    # ``randomized_copy(model, layers, random_state=None) -> model``: a copy of ``model``
    # (same framework, device, train/eval mode and trainable flags; never ``model``
    # itself, and ``model`` unchanged) whose ``layers`` (names from ``weighted_layers``)
    # are re-initialized by their own initializers, each layer seeded by
    # ``layer_seeds(layers, random_state)`` so that a layer gets the same weights in every
    # copy of one seed. Unknown names: ``ValueError`` from ``check_layer_names``. An empty
    # ``layers`` gives an exact copy.


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
        """A float32 tensor on the device from a NumPy array or a framework tensor.

        Parameters
        ----------
        x : array-like or tensor
            The values to convert.

        Returns
        -------
        tensor : tensor
            float32, on the bound model's device.
        """

    def to_numpy(self, t: Any) -> np.ndarray:
        """A NumPy copy of a tensor (a host transfer: used only outside inner loops).

        Parameters
        ----------
        t : tensor
            A tensor of the framework, on any device.

        Returns
        -------
        array : ndarray
            A copy on the host.
        """

    def trunk(self, x: Any) -> tuple[Any, tuple[Any, ...]]:
        """Feature maps ``a`` at the layer, plus the per-sample values the head also reads.

        Parameters
        ----------
        x : tensor of shape (n, ...)
            Inputs, as returned by :meth:`asarray`.

        Returns
        -------
        a : tensor
            The layer's feature maps, channels on :attr:`channel_axis`.
        context : tuple of tensors
            Values computed before the layer that the head also reads (a skip connection
            around the layer); each has the batch on axis 0.
        """

    def head(self, a: Any, context: tuple[Any, ...]) -> Any:
        """The model's output, shape (n, d), from (possibly filtered) feature maps.

        Parameters
        ----------
        a : tensor
            Feature maps of the layer, possibly multiplied by a filter.
        context : tuple of tensors
            The context :meth:`trunk` returned for the same images (rows picked with
            :meth:`take` when only some images are run).

        Returns
        -------
        output : tensor of shape (n, d)
            The model's output (logits or embedding).
        """

    def value_and_grad(self, fn: Callable[[Any], Any], x: Any) -> tuple[Any, Any]:
        """``fn(x)`` (per-sample values, shape (n,)) and the gradient of their sum wrt ``x``.

        Parameters
        ----------
        fn : callable
            A function of one tensor returning per-sample values of shape ``(n,)``.
        x : tensor
            Where to evaluate ``fn`` and its gradient.

        Returns
        -------
        value : tensor of shape (n,)
            ``fn(x)``.
        grad : tensor
            The gradient of ``fn(x).sum()`` with respect to ``x``, shaped like ``x``.
        """

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

    # Optional: ``reshape(x, shape)``, ``split(x, indices, axis)`` and ``concat(xs, axis)``,
    # NumPy's ``reshape``, ``split`` (a list of tensors) and ``concatenate``, also inside a
    # compiled function (``shape`` may hold -1 for the batch). Explainers need them on
    # layers that output tokens (a vision transformer's ``(n, 1 + h * w, channels)``),
    # which they read as an ``(n, h, w, channels)`` grid; a backend without them cannot
    # explain such layers.

    # Tensor ops the core's math is written with (NumPy semantics, ``axis`` keywords).
    def take(self, x: Any, rows: np.ndarray) -> Any:
        """Rows ``rows`` (an integer NumPy array) of ``x`` along axis 0.

        Parameters
        ----------
        x : tensor
            A batch, images on axis 0.
        rows : ndarray of int
            The rows to keep, in order.

        Returns
        -------
        subset : tensor
            ``x[rows]``.
        """

    def sum(self, x: Any, axis: int | tuple[int, ...], keepdims: bool = False) -> Any: ...

    def mean(self, x: Any, axis: int | tuple[int, ...], keepdims: bool = False) -> Any: ...

    def max(self, x: Any, axis: int | tuple[int, ...], keepdims: bool = False) -> Any: ...

    def sqrt(self, x: Any) -> Any: ...

    def exp(self, x: Any) -> Any: ...

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


def check_layer_names(layers: Sequence[str], valid: Sequence[str]) -> list[str]:
    """``layers`` as a list, checked against ``valid``: what backends' ``randomized_copy``
    and :func:`sklearn_caf.sanity.model_randomization` accept.

    Parameters
    ----------
    layers : sequence of str
        Layer names asked for.
    valid : sequence of str
        The model's weighted layers (``backend.weighted_layers(model)``).

    Returns
    -------
    list of str
        ``layers`` in the order given.

    Raises
    ------
    ValueError
        Naming the unknown or repeated names, with close matches and the valid names.

    Examples
    --------
    >>> from sklearn_caf.backend import check_layer_names
    >>> check_layer_names(("fc",), ["conv1", "fc"])
    ['fc']
    >>> check_layer_names(["fc2"], ["conv1", "fc"])  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    ValueError: layers has names that are not weighted layers of the model: 'fc2'. ...
    """
    if isinstance(layers, str) or not all(isinstance(name, str) for name in layers):
        raise TypeError(f"layers must be a sequence of layer names (str); got {layers!r}.")
    layers = list(layers)
    unknown = [name for name in layers if name not in set(valid)]
    if unknown:
        close = sorted({c for u in unknown for c in difflib.get_close_matches(u, valid, n=3)})
        hint = f" Did you mean {', '.join(map(repr, close))}?" if close else ""
        raise ValueError(
            f"layers has names that are not weighted layers of the model: "
            f"{', '.join(map(repr, unknown))}.{hint} The weighted layers, in forward order: "
            f"{', '.join(map(repr, valid)) or 'none'}."
        )
    repeated = sorted({name for name in layers if layers.count(name) > 1})
    if repeated:
        raise ValueError(f"layers names {', '.join(map(repr, repeated))} more than once.")
    return layers


def layer_seeds(layers: Sequence[str], random_state: int | None) -> dict[str, int]:
    """One seed per layer name, for backends' ``randomized_copy``.

    A layer's seed depends on ``random_state`` and its name only, so a layer gets the same
    random weights whichever other layers are randomized with it (the cascading and
    independent randomizations of one seed agree layer by layer).

    Parameters
    ----------
    layers : sequence of str
        Layer names.
    random_state : int or None
        ``None`` draws fresh seeds from the operating system.

    Returns
    -------
    dict of str to int
        Seeds in [0, 2**31).

    Examples
    --------
    >>> from sklearn_caf.backend import layer_seeds
    >>> layer_seeds(["conv1", "fc"], 0)["fc"] == layer_seeds(["fc"], 0)["fc"]
    True
    """
    if random_state is None:
        entropy = np.random.SeedSequence().entropy
    elif (
        isinstance(random_state, (int, np.integer))
        and not isinstance(random_state, bool)
        and random_state >= 0
    ):
        entropy = int(random_state)
    else:
        raise ValueError(f"random_state must be a non-negative int or None; got {random_state!r}.")
    return {
        name: int(
            np.random.SeedSequence([entropy, zlib.crc32(name.encode())]).generate_state(1)[0]
            % 2**31
        )
        for name in layers
    }


def register_backend(name: str, backend: Any) -> None:
    """Make ``backend`` (a class or an instance) available under ``name`` in this process.

    Third-party backends normally register through the entry-point group
    ``sklearn_caf.backends`` instead; this is for backends defined at run time.

    Parameters
    ----------
    name : str
        The name that ``backend=`` and :func:`available_backends` will know it by.
    backend : type or object
        A class implementing the :class:`Backend` protocol, or an instance of one. It is
        instantiated once now, so that a missing method fails here, not at first use.
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


def fori_loop(bound: Any, n: Any, body: Callable[[Any, tuple], tuple], init: tuple) -> tuple:
    """``bound.fori_loop(n, body, init)`` where the backend offers it (optional), else a
    Python loop: ``body(i, carry) -> carry`` for ``i = 0 .. n - 1``."""
    loop = getattr(bound, "fori_loop", None)
    if loop is not None:
        return tuple(loop(n, body, tuple(init)))
    carry = tuple(init)
    for i in range(int(n)):
        carry = tuple(body(i, carry))
    return carry


def compiled(bound: Any, fn: Callable[..., Any]) -> Callable[..., Any]:
    """``bound.compile(fn)`` where the backend offers it (optional), else ``fn`` itself."""
    compile_ = getattr(bound, "compile", None)
    return fn if compile_ is None else compile_(fn)
