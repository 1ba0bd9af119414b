import json

import keras
import numpy as np
import pytest

from keras_branching.affinity.rsa import TaskAffinity
from keras_branching.affinity_branching import (
    AffinityBranching,
    AffinityBranchingResult,
    _share_initial_weights,
)
from keras_branching.builder import BranchedModelBuilder
from keras_branching.datasets.synthetic import synthetic_tasks
from keras_branching.task import Task
from keras_branching.tree import BranchingTree


def make_builder(tasks, widths=(8, 8), input_dim=10, lr=0.01):
    return BranchedModelBuilder(
        (input_dim,),
        [lambda w=w: keras.layers.Dense(w, activation="relu") for w in widths],
        [Task(t, lambda: keras.layers.Dense(1), "mse") for t in tasks],
        optimizer=keras.optimizers.Adam(lr),
    )


@pytest.fixture(scope="module")
def small_data():
    return synthetic_tasks(2, 2, num_examples=160, input_dim=10, seed=0)


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
        result = AffinityBranching(builder, num_samples=120, budget=budget).fit(
            x, y, epochs=4, batch_size=64, verbose=0
        )
        assert result.size <= budget
        last = sorted(sorted(g) for g in result.tree.groups(-1))
        recovered += last == sorted(sorted(g) for g in groups)
    assert recovered >= 4


def test_fit_returns_a_result_that_builds_the_chosen_tree(small_data):
    x, y, _ = small_data
    builder = make_builder(list(y))
    result = AffinityBranching(builder, num_samples=40, budget=0.5).fit(
        x, y, epochs=1, batch_size=32, verbose=0
    )
    assert isinstance(result, AffinityBranchingResult)
    assert isinstance(result.affinity, TaskAffinity)
    assert result.affinity.tasks == builder.task_names
    assert result.affinity.values.shape == (2, 4, 4)
    shared = builder.count_params(builder.shared_tree())
    independent = builder.count_params(builder.independent_tree())
    assert result.size == builder.count_params(result.tree) <= shared + 0.5 * (independent - shared)
    model = result.build()
    assert sorted(model.output) == sorted(y)
    assert model.count_params() == result.size
    assert model.optimizer is not None  # compiled, ready to retrain
    text = result.summary()
    assert "Chosen tree" in text and f"{result.cost:.4f}" in text and "branch point 2" in text
    assert "cost=" in repr(result)
    config = json.loads(json.dumps(result.to_config()))
    assert BranchingTree.from_config(config["tree"]) == result.tree
    assert len(result.history.history["loss"]) == 1


def test_no_budget_gives_the_independent_tree(small_data):
    x, y, _ = small_data
    builder = make_builder(list(y))
    x_val, y_val = x[:40], {k: v[:40] for k, v in y.items()}
    result = AffinityBranching(builder, num_samples=40).fit(
        x[40:], {k: v[40:] for k, v in y.items()}, validation_data=(x_val, y_val), verbose=0
    )
    assert result.tree == builder.independent_tree()
    assert result.cost == 0.0
    assert "val_loss" in result.history.history


def test_budget_zero_gives_the_shared_tree(small_data):
    x, y, _ = small_data
    builder = make_builder(list(y))
    result = AffinityBranching(builder, num_samples=40, budget=0.0).fit(x, y, verbose=0)
    assert result.tree == builder.shared_tree()


def test_budget_below_the_shared_size_is_a_clear_error(small_data):
    x, y, _ = small_data
    builder = make_builder(list(y))
    shared = builder.count_params(builder.shared_tree())
    with pytest.raises(ValueError, match=f"smallest tree \\(fully shared\\) has size {shared}"):
        AffinityBranching(builder, num_samples=40, budget=shared - 1).fit(x, y, verbose=0)


def test_too_few_examples_to_hold_out(small_data):
    x, y, _ = small_data
    builder = make_builder(list(y))
    with pytest.raises(ValueError, match="num_samples=500"):
        AffinityBranching(builder).fit(x, y, verbose=0)
    with pytest.raises(ValueError, match="validation inputs"):
        AffinityBranching(builder, num_samples=100).fit(
            x, y, validation_data=(x[:10], {k: v[:10] for k, v in y.items()}), verbose=0
        )
    with pytest.raises(ValueError, match="validation_split"):
        AffinityBranching(builder, num_samples=40).fit(x, y, validation_split=0.2)


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
    ],
)
def test_rejects_bad_arguments(kwargs, error):
    arguments = {"builder": make_builder(["a", "b"])}
    arguments.update(kwargs)
    with pytest.raises(error):
        AffinityBranching(**arguments)


def test_shared_init_gives_every_task_the_same_starting_weights():
    builder = make_builder(["a", "b", "c"])
    model = builder.build(builder.independent_tree())
    before = model.get_layer("block1_b").get_weights()[0].copy()
    _share_initial_weights(model, builder)
    for name in ("block1", "block2", "head"):
        first = model.get_layer(f"{name}_a").get_weights()
        for task in ("b", "c"):
            for mine, theirs in zip(model.get_layer(f"{name}_{task}").get_weights(), first):
                np.testing.assert_array_equal(mine, theirs)
    assert not np.array_equal(before, model.get_layer("block1_b").get_weights()[0])
