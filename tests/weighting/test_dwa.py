import numpy as np
import pytest

from keras_branching.weighting.dwa import DynamicWeightAverage
from keras_branching.weighting.model import WeightedModel
from tests.weighting.helpers import make_builder, regression_data


def test_slower_task_gains_weight():
    weighting = DynamicWeightAverage(["a", "b", "c"], temperature=2.0)
    assert weighting.update({"a": 1.0, "b": 1.0, "c": 1.0}) == {"a": 1.0, "b": 1.0, "c": 1.0}
    weights = weighting.update({"a": 0.25, "b": 0.5, "c": 1.0})
    assert weights["c"] > weights["b"] > weights["a"]
    assert sum(weights.values()) == pytest.approx(3.0)
    # The paper's formula: K softmax(r / T).
    ratios = np.array([0.25, 0.5, 1.0]) / 2.0
    expected = 3 * np.exp(ratios) / np.exp(ratios).sum()
    np.testing.assert_allclose(list(weights.values()), expected, rtol=1e-6)


def test_temperature_evens_the_weights():
    spread = {}
    for temperature in (0.5, 10.0):
        weighting = DynamicWeightAverage(["a", "b"], temperature=temperature)
        weighting.update({"a": 1.0, "b": 1.0})
        weights = weighting.update({"a": 0.5, "b": 1.0})
        spread[temperature] = weights["b"] - weights["a"]
    assert spread[0.5] > spread[10.0] > 0


def test_fit_updates_weights_each_epoch():
    builder = make_builder(learning_rate=0.02)
    # `a` is learnable; `b` is pure noise, so its loss barely falls.
    x, y = regression_data(noise=(0.0, 3.0), scale=(1.0, 0.0))
    weighted = WeightedModel(
        builder.build(builder.shared_tree(), compile=False),
        DynamicWeightAverage(builder.task_names),
    )
    builder.compile(weighted)
    history = weighted.fit(x, y, batch_size=64, epochs=4, verbose=0).history
    # Epochs 1 and 2 train with equal weights; epoch 3 with the update.
    assert history["a_weight"][:2] == pytest.approx([1.0, 1.0])
    assert history["b_weight"][2] > 1.0 > history["a_weight"][2]
    weights = weighted.weighting.weights_dict()
    assert weights["b"] > weights["a"]
    assert int(weighted.weighting.epochs_seen.numpy()) == 4


def test_callback_needs_logged_task_losses():
    weighting = DynamicWeightAverage(["a", "b"])
    (callback,) = weighting.callbacks()
    with pytest.raises(ValueError, match="a_loss"):
        callback.on_epoch_end(0, {"loss": 1.0})


@pytest.mark.parametrize("temperature", [0, -1, float("nan"), "2"])
def test_rejects_bad_temperature(temperature):
    with pytest.raises(ValueError, match="Expected `temperature` > 0"):
        DynamicWeightAverage(["a", "b"], temperature=temperature)


def test_update_needs_every_task():
    with pytest.raises(ValueError, match="missing"):
        DynamicWeightAverage(["a", "b"]).update({"a": 1.0})
