"""Models with one input per task: every builder, the join and split layers, the data helper."""

import random

import keras
import numpy as np
import pytest
import tensorflow as tf

from keras_branching import BranchedModelBuilder, BranchingTree, Task
from keras_branching.builder import read_tree
from keras_branching.datasets import task_batches
from keras_branching.layers.task_batches import JoinTaskBatches, SplitTaskBatches
from keras_branching.learn_to_branch import build_supernet, derive_tree
from keras_branching.routing.builder import RoutingModelBuilder
from keras_branching.routing.plan import RoutingPlan
from tests.fresh_process import run_python

TASKS = ["a", "b", "c"]
DIM = 5


def tasks():
    return [Task(t, head=lambda: keras.layers.Dense(1), loss="mse") for t in TASKS]


def dense():
    return keras.layers.Dense(8, activation="relu")


def tree_builder(per_task, seed=3, num_blocks=3, **kwargs):
    inputs = dict.fromkeys(TASKS, (DIM,)) if per_task else (DIM,)
    return BranchedModelBuilder(inputs, [dense] * num_blocks, tasks(), seed=seed, **kwargs)


def routing_builder(per_task, seed=3):
    inputs = dict.fromkeys(TASKS, (DIM,)) if per_task else (DIM,)
    return RoutingModelBuilder(inputs, [dense] * 2, tasks(), seed=seed)


TREE = BranchingTree(TASKS, [[TASKS], [["a", "c"], ["b"]], [["a", "c"], ["b"]]])
ROUTING = RoutingPlan(
    TASKS,
    layers=[[(["input"], "input")] * 3, [([0, 2], 1), ([1], "input"), ([0, 1, 2], "input")]],
    towers={"a": ([0, 2], "input"), "b": ([1], 0), "c": ([0], 2)},
)


def data(n=16, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((n, DIM)).astype("float32")
    return x, {t: rng.standard_normal((n, 1)).astype("float32") for t in TASKS}


def assert_same_numbers(single, per_task):
    """Same outputs and the same losses after a few steps when every task gets the same batch."""
    x, y = data()
    expected = single(x)
    actual = per_task(dict.fromkeys(TASKS, x))
    for t in TASKS:
        np.testing.assert_allclose(actual[t], expected[t], atol=1e-6)
    fit = {"epochs": 2, "batch_size": 8, "shuffle": False, "verbose": 0}  # 4 steps
    one = single.fit(x, y, **fit).history["loss"]
    many = per_task.fit(dict.fromkeys(TASKS, x), y, **fit).history["loss"]
    np.testing.assert_allclose(many, one, rtol=1e-5)


def assert_reload_and_serve(model, tmp_path):
    x, y = data(8)
    model.fit(dict.fromkeys(TASKS, x), y, verbose=0)
    rng = np.random.default_rng(1)
    x = {t: rng.standard_normal((3 + i, DIM)).astype("float32") for i, t in enumerate(TASKS)}
    expected = {t: np.asarray(v) for t, v in model(x).items()}
    assert {t: expected[t].shape[0] for t in TASKS} == {"a": 3, "b": 4, "c": 5}
    model.save(tmp_path / "model.keras")
    reloaded = keras.models.load_model(tmp_path / "model.keras")  # no custom_objects
    for t in TASKS:
        np.testing.assert_allclose(reloaded(x)[t], expected[t], atol=1e-6)
    same = dict.fromkeys(TASKS, x["a"])  # `predict` takes inputs of one length
    for t, value in reloaded.predict(same, verbose=0).items():
        np.testing.assert_allclose(value, model(same)[t], atol=1e-6)
    model.export(str(tmp_path / "saved"), format="tf_saved_model", verbose=False)
    loaded = tf.saved_model.load(str(tmp_path / "saved"))
    served = loaded.serve(x)
    for t in TASKS:
        np.testing.assert_allclose(np.asarray(served[t]), expected[t], atol=1e-6)
    return reloaded


# The layers.


def join_split_model():
    inputs = [keras.Input((3,)), keras.Input((3,))]
    joined = JoinTaskBatches()(inputs)
    trunk = keras.layers.Dense(2)(joined)
    pieces = SplitTaskBatches(gradient_scale="mean")([trunk, *inputs])
    return keras.Model(inputs, pieces)


def test_join_and_split_in_a_model_train_and_take_mixed_precision():
    model = join_split_model()
    assert [tuple(t.shape) for t in model.outputs] == [(None, 2), (None, 2)]
    model.compile("adam", ["mse", "mse"])
    x = [np.ones((4, 3), "float32"), np.zeros((4, 3), "float32")]
    history = model.fit(x, [np.zeros((4, 2))] * 2, verbose=0)
    assert np.isfinite(history.history["loss"][0])
    keras.config.set_dtype_policy("mixed_float16")
    try:
        outputs = join_split_model()([np.ones((2, 3)), np.ones((5, 3))])
    finally:
        keras.config.set_dtype_policy("float32")
    assert [tuple(o.shape) for o in outputs] == [(2, 2), (5, 2)]
    assert keras.backend.standardize_dtype(outputs[0].dtype) == "float16"


def test_split_cuts_a_joined_batch_at_the_members_batch_sizes():
    parts = [np.full((n, 2), n, "float32") for n in (1, 3, 2)]
    joined = JoinTaskBatches()(parts)
    pieces = SplitTaskBatches()([joined, *parts])
    for piece, part in zip(pieces, parts):
        np.testing.assert_array_equal(piece, part)
    first, rest = SplitTaskBatches(group_sizes=[2, 1])([joined, *parts])
    assert first.shape[0] == 4 and rest.shape[0] == 2
    shapes = SplitTaskBatches([2, 1]).compute_output_shape([(6, 2), (1, 7), (3, 7), (2, 7)])
    assert shapes == [(4, 2), (2, 2)]
    assert JoinTaskBatches().compute_output_shape([(None, 2), (3, 2)]) == (None, 2)


def test_split_with_mean_gradient_scale_divides_the_gradient():
    x = tf.ones((4, 2))
    refs = [tf.zeros((2, 1)), tf.zeros((2, 1))]
    for scale, expected in ((None, 1.0), ("mean", 0.5)):
        with tf.GradientTape() as tape:
            tape.watch(x)
            pieces = SplitTaskBatches(gradient_scale=scale)([x, *refs])
            total = tf.reduce_sum(pieces[0]) + tf.reduce_sum(pieces[1])
        np.testing.assert_allclose(tape.gradient(total, x), np.full((4, 2), expected))


def test_join_and_split_config_round_trip():
    for layer in (JoinTaskBatches(name="j"), SplitTaskBatches([1, 2], "mean", name="s")):
        clone = layer.__class__.from_config(layer.get_config())
        assert clone.get_config() == layer.get_config()


@pytest.mark.parametrize(
    "kwargs, error, match",
    [
        ({"group_sizes": "ab"}, TypeError, "group_sizes='ab'"),
        ({"group_sizes": [1, 0]}, ValueError, r"group_sizes=\[1, 0\]"),
        ({"group_sizes": [1.5]}, TypeError, r"group_sizes=\[1.5\]"),
        ({"gradient_scale": "sum"}, ValueError, "gradient_scale='sum'"),
    ],
)
def test_split_rejects_bad_arguments(kwargs, error, match):
    with pytest.raises(error, match=match):
        SplitTaskBatches(**kwargs)


def test_join_and_split_reject_bad_calls():
    with pytest.raises(ValueError, match=r"\(None, 2\), \(None, 3\)"):
        JoinTaskBatches()([keras.Input((2,)), keras.Input((3,))])
    with pytest.raises(ValueError, match=r"group_sizes=\[3\]"):
        SplitTaskBatches([3])([keras.Input((2,)), keras.Input((1,)), keras.Input((1,))])


# The tree builder.


def test_tree_model_takes_a_dict_and_runs_each_copy_once():
    builder = tree_builder(per_task=True)
    assert builder.per_task_inputs and builder.input_names == {t: t for t in TASKS}
    model = builder.build(TREE)
    assert sorted(model.input) == TASKS
    for layer in model.layers:
        if isinstance(layer, keras.layers.Dense):
            assert len(layer._inbound_nodes) == 1, layer.name  # one call, one set of weights
    joins = [layer for layer in model.layers if isinstance(layer, JoinTaskBatches)]
    assert len(joins) == 1
    assert read_tree(model) == TREE
    assert builder.count_params(TREE) == model.count_params()
    assert model.count_params() == tree_builder(per_task=False).build(TREE).count_params()


def test_tree_model_gives_the_numbers_of_the_single_input_model():
    assert_same_numbers(tree_builder(False).build(TREE), tree_builder(True).build(TREE))


def test_read_tree_for_random_trees_and_counts():
    rng = random.Random(0)
    builder = tree_builder(per_task=True, num_blocks=2)
    for _ in range(4):
        partitions, current = [], [list(TASKS)]
        for _ in range(2):
            current = [
                part
                for group in current
                for part in (
                    [group] if len(group) == 1 or rng.random() < 0.5 else [group[:1], group[1:]]
                )
            ]
            partitions.append(current)
        tree = BranchingTree(TASKS, partitions)
        model = builder.build(tree, compile=False)
        assert read_tree(model) == tree
        assert builder.count_params(tree) == model.count_params()


def test_tree_model_reloads_and_serves_with_dict_inputs(tmp_path):
    model = tree_builder(per_task=True).build(TREE)
    reloaded = assert_reload_and_serve(model, tmp_path)
    assert read_tree(reloaded) == TREE


def test_tree_model_trains_with_jit_compile_on_task_batches():
    model = tree_builder(per_task=True).build(TREE, jit_compile=True)
    rng = np.random.default_rng(0)
    datasets = {
        t: tf.data.Dataset.from_tensor_slices(
            (
                rng.standard_normal((8, DIM)).astype("float32"),
                rng.standard_normal((8, 1)).astype("float32"),
            )
        )
        for i, t in enumerate(TASKS)
    }
    batches = task_batches(datasets, 4, seed=0)
    history = model.fit(batches, steps_per_epoch=3, shuffle=False, verbose=0)
    assert np.isfinite(history.history["loss"][0])


def test_per_task_inputs_must_share_one_shape():
    with pytest.raises(ValueError, match="one input shape for every task"):
        BranchedModelBuilder({"a": (3,), "b": (4,), "c": (3,)}, [dense], tasks())
    with pytest.raises(ValueError, match=r"one input shape per task \['a', 'b', 'c'\]"):
        BranchedModelBuilder({"a": (3,)}, [dense], tasks())


# Routing and the supernet.


def test_routing_model_gives_the_numbers_of_the_single_input_model():
    builder = routing_builder(per_task=True)
    model = builder.build(ROUTING)
    assert builder.count_params(ROUTING) == model.count_params()
    for layer in model.layers:
        if isinstance(layer, keras.layers.Dense):
            assert len(layer._inbound_nodes) == 1, layer.name
    assert_same_numbers(routing_builder(per_task=False).build(ROUTING), model)


def test_routing_model_reloads_and_serves_with_dict_inputs(tmp_path):
    assert_reload_and_serve(routing_builder(per_task=True).build(ROUTING), tmp_path)


def test_supernet_gives_the_numbers_of_the_single_input_supernet():
    widths = [2, 2, 3]

    def supernet(per_task):
        inputs = dict.fromkeys(TASKS, (DIM,)) if per_task else (DIM,)
        builder = BranchedModelBuilder(inputs, [dense] * len(widths), tasks(), seed=5)
        return build_supernet(builder, widths, seed=1)

    single, per_task = supernet(False), supernet(True)
    assert sorted(per_task.input) == TASKS
    assert derive_tree(per_task) == derive_tree(single)
    assert per_task.count_params() == single.count_params()
    assert_same_numbers(single, per_task)


def test_supernet_reloads_and_serves_with_dict_inputs(tmp_path):
    builder = tree_builder(per_task=True)
    supernet = build_supernet(builder, [1, 2, 3], seed=0)
    reloaded = assert_reload_and_serve(supernet, tmp_path)
    assert derive_tree(reloaded) == derive_tree(supernet)


def test_one_block_supernet_reads_each_task_input_directly():
    builder = tree_builder(per_task=True, num_blocks=1)
    supernet = build_supernet(builder, [3], compile=False)
    assert not any(isinstance(layer, JoinTaskBatches) for layer in supernet.layers)
    assert derive_tree(supernet) == BranchingTree(TASKS, [[["a"], ["b"], ["c"]]])


JAX_SCRIPT = """
import keras, numpy as np
from keras_branching import BranchedModelBuilder, BranchingTree, Task
from keras_branching.builder import read_tree
from keras_branching.learn_to_branch import build_supernet, derive_tree
from keras_branching.routing.builder import RoutingModelBuilder
from keras_branching.routing.plan import RoutingPlan
assert keras.backend.backend() == "jax"
T = ["a", "b", "c"]
tasks = [Task(t, head=lambda: keras.layers.Dense(1), loss="mse") for t in T]
dense = lambda: keras.layers.Dense(8, activation="relu")
tree = BranchingTree(T, [[T], [["a", "c"], ["b"]]])
plan = RoutingPlan.mmoe(T, num_experts=2)
rng = np.random.default_rng(0)
x = rng.standard_normal((16, 5)).astype("float32")
y = {t: rng.standard_normal((16, 1)).astype("float32") for t in T}
def pair(make):
    return make((5,)), make(dict.fromkeys(T, (5,)))
def tree_builder(i):
    return BranchedModelBuilder(i, [dense] * 2, tasks, seed=1)
models = [
    pair(lambda i: tree_builder(i).build(tree, jit_compile=True)),
    pair(lambda i: RoutingModelBuilder(i, [dense], tasks, seed=1).build(plan, jit_compile=True)),
    pair(lambda i: build_supernet(tree_builder(i), [2, 3], seed=0, jit_compile=True)),
]
fit = dict(epochs=2, batch_size=8, shuffle=False, verbose=0)
for single, per_task in models:
    a, b = single.predict(x, verbose=0), per_task.predict(dict.fromkeys(T, x), verbose=0)
    assert all(np.allclose(a[t], b[t], atol=1e-6) for t in T)
    one = single.fit(x, y, **fit).history["loss"]
    many = per_task.fit(dict.fromkeys(T, x), y, **fit).history["loss"]
    assert np.allclose(one, many, rtol=1e-5), (one, many)
    xs = {t: x[: 3 + i] for i, t in enumerate(T)}
    out = per_task(xs)
    assert [out[t].shape[0] for t in T] == [3, 4, 5]
    per_task.save("m.keras")
    again = keras.models.load_model("m.keras")(xs)
    assert all(np.allclose(again[t], out[t], atol=1e-6) for t in T)
assert read_tree(models[0][1]) == tree
assert derive_tree(models[2][1]) == derive_tree(models[2][0])
print("ok")
"""


def test_per_task_models_on_jax_in_a_fresh_process(tmp_path):
    script = tmp_path / "per_task_jax.py"
    script.write_text(JAX_SCRIPT)
    assert "ok" in run_python(script, cwd=tmp_path, backend="jax")


def test_task_batches_feeds_every_builders_model():
    rng = np.random.default_rng(0)
    datasets = {
        t: tf.data.Dataset.from_tensor_slices(
            (
                rng.standard_normal((8 + 2 * i, DIM)).astype("float32"),
                np.zeros((8 + 2 * i, 1), "float32"),
            )
        )
        for i, t in enumerate(TASKS)
    }
    builder = routing_builder(per_task=True)
    models = [
        tree_builder(per_task=True).build(TREE),
        builder.build(ROUTING),
        build_supernet(tree_builder(per_task=True), [1, 2, 3]),
    ]
    # Without repeat, the last batches differ in size between tasks.
    once = task_batches(datasets, 6, shuffle=False, repeat=False)
    assert [[int(v.shape[0]) for v in x.values()] for x, _ in once] == [[6, 6, 6], [2, 4, 6]]
    for model in models:
        history = model.fit(once, shuffle=False, verbose=0)
        assert np.isfinite(history.history["loss"][0])


def test_share_routing_rejects_a_per_task_input_builder():
    from keras_branching import RoutingModelBuilder, ShareRouting, Task

    builder = RoutingModelBuilder(
        {"a": (4,), "b": (4,)},
        [lambda: keras.layers.Dense(4)],
        [Task(t, lambda: keras.layers.Dense(1), "mse") for t in ("a", "b")],
    )
    with pytest.raises(ValueError, match=r"per-task inputs .*\['a', 'b'\]"):
        ShareRouting(builder, num_experts=2)
