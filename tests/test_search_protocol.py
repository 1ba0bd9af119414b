"""Every search passes the one shared check (`tests/search_checks.py`).

The same small synthetic problem (two unrelated regression tasks) goes
through each of the four methods: search through `fit` with callbacks,
the result's JSON, `build`, a trained and reloaded model, a `tf.data`
pipeline, and resume after an interruption with `BackupAndRestore`. This
file runs on TensorFlow and, in CI, on JAX.
"""

import keras
import pytest

import keras_branching as kb
from tests.search_checks import run_search_test


def _problem():
    x, y, _ = kb.datasets.synthetic_tasks(2, 1, num_examples=160, input_dim=8, seed=0)
    tasks = [kb.Task(t, head=lambda: keras.layers.Dense(1), loss="mse") for t in y]
    return x, y, tasks


def _dense():
    return keras.layers.Dense(4, activation="relu")


def _searches(tasks):
    trees = kb.BranchedModelBuilder((8,), [_dense] * 2, tasks)
    routes = kb.RoutingModelBuilder((8,), [_dense] * 2, tasks)
    allocations = kb.AllocationBuilder((8,), [[_dense] * 2] * 2, tasks)
    return {
        "affinity": (
            lambda: kb.AffinityBranching(trees, num_samples=16, seed=1),
            kb.BranchingTree,
        ),
        "learn_to_branch": (
            lambda: kb.LearnToBranch(trees, widths=[1, 2], seed=1),
            kb.BranchingTree,
        ),
        "share_routing": (
            lambda: kb.ShareRouting(
                routes,
                num_experts=2,
                warmup_epochs=0,
                steps_per_update=2,
                samples_per_update=2,
                seed=1,
            ),
            kb.RoutingPlan,
        ),
        "allocation": (
            lambda: kb.LearnedAllocation(allocations, seed=1),
            kb.Allocation,
        ),
    }


@pytest.mark.parametrize("method", ["affinity", "learn_to_branch", "share_routing", "allocation"])
def test_search_protocol(method, tmp_path):
    x, y, tasks = _problem()
    make_search, plan_class = _searches(tasks)[method]
    result = run_search_test(make_search, x, y, tmp_path, plan_class, epochs=3, batch_size=32)
    if method == "share_routing":
        # Regression targets: the reward is the negative squared error, and says so.
        assert set(result.details["reward_metrics"].values()) == {"negative_mean_squared_error"}
