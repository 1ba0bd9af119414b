import keras
import numpy as np
import pytest

from keras_branching.affinity.features import branch_point_features
from keras_branching.affinity.rsa import TaskAffinity, rsa_affinity
from keras_branching.affinity.search import AffinityBranching, _share_initial_weights
from keras_branching.affinity.tree_search import tree_cost
from keras_branching.builder import BranchedModelBuilder
from keras_branching.data_checks import DataError
from keras_branching.datasets.synthetic import synthetic_tasks
from keras_branching.search import SearchResult
from keras_branching.task import Task
from keras_branching.tree import BranchingTree
from tests.search_checks import check_result


def make_builder(tasks, widths=(8, 8), input_dim=10, lr=0.01):
    return BranchedModelBuilder(
        (input_dim,),
        [lambda w=w: keras.layers.Dense(w, activation="relu") for w in widths],
        [Task(t, lambda: keras.layers.Dense(1), "mse") for t in tasks],
        optimizer=keras.optimizers.Adam(lr),
    )


def dataset(x, y, batch_size=32):
    tf = pytest.importorskip("tensorflow")
    return tf.data.Dataset.from_tensor_slices((x, y)).batch(batch_size)


@pytest.fixture(scope="module")
def small_data():
    return synthetic_tasks(2, 2, num_examples=160, input_dim=10, seed=0)


class EpochRecorder(keras.callbacks.Callback):
    def __init__(self):
        super().__init__()
        self.epochs = []

    def on_epoch_end(self, epoch, logs=None):
        self.epochs.append((epoch, sorted(logs)))


class FailInEpoch(keras.callbacks.Callback):
    """Raises in the middle of epoch `epoch` (0-based), once."""

    def __init__(self, epoch, batch=2):
        super().__init__()
        self.epoch, self.batch, self.current = epoch, batch, None

    def on_epoch_begin(self, epoch, logs=None):
        self.current = epoch

    def on_train_batch_end(self, batch, logs=None):
        if self.current == self.epoch and batch == self.batch:
            raise RuntimeError("interrupted")


@pytest.mark.slow
def test_recovers_the_true_groups_at_the_last_block():
    """Acceptance: 3 groups of 2 tasks, a budget allowing 3 copies of the last block."""
    recovered = 0
    for seed in range(5):
        keras.utils.set_random_seed(seed)
        # Tasks of a group share their direction (relatedness 1): see
        # docs/methods/affinity.md for what happens at lower relatedness.
        x, y, groups = synthetic_tasks(
            3, 2, num_examples=500, input_dim=20, relatedness=1.0, seed=seed
        )
        builder = make_builder(list(y), widths=(32, 32, 16), input_dim=20)
        tasks = list(y)
        # Copies (1, 1, 3) fit; (1, 2, 2), (1, 1, 4) and everything bigger do not.
        budget = builder.count_params(BranchingTree(tasks, [[tasks], [tasks], groups]))
        result = AffinityBranching(builder, budget=budget, num_samples=120).search(
            x, y, epochs=4, batch_size=64, verbose=0
        )
        assert result.details["size"] <= budget
        last = sorted(sorted(g) for g in result.plan.groups(-1))
        recovered += last == sorted(sorted(g) for g in groups)
    assert recovered >= 4


def test_search_through_fit_gives_a_result_that_builds_the_chosen_tree(small_data, tmp_path):
    x, y, _ = small_data
    builder = make_builder(list(y))
    recorder = EpochRecorder()
    search = AffinityBranching(builder, budget=0.5, num_samples=40, seed=1)
    result = search.search(x, y, epochs=2, batch_size=32, callbacks=[recorder], verbose=0)
    assert isinstance(result, SearchResult)
    assert result.method == "AffinityBranching"
    assert [epoch for epoch, _ in recorder.epochs] == [0, 1]
    assert "loss" in recorder.epochs[0][1]
    assert len(result.history["loss"]) == 2
    # Details: the affinity, the plan's cost and size, the budget.
    affinity = TaskAffinity.from_config(result.details["affinity"])
    assert affinity == search.affinity
    assert affinity.tasks == builder.task_names
    assert affinity.values.shape == (2, 4, 4)
    assert result.details["cost"] == pytest.approx(tree_cost(result.plan, affinity))
    shared = builder.count_params(builder.shared_tree())
    independent = builder.count_params(builder.independent_tree())
    size = result.details["size"]
    assert size == builder.count_params(result.plan) <= shared + 0.5 * (independent - shared)
    assert result.details["budget"] == 0.5
    assert result.settings == {
        "seed": 1,
        "budget": 0.5,
        "num_samples": 40,
        "method": "auto",
        "pooling": None,
        "cost": "balanced",
        "shared_init": True,
    }
    # The single-task model is kept on the search.
    assert search.model.count_params() == independent
    text = result.summary()
    assert "AffinityBranching" in text and "cost" in text
    # JSON round trip, then build with the builder passed back.
    again = SearchResult.from_json(result.to_json())
    assert again.plan == result.plan
    assert again.details == result.details
    assert again.history == result.history
    assert again.settings == result.settings
    with pytest.raises(ValueError, match="builder"):
        again.build()
    model = again.build(builder=builder)
    assert sorted(model.output) == sorted(y)
    assert model.count_params() == size
    # `result.build()`: compiled, trains, saves and reloads without custom_objects.
    check_result(result, builder, BranchingTree, 2, x, y, tmp_path)


def test_no_budget_gives_the_independent_tree(small_data):
    x, y, _ = small_data
    builder = make_builder(list(y))
    x_val, y_val = x[:40], {k: v[:40] for k, v in y.items()}
    result = AffinityBranching(builder, num_samples=40).search(
        x[40:], {k: v[40:] for k, v in y.items()}, validation_data=(x_val, y_val), verbose=0
    )
    assert result.plan == builder.independent_tree()
    assert result.details["cost"] == 0.0
    assert "val_loss" in result.history


def test_budget_zero_gives_the_shared_tree(small_data):
    x, y, _ = small_data
    builder = make_builder(list(y))
    result = AffinityBranching(builder, budget=0.0, num_samples=40).search(x, y, verbose=0)
    assert result.plan == builder.shared_tree()


def test_budget_below_the_shared_size_fails_before_training(small_data):
    x, y, _ = small_data
    builder = make_builder(list(y))
    shared = builder.count_params(builder.shared_tree())
    recorder = EpochRecorder()
    with pytest.raises(ValueError, match=f"smallest tree \\(fully shared\\) has size {shared}"):
        AffinityBranching(builder, budget=shared - 1, num_samples=40).search(
            x, y, callbacks=[recorder], verbose=0
        )
    assert recorder.epochs == []


def test_too_few_examples_is_a_clear_error(small_data):
    x, y, _ = small_data
    builder = make_builder(list(y))
    with pytest.raises(DataError, match="AffinityBranching needs at least 501 example.*160"):
        AffinityBranching(builder).search(x, y, verbose=0)
    assert AffinityBranching(builder, num_samples=100).min_examples() == 101
    assert AffinityBranching(builder, num_samples=100).min_examples((x, y)) == 1
    with pytest.raises(ValueError, match="at least num_samples=100 validation inputs"):
        AffinityBranching(builder, num_samples=100).search(
            x, y, validation_data=(x[:10], {k: v[:10] for k, v in y.items()}), verbose=0
        )
    with pytest.raises(ValueError, match="at least num_samples=500 inputs in `x`.*160"):
        AffinityBranching(builder).search(dataset(x, y), shuffle=False, verbose=0)
    with pytest.raises(ValueError, match="at least num_samples=50 inputs in `validation_data`"):
        AffinityBranching(builder, num_samples=50).search(
            x, y, validation_data=dataset(x[:20], {k: v[:20] for k, v in y.items()}), verbose=0
        )
    with pytest.raises(ValueError, match="validation_data"):
        AffinityBranching(builder, num_samples=40).search(x, y, validation_data=x, verbose=0)


def test_tf_data_input(small_data):
    x, y, _ = small_data
    builder = make_builder(list(y))
    # Keras's `fit` warns that `shuffle=True` (its default) is ignored for datasets.
    # Without validation data: the first `num_samples` inputs of the dataset.
    search = AffinityBranching(builder, budget=0.5, num_samples=50, seed=0)
    result = search.search(dataset(x, y), epochs=1, shuffle=False, verbose=0)
    assert len(result.history["loss"]) == 1
    features = branch_point_features(search.model, x[:50])
    assert search.affinity == rsa_affinity({t: features[t] for t in builder.task_names})
    # With a validation dataset: its first `num_samples` inputs.
    x_val, y_val = x[:60], {k: v[:60] for k, v in y.items()}
    result = search.search(
        dataset(x, y), validation_data=dataset(x_val, y_val), shuffle=False, verbose=0
    )
    assert "val_loss" in result.history
    features = branch_point_features(search.model, x_val[:50])
    assert search.affinity == rsa_affinity({t: features[t] for t in builder.task_names})
    assert builder.count_params(result.plan) == result.details["size"]


def test_arrays_without_validation_hold_out_the_last_examples(small_data):
    x, y, _ = small_data
    builder = make_builder(list(y))
    weights = np.ones(len(x), "float32")
    search = AffinityBranching(builder, budget=0.5, num_samples=40, seed=0)
    # The sample weights are split with x and y (fit would reject other lengths).
    search.search(x, y, sample_weight=weights, epochs=1, batch_size=40, verbose=0)
    features = branch_point_features(search.model, x[-40:])
    assert search.affinity == rsa_affinity({t: features[t] for t in builder.task_names})


def test_resume_with_backup_and_restore(small_data, tmp_path):
    x, y, _ = small_data
    builder = make_builder(list(y))
    settings = dict(budget=0.5, num_samples=40, seed=3)
    fit = dict(epochs=3, batch_size=20, shuffle=False, verbose=0)
    backup = keras.callbacks.BackupAndRestore(str(tmp_path / "backup"))
    with pytest.raises(RuntimeError, match="interrupted"):
        AffinityBranching(builder, **settings).search(
            x, y, callbacks=[backup, FailInEpoch(1)], **fit
        )
    recorder = EpochRecorder()
    resumed = AffinityBranching(builder, **settings).search(
        x, y, callbacks=[backup, recorder], **fit
    )
    assert [epoch for epoch, _ in recorder.epochs] == [1, 2]  # epoch 0 is not redone
    assert len(resumed.history["loss"]) == 3
    assert builder.count_params(resumed.plan) == resumed.details["size"]
    uninterrupted = AffinityBranching(builder, **settings).search(x, y, **fit)
    np.testing.assert_allclose(resumed.history["loss"], uninterrupted.history["loss"], rtol=1e-4)
    assert resumed.plan == uninterrupted.plan
    np.testing.assert_allclose(
        resumed.details["affinity"]["values"],
        uninterrupted.details["affinity"]["values"],
        atol=1e-4,
    )


@pytest.mark.parametrize(
    "kwargs, error",
    [
        ({"builder": "builder"}, TypeError),
        ({"num_samples": 2}, ValueError),
        ({"num_samples": 10.5}, ValueError),
        ({"budget": -3}, ValueError),
        ({"budget": "all"}, TypeError),
        ({"method": "greedy"}, ValueError),
        ({"pooling": "max"}, ValueError),
        ({"cost": "mean"}, ValueError),
        ({"seed": "one"}, TypeError),
    ],
)
def test_rejects_bad_arguments(kwargs, error):
    arguments = {"builder": make_builder(["a", "b"])}
    arguments.update(kwargs)
    with pytest.raises(error):
        AffinityBranching(**arguments)


def test_derive_plan_needs_a_search_first():
    builder = make_builder(["a", "b"])
    search = AffinityBranching(builder)
    with pytest.raises(ValueError, match="call `search` first"):
        search.derive_plan(builder.build(builder.independent_tree()))


def test_shared_init_gives_every_task_the_same_starting_weights():
    builder = make_builder(["a", "b", "c"])
    model = builder.build(builder.independent_tree(), fuse=False)  # the separate form
    before = model.get_layer("block1_b").get_weights()[0].copy()
    _share_initial_weights(model)
    for name in ("block1", "block2", "head"):
        first = model.get_layer(f"{name}_a").get_weights()
        for task in ("b", "c"):
            for mine, theirs in zip(model.get_layer(f"{name}_{task}").get_weights(), first):
                np.testing.assert_array_equal(mine, theirs)
    assert not np.array_equal(before, model.get_layer("block1_b").get_weights()[0])


@pytest.mark.skipif(keras.backend.backend() != "jax", reason="run with KERAS_BACKEND=jax")
def test_search_on_jax(small_data, tmp_path):
    x, y, _ = small_data
    builder = make_builder(list(y))
    result = AffinityBranching(builder, budget=0.5, num_samples=40, seed=0).search(
        x, y, epochs=2, batch_size=32, verbose=0
    )
    assert len(result.history["loss"]) == 2
    assert builder.count_params(result.plan) == result.details["size"]
    check_result(result, builder, BranchingTree, 2, x, y, tmp_path)
