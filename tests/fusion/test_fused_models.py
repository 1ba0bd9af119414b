import keras
import numpy as np
import pytest
import tensorflow as tf

from keras_branching import BranchedModelBuilder, BranchingTree, Task, fusion
from keras_branching.builder import read_tree
from keras_branching.fusion import fuse, is_fused, should_fuse, unfuse
from keras_branching.layers.group_gather import GatherGroups
from keras_branching.layers.stacked import StackedBlock
from tests.fresh_process import run_python

TASKS = ["a", "b", "c", "d"]


def make_builder(blocks=None, inputs=(6,), seed=0):
    blocks = blocks or [
        lambda: keras.Sequential(
            [keras.layers.Dense(8), keras.layers.BatchNormalization(), keras.layers.ReLU()]
        ),
        lambda: keras.layers.Dense(8, activation="relu"),
        lambda: keras.layers.Dense(8, activation="tanh"),
    ]
    return BranchedModelBuilder(
        inputs=inputs,
        blocks=blocks,
        tasks=[Task(t, head=lambda: keras.layers.Dense(1), loss="mse") for t in TASKS],
        seed=seed,
    )


TREE = BranchingTree(TASKS, [[TASKS], [["a", "b"], ["c", "d"]], [["a"], ["b"], ["c", "d"]]])


def data(n=64, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((n, 6)).astype("float32")
    return x, {t: rng.standard_normal((n, 1)).astype("float32") for t in TASKS}


def assert_same_outputs(first, second, x):
    a, b = first.predict(x, verbose=0), second.predict(x, verbose=0)
    for task in TASKS:
        np.testing.assert_allclose(a[task], b[task], rtol=1e-5, atol=1e-5)


def test_fused_model_matches_the_separate_one():
    builder = make_builder()
    separate, fused = builder.build(TREE, fuse=False), builder.build(TREE, fuse=True)
    assert is_fused(fused) and not is_fused(separate)
    # 3 block depths + the 4 heads of one shape; 2 branchings + the heads' rows [0, 1, 2, 2].
    assert sum(isinstance(layer, StackedBlock) for layer in fused.layers) == 4
    assert sum(isinstance(layer, GatherGroups) for layer in fused.layers) == 3
    assert fused.count_params() == separate.count_params() == builder.count_params(TREE)
    assert read_tree(fused) == TREE
    x, _ = data()
    assert_same_outputs(separate, fused, x)  # one seed, the same initial weights


def test_weights_move_both_ways():
    builder = make_builder()
    x, y = data()
    separate = builder.build(TREE, fuse=False)
    separate.fit(x, y, epochs=1, verbose=0)  # moves the BN statistics too
    fused = fuse(separate)
    assert_same_outputs(separate, fused, x)
    fused.compile("adam", {t: "mse" for t in TASKS})
    fused.fit(x, y, epochs=1, verbose=0)
    for back in (unfuse(fused), unfuse(fused, builder)):
        assert not is_fused(back) and read_tree(back) == TREE
        assert_same_outputs(fused, back, x)
    assert_same_outputs(fused, fuse(unfuse(fused), builder), x)


def test_fused_model_saves_exports_and_trains_under_jit(tmp_path):
    builder = make_builder()
    x, y = data()
    fused = builder.build(TREE, fuse=True, jit_compile=True)
    history = fused.fit(x, y, epochs=1, batch_size=16, verbose=0)
    assert np.isfinite(history.history["loss"][0])
    expected = fused.predict(x, verbose=0)
    path = str(tmp_path / "fused.keras")
    fused.save(path)
    reloaded = keras.models.load_model(path)  # no custom_objects
    assert read_tree(reloaded) == TREE
    assert_same_outputs(fused, reloaded, x)
    fused.export(str(tmp_path / "export"), format="tf_saved_model", verbose=False)
    loaded = tf.saved_model.load(str(tmp_path / "export"))  # kept: it owns the variables
    served = loaded.serve(x)
    for task in TASKS:
        np.testing.assert_allclose(np.asarray(served[task]), expected[task], rtol=1e-5, atol=1e-5)


def test_convolutional_blocks_fuse_on_request():
    blocks = [
        lambda: keras.layers.Conv2D(4, 3, padding="same", activation="relu"),
        lambda: keras.Sequential([keras.layers.GlobalAveragePooling2D(), keras.layers.Dense(4)]),
        lambda: keras.layers.Dense(4),
    ]
    builder = make_builder(blocks, inputs=(6, 6, 2))
    assert not should_fuse(builder, TREE)  # unmeasured: convolutions stay separate by default
    fused = builder.build(TREE, fuse=True)
    separate = builder.build(TREE, fuse=False)
    x = np.random.default_rng(0).standard_normal((8, 6, 6, 2)).astype("float32")
    assert_same_outputs(separate, fused, x)


def test_auto_rule(monkeypatch):
    builder = make_builder()
    assert not should_fuse(builder, TREE)  # 4 copies, below fusion.MIN_COPIES_TO_FUSE
    assert not is_fused(builder.build(TREE))
    monkeypatch.setattr(fusion, "MIN_COPIES_TO_FUSE", 2)
    assert should_fuse(builder, TREE)
    assert is_fused(builder.build(TREE, fuse="auto"))
    shared = builder.shared_tree()
    assert not should_fuse(builder, shared)
    assert not is_fused(builder.build(shared, fuse="auto"))
    per_task = make_builder(inputs={t: (6,) for t in TASKS})
    assert not should_fuse(per_task, TREE)
    with pytest.raises(ValueError, match="per-task inputs for \\['a', 'b', 'c', 'd'\\]"):
        per_task.build(TREE, fuse=True)
    with pytest.raises(ValueError, match="fuse='yes'"):
        builder.build(TREE, fuse="yes")


def test_unstackable_block_falls_back_with_a_notice():
    builder = make_builder(
        [lambda: keras.layers.Dense(8)] * 2
        + [lambda: keras.layers.Dense(8, kernel_regularizer="l2")]
    )
    assert not should_fuse(builder, TREE)
    with pytest.warns(UserWarning, match="block 2 cannot be stacked .*kernel_regularizer"):
        model = builder.build(TREE, fuse=True)
    assert not is_fused(model) and read_tree(model) == TREE
    with pytest.raises(ValueError, match="block 2 .* cannot be stacked.*kernel_regularizer"):
        fuse(model)
    with pytest.raises(ValueError, match="Expected a fused model"):
        unfuse(model)


JAX_SCRIPT = """
import keras, numpy as np
from tests.fusion.test_fused_models import make_builder, TREE, TASKS, data
from keras_branching.builder import read_tree
from keras_branching.fusion import unfuse
assert keras.backend.backend() == "jax"
builder = make_builder()
x, y = data()
fused = builder.build(TREE, fuse=True, jit_compile=True)
fused.fit(x, y, epochs=1, batch_size=16, verbose=0)
separate = unfuse(fused, builder)
a, b = fused.predict(x, verbose=0), separate.predict(x, verbose=0)
for t in TASKS:
    np.testing.assert_allclose(a[t], b[t], rtol=1e-5, atol=1e-5)
assert read_tree(fused) == TREE and fused.count_params() == builder.count_params(TREE)
print("ok")
"""


def test_fused_model_on_jax(tmp_path):
    script = tmp_path / "fused_jax.py"
    script.write_text(JAX_SCRIPT)
    assert "ok" in run_python(script, cwd=str(tmp_path), timeout=300, backend="jax")


def test_heads_of_one_shape_are_stacked():
    heads = {"a": 2, "b": 1, "c": 2, "d": 2}  # a, c, d stack; b stays its own layer
    builder = BranchedModelBuilder(
        inputs=(6,),
        blocks=[lambda: keras.layers.Dense(8, activation="relu")] * 2,
        tasks=[
            Task(t, head=lambda n=n: keras.layers.Dense(n), loss="mse") for t, n in heads.items()
        ],
        seed=0,
    )
    tree = builder.independent_tree()
    separate, fused = builder.build(tree, fuse=False), builder.build(tree, fuse=True)
    stacked = [layer for layer in fused.layers if isinstance(layer, StackedBlock)]
    assert [s.num_groups for s in stacked] == [4, 4, 3]
    assert fused.output_names == separate.output_names  # outputs keep the heads' names
    assert fused.count_params() == separate.count_params()
    assert read_tree(fused) == tree
    x, _ = data()
    assert_same_outputs(separate, fused, x)
    again = unfuse(fused)
    assert_same_outputs(fused, again, x)
    assert_same_outputs(fuse(again), fused, x)


def test_affinity_branching_trains_fused_and_reads_the_same_features(monkeypatch):
    monkeypatch.setattr(fusion, "MIN_COPIES_TO_FUSE", 2)  # fuse="auto" fuses these 4 tasks
    from keras_branching.affinity import AffinityBranching
    from keras_branching.affinity.features import branch_point_features

    builder = make_builder()
    x, y = data(96)
    search = AffinityBranching(builder, num_samples=20, seed=0)  # fuse="auto"
    fused = search.build_search_model()
    assert is_fused(fused) and read_tree(fused) == builder.independent_tree()
    separate = unfuse(fused)
    expected = branch_point_features(separate, x[:8])
    actual = branch_point_features(fused, x[:8])
    for task in TASKS:
        for a, b in zip(actual[task], expected[task]):
            np.testing.assert_allclose(a, b, atol=1e-5)
    assert not is_fused(AffinityBranching(builder, fuse=False).build_search_model())
    with pytest.raises(ValueError, match="fuse='yes'"):
        AffinityBranching(builder, fuse="yes")
    result = search.search(x, y, epochs=1, batch_size=32, verbose=0)
    assert list(result.plan.tasks) == TASKS
