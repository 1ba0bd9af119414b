import keras
import numpy as np
import pytest

from keras_branching.layers.gated_route import GatedRoute
from tests.layer_checks import check_layer


@pytest.mark.parametrize("num_inputs", [1, 3])
def test_layer_checks(tmp_path, num_inputs):
    check_layer(
        lambda: GatedRoute(num_inputs, kernel_initializer="glorot_uniform"),
        [(6,)] + [(4,)] * num_inputs,
        tmp_path,
        multi_input=True,
        trainable_weights=2,
    )


def test_rank3_inputs(tmp_path):
    check_layer(
        lambda: GatedRoute(2),
        [(3,), (5, 2), (5, 2)],
        tmp_path,
        multi_input=True,
        trainable_weights=2,
    )


def test_is_softmax_gated_sum():
    rng = np.random.default_rng(0)
    query = rng.standard_normal((5, 3)).astype("float32")
    xs = [rng.standard_normal((5, 4)).astype("float32") for _ in range(3)]
    layer = GatedRoute(3, kernel_initializer="glorot_uniform", bias_initializer="ones")
    out = np.asarray(layer([query, *xs]))
    kernel, bias = (np.asarray(w) for w in layer.weights)
    logits = query @ kernel + bias
    gates = np.exp(logits - logits.max(1, keepdims=True))
    gates /= gates.sum(1, keepdims=True)
    expected = sum(gates[:, i : i + 1] * xs[i] for i in range(3))
    np.testing.assert_allclose(out, expected, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(np.asarray(layer.gates(query)).sum(1), 1.0, rtol=1e-6)


def test_single_input_is_identity():
    x = np.arange(8, dtype="float32").reshape(2, 4)
    out = GatedRoute(1, kernel_initializer="glorot_uniform")([np.ones((2, 3), "float32"), x])
    np.testing.assert_allclose(np.asarray(out), x)


def test_without_bias_has_only_a_kernel():
    layer = GatedRoute(2, use_bias=False)
    layer([np.ones((1, 3), "float32")] + [np.ones((1, 2), "float32")] * 2)
    assert [w.name for w in layer.weights] == ["kernel"]


@pytest.mark.parametrize("bad", [0, -1])
def test_rejects_num_inputs_below_one(bad):
    with pytest.raises(ValueError, match=rf"num_inputs={bad}"):
        GatedRoute(bad)


def test_rejects_non_int_num_inputs():
    with pytest.raises(TypeError, match="num_inputs=2.0"):
        GatedRoute(2.0)


def test_rejects_wrong_number_of_tensors():
    with pytest.raises(ValueError, match="Expected a list of 3 tensors"):
        GatedRoute(2)([keras.Input((3,)), keras.Input((2,))])


def test_rejects_mismatched_shapes():
    with pytest.raises(ValueError, match="same shape"):
        GatedRoute(2)([keras.Input((3,)), keras.Input((2,)), keras.Input((4,))])


def test_rejects_rank3_query():
    with pytest.raises(ValueError, match="gate query"):
        GatedRoute(2)([keras.Input((3, 3)), keras.Input((2,)), keras.Input((2,))])
