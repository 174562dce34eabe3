"""BR-NPA for Keras 3 on TensorFlow: the pooling layer and the high-resolution recipe.

:class:`BRNPAPooling2D` is a drop-in replacement for ``GlobalAveragePooling2D`` on NHWC
feature maps. Its math is the core's (``sklearn_caf._explainers._brnpa``), run on TensorFlow
tensors, so it gives the numbers of :class:`sklearn_caf.BRNPAPooling` and of the PyTorch layer.
:func:`reduce_stride` and :func:`distillation_loss` are Section 3.1's recipe.

Importing this module imports TensorFlow and Keras.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import keras
import tensorflow as tf

from sklearn_caf._explainers import EPS, check_layer_params, representative_vectors

__all__ = ["BRNPAPooling2D", "TensorflowOps", "distillation_loss", "reduce_stride"]


class TensorflowOps:
    """The operations of ``sklearn_caf._explainers._brnpa.NumpyOps``, for TensorFlow tensors."""

    @staticmethod
    def sum(x: Any, axis: int, keepdims: bool = False) -> Any:
        return tf.reduce_sum(x, axis=axis, keepdims=keepdims)

    sqrt = staticmethod(tf.sqrt)

    @staticmethod
    def argmax(x: Any, axis: int) -> Any:
        return tf.argmax(x, axis=axis)

    @staticmethod
    def one_hot(indices: Any, depth: int, like: Any) -> Any:
        return tf.one_hot(indices, depth, dtype=like.dtype)

    where = staticmethod(tf.where)

    @staticmethod
    def expand_dims(x: Any, axis: int) -> Any:
        return tf.expand_dims(x, axis)

    @staticmethod
    def squeeze(x: Any, axis: int) -> Any:
        return tf.squeeze(x, axis=axis)

    @staticmethod
    def stack(xs: list, axis: int) -> Any:
        return tf.stack(xs, axis=axis)

    @staticmethod
    def random_uniform(like: Any, rng: Any) -> Any:
        # rng: a keras.random.SeedGenerator, an int seed or None.
        return keras.random.uniform(tf.shape(like), dtype=like.dtype, seed=rng)


@keras.saving.register_keras_serializable(package="sklearn_caf")
class BRNPAPooling2D(keras.layers.Layer):
    """BR-NPA pooling of (n, H, W, C) feature maps into (n, n_parts * C) vectors.

    Put it where a network has ``GlobalAveragePooling2D`` and widen the classifier after it
    to ``n_parts * C`` inputs. No weights; gradients flow to the features through the
    similarities and the weights (the selected positions are constants).

    Parameters
    ----------
    n_parts : int, default=3
        Number of ranked parts.
    selection : {"active", "random"}, default="active"
        Start each part from the most active vector, or from random distinct positions
        (the ablation of the paper's Table 4).
    refine : bool, default=True
        ``False``: each part is its starting vector (the "no refinement" ablation).
    return_maps : bool, default=False
        ``True``: the layer returns ``(vectors, maps)``, the maps of shape
        (n, n_parts, H, W) like the other BR-NPA implementations.
    seed : int or None, default=None
        Seeds ``selection="random"``.
    **kwargs
        Passed to ``keras.layers.Layer`` (``name``, ``dtype``...).

    Examples
    --------
    >>> import keras
    >>> from sklearn_caf_tensorflow.brnpa import BRNPAPooling2D
    >>> model = keras.Sequential([
    ...     keras.Input((16, 16, 3)),
    ...     keras.layers.Conv2D(8, 3, padding="same", activation="relu"),
    ...     BRNPAPooling2D(n_parts=3),
    ...     keras.layers.Dense(10),
    ... ])
    >>> model.output_shape
    (None, 10)
    """

    def __init__(
        self,
        n_parts: int = 3,
        *,
        selection: str = "active",
        refine: bool = True,
        return_maps: bool = False,
        seed: int | None = None,
        **kwargs: Any,
    ):
        super().__init__(**kwargs)
        check_layer_params(n_parts, selection)
        self.n_parts = n_parts
        self.selection = selection
        self.refine = bool(refine)
        self.return_maps = bool(return_maps)
        self.seed = seed
        self._seed_generator = keras.random.SeedGenerator(seed) if selection == "random" else None

    def _check_shape(self, shape: Any) -> tuple[int, int, int]:
        if len(shape) != 4 or any(d is None for d in shape[1:]):
            raise ValueError(
                f"BRNPAPooling2D expects feature maps of shape (n, H, W, C) with known H, W "
                f"and C; got {tuple(shape)}."
            )
        return int(shape[1]), int(shape[2]), int(shape[3])

    def build(self, input_shape: Any) -> None:
        self._check_shape(input_shape)
        super().build(input_shape)

    def parts(self, inputs: Any) -> dict[str, Any]:
        """The ranked parts of ``inputs``: vectors, maps, feature norms, starting positions.

        Parameters
        ----------
        inputs : tensor of shape (n, H, W, C)
            Feature maps (NHWC), non-negative (after a ReLU).

        Returns
        -------
        parts : dict of tensors
            ``vectors`` (n, N, C), ``maps`` (n, N, H, W), ``feature_norms`` (n, H, W) and
            ``indices`` (n, N), the flat positions (``row * W + column``) the parts started
            from.
        """
        h, w, c = self._check_shape(inputs.shape)
        x = tf.convert_to_tensor(inputs)
        flat = tf.reshape(x, (-1, h * w, c))
        result = representative_vectors(
            flat,
            self.n_parts,
            TensorflowOps,
            selection=self.selection,
            refine=self.refine,
            rng=self._seed_generator,
            eps=EPS,
        )
        return {
            "vectors": result.vectors,
            "maps": tf.reshape(result.weights, (-1, self.n_parts, h, w)),
            "feature_norms": tf.reshape(result.norms, (-1, h, w)),
            "indices": result.indices,
        }

    def call(self, inputs: Any) -> Any:
        out = self.parts(inputs)
        vectors = tf.reshape(out["vectors"], (-1, self.n_parts * int(inputs.shape[-1])))
        return (vectors, out["maps"]) if self.return_maps else vectors

    def compute_output_shape(self, input_shape: Any) -> Any:
        h, w, c = self._check_shape(input_shape)
        vectors = (input_shape[0], self.n_parts * c)
        return (vectors, (input_shape[0], self.n_parts, h, w)) if self.return_maps else vectors

    def get_config(self) -> dict[str, Any]:
        config = super().get_config()
        config.update(
            n_parts=self.n_parts,
            selection=self.selection,
            refine=self.refine,
            return_maps=self.return_maps,
            seed=self.seed,
        )
        return config


def _strides_above_one(config: dict[str, Any]) -> bool:
    strides = config.get("strides")
    if strides is None:
        return False
    strides = strides if isinstance(strides, (tuple, list)) else (strides,)
    return max(strides) > 1


def reduce_stride(model: keras.Model, stages: str | Iterable[str]) -> keras.Model:
    """A copy of a functional Keras model whose ``stages`` no longer downsample.

    Every layer whose name starts with one of ``stages`` and has ``strides`` above 1
    (``Conv2D``, ``MaxPooling2D``...) gets strides 1; in
    ``keras.applications.ResNet50``, ``stages=("conv4_", "conv5_")`` are the paper's
    ``layer3`` and ``layer4``. The weights are copied, so the copy is a student
    initialised from the teacher.

    Parameters
    ----------
    model : keras.Model
        A functional or Sequential model; never modified.
    stages : str or iterable of str
        Prefixes of the names of the layers to change. Each must match a strided layer.

    Returns
    -------
    student : keras.Model
        A new model with the teacher's weights whose ``stages`` have stride 1 (their
        feature maps are larger by the removed strides).

    Notes
    -----
    Stride 1 keeps a layer's output the size of its input only with ``padding="same"``.
    Keras ResNets use ``"valid"`` 1x1 strided convolutions, which stay aligned; a model
    whose layers after the stage need a fixed spatial size (``Flatten`` then ``Dense``)
    cannot be changed this way, and building the copy fails.
    """
    prefixes = (stages,) if isinstance(stages, str) else tuple(stages)
    if not prefixes:
        raise ValueError("stages must name at least one stage; got none.")
    for prefix in prefixes:
        if not any(
            layer.name.startswith(prefix) and _strides_above_one(layer.get_config())
            for layer in model.layers
        ):
            raise ValueError(f"stages: no layer named {prefix!r}... has strides above 1.")

    def clone(layer: keras.layers.Layer) -> keras.layers.Layer:
        config = layer.get_config()
        if layer.name.startswith(prefixes) and _strides_above_one(config):
            config["strides"] = (1,) * len(config["strides"])
        return layer.__class__.from_config(config)

    student = keras.models.clone_model(model, clone_function=clone)
    student.set_weights(model.get_weights())
    return student


def distillation_loss(
    student_logits: Any,
    teacher_logits: Any,
    targets: Any,
    *,
    alpha: float = 0.5,
    temperature: float = 1.0,
) -> Any:
    """``alpha * CE + (1 - alpha) * T^2 * KL(teacher || student)``, batch-averaged.

    The Keras counterpart of :func:`sklearn_caf_torch.highres.distillation_loss`; the
    teacher's logits are constants (``stop_gradient``).

    Parameters
    ----------
    student_logits : tensor of shape (n, n_classes)
        The high-resolution student's logits.
    teacher_logits : tensor of shape (n, n_classes)
        The low-resolution teacher's logits; treated as constants (no gradient).
    targets : tensor of shape (n,), int
        True classes.
    alpha : float in [0, 1], default=0.5
        Weight of the cross-entropy with the labels; ``1 - alpha`` weighs the
        distillation term.
    temperature : float > 0, default=1.0
        Softening temperature ``T`` of both softmaxes; the KL term is multiplied by
        ``T^2`` so that its gradients keep their scale as ``T`` changes.

    Returns
    -------
    loss : scalar tensor
        The batch-averaged loss, differentiable with respect to ``student_logits``.

    Examples
    --------
    >>> import tensorflow as tf
    >>> from sklearn_caf_tensorflow.brnpa import distillation_loss
    >>> logits = tf.constant([[2.0, 0.0], [0.0, 2.0]])
    >>> float(distillation_loss(logits, logits, tf.constant([0, 1]), alpha=0.0))  # same outputs
    0.0
    """
    if not 0.0 <= alpha <= 1.0:
        raise ValueError(f"alpha must be in [0, 1]; got {alpha}.")
    if not temperature > 0:
        raise ValueError(f"temperature must be positive; got {temperature}.")
    student_logits = tf.convert_to_tensor(student_logits)
    teacher_logits = tf.stop_gradient(tf.convert_to_tensor(teacher_logits))
    ce = tf.reduce_mean(
        tf.nn.sparse_softmax_cross_entropy_with_logits(labels=targets, logits=student_logits)
    )
    log_student = tf.nn.log_softmax(student_logits / temperature, axis=1)
    log_teacher = tf.nn.log_softmax(teacher_logits / temperature, axis=1)
    kl = tf.reduce_mean(tf.reduce_sum(tf.exp(log_teacher) * (log_teacher - log_student), axis=1))
    return alpha * ce + (1.0 - alpha) * temperature**2 * kl
