"""The fused supernet (`build_supernet(..., fuse=True)`): stacked nodes, one einsum per router."""

import textwrap
import warnings

import keras
import numpy as np
import pytest

from keras_branching import fusion
from keras_branching.builder import BranchedModelBuilder
from keras_branching.layers.gumbel_router import GumbelRouter
from keras_branching.layers.stacked import StackedBlock
from keras_branching.learn_to_branch import (
    LearnToBranch,
    build_supernet,
    derive_tree,
    supernet_parents,
)
from keras_branching.learn_to_branch.supernet import router_probabilities
from keras_branching.task import Task
from tests.fresh_process import run_python

TASKS = ["a", "b", "c"]


def make_builder(seed=3, heads=None):
    heads = heads or {t: (lambda: keras.layers.Dense(1)) for t in TASKS}
    return BranchedModelBuilder(
        inputs=(6,),
        blocks=[lambda: keras.layers.Dense(4, activation="relu")] * 3,
        tasks=[Task(t, head=heads[t], loss="mse") for t in TASKS],
        seed=seed,
    )


def data(n=32):
    rng = np.random.default_rng(0)
    x = rng.standard_normal((n, 6)).astype("float32")
    return x, {t: rng.standard_normal((n, 1)).astype("float32") for t in TASKS}


def routers(model):
    return [layer for layer in model.layers if isinstance(layer, GumbelRouter)]


def set_random_logits(*models, seed=0):
    rng = np.random.default_rng(seed)
    for group in zip(*(routers(m) for m in models)):
        values = rng.standard_normal(tuple(group[0].router_logits.shape)).astype("float32")
        for router in group:
            router.router_logits.assign(values)


def test_fused_supernet_matches_separate():
    builder = make_builder()
    separate = build_supernet(builder, [2, 2, 3], seed=1)
    fused = build_supernet(builder, [2, 2, 3], seed=1, fuse=True)
    stacked = [layer for layer in fused.layers if isinstance(layer, StackedBlock)]
    assert [s.num_groups for s in stacked] == [2, 2, 3, 3]  # the last: the 3 heads
    assert [type(fused.get_layer(f"head_{t}")).__name__ for t in TASKS] == ["SelectGroup"] * 3
    assert all(r.stacked for r in routers(fused)) and len(routers(fused)) == 2
    assert fused.count_params() == separate.count_params()
    x, _ = data()
    for seed in range(3):
        set_random_logits(separate, fused, seed=seed)
        expected, actual = separate(x), fused(x)
        for task in TASKS:  # same initial weights from the same builder seed
            np.testing.assert_allclose(actual[task], expected[task], atol=1e-5)
        assert derive_tree(fused) == derive_tree(separate)
        assert supernet_parents(fused) == supernet_parents(separate)
        assert router_probabilities(fused) == router_probabilities(separate)


def test_fused_supernet_trains_and_reloads(tmp_path):
    builder = make_builder()
    fused = build_supernet(builder, [1, 2, 3], seed=1, fuse=True, jit_compile=True)
    x, y = data()
    fused.fit(x, y, epochs=1, batch_size=16, verbose=0)
    set_random_logits(fused, seed=4)
    path = str(tmp_path / "fused_supernet.keras")
    fused.save(path)
    reloaded = keras.models.load_model(path)  # no custom_objects
    assert derive_tree(reloaded) == derive_tree(fused)
    expected = fused.predict(x[:4], verbose=0)
    actual = reloaded.predict(x[:4], verbose=0)
    for task in TASKS:
        np.testing.assert_allclose(actual[task], expected[task], atol=1e-5)


def test_learn_to_branch_search_on_fused_supernet():
    x, y = data(64)
    search = LearnToBranch(make_builder(), widths=[1, 2, 3], seed=0, fuse=True)
    supernet = search.build_search_model()
    assert any(isinstance(layer, StackedBlock) for layer in supernet.layers)
    # route_heads=True: the heads are the last routed (and stacked) layer.
    assert len(routers(supernet)) == 3
    result = search.search(x, y, epochs=1, batch_size=32, verbose=0)
    assert result.plan.num_blocks == 3
    assert sorted(result.details["router_probabilities"]) == [
        "router_block2",
        "router_block3",
        "router_block4",
    ]


def test_unstackable_nodes_fall_back_with_a_notice():
    heads = {"a": lambda: keras.layers.Dense(1), "b": lambda: keras.layers.Dense(2)}
    heads["c"] = heads["a"]
    search = LearnToBranch(make_builder(heads=heads), widths=[1, 2, 3], seed=0, fuse=True)
    # pytest.warns re-emits the other warnings it caught as the test's own; on JAX
    # Keras's optimizer `get_config` gives numpy 2's `__array__` DeprecationWarning.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        with pytest.warns(UserWarning, match="nodes of block 3 cannot be stacked .*differ"):
            supernet = search.build_search_model()  # the routed heads differ in shape
    assert not any(isinstance(layer, StackedBlock) for layer in supernet.layers)


def test_auto_and_bad_fuse(monkeypatch):
    builder = make_builder()
    assert not any(  # at most 3 copies: below fusion.MIN_COPIES_TO_FUSE
        isinstance(layer, StackedBlock)
        for layer in build_supernet(builder, [2, 2, 3], fuse="auto", compile=False).layers
    )
    monkeypatch.setattr(fusion, "MIN_COPIES_TO_FUSE", 2)
    assert any(
        isinstance(layer, StackedBlock)
        for layer in build_supernet(builder, [2, 2, 3], fuse="auto", compile=False).layers
    )
    with pytest.raises(ValueError, match="fuse='yes'"):
        build_supernet(builder, [2, 2, 3], fuse="yes")
    per_task = BranchedModelBuilder(
        {t: (6,) for t in TASKS},
        [lambda: keras.layers.Dense(4)] * 2,
        [Task(t, head=lambda: keras.layers.Dense(1), loss="mse") for t in TASKS],
    )
    with pytest.raises(ValueError, match=r"per-task inputs for \['a', 'b', 'c'\]"):
        build_supernet(per_task, [2, 3], fuse=True)
    assert not any(
        isinstance(layer, StackedBlock)
        for layer in build_supernet(per_task, [2, 3], fuse="auto", compile=False).layers
    )


def test_fused_supernet_on_jax(tmp_path):
    script = tmp_path / "fused_supernet_jax.py"
    script.write_text(
        textwrap.dedent(
            """
            import keras, numpy as np
            from keras_branching.builder import BranchedModelBuilder
            from keras_branching.layers.gumbel_router import GumbelRouter
            from keras_branching.learn_to_branch import build_supernet, derive_tree
            from keras_branching.task import Task

            assert keras.backend.backend() == "jax"
            builder = BranchedModelBuilder(
                (6,), [lambda: keras.layers.Dense(4, activation="relu")] * 2,
                [Task(t, head=lambda: keras.layers.Dense(1), loss="mse") for t in "abc"],
                seed=3)
            separate = build_supernet(builder, [2, 3], seed=1)
            fused = build_supernet(builder, [2, 3], seed=1, fuse=True, jit_compile=True)
            x = np.random.default_rng(0).standard_normal((32, 6)).astype("float32")
            y = {t: x[:, :1] for t in "abc"}
            fused.fit(x, y, epochs=1, batch_size=16, verbose=0)
            logits = np.random.default_rng(1).standard_normal((3, 2)).astype("float32")
            for model in (separate, fused):
                [r for r in model.layers if isinstance(r, GumbelRouter)][0].router_logits.assign(
                    logits)
            assert derive_tree(fused) == derive_tree(separate)
            print("ok")
            """
        )
    )
    assert run_python(script, tmp_path, backend="jax").strip().endswith("ok")


def test_heads_of_two_configs_stack_by_config():
    heads = {"a": lambda: keras.layers.Dense(1), "b": lambda: keras.layers.Dense(2)}
    heads["c"] = heads["a"]
    builder = make_builder(heads=heads)
    separate = build_supernet(builder, [2, 2, 3], seed=1)
    fused = build_supernet(builder, [2, 2, 3], seed=1, fuse=True)
    stacked = [layer for layer in fused.layers if isinstance(layer, StackedBlock)]
    assert [s.num_groups for s in stacked] == [2, 2, 3, 2]  # heads a and c stacked
    assert fused.count_params() == separate.count_params()
    x, _ = data()
    set_random_logits(separate, fused, seed=5)
    expected, actual = separate(x), fused(x)
    for task in TASKS:
        np.testing.assert_allclose(actual[task], expected[task], atol=1e-5)
    assert derive_tree(fused) == derive_tree(separate)
    assert supernet_parents(fused) == supernet_parents(separate)
