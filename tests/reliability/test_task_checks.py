"""`Task` and `mask_missing` reject bad arguments up front, naming the value."""

import keras
import numpy as np
import pytest

import keras_branching as kb
from keras_branching._validation import sanitize_name
from keras_branching.datasets import mask_missing
from keras_branching.datasets.omniglot import ALPHABET_ORDER
from keras_branching.task import check_task_name, check_tasks


def _head():
    return keras.layers.Dense(1)


def _task(name="a", **kwargs):
    kwargs.setdefault("loss", "mse")
    return kb.Task(name, head=_head, **kwargs)


# `loss_weight`.


@pytest.mark.parametrize("weight", [float("nan"), float("inf"), -float("inf"), -0.5])
def test_loss_weight_must_be_finite_and_non_negative(weight):
    with pytest.raises(ValueError, match=rf"finite number >= 0\. Received: loss_weight={weight}"):
        _task(loss_weight=weight)


@pytest.mark.parametrize("weight", [True, "1", None, [1.0]])
def test_loss_weight_must_be_a_number(weight):
    with pytest.raises(ValueError, match=r"loss_weight=.* for task 'a'"):
        _task(loss_weight=weight)


def test_zero_and_numpy_loss_weights_are_fine():
    assert _task(loss_weight=0).loss_weight == 0.0
    assert _task(loss_weight=np.float32(2.5)).loss_weight == 2.5


# `loss` and `metrics`, resolved at construction.


@pytest.mark.parametrize("loss", ["not_a_loss", 3, object()])
def test_unknown_loss(loss):
    with pytest.raises(ValueError, match=r"loss Keras knows .* for task 'age'\. Received: "):
        _task("age", loss=loss)


def test_missing_loss():
    with pytest.raises(ValueError, match=r"`loss` for task 'a'\. Received: loss=None"):
        _task(loss=None)


@pytest.mark.parametrize("metric", ["not_a_metric", 7])
def test_unknown_metric(metric):
    with pytest.raises(ValueError, match=rf"metric Keras knows .* task 'a'\. Received: {metric!r}"):
        _task(metrics=["mae", metric])


def test_metrics_not_a_list():
    with pytest.raises(TypeError, match=r"Received: metrics='mae' for task 'a'"):
        _task(metrics="mae")


def test_valid_losses_and_metrics_are_kept_as_given():
    """The original objects go to `compile`; the model trains with them."""
    loss = keras.losses.MeanSquaredError()
    metric = keras.metrics.MeanAbsoluteError(name="mae")
    tasks = [
        kb.Task("a", _head, loss, metrics=[metric, "accuracy", "mse"]),
        kb.Task("b", _head, lambda t, p: keras.ops.mean((t - p) ** 2), metrics=["acc"]),
    ]
    assert tasks[0].loss is loss and tasks[0].metrics[0] is metric
    builder = kb.BranchedModelBuilder((3,), [lambda: keras.layers.Dense(4)], tasks)
    model = builder.build(builder.shared_tree())
    history = model.fit(np.ones((8, 3)), {"a": np.ones((8, 1)), "b": np.ones((8, 1))}, verbose=0)
    assert {"a_mae", "a_loss", "b_loss"} <= set(history.history)


# Task names: one rule, checked in `Task`.


@pytest.mark.parametrize(
    "name", ["a b", "age ", "âge", "名字", "1st", "_private", "-a", ".a", "a/b", "a(b)", "a:b"]
)
def test_names_keras_cannot_use_are_rejected_with_the_rule(name):
    with pytest.raises(ValueError, match=r"an ASCII letter, then ASCII letters, digits") as error:
        _task(name)
    assert repr(name) in str(error.value)


@pytest.mark.parametrize("name", [None, 3, b"a", ""])
def test_names_must_be_strings(name):
    with pytest.raises(TypeError, match=rf"Received: name={name!r}"):
        _task(name)


def test_names_of_the_data_helpers_pass():
    for alphabet in ALPHABET_ORDER:  # Omniglot tasks, through the loader's mapping
        assert check_task_name(sanitize_name(alphabet)) == sanitize_name(alphabet)
    _, y, _ = kb.datasets.synthetic_tasks(3, 2, num_examples=4, seed=0)
    for name in [*y, "income", "marital", "education"]:  # synthetic, census
        check_task_name(name)


def test_a_name_that_passes_trains_saves_and_serves(tmp_path):
    tasks = [_task("Anglo-Saxon_Futhorc", metrics=["mae"]), _task("v1.2")]
    builder = kb.BranchedModelBuilder((3,), [lambda: keras.layers.Dense(4)], tasks)
    model = builder.build(builder.shared_tree())
    x = np.ones((8, 3), "float32")
    y = {t.name: np.ones((8, 1)) for t in tasks}
    assert "Anglo-Saxon_Futhorc_mae" in model.fit(x, y, verbose=0).history
    path = str(tmp_path / "m.keras")
    model.save(path)
    reloaded = keras.models.load_model(path)
    np.testing.assert_allclose(
        reloaded.predict(x, verbose=0)["v1.2"], model.predict(x, verbose=0)["v1.2"]
    )


def test_duplicate_names_are_rejected_where_tasks_are_grouped():
    with pytest.raises(ValueError, match=r"unique task names\. Received: \['a', 'b', 'a'\]"):
        check_tasks([_task("a"), _task("b"), _task("a")])
    with pytest.raises(ValueError, match=r"unique task names"):
        kb.BranchedModelBuilder((3,), [lambda: keras.layers.Dense(4)], [_task("a"), _task("a")])
    with pytest.raises(ValueError, match=r"unique task names"):
        kb.AllocationBuilder((3,), [lambda: keras.layers.Dense(4)], [_task("a"), _task("a")])


# `mask_missing`.


def _labels():
    return {"age": np.array([[1.0], [np.nan]]), "income": np.array([[0], [-1]])}


def test_mask_missing_rejects_an_unknown_task():
    with pytest.raises(ValueError, match=r"Unknown tasks \['incme'\] in `missing_value`"):
        mask_missing(np.zeros((2, 1)), _labels(), missing_value={"incme": -1})


def test_mask_missing_rejects_an_unknown_task_in_a_dataset():
    import tensorflow as tf

    x, y = np.zeros((2, 1)), _labels()
    dataset = tf.data.Dataset.from_tensor_slices((x, y)).batch(2)
    with pytest.raises(ValueError, match=r"Unknown tasks \['incme'\] in `missing_value`"):
        mask_missing(dataset, missing_value={"incme": -1})


def test_mask_missing_rejects_an_unknown_sample_weight_task():
    with pytest.raises(ValueError, match=r"Unknown tasks \['ag'\] in `sample_weight`"):
        mask_missing(np.zeros((2, 1)), _labels(), sample_weight={"ag": np.ones(2)})


@pytest.mark.parametrize("fill_value", [float("nan"), float("inf"), -float("inf")])
def test_mask_missing_rejects_a_non_finite_fill_value(fill_value):
    with pytest.raises(ValueError, match=rf"finite `fill_value`.*fill_value={fill_value}"):
        mask_missing(np.zeros((2, 1)), _labels(), fill_value=fill_value)


def test_mask_missing_rejects_nan_as_missing_value():
    """`missing_value=nan` would mask nothing: NaN never equals NaN."""
    with pytest.raises(ValueError, match=r"None to mark NaN.*missing_value=nan"):
        mask_missing(np.zeros((2, 1)), _labels(), missing_value={"age": float("nan")})


@pytest.mark.parametrize("fill_value", ["0", None, True])
def test_mask_missing_rejects_a_fill_value_of_the_wrong_type(fill_value):
    with pytest.raises(TypeError, match=rf"fill_value={fill_value!r}"):
        mask_missing(np.zeros((2, 1)), _labels(), fill_value=fill_value)


def test_mask_missing_output_passes_the_data_checks():
    from keras_branching.data_checks import check_arrays

    x, y, w = mask_missing(np.zeros((2, 1)), _labels(), missing_value={"income": -1})
    check_arrays(x, y, ["age", "income"], sample_weight=w)
    assert w == {"age": pytest.approx([1.0, 0.0]), "income": pytest.approx([1.0, 0.0])}
