import keras
import numpy as np
import pytest
import tensorflow as tf

from keras_branching.layers import BranchPoint
from tests.layer_checks import check_layer, requires_tensorflow


@pytest.mark.parametrize("gradient_scale", [None, "mean"])
def test_layer_checks(tmp_path, gradient_scale):
    check_layer(lambda: BranchPoint(3, gradient_scale=gradient_scale), [(5,)], tmp_path)


def test_importable_from_top_level():
    import keras_branching

    assert keras_branching.BranchPoint is BranchPoint


def test_outputs_equal_input():
    x = np.random.default_rng(0).standard_normal((2, 3, 4)).astype("float32")
    outputs = BranchPoint(3, gradient_scale="mean")(x)
    assert len(outputs) == 3
    for out in outputs:
        np.testing.assert_array_equal(np.asarray(out), x)  # bit for bit


@requires_tensorflow
@pytest.mark.parametrize("gradient_scale, factor", [(None, 1.0), ("mean", 1 / 4)])
def test_gradient_scale(gradient_scale, factor):
    x = tf.constant(np.ones((2, 3), "float32"))
    layer = BranchPoint(4, gradient_scale=gradient_scale)
    with tf.GradientTape() as tape:
        tape.watch(x)
        loss = sum(tf.reduce_sum(b) for b in layer(x))
    # Four branches each contribute 1 per element: sum -> 4, mean -> 1.
    np.testing.assert_allclose(tape.gradient(loss, x).numpy(), 4 * factor)


def test_single_branch():
    assert len(BranchPoint(1)(np.zeros((1, 2), "float32"))) == 1


@pytest.mark.parametrize("bad", [0, -2])
def test_rejects_num_branches_below_one(bad):
    with pytest.raises(ValueError, match=rf"num_branches={bad}"):
        BranchPoint(bad)


def test_rejects_non_int_num_branches():
    with pytest.raises(TypeError, match="num_branches=2.0"):
        BranchPoint(2.0)


def test_rejects_unknown_gradient_scale():
    with pytest.raises(ValueError, match="gradient_scale='sum'"):
        BranchPoint(2, gradient_scale="sum")


def test_rejects_list_input():
    with pytest.raises(ValueError, match="single tensor"):
        BranchPoint(2)([keras.ops.zeros((1, 2)), keras.ops.zeros((1, 2))])
