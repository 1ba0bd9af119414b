import keras
import numpy as np
import pytest
import tensorflow as tf

from keras_branching.builder import BranchedModelBuilder
from keras_branching.datasets.missing import mask_missing
from keras_branching.task import Task
from keras_branching.weighting.model import WeightedModel
from keras_branching.weighting.uncertainty import UncertaintyWeighting


def _builder():
    return BranchedModelBuilder(
        inputs=(4,),
        blocks=[lambda: keras.layers.Dense(8, activation="tanh")],
        tasks=[Task(n, head=lambda: keras.layers.Dense(1), loss="mse") for n in "ab"],
        optimizer=keras.optimizers.Adam(0.05),
    )


def _data(num_examples=16):
    rng = np.random.default_rng(0)
    x = rng.standard_normal((num_examples, 4)).astype("float32")
    y = {
        "a": rng.standard_normal((num_examples, 1)).astype("float32"),
        "b": np.full((num_examples, 1), np.nan, "float32"),
    }
    return x, y


def _values(layer):
    return [np.array(w) for w in layer.get_weights()]


def _assert_only_b_frozen(model, before):
    for name, values in before.items():
        after = _values(model.get_layer(name))
        same = all(np.array_equal(a, b) for a, b in zip(values, after))
        assert same == (name == "head_b"), name


def test_all_missing_task_leaves_its_head_unchanged():
    builder = _builder()
    model = builder.build(builder.shared_tree())
    x, y = _data()
    names = ["head_a", "head_b", "block1_shared"]
    before = {n: _values(model.get_layer(n)) for n in names}
    x, y, weights = mask_missing(x, y)
    history = model.fit(x, y, sample_weight=weights, batch_size=16, epochs=1, verbose=0).history
    assert np.isfinite(history["loss"][0])
    _assert_only_b_frozen(model, before)


def test_all_missing_task_with_a_dataset_and_a_weighting():
    builder = _builder()
    weighted = WeightedModel(
        builder.build(builder.shared_tree(), compile=False), UncertaintyWeighting(["a", "b"])
    )
    builder.compile(weighted)
    x, y = _data()
    dataset = mask_missing(tf.data.Dataset.from_tensor_slices((x, y)).batch(8))
    before = {n: _values(weighted.model.get_layer(n)) for n in ["head_a", "head_b"]}
    history = weighted.fit(dataset, epochs=1, shuffle=False, verbose=0).history
    assert history["b_loss"] == [0.0]
    _assert_only_b_frozen(weighted.model, before)


def test_missing_labels_do_not_count_in_weighted_metrics_or_mean_loss():
    inputs = keras.Input((1,))
    model = keras.Model(inputs, {"a": keras.layers.Identity()(inputs)})
    model.compile(
        loss={"a": keras.losses.MeanSquaredError(reduction="mean_with_sample_weight")},
        weighted_metrics={"a": [keras.metrics.MeanAbsoluteError(name="mae")]},
    )
    x = np.zeros((4, 1), "float32")
    y = {"a": np.array([[1.0], [np.nan], [3.0], [np.nan]], "float32")}
    x, y, weights = mask_missing(x, y)
    result = model.evaluate(x, y, sample_weight=weights, verbose=0, return_dict=True)
    assert result["mae"] == pytest.approx(2.0)  # mean of |1| and |3| only
    assert result["loss"] == pytest.approx(5.0)  # mean of 1 and 9 only


def test_numpy_and_dataset_forms_agree():
    x = np.arange(8, dtype="float32").reshape(4, 2)
    y = {
        "reg": np.array([[1.0, 2.0], [np.nan, np.nan], [3.0, 4.0], [5.0, 6.0]], "float32"),
        "cls": np.array([2, -1, 0, -1]),
    }
    weights = np.array([1.0, 2.0, 3.0, 4.0], "float32")
    _, y_np, w_np = mask_missing(x, y, sample_weight=weights, missing_value={"cls": -1})
    assert w_np["reg"].tolist() == [1.0, 0.0, 3.0, 4.0]
    assert w_np["cls"].tolist() == [1.0, 0.0, 3.0, 0.0]
    assert y_np["cls"].tolist() == [2, 0, 0, 0]
    assert not np.isnan(y_np["reg"]).any()
    dataset = tf.data.Dataset.from_tensor_slices((x, y, weights)).batch(4)
    _, y_tf, w_tf = next(iter(mask_missing(dataset, missing_value={"cls": -1})))
    for task in y:
        np.testing.assert_array_equal(y_tf[task].numpy(), y_np[task])
        np.testing.assert_array_equal(w_tf[task].numpy(), w_np[task])


def test_per_task_sample_weights_and_sentinel():
    x = np.zeros((3, 1))
    y = {"a": np.array([0.0, -1.0, 2.0]), "b": np.array([1.0, 1.0, np.nan])}
    _, filled, weights = mask_missing(
        x, y, sample_weight={"a": [2.0, 2.0, 2.0]}, missing_value={"a": -1}, fill_value=7
    )
    assert weights["a"].tolist() == [2.0, 0.0, 2.0]
    assert weights["b"].tolist() == [1.0, 1.0, 0.0]
    assert filled["a"].tolist() == [0.0, 7.0, 2.0]
    assert filled["b"].tolist() == [1.0, 1.0, 7.0]


def test_partly_missing_label_is_rejected():
    y = {"a": np.array([[1.0, np.nan], [1.0, 2.0]])}
    with pytest.raises(ValueError, match="partly missing"):
        mask_missing(np.zeros((2, 1)), y)
    dataset = mask_missing(tf.data.Dataset.from_tensor_slices((np.zeros((2, 1)), y)).batch(2))
    with pytest.raises(tf.errors.InvalidArgumentError, match="partly missing"):
        next(iter(dataset))


@pytest.mark.parametrize(
    "kwargs, error, match",
    [
        ({"y": [1.0]}, TypeError, "dict of label arrays"),
        ({"y": {"a": [1.0]}, "missing_value": "nan"}, TypeError, "missing_value"),
        ({"y": {"a": [1.0]}, "fill_value": None}, TypeError, "fill_value"),
        ({"y": {"a": [1.0], "b": [1.0, 2.0]}}, ValueError, "same length"),
        ({"y": {"a": [1.0]}, "sample_weight": {"c": [1.0]}}, ValueError, "Unknown tasks"),
    ],
)
def test_rejects_bad_arguments(kwargs, error, match):
    with pytest.raises(error, match=match):
        mask_missing(np.zeros((1, 1)), **kwargs)


def test_dataset_takes_labels_inside():
    dataset = tf.data.Dataset.from_tensor_slices((np.zeros((2, 1)), {"a": np.zeros(2)}))
    with pytest.raises(ValueError, match="inside"):
        mask_missing(dataset, y={"a": np.zeros(2)})
