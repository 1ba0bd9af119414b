"""Tree search: the cheapest branching tree whose size fits a budget.

Steps 5 to 7 of affinity-guided branching. The cost of a tree (`tree_cost`)
is a sum over blocks of the mean, over that block's groups, of each group's
largest pairwise dissimilarity; its size is a sum over blocks of the number
of copies times the block's size, plus the heads. `select_tree` finds the
tree of lowest cost that fits a budget, exactly or by beam search.

How the exact search works (see docs/methods/affinity.md). For a fixed
vector of copy counts `k = (k_1 <= ... <= k_D)` the size is fixed and the
cost is a sum, over the nodes of the tree, of `diameter_d(group) / k_d`:
a nested-partition problem with exactly `k_d` groups at block `d`. The
search lists every count vector that fits the budget (there are few:
at most C(T + D - 1, D)), orders them by a lower bound (each block's best
partition into `k_d` groups, ignoring nesting, from a dynamic programme
over subsets), and solves them in that order by branch and bound, stopping
when the next bound cannot beat the best tree found. Inside one count
vector, the groups of each block are chosen one at a time within the
groups of the block before; every partial choice is bounded by knapsacks
(over the groups fixed so far) of the same subset tables, and the best
completion below each partition is memoised.

numpy only: nothing here imports Keras or TensorFlow.
"""

import math
import numbers

import numpy as np

from keras_branching.affinity.rsa import TaskAffinity
from keras_branching.tree import BranchingTree, _check_num_blocks, check_task_names

# Exact search builds tables over all 3**T (subset, sub-subset) pairs.
_MAX_EXACT_TASKS = 14
# `method="auto"` uses exact search up to this many tasks.
_AUTO_EXACT_TASKS = 10
# Generic (non-affine) sizes: exact search enumerates at most this many trees.
_MAX_ENUMERATED_TREES = 200_000
_TOLERANCE = 1e-9
# The tree costs `tree_cost` knows (see its docstring).
COSTS = ("balanced", "paper")
DEFAULT_COST = "balanced"


# Validation and the cost.


def _check_affinity(affinity):
    if not isinstance(affinity, TaskAffinity):
        raise TypeError(
            "Expected `affinity` to be a `TaskAffinity` (see `rsa_affinity`). "
            f"Received: {affinity!r} (of type {type(affinity).__name__})"
        )
    return affinity


def _check_cost(cost):
    if cost not in COSTS:
        raise ValueError(
            f"Expected `cost` to be one of {', '.join(map(repr, COSTS))}. Received: cost={cost!r}"
        )
    return cost


def _group_weight(cost, num_members, diameter):
    """What one group adds to its block's cost, before the block's scale."""
    return diameter if cost == "paper" else (num_members - 1) * diameter


def _block_scale(cost, num_groups, num_tasks):
    """The factor of a block's summed group weights: 1 / groups, or 1 / (tasks - 1)."""
    if cost == "paper":
        return 1.0 / num_groups if num_groups else 0.0
    return 1.0 / max(1, num_tasks - 1)


def tree_cost(tree, affinity, cost=DEFAULT_COST):
    """The cost of a tree under an affinity: lower keeps dissimilar tasks apart.

    A sum over blocks `d`; the diameter of a group is the largest
    dissimilarity `1 - affinity.values[d, i, j]` between two of its tasks.

    - `cost="paper"` (Vandenhende et al.): block `d` costs the mean, over
      its groups, of their diameters; a group of one task costs 0. With
      the number of groups fixed by a budget, this favours uneven trees:
      one group of every dissimilar task plus groups of one cost about
      `1 / k` per block, less than `k` groups of related tasks as soon as
      their diameter exceeds `1 / k`.
    - `cost="balanced"` (the default): block `d` costs
      `sum over groups c of (|c| - 1) x diameter(c)`, divided by `T - 1`:
      every task a group adds beyond its first pays the group's diameter.
      A shared block costs its diameter (as in the paper), an unshared one
      0; for a fixed number of groups, the true grouping of tasks that are
      alike inside groups and unlike across is the unique optimum.

    Args:
        tree: a `BranchingTree`.
        affinity: a `TaskAffinity` over the same tasks, with one branch point
            per block of the tree.
        cost: `"balanced"` or `"paper"`.

    Returns:
        The cost, a float >= 0.

    Raises:
        TypeError: if `tree` or `affinity` has the wrong type.
        ValueError: if their tasks or numbers of blocks differ, or for an
            unknown `cost`.

    Example:

    >>> import numpy as np
    >>> from keras_branching.tree import BranchingTree
    >>> values = np.full((1, 4, 4), 0.0)
    >>> values[0, :2, :2] = values[0, 2:, 2:] = 0.6  # two pairs, dissimilarity 0.4
    >>> np.fill_diagonal(values[0], 1.0)
    >>> affinity = TaskAffinity(["a", "b", "c", "d"], values)
    >>> pairs = BranchingTree(["a", "b", "c", "d"], [[["a", "b"], ["c", "d"]]])
    >>> uneven = BranchingTree(["a", "b", "c", "d"], [[["a", "b", "c"], ["d"]]])
    >>> [round(tree_cost(t, affinity, cost="paper"), 6) for t in (pairs, uneven)]
    [0.4, 0.5]
    >>> [round(tree_cost(t, affinity), 6) for t in (pairs, uneven)]  # balanced
    [0.266667, 0.666667]
    """
    _check_affinity(affinity)
    _check_cost(cost)
    if not isinstance(tree, BranchingTree):
        raise TypeError(
            f"Expected `tree` to be a `BranchingTree`. Received: {tree!r} "
            f"(of type {type(tree).__name__})"
        )
    if set(tree.tasks) != set(affinity.tasks):
        raise ValueError(
            f"The tree's tasks {list(tree.tasks)} differ from the affinity's "
            f"tasks {list(affinity.tasks)}."
        )
    if tree.num_blocks != affinity.num_branch_points:
        raise ValueError(
            f"The tree has {tree.num_blocks} blocks but the affinity has "
            f"{affinity.num_branch_points} branch points. Expected one branch "
            "point per block."
        )
    position = {t: i for i, t in enumerate(affinity.tasks)}
    dissimilarity = affinity.dissimilarity
    total = 0.0
    for d in range(tree.num_blocks):
        groups = tree.groups(d)
        block = 0.0
        for group in groups:
            if len(group) > 1:
                index = [position[t] for t in group]
                diameter = float(dissimilarity[d][np.ix_(index, index)].max())
                block += _group_weight(cost, len(group), diameter)
        total += block * _block_scale(cost, len(groups), len(tree.tasks))
    return float(total)


# Enumeration.


def _set_partitions(items):
    """Every partition of the list `items` into non-empty groups, each once."""
    if not items:
        yield []
        return
    first, rest = items[0], items[1:]
    for partition in _set_partitions(rest):
        yield [[first]] + partition
        for i in range(len(partition)):
            yield partition[:i] + [[first] + partition[i]] + partition[i + 1 :]


def _chains(parents, levels):
    """Every chain of `levels` partitions, each refining `parents` and the one before."""
    if levels == 0:
        yield []
        return
    stack = [[]]
    for group in parents:
        stack = [done + [p] for done in stack for p in _set_partitions(list(group))]
    for choice in stack:
        partition = [g for part in choice for g in part]
        for rest in _chains(partition, levels - 1):
            yield [partition] + rest


def enumerate_trees(tasks, num_blocks):
    """Every valid branching tree over `tasks` and `num_blocks` blocks, each once.

    The number of trees grows faster than exponentially (5 tasks and 3
    blocks: 2,117 trees; 6 tasks and 3 blocks: 31,752), so this is for
    small problems and tests; `select_tree` does not enumerate.

    Args:
        tasks: list of unique task names.
        num_blocks: number of blocks, >= 1.

    Yields:
        `BranchingTree` objects.

    Example:

    >>> len(list(enumerate_trees(["a", "b", "c"], 2)))
    12
    """
    tasks = check_task_names(tasks)
    num_blocks = _check_num_blocks(num_blocks)
    for partitions in _chains([list(tasks)], num_blocks):
        yield BranchingTree(tasks, partitions)


def _count_trees(num_tasks, num_blocks):
    """The number of trees, by the recursion over the block holding the first task."""
    counts = [[1] * (num_tasks + 1)]  # zero levels: one (empty) chain
    for _ in range(num_blocks):
        previous = counts[-1]
        current = [1] + [0] * num_tasks
        for n in range(1, num_tasks + 1):
            current[n] = sum(
                math.comb(n - 1, j - 1) * previous[j] * current[n - j] for j in range(1, n + 1)
            )
        counts.append(current)
    return counts[-1][num_tasks]


# Sizes and budgets.


class _SizeModel:
    """How big a tree is: `constant + sum(prices[d] * k_d)` when affine, else a callable."""

    def __init__(self, size, tasks, num_blocks):
        self.tasks = tasks
        self.num_blocks = num_blocks
        self.callable = size
        if size is None:
            self.prices = np.ones(num_blocks)
            self.constant = 0.0
            self.affine = True
            return
        if not callable(size):
            raise TypeError(
                "Expected `size` to be a callable mapping a `BranchingTree` to a "
                f"number, or None. Received: size={size!r}"
            )
        shared = BranchingTree.shared(tasks, num_blocks)
        if len(tasks) == 1:  # one tree only
            self.prices = np.zeros(num_blocks)
            self.constant = self.measure(shared)
            self.affine = True
            return
        # Probe: two copies from block d on, one before.
        probes = [
            BranchingTree(
                tasks, [[list(tasks)]] * d + [[[tasks[0]], list(tasks[1:])]] * (num_blocks - d)
            )
            for d in range(num_blocks)
        ] + [shared]
        sizes = [self.measure(t) for t in probes]
        self.prices = np.array([sizes[d] - sizes[d + 1] for d in range(num_blocks)])
        self.constant = sizes[-1] - float(self.prices.sum())
        rng = np.random.default_rng(0)
        checks = [BranchingTree.independent(tasks, num_blocks)]
        for _ in range(3):
            checks.append(_random_tree(tasks, num_blocks, rng))
        self.affine = bool(np.all(self.prices >= 0)) and all(
            math.isclose(
                self.measure(t), self.affine_size(t.num_copies()), rel_tol=1e-9, abs_tol=1e-9
            )
            for t in checks
        )

    def measure(self, tree):
        value = self.callable(tree)
        if (
            isinstance(value, bool)
            or not isinstance(value, numbers.Real)
            or not math.isfinite(value)
        ):
            raise ValueError(
                f"Expected `size` to return a finite number. Received: {value!r} for {tree!r}"
            )
        return float(value)

    def affine_size(self, copies):
        return self.constant + float(np.dot(self.prices, copies))

    def of(self, tree):
        if self.affine:
            return self.affine_size(tree.num_copies())
        return self.measure(tree)


def _random_tree(tasks, num_blocks, rng):
    partitions, current = [], [list(tasks)]
    for _ in range(num_blocks):
        refined = []
        for group in current:
            labels = rng.integers(0, 2, size=len(group))
            for value in (0, 1):
                part = [t for t, label in zip(group, labels) if label == value]
                if part:
                    refined.append(part)
        partitions.append(refined)
        current = refined
    return BranchingTree(tasks, partitions)


def _resolve_budget(budget, shared_size, independent_size):
    """The budget as a size: an int (or a float > 1) is a size, a float in [0, 1] a fraction."""
    if budget is None:
        return math.inf
    if isinstance(budget, bool) or not isinstance(budget, numbers.Real):
        raise TypeError(
            "Expected `budget` to be a size (int), a fraction in [0, 1] (float) "
            f"or None. Received: budget={budget!r}"
        )
    if math.isnan(budget) or budget < 0:
        raise ValueError(
            f"Expected `budget` >= 0 (a size, or a fraction in [0, 1]). Received: budget={budget!r}"
        )
    if not isinstance(budget, numbers.Integral) and budget <= 1:
        return shared_size + float(budget) * (independent_size - shared_size)
    return float(budget)


def _format_size(value):
    return str(int(value)) if float(value).is_integer() else f"{value:.6g}"


def _too_small(budget, capacity, smallest):
    """The error for a budget that no tree fits."""
    return ValueError(
        f"No tree fits the budget: budget={budget!r} allows size {_format_size(capacity)}, "
        f"but the smallest tree (fully shared) has size {_format_size(smallest)}."
    )


# Subset tables for one affinity (exact search).


class _Tables:
    """Group weights and best partitions of every subset of tasks, per block."""

    def __init__(self, dissimilarity, cost):
        num_blocks, t, _ = dissimilarity.shape
        self.num_tasks, self.num_blocks = t, num_blocks
        self.full = (1 << t) - 1
        masks = np.arange(1 << t, dtype=np.int64)
        # Diameter: the largest dissimilarity over pairs inside the subset.
        self.w = np.zeros((num_blocks, 1 << t))
        for i in range(t):
            for j in range(i + 1, t):
                both = ((masks >> i) & (masks >> j) & 1).astype(bool)
                self.w[:, both] = np.maximum(self.w[:, both], dissimilarity[:, i, j][:, None])
        if cost != "paper":  # each group's weight: (members - 1) x diameter
            members = sum((masks >> i) & 1 for i in range(t))
            self.w *= np.maximum(members - 1, 0)[None, :]
        # scale[k]: the factor of a block's summed weights when it has k groups.
        self.scale = np.array([_block_scale(cost, k, t) for k in range(t + 2)])
        # (subset, piece) pairs, the piece holding the subset's lowest task.
        digits = np.arange(3**t, dtype=np.int64)
        mask = np.zeros_like(digits)
        piece = np.zeros_like(digits)
        for i in range(t):
            digit = digits % 3
            digits //= 3
            mask |= (digit > 0).astype(np.int64) << i
            piece |= (digit == 2).astype(np.int64) << i
        low = mask & -mask
        keep = (mask > 0) & ((piece & low) > 0)
        order = np.lexsort((piece[keep], mask[keep]))
        self.mask_of_pair = mask[keep][order]
        self.pieces = piece[keep][order]
        self.starts = np.searchsorted(self.mask_of_pair, masks)
        self.ends = np.searchsorted(self.mask_of_pair, masks, side="right")
        # opt[d, s, j]: least sum of diameters over partitions of s into j groups.
        self.opt = np.full((num_blocks, 1 << t, t + 2), np.inf)
        self.opt[:, 0, 0] = 0.0
        rest = self.mask_of_pair ^ self.pieces
        starts = self.starts[1:]
        for d in range(num_blocks):
            for j in range(1, t + 1):
                candidates = self.w[d, self.pieces] + self.opt[d, rest, j - 1]
                self.opt[d, 1:, j] = np.minimum.reduceat(candidates, starts)
        # Index for min-plus convolutions of count vectors of length t + 2.
        n = t + 2
        r, j = np.meshgrid(np.arange(n), np.arange(n), indexing="ij")
        self.shift = np.where(r >= j, r - j, n - 1)  # column n - 1 is always inf

    def minplus(self, a, b):
        """`out[r] = min_j a[j] + b[r - j]`; the last entry stays inf."""
        return (a[None, :] + b[self.shift]).min(axis=1)

    def popcount(self, mask):
        return bin(mask).count("1")


class _Exact:
    """Branch and bound over count vectors and nested partitions (affine sizes)."""

    def __init__(self, tables):
        self.tables = tables
        self.memo = {}
        self.knapsacks = {}
        n = tables.num_tasks + 2
        self.unit = np.full(n, np.inf)
        self.unit[0] = 0.0

    def knapsack(self, d, partition):
        """Count vector: least level-d cost of refining `partition` into r groups."""
        key = (d, partition)
        vector = self.knapsacks.get(key)
        if vector is None:
            vector = self.unit
            for group in partition:
                vector = self.tables.minplus(vector, self.tables.opt[d, group])
            self.knapsacks[key] = vector
        return vector

    def deep_bound(self, level, partition, counts):
        return sum(
            self.knapsack(d, partition)[counts[d]] * self.tables.scale[counts[d]]
            for d in range(level + 1, len(counts))
        )

    def complete(self, level, partition, counts, limit):
        """Best refinements below `partition` (at `level`), if cheaper than `limit`.

        Returns `(cost, partitions)` with cost < limit, or `(inf, None)`.
        """
        if level == len(counts) - 1:
            return (0.0, ()) if limit > 0 else (math.inf, None)
        key = (level, partition, counts[level + 1 :])
        known = self.memo.get(key)
        if known is not None:
            value, plan = known
            if plan is not None:
                return (value, plan) if value < limit else (math.inf, None)
            if limit <= value:
                return math.inf, None
        tables = self.tables
        e = level + 1
        target = counts[e]
        weight = tables.scale[target]
        w, opt = tables.w[e], tables.opt[e]
        deep = self.deep_bound(e, partition, counts)
        m = len(partition)
        suffix = [self.unit] * (m + 1)
        for i in reversed(range(m)):
            suffix[i] = tables.minplus(suffix[i + 1], opt[partition[i]])
        best = [limit, None]
        pieces = []
        n = tables.num_tasks + 2
        span = np.arange(n)

        def pick(i, remaining, left, partial):
            if remaining == 0:
                i += 1
                if i == m:
                    refined = tuple(sorted(pieces))
                    cost = partial * weight
                    if cost + self.deep_bound(e, refined, counts) >= best[0]:
                        return
                    value, plan = self.complete(e, refined, counts, best[0] - cost)
                    if plan is not None and cost + value < best[0]:
                        best[0], best[1] = cost + value, (refined,) + plan
                    return
                remaining = partition[i]
            lo, hi = tables.starts[remaining], tables.ends[remaining]
            candidates = tables.pieces[lo:hi]
            # Later parents must give `left - 1 - j` groups when the rest of this one gives j.
            later = np.full(n, np.inf)
            valid = span <= left - 1
            later[valid] = suffix[i + 1][left - 1 - span[valid]]
            rest_bound = (opt[remaining ^ candidates] + later[None, :]).min(axis=1)
            bounds = (partial + w[candidates] + rest_bound) * weight + deep
            for index in np.argsort(bounds, kind="stable"):
                if bounds[index] >= best[0]:
                    break
                piece = int(candidates[index])
                pieces.append(piece)
                pick(i, remaining ^ piece, left - 1, partial + w[piece])
                pieces.pop()

        if suffix[0][target] * weight + deep < limit:
            pick(0, partition[0], target, 0.0)
        if best[1] is not None:
            self.memo[key] = (best[0], best[1])
            return best[0], best[1]
        previous = known[0] if known is not None else -math.inf
        self.memo[key] = (max(previous, limit), None)
        return math.inf, None


def _count_vectors(num_tasks, prices, capacity):
    """Every non-decreasing count vector (1 <= k_1 <= ... <= k_D <= T) within `capacity`."""
    num_blocks = len(prices)
    tail = np.concatenate([np.cumsum(prices[::-1])[::-1], [0.0]])  # sum of prices[d:]
    out = []

    def extend(prefix, spent):
        d = len(prefix)
        if d == num_blocks:
            out.append(tuple(prefix))
            return
        for k in range(prefix[-1] if prefix else 1, num_tasks + 1):
            # Every later block has at least k copies.
            if spent + k * tail[d] > capacity + _TOLERANCE * max(1.0, abs(capacity)):
                break
            extend(prefix + [k], spent + k * prices[d])

    extend([], 0.0)
    return out


def _exact_affine(dissimilarity, model, capacity, cost, incumbent=None):
    """Exact optimum as `(cost, size, masks)`; None when no count vector fits."""
    num_tasks = dissimilarity.shape[1]
    vectors = _count_vectors(num_tasks, model.prices, capacity - model.constant)
    if not vectors:
        return None
    tables = _Tables(dissimilarity, cost)
    full = tables.full
    search = _Exact(tables)
    ranked = sorted(
        (
            sum(tables.opt[d, full, k] * tables.scale[k] for d, k in enumerate(vector)),
            model.affine_size(vector),
            vector,
        )
        for vector in vectors
    )
    best_cost, best_size, best_plan = math.inf, math.inf, None
    if incumbent is not None:
        best_cost, best_size, best_plan = incumbent
    for bound, size, vector in ranked:
        if bound > best_cost + _TOLERANCE:
            break
        # Equal cost (within tolerance) wins only with a smaller size.
        limit = best_cost + _TOLERANCE if size < best_size else best_cost - _TOLERANCE
        if bound >= limit:
            continue
        cost, plan = search.complete(-1, (full,), vector, limit)
        if plan is not None:
            best_cost, best_size, best_plan = cost, size, list(plan)
    return best_cost, best_size, best_plan


# Beam search.


class _Diameters:
    """Cached group weights (see `_group_weight`) per block, for masks over any number of tasks."""

    def __init__(self, dissimilarity, cost):
        self.dissimilarity = dissimilarity
        self.cost = cost
        self.cache = {}

    def __call__(self, d, mask):
        key = (d, mask)
        value = self.cache.get(key)
        if value is None:
            index = [i for i in range(mask.bit_length()) if mask >> i & 1]
            if len(index) > 1:
                diameter = float(self.dissimilarity[d][np.ix_(index, index)].max())
                value = _group_weight(self.cost, len(index), diameter)
            else:
                value = 0.0
            self.cache[key] = value
        return value


def _merge(state, d, a, b):
    """`state` with groups `a` and `b` of block `d` merged."""
    merged = tuple(sorted([g for g in state[d] if g != a and g != b] + [a | b]))
    return state[:d] + (merged,) + state[d + 1 :]


def _beam(dissimilarity, capacity, width, cost_kind, prices=None, size_of=None):
    """Greedy merges from the independent tree, keeping the `width` best states.

    A state is a tuple of partitions (tuples of masks). A move merges two
    groups of one block that lie in the same group of the block before
    (any two groups at the first block); it keeps the tree valid and saves
    one copy of that block. Children are ranked by their cost per unit of
    size saved since the independent tree; the search runs until every
    state of the beam fits the budget, and returns the cheapest state that
    fit, as `(cost, size, state)`, or None if none did.

    Sizes come from `prices` (affine sizes: merging at block d saves
    `prices[d]`) or, for any other size, from `size_of(state)`.
    """
    num_blocks, num_tasks, _ = dissimilarity.shape
    diameter = _Diameters(dissimilarity, cost_kind)

    def scale(copies):
        return _block_scale(cost_kind, copies, num_tasks)

    start = tuple(tuple(1 << i for i in range(num_tasks)) for _ in range(num_blocks))
    full_size = size_of(start)
    best = (0.0, full_size, start) if full_size <= capacity else None
    beam = [(0.0, full_size, start, [0.0] * num_blocks)]
    seen = {start}
    while beam and any(size > capacity for _, size, _, _ in beam):
        moves, scores, costs, sizes = [], [], [], []
        for index, (cost, size, state, sums) in enumerate(beam):
            for d in range(num_blocks):
                groups = state[d]
                copies = len(groups)
                if copies == 1:
                    continue
                base = cost - sums[d] * scale(copies)
                if d == 0:
                    families = [groups]
                else:
                    families = [[g for g in groups if g & p == g] for p in state[d - 1]]
                for family in families:
                    for i, a in enumerate(family):
                        wa = diameter(d, a)
                        for b in family[i + 1 :]:
                            total = sums[d] + diameter(d, a | b) - wa - diameter(d, b)
                            new_cost = base + total * scale(copies - 1)
                            if prices is not None:
                                new_size = size - prices[d]
                            else:
                                new_size = size_of(_merge(state, d, a, b))
                            saved = full_size - new_size
                            moves.append((index, d, a, b, total))
                            costs.append(new_cost)
                            sizes.append(new_size)
                            scores.append(new_cost / saved if saved > 0 else math.inf)
        if not moves:
            break
        costs, sizes = np.array(costs), np.array(sizes)
        fits = np.flatnonzero(sizes <= capacity)
        if fits.size:
            top = fits[np.lexsort((sizes[fits], costs[fits]))[0]]
            if (
                best is None
                or costs[top] < best[0] - _TOLERANCE
                or (costs[top] <= best[0] + _TOLERANCE and sizes[top] < best[1])
            ):
                index, d, a, b, _ = moves[top]
                best = (float(costs[top]), float(sizes[top]), _merge(beam[index][2], d, a, b))
        order = np.lexsort((sizes, costs, np.array(scores)))
        next_beam = []
        for position in order:
            index, d, a, b, total = moves[position]
            child = _merge(beam[index][2], d, a, b)
            if child in seen:
                continue
            seen.add(child)
            sums = list(beam[index][3])
            sums[d] = total
            next_beam.append((float(costs[position]), float(sizes[position]), child, sums))
            if len(next_beam) == width:
                break
        beam = next_beam
    return best


# Selection.


def _masks_to_tree(tasks, plan):
    return BranchingTree(
        tasks,
        [[[tasks[i] for i in range(len(tasks)) if g >> i & 1] for g in part] for part in plan],
    )


def select_tree(affinity, budget, size=None, method="auto", beam_width=32, cost=DEFAULT_COST):
    """The tree of lowest `tree_cost` whose size fits the budget.

    Ties in cost go to the smaller tree, so without a budget the answer is
    the smallest tree of cost 0 (the independent tree unless some tasks are
    exactly alike).

    Exactness. `method="exact"` returns a true optimum whenever the size is
    affine in the numbers of copies of the blocks, `size(tree) = c +
    sum_d prices[d] * len(tree.groups(d))` with prices >= 0, which holds
    for the default size and for `BranchedModelBuilder.count_params` (and
    any parameter or FLOP count of a builder's model). The prices are read
    from `size` on `num_blocks + 1` probe trees and checked on four more;
    if the check fails, exact search enumerates every tree instead (only
    possible for small problems). Exact search handles up to 14 tasks; 10
    tasks and 4 blocks take seconds. `method="beam"` is approximate and
    scales to tens of tasks; `"auto"` is exact up to 10 tasks, beam above.

    Args:
        affinity: a `TaskAffinity`; its branch points are the blocks.
        budget: the largest allowed size: an int (or a float > 1) is a size
            in the units of `size`; a float in [0, 1] is a fraction between
            the fully shared (0) and fully independent (1) trees' sizes;
            None means no limit.
        size: callable mapping a `BranchingTree` to its size (for example
            `builder.count_params`); by default the number of block copies,
            `sum_d len(tree.groups(d))`.
        method: "exact", "beam" or "auto".
        beam_width: states kept per step of the beam search.
        cost: the tree cost, `"balanced"` (the default) or `"paper"`; see
            `tree_cost`.

    Returns:
        A `BranchingTree` over `affinity.tasks`.

    Raises:
        TypeError: for arguments of the wrong type.
        ValueError: for an unknown method or cost, a negative budget, a budget below
            the smallest tree's size (the message gives that size), or an
            exact search too large to run.

    Example:

    >>> import numpy as np
    >>> values = np.ones((2, 4, 4))
    >>> values[:, :2, 2:] = values[:, 2:, :2] = 0.0
    >>> affinity = TaskAffinity(["a", "b", "c", "d"], values)
    >>> tree = select_tree(affinity, budget=3)  # 3 block copies in all
    >>> tree.groups(1)
    [('a', 'b'), ('c', 'd')]
    """
    _check_affinity(affinity)
    _check_cost(cost)
    if method not in ("exact", "beam", "auto"):
        raise ValueError(
            f"Expected `method` to be 'exact', 'beam' or 'auto'. Received: method={method!r}"
        )
    if (
        isinstance(beam_width, bool)
        or not isinstance(beam_width, numbers.Integral)
        or beam_width < 1
    ):
        raise ValueError(
            f"Expected `beam_width` to be an int >= 1. Received: beam_width={beam_width!r}"
        )
    tasks = affinity.tasks
    num_tasks, num_blocks = len(tasks), affinity.num_branch_points
    model = _SizeModel(size, tasks, num_blocks)
    shared = BranchingTree.shared(tasks, num_blocks)
    independent = BranchingTree.independent(tasks, num_blocks)
    capacity = _resolve_budget(budget, model.of(shared), model.of(independent))
    dissimilarity = affinity.dissimilarity
    if method == "auto":
        method = "exact" if num_tasks <= _AUTO_EXACT_TASKS else "beam"

    def too_small(smallest):
        return _too_small(budget, capacity, smallest)

    if model.affine:
        if model.of(shared) > capacity + _TOLERANCE * max(1.0, abs(capacity)):
            raise too_small(model.of(shared))
        if method == "exact":
            if num_tasks > _MAX_EXACT_TASKS:
                raise ValueError(
                    f"Exact search handles up to {_MAX_EXACT_TASKS} tasks. Received "
                    f"{num_tasks} tasks; use method='beam'."
                )
            result = _exact_affine(dissimilarity, model, capacity, cost)
            return _masks_to_tree(tasks, result[2])

        def size_of(state):
            return model.affine_size([len(p) for p in state])

        result = _beam(dissimilarity, capacity, beam_width, cost, model.prices, size_of)
        return _masks_to_tree(tasks, result[2])

    # A size that is not affine in the copy counts.
    if method == "exact":
        count = _count_trees(num_tasks, num_blocks)
        if count > _MAX_ENUMERATED_TREES:
            raise ValueError(
                f"`size` is not affine in the numbers of block copies, so exact search "
                f"must enumerate all {count} trees (limit {_MAX_ENUMERATED_TREES}); "
                "use method='beam'."
            )
        best, smallest = None, math.inf
        for tree in enumerate_trees(tasks, num_blocks):
            tree_size = model.measure(tree)
            smallest = min(smallest, tree_size)
            if tree_size > capacity:
                continue
            value = tree_cost(tree, affinity, cost=cost)
            if (
                best is None
                or value < best[0] - _TOLERANCE
                or (value <= best[0] + _TOLERANCE and tree_size < best[1])
            ):
                best = (value, tree_size, tree)
        if best is None:
            raise too_small(smallest)
        return best[2]

    def measured(state):
        return model.measure(_masks_to_tree(tasks, state))

    result = _beam(dissimilarity, capacity, beam_width, cost, size_of=measured)
    if result is None:
        raise too_small(model.measure(shared))
    return _masks_to_tree(tasks, result[2])
