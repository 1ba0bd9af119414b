"""Fused routing models: each layer's experts as one `StackedBlock`."""

import keras
import numpy as np
import pytest

from keras_branching import naming
from keras_branching.layers.group_gather import JoinGroups
from keras_branching.layers.stacked import StackedBlock
from keras_branching.routing.builder import RoutingModelBuilder
from keras_branching.routing.plan import RoutingPlan
from keras_branching.task import Task

FIRST = (["input"], "input")
TASKS = ["a", "b"]


def make_builder(num_layers=2, expert=None, inputs=(6,)):
    expert = expert or (lambda: keras.layers.Dense(4, activation="relu"))
    return RoutingModelBuilder(
        inputs=inputs,
        experts=[expert] * num_layers,
        tasks=[Task(t, head=lambda: keras.layers.Dense(1), loss="mse") for t in TASKS],
        seed=0,
    )


def gated_plan():
    return RoutingPlan(
        TASKS,
        layers=[[FIRST] * 3, [([0, 1], "input"), ([1, 2], 0), ([2], "input")]],
        towers={"a": ([0], "input"), "b": ([0, 1], 1)},
    )


def move_weights(separate, fused, plan):
    """Copies the separate model's weights into the fused one."""
    for layer in fused.layers:
        if layer.weights and not isinstance(layer, StackedBlock):
            layer.set_weights(separate.get_layer(layer.name).get_weights())
    used = plan.used_experts()
    for depth in range(plan.num_layers):
        stacked = fused.get_layer(naming.stacked_experts_name(depth))
        members = sorted(m for d, m in used if d == depth)
        for row, m in enumerate(members):
            expert = separate.get_layer(naming.expert_name(depth, m))
            stacked.set_group_weights(row, expert.get_weights())


def data(n=32):
    rng = np.random.default_rng(0)
    x = rng.standard_normal((n, 6)).astype("float32")
    return x, {t: rng.standard_normal((n, 1)).astype("float32") for t in TASKS}


def assert_same(first, second, x):
    a, b = first.predict(x, verbose=0), second.predict(x, verbose=0)
    for task in TASKS:
        np.testing.assert_allclose(a[task], b[task], atol=1e-5)


@pytest.mark.parametrize(
    "plan",
    [
        gated_plan(),
        RoutingPlan.mmoe(TASKS, num_experts=3),
        RoutingPlan.shared_bottom(TASKS, num_layers=2),
    ],
    ids=["gated", "mmoe", "shared_bottom"],
)
def test_fused_experts_match_separate(plan):
    builder = make_builder(num_layers=plan.num_layers)
    separate = builder.build(plan, fuse=False)
    fused = builder.build(plan, fuse=True)
    stacked = [layer for layer in fused.layers if isinstance(layer, StackedBlock)]
    assert len(stacked) == plan.num_layers
    assert fused.count_params() == separate.count_params() == builder.count_params(plan)
    move_weights(separate, fused, plan)
    assert_same(separate, fused, data()[0])


def test_fused_routing_trains_and_reloads(tmp_path):
    plan = gated_plan()
    builder = make_builder()
    fused = builder.build(plan, fuse=True)
    assert any(isinstance(layer, JoinGroups) for layer in fused.layers)  # gated expert inputs
    x, y = data()
    history = fused.fit(x, y, epochs=1, batch_size=16, verbose=0)
    assert np.isfinite(history.history["loss"][0])
    path = str(tmp_path / "fused_routing.keras")
    fused.save(path)
    reloaded = keras.models.load_model(path)  # no custom_objects
    assert_same(fused, reloaded, x)


def test_fuse_arguments_and_fallback():
    plan = RoutingPlan.mmoe(TASKS, num_experts=2)
    with pytest.raises(ValueError, match="fuse='auto'"):
        make_builder(num_layers=1).build(plan, fuse="auto")
    per_task = make_builder(num_layers=1, inputs={t: (6,) for t in TASKS})
    with pytest.raises(ValueError, match=r"per-task inputs for \['a', 'b'\]"):
        per_task.build(plan, fuse=True)
    regularised = make_builder(
        num_layers=1, expert=lambda: keras.layers.Dense(4, kernel_regularizer="l2")
    )
    with pytest.warns(UserWarning, match="experts of layer 0 cannot be stacked"):
        model = regularised.build(plan, fuse=True)
    assert not any(isinstance(layer, StackedBlock) for layer in model.layers)
    assert model.count_params() == regularised.count_params(plan)


def test_fused_routing_on_jax(tmp_path):
    import textwrap

    from tests.fresh_process import REPO, run_python

    script = tmp_path / "fused_routing_jax.py"
    script.write_text(
        textwrap.dedent(
            """
            import keras, numpy as np
            from tests.routing.test_fused_experts import (
                TASKS, assert_same, data, gated_plan, make_builder, move_weights)

            assert keras.backend.backend() == "jax"
            plan, builder = gated_plan(), make_builder()
            separate = builder.build(plan)
            fused = builder.build(plan, fuse=True, jit_compile=True)
            x, y = data()
            fused.fit(x, y, epochs=1, batch_size=16, verbose=0)
            move_weights(separate, fused, plan)
            assert_same(separate, fused, x)
            print("ok")
            """
        )
    )
    assert run_python(script, REPO, backend="jax").strip().endswith("ok")
