import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402

from keras_branching import BranchingTree, RoutingPlan  # noqa: E402
from keras_branching.plotting import _leaf_order, plot_allocation  # noqa: E402

TASKS = ["a", "b", "c", "d"]
TREE = BranchingTree(TASKS, [[TASKS], [["a", "c"], ["b", "d"]], [["a"], ["c"], ["b", "d"]]])


def test_plot_returns_a_figure_and_saves(tmp_path):
    fig = TREE.plot(path=tmp_path / "tree.png")
    assert (tmp_path / "tree.png").stat().st_size > 1000
    ax = fig.axes[0]
    labels = [t.get_text() for t in ax.texts]
    # One node label per block copy (its task count) and one label per task.
    assert sorted(labels[-4:]) == TASKS
    assert labels[:-4] == ["4", "2", "2", "1", "2", "1"]  # canonical group order
    assert [t.get_text() for t in ax.get_xticklabels()][-1] == "heads"
    fig.savefig(tmp_path / "tree.svg")
    plt.close(fig)


def test_leaves_are_ordered_so_groups_are_contiguous():
    order = _leaf_order(TREE)
    assert abs(order.index("a") - order.index("c")) == 1
    assert abs(order.index("b") - order.index("d")) == 1


def test_plot_into_given_axes():
    fig, ax = plt.subplots()
    assert TREE.plot(ax=ax, title="mine") is fig
    assert ax.get_title() == "mine"
    plt.close(fig)


# Routing plans.

FIRST = (["input"], "input")
PLAN = RoutingPlan(
    ["a", "b"],
    layers=[[FIRST] * 3, [([0, 1], "input"), ([1], "input"), ([2], 0)]],
    towers={"a": ([0], "input"), "b": ([1, 0], 1)},
)


def _labels_do_not_overlap(fig, texts):
    renderer = fig.canvas.get_renderer()
    boxes = sorted((t.get_window_extent(renderer) for t in texts), key=lambda b: b.y0)
    return all(below.y1 <= above.y0 for below, above in zip(boxes, boxes[1:]))


def test_routing_plan_plot_draws_every_sub_network_route_and_query(tmp_path):
    fig = PLAN.plot(path=tmp_path / "plan.png")
    assert (tmp_path / "plan.png").stat().st_size > 1000
    ax = fig.axes[0]
    texts = {t.get_text(): t for t in ax.texts}
    assert set(texts) == {"e1.0", "e1.1", "e1.2", "e2.0", "e2.1", "e2.2", "a", "b"}
    # e1.2 feeds only e2.2, which no tower reads: both are drawn as unused.
    grey = matplotlib.colors.to_hex("#909090")
    unused = {name for name, t in texts.items() if matplotlib.colors.to_hex(t.get_color()) == grey}
    assert unused == {"e1.2", "e2.2"}
    # Route lines: 3 into layer 1, 2 + 1 + 1 into layer 2, 1 + 2 into the towers.
    assert len(ax.lines) == 10
    # One gate is queried by a sub-network (b's tower, by e2.1): one curved line.
    assert len(ax.patches) == 1
    assert [t.get_text() for t in ax.get_xticklabels()] == ["input", "layer 1", "layer 2", "towers"]
    assert len(fig.legends[0].get_texts()) == 5
    fig.savefig(tmp_path / "plan.svg")
    plt.close(fig)


def test_routing_plan_plot_keeps_40_task_names_apart():
    tasks = [f"task_{i:02d}" for i in range(40)]
    plan = RoutingPlan(
        tasks,
        layers=[[FIRST] * 4, [([0, 1], "input"), ([2, 3], 1)]],
        towers={t: ([i % 2], "input") if i % 3 else ([0, 1], 0) for i, t in enumerate(tasks)},
    )
    fig = plan.plot(title="forty")
    ax = fig.axes[0]
    names = [t for t in ax.texts if t.get_text() in tasks]
    assert len(names) == 40 and ax.get_title() == "forty"
    assert _labels_do_not_overlap(fig, names)
    plt.close(fig)


# Allocations.

ALLOCATIONS = [np.array([[1, 0, 1], [0, 1, 1]], bool), np.array([[1, 1], [0, 0]], bool)]


def test_plot_allocation_panels_dots_and_counts(tmp_path):
    probabilities = [np.where(a, 0.9, 0.2) for a in ALLOCATIONS]
    fig = plot_allocation(
        ALLOCATIONS,
        probabilities,
        tasks=["x", "y"],
        components=[["conv", "pool", "skip"], ["wide", "narrow"]],
        path=tmp_path / "allocation.png",
    )
    assert (tmp_path / "allocation.png").stat().st_size > 1000
    layer1, layer2, counts = fig.axes[:3]
    assert layer1.get_title() == "layer 1\n3/3 used" and layer2.get_title() == "layer 2\n2/2 used"
    assert [t.get_text() for t in layer1.get_yticklabels()] == ["x", "y"]
    assert [t.get_text() for t in layer2.get_xticklabels()] == ["wide", "narrow"]
    # A dot on each component used at inference, and its colour the probability.
    dots = [layer.collections[0].get_offsets().tolist() for layer in (layer1, layer2)]
    assert dots == [[[0, 0], [2, 0], [1, 1], [2, 1]], [[0, 0], [1, 0]]]
    np.testing.assert_allclose(layer1.images[0].get_array(), probabilities[0])
    assert [bar.get_width() for bar in counts.patches] == [4, 2]
    assert "6 of 10" in fig._suptitle.get_text()
    plt.close(fig)


def test_plot_allocation_without_probabilities_shows_the_allocation():
    fig = plot_allocation(ALLOCATIONS[0])  # one layer, as a 2-D array
    assert len(fig.axes) == 2  # the layer and the counts; no colour bar
    assert not fig.axes[0].collections
    np.testing.assert_array_equal(fig.axes[0].images[0].get_array(), ALLOCATIONS[0])
    assert [t.get_text() for t in fig.axes[0].get_yticklabels()] == ["task 0", "task 1"]
    plt.close(fig)


def test_plot_allocation_keeps_40_task_names_apart():
    rng = np.random.default_rng(0)
    allocations = [rng.random((40, 7)) < 0.5 for _ in range(8)]
    tasks = [f"alphabet_{i}" for i in range(40)]
    fig = plot_allocation(allocations, tasks=tasks)
    assert _labels_do_not_overlap(fig, fig.axes[0].get_yticklabels())
    plt.close(fig)


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"allocations": []}, "non-empty list of 2-D arrays"),
        ({"allocations": [np.ones(3, bool)]}, "to be 2-D"),
        ({"allocations": [np.ones((2, 3)), np.ones((3, 3))]}, "one row per task"),
        ({"probabilities": [np.ones((2, 3)), np.ones((2, 3))]}, "of the allocations' shapes"),
        ({"tasks": ["x"]}, "Expected 2 task names"),
        ({"components": [["p", "q"], ["r", "s"]]}, "component names for each layer"),
        ({"layer_names": ["only one"]}, "Expected 2 layer names"),
    ],
)
def test_plot_allocation_rejects_mismatched_inputs(kwargs, message):
    args = {"allocations": ALLOCATIONS, **kwargs}
    with pytest.raises(ValueError, match=message):
        plot_allocation(**args)
