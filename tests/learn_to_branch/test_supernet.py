import keras
import numpy as np
import pytest

from keras_branching import naming
from keras_branching.builder import BranchedModelBuilder
from keras_branching.callbacks.temperature import TemperatureSchedule
from keras_branching.layers.gumbel_router import GumbelRouter
from keras_branching.learn_to_branch import build_supernet, derive_tree, supernet_parents
from keras_branching.learn_to_branch.supernet import router_probabilities
from keras_branching.optimizers import ArchitectureOptimizer
from keras_branching.task import Task
from keras_branching.tree import BranchingTree

TASKS = ["a", "b", "c"]
INPUT_DIM = 6


def make_builder(num_blocks=3, optimizer="adam"):
    return BranchedModelBuilder(
        inputs=(INPUT_DIM,),
        blocks=[lambda: keras.layers.Dense(4, activation="relu")] * num_blocks,
        tasks=[Task(t, head=lambda: keras.layers.Dense(1), loss="mse") for t in TASKS],
        optimizer=optimizer,
    )


def data(n=16, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((n, INPUT_DIM)).astype("float32")
    return x, {t: rng.standard_normal((n, 1)).astype("float32") for t in TASKS}


def routers(supernet):
    """The supernet's routers, in block order (kept by reference, not found by name)."""
    return [layer for layer in supernet.layers if isinstance(layer, GumbelRouter)]


def set_parents(supernet, parents):
    """Sets the logits so that child c of block b (0-based) reads parent parents[b][c]."""
    for router, (_, choice) in zip(routers(supernet), sorted(parents.items())):
        logits = np.zeros(tuple(router.router_logits.shape), "float32")
        logits[np.arange(len(choice)), choice] = 5.0
        router.router_logits.assign(logits)


def test_structure_and_names():
    supernet = build_supernet(make_builder(), [2, 2, 3])
    names = [layer.name for layer in supernet.layers]
    for block, node in [(0, 0), (0, 1), (1, 1), (2, 2)]:
        assert naming.supernet_node_name(block, node) in names
    assert naming.head_name("c") in names
    assert [r.name for r in routers(supernet)] == [naming.router_name(1), naming.router_name(2)]
    assert [tuple(r.router_logits.shape) for r in routers(supernet)] == [(2, 2), (3, 2)]
    assert sorted(supernet.output) == TASKS
    assert supernet.optimizer is not None


def test_each_task_reads_its_own_last_node():
    supernet = build_supernet(make_builder(), [1, 2, 3])
    for t, task in enumerate(TASKS):
        node = supernet.get_layer(naming.supernet_node_name(2, t))
        assert supernet.get_layer(naming.head_name(task)).input is node.output


def test_block_copies_start_different():
    supernet = build_supernet(make_builder(), [1, 2, 3])
    a, b = (supernet.get_layer(naming.supernet_node_name(1, c)).kernel.numpy() for c in (0, 1))
    assert not np.array_equal(a, b)


@pytest.mark.parametrize("jit_compile", [False, True])
def test_fit_moves_router_logits(jit_compile):
    supernet = build_supernet(make_builder(), [1, 2, 3], seed=0, jit_compile=jit_compile)
    first, last = routers(supernet)
    before = last.router_logits.numpy().copy()
    x, y = data()
    history = supernet.fit(
        x, y, batch_size=8, epochs=2, verbose=0, callbacks=[TemperatureSchedule()]
    )
    assert np.isfinite(history.history["loss"]).all()
    assert not np.array_equal(before, last.router_logits.numpy())
    # The one-parent router of block 2 has nothing to learn.
    assert not first.router_logits.trainable


def test_inference_is_deterministic():
    supernet = build_supernet(make_builder(), [2, 2, 3], seed=0)
    x, _ = data()
    first = supernet.predict(x, verbose=0)
    second = supernet.predict(x, verbose=0)
    for task in TASKS:
        np.testing.assert_array_equal(first[task], second[task])


@pytest.mark.parametrize("factor", [10.0, 0.5])
def test_router_learning_rate_scales_logit_updates(factor):
    """With SGD, router logits move `factor` times as far as with the shared rate."""
    x, y = data(n=8)

    def one_step(optimizer_factory):
        keras.utils.set_random_seed(1)
        supernet = build_supernet(make_builder(optimizer="sgd"), [1, 2, 3], seed=3, compile=False)
        supernet.compile(optimizer=optimizer_factory(), loss={t: "mse" for t in TASKS})
        logits = routers(supernet)[-1].router_logits.path
        before = [w.numpy().copy() for w in supernet.trainable_weights]
        supernet.fit(x, y, batch_size=8, epochs=1, verbose=0)
        deltas = {w.path: w.numpy() - b for w, b in zip(supernet.trainable_weights, before)}
        return logits, deltas

    logits, plain = one_step(lambda: keras.optimizers.SGD(0.01))
    _, routed = one_step(
        lambda: ArchitectureOptimizer.with_learning_rate(keras.optimizers.SGD(0.01), 0.01 * factor)
    )
    assert np.abs(plain[logits]).max() > 0
    np.testing.assert_allclose(routed[logits], factor * plain[logits], rtol=1e-4, atol=1e-8)
    for path, delta in plain.items():
        if path != logits:
            np.testing.assert_allclose(routed[path], delta, rtol=1e-4, atol=1e-8)


def test_router_learning_rate_compiles_with_architecture_optimizer():
    builder = make_builder(optimizer=keras.optimizers.Adam(1e-3))
    supernet = build_supernet(builder, [1, 2, 3], router_learning_rate=0.05)
    optimizer = supernet.optimizer
    assert isinstance(optimizer, ArchitectureOptimizer)
    assert isinstance(optimizer.architecture_optimizer, keras.optimizers.Adam)
    assert float(optimizer.architecture_optimizer.learning_rate.numpy()) == pytest.approx(0.05)
    assert float(optimizer.learning_rate.numpy()) == pytest.approx(1e-3)
    assert optimizer.inner_optimizer is not builder.optimizer  # the builder's stays unused


def test_save_reload_keeps_tree_predictions_and_optimizer(tmp_path):
    supernet = build_supernet(make_builder(), [2, 2, 3], router_learning_rate=0.05, seed=0)
    x, y = data()
    supernet.fit(x, y, batch_size=8, epochs=1, verbose=0, callbacks=[TemperatureSchedule()])
    set_parents(supernet, {1: [1, 1], 2: [0, 0, 1]})
    path = str(tmp_path / "supernet.keras")
    supernet.save(path)
    reloaded = keras.models.load_model(path)  # no custom_objects
    assert derive_tree(reloaded) == derive_tree(supernet)
    assert derive_tree(reloaded) == BranchingTree(
        TASKS, [[TASKS], [["a", "b"], ["c"]], [["a"], ["b"], ["c"]]]
    )
    assert supernet_parents(reloaded) == {1: [1, 1], 2: [0, 0, 1]}
    assert router_probabilities(reloaded) == router_probabilities(supernet)
    assert isinstance(reloaded.optimizer, ArchitectureOptimizer)
    lr = reloaded.optimizer.architecture_optimizer.learning_rate
    assert float(lr.numpy()) == pytest.approx(0.05)
    expected, actual = supernet.predict(x, verbose=0), reloaded.predict(x, verbose=0)
    for task in TASKS:
        np.testing.assert_allclose(actual[task], expected[task], rtol=1e-6)
    # Training goes on after the reload.
    reloaded.fit(x, y, batch_size=8, epochs=1, verbose=0, callbacks=[TemperatureSchedule()])


def test_derive_tree_follows_argmax_parents_and_prunes():
    supernet = build_supernet(make_builder(), [3, 3, 3])
    # Tasks a, b -> block3 nodes 0, 1 -> both from block2 node 2 -> block1 node 1;
    # task c -> block3 node 2 -> block2 node 0 -> block1 node 1. Nodes 0 and 2
    # of block 1 and node 1 of block 2 are reached by no task: pruned.
    set_parents(supernet, {1: [1, 0, 1], 2: [2, 2, 0]})
    assert supernet_parents(supernet) == {1: [1, 0, 1], 2: [2, 2, 0]}
    tree = derive_tree(supernet)
    assert tree == BranchingTree(TASKS, [[TASKS], [["a", "b"], ["c"]], [["a"], ["b"], ["c"]]])
    set_parents(supernet, {1: [0, 1, 2], 2: [0, 1, 2]})
    assert derive_tree(supernet) == BranchingTree.independent(TASKS, 3)


def test_derive_tree_does_not_read_layer_names():
    """Renaming every layer (names are labels, not structure) changes nothing."""
    supernet = build_supernet(make_builder(), [3, 3, 3])
    set_parents(supernet, {1: [1, 0, 1], 2: [2, 2, 0]})
    expected = derive_tree(supernet)
    for i, layer in enumerate(supernet.layers):
        layer.name = f"renamed_{i}"
    assert derive_tree(supernet) == expected
    assert supernet_parents(supernet) == {1: [1, 0, 1], 2: [2, 2, 0]}


def test_derive_tree_single_block():
    builder = make_builder(num_blocks=1)
    supernet = build_supernet(builder, [3])
    assert derive_tree(supernet) == BranchingTree.independent(TASKS, 1)
    assert supernet_parents(supernet) == {}


def test_derive_tree_rejects_other_models():
    inputs = keras.Input((3,))
    model = keras.Model(inputs, {"a": keras.layers.Dense(1)(inputs)}, name="plain")
    with pytest.raises(ValueError, match="Expected a supernet made by `build_supernet`"):
        derive_tree(model)
    with pytest.raises(ValueError, match="Expected a supernet"):
        derive_tree(keras.Model(inputs, keras.layers.Dense(1)(inputs)))
    # A tree model: its second block reads a BranchPoint, not a router.
    builder = make_builder(num_blocks=2)
    tree = BranchingTree(TASKS, [[TASKS], [["a"], ["b"], ["c"]]])
    with pytest.raises(ValueError, match="not a `GumbelRouter`"):
        derive_tree(builder.build(tree, compile=False))
    with pytest.raises(ValueError, match="not a Keras model"):
        supernet_parents("supernet")


@pytest.mark.parametrize(
    "widths, error, message",
    [
        ([1, 3], ValueError, r"one width per block \(3 widths\). Received: widths=\[1, 3\]"),
        ([1, 2, 3, 3], ValueError, r"Received: widths=\[1, 2, 3, 3\] \(4 widths\)"),
        ([1, 2, 4], ValueError, r"last width to equal the number of tasks \(3"),
        ([1, 0, 3], ValueError, r"Expected every width >= 1. Received: widths=\[1, 0, 3\]"),
        ([-1, 2, 3], ValueError, "width >= 1"),
        ([1, 2.0, 3], TypeError, "Expected every width to be an int"),
        ("123", TypeError, "Expected `widths` to be a list of ints"),
        (3, TypeError, "widths=3"),
    ],
)
def test_rejects_bad_widths(widths, error, message):
    with pytest.raises(error, match=message):
        build_supernet(make_builder(), widths)


def test_rejects_bad_router_settings():
    with pytest.raises(ValueError, match="architecture_learning_rate=0"):
        build_supernet(make_builder(), [1, 2, 3], router_learning_rate=0)
    with pytest.raises(ValueError, match=r"Expected `temperature` > 0. Received: temperature=-1"):
        build_supernet(make_builder(), [1, 2, 3], temperature=-1)
    with pytest.raises(TypeError, match="seed='x'"):
        build_supernet(make_builder(), [1, 2, 3], seed="x")


def test_mixed_precision_fit_with_architecture_optimizer():
    keras.config.set_dtype_policy("mixed_float16")  # conftest restores float32
    supernet = build_supernet(make_builder(), [1, 2, 3], router_learning_rate=0.05, seed=0)
    assert isinstance(supernet.optimizer, keras.optimizers.LossScaleOptimizer)
    assert isinstance(supernet.optimizer.inner_optimizer, ArchitectureOptimizer)
    x, y = data()
    history = supernet.fit(
        x, y, batch_size=8, epochs=1, verbose=0, callbacks=[TemperatureSchedule()]
    )
    assert np.isfinite(history.history["loss"]).all()
    assert routers(supernet)[-1].router_logits.dtype == "float32"
