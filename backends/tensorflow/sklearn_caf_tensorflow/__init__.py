"""TensorFlow/Keras 3 backend for sklearn-caf.

Importing this package does not import TensorFlow: the registry reads
:attr:`TensorflowBackend.framework` to decide whether a model could be a Keras model at all.
"""

from __future__ import annotations

import sys
from typing import Any

__all__ = ["TensorflowBackend"]


class TensorflowBackend:
    """Runs sklearn-caf's methods on Keras 3 models (TensorFlow backend of Keras).

    The model is split at a layer by walking its functional graph: the trunk (input ->
    layer) runs once per batch, the head (layer -> output) as often as a method needs.
    Functional and Sequential models are split anywhere, also inside nested models
    (``layer="backbone/conv5_block3_out"``); subclassed models at any layer called once
    per forward pass, by intercepting its call (the head then reruns the whole model with
    the layer's output replaced, so fast L2-CAF costs as much as vanilla there).
    Gradients come from ``tf.GradientTape``; feature maps are NHWC.

    Parameters
    ----------
    tf_function : bool, default=True
        Compile the trunk, the head and L2-CAF's whole Adam step with ``tf.function``
        (traced once per explainer and reused for every batch). ``False`` runs eagerly,
        which is slower but easier to debug.

    Examples
    --------
    >>> import keras
    >>> from sklearn_caf.backend import get_backend
    >>> get_backend(keras.Sequential([keras.layers.Dense(2)])).name
    'tensorflow'
    """

    name = "tensorflow"
    framework = "tensorflow"

    def __init__(self, tf_function: bool = True):
        self.tf_function = tf_function

    def accepts(self, model: Any) -> bool:
        """True for Keras 3 models running on TensorFlow (only checked once it is imported).

        Parameters
        ----------
        model : object
            Any object.

        Returns
        -------
        accepted : bool
            Whether this backend runs ``model``.
        """
        keras = sys.modules.get("keras")
        if keras is None or not isinstance(model, getattr(keras, "Model", ())):
            return False
        return keras.backend.backend() == "tensorflow"

    def bind(self, model: Any, *, layer: str | None, output: Any = None, device: Any = "auto"):
        """Split ``model`` at ``layer``; see :class:`sklearn_caf.backend.Backend`.

        Parameters
        ----------
        model : object
            The model to split. Never modified.
        layer : str or None
            A layer's name, ``/`` into nested models (``"backbone/conv5_block3_out"``), or the
            attribute holding a layer of a subclassed model; ``None`` splits at the input.
        output : None, int, str or callable, default=None
            Which output the head returns when the model returns several: a tuple index, a
            dict key, or a callable mapping the output to an ``(n, d)`` tensor.
        device : str, default="auto"
            ``"auto"`` (the first GPU TensorFlow sees, else the CPU), ``"cpu"``, ``"gpu"``,
            ``"gpu:1"``...

        Returns
        -------
        bound : BoundModel
            The model split into a trunk and a head.
        """
        from ._bound import TensorflowBoundModel

        return TensorflowBoundModel(
            model, layer=layer, output=output, device=device, tf_function=self.tf_function
        )

    def layer_outputs(
        self,
        model: Any,
        x: Any,
        *,
        gradients_of: Any = (),
        output: Any = None,
        device: Any = "auto",
    ) -> list[tuple[str, tuple[int, ...], Any]]:
        """The output shape of every top-level layer of a Functional or Sequential model
        on ``x``, in the graph's order; no gradients (``None``: the core checks the last
        candidates by binding them).

        Parameters
        ----------
        model : keras.Model
            A Functional or Sequential model. Never modified.
        x : array-like
            A batch of inputs, in the model's layout.
        gradients_of : sequence of str, default=()
            Ignored.
        output : None, int, str or callable, default=None
            Ignored: every layer's own output is read.
        device : str, default="auto"
            Ignored: shapes only.

        Returns
        -------
        outputs : list of (str, tuple, None)
            Each layer's name and its output's shape.
        """
        import keras
        import numpy as np

        from ._split import _is_functional, _is_sequential

        if not (_is_functional(model) or _is_sequential(model)):
            raise ValueError(
                f"the layers of a subclassed Keras model ({type(model).__name__}) cannot be "
                "listed from its graph; pass layer= a layer name."
            )
        layers = []
        for layer in model.layers:
            if isinstance(layer, keras.layers.InputLayer):
                continue
            try:
                out = layer.output
            except (AttributeError, ValueError):  # a shared layer has several outputs
                continue
            if hasattr(out, "shape") and not isinstance(out, (list, tuple, dict)):
                layers.append((layer.name, out))
        inputs = model.inputs[0] if len(model.inputs) == 1 else model.inputs
        extractor = keras.Model(inputs, [out for _, out in layers])
        values = extractor(np.asarray(x, dtype=np.float32), training=False)
        values = values if isinstance(values, (list, tuple)) else [values]
        return [
            (name, tuple(int(s) for s in value.shape), None)
            for (name, _), value in zip(layers, values, strict=True)
        ]

    def weighted_layers(self, model: Any) -> list[str]:
        """Paths of the layers that own weights, in forward order.

        Convolutions, dense layers, normalization layers, embeddings...: every layer with
        ``layer.weights`` that is not itself a model; nested models are entered and their
        layers spelled ``"backbone/conv1"``. The order is the model's layer order, which
        Keras keeps topological (forward) for Functional and Sequential models.

        Parameters
        ----------
        model : keras.Model
            The model; it is only read.

        Returns
        -------
        list of str
            Layer paths, as ``layer=`` spells them.

        Examples
        --------
        >>> import keras
        >>> from sklearn_caf_tensorflow import TensorflowBackend
        >>> net = keras.Sequential([keras.Input((8, 8, 3)), keras.layers.Conv2D(4, 3, name="c"),
        ...                         keras.layers.GlobalAveragePooling2D(),
        ...                         keras.layers.Dense(2, name="fc")])
        >>> TensorflowBackend().weighted_layers(net)
        ['c', 'fc']
        """
        from ._randomize import weighted_layers

        return weighted_layers(model)

    def randomized_copy(self, model: Any, layers: Any, random_state: int | None = None) -> Any:
        """A copy of ``model`` with ``layers`` re-initialized, for sanity checks.

        The copy is ``keras.models.clone_model(model)`` with ``model``'s weights and
        trainable flags (a subclassed model that Keras cannot clone is deep-copied, else a
        ``ValueError`` says so). Each variable of the chosen layers is redrawn by the
        initializer its layer declares (``kernel_initializer``, ``bias_initializer``,
        ``gamma_initializer``, ``moving_variance_initializer``...), seeded per layer by
        :func:`sklearn_caf.backend.layer_seeds`; a variable without a declared initializer
        is drawn from a normal distribution with its own mean and standard deviation.
        ``model`` is only read.

        Parameters
        ----------
        model : keras.Model
            The model to copy.
        layers : sequence of str
            Names from :meth:`weighted_layers`; empty for an exact copy.
        random_state : int or None, default=None
            Seed; ``None`` draws a fresh one.

        Returns
        -------
        keras.Model
            The randomized copy.

        Examples
        --------
        >>> import keras, numpy as np
        >>> from sklearn_caf_tensorflow import TensorflowBackend
        >>> net = keras.Sequential([keras.Input((3,)), keras.layers.Dense(3, name="a"),
        ...                         keras.layers.Dense(2, name="b")])
        >>> copy = TensorflowBackend().randomized_copy(net, ["b"], random_state=0)
        >>> [np.array_equal(copy.get_layer(n).kernel, net.get_layer(n).kernel) for n in "ab"]
        [True, False]
        """
        from ._randomize import randomized_copy

        return randomized_copy(model, layers, random_state)

    def __repr__(self) -> str:
        return (
            "TensorflowBackend()" if self.tf_function else "TensorflowBackend(tf_function=False)"
        )
