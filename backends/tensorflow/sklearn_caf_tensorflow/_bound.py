"""A Keras model bound at a layer: trunk and head, devices, gradients and the tensor ops."""

from __future__ import annotations

import itertools
import re
import threading
from collections.abc import Callable
from typing import Any

import numpy as np
import tensorflow as tf

from sklearn_caf.backend import select_output

from ._split import make_split


def resolve_device(device: Any) -> str:
    """A TensorFlow device name: ``"auto"`` is the first GPU when present, else the CPU."""
    gpus = tf.config.list_logical_devices("GPU")
    if device == "auto":
        return gpus[0].name if gpus else "/CPU:0"
    match = isinstance(device, str) and re.fullmatch(
        r"/?(?:device:)?(cpu|gpu|cuda)(?::(\d+))?", device.strip().lower()
    )
    if not match:
        raise ValueError(
            f"device must be 'auto', 'cpu', 'gpu', 'gpu:N' (or 'cuda:N', '/GPU:N'); got "
            f"{device!r}."
        )
    kind, index = match.group(1), int(match.group(2) or 0)
    if kind == "cpu":
        return f"/CPU:{index}"
    if index >= len(gpus):
        raise ValueError(
            f"device={device!r} is not available here ({len(gpus)} GPU(s) visible to "
            f"TensorFlow); use device='auto' or 'cpu'."
        )
    return gpus[index].name


def _select_output(out: Any, output: Any) -> tf.Tensor:
    out = tf.cast(select_output(out, output, is_tensor=tf.is_tensor), tf.float32)
    return tf.reshape(out, (tf.shape(out)[0], -1))


def _number_as_tensor(a: Any) -> Any:
    if isinstance(a, bool):  # a flag: fixed at trace time
        return a
    if isinstance(a, float):
        return tf.constant(a, tf.float32)
    if isinstance(a, int):
        return tf.constant(a, tf.int32)
    return a


class TensorflowBoundModel:
    """See :class:`sklearn_caf.backend.BoundModel`. Feature maps and inputs are NHWC.

    Nothing in the model is changed, so there is nothing to restore: Keras layers run with
    ``training=False`` (dropout off, batch statistics frozen), and gradients are taken only
    with respect to the tensors ``value_and_grad`` is given (the tape watches no variable),
    so ``trainable`` flags are never touched. (A layer inside a subclassed model has its
    ``call`` intercepted during each trunk or head call only; see
    :class:`~sklearn_caf_tensorflow._split.InterceptSplit`.)
    """

    channel_axis = -1
    input_channel_axis = -1

    def __init__(
        self, model: Any, *, layer: str | None, output: Any, device: Any, tf_function: bool = True
    ):
        self.device = resolve_device(device)
        self.model, self.layer, self.output, self.tf_function = model, layer, output, tf_function
        # The trunk and head run eagerly when called on their own (once per batch, or on
        # probes of the exact solver); inside a compiled function (L2-CAF's Adam step,
        # Grad-CAM) they are traced with it. Layers of a model never called before are
        # built (Keras creates their variables) on the first, eager, call in fit.
        self._split = make_split(model, layer)
        # Device scopes are per thread in TensorFlow, and so is their nesting here: one
        # explainer may be shared by several threads.
        self._local = threading.local()

    def __getstate__(self) -> dict:  # thread-local state neither copies nor pickles
        state = dict(self.__dict__)
        del state["_local"]
        return state

    def __setstate__(self, state: dict) -> None:
        self.__dict__.update(state)
        self._local = threading.local()

    def __enter__(self) -> TensorflowBoundModel:
        scopes = self._local.__dict__.setdefault("scopes", [])
        if not scopes:
            scope = tf.device(self.device)
            scope.__enter__()
            scopes.append(scope)
        else:
            scopes.append(None)
        return self

    def __exit__(self, *exc_info: Any) -> None:
        scope = self._local.scopes.pop()
        if scope is not None:
            scope.__exit__(*exc_info)

    # -- model -------------------------------------------------------------------------------
    def asarray(self, x: Any) -> tf.Tensor:
        with tf.device(self.device):
            if tf.is_tensor(x):
                return tf.identity(tf.cast(x, tf.float32))
            return tf.convert_to_tensor(np.asarray(x, dtype=np.float32))

    def to_numpy(self, t: Any) -> np.ndarray:
        if hasattr(t, "numpy"):
            return np.asarray(t.numpy())
        return np.asarray(t)

    def _check_input(self, x: Any) -> None:
        inputs = getattr(self.model, "inputs", None) if self.model.built else None
        if not inputs:
            return
        expected = tuple(inputs[0].shape)
        got = tuple(x.shape)
        if None in got or len(expected) != len(got):
            if len(expected) != len(got) and None not in got:
                raise ValueError(
                    f"X must have the model's input rank: per-image shape like "
                    f"{expected[1:]} (NHWC, channels last); got images of shape {got}."
                )
            return
        channels = expected[-1]
        if channels is not None and got[-1] != channels:
            hint = ""
            if len(got) >= 3 and got[1] == channels:
                hint = (
                    " They look channels-first (NCHW, as for PyTorch): Keras models take "
                    "NHWC, so transpose them, e.g. X.transpose(0, 2, 3, 1)."
                )
            raise ValueError(
                f"X must be channels-last (NHWC) with {channels} channels, as the model's "
                f"input {expected}; got images of shape {got}.{hint}"
            )

    @property
    def split_method(self) -> str:
        """How the model is split: ``"graph"`` (the recorded graph of a Functional or
        Sequential model), ``"intercept"`` (a layer of a subclassed model, intercepted) or
        ``"input"`` (``layer=None``)."""
        return self._split.method

    def trunk(self, x: tf.Tensor) -> tuple[tf.Tensor, tuple[tf.Tensor, ...]]:
        self._check_input(x)
        a, context = self._split.trunk(x)
        return tf.stop_gradient(tf.cast(a, tf.float32)), tuple(context)

    def head(self, a: tf.Tensor, context: tuple[tf.Tensor, ...]) -> tf.Tensor:
        return _select_output(self._split.head(a, tuple(context)), self.output)

    def value_and_grad(
        self, fn: Callable[[tf.Tensor], tf.Tensor], x: tf.Tensor
    ) -> tuple[tf.Tensor, tf.Tensor]:
        x = tf.convert_to_tensor(x)
        with tf.GradientTape(watch_accessed_variables=False) as tape:
            tape.watch(x)
            value = fn(x)
            total = tf.reduce_sum(value)
        grad = tape.gradient(total, x, unconnected_gradients=tf.UnconnectedGradients.ZERO)
        return tf.stop_gradient(value), grad

    def compile(self, fn: Callable[..., Any]) -> Callable[..., Any]:
        """``fn`` as one ``tf.function`` (a pure function of tensors), traced once for all
        batch sizes; Python numbers are passed as tensors (floats as float32, ints as
        int32: a loop's length) so that a new value does not retrace."""
        if not self.tf_function:
            return fn
        graph_fn = tf.function(fn, reduce_retracing=True)

        def run(*args: Any) -> Any:
            args = tuple(_number_as_tensor(a) for a in args)
            return graph_fn(*args)

        run.tf_function = graph_fn  # its experimental_get_tracing_count() is tested
        return run

    def fori_loop(
        self, n: Any, body: Callable[[Any, tuple], tuple], init: tuple
    ) -> tuple[tf.Tensor, ...]:
        """``body(i, carry) -> carry`` for ``i = 0 .. n - 1``. Inside ``tf.function`` one
        ``tf.while_loop`` (one compiled call runs every iteration, ``n`` may be a tensor);
        eagerly a Python loop, as the ops run one by one anyway."""
        if tf.executing_eagerly():
            carry = tuple(init)
            for i in range(int(n)):
                carry = tuple(body(i, carry))
            return carry

        def step(i: tf.Tensor, *carry: tf.Tensor) -> tuple:
            return (i + 1, *body(i, tuple(carry)))

        _, *carry = tf.while_loop(
            lambda i, *_: i < n, step, (tf.constant(0, tf.int32), *init), parallel_iterations=1
        )
        return tuple(carry)

    # -- tensor ops --------------------------------------------------------------------------
    def take(self, x: tf.Tensor, rows: np.ndarray) -> tf.Tensor:
        return tf.gather(x, np.asarray(rows, dtype=np.int64), axis=0)

    def sum(self, x: tf.Tensor, axis: Any, keepdims: bool = False) -> tf.Tensor:
        return tf.reduce_sum(x, axis=axis, keepdims=keepdims)

    def mean(self, x: tf.Tensor, axis: Any, keepdims: bool = False) -> tf.Tensor:
        return tf.reduce_mean(x, axis=axis, keepdims=keepdims)

    def max(self, x: tf.Tensor, axis: Any, keepdims: bool = False) -> tf.Tensor:
        return tf.reduce_max(x, axis=axis, keepdims=keepdims)

    sqrt = staticmethod(tf.sqrt)
    exp = staticmethod(tf.exp)
    abs = staticmethod(tf.abs)
    relu = staticmethod(tf.nn.relu)
    zeros_like = staticmethod(tf.zeros_like)

    def expand_dims(self, x: tf.Tensor, axis: int) -> tf.Tensor:
        return tf.expand_dims(x, axis)

    def repeat(self, x: tf.Tensor, repeats: int) -> tf.Tensor:
        return tf.repeat(x, repeats, axis=0)

    def reshape(self, x: tf.Tensor, shape: tuple[int, ...]) -> tf.Tensor:
        return tf.reshape(x, shape)

    def split(self, x: tf.Tensor, indices: list[int], axis: int) -> list[tf.Tensor]:
        bounds = [0, *indices, None]
        return [
            x[(slice(None),) * (axis % len(x.shape)) + (slice(start, stop),)]
            for start, stop in itertools.pairwise(bounds)
        ]

    def concat(self, xs: list[tf.Tensor], axis: int) -> tf.Tensor:
        return tf.concat(xs, axis=axis)
