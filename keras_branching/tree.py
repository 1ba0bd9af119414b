"""The branching tree: which tasks share which copy of each block.

Every method of keras_branching ends in a `BranchingTree` (or, for the
routing and allocation methods, a plan that plays the same role), and the
builder consumes it. The tree knows nothing about Keras: it is plain data
that can be compared, serialised and drawn.
"""

import json


def check_task_names(tasks):
    """`tasks` as a tuple if it is a non-empty list of unique, non-empty strings."""
    if isinstance(tasks, str) or not isinstance(tasks, (list, tuple)):
        raise TypeError(
            "Expected `tasks` to be a list of task names. "
            f"Received: tasks={tasks!r} (of type {type(tasks).__name__})"
        )
    if not tasks:
        raise ValueError(f"Expected at least one task. Received: tasks={tasks!r}")
    for name in tasks:
        if not isinstance(name, str) or not name:
            raise TypeError(
                "Expected every task name to be a non-empty string. "
                f"Received: {name!r} in tasks={list(tasks)!r}"
            )
    seen = set()
    duplicates = sorted({t for t in tasks if t in seen or seen.add(t)})
    if duplicates:
        raise ValueError(
            f"Expected unique task names. Received duplicates {duplicates} in tasks={list(tasks)!r}"
        )
    return tuple(tasks)


def _check_num_blocks(num_blocks):
    if isinstance(num_blocks, bool) or not isinstance(num_blocks, int):
        raise TypeError(f"Expected `num_blocks` to be an int. Received: num_blocks={num_blocks!r}")
    if num_blocks < 1:
        raise ValueError(f"Expected `num_blocks` >= 1. Received: num_blocks={num_blocks}")
    return num_blocks


class BranchingTree:
    """Which tasks share which copy of each block of a backbone.

    A backbone is cut into `num_blocks` blocks. For each block the tree holds
    a partition of the tasks into groups; the tasks of one group share one
    copy of that block. Each partition refines the one before it: tasks that
    are apart at block `d` stay apart at every later block. After the last
    block every task has its own head.

    Equality ignores the order of tasks inside a group and the order of
    groups inside a partition; groups are stored in a canonical order (by
    the position of their first task in `tasks`).

    Args:
        tasks: ordered list of unique task names.
        partitions: one entry per block; each a list of groups, each group a
            list of task names. Every partition covers each task exactly
            once and refines the partition before it.

    Raises:
        TypeError: if `tasks` or `partitions` have the wrong structure.
        ValueError: for duplicate or unknown task names, a partition that
            misses or repeats a task, or one that does not refine the
            partition before it.

    Example:

    >>> tree = BranchingTree(
    ...     ["a", "b", "c"], [[["a", "b", "c"]], [["a", "b"], ["c"]]]
    ... )
    >>> tree.num_blocks
    2
    >>> tree.groups(1)
    [('a', 'b'), ('c',)]
    >>> tree == BranchingTree(["a", "b", "c"], [[["c", "b", "a"]], [["c"], ["b", "a"]]])
    True
    """

    def __init__(self, tasks, partitions):
        self._tasks = check_task_names(tasks)
        if isinstance(partitions, str) or not isinstance(partitions, (list, tuple)):
            raise TypeError(
                "Expected `partitions` to be a list with one partition per "
                f"block. Received: partitions={partitions!r}"
            )
        if not partitions:
            raise ValueError(
                "Expected at least one partition (one per block). "
                f"Received: partitions={partitions!r}"
            )
        order = {t: i for i, t in enumerate(self._tasks)}
        canonical = []
        for block, partition in enumerate(partitions):
            canonical.append(self._check_partition(block, partition, order))
        for block in range(1, len(canonical)):
            self._check_refines(block, canonical[block - 1], canonical[block])
        self._partitions = tuple(canonical)

    def _check_partition(self, block, partition, order):
        if isinstance(partition, str) or not isinstance(partition, (list, tuple)):
            raise TypeError(
                f"Expected partition {block} to be a list of groups (lists of "
                f"task names). Received: {partition!r}"
            )
        seen = {}
        groups = []
        for group in partition:
            if isinstance(group, str) or not isinstance(group, (list, tuple)):
                raise TypeError(
                    f"Expected each group of partition {block} to be a list of "
                    f"task names. Received: {group!r} in {partition!r}"
                )
            if not group:
                raise ValueError(
                    f"Expected non-empty groups. Partition {block} has an "
                    f"empty group: {partition!r}"
                )
            for task in group:
                if task not in order:
                    raise ValueError(
                        f"Unknown task {task!r} in partition {block}. "
                        f"Expected one of {list(self._tasks)}. "
                        f"Received: {partition!r}"
                    )
                if task in seen:
                    raise ValueError(
                        f"Partition {block} repeats task {task!r}; each task "
                        f"must be in exactly one group. Received: {partition!r}"
                    )
                seen[task] = True
            groups.append(tuple(sorted(group, key=order.__getitem__)))
        missing = [t for t in self._tasks if t not in seen]
        if missing:
            raise ValueError(
                f"Partition {block} misses tasks {missing}; each task must be "
                f"in exactly one group. Received: {partition!r}"
            )
        groups.sort(key=lambda g: order[g[0]])
        return tuple(groups)

    @staticmethod
    def _check_refines(block, previous, current):
        owner = {t: i for i, g in enumerate(previous) for t in g}
        for group in current:
            if len({owner[t] for t in group}) > 1:
                raise ValueError(
                    f"Partition {block} does not refine partition {block - 1}: "
                    f"group {list(group)} joins tasks that are apart at block "
                    f"{block - 1} ({[list(g) for g in previous]}). Tasks that "
                    "are apart at one block must stay apart after it."
                )

    # Constructors for the two extreme trees.

    @classmethod
    def shared(cls, tasks, num_blocks):
        """The fully shared tree (hard parameter sharing): one group per block."""
        tasks = check_task_names(tasks)
        num_blocks = _check_num_blocks(num_blocks)
        return cls(tasks, [[list(tasks)]] * num_blocks)

    @classmethod
    def independent(cls, tasks, num_blocks):
        """The fully independent tree: one single-task network per task."""
        tasks = check_task_names(tasks)
        num_blocks = _check_num_blocks(num_blocks)
        return cls(tasks, [[[t] for t in tasks]] * num_blocks)

    # Read access.

    @property
    def tasks(self):
        """The task names, in order, as a tuple."""
        return self._tasks

    @property
    def num_blocks(self):
        """The number of blocks (partitions)."""
        return len(self._partitions)

    @property
    def partitions(self):
        """The partitions as nested lists, in canonical order (a fresh copy)."""
        return [[list(g) for g in p] for p in self._partitions]

    def groups(self, block):
        """The groups of `block` (0-based) as a list of tuples of task names."""
        if isinstance(block, bool) or not isinstance(block, int):
            raise TypeError(f"Expected `block` to be an int. Received: block={block!r}")
        if not -self.num_blocks <= block < self.num_blocks:
            raise ValueError(
                f"Expected `block` in [0, {self.num_blocks}) for a tree of "
                f"{self.num_blocks} blocks. Received: block={block}"
            )
        return list(self._partitions[block])

    def num_copies(self):
        """Number of copies of each block: a list of `len(groups(d))`."""
        return [len(p) for p in self._partitions]

    def parent(self, block, group):
        """Index of the group at `block - 1` that `group` (at `block`) branches from."""
        first = self._partitions[block][group][0]
        return next(i for i, g in enumerate(self._partitions[block - 1]) if first in g)

    # Comparison and serialisation.

    def __eq__(self, other):
        if not isinstance(other, BranchingTree):
            return NotImplemented
        return set(self._tasks) == set(other._tasks) and [
            frozenset(frozenset(g) for g in p) for p in self._partitions
        ] == [frozenset(frozenset(g) for g in p) for p in other._partitions]

    def __hash__(self):
        return hash(
            (
                frozenset(self._tasks),
                tuple(frozenset(frozenset(g) for g in p) for p in self._partitions),
            )
        )

    def to_config(self):
        """A JSON-serialisable dict: `{"tasks": [...], "partitions": [...]}`."""
        return {"tasks": list(self._tasks), "partitions": self.partitions}

    @classmethod
    def from_config(cls, config):
        """Inverse of `to_config`."""
        if not isinstance(config, dict) or set(config) != {"tasks", "partitions"}:
            raise ValueError(
                f"Expected a dict with keys 'tasks' and 'partitions'. Received: {config!r}"
            )
        return cls(config["tasks"], config["partitions"])

    def to_json(self):
        """The tree as a JSON string."""
        return json.dumps(self.to_config())

    @classmethod
    def from_json(cls, text):
        """Inverse of `to_json`."""
        return cls.from_config(json.loads(text))

    # Drawing.

    def plot(self, ax=None, path=None, title=None):
        """Draws the tree with matplotlib; see `keras_branching.plotting.plot_tree`.

        Returns the figure; with `path` also saves it (PNG, SVG or PDF).
        """
        from keras_branching.plotting import plot_tree

        return plot_tree(self, ax=ax, path=path, title=title)

    def __repr__(self):
        lines = [f"BranchingTree({len(self._tasks)} tasks, {self.num_blocks} blocks)"]

        def draw(block, group, prefix, last):
            tasks = self._partitions[block][group]
            label = f"block {block + 1}: [{', '.join(tasks)}]"
            if block == self.num_blocks - 1:
                label += " -> heads " + ", ".join(tasks)
            lines.append(prefix + ("└── " if last else "├── ") + label)
            if block + 1 == self.num_blocks:
                return
            children = [i for i, g in enumerate(self._partitions[block + 1]) if g[0] in tasks]
            for k, child in enumerate(children):
                draw(
                    block + 1,
                    child,
                    prefix + ("    " if last else "│   "),
                    k == len(children) - 1,
                )

        roots = self._partitions[0]
        for i in range(len(roots)):
            draw(0, i, "", i == len(roots) - 1)
        return "\n".join(lines)

    __str__ = __repr__
