"""What identifies a run (its manifest): the models', explainers' and dataset's fingerprints."""

from __future__ import annotations

import hashlib
import json
import sys
from collections.abc import Mapping
from numbers import Integral, Real
from typing import Any

import numpy as np

#: The run folder's format: 2 added the parts' checksum files and identity (run, chunk); 3 the
#: per-image boxes in the images' own pixels (``x0...``, ``model_x0...``, ``true_boxes``).
_FORMAT_VERSION = 3


# Explainer parameters that do not change the rows: a run started on one device may resume on
# another (the maps then agree to floating-point rounding).
_UNCONFIGURED_PARAMS = ("model", "verbose", "device")


# -- the configuration (the manifest) --------------------------------------------------------
def _jsonable(value: Any) -> Any:
    if value is None or isinstance(value, (bool, str)):
        return value
    if isinstance(value, Integral):
        return int(value)
    if isinstance(value, Real):
        return float(value)
    if isinstance(value, np.ndarray):
        digest = hashlib.sha256(np.ascontiguousarray(value).tobytes()).hexdigest()[:16]
        return {"ndarray": list(value.shape), "dtype": str(value.dtype), "sha256": digest}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if isinstance(value, Mapping):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, type) or callable(value):
        return f"{getattr(value, '__module__', '?')}.{getattr(value, '__qualname__', repr(value))}"
    name = getattr(value, "name", None)
    return f"{type(value).__qualname__}({name})" if isinstance(name, str) else repr(value)


def _tensor_bytes(tensor: Any) -> bytes:
    t = tensor.detach().cpu() if hasattr(tensor, "detach") else tensor
    try:
        array = np.asarray(t.numpy() if hasattr(t, "numpy") else t)
    except TypeError:  # bfloat16 and other dtypes NumPy lacks
        array = np.asarray(t.float().numpy())
    return np.ascontiguousarray(array).tobytes()


_PLAIN = (bool, int, float, str, type(None))


def _plain_attributes(obj: Any) -> str:
    """A module's public attributes of plain types (numbers, strings, tuples of them):
    what ``extra_repr`` may leave out (``ceil_mode``, a custom module's ``scale``...)."""
    items = []
    for key, value in sorted(getattr(obj, "__dict__", {}).items()):
        if key.startswith("_") or key == "training":
            continue
        if isinstance(value, _PLAIN) or (
            isinstance(value, (tuple, list)) and all(isinstance(v, _PLAIN) for v in value)
        ):
            items.append(f"{key}={value!r}")
    return ", ".join(items)


def _module_tree(model: Any) -> str:
    """A PyTorch module tree as text: each submodule's qualified name, type (for TorchScript,
    its original name), ``extra_repr()``, plain attributes and, for traced or scripted
    modules (``torch.fx.GraphModule``, ``torch.jit.ScriptModule``), its generated code."""
    lines = []
    for name, module in model.named_modules():
        kind = type(module)
        line = f"{name}: {kind.__module__}.{kind.__qualname__}"
        original = getattr(module, "original_name", None)
        if isinstance(original, str):
            line += f" [{original}]"
        extra = getattr(module, "extra_repr", None)
        if callable(extra):
            try:
                line += f"({extra()})"
            except Exception:  # a script module's extra_repr may not be callable from Python
                pass
        line += f" {{{_plain_attributes(module)}}}"
        code = getattr(module, "code", None)
        if isinstance(code, str):
            line += "\n" + code
        lines.append(line)
    return "\n".join(lines)


def _json_text(value: Any) -> str:
    return json.dumps(
        value, sort_keys=True, default=lambda o: f"<{type(o).__module__}.{type(o).__qualname__}>"
    )


def _keras_architecture(model: Any) -> str:
    """A Keras model as text: ``get_config()`` (JSON, keys sorted, the model's own name left
    out) and each layer's class and config, nested models walked into."""
    try:
        config = model.get_config()
    except Exception:  # subclassed models need not implement get_config
        config = None
    if isinstance(config, dict):
        config = {k: v for k, v in config.items() if k != "name"}
    layers = []

    def walk(owner: Any, prefix: str) -> None:
        for layer in getattr(owner, "layers", None) or []:
            kind = type(layer)
            try:
                layer_config = layer.get_config()
            except Exception:
                layer_config = None
            path = f"{prefix}{getattr(layer, 'name', '?')}"
            layers.append([path, f"{kind.__module__}.{kind.__qualname__}", layer_config])
            walk(layer, path + "/")

    walk(model, "")
    return _json_text({"config": config, "layers": layers})


def model_fingerprint(model: Any) -> dict:
    """A stable description of a model for the manifest: hashes of its architecture and of
    its weights.

    PyTorch modules hash their module tree (each submodule's qualified name, type,
    ``extra_repr()``, public attributes of plain types, and the generated code of a traced
    or scripted module) and their ``state_dict`` (names, shapes and values, parameters and
    buffers). Keras models hash ``get_config()`` (JSON, keys sorted, without the model's
    own name) with each layer's class and config, and ``get_weights()``. Any other model is
    described by its class and, where it has them, its parameter count only
    (``"kind": "class"``). No framework is imported: models are recognized by their
    methods.

    Limits: what the module tree does not show is not seen. A PyTorch ``forward`` rewritten
    to use the same modules differently (another order, a skip connection, a functional
    call such as ``F.relu`` or ``torch.flatten``) with the same submodules and weights, a
    hook registered on a module, or an attribute that is neither a plain value nor shown
    by ``extra_repr`` gives the same fingerprint; so does a subclassed Keras model whose
    ``call`` changed. Keras layer names are part of the architecture: a model rebuilt in
    the same process without explicit names gets new automatic names (``conv2d_1``) and
    another fingerprint (safe: a resume is refused, not mixed).

    Parameters
    ----------
    model : object
        A PyTorch module, a Keras model, or any other object.

    Returns
    -------
    fingerprint : dict
        ``"class"`` (the model's qualified class name), ``"kind"`` (``"weights"`` or
        ``"class"``) and, for ``"weights"``, ``"architecture"`` (SHA-256 of the module tree
        or the Keras configuration), ``"n_values"`` and ``"sha256"`` of the weights.

    Examples
    --------
    >>> import torch
    >>> from sklearn_caf.evaluation import model_fingerprint
    >>> torch.manual_seed(0)  # doctest: +ELLIPSIS
    <torch._C.Generator object at ...>
    >>> relu = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.ReLU())
    >>> leaky = torch.nn.Sequential(relu[0], torch.nn.LeakyReLU())
    >>> a, b = model_fingerprint(relu), model_fingerprint(leaky)
    >>> a["sha256"] == b["sha256"], a["architecture"] == b["architecture"]
    (True, False)
    """
    cls = f"{type(model).__module__}.{type(model).__qualname__}"
    digest = hashlib.sha256()
    state_dict = getattr(model, "state_dict", None)
    get_weights = getattr(model, "get_weights", None)
    if callable(state_dict):
        n_values = 0
        for name, tensor in state_dict().items():
            digest.update(f"{name}{tuple(tensor.shape)}{tensor.dtype}".encode())
            digest.update(_tensor_bytes(tensor))
            n_values += int(np.prod(tuple(tensor.shape)))
        tree = _module_tree(model) if callable(getattr(model, "named_modules", None)) else cls
        return {
            "class": cls,
            "kind": "weights",
            "architecture": hashlib.sha256(tree.encode()).hexdigest(),
            "n_values": n_values,
            "sha256": digest.hexdigest(),
        }
    if callable(get_weights):
        n_values = 0
        for w in get_weights():
            w = np.asarray(w)
            digest.update(f"{w.shape}{w.dtype}".encode())
            digest.update(np.ascontiguousarray(w).tobytes())
            n_values += w.size
        return {
            "class": cls,
            "kind": "weights",
            "architecture": hashlib.sha256(_keras_architecture(model).encode()).hexdigest(),
            "n_values": n_values,
            "sha256": digest.hexdigest(),
        }
    count = getattr(model, "count_params", None)
    return {"class": cls, "kind": "class", "n_values": int(count()) if callable(count) else None}


# Where sklearn-caf's explainers were defined before the package was regrouped: manifests
# written then name these, and must still resume (see ``upgrade_manifest``).
_FORMER_CLASS_PATHS = {
    "sklearn_caf._l2caf.L2CAFExplainer": "sklearn_caf.L2CAFExplainer",
    "sklearn_caf._gradcam.GradCAMExplainer": "sklearn_caf.GradCAMExplainer",
}


def public_class_path(cls: type) -> str:
    """The dotted path a class is imported from: ``sklearn_caf.L2CAFExplainer``, not the
    private module that defines it (which may move). Outside sklearn-caf, or where no public
    module above the defining one exports the class, its defining module and name."""
    module, name = cls.__module__, cls.__qualname__
    parts = module.split(".")
    if parts[0] == "sklearn_caf":
        for depth in range(1, len(parts) + 1):
            candidate = ".".join(parts[:depth])
            if parts[depth - 1].startswith("_"):
                break
            if getattr(sys.modules.get(candidate), name, None) is cls:
                return f"{candidate}.{name}"
    return f"{module}.{name}"


def upgrade_manifest(config: dict) -> dict:
    """A manifest as this version writes it: explainer classes under their public paths."""
    for explainer in (config.get("explainers") or {}).values():
        if isinstance(explainer, dict) and explainer.get("class") in _FORMER_CLASS_PATHS:
            explainer["class"] = _FORMER_CLASS_PATHS[explainer["class"]]
    return config


def _explainer_config(explainer: Any, models: dict) -> dict:
    params = explainer.get_params(deep=False)
    key = id(explainer.model)
    if key not in models:
        models[key] = model_fingerprint(explainer.model)
    return {
        "class": public_class_path(type(explainer)),
        "params": {
            k: _jsonable(v) for k, v in sorted(params.items()) if k not in _UNCONFIGURED_PARAMS
        },
        "model": models[key],
    }


def _run_config(
    explainers,
    dataset,
    n_images,
    task,
    box_threshold,
    thresholds,
    batch_size,
    faithfulness=None,
    protocol="wsol",
):
    models: dict = {}
    # batch_size of the faithfulness passes changes the rows only by rounding: not recorded.
    faith = (
        None
        if faithfulness is None
        else {k: _jsonable(v) for k, v in faithfulness.items() if k != "batch_size"}
    )
    return {
        "format": _FORMAT_VERSION,
        "task": task,
        "box_threshold": float(box_threshold),
        "thresholds": [float(t) for t in thresholds],
        # The box protocol of the IoU curves and MaxBoxAcc ("wsol" or "sklearn-caf").
        "protocol": protocol,
        "batch_size": int(batch_size),
        "n_images": int(n_images),
        "n_chunks": -(-n_images // batch_size),
        "dataset": {"class": type(dataset).__qualname__, "fingerprint": dataset.fingerprint()},
        "methods": list(explainers),
        "explainers": {name: _explainer_config(e, models) for name, e in explainers.items()},
        "faithfulness": faith,
    }


def _differences(old: Any, new: Any, path: str = "") -> list[str]:
    if isinstance(old, dict) and isinstance(new, dict):
        out = []
        for key in sorted(set(old) | set(new), key=str):
            out += _differences(old.get(key), new.get(key), f"{path}.{key}" if path else key)
        return out
    return [] if old == new else [path or "(all)"]
