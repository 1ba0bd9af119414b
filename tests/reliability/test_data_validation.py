"""Bad data stops every training entry point with a `DataError` before training.

Entry points: the four searches (`Search.search`), a builder-made model's
`fit` (`TaskModel`) and `WeightedModel.fit`. Each case asserts the exact
exception type and that the message names the offending task, key or value.
"""

import keras
import numpy as np
import pytest
import tensorflow as tf

import keras_branching as kb
from keras_branching.data_checks import DataError, check_arrays, check_data
from keras_branching.weighting.model import WeightedModel
from keras_branching.weighting.uncertainty import UncertaintyWeighting

TASKS = ["g0_t0", "g1_t0"]
N = 64


def _data(n=N):
    x, y, _ = kb.datasets.synthetic_tasks(2, 1, num_examples=n, input_dim=8, seed=0)
    return x.astype("float32"), {t: v.astype("float32") for t, v in y.items()}


def _tasks():
    return [kb.Task(t, head=lambda: keras.layers.Dense(1), loss="mse") for t in TASKS]


def _dense():
    return keras.layers.Dense(4, activation="relu")


def _tree_builder():
    return kb.BranchedModelBuilder((8,), [_dense] * 2, _tasks())


def _search(kind):
    """Something with `fit`-like `(x, y, validation_data=, **kwargs)` training."""
    if kind == "affinity":
        return kb.AffinityBranching(_tree_builder(), num_samples=8, seed=1).search
    if kind == "learn_to_branch":
        return kb.LearnToBranch(_tree_builder(), widths=[1, 2], seed=1).search
    if kind == "share_routing":
        builder = kb.RoutingModelBuilder((8,), [_dense] * 2, _tasks())
        return kb.ShareRouting(
            builder,
            num_experts=2,
            warmup_epochs=0,
            steps_per_update=2,
            samples_per_update=2,
            seed=1,
        ).search
    if kind == "allocation":
        builder = kb.AllocationBuilder((8,), [[_dense] * 2] * 2, _tasks())
        return kb.LearnedAllocation(builder, seed=1).search
    builder = _tree_builder()
    if kind == "model":
        return builder.build(builder.shared_tree()).fit
    if kind == "weighted":
        weighted = WeightedModel(
            builder.build(builder.shared_tree(), compile=False),
            UncertaintyWeighting(builder.task_names),
        )
        builder.compile(weighted)
        return weighted.fit
    raise ValueError(kind)


ENTRY_POINTS = ["affinity", "learn_to_branch", "share_routing", "allocation", "model", "weighted"]


def _train(kind, x, y=None, **kwargs):
    _search(kind)(x, y, epochs=1, batch_size=16, verbose=0, **kwargs)


def _dataset(x, y, batch=16):
    return tf.data.Dataset.from_tensor_slices((x, y)).batch(batch)


# Every entry point, every case of the issue.


@pytest.mark.parametrize("kind", ENTRY_POINTS)
def test_mismatched_lengths(kind):
    x, y = _data()
    y["g1_t0"] = y["g1_t0"][:40]
    with pytest.raises(DataError, match=r"same length.*y\['g1_t0'\]: 40"):
        _train(kind, x, y)


@pytest.mark.parametrize("kind", ENTRY_POINTS)
def test_longer_targets_are_not_cut(kind):
    x, y = _data()
    y = {t: np.concatenate([v, v[:8]]) for t, v in y.items()}
    with pytest.raises(DataError, match=r"same length.*x: 64, y\['g0_t0'\]: 72"):
        _train(kind, x, y)


@pytest.mark.parametrize("kind", ENTRY_POINTS)
def test_missing_task_key(kind):
    x, y = _data()
    del y["g1_t0"]
    with pytest.raises(DataError, match=r"Missing: \['g1_t0'\]; unknown: \[\]"):
        _train(kind, x, y)


@pytest.mark.parametrize("kind", ENTRY_POINTS)
def test_extra_task_key(kind):
    x, y = _data()
    y["extra"] = y["g0_t0"]
    with pytest.raises(DataError, match=r"Missing: \[\]; unknown: \['extra'\]"):
        _train(kind, x, y)


@pytest.mark.parametrize("kind", ENTRY_POINTS)
def test_misspelt_task_key(kind):
    x, y = _data()
    y["g1_t1"] = y.pop("g1_t0")
    with pytest.raises(DataError, match=r"misspelt\? 'g1_t1' for 'g1_t0'"):
        _train(kind, x, y)


@pytest.mark.parametrize("kind", ENTRY_POINTS)
def test_zero_examples(kind):
    x, y = _data()
    with pytest.raises(DataError, match=r"at least \d+ example.*x with 0"):
        _train(kind, x[:0], {t: v[:0] for t, v in y.items()})


@pytest.mark.parametrize("kind", ENTRY_POINTS)
def test_nan_in_x(kind):
    x, y = _data()
    x[3, 2] = np.nan
    with pytest.raises(DataError, match=r"finite values in x\. Received NaN in 1 example.*\[3\]"):
        _train(kind, x, y)


@pytest.mark.parametrize("kind", ENTRY_POINTS)
def test_inf_in_y(kind):
    x, y = _data()
    y["g0_t0"][[5, 9]] = np.inf
    with pytest.raises(DataError, match=r"y\['g0_t0'\]\. Received inf in 2 .*\[5, 9\]"):
        _train(kind, x, y)


@pytest.mark.parametrize("kind", ENTRY_POINTS)
def test_nan_in_dataset_first_batch(kind):
    x, y = _data()
    y["g1_t0"][2] = np.nan
    with pytest.raises(DataError, match=r"y\['g1_t0'\] \(first batch\)\. Received NaN"):
        _train(kind, _dataset(x, y))


@pytest.mark.parametrize("kind", ENTRY_POINTS)
def test_bad_validation_data(kind):
    x, y = _data()
    x_val, y_val = _data(32)
    y_val["g0_t0"][0] = np.nan
    with pytest.raises(DataError, match=r"validation_data y\['g0_t0'\]\. Received NaN"):
        _train(kind, x, y, validation_data=(x_val, y_val))


@pytest.mark.parametrize("kind", ENTRY_POINTS)
def test_validation_data_with_a_missing_key(kind):
    x, y = _data()
    x_val, y_val = _data(32)
    del y_val["g0_t0"]
    with pytest.raises(DataError, match=r"`validation_data y`.*Missing: \['g0_t0'\]"):
        _train(kind, x, y, validation_data=(x_val, y_val))


@pytest.mark.parametrize("kind", ENTRY_POINTS)
def test_dataset_with_misspelt_keys(kind):
    x, y = _data()
    y["G0_t0"] = y.pop("g0_t0")
    with pytest.raises(DataError, match=r"dataset's targets.*'G0_t0' for 'g0_t0'"):
        _train(kind, _dataset(x, y))


@pytest.mark.parametrize("kind", ENTRY_POINTS)
def test_nan_sample_weight(kind):
    x, y = _data()
    weights = np.ones(N, "float32")
    weights[7] = np.nan
    with pytest.raises(DataError, match=r"sample_weight\. Received NaN in 1 .*\[7\]"):
        _train(kind, x, y, sample_weight=weights)


# Further cases, on a builder-made model and `WeightedModel` (the searches
# share the same check).


@pytest.mark.parametrize("kind", ["model", "weighted"])
def test_targets_not_a_dict(kind):
    x, y = _data()
    with pytest.raises(DataError, match=r"`y` to be a dict.*Received: `y` of type ndarray"):
        _train(kind, x, y["g0_t0"])


@pytest.mark.parametrize("kind", ["model", "weighted"])
def test_in_memory_x_without_y(kind):
    x, _ = _data()
    with pytest.raises(DataError, match=r"Received: y=None"):
        _train(kind, x)


@pytest.mark.parametrize("kind", ["model", "weighted"])
def test_negative_infinity_in_x(kind):
    x, y = _data()
    x[-1, 0] = -np.inf
    with pytest.raises(DataError, match=r"finite values in x\. Received inf .*\[63\]"):
        _train(kind, x, y)


@pytest.mark.parametrize("kind", ["model", "weighted"])
def test_sample_weight_of_another_length(kind):
    x, y = _data()
    with pytest.raises(DataError, match=r"sample_weight: 10"):
        _train(kind, x, y, sample_weight=np.ones(10))


@pytest.mark.parametrize("kind", ["model", "weighted"])
def test_sample_weight_dict_with_unknown_task(kind):
    x, y = _data()
    with pytest.raises(DataError, match=r"sample_weight.*unknown keys \['g2_t0'\]"):
        _train(kind, x, y, sample_weight={"g2_t0": np.ones(N)})


@pytest.mark.parametrize("kind", ["model", "weighted"])
def test_nan_in_one_tasks_sample_weight(kind):
    x, y = _data()
    weights = {t: np.ones(N, "float32") for t in TASKS}
    weights["g1_t0"][0] = np.nan
    with pytest.raises(DataError, match=r"sample_weight\['g1_t0'\]\. Received NaN"):
        _train(kind, x, y, sample_weight=weights)


@pytest.mark.parametrize("kind", ["model", "weighted"])
def test_empty_dataset(kind):
    x, y = _data()
    with pytest.raises(DataError, match=r"at least 1 example.*yields no batches"):
        _train(kind, _dataset(x[:0], {t: v[:0] for t, v in y.items()}))


@pytest.mark.parametrize("kind", ["model", "weighted"])
def test_dataset_of_inputs_only(kind):
    x, _ = _data()
    with pytest.raises(DataError, match=r"elements to be `\(x, y\)`"):
        _train(kind, tf.data.Dataset.from_tensor_slices(x).batch(16))


@pytest.mark.parametrize("kind", ["model", "weighted"])
def test_dataset_and_y(kind):
    x, y = _data()
    with pytest.raises(DataError, match=r"pass the targets inside.*`y` as well"):
        _train(kind, _dataset(x, y), y)


@pytest.mark.parametrize("kind", ["model", "weighted"])
def test_unbatched_dataset(kind):
    x, y = _data()
    with pytest.raises(DataError, match=r"first batch.*x \(first batch\): 8.*batched"):
        _train(kind, tf.data.Dataset.from_tensor_slices((x, y)))


@pytest.mark.parametrize("kind", ["model", "weighted"])
def test_nan_in_validation_dataset(kind):
    x, y = _data()
    bad = x.copy()
    bad[0] = np.nan
    with pytest.raises(DataError, match=r"validation_data x \(first batch\)\. Received NaN"):
        _train(kind, x, y, validation_data=_dataset(bad, y))


@pytest.mark.parametrize("kind", ["model", "weighted"])
def test_validation_data_of_the_wrong_form(kind):
    x, y = _data()
    with pytest.raises(DataError, match=r"`validation_data` to be `\(x_val, y_val\)`.*1 items"):
        _train(kind, x, y, validation_data=(x,))


@pytest.mark.parametrize("kind", ["model", "weighted"])
def test_empty_validation_data(kind):
    x, y = _data()
    with pytest.raises(DataError, match=r"validation_data x with 0"):
        _train(kind, x, y, validation_data=(x[:0], {t: v[:0] for t, v in y.items()}))


def test_positional_validation_data_is_checked():
    x, y = _data()
    fit = _search("model")
    bad = {t: v.copy() for t, v in y.items()}
    bad["g1_t0"][1] = np.inf
    # fit(x, y, batch_size, epochs, verbose, callbacks, validation_split, validation_data)
    with pytest.raises(DataError, match=r"validation_data y\['g1_t0'\]"):
        fit(x, y, 16, 1, 0, None, 0.0, (x, bad))


def test_per_task_inputs_of_different_lengths():
    x, y = _data()
    builder = kb.AllocationBuilder(dict.fromkeys(TASKS, (8,)), [[_dense] * 2] * 2, _tasks())
    model = builder.build(kb.Allocation.shared(TASKS, [2, 2]))
    inputs = {builder.input_names[t]: x for t in TASKS}
    inputs[builder.input_names["g1_t0"]] = x[:50]
    with pytest.raises(DataError, match=r"same length.*x\['g1_t0'\]: 50"):
        model.fit(inputs, y, epochs=1, verbose=0)


def test_nan_in_one_of_several_inputs():
    x, y = _data()
    builder = kb.AllocationBuilder(dict.fromkeys(TASKS, (8,)), [[_dense] * 2] * 2, _tasks())
    model = builder.build(kb.Allocation.shared(TASKS, [2, 2]))
    inputs = {builder.input_names[t]: x.copy() for t in TASKS}
    inputs[builder.input_names["g0_t0"]][4, 1] = np.nan
    with pytest.raises(DataError, match=r"x\['g0_t0'\]\. Received NaN .*\[4\]"):
        model.fit(inputs, y, epochs=1, verbose=0)


# What is allowed.


@pytest.mark.parametrize("kind", ["model", "weighted"])
def test_labels_masked_by_mask_missing_train(kind):
    x, y = _data()
    y["g0_t0"][:10] = np.nan
    x, y, weights = kb.datasets.mask_missing(x, y)
    _train(kind, x, y, sample_weight=weights)
    dataset = kb.datasets.mask_missing(_dataset(x, y))
    _train(kind, dataset, shuffle=False)


def test_integer_and_list_targets_pass():
    x, _ = _data(8)
    check_arrays(x, {"a": np.arange(8), "b": [0.0] * 8}, ["a", "b"])
    check_arrays(list(x), {"a": np.arange(8)}, ["a"])


def test_unchecked_inputs_pass_through():
    """Python generators and `PyDataset`s are not read (documented)."""
    check_data(iter([]), None, ["a"])


def test_min_examples_names_the_search():
    x, y = _data(4)
    with pytest.raises(DataError, match=r"LearnToBranch needs at least 5 example"):
        kb.LearnToBranch(_tree_builder(), widths=[1, 2]).check_data(x, y, min_examples=5)


def test_big_arrays_are_not_copied():
    """The check reads arrays in place (min and max), with no float copy of `x`."""
    x = np.zeros((20000, 50), "float32")
    before = x.__array_interface__["data"][0]
    check_arrays(x, {"a": np.zeros((20000, 1))}, ["a"])
    assert x.__array_interface__["data"][0] == before
