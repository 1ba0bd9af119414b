import keras
import numpy as np
import pytest

from keras_branching.affinity.features import branch_point_features
from keras_branching.builder import BranchedModelBuilder
from keras_branching.task import Task
from keras_branching.tree import BranchingTree


def make_builder(names=("a", "b", "c"), blocks=None):
    blocks = blocks or [
        lambda: keras.layers.Dense(6, activation="relu"),
        lambda: keras.layers.Dense(4),
    ]
    return BranchedModelBuilder(
        (5,), blocks, [Task(n, lambda: keras.layers.Dense(1), "mse") for n in names]
    )


def test_features_are_each_tasks_block_outputs():
    builder = make_builder()
    model = builder.build(builder.independent_tree(), fuse=False)  # the separate form
    x = np.random.default_rng(0).normal(size=(7, 5)).astype("float32")
    features = branch_point_features(model, x)
    assert list(features) == ["a", "b", "c"]
    assert [f.shape for f in features["b"]] == [(7, 6), (7, 4)]
    # The last block's output of task b, computed by hand.
    first = model.get_layer("block1_b")(x)
    np.testing.assert_allclose(
        features["b"][1], np.asarray(model.get_layer("block2_b")(first)), rtol=1e-5, atol=1e-6
    )
    # Different tasks have different (independently initialised) copies.
    assert not np.allclose(features["a"][1], features["b"][1])


def test_average_pooling_of_spatial_features():
    builder = BranchedModelBuilder(
        (6, 6, 2),
        [lambda: keras.layers.Conv2D(3, 3, padding="same")],
        [Task(n, lambda: keras.layers.Flatten(), "mse") for n in ("a", "b")],
    )
    model = builder.build(builder.independent_tree())
    x = np.random.default_rng(0).normal(size=(4, 6, 6, 2)).astype("float32")
    whole = branch_point_features(model, x)
    pooled = branch_point_features(model, x, pooling="average")
    assert whole["a"][0].shape == (4, 6, 6, 3)
    assert pooled["a"][0].shape == (4, 3)
    np.testing.assert_allclose(pooled["a"][0], whole["a"][0].mean(axis=(1, 2)), rtol=1e-5)


def test_features_are_keyed_by_task_names_with_punctuation():
    builder = make_builder(names=("age-group", "sex.f"))
    model = builder.build(builder.independent_tree())
    features = branch_point_features(model, np.zeros((3, 5), "float32"))
    assert sorted(features) == ["age-group", "sex.f"]


def test_blocks_are_found_by_the_graph_whatever_their_names():
    """Blocks named unlike the builder's names (even misleadingly) are still found."""
    builder = make_builder(names=("a", "b"))
    inputs = builder.make_input()
    outputs = {}
    # Task a's blocks are named as if they were b's, and the other way round.
    for task, other in (("a", "b"), ("b", "a")):
        first = builder.make_block(0, name=f"block1_{other}_x")
        second = builder.make_block(1, name=f"stage_two_{task}")
        outputs[task] = builder.make_head(task)(second(first(inputs)))
    model = keras.Model(inputs, outputs)
    x = np.random.default_rng(0).normal(size=(6, 5)).astype("float32")
    features = branch_point_features(model, x)
    expected = model.get_layer("stage_two_a")(model.get_layer("block1_b_x")(x))
    np.testing.assert_allclose(features["a"][1], np.asarray(expected), rtol=1e-5, atol=1e-6)


def test_features_of_a_reloaded_model(tmp_path):
    builder = make_builder()
    model = builder.build(builder.independent_tree(), compile=False)
    path = str(tmp_path / "single_task.keras")
    model.save(path)
    reloaded = keras.models.load_model(path)
    x = np.random.default_rng(0).normal(size=(4, 5)).astype("float32")
    before, after = branch_point_features(model, x), branch_point_features(reloaded, x)
    for task in before:
        for mine, theirs in zip(before[task], after[task]):
            np.testing.assert_allclose(mine, theirs, rtol=1e-6)


def test_rejects_a_model_that_shares_blocks():
    builder = make_builder()
    tree = BranchingTree(["a", "b", "c"], [[["a", "b"], ["c"]], [["a"], ["b"], ["c"]]])
    model = builder.build(tree)
    with pytest.raises(ValueError, match="independent tree.*shared"):
        branch_point_features(model, np.zeros((3, 5), "float32"))


def test_rejects_other_models_and_pooling():
    inputs = keras.Input((3,))
    plain = keras.Model(inputs, keras.layers.Dense(1)(inputs))
    with pytest.raises(TypeError, match="dict output"):
        branch_point_features(plain, np.zeros((3, 3)))
    no_blocks = keras.Model(inputs, {"a": keras.layers.Dense(1)(inputs)})
    with pytest.raises(ValueError, match="at least one"):
        branch_point_features(no_blocks, np.zeros((3, 3)))
    a = keras.layers.Dense(2)(keras.layers.Dense(2)(inputs))
    b = keras.layers.Dense(2)(inputs)
    uneven = keras.Model(inputs, {"a": keras.layers.Dense(1)(a), "b": keras.layers.Dense(1)(b)})
    with pytest.raises(ValueError, match="block counts per task"):
        branch_point_features(uneven, np.zeros((3, 3)))
    builder = make_builder()
    model = builder.build(builder.independent_tree())
    with pytest.raises(ValueError, match="pooling"):
        branch_point_features(model, np.zeros((3, 5)), pooling="max")
