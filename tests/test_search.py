"""The search protocol's base: `Search` and `SearchResult`, with a minimal method."""

import json

import keras
import numpy as np
import pytest

from keras_branching import BranchedModelBuilder, BranchingTree, Task
from keras_branching.datasets import synthetic_tasks
from keras_branching.search import DivergenceError, Search, SearchResult, check_seed
from tests.search_checks import run_search_test


class SplitLastBlock(Search):
    """A minimal method (the template of docs/adding_a_method.md): trains the
    shared tree and returns the tree that splits the tasks at the last block."""

    builder_class = BranchedModelBuilder

    def build_search_model(self):
        return self.builder.build(self.builder.shared_tree())

    def derive_plan(self, model):
        tasks = list(self.builder.task_names)
        partitions = [[tasks]] * (self.builder.num_blocks - 1) + [[[t] for t in tasks]]
        return BranchingTree(tasks, partitions)


def _problem(num_examples=128):
    x, y, _ = synthetic_tasks(2, 1, num_examples=num_examples, input_dim=6, seed=0)
    builder = BranchedModelBuilder(
        (6,),
        [lambda: keras.layers.Dense(4, activation="relu")] * 2,
        [Task(name, lambda: keras.layers.Dense(1), "mse") for name in y],
    )
    return x, y, builder


def test_protocol_checks_pass_for_a_minimal_method(tmp_path):
    x, y, builder = _problem()
    run_search_test(lambda: SplitLastBlock(builder, seed=3), x, y, tmp_path, BranchingTree)


def test_seed_reproduces_the_history():
    x, y, builder = _problem()
    first = SplitLastBlock(builder, seed=5).search(x, y, epochs=2, verbose=0, shuffle=False)
    second = SplitLastBlock(builder, seed=5).search(x, y, epochs=2, verbose=0, shuffle=False)
    assert first.history == second.history


def test_divergence_stops_the_search_with_the_epoch():
    x, y, builder = _problem()
    y = dict(y)
    # Finite targets (NaN ones are now rejected before training, see
    # tests/reliability/test_data_validation.py) whose squared error overflows.
    y[next(iter(y))] = np.full_like(y[next(iter(y))], 1e30)
    with pytest.raises(DivergenceError, match="epoch 1"):
        SplitLastBlock(builder).search(x, y, epochs=2, verbose=0)


def test_result_json_and_errors():
    x, y, builder = _problem(32)
    result = SplitLastBlock(builder).search(x, y, epochs=1, verbose=0)
    data = json.loads(result.to_json())
    assert data["method"] == "SplitLastBlock"
    assert data["plan"]["class_name"] == "BranchingTree"
    again = SearchResult.from_json(result.to_json())
    with pytest.raises(ValueError, match="result.build\\(builder=...\\)"):
        again.build()
    assert again.build(builder=builder).count_params() == builder.count_params(result.plan)
    with pytest.raises(ValueError, match="Expected JSON written by"):
        SearchResult.from_json('{"plan": 1}')
    with pytest.raises(TypeError, match="Expected a plan"):
        SearchResult([[1]])
    assert "parameters:" in result.summary()


def test_wrong_builder_and_seed_are_rejected():
    with pytest.raises(TypeError, match="Expected `builder` to be a `BranchedModelBuilder`"):
        SplitLastBlock("builder")
    with pytest.raises(TypeError, match="Received: seed=1.5"):
        check_seed(1.5)
