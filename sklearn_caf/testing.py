"""Conformance kit for backends: :func:`check_backend`.

Every backend, ours and third parties' alike, must pass :func:`check_backend` before the
explainers can rely on it. The kit is framework-free: it drives the backend only through
the :class:`~sklearn_caf.backend.Backend` and :class:`~sklearn_caf.backend.BoundModel`
protocols and compares the results with NumPy, so it never imports a framework itself.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

from .backend import Backend, BoundModel

__all__ = ["check_backend"]

# Members every bound model must have: the protocol's annotated attributes and methods.
_BOUND_ATTRIBUTES = ("channel_axis", "input_channel_axis", "device")
_BOUND_METHODS = (
    "__enter__",
    "__exit__",
    "asarray",
    "to_numpy",
    "trunk",
    "head",
    "value_and_grad",
    "take",
    "sum",
    "mean",
    "max",
    "sqrt",
    "exp",
    "abs",
    "relu",
    "expand_dims",
    "zeros_like",
)

# A layer name no model has, for the unknown-layer check.
_UNKNOWN_LAYER = "sklearn_caf_no_such_layer"


class _CheckError(Exception):
    """Raised inside the context manager to check that it restores the model on errors."""


class _Checker:
    def __init__(self, backend: Any):
        self.label = f"check_backend({type(backend).__name__})"

    def fail(self, message: str) -> None:
        error = AssertionError(f"{self.label}: {message}")
        error._sklearn_caf_check = True  # tells a failed check from the backend's own asserts
        raise error

    def require(self, condition: Any, message: str) -> None:
        if not condition:
            self.fail(message)

    def close(
        self, actual: Any, expected: Any, what: str, *, rtol: float = 1e-5, atol: float = 1e-6
    ) -> None:
        actual = np.asarray(actual)
        expected = np.asarray(expected)
        if actual.shape != expected.shape:
            self.fail(f"{what}: shape {actual.shape}, expected {expected.shape}.")
        scale = max(float(np.abs(expected).max(initial=0.0)), 1.0)
        if not np.allclose(actual, expected, rtol=rtol, atol=atol * scale):
            err = float(np.abs(actual.astype(np.float64) - expected).max())
            self.fail(f"{what}: differs from the expected values (max abs error {err:.3g}).")

    def numpy(self, bound: Any, t: Any, what: str) -> np.ndarray:
        try:
            out = bound.to_numpy(t)
        except Exception as exc:
            self.fail(f"to_numpy failed on the result of {what}: {type(exc).__name__}: {exc}")
        self.require(
            isinstance(out, np.ndarray),
            f"to_numpy must return a numpy.ndarray; got {type(out).__name__} for {what}.",
        )
        return out

    def call(self, what: str, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except Exception as exc:
            if getattr(exc, "_sklearn_caf_check", False):
                raise
            self.fail(f"{what} raised {type(exc).__name__}: {exc}")


def _unpack_factory(check: _Checker, model_factory: Callable[[], Any]):
    made = model_factory()
    check.require(
        isinstance(made, tuple) and len(made) in (3, 4),
        "model_factory must return (model, layer, images) or (model, layer, images, "
        f"snapshot); got {type(made).__name__}.",
    )
    model, layer, images, *rest = made
    snapshot = rest[0] if rest else None
    check.require(
        isinstance(layer, str), f"model_factory must give a named layer (str); got {layer!r}."
    )
    images = np.asarray(images, dtype=np.float32)
    check.require(
        images.ndim >= 3 and images.shape[0] >= 2,
        f"model_factory must give a batch of at least 2 images; got shape {images.shape}.",
    )
    return model, layer, images, snapshot


def _check_identity(check: _Checker, backend: Any) -> None:
    for attr in ("name", "framework"):
        value = getattr(backend, attr, None)
        check.require(
            isinstance(value, str) and value != "",
            f"backend.{attr} must be a non-empty string; got {value!r}.",
        )
    for method in ("accepts", "bind"):
        check.require(callable(getattr(backend, method, None)), f"backend.{method} is missing.")
    check.require(
        isinstance(backend, Backend), "backend does not implement sklearn_caf.backend.Backend."
    )


def _check_accepts(check: _Checker, backend: Any, model: Any) -> None:
    result = check.call("accepts(model)", backend.accepts, model)
    check.require(
        isinstance(result, (bool, np.bool_)) and bool(result),
        f"accepts(model) must be True for the factory's model; got {result!r}.",
    )
    for other in (object(), np.zeros((2, 3), dtype=np.float32), None):
        result = check.call(f"accepts({type(other).__name__})", backend.accepts, other)
        check.require(
            isinstance(result, (bool, np.bool_)) and not bool(result),
            f"accepts() must be False for a {type(other).__name__}; got {result!r}.",
        )


def _bind(check: _Checker, backend: Any, model: Any, layer: str | None, device: Any) -> Any:
    bound = check.call(
        f"bind(model, layer={layer!r})",
        backend.bind,
        model,
        layer=layer,
        output=None,
        device=device,
    )
    missing = [name for name in (*_BOUND_ATTRIBUTES, *_BOUND_METHODS) if not hasattr(bound, name)]
    check.require(
        not missing,
        f"bind() must return a sklearn_caf.backend.BoundModel; {type(bound).__name__} lacks "
        f"{', '.join(missing)}.",
    )
    for name in _BOUND_METHODS:
        check.require(callable(getattr(bound, name)), f"BoundModel.{name} is not callable.")
    for name in ("channel_axis", "input_channel_axis"):
        value = getattr(bound, name)
        check.require(
            isinstance(value, (int, np.integer)) and not isinstance(value, bool),
            f"BoundModel.{name} must be an int; got {value!r}.",
        )
    check.require(isinstance(bound, BoundModel), "bound model fails the BoundModel protocol.")
    return bound


def _forward(check: _Checker, bound: Any, images: np.ndarray, what: str):
    x = check.call(f"asarray(images) [{what}]", bound.asarray, images)
    result = check.call(f"trunk(x) [{what}]", bound.trunk, x)
    check.require(
        isinstance(result, tuple) and len(result) == 2 and isinstance(result[1], tuple),
        f"trunk(x) must return (features, context) with context a tuple [{what}]; got "
        f"{type(result).__name__}.",
    )
    a, context = result
    out = check.call(f"head(features, context) [{what}]", bound.head, a, context)
    return x, a, context, out


def _check_split(
    check: _Checker, bound: Any, images: np.ndarray, layer: str
) -> tuple[Any, Any, tuple, Any, np.ndarray]:
    n = images.shape[0]
    x, a, context, out = _forward(check, bound, images, f"layer={layer!r}")
    a_np = check.numpy(bound, a, "trunk")
    out_np = check.numpy(bound, out, "head")
    check.require(
        a_np.ndim >= 3 and a_np.shape[0] == n,
        f"trunk(x) at layer={layer!r} must give feature maps (n, ...) with spatial axes, n={n}; "
        f"got shape {a_np.shape}.",
    )
    check.require(
        out_np.ndim == 2 and out_np.shape[0] == n,
        f"head() must return the output as (n, d) with n={n}; got shape {out_np.shape}.",
    )
    check.require(np.isfinite(out_np).all(), "head() returned NaN or infinite values.")
    check.require(
        tuple(a.shape) == a_np.shape,
        f"features.shape {tuple(a.shape)} disagrees with to_numpy(features).shape {a_np.shape}.",
    )
    # Inference mode: the same input gives the same output (dropout off, statistics frozen).
    _, _, _, again = _forward(check, bound, images, "second pass")
    check.close(
        check.numpy(bound, again, "head"),
        out_np,
        "a second pass over the same images "
        "(the model must be in inference mode inside the context)",
    )
    # The core selects rows of the features and context and runs the head on them.
    rows = np.array([n - 1, 0, n - 1])
    a_rows = check.call("take(features, rows)", bound.take, a, rows)
    ctx_rows = tuple(check.call("take(context, rows)", bound.take, c, rows) for c in context)
    sub = check.call("head on selected rows", bound.head, a_rows, ctx_rows)
    check.close(
        check.numpy(bound, sub, "head on selected rows"),
        out_np[rows],
        "head(take(features, rows), take(context, rows)) vs the rows of head(features, context)",
    )
    # A filter of ones on the channel axis leaves the output unchanged.
    spatial = [
        s for ax, s in enumerate(a_np.shape) if ax not in (0, bound.channel_axis % a_np.ndim)
    ]
    ones = bound.asarray(np.ones((n, *spatial), dtype=np.float32))
    filtered = check.call(
        "head(features * expand_dims(filter, channel_axis))",
        lambda: bound.head(a * bound.expand_dims(ones, bound.channel_axis), context),
    )
    check.close(
        check.numpy(bound, filtered, "filtered head"),
        out_np,
        "head(features * expand_dims(ones, channel_axis)) vs head(features)",
    )
    return x, a, context, out, out_np


def _check_value_and_grad(
    check: _Checker, bound: Any, a: Any, context: tuple, out_np: np.ndarray, seed: int
) -> None:
    rng = np.random.default_rng(seed)
    # A smooth function built from the protocol's ops, against its analytic gradient and
    # central finite differences.
    z_np = rng.standard_normal((3, 2, 4, 5)).astype(np.float32)
    w_np = rng.standard_normal((1, 2, 4, 5)).astype(np.float32)
    z, w = bound.asarray(z_np), bound.asarray(w_np)

    def smooth(t):
        return bound.sum(t * t * w, axis=(1, 2, 3)) + bound.sum(
            bound.sqrt(t * t + 1.0), axis=(1, 2, 3)
        )

    def smooth_np(t):
        t = t.astype(np.float64)
        return (t * t * w_np).sum(axis=(1, 2, 3)) + np.sqrt(t * t + 1).sum(axis=(1, 2, 3))

    compile_ = getattr(bound, "compile", None)
    if compile_ is not None:  # optional: a compiled function computes the same
        step = check.call(
            "compile(fn)", compile_, lambda t, k: bound.value_and_grad(smooth, t * k)
        )
        for rows in (3, 2):
            v, g = check.call("compile(fn)(x)", step, bound.take(z, np.arange(rows)), 1.0)
            check.close(
                check.numpy(bound, v, "compiled value"),
                smooth_np(z_np[:rows]),
                "compile(value_and_grad)'s value vs fn(x)",
                rtol=1e-4,
            )
            zz = z_np[:rows].astype(np.float64)
            check.close(
                check.numpy(bound, g, "compiled grad"),
                2 * w_np * zz + zz / np.sqrt(zz * zz + 1),
                "compile(value_and_grad)'s gradient",
                rtol=1e-4,
            )
    result = check.call("value_and_grad(fn, x)", bound.value_and_grad, smooth, z)
    check.require(
        isinstance(result, tuple) and len(result) == 2,
        "value_and_grad(fn, x) must return (value, grad).",
    )
    value = check.numpy(bound, result[0], "value_and_grad's value")
    grad = check.numpy(bound, result[1], "value_and_grad's grad")
    check.close(value, smooth_np(z_np), "value_and_grad's value vs fn(x)", rtol=1e-4)
    zz = z_np.astype(np.float64)
    analytic = 2 * w_np * zz + zz / np.sqrt(zz * zz + 1)
    check.close(grad, analytic, "value_and_grad's gradient (sum of per-sample values)", rtol=1e-4)
    eps = 1e-2
    for _ in range(3):
        v = rng.standard_normal(z_np.shape)
        fd = (smooth_np(z_np + eps * v) - smooth_np(z_np - eps * v)).sum() / (2 * eps)
        plus = check.numpy(bound, smooth(bound.asarray(z_np + eps * v)), "fn")
        minus = check.numpy(bound, smooth(bound.asarray(z_np - eps * v)), "fn")
        fd_backend = (plus.astype(np.float64) - minus).sum() / (2 * eps)
        directional = float((grad.astype(np.float64) * v).sum())
        tol = 1e-2 * np.linalg.norm(analytic) * np.linalg.norm(v)
        check.require(
            abs(directional - fd) <= tol and abs(directional - fd_backend) <= tol,
            f"value_and_grad disagrees with finite differences: directional derivative "
            f"{directional:.6g}, finite differences {fd:.6g}.",
        )
    # The gradient through the head (what Grad-CAM needs), against finite differences.
    weights_np = rng.standard_normal((1, out_np.shape[1])).astype(np.float32)
    weights = bound.asarray(weights_np)

    def score(features):
        return bound.sum(bound.head(features, context) * weights, axis=1)

    value, grad = check.call("value_and_grad(score through head)", bound.value_and_grad, score, a)
    value = check.numpy(bound, value, "value_and_grad's value")
    check.close(value, (out_np * weights_np).sum(axis=1), "value_and_grad(head score)", rtol=1e-4)
    grad = check.numpy(bound, grad, "value_and_grad's grad").astype(np.float64)
    a_np = check.numpy(bound, a, "features").astype(np.float64)
    check.require(
        grad.shape == a_np.shape,
        f"value_and_grad's grad must have the input's shape {a_np.shape}; got {grad.shape}.",
    )
    v = rng.standard_normal(a_np.shape)
    eps = 1e-3 * max(float(np.sqrt((a_np**2).mean())), 1e-3)
    plus = check.numpy(bound, score(bound.asarray(a_np + eps * v)), "score")
    minus = check.numpy(bound, score(bound.asarray(a_np - eps * v)), "score")
    fd = float((plus.astype(np.float64) - minus).sum() / (2 * eps))
    directional = float((grad * v).sum())
    tol = 2e-2 * np.linalg.norm(grad) * np.linalg.norm(v) + 1e-4 * (1 + abs(fd))
    check.require(
        abs(directional - fd) <= tol,
        f"value_and_grad through head() disagrees with finite differences: directional "
        f"derivative {directional:.6g}, finite differences {fd:.6g}.",
    )


def _check_fori_loop(check: _Checker, bound: Any, seed: int) -> None:
    """The optional ``fori_loop(n, body, init)``: ``body`` runs for i = 0 .. n - 1, in order."""
    fori_loop = getattr(bound, "fori_loop", None)
    if fori_loop is None:
        return
    rng = np.random.default_rng(seed)
    x_np = rng.standard_normal((3, 4)).astype(np.float32)
    coef_np = rng.standard_normal(5).astype(np.float32)
    coef = bound.asarray(coef_np)

    # ``i`` is an integer scalar used as an index (as the core uses it: the i-th step
    # size). The recurrence does not commute in i, so steps run out of order, or too
    # often, show.
    def body(i, carry):
        (acc,) = carry
        return (acc * 0.5 + x * coef[i],)

    def expected(n: int) -> np.ndarray:
        acc = np.zeros_like(x_np, dtype=np.float64)
        for i in range(n):
            acc = acc * 0.5 + x_np * coef_np[i]
        return acc

    x = bound.asarray(x_np)
    runners = [("fori_loop", lambda n, x0: fori_loop(n, body, (x0,)))]
    compile_ = getattr(bound, "compile", None)
    if compile_ is not None:
        runners.append(("compile(fori_loop)", compile_(lambda n, x0: fori_loop(n, body, (x0,)))))
    for name, run in runners:
        for n in (0, 1, 5):
            result = check.call(f"{name}(n={n})", run, n, bound.zeros_like(x))
            check.require(
                isinstance(result, (tuple, list)) and len(result) == 1,
                f"{name} must return the carry, a tuple like init; got {type(result).__name__}.",
            )
            check.close(
                check.numpy(bound, result[0], f"{name}'s carry"),
                expected(n),
                f"{name}(n={n}) vs a Python loop",
                rtol=1e-5,
            )


def _check_token_ops(check: _Checker, bound: Any, seed: int) -> None:
    """The optional ``reshape``, ``split`` and ``concat`` (token layers): all or none, as
    NumPy's, also inside ``compile``."""
    names = ("reshape", "split", "concat")
    present = [getattr(bound, name, None) is not None for name in names]
    if not any(present):
        return
    check.require(all(present), "reshape, split and concat come together (token layers).")
    x_np = np.random.default_rng(seed).standard_normal((2, 7, 4)).astype(np.float32)

    def roundtrip(x):
        head, tail = bound.split(x, [1], axis=1)
        grid = bound.reshape(tail, (-1, 3, 2, 4))
        return head, grid, bound.concat([head, bound.reshape(grid, (-1, 6, 4))], axis=1)

    runners = [("split/reshape/concat", roundtrip)]
    compile_ = getattr(bound, "compile", None)
    if compile_ is not None:
        runners.append(("compile(split/reshape/concat)", compile_(roundtrip)))
    for name, run in runners:
        head, grid, back = check.call(name, run, bound.asarray(x_np))
        check.close(check.numpy(bound, head, "split"), x_np[:, :1], f"{name}: split", rtol=0)
        expected = x_np[:, 1:].reshape(2, 3, 2, 4)
        check.close(check.numpy(bound, grid, "reshape"), expected, f"{name}: reshape", rtol=0)
        check.close(check.numpy(bound, back, "concat"), x_np, f"{name}: concat", rtol=0)


def _check_ops(check: _Checker, bound: Any, seed: int) -> None:
    rng = np.random.default_rng(seed)
    x_np = rng.standard_normal((4, 3, 5, 6)).astype(np.float32)
    y_np = rng.standard_normal((4, 3, 5, 6)).astype(np.float32)
    x, y = bound.asarray(x_np), bound.asarray(y_np)

    def same(what: str, t: Any, expected: np.ndarray) -> None:
        check.close(check.numpy(bound, t, what), expected, what)

    check.require(
        tuple(int(s) for s in x.shape) == x_np.shape,
        f"tensor.shape must give the array's shape {x_np.shape}; got {tuple(x.shape)}.",
    )
    same("x + y", x + y, x_np + y_np)
    same("x - y", x - y, x_np - y_np)
    same("x * y", x * y, x_np * y_np)
    same("x / (y * y + 1)", x / (y * y + 1.0), x_np / (y_np * y_np + 1))
    for rows in (np.array([2, 0, 2, 3]), np.array([1]), np.arange(4)):
        same(f"take(x, {rows.tolist()})", bound.take(x, rows), x_np[rows])
    for op in ("sum", "mean", "max"):
        for axis in (1, -1, (2, 3), (1, 2, 3)):
            for keepdims in (False, True):
                what = f"{op}(x, axis={axis}, keepdims={keepdims})"
                result = check.call(what, getattr(bound, op), x, axis=axis, keepdims=keepdims)
                same(what, result, getattr(np, op)(x_np, axis=axis, keepdims=keepdims))
        same(
            f"{op}(x, axis=1) (default keepdims)",
            getattr(bound, op)(x, axis=1),
            getattr(np, op)(x_np, axis=1),
        )
    same("sqrt(|x|)", bound.sqrt(bound.asarray(np.abs(x_np))), np.sqrt(np.abs(x_np)))
    same("exp(x)", bound.exp(x), np.exp(x_np))
    same("abs(x)", bound.abs(x), np.abs(x_np))
    same("relu(x)", bound.relu(x), np.maximum(x_np, 0))
    for axis in (0, 1, -1):
        same(f"expand_dims(x, {axis})", bound.expand_dims(x, axis), np.expand_dims(x_np, axis))
    same("zeros_like(x)", bound.zeros_like(x), np.zeros_like(x_np))
    if hasattr(bound, "repeat"):  # optional: per-frame L2-CAF (frame_axis)
        for repeats in (1, 3):
            same(f"repeat(x, {repeats})", bound.repeat(x, repeats), np.repeat(x_np, repeats, 0))


def _check_arrays(check: _Checker, bound: Any, seed: int) -> None:
    rng = np.random.default_rng(seed)
    x_np = rng.standard_normal((3, 2, 4)).astype(np.float32)
    back = check.numpy(bound, check.call("asarray(x)", bound.asarray, x_np), "asarray(x)")
    check.require(
        back.dtype == np.float32 and np.array_equal(back, x_np),
        f"to_numpy(asarray(x)) must give x back exactly as float32; got dtype {back.dtype}.",
    )
    again = check.numpy(bound, bound.asarray(bound.asarray(x_np)), "asarray(tensor)")
    check.require(
        again.dtype == np.float32 and np.array_equal(again, x_np),
        "asarray() of a backend tensor must give the same values, float32.",
    )
    wide = check.numpy(bound, bound.asarray(x_np.astype(np.float64)), "asarray(float64)")
    check.require(
        wide.dtype == np.float32 and np.array_equal(wide, x_np),
        f"asarray() of a float64 array must give float32; got dtype {wide.dtype}.",
    )
    ints = check.numpy(bound, bound.asarray(np.arange(6).reshape(2, 3)), "asarray(int)")
    check.require(
        ints.dtype == np.float32 and np.array_equal(ints, np.arange(6).reshape(2, 3)),
        f"asarray() of an integer array must give float32; got dtype {ints.dtype}.",
    )


def _check_context(
    check: _Checker,
    bound: Any,
    model: Any,
    images: np.ndarray,
    out_np: np.ndarray,
    snapshot: Callable[[Any], Any] | None,
) -> None:
    before = snapshot(model) if snapshot is not None else None
    entered = check.call("__enter__", bound.__enter__)
    try:
        check.require(entered is not None, "__enter__ must return the bound model (got None).")
        # Nested use, as the explainers do (fit inside, transform inside).
        with bound:
            _forward(check, bound, images, "nested context")
        raise _CheckError("raised inside the context manager")
    except _CheckError as exc:
        suppress = bound.__exit__(type(exc), exc, exc.__traceback__)
        check.require(not suppress, "__exit__ must not swallow exceptions (it returned True).")
    except BaseException as exc:  # a failed check inside: leave the model as it was
        bound.__exit__(type(exc), exc, exc.__traceback__)
        raise
    if snapshot is not None:
        after = snapshot(model)
        check.require(
            _equal(after, before),
            "the context manager must restore the model's state on exit, also when an "
            f"exception was raised inside; before: {before!r}, after: {after!r}.",
        )
    try:
        with bound:
            raise _CheckError("raised inside `with bound:`")
    except _CheckError:
        pass
    else:
        check.fail("`with bound:` swallowed an exception raised inside it.")
    if snapshot is not None:
        after = snapshot(model)
        check.require(
            _equal(after, before),
            "`with bound:` must restore the model's state when an exception is raised inside; "
            f"before: {before!r}, after: {after!r}.",
        )
    with bound:
        _, _, _, out = _forward(check, bound, images, "after an error")
        check.close(
            check.numpy(bound, out, "head"), out_np, "the output after an error inside the context"
        )


def _equal(a: Any, b: Any) -> bool:
    try:
        result = a == b
        if isinstance(result, np.ndarray):
            return bool(result.all())
        return bool(result)
    except Exception:
        return False


def _check_unknown_layer(check: _Checker, backend: Any, model: Any, device: Any) -> None:
    try:
        backend.bind(model, layer=_UNKNOWN_LAYER, output=None, device=device)
    except ValueError as exc:
        check.require(
            _UNKNOWN_LAYER in str(exc),
            f"the ValueError for an unknown layer must name it ({_UNKNOWN_LAYER!r}); got: {exc}",
        )
    except Exception as exc:
        check.fail(
            f"bind(model, layer={_UNKNOWN_LAYER!r}) must raise ValueError naming the layer; "
            f"got {type(exc).__name__}: {exc}"
        )
    else:
        check.fail(f"bind(model, layer={_UNKNOWN_LAYER!r}) must raise ValueError; it did not.")


def _check_unsplit(
    check: _Checker,
    backend: Any,
    model: Any,
    images: np.ndarray,
    out_np: np.ndarray,
    layer: str,
    device: Any,
) -> None:
    whole = _bind(check, backend, model, None, device)
    with whole:
        _, a, _, out = _forward(check, whole, images, "layer=None")
        check.close(
            check.numpy(whole, a, "trunk at layer=None"),
            images,
            "trunk(x) at layer=None must return the input itself",
        )
        full = check.numpy(whole, out, "head at layer=None")
    check.close(
        out_np,
        full,
        f"head(trunk(x)) at layer={layer!r} vs the unsplit model (bind(model, layer=None))",
        rtol=1e-4,
        atol=1e-5,
    )


def _unsplit_output(check: _Checker, backend: Any, model: Any, images: np.ndarray, device: Any):
    whole = _bind(check, backend, model, None, device)
    with whole:
        _, _, _, out = _forward(check, whole, images, "layer=None")
        return check.numpy(whole, out, "head at layer=None")


def _check_randomization(
    check: _Checker,
    backend: Any,
    model: Any,
    images: np.ndarray,
    device: Any,
    snapshot: Callable[[Any], Any] | None,
) -> None:
    """The optional ``weighted_layers`` and ``randomized_copy`` (the sanity checks' copies)."""
    has = [hasattr(backend, m) for m in ("weighted_layers", "randomized_copy")]
    if not any(has):
        return
    check.require(
        all(has), "a backend with one of weighted_layers and randomized_copy needs both."
    )
    names = check.call("weighted_layers(model)", backend.weighted_layers, model)
    check.require(
        isinstance(names, (list, tuple))
        and len(names) > 0
        and all(isinstance(name, str) for name in names),
        f"weighted_layers(model) must return a non-empty list of layer names; got {names!r}.",
    )
    check.require(
        len(set(names)) == len(names), f"weighted_layers(model) repeats names: {names!r}."
    )
    before = snapshot(model) if snapshot is not None else None
    original = _unsplit_output(check, backend, model, images, device)

    def randomized(layers: list[str], seed: int, what: str) -> tuple[Any, np.ndarray]:
        copy = check.call(
            f"randomized_copy(model, {layers!r}, random_state={seed}) [{what}]",
            backend.randomized_copy,
            model,
            layers,
            random_state=seed,
        )
        check.require(
            copy is not model, f"randomized_copy must return a copy, not the model [{what}]."
        )
        check.require(
            bool(backend.accepts(copy)),
            f"accepts() must be True for the randomized copy [{what}].",
        )
        return copy, _unsplit_output(check, backend, copy, images, device)

    copy, exact = randomized([], 0, "no layers")
    check.close(exact, original, "the output of randomized_copy(model, []) vs the model")
    copy_names = check.call("weighted_layers(copy)", backend.weighted_layers, copy)
    check.require(
        list(copy_names) == list(names),
        f"the copy's weighted_layers differ from the model's: {copy_names!r} vs {names!r}.",
    )
    top = [names[-1]]
    _, first = randomized(top, 0, "top layer")
    check.require(
        first.shape == original.shape and not np.allclose(first, original),
        f"randomizing the top weighted layer {top[0]!r} must change the model's output "
        f"(weighted_layers must list layers in forward order, the output's last).",
    )
    _, again = randomized(top, 0, "top layer again")
    check.close(again, first, "two randomized copies with the same random_state")
    _, every = randomized(list(names), 0, "every layer")
    check.require(
        not np.allclose(every, original),
        "randomizing every weighted layer must change the model's output.",
    )
    check.close(
        _unsplit_output(check, backend, model, images, device),
        original,
        "the model's own output after randomized copies were made (the model must not change)",
        rtol=0,
        atol=0,
    )
    if snapshot is not None:
        check.require(
            _equal(snapshot(model), before),
            "randomized_copy must leave the model's state as it was (snapshot changed).",
        )
    try:
        backend.randomized_copy(model, [_UNKNOWN_LAYER], random_state=0)
    except ValueError as exc:
        check.require(
            _UNKNOWN_LAYER in str(exc),
            f"randomized_copy's ValueError for an unknown layer must name it; got: {exc}",
        )
    except Exception as exc:
        check.fail(
            f"randomized_copy(model, [{_UNKNOWN_LAYER!r}]) must raise ValueError naming the "
            f"layer; got {type(exc).__name__}: {exc}"
        )
    else:
        check.fail(f"randomized_copy(model, [{_UNKNOWN_LAYER!r}]) must raise ValueError.")


def check_backend(
    backend: Any,
    model_factory: Callable[[], tuple] | None = None,
    *,
    device: Any = "auto",
    random_state: int = 0,
) -> None:
    """Check that ``backend`` implements the backend protocol correctly.

    The checks drive the backend only through :class:`~sklearn_caf.backend.Backend` and
    :class:`~sklearn_caf.backend.BoundModel` and compare with NumPy; this function imports
    no deep-learning framework. It stops at the first failure.

    Parameters
    ----------
    backend : Backend instance or class
        The backend to check. A class is instantiated without arguments.
    model_factory : callable, default=None
        Called without arguments, returns ``(model, layer, images)`` or
        ``(model, layer, images, snapshot)``: a small model of the backend's framework, the
        name of a layer of it whose output is a spatial feature map, a NumPy batch of at
        least 2 images in the model's layout, and optionally ``snapshot(model)``, which
        returns a value comparable with ``==`` that captures the state the bound model's
        context manager must restore (train/eval flags, gradient flags, weights). Required:
        the kit cannot build a model of an unknown framework.
    device : str, default="auto"
        Passed to ``backend.bind``.
    random_state : int, default=0
        Seed of the random test data.

    Raises
    ------
    TypeError
        If ``model_factory`` is not given.
    AssertionError
        On the first check that fails, with a message saying what and why.

    Notes
    -----
    In order, it checks that

    - ``name`` and ``framework`` are non-empty strings and ``accepts``/``bind`` exist;
    - ``accepts(model)`` is True, and False for ``object()``, a NumPy array and ``None``;
    - ``bind(model, layer=layer)`` returns an object with every attribute and method of
      :class:`~sklearn_caf.backend.BoundModel`;
    - ``trunk`` gives spatial feature maps and a tuple of context values, ``head`` an
      ``(n, d)`` output; two passes agree (inference mode inside the context); the head on
      rows selected with ``take`` equals those rows of the output; a filter of ones
      multiplied on ``channel_axis`` leaves the output unchanged;
    - ``value_and_grad`` matches the analytic gradient and finite differences of a smooth
      function of the protocol's ops, and finite differences through ``head``; where the
      bound model has the optional ``compile(fn)``, the compiled function gives the same
      values and gradients, for two batch sizes and a Python float argument;
    - where the bound model has the optional ``fori_loop(n, body, init)``, it runs ``body``
      for ``i = 0 .. n - 1`` in order (``n = 0`` included), also inside ``compile``;
    - ``take``, ``sum``, ``mean``, ``max`` (int, negative and tuple axes, ``keepdims``),
      ``sqrt``, ``exp``, ``abs``, ``relu``, ``expand_dims``, ``zeros_like``, the optional
      ``repeat`` and ``+ - * /`` agree with NumPy, and so do the optional ``reshape``,
      ``split`` and ``concat`` (all or none; also inside ``compile``);
    - ``to_numpy(asarray(x))`` round-trips float32 exactly, and ``asarray`` casts float64,
      integers and backend tensors to float32;
    - the context manager nests, does not swallow exceptions, and restores ``snapshot`` on
      exit, also when an exception is raised inside;
    - an unknown layer makes ``bind`` raise ``ValueError`` naming the layer;
    - ``trunk`` at ``layer=None`` returns the input, and ``head(trunk(x))`` at ``layer``
      equals the unsplit model, ``bind(model, layer=None)``;
    - where the backend has the optional ``weighted_layers`` and ``randomized_copy`` (the
      model-randomization sanity check, :mod:`sklearn_caf.sanity`; both or neither):
      ``weighted_layers`` gives distinct names; ``randomized_copy`` returns a new model
      the backend accepts, with the same weighted layers; with no layers it computes
      exactly what the model does; randomizing the last weighted layer, or all of them,
      changes the output, reproducibly for one ``random_state``; the model's output and
      state stay exactly as they were; an unknown layer raises ``ValueError`` naming it.

    Examples
    --------
    >>> from sklearn_caf.testing import check_backend
    >>> check_backend(object())  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    TypeError: check_backend needs a model_factory: ...
    """
    if model_factory is None or not callable(model_factory):
        raise TypeError(
            "check_backend needs a model_factory: a callable returning (model, layer, images) "
            "for a small model of the backend's framework, e.g. "
            "check_backend(MyBackend(), lambda: (net, 'conv', images)); the core cannot "
            f"build a model of an unknown framework. Got model_factory={model_factory!r}."
        )
    if isinstance(backend, type):
        backend = backend()
    check = _Checker(backend)
    _check_identity(check, backend)
    model, layer, images, snapshot = _unpack_factory(check, model_factory)
    _check_accepts(check, backend, model)
    before = snapshot(model) if snapshot is not None else None
    check.require(
        snapshot is None or _equal(snapshot(model), before),
        "snapshot(model) must return a value that compares equal (==, to a bool) to "
        "another snapshot of the unchanged model.",
    )
    bound = _bind(check, backend, model, layer, device)
    if snapshot is not None:
        check.require(
            _equal(snapshot(model), before),
            "bind() must leave the model's state as it was (snapshot changed).",
        )
    with bound:
        _, a, context, _, out_np = _check_split(check, bound, images, layer)
        _check_value_and_grad(check, bound, a, context, out_np, random_state)
        _check_fori_loop(check, bound, random_state)
        _check_token_ops(check, bound, random_state)
        _check_ops(check, bound, random_state)
        _check_arrays(check, bound, random_state)
    _check_context(check, bound, model, images, out_np, snapshot)
    _check_unknown_layer(check, backend, model, device)
    _check_unsplit(check, backend, model, images, out_np, layer, device)
    _check_randomization(check, backend, model, images, device, snapshot)
