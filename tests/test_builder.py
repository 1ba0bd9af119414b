import random

import keras
import numpy as np
import pytest
import tensorflow as tf

from keras_branching import BranchedModelBuilder, BranchingTree, BranchPoint, Task
from keras_branching.datasets import synthetic_tasks

TASKS = ["a", "b", "c"]
INPUT_DIM = 6


def make_builder(num_blocks=2, **kwargs):
    return BranchedModelBuilder(
        inputs=(INPUT_DIM,),
        blocks=[lambda: keras.layers.Dense(8, activation="relu")] * num_blocks,
        tasks=[
            Task(t, head=lambda: keras.layers.Dense(1), loss="mse", metrics=["mae"]) for t in TASKS
        ],
        **kwargs,
    )


def branched_tree():
    return BranchingTree(TASKS, [[TASKS], [["a", "b"], ["c"]]])


def data(n=32, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((n, INPUT_DIM)).astype("float32")
    return x, {t: rng.standard_normal((n, 1)).astype("float32") for t in TASKS}


def random_tree(rng, tasks, num_blocks):
    """A random valid tree: each block splits some groups of the one before."""
    partition = [list(tasks)]
    partitions = []
    for _ in range(num_blocks):
        refined = []
        for group in partition:
            labels = [rng.randrange(rng.randint(1, len(group))) for _ in group]
            for label in sorted(set(labels)):
                refined.append([t for t, k in zip(group, labels) if k == label])
        partitions.append(refined)
        partition = refined
    return BranchingTree(tasks, partitions)


def test_outputs_losses_and_names():
    # The separate form: one named layer per block copy (fused models: tests/fusion).
    model = make_builder().build(branched_tree(), fuse=False)
    assert sorted(model.output) == TASKS
    names = [layer.name for layer in model.layers]
    assert "block1_shared" in names
    assert "block2_a-b" in names and "block2_c" in names
    assert {"head_a", "head_b", "head_c"} <= set(names)
    splits = [layer for layer in model.layers if isinstance(layer, BranchPoint)]
    # The shared block splits in 2; the (a, b) copy splits into 2 heads.
    assert sorted(s.num_branches for s in splits) == [2, 2]
    x, y = data()
    history = model.fit(x, y, epochs=2, verbose=0)
    assert {"loss", "a_loss", "b_mae", "c_loss"} <= set(history.history)
    assert history.history["loss"][-1] < history.history["loss"][0]


def test_loss_weights_are_applied():
    builder = make_builder()
    builder.tasks[0].loss_weight = 0.0
    model = builder.build(BranchingTree.independent(TASKS, 2))
    x, y = data()
    result = model.evaluate(x, y, verbose=0, return_dict=True)
    np.testing.assert_allclose(result["loss"], result["b_loss"] + result["c_loss"], rtol=1e-5)


def test_keras_save_and_reload_without_custom_objects(tmp_path):
    model = make_builder().build(branched_tree())
    x, y = data()
    model.fit(x, y, epochs=1, verbose=0)
    path = tmp_path / "model.keras"
    model.save(path)
    reloaded = keras.models.load_model(path)
    expected, actual = model.predict(x, verbose=0), reloaded.predict(x, verbose=0)
    for task in TASKS:
        np.testing.assert_array_equal(expected[task], actual[task])


def test_saved_model_export_serves_every_task(tmp_path):
    model = make_builder().build(branched_tree())
    x, _ = data()
    model.export(str(tmp_path / "export"), format="tf_saved_model", verbose=False)
    served = tf.saved_model.load(str(tmp_path / "export"))
    first, second = served.serve(x), served.serve(x)
    expected = model.predict(x, verbose=0)
    assert sorted(first) == TASKS
    for task in TASKS:
        np.testing.assert_array_equal(first[task].numpy(), second[task].numpy())
        np.testing.assert_allclose(first[task].numpy(), expected[task], rtol=1e-5, atol=1e-6)


def _gradients(model, task):
    x, _ = data()
    with tf.GradientTape() as tape:
        loss = tf.reduce_sum(model(x)[task])
    grads = tape.gradient(loss, model.trainable_weights)
    return {w.path: g for w, g in zip(model.trainable_weights, grads)}


def test_gradient_isolation_in_the_independent_tree():
    model = make_builder().build(BranchingTree.independent(TASKS, 2), fuse=False)
    grads = _gradients(model, "a")
    for path, grad in grads.items():
        owner = path.split("/")[0]
        if owner.endswith("_a"):
            assert grad is not None and np.any(grad.numpy() != 0), path
        else:
            assert grad is None or not np.any(grad.numpy()), path


def test_every_task_reaches_the_shared_blocks():
    model = make_builder().build(BranchingTree.shared(TASKS, 2))
    for task in TASKS:
        grads = _gradients(model, task)
        for block in ("block1_shared", "block2_shared"):
            kernel = grads[f"{block}/kernel"]
            assert kernel is not None and np.any(kernel.numpy() != 0)


def test_copies_of_a_block_start_with_different_weights():
    model = make_builder().build(BranchingTree.independent(TASKS, 2), fuse=False)
    kernels = [model.get_layer(f"block1_{t}").kernel.numpy() for t in TASKS]
    assert not np.array_equal(kernels[0], kernels[1])
    assert not np.array_equal(kernels[1], kernels[2])


def test_layer_instances_are_cloned_with_distinct_seeds():
    seeded = keras.layers.Dense(
        8, kernel_initializer=keras.initializers.GlorotUniform(seed=7), name="fc"
    )
    builder = BranchedModelBuilder(
        (INPUT_DIM,),
        [seeded, seeded],
        [Task(t, head=lambda: keras.layers.Dense(1), loss="mse") for t in TASKS],
    )
    first = builder.build(BranchingTree.independent(TASKS, 2), fuse=False)
    second = builder.build(BranchingTree.independent(TASKS, 2), fuse=False)
    kernels = [first.get_layer(f"block1_{t}").kernel.numpy() for t in TASKS]
    assert not np.array_equal(kernels[0], kernels[1])
    # Seeds are kept, shifted per copy: reproducible across builds.
    np.testing.assert_array_equal(kernels[0], second.get_layer("block1_a").kernel.numpy())


def test_identical_copies_warn():
    builder = BranchedModelBuilder(
        (INPUT_DIM,),
        [lambda: keras.layers.Dense(4, kernel_initializer=keras.initializers.Ones())],
        [Task(t, head=lambda: keras.layers.Dense(1), loss="mse") for t in TASKS],
    )
    with pytest.warns(UserWarning, match="identical weights"):
        builder.build(BranchingTree.independent(TASKS, 1))


def test_count_params_matches_build_for_random_trees():
    rng = random.Random(0)
    builder = BranchedModelBuilder(
        (5, 5, 2),
        [
            lambda: keras.layers.Conv2D(4, 3, padding="same"),
            lambda: keras.Sequential(
                [keras.layers.BatchNormalization(), keras.layers.Conv2D(3, 3)]
            ),
            lambda: keras.layers.Flatten(),
        ],
        [
            Task(t, head=lambda: keras.layers.Dense(2), loss="mse")
            for t in ["a", "b", "c", "d", "e"]
        ],
    )
    trees = [random_tree(rng, builder.task_names, 3) for _ in range(8)]
    trees += [builder.shared_tree(), builder.independent_tree()]
    for tree in trees:
        assert builder.count_params(tree) == builder.build(tree, compile=False).count_params()


def test_trains_with_jit_compile():
    model = make_builder().build(branched_tree(), jit_compile=True)
    x, y = data()
    history = model.fit(x, y, epochs=2, verbose=0)
    assert np.isfinite(history.history["loss"]).all()


def test_gradient_scale_reaches_branch_points():
    model = make_builder(gradient_scale="mean").build(branched_tree())
    splits = [layer for layer in model.layers if isinstance(layer, BranchPoint)]
    assert splits and all(s.gradient_scale == "mean" for s in splits)


def test_apply_tree_embeds_a_trunk_in_a_larger_model():
    builder = make_builder()
    inputs = keras.Input((INPUT_DIM,))
    features = builder.apply_tree(branched_tree(), inputs)
    model = keras.Model(inputs, keras.layers.Concatenate()(list(features.values())))
    assert model.output.shape == (None, 24)


def test_keras_input_and_optimizer_instance():
    builder = BranchedModelBuilder(
        keras.Input((INPUT_DIM,), name="features"),
        [lambda: keras.layers.Dense(4)],
        [Task("a", head=lambda: keras.layers.Dense(1), loss="mse")],
        optimizer=keras.optimizers.SGD(0.01),
    )
    one = builder.build(BranchingTree.shared(["a"], 1))
    two = builder.build(BranchingTree.shared(["a"], 1))
    assert one.optimizer is not two.optimizer
    assert one.inputs[0].name == "features"


def test_synthetic_data_trains_end_to_end():
    x, y, groups = synthetic_tasks(2, 2, 256, input_dim=10, seed=0)
    builder = BranchedModelBuilder(
        (10,),
        [lambda: keras.layers.Dense(16, activation="relu")] * 2,
        [Task(t, head=lambda: keras.layers.Dense(1), loss="mse") for t in y],
    )
    model = builder.build(BranchingTree(list(y), [[list(y)], groups]))
    history = model.fit(x, y, epochs=3, batch_size=32, verbose=0)
    assert history.history["loss"][-1] < history.history["loss"][0]


# Bad input.


@pytest.mark.parametrize(
    "kwargs, error, match",
    [
        ({"inputs": "x"}, TypeError, "inputs='x'"),
        ({"inputs": (0, 3)}, TypeError, r"inputs=\(0, 3\)"),
        ({"blocks": []}, ValueError, "at least one block"),
        ({"blocks": [3]}, TypeError, r"blocks\[0\]=3"),
        ({"blocks": "dense"}, TypeError, "list of zero-argument callables"),
        ({"tasks": []}, ValueError, "at least one task"),
        ({"tasks": ["a"]}, TypeError, r"tasks\[0\]='a'"),
        ({"gradient_scale": "max"}, ValueError, "gradient_scale='max'"),
    ],
)
def test_rejects_bad_arguments(kwargs, error, match):
    args = {
        "inputs": (INPUT_DIM,),
        "blocks": [lambda: keras.layers.Dense(4)],
        "tasks": [Task("a", head=lambda: keras.layers.Dense(1), loss="mse")],
    }
    args.update(kwargs)
    with pytest.raises(error, match=match):
        BranchedModelBuilder(**args)


def test_rejects_duplicate_task_names():
    task = Task("a", head=lambda: keras.layers.Dense(1), loss="mse")
    with pytest.raises(ValueError, match=r"unique task names. Received: \['a', 'a'\]"):
        BranchedModelBuilder((3,), [lambda: keras.layers.Dense(4)], [task, task])


def test_rejects_trees_that_do_not_fit():
    builder = make_builder()
    with pytest.raises(ValueError, match=r"tasks \['a', 'b'\] differ"):
        builder.build(BranchingTree.shared(["a", "b"], 2))
    with pytest.raises(ValueError, match="has 3 blocks but the builder has 2"):
        builder.build(BranchingTree.shared(TASKS, 3))
    with pytest.raises(TypeError, match="Expected a `BranchingTree`"):
        builder.count_params([["a", "b", "c"]])


def test_rejects_blocks_and_heads_that_are_not_layers():
    builder = BranchedModelBuilder(
        (3,), [lambda: "dense"], [Task("a", head=lambda: keras.layers.Dense(1), loss="mse")]
    )
    with pytest.raises(TypeError, match="block 0's factory to return a Keras layer"):
        builder.build(BranchingTree.shared(["a"], 1))
    builder = BranchedModelBuilder(
        (3,), [lambda: keras.layers.Dense(2)], [Task("a", head=lambda: 3, loss="mse")]
    )
    with pytest.raises(TypeError, match="head of task 'a'"):
        builder.build(BranchingTree.shared(["a"], 1))


@pytest.mark.parametrize(
    "kwargs, error, match",
    [
        ({"name": ""}, TypeError, "name=''"),
        ({"head": "dense"}, TypeError, "head='dense'"),
        ({"loss": None}, ValueError, "loss=None"),
        ({"metrics": "mae"}, TypeError, "metrics='mae'"),
        ({"loss_weight": -1}, ValueError, "loss_weight=-1"),
    ],
)
def test_task_rejects_bad_arguments(kwargs, error, match):
    args = {"name": "a", "head": lambda: keras.layers.Dense(1), "loss": "mse"}
    args.update(kwargs)
    with pytest.raises(error, match=match):
        Task(**args)


def test_read_tree_recovers_the_tree_after_reload(tmp_path):
    from keras_branching import read_tree

    rng = random.Random(3)
    builder = make_builder(num_blocks=3)
    for tree in [random_tree(rng, TASKS, 3) for _ in range(4)] + [builder.shared_tree()]:
        model = builder.build(tree, compile=False)
        assert read_tree(model) == tree
    model.save(tmp_path / "m.keras")
    assert read_tree(keras.models.load_model(tmp_path / "m.keras")) == tree


def test_read_tree_rejects_other_models():
    from keras_branching import read_tree

    inputs = keras.Input((3,))
    with pytest.raises(ValueError, match="dict keyed by task name"):
        read_tree(keras.Model(inputs, keras.layers.Dense(1)(inputs)))
    joined = keras.layers.Add()([keras.layers.Dense(2)(inputs), keras.layers.Dense(2)(inputs)])
    with pytest.raises(ValueError, match="chain of single-input layers"):
        read_tree(keras.Model(inputs, {"a": keras.layers.Dense(1)(joined)}))


SEED_SCRIPT = """
import hashlib, random, sys
import keras, numpy as np
from keras_branching import BranchedModelBuilder, Task
from keras_branching.allocation import AllocationBuilder
from keras_branching.learn_to_branch import build_supernet
from keras_branching.routing.builder import RoutingModelBuilder
from keras_branching.routing.plan import RoutingPlan

def tasks():
    return [Task(t, head=lambda: keras.layers.Dense(1), loss="mse") for t in "ab"]

dense = lambda: keras.layers.Dense(4, activation="relu")
for seed in (1, 2):
    tree = BranchedModelBuilder((3,), [dense] * 2, tasks(), seed=seed)
    routing = RoutingModelBuilder((3,), [dense], tasks(), seed=seed)
    allocation = AllocationBuilder((3,), [[dense, dense]], tasks(), seed=seed)
    state = random.getstate()
    models = [
        tree.build(tree.independent_tree(), compile=False),
        build_supernet(tree, [2, 2], compile=False),
        routing.build(RoutingPlan.mmoe(["a", "b"], 2), compile=False),
        allocation.build(allocation.independent_allocation(), compile=False),
    ]
    assert random.getstate() == state  # the builders leave Python's `random` as it was
    for model in models:
        digest = hashlib.sha256(b"".join(np.asarray(w).tobytes() for w in model.get_weights()))
        print(seed, model.name, digest.hexdigest())
"""


def test_seeded_builders_give_the_same_weights_in_fresh_processes(tmp_path):
    from tests.fresh_process import run_python

    script = tmp_path / "seeds.py"
    script.write_text(SEED_SCRIPT)
    first = run_python(script, cwd=tmp_path).split("\n")
    second = run_python(script, cwd=tmp_path).split("\n")
    assert first == second
    digests = [line.split() for line in first if line]
    assert len(digests) == 8
    by_seed = {seed: [d for s, _, d in digests if s == seed] for seed in ("1", "2")}
    assert all(a != b for a, b in zip(by_seed["1"], by_seed["2"]))  # seeds differ


def test_seed_rebuilds_the_same_weights_and_rejects_non_ints():
    builder = make_builder(seed=4)
    one, two = (builder.build(branched_tree()) for _ in range(2))
    for a, b in zip(one.get_weights(), two.get_weights()):
        np.testing.assert_array_equal(a, b)
    state = random.getstate()
    make_builder(seed=None).build(branched_tree())
    assert random.getstate() != state  # unseeded builds draw from `random`, as Keras does
    with pytest.raises(TypeError, match="seed='1'"):
        make_builder(seed="1")
