import keras
import numpy as np
import pytest

from keras_branching.layers.joint_components import JointComponents
from tests.layer_checks import check_layer


def test_layer_checks_stack(tmp_path):
    check_layer(
        lambda: JointComponents([keras.layers.Dense(3), keras.layers.Dense(3, use_bias=False)]),
        input_shapes=[(4,), (4,)],
        tmp_path=tmp_path,
        multi_input=True,
        trainable_weights=3,
    )


def test_layer_checks_one_component_on_images(tmp_path):
    check_layer(
        lambda: JointComponents([keras.layers.Conv2D(2, 3, padding="same")], reduce="none"),
        input_shapes=[(5, 5, 2), (5, 5, 2), (5, 5, 2)],
        tmp_path=tmp_path,
        multi_input=True,
        trainable_weights=2,
    )


def test_each_task_gets_the_components_of_its_own_examples():
    first, second = keras.layers.Dense(2), keras.layers.Dense(2)
    joint = JointComponents([first, second])
    a, b = np.ones((2, 3), "float32"), np.full((4, 3), 2.0, "float32")
    out_a, out_b = joint([a, b])
    np.testing.assert_allclose(out_a[:, 0], first(a), rtol=1e-6)
    np.testing.assert_allclose(out_b[:, 1], second(b), rtol=1e-6)
    (single,) = JointComponents([first], reduce="none")([a])
    np.testing.assert_allclose(single, first(a), rtol=1e-6)


def test_bad_arguments():
    with pytest.raises(ValueError, match="reduce='mean'"):
        JointComponents([keras.layers.Dense(2)], reduce="mean")
    with pytest.raises(ValueError, match="exactly one with reduce='none'"):
        JointComponents([keras.layers.Dense(2)] * 2, reduce="none")
    with pytest.raises(ValueError, match="at least one component"):
        JointComponents([])
    with pytest.raises(TypeError, match="components="):
        JointComponents(keras.layers.Dense(2))
    joint = JointComponents([keras.layers.Dense(2), keras.layers.Dense(3)])
    with pytest.raises(ValueError, match="outputs of one shape"):
        joint([np.ones((2, 3), "float32")])
