"""Tests of keras_branching.evaluation: plans against known groups, random plans of a size."""

import math

import keras
import numpy as np
import pytest

from keras_branching import (
    Allocation,
    AllocationBuilder,
    BranchedModelBuilder,
    BranchingTree,
    RoutingModelBuilder,
    RoutingPlan,
    Task,
)
from keras_branching.evaluation import (
    allocation_group_permutation_test,
    allocation_group_sharing,
    grouping_block,
    random_allocation,
    random_routing_plan,
    random_tree,
    routing_group_separation,
    tree_recovers_groups,
)

TASKS = ["a", "b", "c", "d"]
GROUPS = [["a", "b"], ["c", "d"]]


def make_tasks(names=TASKS):
    return [Task(t, head=lambda: keras.layers.Dense(1), loss="mse") for t in names]


def dense(units):
    return lambda: keras.layers.Dense(units, activation="relu")


# Trees.


def test_tree_recovers_groups_at_the_last_block():
    tree = BranchingTree(TASKS, [[TASKS], [["a", "b"], ["c", "d"]]])
    assert tree_recovers_groups(tree, [["d", "c"], ["b", "a"]])
    assert not tree_recovers_groups(tree, [["a", "c"], ["b", "d"]])
    assert not tree_recovers_groups(BranchingTree.shared(TASKS, 2), GROUPS)
    # An explicit block.
    assert not tree_recovers_groups(tree, GROUPS, block=0)


def test_tree_recovers_groups_before_a_task_specific_last_block():
    # Trees learning to branch derives end in one copy per task.
    tree = BranchingTree(TASKS, [[TASKS], [["a", "b"], ["c", "d"]], [[t] for t in TASKS]])
    assert grouping_block(tree) == 1
    assert tree_recovers_groups(tree, GROUPS)
    independent = BranchingTree.independent(TASKS, 3)
    assert grouping_block(independent) == 0
    assert not tree_recovers_groups(independent, GROUPS)


def test_tree_recovers_groups_rejects_groups_that_miss_a_task():
    tree = BranchingTree.shared(TASKS, 2)
    with pytest.raises(
        ValueError, match=r"exactly once. Received: groups=\[\['a', 'b'\], \['c'\]\]"
    ):
        tree_recovers_groups(tree, [["a", "b"], ["c"]])
    with pytest.raises(TypeError, match="Expected a `BranchingTree`. Received: tree='abc'"):
        tree_recovers_groups("abc", GROUPS)
    with pytest.raises(TypeError, match="Received: groups='ab'"):
        tree_recovers_groups(tree, "ab")


def test_random_tree_hits_reachable_sizes_and_is_valid():
    builder = BranchedModelBuilder((5,), [dense(4), dense(6), dense(3)], make_tasks())
    shared = builder.count_params(builder.shared_tree())
    independent = builder.count_params(builder.independent_tree())
    assert builder.count_params(random_tree(builder, shared, seed=0)) == shared
    assert random_tree(builder, independent, seed=0) == builder.independent_tree()
    target_tree = BranchingTree(TASKS, [[TASKS], [["a", "b"], ["c", "d"]], GROUPS])
    target = builder.count_params(target_tree)
    trees = [random_tree(builder, target, seed=s) for s in range(12)]
    assert all(builder.count_params(t) == target for t in trees)
    assert len(set(trees)) > 1  # random groups, not always the same tree
    assert random_tree(builder, target, seed=3) == random_tree(builder, target, seed=3)
    # Out of range targets give the closest extreme.
    assert random_tree(builder, 0, seed=0) == builder.shared_tree()
    assert random_tree(builder, 10 * independent, seed=0) == builder.independent_tree()


def test_random_tree_rejects_a_negative_size():
    builder = BranchedModelBuilder((5,), [dense(4)], make_tasks())
    with pytest.raises(ValueError, match="Received: num_params=-1"):
        random_tree(builder, -1)
    with pytest.raises(TypeError, match="Received: seed=1.5"):
        random_tree(builder, 10, seed=1.5)


# Allocations.


def test_allocation_group_sharing():
    grouped = Allocation(TASKS, [[[1, 1, 0], [1, 1, 0], [0, 0, 1], [0, 1, 1]]] * 2)
    result = allocation_group_sharing(grouped, GROUPS)
    assert result == {"within": 3.0, "across": 1.0, "recovered": True}
    shared = Allocation.shared(TASKS, [3])
    assert not allocation_group_sharing(shared, GROUPS)["recovered"]
    # Independent copies share nothing.
    independent = Allocation.independent_of(TASKS, [3])
    assert allocation_group_sharing(independent, GROUPS)["within"] == 0.0
    # One group: no pair across groups.
    assert math.isnan(allocation_group_sharing(shared, [TASKS])["across"])


def test_allocation_group_sharing_rejects_bad_input():
    with pytest.raises(ValueError, match=r"Received: groups=\[\['a', 'b', 'c', 'd', 'e'\]\]"):
        allocation_group_sharing(Allocation.shared(TASKS, [2]), [TASKS + ["e"]])
    with pytest.raises(TypeError, match="Expected an `Allocation`. Received: allocation=None"):
        allocation_group_sharing(None, GROUPS)


SIX = [f"g{g}_t{i}" for g in range(3) for i in range(2)]
PAIRS = [SIX[0:2], SIX[2:4], SIX[4:6]]


def paired_allocation():
    """Each pair of tasks has its own component; every task also uses a shared one."""
    matrix = np.zeros((6, 4), bool)
    for k in range(3):
        matrix[2 * k : 2 * k + 2, k] = True
    matrix[:, 3] = True
    return Allocation(SIX, [matrix] * 3)


def test_allocation_group_permutation_test_passes_a_grouped_allocation():
    result = allocation_group_permutation_test(paired_allocation(), PAIRS)
    # 6 tasks in 3 pairs: 15 pairings, the 14 others are all listed.
    assert result["exact"] and result["num_groupings"] == 14
    assert (result["within"], result["across"], result["difference"]) == (6.0, 3.0, 3.0)
    assert result["beaten"] == 1.0 and result["recovered"]
    assert result["p_value"] == pytest.approx(1 / 15)
    # More groupings than `num_permutations`: that many seeded draws.
    sampled = allocation_group_permutation_test(paired_allocation(), PAIRS, num_permutations=5)
    assert not sampled["exact"] and sampled["num_groupings"] == 5 and sampled["recovered"]
    assert sampled == allocation_group_permutation_test(
        paired_allocation(), PAIRS, num_permutations=5
    )
    # Sharing everything beats no other grouping; one group has none to beat.
    shared = allocation_group_permutation_test(Allocation.shared(SIX, [3]), PAIRS)
    assert shared["beaten"] == 0.0 and not shared["recovered"]
    alone = allocation_group_permutation_test(Allocation.shared(SIX, [3]), [SIX])
    assert alone["num_groupings"] == 0 and math.isnan(alone["beaten"]) and not alone["recovered"]


def test_random_allocations_mostly_fail_the_permutation_test():
    """40 random allocations (seeds 0-39) of 6 tasks in 3 pairs: 21 pass the old
    `within > across` test, 3 the permutation test (chance: 1 in 15)."""
    builder = AllocationBuilder((5,), [[dense(4)] * 4] * 3, make_tasks(SIX))
    size = builder.count_params(builder.shared_allocation())
    plans = [random_allocation(builder, size, seed=seed) for seed in range(40)]
    old = sum(allocation_group_sharing(p, PAIRS)["recovered"] for p in plans)
    new = sum(allocation_group_permutation_test(p, PAIRS)["recovered"] for p in plans)
    assert old >= 12 and new <= 8


def test_allocation_group_permutation_test_rejects_bad_input():
    plan = paired_allocation()
    with pytest.raises(ValueError, match="Received: num_permutations=0"):
        allocation_group_permutation_test(plan, PAIRS, num_permutations=0)
    with pytest.raises(ValueError, match="Received: level=1.5"):
        allocation_group_permutation_test(plan, PAIRS, level=1.5)
    with pytest.raises(ValueError, match="exactly once"):
        allocation_group_permutation_test(plan, PAIRS[:2])
    with pytest.raises(TypeError, match="Received: allocation=None"):
        allocation_group_permutation_test(None, PAIRS)


def test_random_allocation_size_and_validity():
    builder = AllocationBuilder(
        (5,),
        [[dense(4), dense(8), dense(4), keras.layers.Identity], dense(4), [dense(4)] * 3],
        make_tasks(),
    )
    shared = builder.count_params(builder.shared_allocation())
    smallest = random_allocation(builder, 0, seed=0)
    assert [int(m.any(axis=0).sum()) for m in smallest.layers] == [1, 1]
    assert random_allocation(builder, shared, seed=1).layers[0].any(axis=0).all()
    for seed in range(4):
        plan = random_allocation(builder, shared // 2, seed=seed)
        sizes = builder.count_params(plan)
        assert abs(sizes - shared // 2) <= 40  # a component is 24 to 40 parameters
        for matrix in plan.layers:
            assert matrix.any(axis=1).all()  # every task uses a component
    assert random_allocation(builder, 300, seed=2) == random_allocation(builder, 300, seed=2)
    with pytest.raises(ValueError, match="Received: num_candidates=0"):
        random_allocation(builder, 300, num_candidates=0)


# Routing plans.


def test_routing_group_separation():
    separated = RoutingPlan(
        TASKS,
        [[(["input"], "input")] * 3, [([0], "input"), ([1, 2], "input"), ([2], "input")]],
        {"a": ([0], "input"), "b": ([0], "input"), "c": ([1, 2], "input"), "d": ([2], "input")},
    )
    result = routing_group_separation(separated, GROUPS, num_samples=200)
    assert result["across"] == 1.0 and result["within"] == 0.0
    assert 0.0 < result["chance"] < 0.5
    assert result["recovered"]
    mmoe = RoutingPlan.mmoe(TASKS, 3)
    assert routing_group_separation(mmoe, GROUPS, num_samples=50) == {
        "across": 0.0,
        "within": 0.0,
        "chance": pytest.approx(result["chance"], abs=1.0),
        "recovered": False,
    }
    # Every task alone is not the grouping: tasks of one group are apart too.
    alone = RoutingPlan(
        TASKS, [[(["input"], "input")] * 4], {t: ([i], "input") for i, t in enumerate(TASKS)}
    )
    assert not routing_group_separation(alone, GROUPS, num_samples=50)["recovered"]


def test_routing_group_separation_rejects_bad_input():
    with pytest.raises(ValueError, match="Received: queries='some'"):
        routing_group_separation(RoutingPlan.mmoe(TASKS, 2), GROUPS, queries="some")
    with pytest.raises(TypeError, match="Expected a `RoutingPlan`"):
        routing_group_separation(BranchingTree.shared(TASKS, 1), GROUPS)


def test_random_routing_plan_size():
    builder = RoutingModelBuilder((5,), [dense(4), dense(4)], make_tasks())
    sizes = [
        builder.count_params(random_routing_plan(builder, 0, num_experts=3, seed=s))
        for s in range(3)
    ]
    large = [
        builder.count_params(random_routing_plan(builder, 10**6, num_experts=3, seed=s))
        for s in range(3)
    ]
    assert max(sizes) < min(large)
    plan = random_routing_plan(builder, 150, num_experts=3, seed=0, queries="all")
    assert plan.widths == (3, 3)
    assert plan == random_routing_plan(builder, 150, num_experts=3, seed=0, queries="all")
    assert np.isfinite(builder.count_params(plan))
