import keras
import numpy as np
import pytest

from keras_branching.weighting.model import WeightedModel
from keras_branching.weighting.uncertainty import UncertaintyWeighting
from tests.weighting.helpers import make_builder, regression_data


def test_loss_formula():
    weighting = UncertaintyWeighting(["a", "b"], initial_log_variance=np.log(2.0))
    losses = keras.ops.convert_to_tensor([1.0, 3.0])
    # 0.5 * exp(-s) * L + 0.5 * s with exp(s) = 2.
    expected = 0.25 * 4.0 + np.log(2.0)
    np.testing.assert_allclose(float(weighting(losses)), expected, rtol=1e-6)
    np.testing.assert_allclose(list(weighting.weights_dict().values()), [0.25, 0.25])


def test_noisier_task_gets_smaller_weight():
    builder = make_builder(learning_rate=0.05)
    x, y = regression_data(noise=(0.05, 1.0))
    weighted = WeightedModel(
        builder.build(builder.shared_tree(), compile=False),
        UncertaintyWeighting(builder.task_names),
    )
    builder.compile(weighted)
    history = weighted.fit(x, y, batch_size=64, epochs=25, verbose=0).history
    weights = weighted.weighting.weights_dict()
    assert weights["b"] < 0.25 * weights["a"], weights
    # At the optimum exp(s_i) = L_i: the learned variance tracks the task's loss.
    variances = np.exp(keras.ops.convert_to_numpy(weighted.weighting.log_variances))
    assert variances[1] == pytest.approx(history["b_loss"][-1], rel=0.5)
    # Task a's loss keeps falling, so its weight keeps rising.
    assert history["a_weight"][-1] > 4 * history["a_weight"][0]


def test_config_round_trip():
    weighting = UncertaintyWeighting(["a", "b"], initial_log_variance=0.5, name="uw")
    clone = UncertaintyWeighting.from_config(weighting.get_config())
    assert clone.get_config() == weighting.get_config()
    assert clone.weights_dict() == pytest.approx(weighting.weights_dict())


@pytest.mark.parametrize(
    "kwargs, error",
    [
        ({"tasks": "ab"}, TypeError),
        ({"tasks": []}, ValueError),
        ({"tasks": ["a", "a"]}, ValueError),
        ({"tasks": ["a"], "initial_log_variance": "x"}, TypeError),
    ],
)
def test_rejects_bad_arguments(kwargs, error):
    with pytest.raises(error):
        UncertaintyWeighting(**kwargs)
