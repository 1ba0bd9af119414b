"""A `WeightedModel` saved to `.keras` and reloaded resumes exactly where it stopped.

Each test compares a run stopped after two epochs, saved, reloaded and
trained two more epochs with an uninterrupted four-epoch run: the same
weights (network, scheme and optimizer state) and the same task weights.
"""

import keras
import numpy as np
import pytest

from keras_branching.weighting.dwa import DynamicWeightAverage
from keras_branching.weighting.gradnorm import GradNorm
from keras_branching.weighting.model import WeightedModel
from keras_branching.weighting.uncertainty import UncertaintyWeighting
from tests.weighting.helpers import make_builder, regression_data

SCHEMES = {
    "dwa": lambda tasks: DynamicWeightAverage(tasks, temperature=2.0),
    "uncertainty": lambda tasks: UncertaintyWeighting(tasks),
}
if keras.backend.backend() == "tensorflow":
    SCHEMES["gradnorm"] = lambda tasks: GradNorm(tasks, alpha=1.5)


def _weighted(scheme):
    builder = make_builder(learning_rate=0.02)
    keras.utils.set_random_seed(3)
    weighted = WeightedModel(
        builder.build(builder.shared_tree(), compile=False),
        SCHEMES[scheme](builder.task_names),
    )
    builder.compile(weighted)
    return weighted


def _fit(model, x, y, epochs):
    return model.fit(x, y, batch_size=32, epochs=epochs, shuffle=False, verbose=0).history


def _state(model):
    return {
        "weights": [np.asarray(w) for w in model.get_weights()],
        "optimizer": [keras.ops.convert_to_numpy(v) for v in model.optimizer.variables],
    }


@pytest.mark.parametrize("scheme", sorted(SCHEMES))
def test_stopped_and_resumed_matches_uninterrupted(scheme, tmp_path):
    # `a` is learnable, `b` noise: the DWA weights move away from 1.
    x, y = regression_data(num_examples=128, noise=(0.0, 3.0), scale=(1.0, 0.0))
    straight = _weighted(scheme)
    expected = _fit(straight, x, y, epochs=4)

    stopped = _weighted(scheme)
    first = _fit(stopped, x, y, epochs=2)
    path = str(tmp_path / "weighted.keras")
    stopped.save(path)
    resumed = keras.models.load_model(path)
    assert int(keras.ops.convert_to_numpy(resumed.optimizer.iterations)) == 8
    second = _fit(resumed, x, y, epochs=2)

    for key in ("loss", "a_weight", "b_weight"):
        np.testing.assert_allclose(
            first[key] + second[key], expected[key], rtol=1e-5, atol=1e-6, err_msg=key
        )
    want, got = _state(straight), _state(resumed)
    assert len(want["optimizer"]) == len(got["optimizer"])
    for part in ("weights", "optimizer"):
        for a, b in zip(want[part], got[part]):
            np.testing.assert_allclose(b, a, rtol=1e-5, atol=1e-6, err_msg=part)
    assert resumed.weighting.weights_dict() == pytest.approx(
        straight.weighting.weights_dict(), rel=1e-6
    )
    if scheme == "dwa":
        # The update after epoch 4 used the losses of epochs 3 and 4.
        assert int(keras.ops.convert_to_numpy(resumed.weighting.epochs_seen)) == 4
        assert expected["b_weight"][2] > 1.0 > expected["a_weight"][2]


def test_dwa_history_survives_a_reload(tmp_path):
    """Without its loss history a reloaded DWA would wait two epochs again."""
    weighting = DynamicWeightAverage(["a", "b"])
    weighting.update({"a": 1.0, "b": 1.0})
    builder = make_builder()
    weighted = WeightedModel(builder.build(builder.shared_tree(), compile=False), weighting)
    builder.compile(weighted)
    weighted(np.zeros((1, 4), "float32"))  # build it
    path = str(tmp_path / "dwa.keras")
    weighted.save(path)
    reloaded = keras.models.load_model(path).weighting
    assert int(keras.ops.convert_to_numpy(reloaded.epochs_seen)) == 1
    # One more epoch is enough for a ratio: b learns slower, so it gains weight.
    weights = reloaded.update({"a": 0.5, "b": 1.0})
    assert weights["b"] > 1.0 > weights["a"]
    assert weights == pytest.approx(weighting.update({"a": 0.5, "b": 1.0}))


@pytest.mark.parametrize("loss", [float("nan"), float("inf")])
def test_dwa_rejects_non_finite_epoch_losses(loss):
    with pytest.raises(ValueError, match=r"not finite for \['b'\]"):
        DynamicWeightAverage(["a", "b"]).update({"a": 1.0, "b": loss})
