import math

import numpy as np
import pytest

from keras_branching.affinity.rsa import TaskAffinity
from keras_branching.affinity.tree_search import (
    _count_trees,
    enumerate_trees,
    select_tree,
    tree_cost,
)
from keras_branching.tree import BranchingTree


def random_affinity(num_tasks, num_blocks, rng):
    values = rng.uniform(-0.2, 1.0, size=(num_blocks, num_tasks, num_tasks))
    values = (values + values.transpose(0, 2, 1)) / 2
    for d in range(num_blocks):
        np.fill_diagonal(values[d], 1.0)
    return TaskAffinity([f"t{i}" for i in range(num_tasks)], values)


def affine_size(prices, constant=5):
    def size(tree):
        return constant + sum(int(p) * k for p, k in zip(prices, tree.num_copies()))

    return size


# Enumeration and cost.


@pytest.mark.parametrize("num_tasks, num_blocks", [(1, 3), (3, 1), (3, 2), (4, 2), (5, 3)])
def test_enumerate_trees_yields_every_tree_once(num_tasks, num_blocks):
    tasks = [f"t{i}" for i in range(num_tasks)]
    trees = list(enumerate_trees(tasks, num_blocks))
    assert len(trees) == len(set(trees)) == _count_trees(num_tasks, num_blocks)
    assert BranchingTree.shared(tasks, num_blocks) in trees
    assert BranchingTree.independent(tasks, num_blocks) in trees


def test_tree_counts():
    # Bell numbers for one block; 12 two-block trees of 3 tasks.
    assert [_count_trees(n, 1) for n in range(1, 7)] == [1, 2, 5, 15, 52, 203]
    assert _count_trees(3, 2) == 12
    assert _count_trees(5, 3) == 1304


def test_tree_cost_by_hand():
    values = np.ones((2, 3, 3))
    values[0, 0, 1] = values[0, 1, 0] = 0.8  # dissimilarity 0.2
    values[0, 0, 2] = values[0, 2, 0] = 0.0  # 1.0
    values[1, 1, 2] = values[1, 2, 1] = 0.5  # 0.5
    affinity = TaskAffinity(["a", "b", "c"], values)
    tree = BranchingTree(["a", "b", "c"], [[["a", "b", "c"]], [["a"], ["b", "c"]]])
    # Block 1: one group, max dissimilarity 1.0; block 2: mean of 0 and 0.5.
    assert tree_cost(tree, affinity, cost="paper") == pytest.approx(1.0 + 0.25)
    # Balanced: (members - 1) x diameter, over T - 1 = 2: 2 x 1.0 / 2 and 0.5 / 2.
    assert tree_cost(tree, affinity) == pytest.approx(1.0 + 0.25)
    uneven = BranchingTree(["a", "b", "c"], [[["a", "b", "c"]], [["a", "b", "c"]]])
    assert tree_cost(uneven, affinity, cost="paper") == pytest.approx(1.0 + 0.5)
    assert tree_cost(uneven, affinity, cost="balanced") == pytest.approx(1.0 + 0.5)
    for cost in ("paper", "balanced"):
        assert tree_cost(BranchingTree.independent(["a", "b", "c"], 2), affinity, cost) == 0.0
    with pytest.raises(ValueError, match="cost='mean'"):
        tree_cost(tree, affinity, cost="mean")


def pairs_affinity(within):
    """Three pairs of tasks, `within` inside a pair, 0 across; one block."""
    values = np.zeros((1, 6, 6))
    for g in range(3):
        values[0, 2 * g : 2 * g + 2, 2 * g : 2 * g + 2] = within
    np.fill_diagonal(values[0], 1.0)
    return TaskAffinity([f"t{i}" for i in range(6)], values)


@pytest.mark.parametrize("method", ["exact", "beam"])
def test_balanced_cost_keeps_the_pairs_where_the_paper_cost_does_not(method):
    # Three copies: the pairs cost 1 - within under both costs' scale; the
    # paper's cost prefers one group of four unlike tasks and two of one
    # task (1/3) as soon as 1 - within > 1/3.
    affinity = pairs_affinity(0.5)
    pairs = [("t0", "t1"), ("t2", "t3"), ("t4", "t5")]
    balanced = select_tree(affinity, 3, method=method)
    assert sorted(balanced.groups(0)) == pairs
    paper = select_tree(affinity, 3, method=method, cost="paper")
    assert sorted(len(g) for g in paper.groups(0)) == [1, 1, 4]
    # With alike pairs (1 - within < 1/3) both find them.
    assert sorted(select_tree(pairs_affinity(0.8), 3, cost="paper").groups(0)) == pairs


def test_tree_cost_follows_task_names_not_order():
    rng = np.random.default_rng(0)
    affinity = random_affinity(3, 2, rng)
    tree = BranchingTree(["t0", "t1", "t2"], [[["t0", "t1"], ["t2"]], [["t0"], ["t1"], ["t2"]]])
    reordered = BranchingTree(["t2", "t0", "t1"], tree.partitions)
    assert tree_cost(reordered, affinity) == tree_cost(tree, affinity)


def test_tree_cost_rejects_mismatched_affinity():
    affinity = TaskAffinity(["a", "b"], np.ones((2, 2, 2)))
    with pytest.raises(ValueError, match="differ from the affinity's tasks"):
        tree_cost(BranchingTree.shared(["a", "c"], 2), affinity)
    with pytest.raises(ValueError, match="one branch point per block"):
        tree_cost(BranchingTree.shared(["a", "b"], 3), affinity)
    with pytest.raises(TypeError, match="TaskAffinity"):
        tree_cost(BranchingTree.shared(["a", "b"], 2), np.ones((2, 2, 2)))


# Exact search against brute force.


def brute_force(affinity, budget, size, cost="balanced"):
    feasible = [
        (tree_cost(t, affinity, cost=cost), size(t))
        for t in enumerate_trees(affinity.tasks, affinity.num_branch_points)
        if size(t) <= budget
    ]
    return min(feasible)


@pytest.mark.parametrize("cost", ["balanced", "paper"])
@pytest.mark.parametrize("seed", range(12))
def test_exact_search_matches_brute_force(seed, cost):
    rng = np.random.default_rng(seed)
    num_tasks, num_blocks = int(rng.integers(2, 6)), int(rng.integers(1, 4))
    if seed < 4:  # make sure the largest size is covered
        num_tasks, num_blocks = 5, 3
    affinity = random_affinity(num_tasks, num_blocks, rng)
    size = affine_size(rng.integers(0, 6, size=num_blocks))
    shared = size(BranchingTree.shared(affinity.tasks, num_blocks))
    independent = size(BranchingTree.independent(affinity.tasks, num_blocks))
    budget = int(rng.integers(shared, independent + 1))
    best_cost, best_size = brute_force(affinity, budget, size, cost)
    tree = select_tree(affinity, budget, size=size, method="exact", cost=cost)
    assert size(tree) <= budget
    assert tree_cost(tree, affinity, cost=cost) == pytest.approx(best_cost, abs=1e-9)
    assert size(tree) == best_size  # ties go to the smaller tree


@pytest.mark.parametrize("seed", range(6))
def test_beam_search_is_valid_and_close(seed):
    rng = np.random.default_rng(100 + seed)
    affinity = random_affinity(5, 3, rng)
    size = affine_size(rng.integers(1, 6, size=3))
    budget = 0.5
    exact = select_tree(affinity, budget, size=size, method="exact")
    beam = select_tree(affinity, budget, size=size, method="beam")
    shared = size(BranchingTree.shared(affinity.tasks, 3))
    independent = size(BranchingTree.independent(affinity.tasks, 3))
    assert size(beam) <= shared + budget * (independent - shared)
    assert tree_cost(beam, affinity) >= tree_cost(exact, affinity) - 1e-9
    assert tree_cost(beam, affinity) <= tree_cost(exact, affinity) + 0.5


def test_generic_size_falls_back_to_enumeration():
    rng = np.random.default_rng(7)
    affinity = random_affinity(4, 2, rng)

    def size(tree):  # not affine in the copy counts
        return sum(k * k for k in tree.num_copies())

    best_cost, _ = brute_force(affinity, 12, size)
    for method in ("exact", "beam"):
        tree = select_tree(affinity, 12, size=size, method=method)
        assert size(tree) <= 12
    exact = select_tree(affinity, 12, size=size, method="exact")
    assert tree_cost(exact, affinity) == pytest.approx(best_cost)


def test_exact_search_ten_tasks_four_blocks_runs():
    rng = np.random.default_rng(0)
    affinity = random_affinity(10, 4, rng)
    tree = select_tree(affinity, 0.5, method="exact")
    assert sum(tree.num_copies()) <= 4 + 0.5 * (40 - 4)
    beam = select_tree(affinity, 0.5, method="beam")
    assert tree_cost(beam, affinity) >= tree_cost(tree, affinity) - 1e-9


# Budgets and the default size.


def grouped_affinity():
    values = np.ones((2, 4, 4))
    values[:, :2, 2:] = values[:, 2:, :2] = 0.0
    return TaskAffinity(["a", "b", "c", "d"], values)


def test_no_budget_gives_smallest_zero_cost_tree():
    affinity = grouped_affinity()
    tree = select_tree(affinity, None)
    assert tree_cost(tree, affinity) == 0.0
    assert tree.num_copies() == [2, 2]  # the two groups, not four singletons
    noise = random_affinity(4, 2, np.random.default_rng(0))
    assert select_tree(noise, None) == BranchingTree.independent(noise.tasks, 2)


def test_fraction_budget_between_shared_and_independent():
    affinity = grouped_affinity()
    assert select_tree(affinity, 0.0) == BranchingTree.shared(affinity.tasks, 2)
    tree = select_tree(affinity, 1.0 / 6.0)  # 2 + 6 / 6 = 3 block copies
    assert tree.groups(0) == [("a", "b", "c", "d")]
    assert tree.groups(1) == [("a", "b"), ("c", "d")]


def test_budget_below_shared_size_names_the_smallest_size():
    affinity = grouped_affinity()
    size = affine_size([10, 20], constant=3)  # shared: 33
    with pytest.raises(ValueError, match="smallest tree \\(fully shared\\) has size 33"):
        select_tree(affinity, 32, size=size)
    with pytest.raises(ValueError, match="smallest tree"):
        select_tree(affinity, 32, size=size, method="beam")


@pytest.mark.parametrize(
    "kwargs, error",
    [
        ({"budget": -1}, ValueError),
        ({"budget": "half"}, TypeError),
        ({"budget": True}, TypeError),
        ({"budget": 3, "method": "greedy"}, ValueError),
        ({"budget": 3, "size": 12}, TypeError),
        ({"budget": 3, "beam_width": 0}, ValueError),
        ({"budget": 3, "cost": "mean"}, ValueError),
        ({"budget": 3, "size": lambda tree: float("nan")}, ValueError),
    ],
)
def test_select_tree_rejects_bad_arguments(kwargs, error):
    with pytest.raises(error):
        select_tree(grouped_affinity(), **kwargs)


def test_select_tree_rejects_non_affinity():
    with pytest.raises(TypeError, match="TaskAffinity"):
        select_tree(np.ones((2, 4, 4)), 3)


def test_exact_refuses_too_many_tasks():
    affinity = TaskAffinity([f"t{i}" for i in range(15)], np.ones((1, 15, 15)))
    with pytest.raises(ValueError, match="method='beam'"):
        select_tree(affinity, 0.5, method="exact")
    assert math.isfinite(tree_cost(select_tree(affinity, 0.5, method="auto"), affinity))
