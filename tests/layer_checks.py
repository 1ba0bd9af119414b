"""The checks every keras_branching layer must pass (style.md).

`check_layer(make_layer, input_shapes, tmp_path)` builds a small functional
model around a fresh layer and runs: config round trip, symbolic output
shapes, a `fit` step, `.keras` save and reload without `custom_objects`,
SavedModel export with deterministic serving equal to `predict`, a
forward pass under the `mixed_float16` policy and, as Keras's own
`run_layer_test` does, the expected numbers of trainable and non-trainable
weights, seed generators and losses.
"""

import keras
import numpy as np
import pytest
import tensorflow as tf

BATCH = 4

# Tests that differentiate with `tf.GradientTape` directly; the layers
# themselves are backend-agnostic and pass the checks below on JAX too.
requires_tensorflow = pytest.mark.skipif(
    keras.backend.backend() != "tensorflow",
    reason="differentiates with tf.GradientTape; the layer itself is backend-agnostic",
)


def _as_list(x):
    return list(x) if isinstance(x, (list, tuple)) else [x]


def _model(make_layer, input_shapes, multi_input):
    inputs = [keras.Input(shape) for shape in input_shapes]
    # A trainable projection before the layer, so `fit` has weights to move
    # and gradients flow through the layer under test.
    projected = [keras.layers.Dense(shape[-1])(x) for shape, x in zip(input_shapes, inputs)]
    layer = make_layer()
    outputs = layer(projected if multi_input else projected[0])
    return keras.Model(inputs if len(inputs) > 1 else inputs[0], outputs), layer


def _data(input_shapes, seed=0):
    rng = np.random.default_rng(seed)
    data = [rng.standard_normal((BATCH, *s)).astype("float32") for s in input_shapes]
    return data if len(data) > 1 else data[0]


def check_config_round_trip(make_layer):
    layer = make_layer()
    clone = layer.__class__.from_config(layer.get_config())
    assert clone.get_config() == layer.get_config()


def check_symbolic_shapes(make_layer, input_shapes, multi_input):
    model, layer = _model(make_layer, input_shapes, multi_input)
    symbolic = [tuple(t.shape) for t in _as_list(model.output)]
    full = [(None, *s) for s in input_shapes]
    declared = layer.compute_output_shape(full if multi_input else full[0])
    declared = declared if isinstance(declared, list) else [declared]
    assert [tuple(s) for s in declared] == symbolic
    actual = _as_list(model(_data(input_shapes)))
    assert [tuple(a.shape)[1:] for a in actual] == [s[1:] for s in symbolic]


def check_fit_step(make_layer, input_shapes, multi_input):
    model, _ = _model(make_layer, input_shapes, multi_input)
    outputs = _as_list(model.output)
    model.compile("adam", loss=["mse"] * len(outputs))
    targets = [np.zeros((BATCH, *t.shape[1:]), "float32") for t in outputs]
    before = [w.numpy().copy() for w in model.trainable_weights]
    history = model.fit(_data(input_shapes), targets, epochs=1, verbose=0)
    assert np.isfinite(history.history["loss"][0])
    after = [w.numpy() for w in model.trainable_weights]
    assert any(not np.array_equal(a, b) for a, b in zip(before, after))


def check_save_and_export(make_layer, input_shapes, multi_input, tmp_path):
    model, _ = _model(make_layer, input_shapes, multi_input)
    x = _data(input_shapes)
    expected = [np.asarray(o) for o in _as_list(model.predict(x, verbose=0))]

    path = str(tmp_path / "layer_model.keras")
    model.save(path)
    reloaded = keras.models.load_model(path)  # no custom_objects on purpose
    for a, b in zip(expected, _as_list(reloaded.predict(x, verbose=0))):
        np.testing.assert_array_equal(a, np.asarray(b))

    export_dir = str(tmp_path / "layer_saved_model")
    model.export(export_dir, format="tf_saved_model", verbose=False)
    served = tf.saved_model.load(export_dir)
    first = [np.asarray(o) for o in tf.nest.flatten(served.serve(x))]
    second = [np.asarray(o) for o in tf.nest.flatten(served.serve(x))]
    for a, b, c in zip(first, second, expected):
        np.testing.assert_array_equal(a, b)
        np.testing.assert_allclose(a, c, rtol=1e-5, atol=1e-6)


def check_mixed_precision(make_layer, input_shapes, multi_input):
    keras.config.set_dtype_policy("mixed_float16")
    try:
        model, _ = _model(make_layer, input_shapes, multi_input)
        outputs = _as_list(model(_data(input_shapes)))
        for out in outputs:
            assert keras.backend.standardize_dtype(out.dtype) == "float16"
            assert np.all(np.isfinite(np.asarray(out, dtype="float32")))
    finally:
        keras.config.set_dtype_policy("float32")


def check_counts(make_layer, input_shapes, multi_input, counts):
    """The built layer has the expected numbers of weights, seed generators, losses."""
    model, layer = _model(make_layer, input_shapes, multi_input)
    model(_data(input_shapes), training=True)
    actual = {
        "trainable_weights": len(layer.trainable_weights),
        "non_trainable_weights": len(layer.non_trainable_weights),
        "seed_generators": len(layer._seed_generators),
        "losses": len(layer.losses),
    }
    assert actual == counts, f"expected {counts}, found {actual}"


def check_layer(
    make_layer,
    input_shapes,
    tmp_path,
    multi_input=False,
    trainable_weights=0,
    non_trainable_weights=0,
    seed_generators=0,
    losses=0,
):
    """Runs every layer check.

    Args:
        make_layer: zero-argument callable returning a fresh layer.
        input_shapes: list of input shapes (without batch axis); one per
            input tensor of the layer.
        tmp_path: a temporary directory (pytest's `tmp_path`).
        multi_input: whether the layer is called on a list of tensors.
        trainable_weights, non_trainable_weights, seed_generators, losses:
            what the layer owns once built and called in training.
    """
    counts = {
        "trainable_weights": trainable_weights,
        "non_trainable_weights": non_trainable_weights,
        "seed_generators": seed_generators,
        "losses": losses,
    }
    check_counts(make_layer, input_shapes, multi_input, counts)
    check_config_round_trip(make_layer)
    check_symbolic_shapes(make_layer, input_shapes, multi_input)
    check_fit_step(make_layer, input_shapes, multi_input)
    check_save_and_export(make_layer, input_shapes, multi_input, tmp_path)
    check_mixed_precision(make_layer, input_shapes, multi_input)
