"""BR-NPA's Keras layer: agreement with the transformer and the torch layer, gradients,
training, and the high-resolution recipe for Keras."""

from __future__ import annotations

import doctest
import os

import numpy as np
import pytest

from sklearn_caf import BRNPAPooling

# As tests/conftest.py's import_tensorflow: torch (when installed) before TensorFlow, since
# the reverse order crashes in one process, and TensorFlow's logs quiet.
try:
    import torch  # noqa: F401
except ImportError:  # pragma: no cover - a TensorFlow-only environment
    pass
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "0")
tf = pytest.importorskip("tensorflow")
keras = pytest.importorskip("keras")
brnpa = pytest.importorskip("sklearn_caf_tensorflow.brnpa")
try:  # tiny tensors: intra-op threads only contend with pytest-xdist's workers
    tf.config.threading.set_intra_op_parallelism_threads(1)
except RuntimeError:  # TensorFlow already ran something in this process
    pass


def _features(seed=0, shape=(4, 5, 6, 7)):
    X = np.random.default_rng(seed).random(shape)  # NHWC
    X[:, 0, 0, :] = 0.0  # a zero vector in each map
    return X


def test_keras_layer_agrees_with_the_transformer_and_torch():
    X = _features()
    pool = BRNPAPooling(n_parts=3, channel_axis=-1).fit(X)
    for dtype, tol in (("float64", 1e-12), ("float32", 2e-5)):
        layer = brnpa.BRNPAPooling2D(3, return_maps=True, dtype=dtype)
        vectors, maps = layer(tf.constant(X, dtype=dtype))
        np.testing.assert_allclose(vectors.numpy(), pool.transform(X), rtol=tol)
        np.testing.assert_allclose(maps.numpy(), pool.attention_maps(X), rtol=tol)
    no_refine = brnpa.BRNPAPooling2D(3, refine=False, dtype="float64")(tf.constant(X))
    np.testing.assert_allclose(
        no_refine.numpy(),
        BRNPAPooling(n_parts=3, refine=False, channel_axis=-1).fit(X).transform(X),
        rtol=1e-12,
    )
    torch = pytest.importorskip("torch")
    from sklearn_caf_torch.brnpa import BRNPAPool2d

    nchw = torch.as_tensor(np.moveaxis(X, -1, 1))
    np.testing.assert_allclose(
        BRNPAPool2d(3)(nchw).numpy(),
        brnpa.BRNPAPooling2D(3, dtype="float64")(tf.constant(X)).numpy(),
        rtol=1e-12,
    )


def test_keras_layer_gradients_flow():
    x = tf.Variable(_features(1) + 0.1)
    layer = brnpa.BRNPAPooling2D(3, return_maps=True, dtype="float64")
    with tf.GradientTape() as tape:
        vectors, maps = layer(x)
        loss = tf.reduce_sum(vectors) + tf.reduce_sum(maps**2)
    grad = tape.gradient(loss, x)
    assert grad is not None and np.isfinite(grad.numpy()).all() and (grad.numpy() != 0).any()
    zero = tf.Variable(np.zeros((1, 3, 3, 4)))
    with tf.GradientTape() as tape:
        loss = tf.reduce_sum(brnpa.BRNPAPooling2D(2, dtype="float64")(zero))
    assert np.isfinite(tape.gradient(loss, zero).numpy()).all()


def test_keras_layer_in_a_model_trains_and_serializes(tmp_path):
    keras.utils.set_random_seed(0)
    model = keras.Sequential(
        [
            keras.Input((8, 8, 3)),
            keras.layers.Conv2D(4, 3, padding="same", activation="relu"),
            brnpa.BRNPAPooling2D(2),
            keras.layers.Dense(3),
        ]
    )
    model.compile(
        optimizer="sgd", loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    )
    X = np.random.default_rng(0).random((6, 8, 8, 3)).astype("float32")
    y = np.arange(6) % 3
    before = [w.copy() for w in model.get_weights()]
    model.fit(X, y, epochs=1, verbose=0)
    assert any(not np.allclose(a, b) for a, b in zip(before, model.get_weights(), strict=True))
    path = tmp_path / "model.keras"
    model.save(path)
    loaded = keras.models.load_model(path)
    np.testing.assert_allclose(loaded.predict(X, verbose=0), model.predict(X, verbose=0))
    assert loaded.layers[1].get_config()["n_parts"] == 2
    layer = brnpa.BRNPAPooling2D(2, return_maps=True)
    assert layer.compute_output_shape((None, 5, 6, 7)) == ((None, 14), (None, 2, 5, 6))


def test_keras_random_selection_and_errors():
    parts = brnpa.BRNPAPooling2D(3, selection="random", seed=0).parts(
        tf.constant(_features(2), dtype="float32")
    )
    indices = parts["indices"].numpy()
    assert all(len(set(row)) == 3 for row in indices)
    with pytest.raises(ValueError, match="n_parts must be a positive int"):
        brnpa.BRNPAPooling2D(0)
    with pytest.raises(ValueError, match="selection must be"):
        brnpa.BRNPAPooling2D(selection="max")
    with pytest.raises(ValueError, match=r"\(n, H, W, C\)"):
        brnpa.BRNPAPooling2D()(tf.zeros((2, 3, 4)))


def _keras_resnet():
    """A functional ResNet-style model: stem, then two stages with a strided first block."""
    inputs = keras.Input((32, 32, 3))
    x = keras.layers.Conv2D(4, 3, strides=2, padding="same", activation="relu", name="stem")(
        inputs
    )
    for stage, width in (("stage1_", 8), ("stage2_", 16)):
        shortcut = keras.layers.Conv2D(width, 1, strides=2, name=stage + "shortcut")(x)
        y = keras.layers.Conv2D(
            width, 3, strides=2, padding="same", activation="relu", name=stage + "conv1"
        )(x)
        y = keras.layers.Conv2D(width, 3, padding="same", name=stage + "conv2")(y)
        x = keras.layers.ReLU(name=stage + "out")(keras.layers.Add()([y, shortcut]))
    features = x
    outputs = keras.layers.Dense(3)(brnpa.BRNPAPooling2D(3)(features))
    return keras.Model(inputs, outputs), keras.Model(inputs, features)


def test_keras_reduce_stride_and_distillation():
    keras.utils.set_random_seed(0)
    teacher, _ = _keras_resnet()
    student = brnpa.reduce_stride(teacher, ("stage1_", "stage2_"))
    feature_model = keras.Model(student.input, student.get_layer("stage2_out").output)
    x = np.random.default_rng(0).random((2, 32, 32, 3)).astype("float32")
    assert teacher.get_layer("stage2_out").output.shape[1:3] == (4, 4)
    assert feature_model(x).shape[1:3] == (16, 16)
    assert teacher.get_layer("stage1_conv1").strides == (2, 2)  # unchanged
    for a, b in zip(teacher.get_weights(), student.get_weights(), strict=True):
        np.testing.assert_array_equal(a, b)
    with pytest.raises(ValueError, match="no layer named 'stem2'"):
        brnpa.reduce_stride(teacher, "stem2")

    s = np.random.default_rng(1).standard_normal((5, 4))
    t = np.random.default_rng(2).standard_normal((5, 4))
    y = np.array([0, 1, 2, 3, 0])
    alpha, temp = 0.3, 4.0

    def log_softmax(z):
        z = z - z.max(axis=1, keepdims=True)
        return z - np.log(np.exp(z).sum(axis=1, keepdims=True))

    p_t = np.exp(log_softmax(t / temp))
    kl = np.mean(np.sum(p_t * (np.log(p_t) - log_softmax(s / temp)), axis=1))
    ce = -np.mean(log_softmax(s)[np.arange(5), y])
    loss = brnpa.distillation_loss(s, t, y, alpha=alpha, temperature=temp)
    np.testing.assert_allclose(float(loss), alpha * ce + (1 - alpha) * temp**2 * kl, rtol=1e-10)
    with pytest.raises(ValueError, match="alpha must be in"):
        brnpa.distillation_loss(s, t, y, alpha=-0.1)


def test_transformer_accepts_tensorflow_tensors_and_docstring_examples():
    X = _features(3).astype("float32")
    pool = BRNPAPooling(channel_axis=-1).fit(tf.constant(X))
    np.testing.assert_array_equal(pool.transform(tf.constant(X)), pool.transform(X))
    finder, runner = doctest.DocTestFinder(), doctest.DocTestRunner(verbose=False)
    for test in finder.find(brnpa):
        runner.run(test)
    assert runner.failures == 0 and runner.tries > 0
