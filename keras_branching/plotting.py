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
            by extension), by process 0 only under several processes.
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
    return _save(fig, path)


def _save(fig, path):
    # Under several processes (`keras.distribution`), process 0 alone writes.
    from keras_branching import distributed

    if path is not None and distributed.is_chief():
        fig.savefig(path, dpi=120, bbox_inches="tight")
    return fig


def plot_routing_plan(plan, path=None, title=None):
    """Draws a `RoutingPlan`: layers of sub-networks, their routes and gates.

    Columns are the input, the layers of sub-networks and the task towers.
    Each sub-network is a circle named as in the plan's text form (`e2.1`:
    sub-network 1 of layer 2); a solid line joins it to every member of its
    route. A sub-network or tower whose route has several members mixes
    them through a gate: it is drawn dark, and when its gate is queried by a
    sub-network rather than the input, a dashed orange line joins that
    sub-network. Sub-networks that no tower depends on are drawn hollow and
    grey. Towers are ordered so that lines cross as little as the plan
    allows; the figure grows with the number of tasks so that 40 task names
    stay readable.

    Args:
        plan: the `RoutingPlan` to draw.
        path: optional file name; the figure is saved there (PNG, SVG, PDF:
            by extension), by process 0 only under several processes.
        title: optional title; by default the plan's size.

    Returns:
        The matplotlib `Figure`.
    """
    import matplotlib.pyplot as plt
    from matplotlib.lines import Line2D
    from matplotlib.patches import FancyArrowPatch

    from keras_branching.routing.plan import INPUT

    tasks, widths, num_layers = list(plan.tasks), plan.widths, plan.num_layers
    span = max(len(tasks), max(widths)) - 1

    def spread(count):
        """Evenly spaced heights over [0, span], from the top."""
        if count == 1:
            return [span / 2]
        return [span - span * i / (count - 1) for i in range(count)]

    y_expert = [spread(w) for w in widths]
    # Towers in the order of the mean height of what they read: fewer crossings.
    last = y_expert[-1]
    order = sorted(
        tasks,
        key=lambda t: -sum(last[m] for m in plan.tower(t)[0]) / len(plan.tower(t)[0]),
    )
    y_task = dict(zip(order, spread(len(tasks))))
    used = set(plan.used_experts())

    longest = max(len(t) for t in tasks)
    fig, ax = plt.subplots(
        figsize=(2.2 + 1.6 * (num_layers + 1) + 0.07 * longest, max(2.8, 1.4 + 0.3 * (span + 1)))
    )
    # Sub-network nodes: (face, edge, label text) colours, and their legend entries.
    node_colours = {
        "gated": ("#1f5f99", "#1f3b57", "white"),
        "single": ("#c9dcec", "#1f3b57", "#1f3b57"),
        "unused": ("white", "#b0b0b0", "#909090"),
    }
    node_labels = ("gate over several members", "one member, no gate", "unused")
    route_style = {"color": "#8aa1b4", "linewidth": 1.2, "zorder": 1}
    query_style = {"color": "#f0a04b", "linewidth": 1.2, "linestyle": "--", "zorder": 1}

    def draw_inputs(x, y, route, query, y_below, active):
        """Lines into the node at (x, y) from its route and gate query below."""
        alpha = 1.0 if active else 0.35
        for m in route:
            y0 = span / 2 if m == INPUT else y_below[m]
            ax.plot([x - 1, x], [y0, y], alpha=alpha, **route_style)
        if len(route) > 1 and query != INPUT:
            # Curved, so that it stays visible when the query is also a member;
            # the bend shrinks with the length so long lines bulge no more.
            bend = 0.12 / max(1.0, abs(y - y_below[query]) / 2)
            ax.add_patch(
                FancyArrowPatch(
                    (x - 1, y_below[query]),
                    (x, y),
                    connectionstyle=f"arc3,rad={bend:.4f}",
                    arrowstyle="-",
                    alpha=alpha,
                    **query_style,
                )
            )

    ax.scatter([0], [span / 2], marker="s", s=320, color="#dfe7ee", edgecolors="#1f3b57", zorder=3)
    for layer in range(num_layers):
        x = layer + 1
        for m, y in enumerate(y_expert[layer]):
            route, query = plan.route(layer, m)
            active = (layer, m) in used
            draw_inputs(x, y, route, query, y_expert[layer - 1] if layer else None, active)
            kind = "unused" if not active else "gated" if len(route) > 1 else "single"
            face, edge, text = node_colours[kind]
            ax.scatter([x], [y], s=520, color=face, edgecolors=edge, linewidths=1.2, zorder=3)
            ax.text(x, y, f"e{x}.{m}", ha="center", va="center", fontsize=7, color=text, zorder=4)
    tower_x = num_layers + 1
    for task in tasks:
        route, query = plan.tower(task)
        y = y_task[task]
        draw_inputs(tower_x, y, route, query, last, True)
        ax.scatter(
            [tower_x],
            [y],
            marker="D",
            s=60 if len(route) > 1 else 40,
            color=node_colours["gated" if len(route) > 1 else "single"][0],
            edgecolors="#1f3b57",
            zorder=3,
        )
        ax.text(tower_x + 0.15, y, task, ha="left", va="center", fontsize=8)

    ax.set_xticks(range(num_layers + 2))
    ax.set_xticklabels(
        ["input"] + [f"layer {d + 1}" for d in range(num_layers)] + ["towers"], fontsize=8
    )
    ax.set_yticks([])
    ax.set_xlim(-0.5, tower_x + 0.3 + 0.085 * longest)
    ax.set_ylim(-0.9, span + 0.9)
    for side in ("left", "right", "top"):
        ax.spines[side].set_visible(False)
    legend = [
        Line2D([], [], label="route member", **route_style),
        Line2D([], [], label="gate query", **query_style),
    ] + [
        Line2D(
            [],
            [],
            marker="o",
            linestyle="",
            markersize=8,
            color=face,
            markeredgecolor=edge,
            label=label,
        )
        for (face, edge, _), label in zip(node_colours.values(), node_labels)
    ]
    # In the figure's bottom half inch, whatever its height, below the tick labels.
    fig.legend(handles=legend, fontsize=7, loc="lower center", ncol=3, frameon=False)
    size = "x".join(str(w) for w in widths)
    ax.set_title(
        title or f"{len(tasks)} tasks, sub-networks per layer {size}, {len(used)} used",
        fontsize=9,
    )
    fig.tight_layout(rect=(0, 0.5 / fig.get_size_inches()[1], 1, 1))
    return _save(fig, path)


def plot_allocation(
    allocations,
    probabilities=None,
    tasks=None,
    components=None,
    layer_names=None,
    path=None,
    title=None,
):
    """Draws a learned allocation: which task uses which component, layer by layer.

    One panel per routed layer, tasks as rows and components as columns.
    With `probabilities`, a cell's colour is the probability that the task
    uses the component and a dot marks the components it uses at inference
    (the greedy allocation); without, used cells are dark. A last, narrow
    panel counts the components each task uses over all layers. The figure
    grows with the number of tasks and components, so 40 task names stay
    readable.

    Args:
        allocations: one boolean `(num_tasks, num_components)` array per
            routed layer (a single 2-D array is one layer).
        probabilities: optional float arrays of the same shapes.
        tasks: optional task names (rows); by default `task 0`, `task 1`...
        components: optional component names: one list for every layer, or
            one list per layer; by default the components' indices.
        layer_names: optional panel titles, one per layer; by default
            `layer 1`, `layer 2`...
        path: optional file name; the figure is saved there (PNG, SVG, PDF:
            by extension), by process 0 only under several processes.
        title: optional figure title; by default how many of the
            (task, component) pairs are used.

    Returns:
        The matplotlib `Figure`.

    Raises:
        ValueError: if the arrays or names do not fit together.
    """
    import matplotlib.pyplot as plt
    import numpy as np

    def as_list(value, name):
        if isinstance(value, np.ndarray) and value.ndim == 2:
            return [value]
        if not isinstance(value, (list, tuple)) or not value:
            raise ValueError(
                f"Expected `{name}` to be a non-empty list of 2-D arrays (tasks x "
                f"components), one per routed layer. Received: {name}={value!r}"
            )
        arrays = [np.asarray(v) for v in value]
        if any(a.ndim != 2 for a in arrays):
            raise ValueError(
                f"Expected every array of `{name}` to be 2-D (tasks x components). "
                f"Received shapes {[a.shape for a in arrays]}"
            )
        return arrays

    allocations = [a.astype(bool) for a in as_list(allocations, "allocations")]
    shapes = [a.shape for a in allocations]
    num_tasks = shapes[0][0]
    if any(s[0] != num_tasks for s in shapes):
        raise ValueError(f"Expected every allocation to have one row per task. Received {shapes}")
    if probabilities is not None:
        probabilities = as_list(probabilities, "probabilities")
        if [p.shape for p in probabilities] != shapes:
            raise ValueError(
                "Expected `probabilities` of the allocations' shapes "
                f"{shapes}. Received {[p.shape for p in probabilities]}"
            )
    tasks = [f"task {t}" for t in range(num_tasks)] if tasks is None else list(tasks)
    if len(tasks) != num_tasks:
        raise ValueError(f"Expected {num_tasks} task names, one per row. Received: tasks={tasks!r}")
    if components is None:
        components = [[str(k) for k in range(s[1])] for s in shapes]
    elif all(isinstance(c, str) for c in components):
        components = [list(components)] * len(shapes)
    components = [list(c) for c in components]
    if [len(c) for c in components] != [s[1] for s in shapes]:
        raise ValueError(
            "Expected component names for each layer's components "
            f"({[s[1] for s in shapes]} per layer). Received: components={components!r}"
        )
    if layer_names is None:
        layer_names = [f"layer {i + 1}" for i in range(len(shapes))]
    if len(layer_names) != len(shapes):
        raise ValueError(
            f"Expected {len(shapes)} layer names. Received: layer_names={layer_names!r}"
        )

    label_chars = max(len(c) for names in components for c in names)
    rotate = label_chars > 2
    columns = [s[1] for s in shapes]
    cell = 0.26 if num_tasks <= 24 else 0.22
    fontsize = 8 if num_tasks <= 24 else 7
    counts = sum(a.sum(axis=1) for a in allocations)
    fig, axes = plt.subplots(
        1,
        len(shapes) + 1,
        figsize=(
            1.2 + 0.07 * max(len(t) for t in tasks) + cell * (sum(columns) + 4) + 0.3 * len(shapes),
            max(2.6, 1.3 + cell * num_tasks + (0.065 * label_chars if rotate else 0.2)),
        ),
        gridspec_kw={"width_ratios": columns + [max(3, max(columns) * 0.7)]},
        layout="constrained",
    )
    image = None
    for ax, allocation, names, layer_name, i in zip(
        axes, allocations, components, layer_names, range(len(shapes))
    ):
        shown = allocation.astype(float) if probabilities is None else probabilities[i]
        image = ax.imshow(shown, vmin=0.0, vmax=1.0, cmap="Blues", aspect="auto")
        if probabilities is not None:
            rows, cols = np.nonzero(allocation)
            ax.scatter(cols, rows, s=9, color="#f0a04b", edgecolors="#1f3b57", linewidths=0.5)
        ax.set_xticks(range(len(names)))
        ax.set_xticklabels(names, fontsize=fontsize - 1, rotation=90 if rotate else 0)
        ax.set_yticks(range(num_tasks))
        ax.set_yticklabels(tasks if i == 0 else [], fontsize=fontsize)
        if i:
            ax.tick_params(axis="y", length=0)
        used = int(allocation.any(axis=0).sum())
        ax.set_title(f"{layer_name}\n{used}/{len(names)} used", fontsize=fontsize)
    bars = axes[-1]
    total = sum(columns)
    bars.barh(range(num_tasks), counts, color="#4c8bc4", height=0.7)
    bars.set_ylim(num_tasks - 0.5, -0.5)
    bars.set_xlim(0, total)
    bars.set_yticks(range(num_tasks))
    bars.set_yticklabels([])
    bars.tick_params(axis="y", length=0)
    bars.tick_params(axis="x", labelsize=fontsize - 1)
    bars.set_title(f"used\n(of {total})", fontsize=fontsize)
    for side in ("right", "top"):
        bars.spines[side].set_visible(False)
    if probabilities is not None:
        bar = fig.colorbar(
            image, ax=list(axes), shrink=max(0.4, min(1.0, 10 / num_tasks)), pad=0.01
        )
        bar.ax.tick_params(labelsize=fontsize - 1)
    pairs = num_tasks * total
    fig.suptitle(
        title
        or f"{num_tasks} tasks: {int(counts.sum())} of {pairs} (task, component) pairs used"
        + (
            "\ncolour: probability of use; dot: used at inference"
            if probabilities is not None
            else ""
        ),
        fontsize=9,
    )
    return _save(fig, path)
