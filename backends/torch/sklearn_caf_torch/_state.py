"""The state guard of a bound torch model: frozen inside ``with bound:``, the user's outside.

Inside an explainer call every module of the model is in eval mode (dropout off, batch norm
on its running statistics, which are then never updated) and no parameter requires grad;
on exit the user's flags come back, also after an error.

Calls may overlap on one model: threads of a web service sharing it, or two explainers, one
on a model and one on a submodule of it. If each call saved the flags it saw on entry and
restored them on exit, the first call to leave would switch the model back to train mode
under the others, and the last one would "restore" the frozen flags it had seen. So the
flags are held per module and per parameter in one process-wide registry under a lock, with
a count: the first call to reach a module or parameter saves the user's flag and freezes
it, the last one to leave restores it. Between the first entry and the last exit nothing
unfreezes, whatever the order of the calls.

Grad mode and inference mode are per thread in torch, so each thread saves and restores its
own; the nesting depth of ``with bound:`` is per thread too, so one explainer can be shared
by several threads.

Tracing a model with torch.fx (binding it, in ``fit``) replaces ``torch.nn.Module.__call__``
for the whole process while it runs, so a model running in another thread at that moment
would go through the tracer. Tracing therefore takes :func:`tracing`'s exclusive side of a
lock whose shared side every ``with bound:`` holds: a trace waits for the calls in progress
and new calls wait for the trace (binding happens once per ``fit``, so this is rare). Code
outside this library that runs a torch model in another thread during a trace is not covered.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import torch

_LOCK = threading.Lock()
# id(module or parameter) -> [object, the user's flag, number of calls holding it]. The
# object itself is kept so that its id cannot be reused while it is held.
_MODULES: dict[int, list] = {}
_PARAMETERS: dict[int, list] = {}


def _hold(model: torch.nn.Module) -> tuple[list, list]:
    """Count one more call on every module and parameter of ``model``; freeze the new ones."""
    modules, parameters = list(model.modules()), list(model.parameters())
    with _LOCK:
        for m in modules:
            entry = _MODULES.get(id(m))
            if entry is None:
                _MODULES[id(m)] = [m, m.training, 1]
                m.training = False
            else:
                entry[2] += 1
        for p in parameters:
            entry = _PARAMETERS.get(id(p))
            if entry is None:
                _PARAMETERS[id(p)] = [p, p.requires_grad, 1]
                p.requires_grad_(False)
            else:
                entry[2] += 1
    return modules, parameters


def _release(modules: list, parameters: list) -> None:
    """One call less on what :func:`_hold` returned; the last one restores the user's flags."""
    with _LOCK:
        for m in modules:
            entry = _MODULES[id(m)]
            entry[2] -= 1
            if entry[2] == 0:
                m.training = entry[1]
                del _MODULES[id(m)]
        for p in parameters:
            entry = _PARAMETERS[id(p)]
            entry[2] -= 1
            if entry[2] == 0:
                p.requires_grad_(entry[1])
                del _PARAMETERS[id(p)]


class _SharedLock:
    """Any number of holders of the shared side, or one thread holding the exclusive side.

    Both sides are re-entrant per thread, and the thread holding the exclusive side may take
    the shared one. A waiting exclusive request keeps new threads out of the shared side, so
    a steady stream of calls cannot starve a trace.
    """

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._shared = 0
        self._writer: int | None = None
        self._writer_depth = 0
        self._writers_waiting = 0
        self._local = threading.local()

    def acquire_shared(self) -> None:
        mine = getattr(self._local, "shared", 0)
        with self._cond:
            if mine == 0 and self._writer != threading.get_ident():
                while self._writer is not None or self._writers_waiting:
                    self._cond.wait()
            self._shared += 1
        self._local.shared = mine + 1

    def release_shared(self) -> None:
        self._local.shared -= 1
        with self._cond:
            self._shared -= 1
            if self._shared == 0:
                self._cond.notify_all()

    def acquire_exclusive(self) -> None:
        me = threading.get_ident()
        with self._cond:
            if self._writer == me:
                self._writer_depth += 1
                return
            # A thread binding a model inside a call of its own waits for the others only.
            mine = getattr(self._local, "shared", 0)
            self._writers_waiting += 1
            try:
                while self._writer is not None or self._shared > mine:
                    self._cond.wait()
            finally:
                self._writers_waiting -= 1
            self._writer, self._writer_depth = me, 1

    def busy(self) -> bool:
        with self._cond:
            return bool(self._shared or self._writer is not None)

    def release_exclusive(self) -> None:
        with self._cond:
            self._writer_depth -= 1
            if self._writer_depth == 0:
                self._writer = None
                self._cond.notify_all()


_RUNNING = _SharedLock()


@contextmanager
def tracing() -> Iterator[None]:
    """Hold this around torch.fx tracing: no guarded call runs in another thread meanwhile."""
    _RUNNING.acquire_exclusive()
    try:
        yield
    finally:
        _RUNNING.release_exclusive()


def held_count_all() -> int:
    """How many modules and parameters calls in progress hold, over all models; for tests."""
    with _LOCK:
        return len(_MODULES) + len(_PARAMETERS)


def _reset_for_tests() -> None:
    """Forget every hold: only for test suites that run deliberately broken bound models
    (which can leave a hold behind); never while a call is in progress."""
    global _RUNNING
    with _LOCK:
        _MODULES.clear()
        _PARAMETERS.clear()
    _RUNNING = _SharedLock()


def held_count(model: torch.nn.Module) -> int:
    """How many of ``model``'s modules and parameters calls in progress hold; for tests."""
    with _LOCK:
        return sum(id(m) in _MODULES for m in model.modules()) + sum(
            id(p) in _PARAMETERS for p in model.parameters()
        )


class ModelGuard:
    """``enter(model)`` / ``exit()``: what ``TorchBoundModel.__enter__``/``__exit__`` do.

    Re-entrant per thread: only the outermost ``enter`` of a thread holds the model and
    switches off inference mode (gradients wrt filters and features are needed even when
    the caller runs under ``torch.inference_mode()`` or ``no_grad``, as evaluation loops
    do); its matching ``exit`` releases the model and restores the thread's grad mode.
    """

    def __init__(self) -> None:
        self._local = threading.local()

    # A copy of a bound model (``copy.deepcopy`` of a fitted explainer) starts outside any
    # call; thread-local state neither copies nor pickles.
    def __deepcopy__(self, memo: dict) -> ModelGuard:
        return ModelGuard()

    def __reduce__(self) -> tuple:
        return (ModelGuard, ())

    def enter(self, model: torch.nn.Module) -> None:
        local = self._local
        depth = getattr(local, "depth", 0)
        if depth == 0:
            grad_mode = torch.is_grad_enabled()
            _RUNNING.acquire_shared()
            try:
                held = _hold(model)
            except BaseException:
                _RUNNING.release_shared()
                raise
            try:
                inference = torch.inference_mode(False)
                inference.__enter__()
            except BaseException:
                _release(*held)
                _RUNNING.release_shared()
                raise
            local.grad_mode, local.held, local.inference = grad_mode, held, inference
        local.depth = depth + 1

    def exit(self, *exc_info: Any) -> None:
        local = self._local
        local.depth -= 1
        if local.depth == 0:
            try:
                local.inference.__exit__(*exc_info)
            finally:
                _release(*local.held)
                _RUNNING.release_shared()
                torch.set_grad_enabled(local.grad_mode)
                del local.held, local.inference
