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


def test_task_without_labels_is_left_out():
    weighting = UncertaintyWeighting(["a", "b"])
    weighting.log_variances.assign([0.0, 1.0])
    losses = keras.ops.convert_to_tensor([2.0, 0.0])
    # Only task a: 0.5 * exp(0) * 2 + 0.5 * 0.
    assert float(weighting(losses, keras.ops.convert_to_tensor([1.0, 0.0]))) == pytest.approx(1.0)
    assert float(weighting(losses)) == pytest.approx(1.5)


def test_all_missing_task_keeps_its_log_variance():
    from keras_branching.datasets.missing import mask_missing

    builder = make_builder(learning_rate=0.05)
    x, y = regression_data(num_examples=64)
    y["b"][:] = np.nan
    x, y, sample_weight = mask_missing(x, y)
    weighted = WeightedModel(
        builder.build(builder.shared_tree(), compile=False),
        UncertaintyWeighting(builder.task_names),
    )
    builder.compile(weighted)
    weighted.fit(x, y, sample_weight=sample_weight, batch_size=16, epochs=2, verbose=0)
    log_variances = keras.ops.convert_to_numpy(weighted.weighting.log_variances)
    assert log_variances[1] == 0.0 and log_variances[0] != 0.0


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
