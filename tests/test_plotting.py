import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402

from keras_branching import BranchingTree  # noqa: E402
from keras_branching.plotting import _leaf_order  # noqa: E402

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
