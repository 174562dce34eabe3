"""PyTorch backend for sklearn-caf.

Importing this package does not import torch: the registry reads
:attr:`TorchBackend.framework` to decide whether a model could be a torch model at all.
"""

from __future__ import annotations

import sys
from typing import Any

import numpy as np

__all__ = ["TorchBackend"]


class TorchBackend:
    """Runs sklearn-caf's methods on ``torch.nn.Module`` models.

    The model is split at a layer into a trunk (input -> layer), run once per batch, and a
    head (layer -> output), run as often as a method needs. The split is made by tracing
    the model, which keeps it exact and fast, and checked against the model itself on the
    first input: torch.fx first; where fx cannot trace ``forward`` (control flow on shapes,
    assertions), ``torch.export`` on the first real input; and where no tracer can (control
    flow on tensor values, ``.item()``), forward hooks on the real model, as Captum does,
    with an ``EfficiencyWarning``: the hooks' head reruns the model from its input. The
    fitted explainer's ``split_`` says which was used. In-place operations (``ReLU(inplace=
    True)``) are safe in every case. A traced split runs each ``convolution -> batch norm``
    pair as one convolution with folded weights (eval mode makes them affine), with
    channels-last activations on the CPU where the model allows it; the model's own tensors
    are never changed.

    Parameters
    ----------
    split : {"auto", "fx", "export", "hooks"}, default="auto"
        ``"auto"`` tries fx, then export, then hooks. The others use that method only, and
        raise a ``ValueError`` when it cannot split the model (``"hooks"`` always can).

    Examples
    --------
    >>> import torch
    >>> from sklearn_caf.backend import get_backend
    >>> get_backend(torch.nn.Linear(2, 2)).name
    'torch'
    """

    name = "torch"
    framework = "torch"

    _SPLITS = ("auto", "fx", "export", "hooks")

    def __init__(self, split: str = "auto"):
        if split not in self._SPLITS:
            raise ValueError(f"split must be one of {', '.join(self._SPLITS)}; got {split!r}.")
        self.split = split

    def accepts(self, model: Any) -> bool:
        """True for ``torch.nn.Module`` instances (only checked once torch is imported).

        Parameters
        ----------
        model : object
            Any object.

        Returns
        -------
        accepted : bool
            Whether this backend runs ``model``.
        """
        torch = sys.modules.get("torch")
        return torch is not None and isinstance(model, torch.nn.Module)

    def bind(self, model: Any, *, layer: str | None, output: Any = None, device: Any = "auto"):
        """Split ``model`` at ``layer``; see :class:`sklearn_caf.backend.Backend`.

        Parameters
        ----------
        model : object
            The model to split. Never modified.
        layer : str or None
            Dotted module path, as in ``model.named_modules()`` (``"layer4"``,
            ``"features.28"``); ``None`` splits at the input.
        output : None, int, str or callable, default=None
            Which output the head returns when the model returns several: a tuple index, a
            dict key, or a callable mapping the output to an ``(n, d)`` tensor.
        device : str, default="auto"
            ``"auto"`` (the model's GPU, else the first GPU, else the CPU), ``"cpu"``, ``"cuda"``,
            ``"cuda:1"``... A model on another device is copied there, never moved.

        Returns
        -------
        bound : BoundModel
            The model split into a trunk and a head.
        """
        from ._bound import TorchBoundModel

        return TorchBoundModel(model, layer=layer, output=output, device=device, split=self.split)

    def layer_outputs(
        self,
        model: Any,
        x: Any,
        *,
        gradients_of: Any = (),
        output: Any = None,
        device: Any = "auto",
    ) -> list[tuple[str, tuple[int, ...], Any]]:
        """Every module's output on ``x``, in the order the outputs are made.

        The model runs once (inference mode, parameters frozen, every flag restored, the
        hooks removed), as ``bind(model, layer=None)`` runs it. Modules called more than
        once in a pass (a ReLU reused in a block) and outputs that are not one tensor are
        left out: ``bind`` cannot split at them.

        Parameters
        ----------
        model : torch.nn.Module
            The model. Never modified.
        x : array-like
            A batch of inputs, in the model's layout.
        gradients_of : sequence of str, default=()
            Modules at whose output the gradient of the model output's squared norm is
            returned.
        output : None, int, str or callable, default=None
            Which output, as in :meth:`bind`.
        device : str, default="auto"
            Where to run, as in :meth:`bind`.

        Returns
        -------
        outputs : list of (str, tuple, ndarray or None)
            Each module's dotted name, its output's shape and, for ``gradients_of``, the
            gradient as a NumPy array (``None`` otherwise).
        """
        import torch

        bound = self.bind(model, layer=None, output=output, device=device)
        wanted = set(gradients_of)
        outputs: dict[str, Any] = {}
        calls: dict[str, int] = {}

        def record(name: str):
            def hook(module: Any, args: Any, out: Any) -> None:
                calls[name] = calls.get(name, 0) + 1
                if isinstance(out, torch.Tensor):
                    outputs[name] = out

            return hook

        handles = []
        with bound:
            try:
                for name, module in bound.model.named_modules():
                    if name:
                        handles.append(module.register_forward_hook(record(name)))
                inputs = bound.asarray(x).requires_grad_(bool(wanted))
                with torch.enable_grad() if wanted else torch.no_grad():
                    result = bound.head(inputs, ())
                names = [n for n in outputs if calls[n] == 1]
                tracked = [n for n in names if n in wanted and outputs[n].requires_grad]
                grads = (
                    torch.autograd.grad(
                        (result * result).sum(), [outputs[n] for n in tracked], allow_unused=True
                    )
                    if tracked
                    else ()
                )
            finally:
                for handle in handles:
                    handle.remove()
        found = {
            n: np.zeros(tuple(outputs[n].shape), np.float32) if g is None else bound.to_numpy(g)
            for n, g in zip(tracked, grads, strict=True)
        }
        return [(n, tuple(int(s) for s in outputs[n].shape), found.get(n)) for n in names]

    def weighted_layers(self, model: Any) -> list[str]:
        """Paths of the modules that own parameters, in forward order.

        The modules whose own (not inherited) parameters the model learns: convolutions,
        linear layers, normalization layers, embeddings... Containers are never listed. The
        order is the order the forward pass first uses them (traced with torch.fx), or the
        order of ``model.named_modules()`` where fx cannot trace the model.

        Parameters
        ----------
        model : torch.nn.Module
            The model; it is only read.

        Returns
        -------
        list of str
            Dotted module paths, as ``layer=`` spells them.

        Examples
        --------
        >>> import torch
        >>> from sklearn_caf_torch import TorchBackend
        >>> net = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.ReLU(),
        ...                           torch.nn.Flatten(), torch.nn.LazyLinear(2))
        >>> TorchBackend().weighted_layers(net)
        ['0', '3']
        """
        from ._randomize import weighted_layers

        return weighted_layers(model)

    def randomized_copy(self, model: Any, layers: Any, random_state: int | None = None) -> Any:
        """A deep copy of ``model`` with ``layers`` re-initialized, for sanity checks.

        Each layer is re-initialized by its own ``reset_parameters()`` (PyTorch's default
        initialization of that layer; batch norm: unit scale, zero shift, reset running
        statistics); a module without one has each parameter redrawn from a normal
        distribution with the parameter's own mean and standard deviation. Each layer is
        seeded by :func:`sklearn_caf.backend.layer_seeds`, inside ``torch.random.fork_rng``
        (the global generators are left as they were). The copy is on the same device and
        has the user's train/eval and ``requires_grad`` flags (and hooks); ``model`` is
        only read.

        Parameters
        ----------
        model : torch.nn.Module
            The model to copy.
        layers : sequence of str
            Names from :meth:`weighted_layers`; empty for an exact copy.
        random_state : int or None, default=None
            Seed; ``None`` draws a fresh one.

        Returns
        -------
        torch.nn.Module
            The randomized copy.

        Examples
        --------
        >>> import torch
        >>> from sklearn_caf_torch import TorchBackend
        >>> net = torch.nn.Sequential(torch.nn.Linear(3, 3), torch.nn.Linear(3, 2))
        >>> copy = TorchBackend().randomized_copy(net, ["1"], random_state=0)
        >>> bool(torch.equal(copy[0].weight, net[0].weight))
        True
        >>> bool(torch.equal(copy[1].weight, net[1].weight))
        False
        """
        from ._randomize import randomized_copy

        return randomized_copy(model, layers, random_state)

    def __repr__(self) -> str:
        return "TorchBackend()" if self.split == "auto" else f"TorchBackend(split={self.split!r})"
