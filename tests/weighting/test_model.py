import keras
import numpy as np
import pytest

from keras_branching.weighting.dwa import DynamicWeightAverage
from keras_branching.weighting.model import WeightedModel
from keras_branching.weighting.uncertainty import UncertaintyWeighting
from tests.weighting.helpers import make_builder, regression_data


def test_equal_fixed_weights_match_the_plain_model():
    """With weights that stay 1, the wrapper trains exactly like `builder.build`."""
    builder = make_builder()
    x, y = regression_data(num_examples=64)
    tree = builder.shared_tree()
    keras.utils.set_random_seed(1)
    plain = builder.build(tree)
    keras.utils.set_random_seed(1)
    weighted = WeightedModel(builder.build(tree, compile=False), DynamicWeightAverage(["a", "b"]))
    builder.compile(weighted)
    expected = plain.fit(x, y, batch_size=16, epochs=2, shuffle=False, verbose=0).history
    actual = weighted.fit(x, y, batch_size=16, epochs=2, shuffle=False, verbose=0).history
    np.testing.assert_allclose(actual["loss"], expected["loss"], rtol=1e-5)
    for a, b in zip(plain.get_weights(), weighted.model.get_weights()):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)


def test_save_and_reload(tmp_path):
    builder = make_builder()
    x, y = regression_data(num_examples=32)
    weighted = WeightedModel(
        builder.build(builder.shared_tree(), compile=False), UncertaintyWeighting(["a", "b"])
    )
    builder.compile(weighted)
    weighted.fit(x, y, epochs=1, verbose=0)
    path = str(tmp_path / "weighted.keras")
    weighted.save(path)
    reloaded = keras.models.load_model(path)
    np.testing.assert_allclose(
        keras.ops.convert_to_numpy(reloaded.weighting.log_variances),
        keras.ops.convert_to_numpy(weighted.weighting.log_variances),
    )
    for key in "ab":
        np.testing.assert_allclose(
            reloaded.predict(x, verbose=0)[key], weighted.predict(x, verbose=0)[key], rtol=1e-6
        )
    assert reloaded.evaluate(x, y, verbose=0, return_dict=True)["loss"] == pytest.approx(
        weighted.evaluate(x, y, verbose=0, return_dict=True)["loss"], rel=1e-5
    )


def test_the_plain_model_has_no_weighting():
    builder = make_builder()
    model = builder.build(builder.shared_tree(), compile=False)
    weighted = WeightedModel(model, UncertaintyWeighting(["a", "b"]))
    assert weighted.model is model
    assert not any("log_variances" in w.path for w in model.weights)


def test_rejects_mismatched_tasks_and_losses():
    builder = make_builder()
    model = builder.build(builder.shared_tree(), compile=False)
    with pytest.raises(TypeError, match="LossWeighting"):
        WeightedModel(model, "uncertainty")
    with pytest.raises(TypeError, match="Keras model"):
        WeightedModel(object(), UncertaintyWeighting(["a", "b"]))
    with pytest.raises(ValueError, match="differ"):
        WeightedModel(model, UncertaintyWeighting(["a", "c"]))
    weighted = WeightedModel(model, UncertaintyWeighting(["a", "b"]))
    with pytest.raises(ValueError, match="one loss per task"):
        weighted.compile("adam", loss="mse")
    with pytest.raises(ValueError, match="Unknown tasks"):
        weighted.compile("adam", loss={"a": "mse", "b": "mse"}, loss_weights={"c": 1.0})
