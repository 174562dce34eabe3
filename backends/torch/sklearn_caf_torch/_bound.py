"""A torch model bound at a layer: trunk and head, the state guard and the tensor ops."""

from __future__ import annotations

import copy
import threading
import warnings
from collections.abc import Callable
from typing import Any

import numpy as np
import torch
from sklearn.exceptions import EfficiencyWarning
from torch.utils import _pytree as pytree

from sklearn_caf._utils import caller_stacklevel
from sklearn_caf.backend import select_output

from ._split import (
    HookSplit,
    InputSplit,
    TraceFailure,
    check_layer,
    export_split,
    fx_split,
)
from ._state import ModelGuard, tracing


def resolve_device(model: torch.nn.Module, device: Any) -> torch.device:
    """``"auto"``: the model's own GPU, else the first GPU when present, else the CPU."""
    if device != "auto":
        try:
            chosen = torch.device(device)
        except (RuntimeError, TypeError) as exc:
            raise ValueError(
                f"device must be 'auto', 'cpu', 'cuda' or 'cuda:N'; got {device!r}."
            ) from exc
        if chosen.type == "cuda" and (
            not torch.cuda.is_available() or (chosen.index or 0) >= torch.cuda.device_count()
        ):
            raise ValueError(
                f"device={device!r} is not available here (CUDA available: "
                f"{torch.cuda.is_available()}, {torch.cuda.device_count()} GPU(s)); use "
                f"device='auto' or 'cpu'."
            )
        return chosen
    tensors = [*model.parameters(), *model.buffers()]
    if tensors and tensors[0].device.type != "cpu":
        return tensors[0].device
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def _select_output(out: Any, output: Any) -> torch.Tensor:
    out = select_output(out, output, is_tensor=lambda t: isinstance(t, torch.Tensor))
    return out.reshape(out.shape[0], -1)


class _PerThread:
    """A value per thread; a copy (``copy.deepcopy`` of a fitted explainer) or an unpickled
    one starts empty, as thread-local state neither copies nor pickles."""

    def __init__(self) -> None:
        self._local = threading.local()

    def __deepcopy__(self, memo: dict) -> _PerThread:
        return _PerThread()

    def __reduce__(self) -> tuple:
        return (_PerThread, ())

    def get(self, default: Any) -> Any:
        return getattr(self._local, "value", default)

    def set(self, value: Any) -> None:
        self._local.value = value


class TorchBoundModel:
    """See :class:`sklearn_caf.backend.BoundModel`."""

    channel_axis = 1
    input_channel_axis = 1

    def __init__(
        self,
        model: torch.nn.Module,
        *,
        layer: str | None,
        output: Any,
        device: Any,
        split: str = "auto",
    ):
        self.device = resolve_device(model, device)
        tensors = [*model.parameters(), *model.buffers()]
        if tensors and tensors[0].device != self.device:
            # Explaining never changes the user's model, so run on a copy on that device.
            model = copy.deepcopy(model).to(self.device)
        self.model, self.layer, self.output = model, layer, output
        # Inputs and filters follow the model's floating dtype (float64 models work;
        # float32 otherwise, as for a model without parameters).
        floats = [t.dtype for t in tensors if t.is_floating_point()]
        self.dtype = floats[0] if floats else torch.float32
        self._guard = ModelGuard()  # flags frozen inside `with self:`, see _state.py
        self._failures: list[str] = []
        self._method = split
        self._split: Any = None
        self._seen = _PerThread()
        self._last_seen: tuple = ((), 1)
        # Trace in eval mode (``self.training`` branches are fixed at trace time), and while
        # no other thread runs a model (tracing patches torch.nn.Module; see _state.py).
        with tracing(), self:
            if layer is None:
                self._split = InputSplit(model)
            else:
                check_layer(model, layer)
                if split in ("auto", "fx"):
                    try:
                        self._split = fx_split(model, layer)
                    except TraceFailure as exc:
                        self._failures.append(f"torch.fx: {exc}")
                        self._refuse_fallback()
        # A traced split is checked against the model itself on the first real input
        # (tracers can be wrong without failing: a branch taken at trace time, say).
        self._verified = layer is None

    @property
    def split_method(self) -> str | None:
        """How the model is split: ``"fx"``, ``"export"``, ``"hooks"`` or ``"input"``
        (``layer=None``); ``None`` until the first input has been seen."""
        return self._split.method if self._verified else None

    def _refuse_fallback(self) -> None:
        """With ``TorchBackend(split="fx" | "export")``, no other method may take over."""
        if self._method in ("fx", "export"):
            raise ValueError(
                f"the model cannot be split at layer={self.layer!r} with "
                f"split={self._method!r} ({'; '.join(self._failures)}); use "
                f"TorchBackend(split='auto') to fall back to other methods."
            )

    def _resolve_split(self, x: torch.Tensor) -> None:
        """Verify the traced split on ``x``, else try torch.export, else fall back to hooks."""
        if self._split is not None:
            problem = self._disagreement(self._split, x)
            if problem is None:
                self._split, self._verified = self._fastest(self._split, x), True
                return
            self._failures.append(f"torch.fx: {problem}")
            self._refuse_fallback()
        if self._method in ("auto", "export"):
            try:
                split = export_split(self.model, self.layer, x)
            except TraceFailure as exc:
                self._failures.append(f"torch.export: {exc}")
            else:
                problem = self._disagreement(split, x)
                if problem is None:
                    self._split, self._verified = self._fastest(split, x), True
                    return
                self._failures.append(f"torch.export: {problem}")
            self._refuse_fallback()
        reason = "; ".join(self._failures)
        split = HookSplit(self.model, self.layer, reason)
        split.check(x)
        self._split, self._verified = split, True
        if self._method == "hooks":
            return
        warnings.warn(
            f"The model could not be split at layer={self.layer!r} by tracing ({reason}). "
            f"Falling back to forward hooks on the model: the maps are exact, but every "
            f"evaluation of the head reruns the model from its input, so L2-CAF's fast "
            f"variant is slower (Grad-CAM costs the same). The fitted explainer's split_ "
            f"attribute says which split is used.",
            EfficiencyWarning,
            stacklevel=caller_stacklevel(),
        )

    def _fastest(self, split: Any, x: torch.Tensor) -> Any:
        """``split`` with its batch norms folded (see ``_fold.py``), and on the CPU with
        channels-last activations, where that variant reproduces the model on ``x``."""
        options = (True, False) if self.device.type == "cpu" else (False,)
        for channels_last in options:
            faster = split.folded(channels_last)
            if faster is None:
                return split
            if self._disagreement(faster, x) is None:
                return faster
        return split

    def _disagreement(self, split: Any, x: torch.Tensor) -> str | None:
        """Why ``split`` does not reproduce the model on ``x``; ``None`` when it does."""
        expected = self.model(x.clone())  # an input the model cannot take is the caller's error
        try:
            a, context = split.trunk(x)
            like = torch.zeros((), device=x.device).expand(x.shape)
            actual = split.head(a, context, like)
        except Exception as exc:
            return f"its graph fails on the input ({type(exc).__name__}: {exc})"
        got, got_spec = pytree.tree_flatten(actual)
        want, want_spec = pytree.tree_flatten(expected)
        if got_spec != want_spec:
            return "its graph returns another structure than the model"
        for g, w in zip(got, want, strict=True):
            if not isinstance(w, torch.Tensor):
                continue
            if not isinstance(g, torch.Tensor) or g.shape != w.shape:
                return "its graph returns tensors of other shapes than the model"
            scale = float(w.detach().abs().max()) if w.numel() else 0.0
            if not torch.allclose(g, w, rtol=1e-4, atol=1e-5 * max(scale, 1.0)):
                return "its graph computes other values than the model on the input"
        return None

    def __enter__(self) -> TorchBoundModel:
        self._guard.enter(self.model)
        return self

    def __exit__(self, *exc_info: Any) -> None:
        self._guard.exit(*exc_info)

    # -- model -------------------------------------------------------------------------------
    def asarray(self, x: Any) -> torch.Tensor:
        if isinstance(x, torch.Tensor):
            x = x.detach().to(self.device, self.dtype)
            # Tensors made under inference_mode cannot enter autograd; a copy can.
            return x.clone() if x.is_inference() else x
        return torch.as_tensor(np.asarray(x, dtype=np.float32), device=self.device).to(self.dtype)

    def to_numpy(self, t: Any) -> np.ndarray:
        if isinstance(t, torch.Tensor):
            t = t.detach().cpu()
            # NumPy has no bfloat16; half precision is widened for the host.
            return (t.float() if t.dtype in (torch.float16, torch.bfloat16) else t).numpy()
        return np.asarray(t)

    @torch.no_grad()
    def trunk(self, x: torch.Tensor) -> tuple[torch.Tensor, tuple[torch.Tensor, ...]]:
        if not self._verified:
            self._resolve_split(x)
        a, context = self._split.trunk(x)
        # A clip model's per-frame CNN gives T rows per input (the frames, flattened).
        divides = x.shape[0] and a.shape[0] % x.shape[0] == 0
        seen = (tuple(x.shape[1:]), a.shape[0] // x.shape[0] if divides else 1)
        # Per thread: threads sharing this model may explain images of other sizes at once.
        self._seen.set(seen)
        self._last_seen = seen  # for a head called from a thread that ran no trunk
        return a, context

    def head(self, a: torch.Tensor, context: tuple[torch.Tensor, ...]) -> torch.Tensor:
        # A zero-strided stand-in for the input, for head code that reads its shape (that
        # of the input this thread's last trunk call saw); one input per T rows of ``a``
        # for a clip model.
        input_shape, rows_per_input = self._seen.get(self._last_seen)
        like = torch.zeros((), device=a.device).expand(a.shape[0] // rows_per_input, *input_shape)
        return _select_output(self._split.head(a, context, like), self.output)

    def value_and_grad(
        self, fn: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        with torch.enable_grad():
            x = x.detach().requires_grad_(True)
            value = fn(x)
            (grad,) = torch.autograd.grad(value.sum(), x)
        return value.detach(), grad

    def fori_loop(
        self, n: int, body: Callable[[int, tuple], tuple], init: tuple
    ) -> tuple[torch.Tensor, ...]:
        """``body(i, carry) -> carry`` for ``i = 0 .. n - 1``: a Python loop, as torch runs
        eagerly (a loop costs nothing more than its iterations)."""
        carry = tuple(init)
        for i in range(int(n)):
            carry = tuple(body(i, carry))
        return carry

    # -- tensor ops --------------------------------------------------------------------------
    def take(self, x: torch.Tensor, rows: np.ndarray) -> torch.Tensor:
        return x[torch.as_tensor(rows, device=x.device, dtype=torch.long)]

    def sum(self, x: torch.Tensor, axis: Any, keepdims: bool = False) -> torch.Tensor:
        return torch.sum(x, dim=axis, keepdim=keepdims)

    def mean(self, x: torch.Tensor, axis: Any, keepdims: bool = False) -> torch.Tensor:
        return torch.mean(x, dim=axis, keepdim=keepdims)

    def max(self, x: torch.Tensor, axis: Any, keepdims: bool = False) -> torch.Tensor:
        return torch.amax(x, dim=axis, keepdim=keepdims)

    sqrt = staticmethod(torch.sqrt)
    exp = staticmethod(torch.exp)
    abs = staticmethod(torch.abs)
    relu = staticmethod(torch.relu)
    zeros_like = staticmethod(torch.zeros_like)

    def expand_dims(self, x: torch.Tensor, axis: int) -> torch.Tensor:
        return torch.unsqueeze(x, axis)

    def repeat(self, x: torch.Tensor, repeats: int) -> torch.Tensor:
        return torch.repeat_interleave(x, repeats, dim=0)

    def reshape(self, x: torch.Tensor, shape: tuple[int, ...]) -> torch.Tensor:
        return torch.reshape(x, shape)

    def split(self, x: torch.Tensor, indices: list[int], axis: int) -> list[torch.Tensor]:
        sizes = np.diff([0, *indices, x.shape[axis]]).tolist()
        return list(torch.split(x, sizes, dim=axis))

    def concat(self, xs: list[torch.Tensor], axis: int) -> torch.Tensor:
        return torch.cat(xs, dim=axis)
