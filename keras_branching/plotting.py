"""Pictures of branching trees (matplotlib, imported only when drawing)."""


def _leaf_order(tree):
    """Tasks ordered so that every group's tasks are contiguous (no crossings)."""
    order = list(tree.tasks)
    for block in range(tree.num_blocks - 1, -1, -1):
        position = {t: i for i, t in enumerate(order)}
        groups = sorted(tree.groups(block), key=lambda g: min(position[t] for t in g))
        order = [t for g in groups for t in sorted(g, key=position.__getitem__)]
    return order


def plot_tree(tree, ax=None, path=None, title=None):
    """Draws a `BranchingTree`: blocks as levels, groups as nodes, tasks as leaves.

    Each column is a block; each node is a copy of that block, labelled with
    the number of tasks sharing it; lines show which copy feeds which; the
    tasks' heads are the leaves on the right. The figure grows with the
    number of tasks so that 40 task names stay readable.

    Args:
        tree: the `BranchingTree` to draw.
        ax: optional matplotlib axes to draw into; a new figure otherwise.
        path: optional file name; the figure is saved there (PNG, SVG, PDF:
            by extension).
        title: optional title; by default the tree's size.

    Returns:
        The matplotlib `Figure`.
    """
    import matplotlib.pyplot as plt

    order = _leaf_order(tree)
    num_tasks, num_blocks = len(order), tree.num_blocks
    y_of_task = {t: num_tasks - 1 - i for i, t in enumerate(order)}
    if ax is None:
        fig, ax = plt.subplots(
            figsize=(2.0 + 1.3 * (num_blocks + 2), max(2.5, 0.9 + 0.28 * num_tasks))
        )
    else:
        fig = ax.figure

    def y_of(group):
        return sum(y_of_task[t] for t in group) / len(group)

    node_style = {"zorder": 3, "s": 260, "edgecolors": "#1f3b57", "linewidths": 1.2}
    edge_style = {"color": "#8aa1b4", "linewidth": 1.3, "zorder": 1}
    # Input node, then one column per block, then the heads.
    root_y = (num_tasks - 1) / 2
    ax.scatter([0], [root_y], marker="s", color="#dfe7ee", **node_style)
    previous = [(tuple(tree.tasks), root_y)]
    for block in range(num_blocks):
        x = block + 1
        current = []
        for group in tree.groups(block):
            y = y_of(group)
            parent_y = next(py for pg, py in previous if group[0] in pg)
            ax.plot([x - 1, x], [parent_y, y], **edge_style)
            ax.scatter([x], [y], color="#4c8bc4" if len(group) > 1 else "#c9dcec", **node_style)
            ax.text(
                x,
                y,
                str(len(group)),
                ha="center",
                va="center",
                fontsize=7,
                zorder=4,
                color="white" if len(group) > 1 else "#1f3b57",
            )
            current.append((group, y))
        previous = current
    head_x = num_blocks + 1
    for task in order:
        y = y_of_task[task]
        parent_y = next(py for pg, py in previous if task in pg)
        ax.plot([head_x - 1, head_x], [parent_y, y], **edge_style)
        ax.scatter([head_x], [y], marker="D", s=40, color="#f0a04b", zorder=3)
        ax.text(head_x + 0.12, y, task, ha="left", va="center", fontsize=8)

    ax.set_xticks(range(num_blocks + 2))
    ax.set_xticklabels(
        ["input"] + [f"block {d + 1}" for d in range(num_blocks)] + ["heads"], fontsize=8
    )
    ax.set_yticks([])
    ax.set_xlim(-0.5, head_x + 0.4 + 0.09 * max(len(t) for t in order))
    ax.set_ylim(-0.8, num_tasks - 0.2)
    for side in ("left", "right", "top"):
        ax.spines[side].set_visible(False)
    ax.set_title(
        title or f"{num_tasks} tasks, {num_blocks} blocks, copies per block {tree.num_copies()}",
        fontsize=9,
    )
    fig.tight_layout()
    if path is not None:
        fig.savefig(path, dpi=120)
    return fig
