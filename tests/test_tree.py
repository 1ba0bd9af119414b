import json

import pytest

from keras_branching import BranchingTree

TASKS = ["a", "b", "c", "d"]


def nested_tree():
    return BranchingTree(TASKS, [[TASKS], [["a", "b"], ["c", "d"]], [["a"], ["b"], ["c", "d"]]])


def test_properties():
    tree = nested_tree()
    assert tree.tasks == ("a", "b", "c", "d")
    assert tree.num_blocks == 3
    assert tree.groups(1) == [("a", "b"), ("c", "d")]
    assert tree.groups(-1) == [("a",), ("b",), ("c", "d")]
    assert tree.num_copies() == [1, 2, 3]
    assert tree.parent(2, 2) == 1


def test_partitions_are_a_copy():
    tree = nested_tree()
    tree.partitions[0][0].append("x")
    assert tree.groups(0) == [("a", "b", "c", "d")]


def test_equality_ignores_order_inside_and_between_groups():
    reordered = BranchingTree(
        TASKS, [[["d", "c", "b", "a"]], [["d", "c"], ["b", "a"]], [["c", "d"], ["b"], ["a"]]]
    )
    assert reordered == nested_tree()
    assert hash(reordered) == hash(nested_tree())
    assert reordered.groups(1) == [("a", "b"), ("c", "d")]  # canonical order
    assert nested_tree() != BranchingTree.shared(TASKS, 3)
    assert nested_tree() != "tree"


def test_shared_and_independent():
    shared = BranchingTree.shared(TASKS, 2)
    independent = BranchingTree.independent(TASKS, 2)
    assert shared.partitions == [[TASKS], [TASKS]]
    assert independent.partitions == [[[t] for t in TASKS]] * 2


def test_config_and_json_round_trip():
    tree = nested_tree()
    assert BranchingTree.from_config(tree.to_config()) == tree
    text = tree.to_json()
    assert json.loads(text)["tasks"] == TASKS
    assert BranchingTree.from_json(text) == tree


def test_repr_draws_the_tree():
    text = repr(nested_tree())
    assert text.splitlines()[0] == "BranchingTree(4 tasks, 3 blocks)"
    assert "block 2: [a, b]" in text
    assert "block 3: [c, d] -> heads c, d" in text
    assert str(nested_tree()) == text


@pytest.mark.parametrize(
    "tasks, partitions, error, match",
    [
        (["a", "a"], [[["a"]]], ValueError, "duplicates"),
        ([], [], ValueError, "at least one task"),
        ("ab", [], TypeError, "list of task names"),
        (["a", ""], [[["a"]]], TypeError, "non-empty string"),
        (["a", "b"], [], ValueError, "at least one partition"),
        (["a", "b"], [[["a"]]], ValueError, r"misses tasks \['b'\]"),
        (["a", "b"], [[["a", "b"], ["b"]]], ValueError, "repeats task 'b'"),
        (["a", "b"], [[["a", "z"]]], ValueError, "Unknown task 'z'"),
        (["a", "b"], [[["a"], ["b"]], [["a", "b"]]], ValueError, "does not refine"),
        (["a", "b"], [[["a"], []]], ValueError, "empty group"),
        (["a", "b"], [["ab"]], TypeError, "list of task names"),
        (["a", "b"], "ab", TypeError, "one partition per block"),
    ],
)
def test_rejects_bad_trees(tasks, partitions, error, match):
    with pytest.raises(error, match=match):
        BranchingTree(tasks, partitions)


def test_rejects_bad_block_counts_and_indices():
    with pytest.raises(ValueError, match="num_blocks=0"):
        BranchingTree.shared(TASKS, 0)
    with pytest.raises(ValueError, match="block=3"):
        nested_tree().groups(3)
    with pytest.raises(ValueError, match="keys 'tasks' and 'partitions'"):
        BranchingTree.from_config({"tasks": TASKS})
