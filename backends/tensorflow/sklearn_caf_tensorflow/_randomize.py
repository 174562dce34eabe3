"""Randomized copies of a Keras model for the model-randomization sanity check.

See :func:`sklearn_caf.sanity.model_randomization`. The copy is
``keras.models.clone_model`` with the original's weights; the chosen layers' variables are
then redrawn by the layer's own initializers, seeded. The user's model is only read.
"""

from __future__ import annotations

import copy
from collections.abc import Sequence
from typing import Any

import keras
import numpy as np

from sklearn_caf.backend import check_layer_names, layer_seeds

from ._split import SEP, resolve_layer


def weighted_layers(model: Any, prefix: str = "") -> list[str]:
    """Paths of the layers that own weights (nested models entered with ``/``), in the
    model's layer order: topological, i.e. forward, for Functional and Sequential models."""
    paths = []
    for layer in getattr(model, "layers", []):
        path = prefix + layer.name
        if isinstance(layer, keras.Model):
            paths.extend(weighted_layers(layer, path + SEP))
        elif layer.weights:
            paths.append(path)
    return paths


def _copy(model: Any) -> Any:
    """A copy with the same layers, names, trainable flags and weights, sharing nothing."""
    try:
        clone = keras.models.clone_model(model)
    except Exception as clone_error:
        try:  # a subclassed model whose class Keras can serialize
            return copy.deepcopy(model)
        except Exception:
            raise ValueError(
                f"the model ({type(model).__name__}) cannot be copied for randomization: "
                f"keras.models.clone_model failed ({type(clone_error).__name__}: "
                f"{str(clone_error).splitlines()[0]}). Functional and Sequential models are "
                f"supported; a subclassed model needs get_config()/from_config()."
            ) from clone_error
    clone.set_weights(model.get_weights())
    for original, cloned in zip(_all_layers(model), _all_layers(clone), strict=True):
        cloned.trainable = original.trainable
    return clone


def _all_layers(model: Any) -> list:
    out = []
    for layer in getattr(model, "layers", []):
        out.append(layer)
        if isinstance(layer, keras.Model):
            out.extend(_all_layers(layer))
    return out


def _initializer(layer: Any, variable: Any) -> Any:
    """The initializer ``layer`` (or its RNN cell) declares for ``variable``, or None."""
    name = variable.name.rpartition("/")[2]
    candidates = [f"{name}_initializer", f"{name.removesuffix('_kernel')}_initializer"]
    if name == "kernel":  # DepthwiseConv2D keeps its kernel's initializer under this name
        candidates.append("depthwise_initializer")
    for owner in (layer, getattr(layer, "cell", None)):
        for attribute in candidates:
            found = getattr(owner, attribute, None) if owner is not None else None
            if found is not None:
                return keras.initializers.get(found)
    return None


def _seeded(initializer: Any, seed: int) -> Any:
    config = initializer.get_config()
    if "seed" in config:
        config["seed"] = seed
        return type(initializer).from_config(config)
    return initializer  # constant initializers (zeros, ones) need no seed


def _reinitialize(layer: Any, seed: int) -> None:
    seeds = np.random.SeedSequence(seed).generate_state(len(layer.weights))
    for variable, s in zip(layer.weights, seeds, strict=True):
        s = int(s % 2**31)
        initializer = _initializer(layer, variable)
        shape, dtype = tuple(variable.shape), variable.dtype
        if initializer is not None:
            variable.assign(_seeded(initializer, s)(shape, dtype=dtype))
            continue
        # No initializer declared: redraw from a normal distribution with the variable's
        # own mean and spread (keeps its scale, destroys what it learned).
        values = keras.ops.convert_to_numpy(variable.value).astype(np.float64)
        mean = float(values.mean()) if values.size else 0.0
        std = float(values.std()) if values.size > 1 else abs(mean)
        drawn = np.random.default_rng(s).normal(mean, std, size=shape)
        variable.assign(drawn.astype(keras.backend.standardize_dtype(dtype)))


def randomized_copy(model: Any, layers: Sequence[str], random_state: int | None = None) -> Any:
    """A copy of ``model`` with ``layers`` re-initialized; see the protocol."""
    layers = check_layer_names(layers, weighted_layers(model))
    clone = _copy(model)
    seeds = layer_seeds(layers, random_state)
    for name in layers:
        _reinitialize(resolve_layer(clone, name), seeds[name])
    return clone
