"""Compare plans with a known grouping of the tasks, and draw random plans of a given size.

Two questions a benchmark asks of a searched plan (`BranchingTree`,
`Allocation` or `RoutingPlan`):

- Did it find the structure? Where the true grouping of the tasks is known
  (`keras_branching.datasets.synthetic_tasks` returns it), the functions
  `tree_recovers_groups`, `allocation_group_permutation_test` (and the
  weaker `allocation_group_sharing`) and `routing_group_separation` say
  whether the plan keeps the groups together and apart.
- Is it better than a plan picked at random at the same size? The
  functions `random_tree`, `random_allocation` and `random_routing_plan`
  draw plans of the builder's search space whose parameter count
  (`builder.count_params`) is as close as possible to a target.

`benchmarks/suite.py` runs both for every method; see docs/benchmarks.md.
"""

import itertools
import math
import numbers

import numpy as np

from keras_branching._validation import check_non_negative
from keras_branching.allocation.plan import Allocation
from keras_branching.layers.supernet_route import route_choices
from keras_branching.routing.plan import INPUT, RoutingPlan
from keras_branching.tree import BranchingTree

# Above this many size profiles, `random_tree` samples profiles instead of
# listing them all.
_MAX_PROFILES = 20_000


def _check_groups(groups, tasks):
    """`groups` as a list of frozensets if it partitions `tasks` exactly."""
    if isinstance(groups, (str, bytes)) or not isinstance(groups, (list, tuple)) or not groups:
        raise TypeError(
            "Expected `groups` to be a non-empty list of groups (lists of task names). "
            f"Received: groups={groups!r}"
        )
    seen = []
    for group in groups:
        if isinstance(group, (str, bytes)) or not isinstance(group, (list, tuple)) or not group:
            raise TypeError(
                "Expected every group to be a non-empty list of task names. "
                f"Received: {group!r} in groups={groups!r}"
            )
        seen.extend(group)
    if sorted(seen) != sorted(tasks) or len(set(seen)) != len(seen):
        raise ValueError(
            f"Expected `groups` to hold every task of the plan {list(tasks)} exactly once. "
            f"Received: groups={[list(g) for g in groups]}"
        )
    return [frozenset(g) for g in groups]


def _check_seed(seed):
    if seed is not None and (isinstance(seed, bool) or not isinstance(seed, numbers.Integral)):
        raise TypeError(f"Expected `seed` to be an int or None. Received: seed={seed!r}")
    return np.random.default_rng(seed)


def _check_size(num_params):
    return check_non_negative("num_params", num_params)


def _check_count(name, value):
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < 1:
        raise ValueError(f"Expected `{name}` to be an int >= 1. Received: {name}={value!r}")
    return int(value)


def _pairs(tasks, groups):
    """Task index pairs `(i, j)`, `i < j`, split into within-group and across-group lists."""
    owner = {t: k for k, g in enumerate(groups) for t in g}
    within, across = [], []
    for i, j in itertools.combinations(range(len(tasks)), 2):
        (within if owner[tasks[i]] == owner[tasks[j]] else across).append((i, j))
    return within, across


# Trees.


def grouping_block(tree):
    """The block whose partition is the tree's grouping: the last before the task layer.

    A tree whose last partition gives every task its own copy (a
    task-specific last block, as every tree learning to branch derives
    has) groups its tasks at the last block before those task-specific
    ones. Otherwise the grouping is the last block's partition.

    Args:
        tree: a `BranchingTree`.

    Returns:
        The 0-based block index.

    Example:

    >>> tree = BranchingTree(["a", "b", "c"], [[["a", "b", "c"]], [["a", "b"], ["c"]],
    ...                                        [["a"], ["b"], ["c"]]])
    >>> grouping_block(tree)
    1
    """
    if not isinstance(tree, BranchingTree):
        raise TypeError(f"Expected a `BranchingTree`. Received: tree={tree!r}")
    block = tree.num_blocks - 1
    while block > 0 and all(len(g) == 1 for g in tree.groups(block)):
        block -= 1
    return block


def tree_recovers_groups(tree, groups, block=None):
    """Whether a tree's grouping equals the true groups.

    Args:
        tree: a `BranchingTree`.
        groups: the true grouping, a list of lists of task names covering
            the tree's tasks once each.
        block: the 0-based block whose partition is compared; by default
            `grouping_block(tree)`, the last block before the task layer.

    Returns:
        True if the partition of that block is exactly `groups` (in any
        order).

    Raises:
        TypeError: if `tree` is not a `BranchingTree` or `groups` is not a
            list of lists.
        ValueError: if `groups` does not hold every task of the tree once.

    Example:

    >>> tree = BranchingTree(["a", "b", "c", "d"],
    ...                      [[["a", "b", "c", "d"]], [["a", "b"], ["c", "d"]]])
    >>> tree_recovers_groups(tree, [["c", "d"], ["b", "a"]])
    True
    >>> tree_recovers_groups(tree, [["a", "c"], ["b", "d"]])
    False
    """
    if not isinstance(tree, BranchingTree):
        raise TypeError(f"Expected a `BranchingTree`. Received: tree={tree!r}")
    truth = _check_groups(groups, tree.tasks)
    if block is None:
        block = grouping_block(tree)
    return {frozenset(g) for g in tree.groups(block)} == set(truth)


def _profiles(num_tasks, num_blocks, rng):
    """Non-decreasing copy counts `(k_1, ..., k_D)`, 1 <= k_d <= num_tasks: all of
    them when there are few, else a random sample."""
    total = math.comb(num_tasks + num_blocks - 1, num_blocks)
    if total <= _MAX_PROFILES:
        return list(itertools.combinations_with_replacement(range(1, num_tasks + 1), num_blocks))
    draws = rng.integers(1, num_tasks + 1, size=(_MAX_PROFILES, num_blocks))
    return sorted({tuple(sorted(int(v) for v in row)) for row in draws})


def _random_chain(tasks, counts, rng):
    """Random nested partitions with `counts[d]` groups at block `d`, made from
    the last block up by merging random groups."""
    order = list(rng.permutation(len(tasks)))
    # The last partition: `counts[-1]` non-empty groups.
    labels = np.empty(len(tasks), int)
    labels[order[: counts[-1]]] = np.arange(counts[-1])
    labels[order[counts[-1] :]] = rng.integers(0, counts[-1], size=len(tasks) - counts[-1])
    groups = [[tasks[i] for i in np.flatnonzero(labels == k)] for k in range(counts[-1])]
    partitions = [groups]
    for count in reversed(counts[:-1]):
        groups = [list(g) for g in partitions[0]]
        while len(groups) > count:
            i, j = sorted(rng.choice(len(groups), size=2, replace=False))
            groups[i] += groups.pop(j)
        partitions.insert(0, groups)
    return partitions


def random_tree(builder, num_params, seed=None):
    """A random tree whose size is as close as possible to `num_params`.

    A tree's parameter count depends only on how many copies of each block
    it has. This lists every profile of copy counts (non-decreasing, from 1
    to the number of tasks), keeps those whose size
    (`builder.count_params`) is closest to `num_params`, picks one of them
    at random and draws random nested groups with those counts (a random
    partition of the tasks at the last block, then random merges of its
    groups towards the first block).

    Args:
        builder: a `BranchedModelBuilder` (or anything with `task_names`,
            `num_blocks` and `count_params(tree)`).
        num_params: the target parameter count, a number >= 0.
        seed: optional int; the same seed gives the same tree.

    Returns:
        A `BranchingTree` over the builder's tasks and blocks.

    Raises:
        ValueError: for a negative `num_params`.
        TypeError: for a `seed` that is not an int.

    Example:

    >>> import keras
    >>> from keras_branching import BranchedModelBuilder, Task
    >>> builder = BranchedModelBuilder(
    ...     (4,), [lambda: keras.layers.Dense(8)] * 2,
    ...     [Task(t, lambda: keras.layers.Dense(1), "mse") for t in "abcd"])
    >>> target = builder.count_params(
    ...     BranchingTree(list("abcd"), [[["a", "b", "c", "d"]], [["a", "b"], ["c", "d"]]]))
    >>> tree = random_tree(builder, target, seed=0)
    >>> tree.num_copies(), builder.count_params(tree) == target
    ([1, 2], True)
    """
    target = _check_size(num_params)
    rng = _check_seed(seed)
    tasks = list(builder.task_names)
    shared = BranchingTree.shared(tasks, builder.num_blocks)
    # Size is affine in the copy counts: `extra[d]` is the size of one more
    # copy of every block from `d` on (a tree that splits off one task there).
    base = builder.count_params(shared)
    extra = [0] * builder.num_blocks
    if len(tasks) > 1:
        for block in range(builder.num_blocks):
            split = [[tasks[:1], tasks[1:]] if d >= block else [tasks] for d in range(len(extra))]
            extra[block] = builder.count_params(BranchingTree(tasks, split)) - base
    prices = [extra[d] - (extra[d + 1] if d + 1 < len(extra) else 0) for d in range(len(extra))]
    profiles = _profiles(len(tasks), builder.num_blocks, rng)
    sizes = np.array([base + sum(p * (k - 1) for p, k in zip(prices, c)) for c in profiles])
    gaps = np.abs(sizes - target)
    best = np.flatnonzero(gaps == gaps.min())
    counts = profiles[int(rng.choice(best))]
    return BranchingTree(tasks, _random_chain(tasks, counts, rng))


# Allocations.


def allocation_group_sharing(allocation, groups):
    """How many components tasks of one group share, against tasks of different groups.

    Args:
        allocation: an `Allocation`.
        groups: the true grouping, a list of lists of task names covering
            the allocation's tasks once each.

    Returns:
        A dict: `"within"`, the mean number of components (over all routed
        layers) shared by two tasks of one group (NaN if every group has one
        task); `"across"`, the same for two tasks of different groups (NaN
        for one group); `"recovered"`, whether `within > across` (a weak
        test that about half of all random allocations pass: see
        `allocation_group_permutation_test` for one against every other
        grouping).

    Raises:
        TypeError: if `allocation` is not an `Allocation`.
        ValueError: if `groups` does not hold every task once.

    Example:

    >>> plan = Allocation(["a", "b", "c", "d"], [[[1, 1, 0, 0], [1, 1, 0, 0],
    ...                                            [0, 0, 1, 1], [0, 1, 1, 1]]])
    >>> allocation_group_sharing(plan, [["a", "b"], ["c", "d"]])
    {'within': 2.0, 'across': 0.5, 'recovered': True}
    """
    if not isinstance(allocation, Allocation):
        raise TypeError(f"Expected an `Allocation`. Received: allocation={allocation!r}")
    truth = _check_groups(groups, allocation.tasks)
    shared = allocation.shared_components()
    within, across = _pairs(list(allocation.tasks), truth)

    def mean(pairs):
        return float(np.mean([shared[i, j] for i, j in pairs])) if pairs else float("nan")

    result = {"within": mean(within), "across": mean(across)}
    result["recovered"] = bool(result["within"] > result["across"])
    return result


def _count_groupings(sizes):
    """How many partitions of `sum(sizes)` tasks have groups of exactly `sizes`."""
    count = math.factorial(sum(sizes))
    for size in sizes:
        count //= math.factorial(size)
    for repeats in np.unique(sizes, return_counts=True)[1]:
        count //= math.factorial(int(repeats))
    return count


def _groupings(indices, sizes):
    """Every partition of `indices` into groups of `sizes` (a multiset), each once."""
    if not indices:
        yield []
        return
    first, rest = indices[0], indices[1:]
    for size in sorted(set(sizes)):
        left = list(sizes)
        left.remove(size)
        for others in itertools.combinations(rest, size - 1):
            group = (first, *others)
            remaining = [i for i in rest if i not in others]
            for tail in _groupings(remaining, left):
                yield [group, *tail]


def _sharing_difference(shared, labels):
    """Mean shared components within groups minus across groups, for group `labels`."""
    upper = np.triu(np.ones(shared.shape, bool), 1)
    same = labels[:, None] == labels[None, :]
    within, across = shared[upper & same], shared[upper & ~same]
    if not within.size or not across.size:
        return float("nan")
    return float(within.mean() - across.mean())


def allocation_group_permutation_test(
    allocation, groups, num_permutations=1000, seed=0, level=0.95
):
    """Whether an allocation keeps the true groups together better than other groupings do.

    The statistic is `allocation_group_sharing`'s: the mean number of
    components two tasks of one group share minus the mean for two tasks
    of different groups. It is compared with the same statistic for the
    other groupings of the tasks into groups of the true sizes (the task
    labels permuted): all of them when there are at most
    `num_permutations` (6 tasks in 3 pairs have 14 others), otherwise
    `num_permutations` random permutations of the tasks (drawn with
    `seed`; a draw that gives the true grouping back is skipped). The
    allocation recovers the groups when it beats (strictly) at least a
    fraction `level` of them, so a plan that shares as much across groups
    as within them never does. `allocation_group_sharing` only asks for
    `within > across`, which about half of all random allocations pass.

    Args:
        allocation: an `Allocation`.
        groups: the true grouping, a list of lists of task names covering
            the allocation's tasks once each.
        num_permutations: the most groupings listed, and the number drawn
            when there are more; an int >= 1.
        seed: seed of the draws (an int, or None).
        level: the fraction of other groupings to beat, in (0, 1].

    Returns:
        A dict: `"within"`, `"across"` (as `allocation_group_sharing`),
        `"difference"` (`within - across`), `"beaten"` (the fraction of
        the other groupings whose difference is strictly lower; NaN if
        there is no other grouping or the difference is NaN), `"p_value"`
        (the permutation p-value: one plus the number of other groupings
        at least as good, over one plus their number), `"num_groupings"`
        (how many other groupings were compared), `"exact"` (whether all
        of them were listed) and `"recovered"` (`beaten >= level`).

    Raises:
        TypeError: if `allocation` is not an `Allocation`, or for a `seed`
            that is not an int.
        ValueError: if `groups` does not hold every task once, for
            `num_permutations` < 1 or `level` outside (0, 1].

    Example:

    >>> plan = Allocation(["a", "b", "c", "d"], [[[1, 1, 0, 0], [1, 1, 0, 0],
    ...                                            [0, 0, 1, 1], [0, 1, 1, 1]]])
    >>> result = allocation_group_permutation_test(plan, [["a", "b"], ["c", "d"]])
    >>> result["difference"], result["beaten"], result["num_groupings"], result["recovered"]
    (1.5, 1.0, 2, True)
    """
    if not isinstance(allocation, Allocation):
        raise TypeError(f"Expected an `Allocation`. Received: allocation={allocation!r}")
    truth = _check_groups(groups, allocation.tasks)
    num_permutations = _check_count("num_permutations", num_permutations)
    if isinstance(level, bool) or not isinstance(level, numbers.Real) or not 0 < level <= 1:
        raise ValueError(f"Expected `level` in (0, 1]. Received: level={level!r}")
    rng = _check_seed(seed)
    tasks = list(allocation.tasks)
    shared = np.asarray(allocation.shared_components(), float)
    owner = {t: k for k, g in enumerate(truth) for t in g}
    labels = np.array([owner[t] for t in tasks])
    sharing = allocation_group_sharing(allocation, groups)
    observed = _sharing_difference(shared, labels)
    true_grouping = {frozenset(np.flatnonzero(labels == k).tolist()) for k in range(len(truth))}
    sizes = [len(g) for g in truth]
    exact = _count_groupings(sizes) - 1 <= num_permutations
    others = []
    if exact:
        for grouping in _groupings(list(range(len(tasks))), sizes):
            if {frozenset(g) for g in grouping} != true_grouping:
                relabelled = np.empty(len(tasks), int)
                for k, group in enumerate(grouping):
                    relabelled[list(group)] = k
                others.append(_sharing_difference(shared, relabelled))
    else:
        while len(others) < num_permutations:
            relabelled = rng.permutation(labels)
            grouping = {
                frozenset(np.flatnonzero(relabelled == k).tolist()) for k in range(len(truth))
            }
            if grouping != true_grouping:
                others.append(_sharing_difference(shared, relabelled))
    others = np.array(others)
    if others.size and not math.isnan(observed):
        beaten = float(np.mean(others < observed))
        p_value = float((1 + np.sum(others >= observed)) / (1 + others.size))
    else:
        beaten = p_value = float("nan")
    return {
        "within": sharing["within"],
        "across": sharing["across"],
        "difference": observed,
        "beaten": beaten,
        "p_value": p_value,
        "num_groupings": int(others.size),
        "exact": bool(exact),
        "recovered": bool(beaten >= level),
    }


def random_allocation(builder, num_params, seed=None, num_candidates=64):
    """A random allocation whose size is as close as possible to `num_params`.

    An allocation's size depends only on which components some task uses.
    Each of `num_candidates` draws adds the components of every routed
    layer in a random order (at least one per layer) and keeps the prefix
    whose size is closest to `num_params`; the closest draw wins. Then every
    task uses each chosen component with probability 1/2, at least one per
    routed layer, and every chosen component gets at least one task.

    Args:
        builder: an `AllocationBuilder` (or anything with `task_names`,
            `num_components` and `count_params(allocation)`).
        num_params: the target parameter count, a number >= 0.
        seed: optional int; the same seed gives the same allocation.
        num_candidates: how many random component orders to try, >= 1.

    Returns:
        An `Allocation` (shared weights, not independent).

    Raises:
        ValueError: for a negative `num_params` or `num_candidates` < 1.
        TypeError: for a `seed` that is not an int.

    Example:

    >>> import keras
    >>> from keras_branching import AllocationBuilder, Task
    >>> dense = lambda: keras.layers.Dense(4)
    >>> builder = AllocationBuilder((3,), [[dense] * 4],
    ...     [Task(t, lambda: keras.layers.Dense(1), "mse") for t in "ab"])
    >>> plan = random_allocation(builder, 2 * 16 + 2 * 5, seed=0)  # two components, two heads
    >>> int(plan.layers[0].any(axis=0).sum())
    2
    """
    target = _check_size(num_params)
    rng = _check_seed(seed)
    num_candidates = _check_count("num_candidates", num_candidates)
    tasks = list(builder.task_names)
    widths = list(builder.num_components)

    def size(used):
        layers = [np.tile(u, (len(tasks), 1)) for u in used]
        return builder.count_params(Allocation(tasks, layers))

    best = None
    for _ in range(num_candidates):
        used = [np.zeros(w, bool) for w in widths]
        for layer, w in enumerate(widths):  # one component per layer at least
            used[layer][rng.integers(w)] = True
        rest = [
            (layer, k) for layer, w in enumerate(widths) for k in range(w) if not used[layer][k]
        ]
        candidate = ([u.copy() for u in used], size(used))
        for index in rng.permutation(len(rest)):
            layer, k = rest[index]
            used[layer][k] = True
            count = size(used)
            if abs(count - target) < abs(candidate[1] - target):
                candidate = ([u.copy() for u in used], count)
            if count > target:
                break
        if best is None or abs(candidate[1] - target) < abs(best[1] - target):
            best = candidate
    layers = []
    for used in best[0]:
        chosen = np.flatnonzero(used)
        matrix = np.zeros((len(tasks), len(used)), bool)
        matrix[:, chosen] = rng.random((len(tasks), len(chosen))) < 0.5
        for t in range(len(tasks)):  # every task uses one component at least
            if not matrix[t].any():
                matrix[t, rng.choice(chosen)] = True
        for k in chosen:  # every chosen component has a user
            if not matrix[:, k].any():
                matrix[rng.integers(len(tasks)), k] = True
        layers.append(matrix)
    return Allocation(tasks, layers)


# Routing plans.


def _random_routing(tasks, widths, max_route_size, queries, rng):
    """A routing plan of the given widths with uniformly random (route, query) choices."""

    def choose(width):
        num_queries = 1 + width if queries == "all" else 1
        choices = route_choices(width, num_queries, max_route_size)
        route, query = choices[rng.integers(len(choices))]
        return list(route), (INPUT if query == 0 else query - 1)

    layers = [[([INPUT], INPUT)] * widths[0]]
    for depth in range(1, len(widths)):
        layers.append([choose(widths[depth - 1]) for _ in range(widths[depth])])
    towers = {t: choose(widths[-1]) for t in tasks}
    return RoutingPlan(tasks, layers, towers)


def _check_routing_space(num_experts, max_route_size, queries):
    num_experts = _check_count("num_experts", num_experts)
    if max_route_size is not None:
        max_route_size = _check_count("max_route_size", max_route_size)
    if queries not in ("input", "all"):
        raise ValueError(
            f"Expected `queries` to be 'input' or 'all'. Received: queries={queries!r}"
        )
    return num_experts, max_route_size


def _disjoint_rates(plan, within, across):
    used = [plan.used_by(t) for t in plan.tasks]

    def rate(pairs):
        if not pairs:
            return float("nan")
        return float(np.mean([not (used[i] & used[j]) for i, j in pairs]))

    return rate(within), rate(across)


def routing_group_separation(
    plan, groups, num_samples=1000, seed=0, max_route_size=None, queries="input"
):
    """How often towers of different groups read from disjoint sub-networks, against chance.

    Two towers read from disjoint sub-networks when no sub-network reaches
    both (`RoutingPlan.used_by`). The chance rate is the same rate for
    plans of the same widths whose every route is drawn uniformly from the
    search space of `ShareRouting` (its initial, uniform policy), estimated
    on `num_samples` such plans.

    Args:
        plan: a `RoutingPlan`.
        groups: the true grouping, a list of lists of task names covering
            the plan's tasks once each.
        num_samples: random plans drawn for the chance rate, >= 1.
        seed: seed of those draws (an int, or None).
        max_route_size: the largest route of the search space (default:
            every non-empty subset), as in `ShareRouting`.
        queries: `"input"` or `"all"`, as in `ShareRouting`.

    Returns:
        A dict: `"across"`, the fraction of pairs of towers of different
        groups that read from disjoint sub-networks; `"within"`, the same
        for pairs of one group; `"chance"`, the expected `"across"` rate of
        a random plan; `"recovered"`, whether `across > chance` and
        `across > within` (groups kept apart more often than by chance, and
        more often than tasks of one group). Rates over no pairs are NaN.

    Raises:
        TypeError: if `plan` is not a `RoutingPlan`.
        ValueError: if `groups` does not hold every task once, or for bad
            search-space arguments.

    Example:

    >>> plan = RoutingPlan(["a", "b", "c", "d"], [[(["input"], "input")] * 2],
    ...                    {"a": ([0], "input"), "b": ([0], "input"),
    ...                     "c": ([1], "input"), "d": ([1], "input")})
    >>> result = routing_group_separation(plan, [["a", "b"], ["c", "d"]])
    >>> result["across"], result["within"], round(result["chance"], 1), result["recovered"]
    (1.0, 0.0, 0.2, True)
    """
    if not isinstance(plan, RoutingPlan):
        raise TypeError(f"Expected a `RoutingPlan`. Received: plan={plan!r}")
    truth = _check_groups(groups, plan.tasks)
    num_samples = _check_count("num_samples", num_samples)
    _check_routing_space(max(plan.widths), max_route_size, queries)
    rng = _check_seed(seed)
    tasks = list(plan.tasks)
    within, across = _pairs(tasks, truth)
    within_rate, across_rate = _disjoint_rates(plan, within, across)
    chance = [
        _disjoint_rates(
            _random_routing(tasks, plan.widths, max_route_size, queries, rng), [], across
        )[1]
        for _ in range(num_samples)
    ]
    chance = float(np.mean(chance)) if across else float("nan")
    recovered = bool(across_rate > chance and not within_rate >= across_rate)
    return {"across": across_rate, "within": within_rate, "chance": chance, "recovered": recovered}


def random_routing_plan(
    builder,
    num_params,
    num_experts,
    seed=None,
    max_route_size=None,
    queries="input",
    num_candidates=256,
):
    """A random routing plan whose size is as close as possible to `num_params`.

    Draws `num_candidates` plans of `num_experts` sub-networks per layer of
    the builder, each route and gate query uniformly from the search space
    of `ShareRouting` with the same arguments, and returns the one whose
    size (`builder.count_params`) is closest to `num_params` (the first
    such draw on ties).

    Args:
        builder: a `RoutingModelBuilder`.
        num_params: the target parameter count, a number >= 0.
        num_experts: sub-networks per layer, an int >= 1.
        seed: optional int; the same seed gives the same plan.
        max_route_size: the largest route (default: every non-empty subset).
        queries: `"input"` or `"all"`, as in `ShareRouting`.
        num_candidates: how many plans to draw, >= 1.

    Returns:
        A `RoutingPlan` over the builder's tasks and layers.

    Raises:
        ValueError: for a negative `num_params`, bad counts or `queries`.
        TypeError: for a `seed` that is not an int.

    Example:

    >>> import keras
    >>> from keras_branching import RoutingModelBuilder, Task
    >>> builder = RoutingModelBuilder((4,), [lambda: keras.layers.Dense(8)] * 2,
    ...     [Task(t, lambda: keras.layers.Dense(1), "mse") for t in "ab"])
    >>> plan = random_routing_plan(builder, 200, num_experts=3, seed=0)
    >>> plan.widths
    (3, 3)
    """
    target = _check_size(num_params)
    num_experts, max_route_size = _check_routing_space(num_experts, max_route_size, queries)
    num_candidates = _check_count("num_candidates", num_candidates)
    rng = _check_seed(seed)
    tasks = list(builder.task_names)
    widths = [num_experts] * builder.num_layers
    best = None
    for _ in range(num_candidates):
        plan = _random_routing(tasks, widths, max_route_size, queries, rng)
        gap = abs(builder.count_params(plan) - target)
        if best is None or gap < best[1]:
            best = (plan, gap)
    return best[0]
