"""A torch model bound at a layer: trunk and head, the state guard and the tensor ops."""

from __future__ import annotations

import copy
from collections.abc import Callable
from typing import Any

import numpy as np
import torch

from sklearn_caf.backend import select_output

from ._split import split_graph
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


class TorchBoundModel:
    """See :class:`sklearn_caf.backend.BoundModel`."""

    channel_axis = 1
    input_channel_axis = 1

    def __init__(self, model: torch.nn.Module, *, layer: str | None, output: Any, device: Any):
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
        # Trace in eval mode (``self.training`` branches are fixed at trace time), and while
        # no other thread runs a model (tracing patches torch.nn.Module; see _state.py).
        with tracing(), self:
            self._trunk, self._head = split_graph(model, layer)

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
        self._input_shape = tuple(x.shape[1:])
        a, *context = self._trunk(x)
        return a, tuple(context)

    def head(self, a: torch.Tensor, context: tuple[torch.Tensor, ...]) -> torch.Tensor:
        # A zero-strided stand-in for the input, for head code that reads its shape.
        like = torch.zeros((), device=a.device).expand(a.shape[0], *self._input_shape)
        return _select_output(self._head(a, *context, like), self.output)

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

    sqrt = staticmethod(torch.sqrt)
    abs = staticmethod(torch.abs)
    relu = staticmethod(torch.relu)
    zeros_like = staticmethod(torch.zeros_like)

    def expand_dims(self, x: torch.Tensor, axis: int) -> torch.Tensor:
        return torch.unsqueeze(x, axis)
