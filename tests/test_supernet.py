import keras
import numpy as np
import pytest

from keras_branching.builder import BranchedModelBuilder
from keras_branching.callbacks.temperature import TemperatureSchedule
from keras_branching.layers.gumbel_router import GumbelRouter
from keras_branching.supernet import (
    RouterOptimizer,
    build_supernet,
    derive_tree,
    router_optimizer,
    supernet_parents,
)
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


def set_parents(supernet, parents):
    """Sets every router's logits so that child c's argmax parent is parents[block][c]."""
    for block, choice in parents.items():
        router = supernet.get_layer(f"router_block{block}")
        logits = np.zeros(tuple(router.router_logits.shape), "float32")
        logits[np.arange(len(choice)), choice] = 5.0
        router.router_logits.assign(logits)


def test_structure_and_names():
    supernet = make_builder().build_supernet([2, 2, 3])
    names = [layer.name for layer in supernet.layers]
    for expected in ["block1_node0", "block1_node1", "block2_node1", "block3_node2", "head_c"]:
        assert expected in names
    routers = [layer for layer in supernet.layers if isinstance(layer, GumbelRouter)]
    assert [r.name for r in routers] == ["router_block2", "router_block3"]
    assert [tuple(r.router_logits.shape) for r in routers] == [(2, 2), (3, 2)]
    assert sorted(supernet.output) == TASKS
    assert supernet.optimizer is not None


def test_each_task_reads_its_own_last_node():
    supernet = build_supernet(make_builder(), [1, 2, 3])
    for t, task in enumerate(TASKS):
        node = supernet.get_layer(f"block3_node{t}")
        assert supernet.get_layer(f"head_{task}").input is node.output


def test_block_copies_start_different():
    supernet = build_supernet(make_builder(), [1, 2, 3])
    a, b = (supernet.get_layer(f"block2_node{c}").kernel.numpy() for c in (0, 1))
    assert not np.array_equal(a, b)


@pytest.mark.parametrize("jit_compile", [False, True])
def test_fit_moves_router_logits(jit_compile):
    supernet = build_supernet(make_builder(), [1, 2, 3], seed=0, jit_compile=jit_compile)
    before = supernet.get_layer("router_block3").router_logits.numpy().copy()
    x, y = data()
    history = supernet.fit(
        x, y, batch_size=8, epochs=2, verbose=0, callbacks=[TemperatureSchedule()]
    )
    assert np.isfinite(history.history["loss"]).all()
    after = supernet.get_layer("router_block3").router_logits.numpy()
    assert not np.array_equal(before, after)
    # The one-parent router of block 2 has nothing to learn.
    assert not supernet.get_layer("router_block2").router_logits.trainable


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
        before = [w.numpy().copy() for w in supernet.trainable_weights]
        supernet.fit(x, y, batch_size=8, epochs=1, verbose=0)
        deltas = {w.path: w.numpy() - b for w, b in zip(supernet.trainable_weights, before)}
        return deltas

    plain = one_step(lambda: keras.optimizers.SGD(0.01))
    routed = one_step(lambda: router_optimizer(keras.optimizers.SGD(0.01), 0.01 * factor))
    logits = "router_block3/router_logits"
    assert np.abs(plain[logits]).max() > 0
    np.testing.assert_allclose(routed[logits], factor * plain[logits], rtol=1e-4, atol=1e-8)
    for path, delta in plain.items():
        if path != logits:
            np.testing.assert_allclose(routed[path], delta, rtol=1e-4, atol=1e-8)


def test_build_supernet_router_learning_rate_uses_router_optimizer():
    builder = make_builder(optimizer=keras.optimizers.Adam(1e-3))
    supernet = build_supernet(builder, [1, 2, 3], router_learning_rate=0.05)
    optimizer = supernet.optimizer
    assert isinstance(optimizer, RouterOptimizer)
    assert isinstance(optimizer.router_optimizer, keras.optimizers.Adam)
    assert float(optimizer.router_optimizer.learning_rate.numpy()) == pytest.approx(0.05)
    assert float(optimizer.learning_rate.numpy()) == pytest.approx(1e-3)


def test_save_reload_keeps_tree_predictions_and_optimizer(tmp_path):
    supernet = build_supernet(make_builder(), [2, 2, 3], router_learning_rate=0.05, seed=0)
    x, y = data()
    supernet.fit(x, y, batch_size=8, epochs=1, verbose=0, callbacks=[TemperatureSchedule()])
    set_parents(supernet, {2: [1, 1], 3: [0, 0, 1]})
    path = str(tmp_path / "supernet.keras")
    supernet.save(path)
    reloaded = keras.models.load_model(path)
    assert derive_tree(reloaded) == derive_tree(supernet)
    assert isinstance(reloaded.optimizer, RouterOptimizer)
    assert float(reloaded.optimizer.router_optimizer.learning_rate.numpy()) == pytest.approx(0.05)
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
    set_parents(supernet, {2: [1, 0, 1], 3: [2, 2, 0]})
    assert supernet_parents(supernet) == {2: [1, 0, 1], 3: [2, 2, 0]}
    tree = derive_tree(supernet)
    assert tree == BranchingTree(TASKS, [[TASKS], [["a", "b"], ["c"]], [["a"], ["b"], ["c"]]])
    set_parents(supernet, {2: [0, 1, 2], 3: [0, 1, 2]})
    assert derive_tree(supernet) == BranchingTree.independent(TASKS, 3)


def test_derive_tree_single_block():
    builder = make_builder(num_blocks=1)
    assert derive_tree(build_supernet(builder, [3])) == BranchingTree.independent(TASKS, 1)


def test_derive_tree_rejects_other_models():
    inputs = keras.Input((3,))
    model = keras.Model(inputs, {"a": keras.layers.Dense(1)(inputs)}, name="plain")
    with pytest.raises(ValueError, match="Expected a supernet made by `build_supernet`"):
        derive_tree(model)
    with pytest.raises(ValueError, match="Expected a supernet"):
        derive_tree(keras.Model(inputs, keras.layers.Dense(1)(inputs)))


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
        make_builder().build_supernet(widths)


def test_rejects_bad_router_settings():
    with pytest.raises(ValueError, match="router_learning_rate=0"):
        build_supernet(make_builder(), [1, 2, 3], router_learning_rate=0)
    with pytest.raises(ValueError, match=r"Expected `temperature` > 0. Received: temperature=-1"):
        build_supernet(make_builder(), [1, 2, 3], temperature=-1)
    with pytest.raises(TypeError, match="seed='x'"):
        build_supernet(make_builder(), [1, 2, 3], seed="x")
    adam = keras.optimizers.Adam()
    with pytest.raises(ValueError, match="same instance twice"):
        RouterOptimizer(adam, adam)


def test_mixed_precision_fit_with_router_optimizer():
    keras.config.set_dtype_policy("mixed_float16")  # conftest restores float32
    supernet = build_supernet(make_builder(), [1, 2, 3], router_learning_rate=0.05, seed=0)
    assert isinstance(supernet.optimizer, keras.optimizers.LossScaleOptimizer)
    assert isinstance(supernet.optimizer.inner_optimizer, RouterOptimizer)
    x, y = data()
    history = supernet.fit(
        x, y, batch_size=8, epochs=1, verbose=0, callbacks=[TemperatureSchedule()]
    )
    assert np.isfinite(history.history["loss"]).all()
    assert supernet.get_layer("router_block3").router_logits.dtype == "float32"
